"""Event-time alignment of the input topics (Kafka Streams calls it timestamp synchronisation).

Kafka orders records only within a partition, and a worker consumes clicks, browses and purchases
independently: replayed as fast as possible, one topic can run days ahead of another. Partition p
of the three input topics is therefore merged here: the next event forwarded is the one with the
smallest (event time, topic rank, offset) among the heads of the three partitions. When producers
key the inputs by user id (as every tool of this project does) all of a user's events sit in
partition p of each topic, so each user's events, and each partition's event-time watermark, come
out in the same order at any replay speed.

When one of the three partitions has nothing buffered, the head may pass it only once the consumer
knows that partition is *caught up as of a fetch answered after the head arrived*: the partition's
highwater, from a fetch response received after the head event reached the merge, says there is
nothing more to read. A highwater alone is not enough: it is as old as the last fetch that covered
the partition, and a fetch can be held at the broker for a long time (Faust asks brokers to hold a
fetch up to 1.5 s; the embedded broker holds every fetch that long, even when data arrives
meanwhile; a loaded machine adds more). An earlier event written to the quiet-looking partition in
the meantime would be passed; a fixed grace period (the earlier design, 0.25 s) only made that
rarer. The rule is exact when every earlier event reached the broker before the head did: true of a
paced ``replay`` and of producers that send in event time, up to their own batching (a producer's
batch for one partition can leave a few milliseconds before an earlier record's batch for another),
and on a single broker (fetches to one broker are answered in order; a fetch to another broker may
have been sent before the head arrived).

The price is latency on quiet inputs: an event whose sibling partitions are empty waits for the
next fetch response. Apache Kafka answers a fetch as soon as any fetched partition gets data, else
after the fetch wait (1.5 s with Faust); the embedded broker always after the full wait, so the
worker sets a 100 ms fetch wait on both (``TRACKER_FETCH_WAIT_MS``,
:func:`stream_app.service.compat.set_fetch_wait`).
Measured on the embedded broker (``interest-tracker demo``, this rule, 1.5 s vs 100 ms fetch wait):
mean processing latency 1.43 s -> 0.19 s at 3 events/s, 1.25 s -> 0.14 s at 30 events/s, 0.53 s ->
0.17 s at 300 events/s.

No timer lets an event pass a source that holds unread records: a source that is *behind* (its
last known highwater lies past what this process has read, or nothing is known of it yet) holds the
merge for as long as it takes, so a backlog is merged in event time however the consumer schedules
its fetches. Only a source that looks *idle* (caught up as of a fetch older than the head) is passed
after ``max_wait_s`` without a fresher fetch, counted as ``idle``. A last resort against a stall: a
source reported behind that has delivered nothing for ``stall_s`` while the head waited as long
is passed too, counted as ``stalled`` and logged by the caller: liveness over order, visibly. A
source whose next records this process has already fetched (*arriving*) is never passed: they are
on their way through the consumer, which can take minutes on a loaded worker (Faust delivers a
fetched batch at the pace of its slowest stream; see ``compat.records_in_process``).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Generic, NamedTuple, TypeVar

T = TypeVar("T")
SortKey = tuple[int, int, int]  # event time, topic rank, offset


class SourceView(NamedTuple):
    """What the consumer knows of one input partition that has nothing buffered in the merge."""

    caught_up_at: float | None  # when (the merge's clock) a fetch showed nothing left to read
    behind: bool  # records on the broker not read yet, or nothing known of the partition
    arriving: bool = False  # behind, and its next records are already fetched by this process


BEHIND = SourceView(None, True)
ARRIVING = SourceView(None, True, True)
# source(topic, partition) -> SourceView
SourceOf = Callable[[str, int], SourceView]


class EventTimeMerge(Generic[T]):
    """Per-partition merge of the input topics in (event time, topic rank, offset) order.

    ``clock`` (wall-clock seconds by default) stamps arrivals and measures ``max_wait_s``; it must
    be the clock of ``source``'s fetch times. ``on_release(how)`` is called per forwarded event
    with ``"aligned"`` or ``"idle"`` (passed an idle-looking source after ``max_wait_s``)."""

    def __init__(self, topic_rank: dict[str, int], source: SourceOf, max_wait_s: float,
                 clock: Callable[[], float] = time.time,
                 on_release: Callable[[str], None] | None = None, stall_s: float = 60.0):
        self.topic_rank = topic_rank
        self.source = source
        self.max_wait_s, self.stall_s = max_wait_s, stall_s
        self.clock = clock
        self.on_release = on_release
        self._queues: dict[tuple[str, int], deque[tuple[SortKey, float, T]]] = {}
        self._blocked_since: dict[int, float] = {}
        self.stalled_by: list[tuple[str, int]] = []  # the sources reported behind at the last "stalled"
        self._last_add: dict[tuple[str, int], float] = {}  # when a source last delivered an event
        self._started = clock()

    def __len__(self) -> int:
        return sum(len(q) for q in self._queues.values())

    def add(self, topic: str, partition: int, ts: int, offset: int, item: T,
            arrived: float | None = None) -> None:
        key = (ts, self.topic_rank[topic], offset)
        arrived = self.clock() if arrived is None else arrived
        self._queues.setdefault((topic, partition), deque()).append((key, arrived, item))
        self._last_add[(topic, partition)] = arrived

    def first_offset(self, topic: str, partition: int) -> int | None:
        """The lowest offset held of a source (its queue is in offset order), None if none."""
        queue = self._queues.get((topic, partition))
        return queue[0][0][2] if queue else None

    def clear(self) -> list[T]:
        """Forget every held item (returned): a rebalance will deliver them again."""
        return self.drop_partitions(set())

    def drop_partitions(self, keep: set[tuple[str, int]]) -> list[T]:
        """Forget queues of revoked partitions (their events will be re-read by their new owner)."""
        dropped: list[T] = []
        for tp in [tp for tp in self._queues if tp not in keep]:
            dropped.extend(item for _, _, item in self._queues.pop(tp))
        return dropped

    def ready(self, now: float | None = None) -> list[T]:
        """Items that can be forwarded now, in merged order per partition."""
        now = self.clock() if now is None else now
        out: list[T] = []
        for p in sorted({p for _, p in self._queues}):
            heads = [(t, p) for t in self.topic_rank]
            # asked once per source and call (not per event): an answer about the fetch at time F
            # stays true of F, and events are delivered only between calls
            as_of: dict[tuple[str, int], SourceView] = {}
            while True:
                held = [tp for tp in heads if self._queues.get(tp)]
                if not held:
                    self._blocked_since.pop(p, None)
                    break
                best = min(held, key=lambda tp: self._queues[tp][0][0])
                arrived = self._queues[best][0][1]
                behind = idle = False
                stalled = now - arrived >= self.stall_s
                for tp in heads:
                    if self._queues.get(tp):
                        continue
                    if tp not in as_of:
                        as_of[tp] = self.source(*tp)
                    view = as_of[tp]
                    if view.behind:
                        behind = True
                        stalled &= (not view.arriving
                                    and now - self._last_add.get(tp, self._started) >= self.stall_s)
                    elif view.caught_up_at is None or view.caught_up_at <= arrived:
                        idle = True  # caught up as of an older fetch: a newer one is needed
                if behind and stalled:
                    self._blocked_since.pop(p, None)
                    self.stalled_by = [tp for tp in heads if tp in as_of and as_of[tp].behind]
                    how = "stalled"
                elif behind:
                    self._blocked_since.pop(p, None)
                    break  # unread records may hold an earlier event: wait for them
                elif idle:
                    since = self._blocked_since.setdefault(p, now)
                    if now - since < self.max_wait_s:
                        break
                    how = "idle"
                else:
                    self._blocked_since.pop(p, None)
                    how = "aligned"
                out.append(self._queues[best].popleft()[2])
                if self.on_release is not None:
                    self.on_release(how)
        return out
