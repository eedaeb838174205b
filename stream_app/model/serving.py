"""Recommendations from the attention model inside the worker, one per request (an event that
triggered a recommendation: the rate limit in event time of :mod:`stream_app.core.state`).

Each micro-batch makes one runtime call for all its requests: the events a user has had since the
model last saw them (triggering or not) are appended to the cached keys/values as one causal chunk and
the model answers at each triggering event, exactly as if the events had come one by one (a bounded
number of ONNX Runtime runs, whatever the number of events per user: :meth:`ModelRuntime.update_chunks`).
So model work scales with recommendations, not events. Keys/values of each user's context are cached in
memory (LRU handles into the runtime's pool); the cache is derived state, not kept in the changelog: a
user whose cache is missing (after a restart or a rebalance) is answered by a full recompute instead.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

from stream_app.core.churn import RiskThreshold
from stream_app.core.recommender import Recommendation, RecommendationRequest
from stream_app.model.features import context_length
from stream_app.model.kv_cache import KVCache
from stream_app.model.runtime import ModelRuntime

EXTRA_CANDIDATES = 10  # asked beyond k, so that items just bought can be dropped


class ModelRecommender:
    """The :class:`~stream_app.core.recommender.Recommender` backed by a :class:`ModelRuntime`."""

    name = "attention"

    def __init__(self, runtime: ModelRuntime, k: int, cache_users: int):
        self.runtime, self.k, self.cache_users = runtime, k, cache_users
        runtime.pool.max_slots = max(cache_users, 1)  # one pool slot per cached user
        self.version = runtime.version
        self._caches: OrderedDict[bytes, KVCache] = OrderedDict()
        self.risk_threshold = RiskThreshold.from_metadata(runtime.metadata)

    @property
    def cache_bytes(self) -> int:
        """Memory held by the cached keys/values (the runtime's KV pool)."""
        return self.runtime.pool.nbytes

    @property
    def ranking_recall(self) -> float:
        """Recall@10 of the item ranking, measured at load: the ANN index's, or 1 (exact)."""
        ann = self.runtime.ann
        return 1.0 if ann is None or ann.recall is None else ann.recall

    def forget(self, user: bytes) -> None:
        cache = self._caches.pop(user, None)
        if cache is not None:
            self.runtime.pool.release(cache)

    def recommend(self, requests: Sequence[RecommendationRequest]) -> list[Recommendation]:
        # one entry per run of a user's requests whose last window holds every earlier context of the
        # run unchanged (a run ends where the window changed otherwise, e.g. an out-of-order insert)
        entries: list[list[int]] = []
        open_run: dict[bytes, int] = {}
        for i, req in enumerate(requests):
            e = open_run.get(req.user)
            if e is not None and self._extends(requests[entries[e][-1]], req):
                entries[e].append(i)
            else:
                open_run[req.user] = len(entries)
                entries.append([i])
        lasts = [requests[idx[-1]] for idx in entries]
        first_entry: set[int] = set()
        last_entry: dict[bytes, int] = {}
        for e, req in enumerate(lasts):
            if req.user not in last_entry:
                first_entry.add(e)
            last_entry[req.user] = e
        k = min(self.k + EXTRA_CANDIDATES, self.runtime.top_k_max)
        pred = self.runtime.update_chunks(
            [r.window for r in lasts], [r.n_events for r in lasts],
            [self._caches.get(r.user) if e in first_entry else None for e, r in enumerate(lasts)],
            k=k, first_ts=[r.first_ts for r in lasts],
            keep=[last_entry[r.user] == e for e, r in enumerate(lasts)],  # only a user's last is cached
            answer_events=[[requests[i].n_events for i in idx] for idx in entries])
        for e, req in enumerate(lasts):
            cache = pred.caches[e]
            if cache is not None:
                old = self._caches.get(req.user)
                if old is not None and old.slot != cache.slot:
                    self.runtime.pool.release(old)  # the user's context moved to another slot
                self._remember(self._caches, req.user, cache, self.runtime.pool.release)
        answers: list[Recommendation | None] = [None] * len(requests)
        rows = (i for idx in entries for i in idx)
        for row, i in enumerate(rows):
            req = requests[i]
            churn = float(pred.churn[row])
            items = [(item, round(s, 6), None) for item, s in pred.top_items[row]
                     if item not in req.bought][: self.k]
            answers[i] = Recommendation(items, self.runtime.top_categories(pred.category_probs[row]), churn,
                                        bool(pred.stepped[row]))
        return answers  # type: ignore[return-value]

    def _extends(self, prev: RecommendationRequest, req: RecommendationRequest) -> bool:
        """True when ``req``'s event comes after ``prev``'s and ``req``'s window holds ``prev``'s
        context unchanged, at the place of ``prev``'s event (so the run's earlier contexts, which end
        in it, too)."""
        d = req.n_events - prev.n_events
        if d <= 0:
            return False
        c = context_length(prev.n_events, self.runtime.spec.window_length)
        end = len(req.window) - d
        return end - c >= 0 and req.window[end - c:end] == prev.window[len(prev.window) - c:]

    def _remember(self, lru: OrderedDict[bytes, Any], user: bytes, value: Any,
                  on_evict: Callable[[Any], None] | None = None) -> None:
        lru[user] = value
        lru.move_to_end(user)
        while len(lru) > self.cache_users:
            _, evicted = lru.popitem(last=False)
            if on_evict is not None:
                on_evict(evicted)
