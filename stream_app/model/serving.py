"""Recommendations from the attention model inside the worker, one per applied event.

Each micro-batch makes one model call per "round": round r holds the r-th applied event of every
user in the batch, so a user with several events gets an answer after each of them, exactly as if
the events had come one by one. Keys/values of each user's context are cached in memory (LRU) and
fed back to the one-event step; the cache is derived state, not kept in the changelog: a user whose
cache is missing (after a restart or a rebalance) is answered by the full window instead.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from stream_app.core.recommender import Recommendation, RecommendationRequest
from stream_app.model.runtime import KVCache, ModelRuntime

EXTRA_CANDIDATES = 10  # asked beyond k, so that items just bought can be dropped


class ModelRecommender:
    """The :class:`~stream_app.core.recommender.Recommender` backed by a :class:`ModelRuntime`."""

    name = "attention"

    def __init__(self, runtime: ModelRuntime, k: int, cache_users: int):
        self.runtime, self.k, self.cache_users = runtime, k, cache_users
        self.version = runtime.version
        self._caches: OrderedDict[bytes, KVCache] = OrderedDict()
        self._last_churn: OrderedDict[bytes, float] = OrderedDict()

    def churn_probability(self, user: bytes) -> float | None:
        return self._last_churn.get(user)

    def forget(self, user: bytes) -> None:
        self._caches.pop(user, None)
        self._last_churn.pop(user, None)

    def recommend(self, requests: Sequence[RecommendationRequest]) -> list[Recommendation]:
        rounds: list[list[int]] = []
        seen: dict[bytes, int] = {}
        for i, req in enumerate(requests):
            r = seen.get(req.user, 0)
            seen[req.user] = r + 1
            if r == len(rounds):
                rounds.append([])
            rounds[r].append(i)
        answers: list[Recommendation | None] = [None] * len(requests)
        k = min(self.k + EXTRA_CANDIDATES, self.runtime.top_k_max)
        for idx in rounds:
            reqs = [requests[i] for i in idx]
            pred = self.runtime.update(
                [r.window for r in reqs], [r.n_events for r in reqs],
                [self._caches.get(r.user) for r in reqs], k=k, first_ts=[r.first_ts for r in reqs])
            for j, (i, req) in enumerate(zip(idx, reqs, strict=True)):
                cache = pred.caches[j]
                if cache is not None:
                    self._remember(self._caches, req.user, cache)
                churn = float(pred.churn[j])
                self._remember(self._last_churn, req.user, churn)
                items = [(item, round(s, 6), None) for item, s in pred.top_items[j]
                         if item not in req.bought][: self.k]
                answers[i] = Recommendation(
                    items, self.runtime.top_categories(pred.category_probs[j]), churn,
                    bool(pred.stepped[j]))
        return answers  # type: ignore[return-value]

    def _remember(self, lru: OrderedDict[bytes, Any], user: bytes, value: object) -> None:
        lru[user] = value
        lru.move_to_end(user)
        while len(lru) > self.cache_users:
            lru.popitem(last=False)
