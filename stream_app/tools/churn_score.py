"""Churn warnings scored against a synthetic workload's ground truth (:class:`GroundTruth`).

A churner is a user the generator stopped for good within the events replayed (their planned churn
time is not after the last event replayed); their last event is the one the tracker saw last.
Scores are per user (a user's first warning counts for the lead):

- ``warned``: churners with at least one warning;
- ``early``: churners warned (event time of the warning, ``detected_ts``) before their last event;
- ``precision``: warned users who are churners, over all warned users;
- ``median_lead_ms``: median over warned churners of ``last event ts - first warning ts``
  (negative: the warning came after the last event, as a silence rule's always does).
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import dataclass

from stream_app.tools.generate import DAY_MS, GroundTruth


@dataclass(frozen=True)
class ChurnScore:
    churners: int
    warned_users: int
    warned: int  # churners warned at all
    early: int  # churners warned before their last event
    true_positives: int  # warned users who are churners (== warned)
    median_lead_ms: float | None

    @property
    def recall(self) -> float | None:
        return self.warned / self.churners if self.churners else None

    @property
    def early_recall(self) -> float | None:
        return self.early / self.churners if self.churners else None

    @property
    def precision(self) -> float | None:
        return self.true_positives / self.warned_users if self.warned_users else None

    def line(self) -> str:
        def pct(x: float | None) -> str:
            return "n/a" if x is None else f"{x:.0%}"

        lead = ("n/a" if self.median_lead_ms is None
                else f"{self.median_lead_ms / DAY_MS:+.1f} days (negative: after the last event)")
        return (f"churn warnings vs ground truth: {self.warned}/{self.churners} churners warned "
                f"({pct(self.recall)}), {self.early}/{self.churners} before their last event "
                f"({pct(self.early_recall)}), precision {self.true_positives}/{self.warned_users} "
                f"({pct(self.precision)}), median lead {lead}")


def churners_in(truth: GroundTruth) -> dict[str, int]:
    """Churners (user -> last event ts) whose churn happened within the events generated."""
    end = truth.last_ts
    if end is None:
        return {}
    return {u: last for u, last in truth.churners.items() if truth.churn_at.get(u, end) <= end}


def score_churn_warnings(warnings: Iterable[tuple[str, int]], truth: GroundTruth) -> ChurnScore:
    """Score ``warnings`` ((user id, event time the warning was detected) pairs) against ``truth``."""
    first: dict[str, int] = {}
    for user, ts in warnings:
        first[user] = min(ts, first.get(user, ts))
    churners = churners_in(truth)
    warned = [u for u in first if u in churners]
    early = sum(1 for u in warned if first[u] < churners[u])  # the earliest warning decides
    leads = [churners[u] - first[u] for u in warned]
    return ChurnScore(
        churners=len(churners), warned_users=len(first), warned=len(warned), early=early,
        true_positives=len(warned), median_lead_ms=statistics.median(leads) if leads else None,
    )
