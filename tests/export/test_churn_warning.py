"""The churn-warning threshold, calibrated per user on validation points for a stated precision."""

from __future__ import annotations

import numpy as np

from export.churn_warning import calibrate_warning_threshold

H = 3_600_000


def test_threshold_is_the_lowest_that_keeps_the_precision() -> None:
    # users 0-3 churn (their last point is labelled), 4-7 do not; each user's risks in time order
    risks = {0: [0.1, 0.6, 0.9], 1: [0.2, 0.5], 2: [0.1, 0.3], 3: [0.05, 0.1],
             4: [0.1, 0.55], 5: [0.1, 0.2], 6: [0.35, 0.1], 7: [0.05, 0.02]}
    user, ts, label, risk = [], [], [], []
    for u, rs in risks.items():
        for i, r in enumerate(rs):
            user.append(u)
            ts.append(i * H)
            label.append(int(u < 4 and i == len(rs) - 1))
            risk.append(r)
    args = (np.array(user), np.array(ts), np.array(label), np.array(risk))
    found = calibrate_warning_threshold(*args, precision=0.5)
    # user maxima: churners 0.9, 0.5, 0.3, 0.1; others 0.55, 0.2, 0.35, 0.05. At 0.3: warned
    # 0, 1, 2, 4, 6 -> 3/5 = 60%; at 0.2: 3/6 = 50%; at 0.1: 4/7 = 57%; at 0.05, everyone: 4/8
    assert found["threshold"] == 0.05 and found["precision"] == 0.5 and found["recall"] == 1.0
    assert (found["users"], found["churners"], found["warned_users"]) == (8, 4, 8)
    # leads: each churner is warned at its first point: 2 h, 1 h, 1 h, 1 h before its churn point
    assert found["expected_lead_ms"] == H
    strict = calibrate_warning_threshold(*args, precision=0.75)
    assert strict["threshold"] == 0.9 and strict["precision"] == 1.0 and strict["recall"] == 0.25


def test_no_threshold_without_churners_or_points() -> None:
    none = calibrate_warning_threshold(np.zeros(3, int), np.arange(3), np.zeros(3, int), np.ones(3) / 2)
    assert none["threshold"] is None and none["churners"] == 0
    empty = calibrate_warning_threshold(*(np.zeros(0),) * 4)
    assert empty["threshold"] is None and empty["users"] == 0
