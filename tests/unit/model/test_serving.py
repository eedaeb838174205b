"""The model recommender: one runtime call per micro-batch, answers equal to a full recompute of
every event's context, whatever the number of events per user in the batch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from export.prepare import PreparedData
from stream_app.core.recommender import Recommendation, RecommendationRequest
from stream_app.model.runtime import ModelRuntime
from stream_app.model.serving import ModelRecommender
from tests.unit.model.conftest import L


def _request(user: bytes, hist: list, n: int, window: list | None = None) -> RecommendationRequest:
    return RecommendationRequest(user, hist[n - 1][3], window or list(hist[max(0, n - L):n]), n, hist[0][3],
                                 frozenset(), [])


def _assert_like_a_full_recompute(rt: ModelRuntime, ans: Recommendation, h: list, n: int) -> None:
    """``ans`` (k=5) is what a full recompute of the context of the ``n``-th event of history ``h`` gives."""
    want = rt.update([h[max(0, n - L):n]], [n], k=15, first_ts=[h[0][3]])
    assert [i for i, _, _ in ans.items] == [i for i, _ in want.top_items[0]][:5]
    assert ans.churn_probability == pytest.approx(float(want.churn[0]), abs=1e-4)
    top = rt.top_categories(want.category_probs[0])
    assert np.allclose([p for _, p in ans.categories or []], [p for _, p in top], atol=1e-4)


def test_micro_batches_answer_every_event_like_a_full_recompute(data: PreparedData, artifact: Path) -> None:
    rt = ModelRuntime(artifact, window_length=L)
    rec = ModelRecommender(rt, k=5, cache_users=100)
    hists = [h[:30] for h in sorted(data.table.histories, key=len)[-4:]]
    users = [f"u{i}".encode() for i in range(len(hists))]
    done = [0] * len(hists)
    rng = np.random.default_rng(1)
    stepped = 0
    while any(d < len(h) for d, h in zip(done, hists, strict=True)):
        reqs, refs = [], []
        for _ in range(12):  # interleaved users, 0..12 events each per batch (crosses resets at L=8)
            b = int(rng.integers(len(hists)))
            if done[b] < len(hists[b]):
                done[b] += 1
                reqs.append(_request(users[b], hists[b], done[b]))
                refs.append((b, done[b]))
        stepped += _answer_like_a_full_recompute(rt, rec, reqs, refs, hists)
    assert stepped > 0
    assert rec.cache_bytes == rt.pool.nbytes > 0  # what tracker_model_cache_bytes reports


def _answer_like_a_full_recompute(rt: ModelRuntime, rec: ModelRecommender, reqs: list[Any],
                                  refs: list[tuple[int, int]], hists: list[Any]) -> int:
    """One batch through the recommender (a few model calls at most), every answer checked against
    a full recompute of its history prefix; returns how many answers were incremental steps."""
    calls = rt.calls
    answers = rec.recommend(reqs)
    assert rt.calls - calls <= 5
    stepped = 0
    for ans, (b, n) in zip(answers, refs, strict=True):
        _assert_like_a_full_recompute(rt, ans, hists[b], n)
        stepped += ans.stepped
    return stepped


def test_rate_limited_requests_answer_like_a_full_recompute(data: PreparedData, artifact: Path) -> None:
    """Requests at some events only (the rate limit): the events in between reach the model with the
    next request, appended to the cached keys/values, and every answer equals a full recompute."""
    rt = ModelRuntime(artifact, window_length=L)
    rec = ModelRecommender(rt, k=5, cache_users=100)
    hists = [h[:30] for h in sorted(data.table.histories, key=len)[-3:]]
    rng = np.random.default_rng(2)
    done = [0] * len(hists)
    stepped = 0
    while any(d < len(h) for d, h in zip(done, hists, strict=True)):
        reqs, refs = [], []
        for b, h in enumerate(hists):
            for _ in range(int(rng.integers(0, 6))):  # 0..5 events per user per batch, some asked
                if done[b] < len(h):
                    done[b] += 1
                    if rng.random() < 0.4 or done[b] == len(h):
                        reqs.append(_request(f"u{b}".encode(), h, done[b]))
                        refs.append((b, done[b]))
        if not reqs:
            continue
        stepped += _answer_like_a_full_recompute(rt, rec, reqs, refs, hists)
    assert stepped > 0


def test_a_window_changed_by_an_out_of_order_event_is_recomputed(data: PreparedData, artifact: Path) -> None:
    rt = ModelRuntime(artifact, window_length=L)
    rec = ModelRecommender(rt, k=5, cache_users=100)
    h = list(sorted(data.table.histories, key=len)[-1][:6])
    rec.recommend([_request(b"u", h, 3)])
    late = (h[3][0], h[3][1], h[3][2], h[0][3] + 1)  # sorts second: the window is no longer a prefix
    w4 = sorted([*h[:3], late], key=lambda e: e[3])
    w5 = [*w4, h[4]]
    answers = rec.recommend([_request(b"u", h, 4, w4), _request(b"u", h, 5, w5)])
    for ans, (w, n) in zip(answers, ((w4, 4), (w5, 5)), strict=True):
        want = rt.update([w], [n], k=15, first_ts=[h[0][3]])
        assert [i for i, _, _ in ans.items] == [i for i, _ in want.top_items[0]][:5]
        assert ans.churn_probability == pytest.approx(float(want.churn[0]), abs=1e-4)


def test_the_pool_holds_one_slot_per_cached_user(data: PreparedData, artifact: Path) -> None:
    """A user's many events in one batch cross several context resets: only the last context is
    cached, an earlier slot of the user is released, and a user evicted from the cache (or erased)
    frees theirs. (Before: a slot per context, 10,000 slots of 52 KB for 181 Taobao users.)"""
    rt = ModelRuntime(artifact, window_length=L)
    rec = ModelRecommender(rt, k=5, cache_users=2)
    hists = [h[:40] for h in sorted(data.table.histories, key=len)[-3:]]
    for start, end in ((0, 20), (20, 40)):  # 20 events per user per batch: resets every L/2 events
        rec.recommend([_request(f"u{b}".encode(), h, n) for b, h in enumerate(hists)
                       for n in range(start + 1, end + 1)])
        assert rt.pool.in_use == 2  # three users, a cache of two: the least recent was evicted
    rec.forget(b"u2")
    assert rt.pool.in_use == 1
