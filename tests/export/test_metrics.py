"""Ranking metrics (PAD and UNKNOWN targets are misses for every scorer, at every k and vocabulary
size), churn recall at a fixed precision, and what reports say about churn and the split."""

from __future__ import annotations

import numpy as np

from export.data import EventTable
from export.evaluate import churn_note
from export.metrics import MISS_RANK, hr_ndcg, recall_at_precision, target_ranks
from export.splits import TEST, SplitSpec, make_split
from stream_app.model.features import PAD, UNKNOWN


def test_unknown_and_pad_targets_are_misses_even_with_few_categories() -> None:
    # 5 categories (2 special + 3 real): every column is inside the top 10.
    scores = np.array([[-np.inf, -np.inf, 0.5, 0.2, 0.1]] * 4)
    target = np.array([2, 4, UNKNOWN, PAD])
    ranks = target_ranks(scores, target)
    assert ranks.tolist() == [0, 2, MISS_RANK, MISS_RANK]
    m = hr_ndcg(ranks, k=10)
    assert m["hr@10"] == 0.5  # the two real targets hit, the unknown and PAD ones do not
    assert np.isclose(m["ndcg@10"], (1.0 + 1.0 / np.log2(4)) / 4)
    flat = np.zeros((2, 5))  # a scorer that ties everything, special columns included
    assert target_ranks(flat, np.array([UNKNOWN, 3])).tolist() == [MISS_RANK, 4]


def _table(ts_s: list[list[int]]) -> EventTable:
    from stream_app.tools.datasets import LoadReport

    hist = [[(f"i{j}", "c", 0, t * 1000) for j, t in enumerate(h)] for h in ts_s]
    return EventTable([str(u) for u in range(len(hist))], hist, LoadReport("x", "taobao"), "0" * 64)


def test_churn_note_says_when_the_test_period_is_shorter_than_the_horizon() -> None:
    hour = 3600
    table = _table([[h * hour for h in range(0, 40, 2)], [h * hour for h in range(1, 40, 2)]])
    short = make_split(table, SplitSpec("time", 0.1, 0.1, 24 * 3_600_000))  # test period ~4 h < 24 h
    note = churn_note(short, TEST)
    assert note is not None and "shorter than the churn horizon H = 24 h" in note
    ok = make_split(table, SplitSpec("time", 0.1, 0.3, 1_000))  # 1 s horizon: every gap is churn
    assert "all churners" in (churn_note(ok, TEST) or "")
    loo = make_split(table, SplitSpec("leave_one_out", 0.1, 0.1, 3_600_000))
    assert "leave-one-out" in (churn_note(loo, TEST) or "")


def test_report_states_only_the_split_parameters_of_its_kind() -> None:
    from export.report import split_lines

    table = _table([[0, 10, 20, 30], [5, 15, 25]])
    loo = " ".join(split_lines(make_split(table, SplitSpec("leave_one_out", 0.1, 0.1, 3_600_000)).describe()))
    assert "last event is the test target" in loo and "%" not in loo and "UTC" not in loo
    time_ = " ".join(split_lines(make_split(table, SplitSpec("time", 0.2, 0.25, 3_600_000)).describe()))
    assert "validation = the 20%" in time_ and "last 25%" in time_ and "target" not in time_.split(".")[0]


def test_recall_at_precision() -> None:
    label = np.array([1, 1, 0, 1, 0, 0])
    prob = np.array([0.9, 0.8, 0.7, 0.6, 0.2, 0.1])
    assert recall_at_precision(label, prob, 0.5) == 1.0  # threshold 0.6: 3 of 4 alarms right
    assert recall_at_precision(label, prob, 1.0) == 2 / 3  # threshold 0.8: both right
