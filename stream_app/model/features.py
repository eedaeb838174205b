"""The one feature path: a user's event window -> model inputs (numpy only, no torch).

Training (``export/``) and serving (the streaming worker, :mod:`stream_app.model.runtime`) both call
:func:`encode_windows`; a test proves that the torch model, the ONNX model and the runtime agree on
the same history.

A window is a list of ``(item_id, category_id, type_code, ts_ms)`` tuples, oldest first.

Per event: item, category, event type, the time gap to its predecessor in the context, the UTC hour,
the user's event count at that event, the time since the user's first event, and the user's recent
pace: the mean gap over the (up to) ``pace_events`` gaps before it in the context (log2 scale, the
last three in quarter octaves). None of them changes when a later event arrives.

Context rule (what makes one-event incremental updates exact): the model sees the events since a
reset point that depends only on the user's event count ``n``. With window length ``L`` and
``h = L // 2``, the context is all ``n`` events while ``n <= L``; after that it is reset to the last
``h + 1`` events and grows by one per event up to ``L`` again, and so on. Positions are absolute
within the context and every feature of an event depends only on that event and its predecessors in
the context, so appending an event never changes what was computed for earlier positions: the new
position can be computed from the cached keys/values, and a full recompute is needed once per
``L - h`` events (see :func:`is_incremental`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

WindowEvent = tuple[str, str | None, int, int]  # (item_id, category_id, type_code, ts_ms)

PAD = 0  # index of padding in every vocabulary and feature
UNKNOWN = 1  # unknown / rare item, unknown or missing category
CONTEXT_START = 1  # gap bucket of the first event in a context (its predecessor is not visible)
FEATURE_NAMES = ("item", "category", "type", "gap", "hour", "count", "age", "pace")


@dataclass(frozen=True)
class FeatureSpec:
    """Everything that defines the model inputs; stored in the artifact and checked at load."""

    window_length: int = 50  # L: the longest context
    n_types: int = 3  # event type codes 0..n_types-1 (stream_app.core.events.TYPE_CODE)
    gap_buckets: int = 32  # PAD, CONTEXT_START, then 2 + floor(log2(1 + gap seconds)), capped
    hour_buckets: int = 24  # UTC hour of day + 1 (0 is PAD)
    count_buckets: int = 80  # 1 + floor(4 * log2(the user's event count at that event)), capped
    age_buckets: int = 128  # 1 + floor(4 * log2(1 + seconds since the user's first event)), capped
    # PAD, CONTEXT_START, then 2 + floor(4 * log2(1 + mean gap in seconds over the last pace_events
    # gaps of the context)), capped: how fast the user has been coming back lately (churn's best cue)
    pace_events: int = 20
    pace_buckets: int = 112
    version: int = 4  # bump when the encoding below changes

    @property
    def half(self) -> int:
        return self.window_length // 2

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, int]) -> FeatureSpec:
        return cls(**d)


class Vocab:
    """Ids -> indices with PAD=0 and UNKNOWN=1 reserved; ``ids[i]`` is the id of index ``i``."""

    def __init__(self, ids: Sequence[str]) -> None:
        self.ids = ["<pad>", "<unk>", *ids]
        self.index = {x: i for i, x in enumerate(self.ids) if i > UNKNOWN}

    def __len__(self) -> int:
        return len(self.ids)

    def lookup(self, x: str | None) -> int:
        return UNKNOWN if x is None else self.index.get(x, UNKNOWN)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.ids[2:]))

    @classmethod
    def load(cls, path: Path) -> Vocab:
        return cls(json.loads(path.read_text()))


def context_length(n_events: int, window_length: int) -> int:
    """How many of a user's most recent events the model sees after ``n_events`` events."""
    if n_events <= window_length:
        return n_events
    h = window_length // 2
    return h + 1 + (n_events - window_length - 1) % (window_length - h)


def is_incremental(n_events: int, window_length: int) -> bool:
    """True when the context after ``n_events`` is the previous context plus the newest event."""
    return n_events > 1 and context_length(n_events, window_length) == (
        context_length(n_events - 1, window_length) + 1
    )


def log2_bucket(x: np.ndarray, first: int, per_octave: int, n_buckets: int) -> np.ndarray:
    """``first + floor(per_octave * log2(x))`` for x >= 1, capped at ``n_buckets - 1``."""
    return np.minimum(first + np.floor(per_octave * np.log2(x)), n_buckets - 1).astype(np.int64)


def gap_bucket(gap_ms: np.ndarray, spec: FeatureSpec) -> np.ndarray:
    return log2_bucket(1.0 + np.maximum(gap_ms, 0) / 1000.0, 2, 1, spec.gap_buckets)


def pace_buckets(ts: np.ndarray, spec: FeatureSpec) -> np.ndarray:
    """Pace of each event of a context (times ``ts``, oldest first): its mean gap over the last
    ``pace_events`` gaps before it in the context; CONTEXT_START for the first event."""
    pos = np.arange(len(ts))
    start = np.maximum(pos - spec.pace_events, 0)
    n_gaps = np.maximum(pos - start, 1)
    mean_s = np.maximum(ts - ts[start], 0) / 1000.0 / n_gaps
    out = log2_bucket(1.0 + mean_s, 2, 4, spec.pace_buckets)
    out[0] = CONTEXT_START
    return out


