"""The ordering of the model and the baselines, re-checked on a small real run (MovieLens users
1-600, leave-one-out reference protocol, a small model, a few epochs)."""

from __future__ import annotations

import gzip
from pathlib import Path

from conftest import shared_data

from export.evaluate import evaluate
from export.prepare import prepare
from export.splits import TEST, SplitSpec
from export.train import TrainConfig, train_model
from stream_app.features import FeatureSpec

USERS = 600


def test_model_beats_baselines_on_a_small_run(tmp_path: Path) -> None:
    src = shared_data("movielens/ml-1m_ratings_partial.dat.gz")
    subset = tmp_path / "ratings.dat"
    with gzip.open(src, "rt", encoding="latin-1") as fi, open(subset, "w", encoding="latin-1") as fo:
        fo.writelines(line for line in fi if int(line.split("::", 1)[0]) <= USERS)
    (tmp_path / "ml-1m_movies.dat").write_bytes((src.parent / "ml-1m_movies.dat").read_bytes())
    data = prepare(subset, SplitSpec("leave_one_out"), FeatureSpec(window_length=50), 5, progress=False)
    cfg = TrainConfig(d_model=32, d_ff=128, epochs=4, lr=1e-2, batch_size=32, patience=100,
                      churn_refit_epochs=0, threads=2)
    result = train_model(data, cfg, progress=False)
    res = evaluate(result.model, data, TEST, exclude_history=True)
    model = res["model"]
    for name in ("popularity", "repeat_last"):
        assert model["item_ndcg@10"] > res[name]["item_ndcg@10"], (name, res)
    for name in ("popularity", "repeat_last", "cooccurrence", "user_frequency"):
        assert model["category_ndcg@10"] > res[name]["category_ndcg@10"], (name, res)
