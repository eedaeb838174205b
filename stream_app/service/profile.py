"""What the profile API tells about a user: their state, churn view and latest recommendation."""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING, Any

import orjson

from stream_app.core.state import UserState

if TYPE_CHECKING:
    from stream_app.service.track import Tracker


class LatestRecommendations:
    """The latest recommendation value per user, in memory (LRU, ``capacity`` users): cheap to
    keep, but not durable. A user not seen by this worker since it started or took the partition
    has none (the profile says ``null``); the recommendations topic has them all."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._values: OrderedDict[bytes, bytes] = OrderedDict()

    def put(self, user: bytes, value: bytes) -> None:
        if self.capacity <= 0:
            return
        self._values[user] = value
        self._values.move_to_end(user)
        while len(self._values) > self.capacity:
            self._values.popitem(last=False)

    def get(self, user: bytes) -> dict[str, Any] | None:
        value = self._values.get(user)
        return orjson.loads(value) if value is not None else None

    def forget(self, user: bytes) -> None:
        self._values.pop(user, None)


def profile(tracker: Tracker, user: bytes, partition: int) -> dict[str, Any] | None:
    """The user's profile as the table holds it now; None for an unknown (or erased) user."""
    raw = tracker.table.get(user)
    if raw is None:
        return None
    state = UserState.decode(raw)
    churn = tracker.churn
    return {
        "user_id": user.decode(),
        "partition": partition,
        **state.to_json(tracker.policy),
        "churn": {
            "warned_at": state.churn_warned_at or None,  # the current episode's warning, if any
            "deadline_ts": churn.deadline(state),  # event time at which silence becomes churn
            "threshold_ms": churn.threshold_ms(state),
            "risk": churn.risk(state),
            "rule": state.churn_rule or None,  # the rule that opened the current episode
            "model_churn_probability": (round(state.churn_risk, 6) if state.churn_risk is not None
                                        else None),
        },
        "latest_recommendation": tracker.latest.get(user),
        "model": tracker.model_info,
        "churn_model": tracker.churn_model_info,
    }
