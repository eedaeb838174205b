"""The serving runtime: refuses what it cannot serve; the one-event step equals the full window."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from export.prepare import PreparedData
from stream_app.core.config import Settings
from stream_app.model.ann import ItemIndex, exact_top_k, recall_at
from stream_app.model.answers import Predictions
from stream_app.model.artifact import ArtifactError
from stream_app.model.features import (
    FeatureSpec,
    context_length,
    encode_appended,
    encode_windows,
    is_incremental,
)
from stream_app.model.kv_cache import KVCache
from stream_app.model.providers import cuda_usable
from stream_app.model.runtime import ModelRuntime
from stream_app.service.reload import load_model
from tests.unit.model.conftest import L


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
    with pytest.raises(ArtifactError, match="lacks chunk.onnx"):
        ModelRuntime(_broken(artifact, tmp_path / "b", remove="chunk.onnx"))
    with pytest.raises(ArtifactError, match="schema version 1 .*interest-tracker export"):
        ModelRuntime(_broken(artifact, tmp_path / "e", {"schema_version": 1}))
    spec = FeatureSpec(window_length=L, gap_buckets=16).to_dict()
    with pytest.raises(ArtifactError, match="feature spec"):
        ModelRuntime(_broken(artifact, tmp_path / "c", {"feature_spec": spec}))
    with pytest.raises(ArtifactError, match="window length 8, the worker keeps 50"):
        ModelRuntime(artifact, window_length=50)
    with pytest.raises(ArtifactError, match="not a directory"):
        ModelRuntime(tmp_path / "nothing")
    with pytest.raises(ArtifactError, match="vocabulary files do not match"):
        ModelRuntime(_broken(artifact, tmp_path / "d", {"n_items": 3}))


def _same(a: Predictions, b: Predictions, rows_a: list[int], rows_b: list[int]) -> None:
    np.testing.assert_allclose(a.user_vectors[rows_a], b.user_vectors[rows_b], atol=1e-4)
    np.testing.assert_allclose(a.category_probs[rows_a], b.category_probs[rows_b], atol=1e-4)
    np.testing.assert_allclose(a.churn[rows_a], b.churn[rows_b], atol=1e-4)
    for i, j in zip(rows_a, rows_b, strict=True):
        got, want = a.top_items[i], b.top_items[j]
        assert [x for x, _ in got] == [x for x, _ in want]
        np.testing.assert_allclose([s for _, s in got], [s for _, s in want], atol=1e-4)


@pytest.mark.parametrize("per_call", [1, 2, 3, 5, 13])
def test_chunks_of_new_events_equal_full_windows_at_every_event(data: PreparedData, artifact: Path,
                                                                per_call: int) -> None:
    """Several new events of a user appended to the cache as one chunk (crossing context resets when
    the chunk is long) answer at every event exactly as a full recompute of that event's context."""
    rt = ModelRuntime(artifact, window_length=L)
    hists = sorted(data.table.histories, key=len)[-3:]
    hists = [h[:40] for h in hists]
    caches: list[KVCache | None] = [None] * len(hists)
    done = [0] * len(hists)
    stepped = 0
    while any(d < len(h) for d, h in zip(done, hists, strict=True)):
        users = [b for b, h in enumerate(hists) if done[b] < len(h)]
        m = [min(per_call, len(hists[b]) - done[b]) for b in users]
        n = [done[b] + mb for b, mb in zip(users, m, strict=True)]
        windows = [hists[b][max(0, nb - L - mb):nb] for b, nb, mb in zip(users, n, m, strict=True)]
        first = [hists[b][0][3] for b in users]
        calls = rt.calls
        out = rt.update_chunks(windows, n, [caches[b] for b in users], m, k=10, first_ts=first)
        assert rt.calls - calls <= 4  # bounded, whatever the number of events per user
        assert out.user.tolist() == [i for i, mb in enumerate(m) for _ in range(mb)]
        row = 0
        for i, b in enumerate(users):
            for e in range(n[i] - m[i] + 1, n[i] + 1):
                h = hists[b]
                ref = rt.update([h[max(0, e - L):e]], [e], k=10, first_ts=[h[0][3]])
                _same(out, ref, [row], [0])
                stepped += bool(out.stepped[row])
                row += 1
            caches[b] = out.caches[i]
            assert caches[b] is not None and caches[b].n_events == n[i]
            done[b] = n[i]
    assert stepped > 0


