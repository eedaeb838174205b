"""train -> artifact -> ONNX -> runtime on real data, through the CLI a user types; parity of the
three computations (torch on training features, ONNX Runtime, the streaming runtime)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from export.artifact import load_model
from export.evaluate import churn_logits, point_contexts
from export.model import InterestModel, ranking_scores
from export.prepare import PreparedData, prepare
from export.splits import TEST, SplitSpec
from stream_app.cli import main
from stream_app.model.ann import exact_top_k, recall_at
from stream_app.model.artifact import read_metadata
from stream_app.model.features import FeatureSpec, Vocab
from stream_app.model.runtime import ModelRuntime
from tests.conftest import shared_data

L = 10
TRAIN_ARGS = ["--window-length", str(L), "--d-model", "16", "--layers", "2", "--heads", "2",
              "--epochs", "2", "--horizon-hours", "6", "--min-item-count", "2", "--keep-history",
              "--early-stop", "category_ndcg@10", "--threads", "2"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    data = shared_data("taobao/UserBehavior_10k.csv")
    out = tmp_path_factory.mktemp("run")
    result = CliRunner().invoke(main, ["train", str(data), "--out", str(out / "model"), *TRAIN_ARGS,
                                       "--report-dir", str(out / "report")])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return out / "model", out / "report"


def test_train_writes_artifact_and_report(trained: tuple[Path, Path]) -> None:
    art, report_dir = trained
    for f in ("window.onnx", "step.onnx", "chunk.onnx", "items.onnx", "item_embeddings.npy", "items.json",
              "categories.json", "model.pt", "metadata.json", "user_vectors.npy"):
        assert (art / f).is_file(), f
    meta = read_metadata(art)
    assert meta["schema_version"] == 2 and meta["window_length"] == L
    assert meta["feature_spec"] == FeatureSpec(window_length=L).to_dict()
    assert meta["churn_horizon_ms"] == 6 * 3_600_000
    assert len(meta["training_data"]["sha256"]) == 64 and meta["training_data"]["events"] == 10_000
    assert meta["n_items"] == len(Vocab.load(art / "items.json"))
    assert meta["split"]["kind"] == "time" and meta["split"]["test_targets"] > 0
    assert all(v <= 1e-4 for v in meta["metrics"]["parity"].values())
    report = json.loads((report_dir / "report.json").read_text())
    assert report["split"] == meta["split"]  # the split is written into every report
    assert {"model", "popularity", "repeat_last", "cooccurrence", "user_frequency",
            "recency_frequency"} <= report["test"].keys()
    md = (report_dir / "report.md").read_text()
    assert "| model |" in md and "Split **time**" in md
    assert meta["training_data"]["sha256"] in md and "0 bad lines (none)" in md
    assert "UserBehavior_10k.csv" in md and "PAD/UNKNOWN targets count as misses" in md
    assert "churn_recall@p0.5" in md or "Churn not measurable" in md
    assert (report_dir / "training_curve.png").stat().st_size > 1000


def test_export_and_evaluate_commands(trained: tuple[Path, Path], tmp_path: Path) -> None:
    art, report_dir = trained
    runner = CliRunner()
    res = runner.invoke(main, ["export", str(art)])
    assert res.exit_code == 0, res.output + repr(res.exception)
    assert "window_onnx_vs_torch" in res.output
    res = runner.invoke(main, ["evaluate", str(art), "--report-dir", str(tmp_path / "again")])
    assert res.exit_code == 0, res.output + repr(res.exception)
    before = json.loads((report_dir / "report.json").read_text())["test"]
    after = json.loads((tmp_path / "again" / "report.json").read_text())["test"]
    assert after["model"] == pytest.approx(before["model"], abs=1e-6)  # same weights, same split


def _prepared(art: Path) -> PreparedData:
    meta = read_metadata(art)
    vocabs = (Vocab.load(art / "items.json"), Vocab.load(art / "categories.json"))
    return prepare(Path(meta["training_data"]["path"]), SplitSpec("time", 0.1, 0.1, 6 * 3_600_000),
                   FeatureSpec.from_dict(meta["feature_spec"]), 2, progress=False, vocabs=vocabs)


def test_torch_on_training_features_equals_onnx_equals_runtime(trained: tuple[Path, Path]) -> None:
    """Same users, same events: torch on the segments built for training, ONNX Runtime through
    the streaming runtime (its own encoding of the worker's window), incrementally and in full."""
    art, _ = trained
    data = _prepared(art)
    model: InterestModel = load_model(art)
    rt = ModelRuntime(art, window_length=L)
    pts = np.nonzero(data.split.target_role == TEST)[0][:200]
    seg = data.segments
    with torch.no_grad():
        feats = {k: torch.from_numpy(v[seg.point_segment[pts]]) for k, v in seg.features.items()}
        hidden, _ = model.encode(feats)
        h = hidden[torch.arange(len(pts)), torch.from_numpy(seg.point_position[pts])]
        ctx_items, ctx_cats, length = point_contexts(data, pts)
        t_churn = torch.sigmoid(churn_logits(model, data, pts)).numpy()
        t_cats = model.category_probs(h, ctx_cats, length).numpy()
        t_scores = ranking_scores(model.item_probs(h, ctx_items, length))
        t_top = torch.topk(t_scores, 10).values.numpy()
    user = data.table.user_of()
    counts = [int(g - data.table.offsets[user[g]]) + 1 for g in pts]
    windows = [data.table.histories[user[g]][max(0, n - L):n] for g, n in zip(pts, counts, strict=True)]
    first = [data.table.histories[user[g]][0][3] for g in pts]
    full = rt.update(windows, counts, k=10, first_ts=first)
    np.testing.assert_allclose(full.user_vectors, h.numpy(), atol=1e-4)
    np.testing.assert_allclose(full.churn, t_churn, atol=1e-4)
    np.testing.assert_allclose(full.category_probs, t_cats, atol=1e-4)
    for b in range(len(pts)):  # same top-10 scores, and each returned item has that score in torch
        got = full.top_items[b]
        np.testing.assert_allclose([sc for _, sc in got], t_top[b], atol=1e-4)
        np.testing.assert_allclose([float(t_scores[b, rt.items.lookup(i)]) for i, _ in got], t_top[b],
                                   atol=1e-4)
    prev = rt.update([h_[max(0, n - 1 - L):n - 1] for h_, n in
                      zip((data.table.histories[user[g]] for g in pts), counts, strict=True)],
                     [n - 1 for n in counts], first_ts=first)
    inc = rt.update(windows, counts, prev.caches, k=10, first_ts=first)
    assert inc.stepped.sum() > len(pts) // 2
    np.testing.assert_allclose(inc.user_vectors, h.numpy(), atol=1e-4)
    np.testing.assert_allclose(inc.churn, t_churn, atol=1e-4)


def test_category_rank_terms_agree_between_training_and_serving() -> None:
    """The distinct-rank copy bias and generator bonus of the category head give the same log p(target)
    in the training pass (every position of a segment) and in the served distribution (a context cut
    at each length), and the rank follows the repeat-last order."""
    from export.model import ModelConfig

    torch.manual_seed(0)
    cfg = ModelConfig(n_items=30, n_categories=7, window_length=8, dropout=0.0, category_distinct_rank=True)
    model = InterestModel(cfg).eval()
    head = model.cat_head
    assert head.distinct is not None and model.item_head.distinct is None
    with torch.no_grad():
        head.distinct.weight.normal_()
    ids = torch.tensor([[2, 3, 2, 4, 0, 1, 5, 3], [6, 6, 6, 2, 3, 1, 4, 4]])
    h = torch.randn(2, 8, cfg.d_model)
    target = torch.randint(2, 7, (2, 8))
    with torch.no_grad():
        every = torch.ones(2, 8, dtype=torch.bool)
        lp = head.train_log_prob(h, ids, model.cat_emb.weight, model.cat_block, every, target).view(2, 8)
        for t in range(8):
            p = model.category_probs(h[:, t], ids, torch.full((2,), t + 1))
            served = torch.log(p.gather(1, target[:, t:t + 1]).squeeze(1) + 1e-9)
            assert torch.allclose(lp[:, t], served, atol=1e-5)
    idx = head._distinct_index(ids[:1], torch.tensor([[3]]))[0, 0]  # context 2 3 2 4
    assert idx.tolist() == [8, 2, 1, 0, 8, 8, 8, 8]


def test_ann_index_calibrates_on_the_exported_user_vectors(trained: tuple[Path, Path]) -> None:
    """The export writes held-out user vectors; a runtime ranking by ANN widens its search until its
    recall@10 on them reaches the target, and keeps that recall on other users' vectors."""
    art, _ = trained
    vectors = np.load(art / "user_vectors.npy")
    assert vectors.shape == (256, 16) and np.isfinite(vectors).all()
    rt = ModelRuntime(art, ann_threshold=0, threads=1)
    assert rt.ann is not None and rt.ann.recall is not None and rt.ann.recall >= 0.95
    data = _prepared(art)
    hists = [h for h in data.table.histories if len(h) >= 3][:64]
    out = rt.update([h[-L:] for h in hists], [len(h) for h in hists], first_ts=[h[0][3] for h in hists])
    _, exact = exact_top_k(np.load(art / "item_embeddings.npy")[2:], out.user_vectors, 10)
    found = np.array([[rt.items.lookup(i) - 2 for i, _ in row] for row in out.top_items])
    assert recall_at(found, exact) >= 0.9
