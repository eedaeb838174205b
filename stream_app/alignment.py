"""Event-time alignment of the input topics (Kafka Streams calls it timestamp synchronisation).

Kafka orders records only within a partition, and a worker consumes clicks, browses and purchases
independently: replayed as fast as possible, one topic can run days ahead of another. Partition p
of the three input topics is therefore merged here: the next event forwarded is the one with the
smallest (event time, topic rank, offset) among the heads of the three partitions, and a merge
waits while one of them is empty but not caught up (its data is still being fetched), at most
``max_wait_s`` of wall time. When producers key the inputs by user id (as every tool of this
project does) all of a user's events sit in partition p of each topic, so each user's events,
and each partition's event-time watermark, come out in the same order at any replay speed.

"Caught up" is what the consumer last heard from the broker, and the fetcher does not refresh
every partition in every response; so an event may also pass an empty, caught-up partition only
after it has waited ``idle_s`` (Kafka Streams' ``max.task.idle.ms``): time for a fetch in flight
to land. That adds up to ``idle_s`` of latency when the other partitions are quiet.
Limit: while a producer writes at full speed, a partition can look caught up for longer than that
although more of it is on its way; paced traffic and data at rest (a backfill) merge exactly.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")
SortKey = tuple[int, int, int]  # event time, topic rank, offset


class EventTimeMerge(Generic[T]):
    def __init__(self, topic_rank: dict[str, int], caught_up: Callable[[str, int], bool],
                 max_wait_s: float, idle_s: float = 0.0):
        self.topic_rank = topic_rank
        self.caught_up = caught_up  # (topic, partition) -> nothing more to fetch right now
        self.max_wait_s, self.idle_s = max_wait_s, idle_s
        self._queues: dict[tuple[str, int], deque[tuple[SortKey, float, T]]] = {}
        self._blocked_since: dict[int, float] = {}

    def __len__(self) -> int:
        return sum(len(q) for q in self._queues.values())

    def add(self, topic: str, partition: int, ts: int, offset: int, item: T,
            arrived: float | None = None) -> None:
        key = (ts, self.topic_rank[topic], offset)
        arrived = time.monotonic() if arrived is None else arrived
        self._queues.setdefault((topic, partition), deque()).append((key, arrived, item))

    def drop_partitions(self, keep: set[tuple[str, int]]) -> list[T]:
        """Forget queues of revoked partitions (their events will be re-read by their new owner)."""
        dropped: list[T] = []
        for tp in [tp for tp in self._queues if tp not in keep]:
            dropped.extend(item for _, _, item in self._queues.pop(tp))
        return dropped

    def ready(self, now: float | None = None) -> list[T]:
        """Items that can be forwarded now, in merged order per partition."""
        now = time.monotonic() if now is None else now
        out: list[T] = []
        for p in sorted({p for _, p in self._queues}):
            heads = [(t, p) for t in self.topic_rank]
            while True:
                waiting = [tp for tp in heads if not self._queues.get(tp) and not self.caught_up(*tp)]
                held = [tp for tp in heads if self._queues.get(tp)]
                if not held:
                    self._blocked_since.pop(p, None)
                    break
                if waiting:
                    since = self._blocked_since.setdefault(p, now)
                    if now - since < self.max_wait_s:
                        break  # a source of this partition is still being fetched
                best = min(held, key=lambda tp: self._queues[tp][0][0])
                if not waiting and len(held) < len(heads) and now - self._queues[best][0][1] < self.idle_s:
                    break  # empty sources look caught up: give a fetch in flight time to land
                out.append(self._queues[best].popleft()[2])
                if not waiting:
                    self._blocked_since.pop(p, None)
        return out