@dataclass
class EncodedWindows:
    """Model inputs of a batch: ``features[name]`` is (B, L) int64, ``lengths`` is (B,) int64.

    Contexts are right-padded: position ``p`` of row ``b`` is the ``p``-th event of the context,
    and the model's answer for the user is read at position ``lengths[b] - 1``.
    """

    features: dict[str, np.ndarray]
    lengths: np.ndarray

    def at_last(self) -> dict[str, np.ndarray]:
        """Features of each row's newest event (B,), the input of an incremental step."""
        rows = np.arange(len(self.lengths))
        last = np.maximum(self.lengths - 1, 0)
        return {k: v[rows, last] for k, v in self.features.items()}


def encode_windows(
    windows: Sequence[Sequence[WindowEvent]],
    items: Vocab,
    categories: Vocab,
    spec: FeatureSpec,
    n_events: Sequence[int] | None = None,
    first_ts: Sequence[int] | None = None,
) -> EncodedWindows:
    """Encode many users' windows. ``n_events[b]`` is user b's total event count (it selects the
    context, see the module docstring) and ``first_ts[b]`` the time of the user's first event ever;
    when omitted, each window is taken as the whole history (its first event is the user's first).
    A window must hold at least the context's events; older ones are ignored."""
    L = spec.window_length
    B = len(windows)
    out = {k: np.zeros((B, L), np.int64) for k in FEATURE_NAMES}
    lengths = np.zeros(B, np.int64)
    for b, window in enumerate(windows):
        n = len(window) if n_events is None else n_events[b]
        c = context_length(n, L)
        if c > len(window):
            raise ValueError(f"window of {len(window)} events is shorter than the context ({c}) "
                             f"of a user with {n} events")
        if c == 0:
            continue
        ctx = window[len(window) - c:]
        lengths[b] = c
        out["item"][b, :c] = [items.lookup(e[0]) for e in ctx]
        out["category"][b, :c] = [categories.lookup(e[1]) for e in ctx]
        types = np.fromiter((e[2] for e in ctx), np.int64, c)
        if types.min() < 0 or types.max() >= spec.n_types:
            raise ValueError(f"event type code outside 0..{spec.n_types - 1}: {types.tolist()}")
        out["type"][b, :c] = types + 1
        ts = np.fromiter((e[3] for e in ctx), np.int64, c)
        out["gap"][b, 0] = CONTEXT_START
        out["gap"][b, 1:c] = gap_bucket(np.diff(ts), spec)
        out["pace"][b, :c] = pace_buckets(ts, spec)
        out["hour"][b, :c] = (ts // 3_600_000) % 24 + 1
        out["count"][b, :c] = log2_bucket(np.arange(n - c + 1, n + 1), 1, 4, spec.count_buckets)
        if first_ts is None and n > len(window):
            raise ValueError(f"a user with {n} events and a window of {len(window)}: pass first_ts "
                             f"(the time of the user's first event)")
        first = window[0][3] if first_ts is None else first_ts[b]
        out["age"][b, :c] = log2_bucket(1.0 + np.maximum(ts - first, 0) / 1000.0, 1, 4, spec.age_buckets)
    return EncodedWindows(out, lengths)


def encode_appended(ctx_ts: np.ndarray, start: np.ndarray, n_new: np.ndarray, types: np.ndarray,
                    n_events: np.ndarray, first_ts: np.ndarray, spec: FeatureSpec) -> dict[str, np.ndarray]:
    """The time and count features of events appended to cached contexts, vectorised over a batch and
    equal to what :func:`encode_windows` gives for the same positions: row ``b``'s context times are
    ``ctx_ts[b]`` (B, L) with the new events at positions ``start[b] .. start[b] + n_new[b] - 1``;
    ``types`` (B, T) their type codes, ``n_events[b]`` the user's event count at the newest of them,
    ``first_ts[b]`` the time of the user's first event. Columns past ``n_new[b]`` repeat the last event.
    Returns (B, T) arrays for type, gap, hour, count, age and pace."""
    T = types.shape[1]
    t = np.minimum(np.arange(T)[None, :], (n_new - 1)[:, None])
    pos = start[:, None] + t
    ts = np.take_along_axis(ctx_ts, pos, 1)
    prev = np.take_along_axis(ctx_ts, np.maximum(pos - 1, 0), 1)
    gap = np.where(pos == 0, CONTEXT_START, gap_bucket(ts - prev, spec))
    first = np.maximum(pos - spec.pace_events, 0)
    n_gaps = np.maximum(pos - first, 1)
    mean_s = np.maximum(ts - np.take_along_axis(ctx_ts, first, 1), 0) / 1000.0 / n_gaps
    pace = np.where(pos == 0, CONTEXT_START, log2_bucket(1.0 + mean_s, 2, 4, spec.pace_buckets))
    m = (n_events - (n_new - 1))[:, None] + t  # the user's event count at each new event
    return {
        "type": np.take_along_axis(types, t, 1) + 1,
        "gap": gap.astype(np.int64),
        "hour": (ts // 3_600_000) % 24 + 1,
        "count": log2_bucket(m, 1, 4, spec.count_buckets),
        "age": log2_bucket(1.0 + np.maximum(ts - first_ts[:, None], 0) / 1000.0, 1, 4, spec.age_buckets),
        "pace": pace.astype(np.int64),
    }


def encode_window(window: Sequence[WindowEvent], items: Vocab, categories: Vocab, spec: FeatureSpec,
                  n_events: int | None = None, first_ts: int | None = None) -> EncodedWindows:
    """One user's window (a batch of one)."""
    return encode_windows([window], items, categories, spec, None if n_events is None else [n_events],
                          None if first_ts is None else [first_ts])
