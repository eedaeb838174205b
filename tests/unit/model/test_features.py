"""The one feature path: context rule, encoding, and that training inputs are serving inputs."""

from __future__ import annotations

import numpy as np
import pytest

from export.prepare import prepare
from export.sequences import segment_ends
from export.splits import SplitSpec
from stream_app.model.features import (
    CONTEXT_START,
    UNKNOWN,
    FeatureSpec,
    Vocab,
    context_length,
    encode_window,
    encode_windows,
    is_incremental,
    pace_buckets,
)
from tests.conftest import shared_data


def test_context_rule_grows_then_resets_to_half() -> None:
    L = 6
    got = [context_length(n, L) for n in range(0, 16)]
    assert got == [0, 1, 2, 3, 4, 5, 6, 4, 5, 6, 4, 5, 6, 4, 5, 6]
    inc = [n for n in range(1, 16) if is_incremental(n, L)]
    assert inc == [2, 3, 4, 5, 6, 8, 9, 11, 12, 14, 15]
    # Odd L: the reset keeps L // 2 events plus the new one.
    assert [context_length(n, 5) for n in range(5, 12)] == [5, 3, 4, 5, 3, 4, 5]
    assert segment_ends(15, 6) == [6, 9, 12, 15] and segment_ends(4, 6) == [4]


def test_encoding() -> None:
    spec = FeatureSpec(window_length=4)
    items, cats = Vocab(["a", "b"]), Vocab(["x"])
    hour = 3_600_000
    window = [("a", "x", 1, 5 * hour), ("zz", None, 2, 5 * hour + 1000), ("b", "x", 0, 7 * hour + 1000)]
    enc = encode_window(window, items, cats, spec)
    f = enc.features
    assert enc.lengths.tolist() == [3]
    assert f["item"].tolist() == [[2, UNKNOWN, 3, 0]]
    assert f["category"].tolist() == [[2, UNKNOWN, 2, 0]]
    assert f["type"].tolist() == [[2, 3, 1, 0]]
    assert f["hour"].tolist() == [[6, 6, 8, 0]]
    # gap buckets: context start, then 2 + floor(log2(1 + seconds)): 1 s -> 3, 7200 s -> 14.
    assert f["gap"].tolist() == [[CONTEXT_START, 3, 14, 0]]
    # the user's event count at each event (1 + floor(4 log2 n)) and the time since the user's first
    # event (1 + floor(4 log2(1 + s))): 0 s -> 1, 1 s -> 5, 7201 s -> 52
    assert f["count"].tolist() == [[1, 5, 7, 0]]
    assert f["age"].tolist() == [[1, 5, 52, 0]]
    # pace: 2 + floor(4 log2(1 + mean gap in seconds over the last pace_events gaps)): 1 s -> 6,
    # (1 + 7200) / 2 s -> 2 + floor(4 log2 3601.5) = 49
    assert f["pace"].tolist() == [[CONTEXT_START, 6, 49, 0]]
    assert {k: v.tolist() for k, v in enc.at_last().items()} == {
        "item": [3], "category": [2], "type": [1], "gap": [14], "hour": [8], "count": [7], "age": [52],
        "pace": [49]}
    later = encode_window(window, items, cats, spec, n_events=999, first_ts=0)  # a long-time user
    assert later.features["count"].tolist() == [[40, 40, 40, 0]]
    assert later.features["age"].tolist() == [[57, 57, 59, 0]]  # 5 h to 7 h after the first event
    with pytest.raises(ValueError, match="first_ts"):
        encode_window(window, items, cats, spec, n_events=999)  # the window is not the whole history


def test_pace_is_the_recent_mean_gap() -> None:
    """Only the last ``pace_events`` gaps count: a user who slowed down has a slow pace."""
    spec = FeatureSpec(window_length=8, pace_events=2)
    ts = np.array([0, 1, 2, 3, 1003, 2003]) * 1000  # 1 s gaps, then 1000 s gaps
    # 1 s -> 6; (1 s + 1000 s) / 2 -> 2 + floor(4 log2 501.5) = 37; 1000 s -> 2 + floor(4 log2 1001) = 41
    assert pace_buckets(ts, spec).tolist() == [CONTEXT_START, 6, 6, 6, 37, 41]


def test_event_count_selects_the_context() -> None:
    spec = FeatureSpec(window_length=4)
    items, cats = Vocab([str(i) for i in range(20)]), Vocab([])
    history = [(str(i), None, 0, 1000 * i) for i in range(7)]
    # 7 events with L=4: reset at n=5 to the last 3, then 4, then (n=7) reset again to 3.
    enc = encode_windows([history[2:6], history[3:7]], items, cats, spec, [6, 7], [0, 0])
    assert enc.lengths.tolist() == [4, 3]
    assert enc.features["item"][0].tolist() == [items.lookup(str(i)) for i in (2, 3, 4, 5)]
    assert enc.features["item"][1].tolist() == [items.lookup(str(i)) for i in (4, 5, 6)] + [0]
    assert enc.features["gap"][1, 0] == CONTEXT_START  # its predecessor fell out of the context
    with pytest.raises(ValueError, match="shorter than the context"):
        encode_windows([history[-2:]], items, cats, spec, [6], [0])
    with pytest.raises(ValueError, match="event type code"):
        encode_window([("1", None, 3, 0)], items, cats, spec)


def test_training_inputs_are_the_serving_inputs() -> None:
    """Every served position of every training segment equals what encode_window gives the
    streaming worker for that user after that event (real Taobao histories)."""
    path = shared_data("taobao/UserBehavior_10k.csv")
    spec = FeatureSpec(window_length=8)
    data = prepare(path, SplitSpec("time"), spec, min_item_count=2, progress=False)
    seg, table = data.segments, data.table
    assert (seg.point_segment >= 0).all() and seg.served.sum() == table.n_events
    user = table.user_of()
    rng = np.random.default_rng(0)
    checked = 0
    for g in rng.choice(table.n_events, 400, replace=False):
        u = user[g]
        n = int(g - table.offsets[u]) + 1
        s, p = seg.point_segment[g], seg.point_position[g]
        worker_window = table.histories[u][max(0, n - spec.window_length):n]  # what the worker keeps
        served = encode_window(worker_window, data.items, data.categories, spec, n_events=n,
                               first_ts=table.histories[u][0][3])
        c = int(served.lengths[0])
        assert c == p + 1
        for name, f in served.features.items():
            assert f[0, :c].tolist() == seg.features[name][s, :c].tolist(), name
        checked += 1
    assert checked == 400
