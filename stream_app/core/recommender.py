"""One shape for every recommender: the baseline and the attention model answer the same call.

The service collects one :class:`RecommendationRequest` per applied event of a micro-batch (a
snapshot of the user's state right after that event) and asks the loaded recommender once for all
of them; answers come back in request order."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from stream_app.core.churn import RiskThreshold
from stream_app.core.events import Event
from stream_app.core.state import PURCHASE, WindowEntry


@dataclass(slots=True)
class RecommendationRequest:
    user: bytes
    at_ts: int  # event time of the triggering event
    window: list[WindowEntry]  # the user's window right after the event, oldest first
    n_events: int  # events applied to the user so far
    first_ts: int  # event time of the user's first event
    bought: frozenset[str]  # items bought in the window, and a triggering purchase's: never recommended
    interests: list[tuple[str, float]]  # strongest categories at ``at_ts`` (long-term)
    short_interests: list[tuple[str, float]] = field(default_factory=list)  # short-term horizon


def bought_items(window: Sequence[WindowEntry], trigger: Event) -> frozenset[str]:
    """Items never to recommend at ``trigger``: those bought in the window, and the triggering
    purchase's own item, which a purchase that arrives after a full window of the user's later
    events (replication can delay one input partition on Kafka) is no longer in."""
    bought = frozenset(e[0] for e in window if e[2] == PURCHASE)
    return bought | {trigger.item_id} if trigger.type == "purchase" else bought


@dataclass(slots=True)
class Recommendation:
    items: Sequence[tuple[str, float, str | None]]  # best first: (item id, score, category id)
    categories: list[tuple[str, float]] | None = None  # predicted next categories, if the model has them
    churn_probability: float | None = None  # P(no event within the model's horizon), if known
    stepped: bool = False  # answered by an incremental step (model) rather than a full recompute


class Recommender(Protocol):
    name: str
    version: str
    risk_threshold: RiskThreshold | None  # the churn-risk warning threshold of a model, if calibrated

    def recommend(self, requests: Sequence[RecommendationRequest]) -> list[Recommendation]:
        """One answer per request, in order; a user's requests come in event order."""
        ...

    def forget(self, user: bytes) -> None:
        """Drop whatever the recommender keeps about the user (erasure)."""
        ...
