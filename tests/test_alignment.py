"""The event-time merge of input partitions (pure logic; the worker-level proof is
tests/test_replay_worker.py)."""

from __future__ import annotations

from stream_app.alignment import EventTimeMerge

RANK = {"clicks": 0, "browses": 1, "purchases": 2}


def test_merges_heads_in_event_time_and_waits_for_a_lagging_source() -> None:
    caught = {("clicks", 0): False, ("browses", 0): True, ("purchases", 0): True}
    merge: EventTimeMerge[str] = EventTimeMerge(RANK, lambda t, p: caught[(t, p)], max_wait_s=5)
    merge.add("browses", 0, ts=30, offset=0, item="b30", arrived=0.0)
    merge.add("purchases", 0, ts=10, offset=0, item="p10", arrived=0.0)
    # clicks partition 0 is empty but not caught up: nothing may pass yet
    assert merge.ready(now=0.0) == []
    merge.add("clicks", 0, ts=20, offset=0, item="c20", arrived=0.0)
    caught[("clicks", 0)] = True
    assert merge.ready(now=1.0) == ["p10", "c20", "b30"]
    assert len(merge) == 0


def test_equal_times_break_ties_by_topic_then_offset() -> None:
    merge: EventTimeMerge[str] = EventTimeMerge(RANK, lambda t, p: True, max_wait_s=5)
    merge.add("purchases", 1, ts=5, offset=0, item="p", arrived=0.0)
    merge.add("browses", 1, ts=5, offset=7, item="b7", arrived=0.0)
    merge.add("browses", 1, ts=5, offset=8, item="b8", arrived=0.0)
    merge.add("clicks", 1, ts=5, offset=3, item="c", arrived=0.0)
    assert merge.ready(now=0.0) == ["c", "b7", "b8", "p"]


def test_gives_up_waiting_after_max_wait_and_drops_revoked_partitions() -> None:
    merge: EventTimeMerge[str] = EventTimeMerge(RANK, lambda t, p: False, max_wait_s=2)
    merge.add("browses", 0, ts=1, offset=0, item="b", arrived=0.0)
    merge.add("browses", 3, ts=1, offset=0, item="x", arrived=0.0)
    assert merge.ready(now=10.0) == []
    assert merge.ready(now=11.0) == []
    assert merge.ready(now=12.5) == ["b", "x"]
    merge.add("clicks", 3, ts=1, offset=1, item="y", arrived=0.0)
    assert merge.drop_partitions({("clicks", 0)}) == ["y"]
    assert len(merge) == 0


def test_an_event_waits_idle_s_before_passing_quiet_caught_up_sources() -> None:
    merge: EventTimeMerge[str] = EventTimeMerge(RANK, lambda t, p: True, max_wait_s=5, idle_s=0.25)
    merge.add("browses", 0, ts=50, offset=0, item="b50", arrived=10.0)
    assert merge.ready(now=10.1) == []  # a click fetched but not yet delivered may be older
    merge.add("clicks", 0, ts=40, offset=0, item="c40", arrived=10.15)
    assert merge.ready(now=10.2) == []
    assert merge.ready(now=10.3) == []  # c40 itself arrived only 0.15 s ago
    assert merge.ready(now=10.41) == ["c40", "b50"]
    # with every source holding data there is nothing to wait for
    for topic, ts in (("clicks", 60), ("browses", 61), ("purchases", 62)):
        merge.add(topic, 0, ts=ts, offset=1, item=f"{topic}{ts}", arrived=11.0)
    assert merge.ready(now=11.0) == ["clicks60"]
