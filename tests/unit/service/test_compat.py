"""The compatibility module's fixes of Faust: its copy of a Faust method does what Faust's does, in
the fixed order; fetches ask for a snapshot of the active partitions; seeks complete."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import re
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

from aiokafka.consumer.fetcher import FetchResult
from aiokafka.consumer.subscription_state import Assignment
from aiokafka.structs import TopicPartition
from faust.tables.recovery import Recovery
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

from stream_app.service import compat


def calls(fn: object) -> list[str]:
    """Names of the methods and functions a function calls, in source order."""
    return re.findall(r"\.?(\w+)\(", inspect.getsource(fn))  # type: ignore[arg-type]


def test_seek_before_resuming_keeps_every_step_of_faust_and_seeks_first() -> None:
    compat.seek_before_resuming()
    ours = Recovery.on_recovery_completed
    original = ours._faust_original  # type: ignore[attr-defined]
    missing = set(calls(original)) - set(calls(ours)) - {"dev", "cast"}
    assert not missing, f"steps of Faust's on_recovery_completed not in the copy: {missing}"
    steps = calls(ours)
    assert steps.index("perform_seek") < steps.index("resume_partitions") < steps.index("resume_flow")
    compat.seek_before_resuming()  # installed once: a second call keeps the same function
    assert Recovery.on_recovery_completed is ours


def consumer_thread() -> Any:
    """Enough of an AIOKafkaConsumerThread for ``_fetch_records``: the Faust consumer's flow flag."""
    return SimpleNamespace(consumer=SimpleNamespace(flow_active=True))


class RecordingFetcher:
    """aiokafka's Fetcher as ``_fetch_records`` uses it; records the partitions it was asked for
    and, like a fetch that lands a moment later, lets the caller's set change meanwhile."""

    def __init__(self, live: set[str]) -> None:
        self.live, self.asked = live, []  # type: ignore[var-annotated]
        self._closed = False
        self._subscriptions = SimpleNamespace(fetch_context=contextlib.nullcontext)

    async def fetched_records(self, partitions: Any, timeout: float = 0, max_records: Any = None) -> Any:
        self.live.clear()  # Faust pauses partitions while the fetch waits
        self.asked.append(partitions)
        return {tp: ["record"] for tp in (partitions or {"every", "partition"})}


def test_fetch_asks_for_what_was_active_never_for_everything() -> None:
    compat.fetch_what_is_active()
    fetch = AIOKafkaConsumerThread._fetch_records
    live = {"tp-a", "tp-b"}
    fetcher = RecordingFetcher(live)
    consumer = SimpleNamespace(_fetcher=fetcher, _closed=False)
    got = asyncio.run(fetch(consumer_thread(), consumer, live, timeout=0))
    assert fetcher.asked == [frozenset({"tp-a", "tp-b"})] and set(got) == {"tp-a", "tp-b"}
    # the set emptied by the pause: aiokafka would read it as "every partition"; nothing is fetched
    assert asyncio.run(fetch(consumer_thread(), consumer, live, timeout=0)) == {}
    assert len(fetcher.asked) == 1
    compat.fetch_what_is_active()  # installed once
    assert AIOKafkaConsumerThread._fetch_records is fetch


class Batch:
    """aiokafka's PartitionRecords: a fetched batch of one partition from ``next_fetch_offset``;
    ``during()`` runs before each record is taken, as a reader on another thread could."""

    def __init__(self, first: int, last: int, during: Callable[[], None]) -> None:
        self.next_fetch_offset, self.last, self.during = first, last, during

    def __iter__(self) -> Batch:
        return self

    def __next__(self) -> Any:
        self.during()
        if self.next_fetch_offset > self.last:
            raise StopIteration
        self.next_fetch_offset += 1
        return SimpleNamespace(offset=self.next_fetch_offset - 1)


def test_records_in_process_while_aiokafka_hands_them_to_faust() -> None:
    """What the merge counts as arriving: a batch aiokafka buffers, and the offsets it handed (or
    is handing) to Faust, noted before the batch leaves the buffer: never in neither place."""
    asyncio.run(_hand_over())  # aiokafka's assignment wants a running loop


async def _hand_over() -> None:
    compat.note_handed_records()
    tp = TopicPartition("clicks", 0)
    assignment = Assignment([tp])
    assignment.state_value(tp).reset_to(5)
    records: dict[Any, Any] = {}
    thread = SimpleNamespace(_ensure_consumer=lambda: SimpleNamespace(
        _fetcher=SimpleNamespace(_records=records),
        _subscription=SimpleNamespace(subscription=SimpleNamespace(assignment=assignment))))
    app: Any = SimpleNamespace(consumer=SimpleNamespace(_thread=thread))
    assert not compat.records_in_process(app, tp, 5)
    seen: list[bool] = []
    batch = Batch(5, 9, lambda: seen.append(compat.records_in_process(app, tp, 5)))
    records[tp] = FetchResult(tp, assignment=assignment, partition_records=batch, backoff=0)
    assert compat.records_in_process(app, tp, 5)
    assert [r.offset for r in records[tp].getall()] == [5, 6, 7, 8, 9]
    del records[tp]  # as fetched_records does once a batch is drained
    assert len(seen) == 6 and all(seen)  # in process at every moment of the hand-over
    assert compat.records_in_process(app, tp, 9) and not compat.records_in_process(app, tp, 10)
    compat.note_handed_records()  # installed once
    assert getattr(FetchResult.getall, "_tracker_patch", False)


def test_seek_to_committed_sends_uncommitted_stream_partitions_to_their_start() -> None:
    compat.seek_uncommitted_to_start()
    committed = {"in-0": 7, "in-1": None, "in-2": 0, "changelog-0": None}
    to_start: list[str] = []

    class Aiokafka:
        async def seek_to_committed(self) -> dict[str, int | None]:
            return committed

        async def seek_to_beginning(self, *tps: str) -> None:
            to_start.extend(tps)

    async def call_thread(fn: Any, *args: Any) -> Any:
        return await fn(*args)

    thread = SimpleNamespace(call_thread=call_thread, _ensure_consumer=Aiokafka,
                             consumer=SimpleNamespace(_is_changelog_tp=lambda tp: tp.startswith("changelog")))
    thread.seek_to_beginning = functools.partial(AIOKafkaConsumerThread.seek_to_beginning, thread)
    assert asyncio.run(AIOKafkaConsumerThread.seek_to_committed(thread)) == committed
    assert to_start == ["in-1", "in-2"]
