"""The serving runtime: refuses what it cannot serve; the one-event step equals the full window."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import shared_data

from export.prepare import PreparedData, prepare
from export.splits import SplitSpec
from stream_app.model.artifact import ArtifactError
from stream_app.model.features import FeatureSpec, is_incremental
from stream_app.model.runtime import KVCache, ModelRuntime, cuda_usable
from tests.support.artifacts import tiny_artifact

L = 8


@pytest.fixture(scope="module")
def data() -> PreparedData:
    path = shared_data("taobao/UserBehavior_10k.csv")
    return prepare(path, SplitSpec("time"), FeatureSpec(window_length=L), min_item_count=2, progress=False)


@pytest.fixture(scope="module")
def artifact(data: PreparedData, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_artifact(data, tmp_path_factory.mktemp("artifact"))


def test_incremental_updates_equal_full_recompute(data: PreparedData, artifact: Path) -> None:
    rt = ModelRuntime(artifact, window_length=L)
    assert rt.provider == "CPUExecutionProvider" and not cuda_usable()
    history = max(data.table.histories, key=len)[:40]  # a real user's events, fed one at a time
    cache: KVCache | None = None
    stepped = []
    for n in range(1, len(history) + 1):
        window = history[max(0, n - L):n]
        first = [history[0][3]]
        inc = rt.update([window], [n], [cache], k=10, first_ts=first)
        full = rt.update([window], [n], k=10, first_ts=first)
        stepped.append(bool(inc.stepped[0]))
        assert not full.stepped[0]
        np.testing.assert_allclose(inc.user_vectors, full.user_vectors, atol=1e-4)
        np.testing.assert_allclose(inc.category_probs, full.category_probs, atol=1e-4)
        np.testing.assert_allclose(inc.churn, full.churn, atol=1e-4)
        assert [i for i, _ in inc.top_items[0]] == [i for i, _ in full.top_items[0]]
        cache = inc.caches[0]
        assert cache is not None and cache.n_events == n
    assert stepped == [is_incremental(n, L) for n in range(1, len(history) + 1)]
    assert sum(stepped) > len(history) // 2


def test_batch_mixes_steps_and_full_windows(data: PreparedData, artifact: Path) -> None:
    rt = ModelRuntime(artifact)
    hists = [h for h in data.table.histories if len(h) >= 12][:6]
    n = [6, 7, 10, 11, 12, 9]  # some incremental, some at a reset (L=8: 9 and 12 reset)
    first = [h[0][3] for h in hists]
    prev = rt.update([h[max(0, c - 1 - L):c - 1] for h, c in zip(hists, n, strict=True)], [c - 1 for c in n],
                     first_ts=first)
    windows = [h[max(0, c - L):c] for h, c in zip(hists, n, strict=True)]
    out = rt.update(windows, n, prev.caches, k=5, exclude_seen=True, first_ts=first)
    ref = rt.update(windows, n, k=5, exclude_seen=True, first_ts=first)
    assert out.stepped.tolist() == [is_incremental(c, L) for c in n] and out.stepped.any()
    np.testing.assert_allclose(out.user_vectors, ref.user_vectors, atol=1e-4)
    for b, w in enumerate(windows):
        assert len(out.top_items[b]) == 5
        assert not {i for i, _ in out.top_items[b]} & {e[0] for e in w}
    # A cache that does not belong to the window (other user) is not used.
    wrong = rt.update(windows[:1], n[:1], prev.caches[1:2], first_ts=first[:1])
    assert not wrong.stepped[0]
    top = rt.top_categories(out.category_probs[0], k=3)
    assert len(top) == 3 and top[0][1] >= top[1][1] >= top[2][1]


def _broken(src: Path, dst: Path, edit: dict | None = None, remove: str | None = None) -> Path:
    shutil.copytree(src, dst)
    if edit is not None:
        meta = json.loads((dst / "metadata.json").read_text())
        meta.update(edit)
        (dst / "metadata.json").write_text(json.dumps(meta))
    if remove:
        (dst / remove).unlink()
    return dst


def test_refuses_what_it_cannot_serve(artifact: Path, tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="schema version 99"):
        ModelRuntime(_broken(artifact, tmp_path / "a", {"schema_version": 99}))
    with pytest.raises(ArtifactError, match="lacks step.onnx"):
        ModelRuntime(_broken(artifact, tmp_path / "b", remove="step.onnx"))
    spec = FeatureSpec(window_length=L, gap_buckets=16).to_dict()
    with pytest.raises(ArtifactError, match="feature spec"):
        ModelRuntime(_broken(artifact, tmp_path / "c", {"feature_spec": spec}))
    with pytest.raises(ArtifactError, match="window length 8, the worker keeps 50"):
        ModelRuntime(artifact, window_length=50)
    with pytest.raises(ArtifactError, match="not a directory"):
        ModelRuntime(tmp_path / "nothing")
    with pytest.raises(ArtifactError, match="vocabulary files do not match"):
        ModelRuntime(_broken(artifact, tmp_path / "d", {"n_items": 3}))
