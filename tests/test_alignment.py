"""The event-time merge of input partitions (pure logic; the worker-level proof is
tests/test_replay_worker.py)."""

from __future__ import annotations

from stream_app.alignment import EventTimeMerge

RANK = {"clicks": 0, "browses": 1, "purchases": 2}


def test_merges_heads_in_event_time_and_waits_for_a_lagging_source() -> None:
    caught = {("clicks", 0): False, ("browses", 0): True, ("purchases", 0): True}
    merge: EventTimeMerge[str] = EventTimeMerge(RANK, lambda t, p: caught[(t, p)], max_wait_s=5)
    merge.add("browses", 0, ts=30, offset=0, item="b30")
    merge.add("purchases", 0, ts=10, offset=0, item="p10")
    # clicks partition 0 is empty but not caught up: nothing may pass yet
    assert merge.ready(now=0.0) == []
    merge.add("clicks", 0, ts=20, offset=0, item="c20")
    caught[("clicks", 0)] = True
    assert merge.ready(now=1.0) == ["p10", "c20", "b30"]
    assert len(merge) == 0


def test_equal_times_break_ties_by_topic_then_offset() -> None:
    merge: EventTimeMerge[str] = EventTimeMerge(RANK, lambda t, p: True, max_wait_s=5)
    merge.add("purchases", 1, ts=5, offset=0, item="p")
    merge.add("browses", 1, ts=5, offset=7, item="b7")
    merge.add("browses", 1, ts=5, offset=8, item="b8")
    merge.add("clicks", 1, ts=5, offset=3, item="c")
    assert merge.ready(now=0.0) == ["c", "b7", "b8", "p"]


def test_gives_up_waiting_after_max_wait_and_drops_revoked_partitions() -> None:
    merge: EventTimeMerge[str] = EventTimeMerge(RANK, lambda t, p: False, max_wait_s=2)
    merge.add("browses", 0, ts=1, offset=0, item="b")
    merge.add("browses", 3, ts=1, offset=0, item="x")
    assert merge.ready(now=10.0) == []
    assert merge.ready(now=11.0) == []
    assert merge.ready(now=12.5) == ["b", "x"]
    merge.add("clicks", 3, ts=1, offset=1, item="y")
    assert merge.drop_partitions({("clicks", 0)}) == ["y"]
    assert len(merge) == 0
