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


def _consumer_like() -> SimpleNamespace:
    """What Faust's ``Consumer.wait_first`` (mode's ``Service.wait_first``) reads of its consumer."""
    return SimpleNamespace(loop=asyncio.get_running_loop(), suspend_flow=asyncio.Event(),
                           _stopped=asyncio.Event(), _crashed=asyncio.Event())


def test_a_delivery_that_does_not_block_runs_in_place() -> None:
    from faust.transport.consumer import Consumer

    compat.deliver_without_tasks()
    ran_in: list[asyncio.Task[Any] | None] = []

    async def deliver(n: int) -> int:
        ran_in.append(asyncio.current_task())
        return n

    async def main() -> None:
        consumer = _consumer_like()
        result = await Consumer.wait_first(consumer, deliver(7), consumer.suspend_flow.wait())
        assert (result.results, result.stopped) == ([7], False)
        assert ran_in == [asyncio.current_task()]  # in the caller's task: none was created

    asyncio.run(main())


def test_a_blocked_delivery_finishes_later_or_is_abandoned_when_the_flow_is_suspended() -> None:
    from faust.transport.consumer import Consumer

    compat.deliver_without_tasks()
    seen: list[str] = []

    async def deliver(room: asyncio.Future[int]) -> int:
        seen.append("started")
        try:
            n = await room  # a full stream buffer
        finally:
            seen.append("left")
        seen.append(f"delivered {n}")
        return n

    async def main() -> None:
        consumer = _consumer_like()
        room: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_later(0.01, room.set_result, 3)
        result = await Consumer.wait_first(consumer, deliver(room), consumer.suspend_flow.wait())
        assert result.results == [3] and not result.stopped
        assert seen == ["started", "left", "delivered 3"]

        seen.clear()
        never: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_later(0.01, consumer.suspend_flow.set)  # a rebalance
        result = await Consumer.wait_first(consumer, deliver(never), consumer.suspend_flow.wait())
        await asyncio.sleep(0)  # the abandoned delivery's cancellation runs
        assert seen == ["started", "left"] and never.cancelled()

    asyncio.run(main())


def test_resume_passes_values_and_exceptions_on() -> None:
    async def inner(fut: asyncio.Future[int]) -> int:
        try:
            return await fut + await fut
        except KeyError:
            return -1

    async def main() -> None:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[int] = loop.create_future()
        coro = inner(fut)
        pending = coro.send(None)
        assert pending is fut
        task = asyncio.ensure_future(compat.resume(coro, pending))
        loop.call_later(0.01, fut.set_result, 4)
        assert await task == 8
        bad: asyncio.Future[int] = loop.create_future()
        coro = inner(bad)
        task = asyncio.ensure_future(compat.resume(coro, coro.send(None)))
        loop.call_later(0.01, bad.set_exception, KeyError("x"))
        assert await task == -1

    asyncio.run(main())
