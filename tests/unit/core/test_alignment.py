"""The event-time merge of input partitions (pure logic; the worker-level proof is
tests/integration/service/test_replay_worker.py)."""

from __future__ import annotations

import math

from stream_app.core.alignment import ARRIVING, BEHIND, EventTimeMerge, SourceView

RANK = {"clicks": 0, "browses": 1, "purchases": 2}


class Fetches:
    """A fake consumer view: per (topic, partition), caught up or not and when last fetched."""

    def __init__(self, caught: dict[tuple[str, int], bool], at: float = 0.0):
        self.caught = caught
        self.fetched_at = dict.fromkeys(caught, at)

    def fetch(self, at: float, **caught: bool) -> None:
        """A fetch response at time ``at`` covering every partition; ``clicks=False``: behind."""
        for tp in self.caught:
            self.fetched_at[tp] = at
            self.caught[tp] = caught.get(tp[0], self.caught[tp])

    def source(self, topic: str, partition: int) -> SourceView:
        tp = (topic, partition)
        return SourceView(self.fetched_at[tp], False) if self.caught.get(tp, False) else BEHIND


def test_merges_heads_in_event_time_and_waits_for_a_lagging_source() -> None:
    f = Fetches({("clicks", 0): False, ("browses", 0): True, ("purchases", 0): True})
    merge: EventTimeMerge[str] = EventTimeMerge(RANK, f.source, max_wait_s=5)
    merge.add("browses", 0, ts=30, offset=0, item="b30", arrived=0.0)
    merge.add("purchases", 0, ts=10, offset=0, item="p10", arrived=0.0)
    f.fetch(0.5)
    # clicks partition 0 is empty but not caught up: nothing may pass yet
    assert merge.ready(now=0.5) == []
    merge.add("clicks", 0, ts=20, offset=0, item="c20", arrived=0.6)
    f.fetch(0.7, clicks=True)
    assert merge.ready(now=1.0) == ["p10", "c20", "b30"]
    assert len(merge) == 0


def test_equal_times_break_ties_by_topic_then_offset() -> None:
    merge: EventTimeMerge[str] = EventTimeMerge(RANK, lambda t, p: SourceView(math.inf, False), max_wait_s=5)
    merge.add("purchases", 1, ts=5, offset=0, item="p", arrived=0.0)
    merge.add("browses", 1, ts=5, offset=7, item="b7", arrived=0.0)
    merge.add("browses", 1, ts=5, offset=8, item="b8", arrived=0.0)
    merge.add("clicks", 1, ts=5, offset=3, item="c", arrived=0.0)
    assert merge.ready(now=0.0) == ["c", "b7", "b8", "p"]


def test_passes_a_source_with_unread_records_only_once_it_stalled() -> None:
    """Under a backlog a source can go unfetched for a while: the max_wait timer never lets events
    pass it; only a source that delivered nothing for stall_s, while the head waited as long, is."""
    released: list[str] = []
    merge: EventTimeMerge[str] = EventTimeMerge(RANK, lambda t, p: BEHIND, max_wait_s=2,
                                                on_release=released.append, stall_s=60, clock=lambda: 0.0)
    merge.add("browses", 0, ts=1, offset=0, item="b", arrived=0.0)
    for now in (1.0, 10.0, 59.0):
        assert merge.ready(now=now) == []
    merge.add("clicks", 0, ts=5, offset=0, item="c", arrived=30.0)
    # purchases, behind, delivered nothing for 61 s and b waited as long: passed; c waited 31 s only
    assert merge.ready(now=61.0) == ["b"]
    assert released == ["stalled"]


def test_never_passes_a_source_whose_records_are_already_fetched() -> None:
    """Records already in the process are on their way (a loaded consumer can take minutes to
    deliver them): however long the head waits, a source that is arriving is not stalled."""
    released: list[str] = []
    views = {"purchases": ARRIVING}
    merge: EventTimeMerge[str] = EventTimeMerge(
        RANK, lambda t, p: views.get(t, SourceView(math.inf, False)), max_wait_s=2,
        on_release=released.append, stall_s=60)
    merge.add("browses", 0, ts=1, offset=0, item="b", arrived=0.0)
    for now in (61.0, 600.0, 6000.0):
        assert merge.ready(now=now) == []
    merge.add("purchases", 0, ts=0, offset=0, item="p", arrived=6001.0)
    views["purchases"] = SourceView(math.inf, False)
    assert merge.ready(now=6002.0) == ["p", "b"]
    assert released == ["aligned", "aligned"]