def test_sparse_answers_append_the_unanswered_events_too(data: PreparedData, artifact: Path) -> None:
    """Answering only at some events (those that triggered a recommendation): every event since the
    cached one is appended to the cache, answered or not, and each answer equals a full recompute of
    its event's context, across context resets and from caches several events behind."""
    rt = ModelRuntime(artifact, window_length=L)
    hists = [h[:40] for h in sorted(data.table.histories, key=len)[-3:]]
    rng = np.random.default_rng(3)
    caches: list[KVCache | None] = [None] * len(hists)
    done = [0] * len(hists)
    stepped = 0
    while any(d < len(h) for d, h in zip(done, hists, strict=True)):
        users = [b for b, h in enumerate(hists) if done[b] < len(h)]
        n = [min(len(hists[b]), done[b] + int(rng.integers(1, 8))) for b in users]
        asked = [sorted({nb, *rng.choice(np.arange(done[b] + 1, nb + 1), size=min(2, nb - done[b])).tolist()})
                 for b, nb in zip(users, n, strict=True)]  # the newest and up to two others
        windows = [hists[b][max(0, nb - L):nb] for b, nb in zip(users, n, strict=True)]
        asked = [[e for e in a if context_length(e, L) <= len(w) - (nb - e)]  # in the window
                 for a, w, nb in zip(asked, windows, n, strict=True)]
        calls = rt.calls
        out = rt.update_chunks(windows, n, [caches[b] for b in users], k=10,
                               first_ts=[hists[b][0][3] for b in users], answer_events=asked)
        assert rt.calls - calls <= 4
        assert out.user.tolist() == [i for i, a in enumerate(asked) for _ in a]
        row = 0
        for i, b in enumerate(users):
            h = hists[b]
            for e in asked[i]:
                ref = rt.update([h[max(0, e - L):e]], [e], k=10, first_ts=[h[0][3]])
                _same(out, ref, [row], [0])
                stepped += bool(out.stepped[row])
                row += 1
            caches[b], done[b] = out.caches[i], n[i]
            assert caches[b] is not None and caches[b].n_events == n[i]
    assert stepped > 0


def test_evicted_or_stale_caches_fall_back_to_full(data: PreparedData, artifact: Path) -> None:
    rt = ModelRuntime(artifact, window_length=L, cache_users=2)
    hists = [h for h in data.table.histories if len(h) >= 6][:4]
    first = [h[0][3] for h in hists]
    prev = rt.update([h[:4] for h in hists], [4] * 4, first_ts=first)  # 4 users, 2 slots: some evicted
    out = rt.update([h[:5] for h in hists], [5] * 4, prev.caches, first_ts=first)
    ref = rt.update([h[:5] for h in hists], [5] * 4, first_ts=first)
    _same(out, ref, [0, 1, 2, 3], [0, 1, 2, 3])
    # an old handle of a slot that has moved on is not used
    again = rt.update([hists[0][:5]], [5], [prev.caches[0]], first_ts=first[:1])
    assert not again.stepped[0]
    _same(again, ref, [0], [0])


def test_appended_features_equal_the_window_encoding(data: PreparedData, artifact: Path) -> None:
    rt = ModelRuntime(artifact, window_length=L)
    hists = [h for h in data.table.histories if len(h) >= 30][:5]
    for n in range(2, 30):
        wins = [h[max(0, n - L):n] for h in hists]
        first = [h[0][3] for h in hists]
        enc = encode_windows(wins, rt.items, rt.categories, rt.spec, [n] * len(hists), first)
        c = int(enc.lengths[0])
        for m in range(1, c + 1):
            start = np.full(len(hists), c - m)
            ts = np.array([[e[3] for e in w[len(w) - c:]] + [0] * (L - c) for w in wins])
            types = np.array([[e[2] for e in w[len(w) - m:]] for w in wins])
            got = encode_appended(ts, start, np.full(len(hists), m), types, np.full(len(hists), n),
                                  np.array(first), rt.spec)
            for name, v in got.items():
                np.testing.assert_array_equal(v, enc.features[name][:, c - m:c], err_msg=f"{name} {n} {m}")


