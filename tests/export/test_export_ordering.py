"""The ordering of the model and the baselines, re-checked on small real runs: MovieLens users 1-600
under the leave-one-out reference protocol (items and genres), and the Taobao 84k sample under the
time split (next category and churn within 24 h). Seeded and deterministic; the margins are those
of the full runs in docs/model.md, smaller."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from export.evaluate import evaluate
from export.prepare import prepare
from export.splits import TEST, SplitSpec
from export.train import TrainConfig, train_model
from stream_app.model.features import FeatureSpec
from tests.conftest import shared_data

USERS = 600
HOUR_MS = 3_600_000


def _beats(res: dict, metric: str, rivals: tuple[str, ...]) -> None:
    for name in rivals:
        assert res["model"][metric] > res[name][metric], (metric, name, res)


@pytest.mark.timeout(1800)  # a fixed number of epochs: the verdict must not depend on machine speed
def test_model_beats_baselines_on_a_small_movielens_run(tmp_path: Path) -> None:
    src = shared_data("movielens/ml-1m_ratings_partial.dat.gz")
    subset = tmp_path / "ratings.dat"
    with gzip.open(src, "rt", encoding="latin-1") as fi, open(subset, "w", encoding="latin-1") as fo:
        fo.writelines(line for line in fi if int(line.split("::", 1)[0]) <= USERS)
    (tmp_path / "ml-1m_movies.dat").write_bytes((src.parent / "ml-1m_movies.dat").read_bytes())
    data = prepare(subset, SplitSpec("leave_one_out"), FeatureSpec(window_length=50), 5, progress=False)
    # measured: test item NDCG@10 0.121 vs co-occurrence 0.103 after 12 epochs of ~35 s
    cfg = TrainConfig(d_model=64, d_ff=256, epochs=12, lr=2e-3, batch_size=32, patience=100,
                      churn_refit_epochs=0, threads=2)
    result = train_model(data, cfg, progress=False)
    res = evaluate(result.model, data, TEST, exclude_history=True)
    _beats(res, "item_ndcg@10", ("popularity", "repeat_last", "cooccurrence"))
    _beats(res, "category_ndcg@10", ("popularity", "repeat_last", "cooccurrence", "user_frequency"))


@pytest.mark.timeout(1800)
def test_model_beats_baselines_on_a_small_taobao_run() -> None:
    """Next category (users repeat themselves: repeat-last is the baseline to beat) and the churn
    head against the recency/frequency logistic regression, on the same test points."""
    src = shared_data("taobao/UserBehavior_head84k.csv")
    data = prepare(src, SplitSpec("time", 0.15, 0.25, 24 * HOUR_MS), FeatureSpec(), 2, progress=False)
    cfg = TrainConfig(d_model=32, d_ff=128, epochs=3, lr=2e-3, batch_size=32, patience=100,
                      category_weight=3.0, churn_weight=1.0, early_stop_metric="category_ndcg@10",
                      exclude_history=False, churn_refit_epochs=30, threads=2)
    result = train_model(data, cfg, progress=False)
    res = evaluate(result.model, data, TEST, exclude_history=False)
    _beats(res, "category_ndcg@10", ("popularity", "repeat_last", "cooccurrence", "user_frequency"))
    _beats(res, "churn_roc_auc", ("recency_frequency",))
    # the report's paired bootstrap agrees with the point estimates it sits beside
    comp = res["_comparison"]["churn_roc_auc"]
    assert comp["ci95_low"] < comp["difference"] < comp["ci95_high"]
    margin = res["model"]["churn_roc_auc"] - res["recency_frequency"]["churn_roc_auc"]
    assert abs(comp["difference"] - margin) < 1e-9
