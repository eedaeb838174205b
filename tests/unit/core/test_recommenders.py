"""The baseline answers the one Recommender call (no broker)."""

from __future__ import annotations

from stream_app.core.baseline import BaselineRecommender
from stream_app.core.catalog import Catalog
from stream_app.core.recommender import RecommendationRequest, Recommender
from stream_app.core.state import PURCHASE, StatePolicy, WindowEntry

T0 = 1_700_000_000_000


def request(window: list[WindowEntry], interests: list[tuple[str, float]]) -> RecommendationRequest:
    return RecommendationRequest(b"u", window[-1][3], window, len(window), window[0][3],
                                 frozenset(i for i, _, t, _ in window if t == PURCHASE), interests)


def test_baseline_ranks_popular_items_of_the_strongest_categories_and_skips_bought_ones() -> None:
    catalog = Catalog({("a1", "A"): 10, ("a2", "A"): 5, ("b1", "B"): 8, ("z1", "Z"): 100})
    rec: Recommender = BaselineRecommender(catalog, k=3, policy=StatePolicy())
    window = [("a2", "A", PURCHASE, T0), ("b1", "B", 1, T0 + 1)]
    [answer] = rec.recommend([request(window, [("A", 5.0), ("B", 1.0)])])
    items = [i for i, _, _ in answer.items]
    assert items[0] == "a1" and "a2" not in items and "z1" not in items
    assert answer.categories is None and answer.churn_probability is None
    assert rec.risk_threshold is None  # no churn risk: the silence rule alone warns


def test_one_answer_per_request_in_order() -> None:
    rec = BaselineRecommender(None, k=5, policy=StatePolicy())
    reqs = [request([(f"i{n}", "C", 1, T0 + n)], [("C", 1.0)]) for n in range(4)]
    answers = rec.recommend(reqs)
    assert [a.items[0][0] for a in answers] == ["i0", "i1", "i2", "i3"]
