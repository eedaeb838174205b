"""The transparent baseline recommender, and the fallback whenever no model is loaded.

Score = the user's time-decayed interest share of a category x the item's popularity in it
(from the catalog), plus the user's own recent interactions in those categories; items the
user has just bought (in the window) are excluded.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from stream_app.core.catalog import Catalog
from stream_app.core.churn import RiskThreshold
from stream_app.core.recommender import Recommendation, RecommendationRequest
from stream_app.core.state import TYPE_WEIGHT, StatePolicy

TOP_CATEGORIES = 3
OWN_HISTORY_WEIGHT = 0.5  # a catalog hit and a re-engagement candidate weigh alike at ~2 events


class BaselineRecommender:
    name = "baseline"
    risk_threshold: RiskThreshold | None = None  # no churn risk: the silence rule alone warns

    def __init__(self, catalog: Catalog | None, k: int, policy: StatePolicy):
        self.catalog, self.k, self.policy = catalog, k, policy
        self.version = "category-popularity" if catalog else "recent-interest"

    def recommend(self, requests: Sequence[RecommendationRequest]) -> list[Recommendation]:
        return [Recommendation(self.top_items(r)) for r in requests]

    def forget(self, user: bytes) -> None:
        """Nothing per user is kept."""

    def top_items(self, req: RecommendationRequest) -> list[tuple[str, float, str | None]]:
        """Top-k (item, score, category) for the user at event time ``req.at_ts``."""
        top = req.interests[:TOP_CATEGORIES]
        total = sum(s for _, s in top) or 1.0
        share = {c: s / total for c, s in top}
        bought = req.bought
        scores: dict[str, float] = {}
        cat_of: dict[str, str | None] = {}
        if self.catalog is not None:
            for top_cat, w in share.items():
                for item, pop in self.catalog.top.get(top_cat, ()):
                    if item not in bought:
                        scores[item] = scores.get(item, 0.0) + w * pop
                        cat_of[item] = top_cat
        rate = self.policy.decay_rate
        for item, cat, code, ts in req.window:
            if item in bought or (share and cat not in share):
                continue
            w = share.get(cat, 1.0) if cat is not None else 1.0
            bump = OWN_HISTORY_WEIGHT * w * TYPE_WEIGHT[code] * math.exp(-rate * max(0, req.at_ts - ts)) / 3
            scores[item] = scores.get(item, 0.0) + bump
            cat_of[item] = cat
        best = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))[: self.k]
        return [(item, round(score, 6), cat_of[item]) for item, score in best]
