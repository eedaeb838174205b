"""Training tensors: every user's history cut into contexts by the serving context rule.

Segment ``k`` of a user is the context at the moment it is longest (or at the user's last event);
by causality, the hidden state at position ``p`` of a segment is exactly what the worker computes
after the event at that position. A position is *served* by the segment whose context start matches
the context rule for that event count, so each event's output is computed once, through
:func:`stream_app.features.encode_windows` (the one feature path).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from export.data import EventTable
from stream_app.model.features import FeatureSpec, Vocab, context_length, encode_windows


@dataclass
class Segments:
    features: dict[str, np.ndarray]  # (S, L) int64 each
    lengths: np.ndarray  # (S,)
    event_index: np.ndarray  # (S, L) flat event index at each position, -1 on padding
    served: np.ndarray  # (S, L) bool
    point_segment: np.ndarray  # (n_events,) segment that serves flat event g
    point_position: np.ndarray  # (n_events,) its position there


def segment_ends(n: int, window_length: int) -> list[int]:
    """Event counts at which a user's segments end (each context at its longest)."""
    step = window_length - window_length // 2
    ends = [min(window_length, n)]
    while ends[-1] < n:
        ends.append(min(ends[-1] + step, n))
    return ends


def build_segments(table: EventTable, items: Vocab, categories: Vocab, spec: FeatureSpec) -> Segments:
    L = spec.window_length
    windows, counts, starts, first = [], [], [], []
    for u, h in enumerate(table.histories):
        base = int(table.offsets[u])
        for end in segment_ends(len(h), L):
            windows.append(h[max(0, end - L):end])
            counts.append(end)
            starts.append(base + end - context_length(end, L))
            first.append(h[0][3])
    enc = encode_windows(windows, items, categories, spec, counts, first)
    S = len(windows)
    pos = np.arange(L)
    start = np.asarray(starts, np.int64)
    event_index = np.where(pos < enc.lengths[:, None], start[:, None] + pos, -1)
    served = np.zeros((S, L), bool)
    point_segment = np.full(table.n_events, -1, np.int64)
    point_position = np.full(table.n_events, -1, np.int64)
    user = table.user_of()
    for s in range(S):
        for p in range(int(enc.lengths[s])):
            g = int(event_index[s, p])
            n = g - int(table.offsets[user[g]]) + 1  # the user's event count after event g
            if n - context_length(n, L) == int(start[s]) - int(table.offsets[user[g]]):
                served[s, p] = True
                point_segment[g], point_position[g] = s, p
    assert (point_segment >= 0).all(), "every event must be served by exactly one segment"
    return Segments(enc.features, enc.lengths, event_index, served, point_segment, point_position)


def next_targets(table: EventTable, items: Vocab, categories: Vocab) -> tuple[np.ndarray, np.ndarray]:
    """Vocabulary index of the next event's item and category for every point (PAD after the last)."""
    item = np.zeros(table.n_events, np.int64)
    cat = np.zeros(table.n_events, np.int64)
    g = 0
    for h in table.histories:
        for i in range(len(h) - 1):
            item[g + i] = items.lookup(h[i + 1][0])
            cat[g + i] = categories.lookup(h[i + 1][1])
        g += len(h)
    return item, cat
