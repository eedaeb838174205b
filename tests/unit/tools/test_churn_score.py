"""Churn warnings scored against hand-made ground truth."""

from __future__ import annotations

import pytest

from stream_app.tools.churn_score import churners_in, score_churn_warnings
from stream_app.tools.generate import DAY_MS, GroundTruth, WorkloadSpec


def truth() -> GroundTruth:
    gt = GroundTruth(WorkloadSpec(users=10, items=10, categories=3))
    gt.first_ts, gt.last_ts = 0, 10 * DAY_MS
    # u1..u4 churned inside the stream; u5 was to churn after it ended (not a churner of this cut)
    gt.churn_at = {"u1": 2 * DAY_MS, "u2": 3 * DAY_MS, "u3": 4 * DAY_MS, "u4": 5 * DAY_MS, "u5": 11 * DAY_MS}
    gt.churners = {"u1": 1 * DAY_MS, "u2": 2 * DAY_MS, "u3": 3 * DAY_MS, "u4": 4 * DAY_MS, "u5": 9 * DAY_MS}
    return gt


def test_churners_are_those_who_churned_within_the_events() -> None:
    assert churners_in(truth()) == {"u1": DAY_MS, "u2": 2 * DAY_MS, "u3": 3 * DAY_MS, "u4": 4 * DAY_MS}


def test_scores_recall_early_share_precision_and_median_lead() -> None:
    warnings = [
        ("u1", 3 * DAY_MS),  # 2 days after the last event
        ("u2", 1 * DAY_MS),  # 1 day before the last event (early)
        ("u2", 4 * DAY_MS),  # a second episode: the first warning counts
        ("u3", 6 * DAY_MS),  # 3 days after
        ("u7", 5 * DAY_MS),  # not a churner: a false alarm
        ("u5", 9 * DAY_MS + 1),  # churns after the cut: a false alarm of this cut
    ]
    score = score_churn_warnings(warnings, truth())
    assert (score.churners, score.warned, score.early, score.warned_users) == (4, 3, 1, 5)
    assert score.recall == pytest.approx(0.75)
    assert score.early_recall == pytest.approx(0.25)
    assert score.precision == pytest.approx(0.6)
    assert score.median_lead_ms == -2 * DAY_MS  # leads -2, +1, -3 days
    line = score.line()
    assert "3/4 churners warned (75%)" in line and "1/4 before their last event (25%)" in line
    assert "precision 3/5 (60%)" in line and "median lead -2.0 days" in line


def test_no_warnings_no_churners() -> None:
    score = score_churn_warnings([], truth())
    assert (score.recall, score.precision, score.median_lead_ms) == (0.0, None, None)
    assert "n/a" in score.line()
    empty = score_churn_warnings([("u1", 0)], GroundTruth(WorkloadSpec(users=1, items=3, categories=3)))
    assert empty.churners == 0 and empty.recall is None and empty.precision == 0.0
