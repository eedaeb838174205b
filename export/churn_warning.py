"""The churn-warning threshold of the model's risk, calibrated on the validation split.

The worker warns a user when the model's churn risk at their newest event reaches the artifact's
``churn_warning.threshold`` (once per episode; ``stream_app/core/churn.py``). The threshold is
calibrated the way the warnings are scored, per user: over the validation period's labelled churn
points, a user is *warned* when their risk reaches the threshold at any of them, and is a *churner*
when any of them is labelled churn (no event within the horizon H after it). The threshold is the
lowest at which the precision (warned churners / warned users) is at least the stated target:
the most churners warned at that precision. The *expected lead* is the median, over warned
churners, of the time from the first point at the threshold to their last churn point (the last
event before the silence that made them churners): what a warning of this rule announces.
"""

from __future__ import annotations

import numpy as np

# The stated precision of the model's warnings on validation users. Above the 0.5 aimed at on true
# churners: the validation labels (no event within H) also count a steady user's one long gap as
# churn, so the precision measured on them overstates the precision on users who really leave.
WARNING_PRECISION = 0.6


def calibrate_warning_threshold(user: np.ndarray, ts: np.ndarray, label: np.ndarray, risk: np.ndarray,
                                precision: float = WARNING_PRECISION) -> dict[str, float | int | None]:
    """The threshold and what it gives on these points (one entry per labelled point: its user
    index, event time, churn label and the model's risk). ``threshold`` is None when no threshold
    reaches ``precision`` (no churner among the points, or none the risk separates)."""
    out: dict[str, float | int | None] = {
        "precision_target": precision, "threshold": None, "precision": None, "recall": None,
        "users": 0, "churners": 0, "warned_users": 0, "expected_lead_ms": None}
    if len(user) == 0:
        return out
    order = np.lexsort((ts, user))
    user, ts, label, risk = user[order], ts[order], label[order].astype(bool), risk[order]
    users, starts = np.unique(user, return_index=True)
    top = np.maximum.reduceat(risk, starts)  # each user's highest risk
    churner = np.logical_or.reduceat(label, starts)
    out.update(users=len(users), churners=int(churner.sum()))
    best: float | None = None
    for t in np.unique(top)[::-1]:  # from the highest: the lowest threshold that keeps the precision
        warned = top >= t
        if churner[warned].mean() >= precision:
            best = float(t)
    if best is None:
        return out
    warned = top >= best
    leads = []
    ends = np.append(starts[1:], len(user))
    for u in np.nonzero(warned & churner)[0]:
        s, e = starts[u], ends[u]
        first = s + int(np.argmax(risk[s:e] >= best))
        later = np.nonzero(label[first:e])[0]
        if len(later):
            leads.append(int(ts[first + later[-1]] - ts[first]))
    out.update(threshold=best, precision=float(churner[warned].mean()),
               recall=float((warned & churner).sum() / max(churner.sum(), 1)),
               warned_users=int(warned.sum()),
               expected_lead_ms=int(np.median(leads)) if leads else None)
    return out