def test_passes_an_idle_source_after_max_wait_and_drops_revoked_partitions() -> None:
    """Caught up as of a fetch older than the head, and no newer fetch: idle, passed after max_wait."""
    released: list[str] = []
    merge: EventTimeMerge[str] = EventTimeMerge(RANK, lambda t, p: SourceView(None, False), max_wait_s=2,
                                                on_release=released.append)
    merge.add("browses", 0, ts=1, offset=0, item="b", arrived=0.0)
    merge.add("browses", 3, ts=1, offset=0, item="x", arrived=0.0)
    assert merge.ready(now=10.0) == []
    assert merge.ready(now=11.0) == []
    assert merge.ready(now=12.5) == ["b", "x"]
    assert released == ["idle", "idle"]
    merge.add("clicks", 3, ts=1, offset=1, item="y", arrived=0.0)
    assert merge.drop_partitions({("clicks", 0)}) == ["y"]
    assert len(merge) == 0


def test_a_quiet_source_is_passed_only_after_a_fetch_newer_than_the_event() -> None:
    """The race of issue 3: clicks looked caught up by a highwater fetched before b50 arrived,
    while c40 (earlier in event time) was already on the broker. b50 must wait for a fetch
    answered after it arrived, however long that takes."""
    f = Fetches({("clicks", 0): True, ("browses", 0): True, ("purchases", 0): True}, at=9.0)
    released: list[str] = []
    merge: EventTimeMerge[str] = EventTimeMerge(RANK, f.source, max_wait_s=5,
                                                on_release=released.append)
    merge.add("browses", 0, ts=50, offset=0, item="b50", arrived=10.0)
    assert merge.ready(now=10.9) == []  # stale: 0.9 s later still no newer fetch of clicks
    f.fetch(11.0, clicks=False)  # the fetch finds c40: clicks is behind until it is delivered
    assert merge.ready(now=11.0) == []
    merge.add("clicks", 0, ts=40, offset=0, item="c40", arrived=11.1)
    assert merge.ready(now=11.1) == []  # c40 is the head now; purchases needs a fetch after 11.1
    f.fetch(11.2, clicks=True)
    assert merge.ready(now=11.2) == ["c40", "b50"]
    assert released == ["aligned", "aligned"]
    # with every source holding data there is nothing to wait for
    for topic, ts in (("clicks", 60), ("browses", 61), ("purchases", 62)):
        merge.add(topic, 0, ts=ts, offset=1, item=f"{topic}{ts}", arrived=12.0)
    assert merge.ready(now=12.0) == ["clicks60"]


def test_first_offset_is_the_lowest_offset_still_held_of_a_source() -> None:
    """Exactly once, ingest holds a partition's dead letters until the merge holds no lower offset
    of that partition (service/ingest.py): the merge tells its lowest held offset."""
    f = Fetches({("clicks", 0): False, ("browses", 0): True, ("purchases", 0): True})
    merge: EventTimeMerge[str] = EventTimeMerge(RANK, f.source, max_wait_s=5)
    assert merge.first_offset("clicks", 0) is None
    merge.add("browses", 0, ts=30, offset=7, item="b30", arrived=0.0)
    merge.add("browses", 0, ts=40, offset=9, item="b40", arrived=0.0)
    assert merge.first_offset("browses", 0) == 7
    f.fetch(0.5)
    assert merge.ready(now=1.0) == []  # clicks is behind
    assert merge.first_offset("browses", 0) == 7
    f.fetch(1.5, clicks=True)
    assert merge.ready(now=2.0) == ["b30", "b40"]
    assert merge.first_offset("browses", 0) is None
