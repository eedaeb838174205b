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
from dataclasses import dataclass

from stream_app import metrics
from stream_app.model_runtime import KVCache, ModelRuntime
from stream_app.state import WindowEntry

EXTRA_CANDIDATES = 10  # asked beyond k, so that items just bought can be dropped


@dataclass(slots=True)
class ModelRequest:
    user: bytes
    window: list[WindowEntry]  # the window right after the event, oldest first
    n_events: int
    first_ts: int
    bought: frozenset[str]


@dataclass(slots=True)
class ModelAnswer:
    items: list[tuple[str, float]]
    categories: list[tuple[str, float]]
    churn: float  # P(no event within the model's horizon after this one)
    stepped: bool  # answered by the one-event step


class ModelRecommender:
    name = "attention"

    def __init__(self, runtime: ModelRuntime, k: int, cache_users: int):
        self.runtime, self.k, self.cache_users = runtime, k, cache_users
        self.version = runtime.version
        self._caches: OrderedDict[bytes, KVCache] = OrderedDict()
        self.last_churn: OrderedDict[bytes, float] = OrderedDict()

    def score(self, requests: Sequence[ModelRequest]) -> list[ModelAnswer]:
        rounds: list[list[int]] = []
        seen: dict[bytes, int] = {}
        for i, req in enumerate(requests):
            r = seen.get(req.user, 0)
            seen[req.user] = r + 1
            if r == len(rounds):
                rounds.append([])
            rounds[r].append(i)
        answers: list[ModelAnswer | None] = [None] * len(requests)
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
                self._remember(self.last_churn, req.user, churn)
                items = [(item, s) for item, s in pred.top_items[j] if item not in req.bought][: self.k]
                stepped = bool(pred.stepped[j])
                metrics.MODEL_UPDATES.labels("step" if stepped else "full").inc()
                answers[i] = ModelAnswer(items, self.runtime.top_categories(pred.category_probs[j]),
                                         churn, stepped)
        return answers  # type: ignore[return-value]

    def _remember(self, lru: OrderedDict, user: bytes, value: object) -> None:
        lru[user] = value
        lru.move_to_end(user)
        while len(lru) > self.cache_users:
            lru.popitem(last=False)
