"""Churn warnings: two rules, one episode at a time per user.

- ``risk`` (:class:`RiskRule`, when the worker serves a model): the model's churn risk at the user's
  newest event reaches the artifact's threshold, calibrated on validation users for a stated
  precision (``export/churn_warning.py``). The warning is at that event, before the user goes
  silent. The episode it opens ends when the risk at a later event falls below the threshold.
- ``silence`` (:class:`ChurnDetector`, the backstop, with or without a model): the user has been
  silent for their threshold. The episode ends with the user's next event.

A user gets one warning per episode, from whichever rule fires first (``UserState.churn_rule``).

Silence in event time: per-partition watermarks and a deadline heap per partition.
A user's deadline is ``last event + threshold`` with ``threshold = max(min_silence,
gap_multiple x the user's typical gap)``. When a partition's watermark passes a deadline, the user
gets one warning per episode; an episode ends when the user comes back. The watermark is the newest
event time that at least ``quorum`` users of the partition have reached (the newest while fewer are
known; it never moves back): one user's far-future event cannot make everyone else look silent. The heaps are
derived state: rebuilt from the table after a rebalance.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from stream_app.core.state import RISK, SILENCE, UserState


@dataclass(frozen=True)
class RiskThreshold:
    """The model's warning threshold and what it gave on validation users (artifact metadata
    ``churn_warning``, written by ``export/churn_warning.py``)."""

    threshold: float
    precision: float  # the stated precision the threshold was calibrated for
    expected_lead_ms: int | None  # median time from warning to last event on validation churners

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any]) -> RiskThreshold | None:
        """None for an artifact without a calibrated threshold (older, or none reached the target)."""
        found = metadata.get("churn_warning") or {}
        if found.get("threshold") is None:
            return None
        return cls(float(found["threshold"]), float(found["precision_target"]), found.get("expected_lead_ms"))


class RiskRule:
    """Warn when the model's churn risk at a user's newest event reaches the threshold."""

    def __init__(self, threshold: RiskThreshold | None):
        self.threshold = threshold

    def update(self, state: UserState, risk: float, ts: int) -> bool:
        """Record ``risk``, the model's risk at the user's newest event (event time ``ts``), in the
        state; True when it opens an episode (a warning is due, stamped ``ts``). An open risk episode
        ends here when the risk fell below the threshold: the user is back to normal."""
        state.churn_risk = risk
        if self.threshold is None:
            return False
        high = risk >= self.threshold.threshold
        if state.churn_warned_at:
            if state.churn_rule == RISK and not high:
                state.close_churn_episode()
            return False
        if high:
            state.churn_warned_at, state.churn_rule = ts, RISK
        return high

    def reason(self, state: UserState) -> str:
        assert self.threshold is not None
        t = self.threshold
        return (f"model churn risk {state.churn_risk or 0:.3f} >= {t.threshold:.3f}, the threshold for "
                f"precision {t.precision:.0%} on validation users")


class ChurnDetector:
    def __init__(self, min_silence_ms: int, gap_multiple: float, quorum: int = 3):
        self.min_silence_ms, self.gap_multiple, self.quorum = min_silence_ms, gap_multiple, quorum
        self.watermark: dict[int, int] = {}
        self._heaps: dict[int, list[tuple[int, bytes, int]]] = {}  # (deadline, user, last_ts)
        self._latest: dict[int, dict[bytes, int]] = {}  # partition -> user -> newest last_ts
        # partition -> the ``quorum`` users with the newest last_ts (a user's last_ts only grows,
        # so a user outside this set enters it only by passing its smallest member)
        self._leaders: dict[int, dict[bytes, int]] = {}

    @property
    def users_tracked(self) -> int:
        return sum(len(u) for u in self._latest.values())

    def partitions(self) -> set[int]:
        return set(self._latest)

    def threshold_ms(self, state: UserState) -> int:
        gap = state.typical_gap_ms()
        return max(self.min_silence_ms, int(self.gap_multiple * gap) if gap else 0)

    def track(self, partition: int, user: bytes, state: UserState) -> None:
        """(Re)arm a user's deadline after their state changed."""
        latest = self._latest.setdefault(partition, {})
        if latest.get(user) == state.last_ts:
            return
        latest[user] = state.last_ts
        self._lead(partition, user, state.last_ts)
        heap = self._heaps.setdefault(partition, [])
        heapq.heappush(heap, (self.deadline(state), user, state.last_ts))
        if len(heap) > 4 * len(latest) + 1024:  # drop superseded entries
            heap[:] = [e for e in heap if latest.get(e[1]) == e[2]]
            heapq.heapify(heap)

    def _lead(self, partition: int, user: bytes, last_ts: int) -> None:
        leaders = self._leaders.setdefault(partition, {})
        if user in leaders or len(leaders) < self.quorum:
            leaders[user] = last_ts
            return
        weakest = min(leaders, key=lambda u: (leaders[u], u))
        if last_ts > leaders[weakest]:
            del leaders[weakest]
            leaders[user] = last_ts

    def _quorum_time(self, partition: int) -> int:
        leaders = self._leaders.get(partition, {}).values()
        if len(leaders) < self.quorum:  # too few users to outvote one: the newest of them
            return max(leaders, default=0)
        return min(leaders)

    def advance(self, partition: int) -> list[bytes]:
        """Move the partition's watermark to its quorum time; return users whose deadline passed."""
        wm = self.watermark.get(partition, 0)
        ts = self._quorum_time(partition)
        if ts <= wm:
            return []
        self.watermark[partition] = ts
        heap = self._heaps.get(partition)
        due: list[bytes] = []
        latest = self._latest.get(partition, {})
        while heap and heap[0][0] <= ts:
            _, user, last_ts = heapq.heappop(heap)
            if latest.get(user) == last_ts:
                due.append(user)
        return due

    def forget_partition(self, partition: int) -> None:
        self._heaps.pop(partition, None)
        self._latest.pop(partition, None)
        self._leaders.pop(partition, None)
        self.watermark.pop(partition, None)

    def forget_user(self, partition: int, user: bytes) -> None:
        """Drop a user (erasure): no deadline of theirs fires; their stale heap entries are skipped
        by :meth:`advance` and dropped at the next compaction. The watermark does not move back."""
        self._latest.get(partition, {}).pop(user, None)
        self._leaders.get(partition, {}).pop(user, None)
        heap = self._heaps.get(partition)
        if heap:
            heap[:] = [e for e in heap if e[1] != user]
            heapq.heapify(heap)

    def rebuild_partition(self, partition: int, states: list[tuple[bytes, UserState]]) -> None:
        """Rebuild after an assignment: the watermark resumes at the newest event time seen."""
        self.forget_partition(partition)
        self._latest[partition] = {}
        for user, state in states:
            if not state.churn_warned_at:
                self.track(partition, user, state)
            else:
                self._latest[partition][user] = state.last_ts
                self._lead(partition, user, state.last_ts)
        self.watermark[partition] = self._quorum_time(partition)

    def warn(self, state: UserState) -> bool:
        """Open a silence episode for a user whose deadline passed; False when an episode (of either
        rule) is already open: one warning per episode."""
        if state.churn_warned_at:
            return False
        state.churn_warned_at, state.churn_rule = self.deadline(state), SILENCE
        return True

    def deadline(self, state: UserState) -> int:
        """Event time at which the user's silence reaches their threshold: the warning's time.
        (Not the watermark that revealed it, which depends on what else the partition carried.)"""
        return state.last_ts + self.threshold_ms(state)

    def risk(self, state: UserState) -> float:
        """Heuristic: 0.5 when the silence is ``gap_multiple`` usual gaps long, nearer 1 the more
        regular the user was (the minimum silence is then many more of their usual gaps)."""
        gap = state.typical_gap_ms()
        if not gap:
            return 0.5
        ratio = self.threshold_ms(state) / (self.gap_multiple * gap)
        return round(1.0 - 0.5 ** ratio, 4)

    def reason(self, state: UserState) -> str:
        silence = self.threshold_ms(state)
        gap = state.typical_gap_ms()
        text = f"silent {silence / 86_400_000:.1f} days"
        if gap:
            text += f", {silence / max(gap, 1):.1f}x the usual gap of {gap / 60_000:.1f} min"
        return text
