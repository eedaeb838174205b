"""The baseline answers the one Recommender call (no broker)."""

from __future__ import annotations

from stream_app.core.baseline import BaselineRecommender
from stream_app.core.catalog import Catalog
from stream_app.core.events import Event
from stream_app.core.recommender import RecommendationRequest, Recommender, bought_items
from stream_app.core.state import PURCHASE, StatePolicy, UserState, WindowEntry

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


def test_a_late_purchase_beyond_the_window_is_still_not_recommended_at_its_trigger() -> None:
    """A purchase applied after a full window of the user's later events falls out of the window at
    once; the recommendation it triggers must still leave its item out."""
    policy = StatePolicy(window_length=5, dedupe_memory=64)
    state = UserState()
    for i in range(5):  # later views of the same item, applied first
        state.apply(Event(f"v{i}", "u", "item", "c", 2_000 + i, "browse"), i, policy)
    late = Event("buy", "u", "item", "c", 1_000, "purchase")
    state.apply(late, 99, policy)
    assert all(e[2] != PURCHASE for e in state.window)  # the window kept the 5 newest
    assert bought_items(state.window, late) == frozenset({"item"})
    assert bought_items(state.window, Event("v9", "u", "other", "c", 3_000, "browse")) == frozenset()
