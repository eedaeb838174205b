"""Train / validation / test splits of prediction points, and churn labels with censoring.

A prediction point is a flat event index ``g``: the model has seen the user's events up to and
including ``g`` and predicts the next one (``g + 1``) and whether the user returns within ``H``.

- ``time`` (the default, what a deployment faces): two cutoffs on the global timeline. A point's item
  and category targets belong to the period of the *target* event's time; model parameters, the
  vocabularies and every baseline statistic come from events before the validation cutoff only, so
  no model sees the future. Contexts may include validation/test events that precede the target:
  that is the streaming setting (the worker sees events as they come, the parameters stay fixed).
- ``leave_one_out`` (to compare with published numbers): each user's last event is the test target,
  the one before it the validation target, everything earlier is training.

Churn label of point ``g`` with horizon ``H`` and observation end ``E`` (the end of ``g``'s period:
the validation cutoff for training points, the test cutoff for validation points, the end of the data
for test points): 0 if the next event comes before ``min(ts_g + H, E)``... precisely: if a next event
exists before ``E``, the label is ``gap > H``; otherwise the label is 1 when ``E - ts_g >= H`` and the
point is censored (no label) when ``E - ts_g < H``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np

from export.data import EventTable

NONE, TRAIN, VALID, TEST = 0, 1, 2, 3
ROLE_NAMES = {TRAIN: "train", VALID: "valid", TEST: "test"}


@dataclass(frozen=True)
class SplitSpec:
    kind: Literal["time", "leave_one_out"] = "time"
    valid_fraction: float = 0.1  # time split: share of events (by time) in the validation period
    test_fraction: float = 0.1
    churn_horizon_ms: int = 7 * 24 * 3600 * 1000  # H


@dataclass
class Split:
    spec: SplitSpec
    target_role: np.ndarray  # (n_events,) int8: role of the point predicting event g + 1
    churn_role: np.ndarray  # (n_events,) int8: NONE when censored or not evaluated
    churn_label: np.ndarray  # (n_events,) int8: 1 = no return within H
    train_events: np.ndarray  # (n_events,) bool: events that statistics and vocabularies may use
    valid_start_ms: int | None
    test_start_ms: int | None
    data_end_ms: int

    def describe(self) -> dict[str, object]:
        d: dict[str, object] = asdict(self.spec)
        d.update(valid_start_ms=self.valid_start_ms, test_start_ms=self.test_start_ms,
                 data_end_ms=self.data_end_ms)
        for role, name in ROLE_NAMES.items():
            d[f"{name}_targets"] = int((self.target_role == role).sum())
            d[f"{name}_churn_points"] = int((self.churn_role == role).sum())
        return d


def _churn(table: EventTable, ends: np.ndarray, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels and a known-mask of every point, each observed until its own end time ``ends[g]``."""
    ts = table.ts
    has_next = np.ones(len(ts), bool)
    has_next[table.offsets[1:] - 1] = False
    nxt = np.where(has_next, np.roll(ts, -1), np.iinfo(np.int64).max)
    seen_next = has_next & (nxt < ends)
    label = np.where(seen_next, nxt - ts > horizon, True)
    known = seen_next | (ends - ts >= horizon)
    return label.astype(np.int8), known


def make_split(table: EventTable, spec: SplitSpec) -> Split:
    n = table.n_events
    last = table.offsets[1:] - 1  # flat index of each user's last event
    data_end = int(table.ts.max()) + 1
    target = np.zeros(n, np.int8)
    if spec.kind == "leave_one_out":
        target[:] = TRAIN
        target[last] = NONE
        lengths = np.diff(table.offsets)
        ok = lengths >= 3
        target[last[ok] - 1] = TEST
        target[last[ok] - 2] = VALID
        train_events = np.ones(n, bool)
        train_events[last[ok]] = False
        train_events[last[ok] - 1] = False
        label, known = _churn(table, np.full(n, data_end), spec.churn_horizon_ms)
        churn_role = np.where(known, TRAIN, NONE).astype(np.int8)  # churn is not evaluated here
        return Split(spec, target, churn_role, label, train_events, None, None, data_end)
    if spec.kind != "time":
        raise ValueError(f"unknown split kind {spec.kind!r}")
    t_valid = int(np.quantile(table.ts, 1 - spec.valid_fraction - spec.test_fraction))
    t_test = int(np.quantile(table.ts, 1 - spec.test_fraction))
    next_ts = np.roll(table.ts, -1)
    target = np.select([next_ts < t_valid, next_ts < t_test], [TRAIN, VALID], TEST).astype(np.int8)
    target[last] = NONE
    period = np.select([table.ts < t_valid, table.ts < t_test], [TRAIN, VALID], TEST).astype(np.int8)
    ends = np.choose(period - 1, [t_valid, t_test, data_end]).astype(np.int64)
    label, known = _churn(table, ends, spec.churn_horizon_ms)
    churn_role = np.where(known, period, NONE).astype(np.int8)
    return Split(spec, target, churn_role, label, table.ts < t_valid, t_valid, t_test, data_end)