def test_thread_counts_of_the_sessions(artifact: Path) -> None:
    """The model graph gets the threads asked for (a worker: TRACKER_MODEL_THREADS); the item ranking
    one on CPU (docs/model.md)."""
    rt = ModelRuntime(artifact, window_length=L, threads=2)
    assert rt.chunk_session.get_session_options().intra_op_num_threads == 2
    assert rt.items_session.get_session_options().intra_op_num_threads == 1
    worker_model = load_model(artifact, Settings(window_length=L, model_threads=3))  # the worker's way
    assert worker_model.runtime.chunk_session.get_session_options().intra_op_num_threads == 3


def test_top_categories_is_a_partial_sort(artifact: Path) -> None:
    rt = ModelRuntime(artifact, window_length=L)
    probs = np.random.default_rng(0).random(len(rt.categories)).astype(np.float32)
    probs[:2] = 10.0  # PAD and UNKNOWN are never reported
    want = [(rt.categories.ids[i], float(probs[i])) for i in np.argsort(-probs) if i > 1][:5]
    assert rt.top_categories(probs, 5) == want
    assert len(rt.top_categories(probs, 10_000)) == len(rt.categories) - 2


def test_ann_ranking_for_large_catalogs(data: PreparedData, artifact: Path) -> None:
    """Above the threshold items come from the ANN index over the item embeddings, scored by the
    inner product with the user vector; they match the exact inner-product ranking."""
    rt = ModelRuntime(artifact, window_length=L, ann_threshold=0)
    assert rt.ann is not None and rt.ann.size == len(rt.items) - 2
    hists = [h for h in data.table.histories if len(h) >= 10][:8]
    out = rt.update([h[:10] for h in hists], [10] * len(hists), k=10, first_ts=[h[0][3] for h in hists])
    emb = np.load(artifact / "item_embeddings.npy")[2:]
    scores, idx = exact_top_k(emb, out.user_vectors, 10)
    hits = sum(len({rt.items.ids[i + 2] for i in idx[b]} & {i for i, _ in out.top_items[b]})
               for b in range(len(hists)))
    assert hits >= 0.95 * 10 * len(hists)
    np.testing.assert_allclose([s for _, s in out.top_items[0]][:3], scores[0, :3], atol=1e-5)


@pytest.mark.parametrize("backend", ["hnswlib", "faiss", "usearch", "exact"])
def test_item_index_backends(backend: str) -> None:
    pytest.importorskip({"exact": "numpy"}.get(backend, backend))
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(50, 16)).astype(np.float32)
    emb = centers[rng.integers(0, 50, 3000)] + 0.3 * rng.normal(size=(3000, 16)).astype(np.float32)
    q = centers[rng.integers(0, 50, 40)] + 0.3 * rng.normal(size=(40, 16)).astype(np.float32)
    index = ItemIndex(emb, backend=backend)
    scores, ids = index.search(q, 10)
    _, want = exact_top_k(emb, q, 10)
    assert recall_at(ids, want) >= 0.95 and (np.diff(scores, axis=1) <= 1e-6).all()


def _recall(index: ItemIndex, emb: np.ndarray, q: np.ndarray) -> float:
    return recall_at(index.search(q, 10)[1], exact_top_k(emb, q, 10)[1])


def test_item_index_calibration_widens_the_search_to_the_recall_target() -> None:
    """A sparse graph searched narrowly misses neighbours of queries away from the items; calibration
    doubles ef_search until recall@10 on its sample reaches the target, and other queries of the same
    kind then get about that recall too."""
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(20_000, 16)).astype(np.float32)
    sample, held_out = rng.normal(size=(2, 200, 16)).astype(np.float32)
    index = ItemIndex(emb, m=4, ef_construction=16, ef_search=10, threads=1)
    before = _recall(index, emb, held_out)
    assert before < 0.8
    assert index.calibrate(sample, target=0.95) >= 0.95 and index.ef_search > 10
    assert _recall(index, emb, held_out) >= 0.9
    assert ItemIndex(emb, backend="exact").calibrate(sample) == 1.0
