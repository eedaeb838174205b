"""Every use of a private Faust or aiokafka attribute, in one place.

Checked on faust-streaming 0.15.3 and aiokafka 0.14.0 (pinned in pyproject.toml). Each function
says why the public API is not enough; an upgrade of either library starts by re-reading this file.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import types
import weakref
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any

import faust
from faust.streams import _current_event
from faust.types import TP, EventT


def _patched(owner: type, name: str) -> bool:
    """Whether ``owner.name`` is already this module's replacement (each is installed once)."""
    return bool(getattr(getattr(owner, name), "_tracker_patch", False))


def _patch(owner: type, name: str, replacement: Any) -> None:
    """Install ``replacement`` as ``owner.name``, keeping the library's as ``_faust_original``."""
    replacement._tracker_patch = True
    replacement._faust_original = getattr(owner, name)
    setattr(owner, name, replacement)


@contextlib.contextmanager
def current_event(event: EventT) -> Iterator[None]:
    """Make ``event`` Faust's *current event* while a table is written.

    Faust routes a table write to the changelog partition of the current event, and raises
    "Cannot modify table key from outside of stream iteration" inside a ``take_events`` batch,
    which has none. Setting it to one of the user's own events puts every changelog record in its
    key's source partition (faust/streams.py ``_current_event``, a ContextVar of weak references)."""
    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)


def aiokafka_consumer(app: faust.App) -> Any:
    """The aiokafka consumer that Faust runs in a thread of its own (``consumer._thread``).

    Faust exposes a partition's last highwater but not when it was fetched, and fixes the fetch
    wait; both are only on the aiokafka consumer. Raises AssertionError/AttributeError while the
    consumer is not running."""
    return app.consumer._thread._ensure_consumer()  # type: ignore[attr-defined]


def set_fetch_wait(app: faust.App, wait_ms: int) -> None:
    """Set how long the consumer's fetches wait at the broker (aiokafka's ``Fetcher.
    _fetch_max_wait_ms``, read for every fetch request). Faust hard-codes 1.5 s, and the embedded
    broker holds a fetch for the whole wait even when records arrive meanwhile, so 1.5 s would be
    added to every hop of a quiet stream. A no-op while the consumer is not running."""
    try:
        fetcher = aiokafka_consumer(app)._fetcher
    except (AssertionError, AttributeError):
        return
    if fetcher is not None:
        fetcher._fetch_max_wait_ms = wait_ms


def last_fetch_ms(app: faust.App, tp: TP) -> int | None:
    """Wall-clock ms of the newest fetch response that covered ``tp`` (aiokafka's public
    ``last_poll_timestamp``, reachable only through the private consumer above)."""
    return aiokafka_consumer(app).last_poll_timestamp(tp)


def committed_offset(app: faust.App, tp: TP) -> int | None:
    """The group's committed offset of ``tp`` as Faust keeps it (``Consumer._committed_offset``,
    the next offset to read): where this process starts reading a partition it was assigned."""
    return app.consumer._committed_offset.get(tp)  # type: ignore[attr-defined]


def fetch_position(app: faust.App, tp: TP) -> int | None:
    """The aiokafka fetcher's position in ``tp`` (the next offset it will fetch), without waiting:
    aiokafka's public ``position()`` is a coroutine that waits for a valid position."""
    state = aiokafka_consumer(app)._subscription.subscription.assignment.state_value(tp)
    return state.position if state is not None and state.has_valid_position else None


def fetch_state(app: faust.App, tp: TP) -> tuple[bool, bool]:
    """(active, buffered) of ``tp`` in Faust's consumer (``Consumer._active_partitions``,
    ``_buffered_partitions``): whether it is fetched, or held back for a full stream buffer."""
    consumer: Any = app.consumer
    return tp in (consumer._active_partitions or ()), tp in consumer._buffered_partitions


def idempotent_producer(app: faust.App) -> None:
    """Make Faust's own producer (the state changelog's) idempotent with ``acks=all``.

    Faust passes ``producer_acks`` to aiokafka but turns idempotence on only inside transactions
    (``Producer._settings_extra``, faust/transport/drivers/aiokafka.py); the aiokafka producer is
    created from those settings when Faust's producer starts, so wrapping the method on the
    instance before the worker starts is enough."""
    producer = app.producer
    extra = producer._settings_extra  # type: ignore[attr-defined]
    producer._settings_extra = lambda: {  # type: ignore[attr-defined]
        **extra(), "acks": "all", "enable_idempotence": True}


def seek_before_resuming() -> None:
    """Seek the stream partitions to their committed offsets *before* resuming them after a table
    recovery (``Recovery.on_recovery_completed``, faust/tables/recovery.py).

    faust-streaming 0.15.3 resumes them first and seeks second. Its fetcher is already running (it
    read the changelogs), so records from the committed offset C onwards reach the consumer while
    the seek is on its way; the seek then resets Faust's read offset to C under them
    (``Consumer._read_offset``), the next record in flight (C + ~100) looks like a gap, Faust marks
    the gap's offsets acknowledged (``Consumer._add_gap``), and when the records of the gap are
    fetched again it drops them as already read. Seen after kill -9 with state to recover: 60 of
    231,919 events never forwarded by ingest, their offsets committed (tests/integration/service/
    test_backlog.py, ten kills); gaps of ~100 offsets logged at every such restart. With the seek
    first, nothing of the stream partitions is in flight (they are paused during recovery): the
    order Faust itself uses in ``Recovery._resume_streams`` (faust-streaming PR #217).
    Installed once per process, before the app starts; the body is 0.15.3's with the order swapped.
    """
    from faust.tables.recovery import Recovery

    if _patched(Recovery, "on_recovery_completed"):
        return

    async def on_recovery_completed(self: Any, generation_id: int = 0) -> None:
        consumer = self.app.consumer
        self.log.info("Restore complete!")
        await self.app.on_rebalance_complete.send()
        self._set_recovery_ended()
        callbacks = [asyncio.ensure_future(table.on_recovery_completed(
            self.actives_for_table[table], self.standbys_for_table[table]))
            for table in self.tables.values()]
        if callbacks:
            await asyncio.wait(callbacks)
        assignment = consumer.assignment()
        if self.app.consumer_generation_id != generation_id:
            self.log.warning(f"Recovery rebalancing again app id {self.app.consumer_generation_id} "
                             f"param {generation_id}")
            return
        if assignment:
            self.log.info("Seek stream partitions to committed offsets (before resuming them).")
            await self._wait(consumer.perform_seek(), timeout=self.app.conf.broker_request_timeout)
        consumer.resume_partitions({tp for tp in assignment if not self._is_changelog_tp(tp)})
        self.completed.set()
        self.app.flow_control.resume()
        consumer.resume_flow()
        await self.app._fetcher.maybe_start()
        self.tables.on_actives_ready()
        if not self.app.assignor.assigned_standbys():
            self.tables.on_standbys_ready()
        self.app.on_rebalance_end()
        self.log.info("Worker ready")

    _patch(Recovery, "on_recovery_completed", on_recovery_completed)


def fetch_what_is_active() -> None:
    """Fetch records only for the partitions active when Faust asks, never for "all of them".

    Faust hands its *live* set of active partitions to aiokafka's ``Fetcher.fetched_records`` in
    the consumer's thread (``AIOKafkaConsumerThread._fetch_records``), which waits there for up to
    a second. aiokafka reads an empty set as "every partition". When recovery ends, Faust pauses
    the changelog partitions before it resumes the stream partitions, so for a moment the set is
    empty: a fetch landing then returned the buffered records of *every* partition, aiokafka
    counted them as consumed, and Faust dropped them (their partitions were not active). A
    partition with a committed offset got them back from the seek after recovery; one without
    (a worker killed before its first commit) lost them: 2,496-4,022 events per repartition
    partition in 4 of 11 runs of test_recovery.py's lost-disk test. A snapshot taken when Faust
    asks keeps what is fetched to what was active; an empty snapshot fetches nothing."""
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    if _patched(AIOKafkaConsumerThread, "_fetch_records"):
        return
    original = AIOKafkaConsumerThread._fetch_records

    async def _fetch_records(self: Any, consumer: Any, active_partitions: Any, timeout: float | None = None,
                             max_records: int | None = None) -> Any:
        if active_partitions is None:  # a client-only app: every partition, as Faust means it
            return await original(self, consumer, None, timeout=timeout,  # type: ignore[arg-type]
                                  max_records=max_records)
        snapshot = set(active_partitions)  # a copy: the live set changes while the fetch waits
        if not snapshot:
            return {}
        return await original(self, consumer, snapshot, timeout=timeout, max_records=max_records)

    _patch(AIOKafkaConsumerThread, "_fetch_records", _fetch_records)


def deliver_without_tasks() -> None:
    """Hand each fetched record to the streams without a task per record when nothing blocks.

    Faust's consumer loop (``Consumer._drain_messages``) delivers every record with
    ``wait_first(callback(message), suspend_flow.wait())``: four tasks, an ``asyncio.wait`` and a
    turn of the event loop per record, so that a delivery blocked on a full stream buffer can be
    abandoned when a rebalance suspends the flow. A delivery almost never blocks. Here its first
    step runs in place: if it finishes, that was the whole delivery; if it waits, the rest of it
    goes through Faust's ``wait_first`` as before, still abandoned on a suspended flow. Only that
    call (two waitables, the first a coroutine, no timeout) takes this path, and only while the
    flow is not suspended and the consumer neither stopped nor crashed."""
    from faust.transport.consumer import Consumer
    from mode.services import WaitResults

    if _patched(Consumer, "wait_first"):
        return
    original = Consumer.wait_first

    async def wait_first(self: Any, *coros: Any, timeout: Any = None) -> Any:
        if not (len(coros) == 2 and timeout is None and inspect.iscoroutine(coros[0])
                and not self.suspend_flow.is_set() and not self._stopped.is_set()
                and not self._crashed.is_set()):
            return await original(self, *coros, timeout=timeout)
        delivery, suspended = coros
        try:
            pending = delivery.send(None)
        except StopIteration as done:
            suspended.close()
            return WaitResults([delivery], [done.value], False)
        except BaseException:
            suspended.close()
            raise
        return await original(self, asyncio.ensure_future(resume(delivery, pending)), suspended)

    _patch(Consumer, "wait_first", wait_first)


async def resume(coro: Any, pending: Any) -> Any:
    """Run to its end a coroutine whose first step ran already and yielded ``pending`` (what it
    waits on); what the awaiting task sends or throws in (a cancellation) goes on to it."""
    return await _rest(coro, pending)


@types.coroutine
def _rest(coro: Any, pending: Any) -> Any:
    while True:
        try:
            sent = yield pending
        except GeneratorExit:  # closed unfinished: close the coroutine too
            coro.close()
            raise
        except BaseException as exc:  # noqa: BLE001 - thrown in by the task: the coroutine's own
            try:
                pending = coro.throw(exc)
            except StopIteration as done:
                return done.value
        else:
            try:
                pending = coro.send(sent)
            except StopIteration as done:
                return done.value


def _handed(assignment: Any) -> dict[Any, int]:
    """Per partition, the newest offset aiokafka handed (or is handing) to Faust's consumer loop;
    kept on aiokafka's assignment, so a new assignment starts empty."""
    handed: dict[Any, int] | None = getattr(assignment, "_tracker_handed", None)
    if handed is None:
        handed = assignment._tracker_handed = {}
    return handed


def note_handed_records() -> None:
    """Note, per partition, which offsets aiokafka hands to Faust (``FetchResult.getall``), for
    :func:`records_in_process`. The first offset of a batch is noted *before* aiokafka takes the
    batch out of its buffer, the last one after: a reader that looks at the buffer first and at
    these offsets second never finds the records in neither place (``getall`` of one partition can
    run long before the fetch returns: aiokafka drains every buffered partition in one call).
    Not the fetch position: it also moves past offsets that hold no record for Faust (transaction
    markers), which would look like records on their way forever."""
    from aiokafka.consumer.fetcher import FetchResult

    if _patched(FetchResult, "getall"):
        return
    original = FetchResult.getall

    def getall(self: Any, max_records: int | None = None) -> list[Any]:
        tp, handed = self._topic_partition, _handed(self._assignment)
        if self.has_more() and self.check_assignment(tp):  # else aiokafka discards the batch
            handed[tp] = self._partition_records.next_fetch_offset
        records: list[Any] = original(self, max_records)
        if records:
            handed[tp] = records[-1].offset
        return records

    _patch(FetchResult, "getall", getall)


def records_in_process(app: faust.App, tp: TP, offset: int) -> bool:
    """Whether records of ``tp`` from ``offset`` on are already in this process, on their way to
    the streams: fetched and buffered by aiokafka (``Fetcher._records``), or handed to Faust's
    consumer loop (:func:`note_handed_records`).

    That loop delivers a fetched batch message by message, each delivery waiting for room in its
    stream's buffer and for Faust's producer (the changelog) to ebb, so on a loaded worker a large
    batch keeps it away from aiokafka for minutes while the next records of another partition wait
    there, fetched: 64-154 s seen on the embedded broker, which returns far more than the
    per-partition fetch limit at once. Reads values the consumer thread writes, buffer first (see
    :func:`note_handed_records` for why that order)."""
    try:
        consumer = aiokafka_consumer(app)
        buffered = consumer._fetcher._records.get(tp)
        assignment = consumer._subscription.subscription.assignment
    except (AssertionError, AttributeError):
        return False
    has_more = getattr(buffered, "has_more", None)  # a FetchResult; a FetchError has none
    if has_more is not None and has_more():
        return True
    return assignment is not None and _handed(assignment).get(tp, -1) >= offset


def seek_uncommitted_to_start() -> None:
    """Complete Faust's "seek to committed offsets" (``Consumer.perform_seek``): a stream
    partition without a committed offset goes back to its first offset, where
    ``auto_offset_reset="earliest"`` started it.

    Faust seeks back to the committed offsets whenever records aiokafka counted as consumed may
    have been dropped on their way to the streams (after a recovery or a rebalance, and when
    ``getmany`` finds the flow stopped). aiokafka's ``seek_to_committed`` seeks only partitions
    with a committed offset above 0, so on a partition nobody has committed yet such a drop was
    final. Changelog partitions are left alone: recovery positions them itself."""
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    if _patched(AIOKafkaConsumerThread, "seek_to_committed"):
        return
    original = AIOKafkaConsumerThread.seek_to_committed

    async def seek_to_committed(self: Any) -> Any:
        committed = await original(self)
        uncommitted = [tp for tp, offset in committed.items()
                       if not offset and not self.consumer._is_changelog_tp(tp)]
        if uncommitted:
            await self.seek_to_beginning(*uncommitted)
        return committed

    _patch(AIOKafkaConsumerThread, "seek_to_committed", seek_to_committed)


def transactional_id(app: faust.App, source: TP) -> str:
    """The transactional id under which Faust (``processing_guarantee="exactly_once"``) commits the
    offsets of the input partition ``source``: ``TransactionManager.commit`` in
    faust/transport/consumer.py, ``f"{group_id}-{group}-{tp.partition}"``. Faust's own
    ``TransactionManager.send`` instead takes the id from the *destination* partition, which is
    wrong for any record not co-partitioned with its input (docs/apache-kafka.md); the tracker
    sends through ``app.producer.send(..., transactional_id=...)`` with this id."""
    group = app.assignor.group_for_topic(source.topic)
    return f"{app.conf.id}-{group}-{source.partition}"


def ack_now(event: EventT) -> bool:
    """Acknowledge ``event``'s message to the consumer now, whatever references remain.

    take_events (faust/streams.py) holds a reference of its own and releases it only after the
    batch's body returned, outside the tracker's step lock; the offset must become committable
    inside it (exactly once, service/sender.py). ``Message.ack(consumer, n)`` with n = the
    remaining count makes this the final ack; take_events' later ack is then a no-op."""
    msg = event.message
    return msg.ack(event.app.consumer, n=max(msg.refcount, 1))


def forget_unacked(app: faust.App, events: Iterable[EventT]) -> None:
    """Take ``events``' messages off the consumer's list of messages in process, unacknowledged.

    When a rebalance begins Faust pauses every partition, drops what its streams have buffered
    and then waits (``Consumer.wait_empty``, no time limit) until every message in process is
    acknowledged. A message the tracker holds for a later step would never be: its step needs
    records from the paused partitions. Forgotten instead, it is not committed either, and
    Faust's seek to the committed offsets after the rebalance delivers it again (to this
    worker or to the partition's new owner), like the messages Faust dropped itself."""
    unacked = app.consumer._unacked_messages  # type: ignore[attr-defined]  # noqa: SLF001  # a WeakSet
    for event in events:
        unacked.discard(event.message)


def commit_under(app: faust.App, lock: asyncio.Lock) -> None:
    """Exactly once: run Faust's offset commits (every path: periodic, rebalance, stop, goes
    through ``Consumer._commit_tps``) holding ``lock``, the lock each step holds while it sends
    its records and acknowledges its inputs, and commit each partition up to its highest
    acknowledged offset.

    - The lock: otherwise a commit could pick offset O, a step could then add records of offsets
      past O to the open transaction, and the commit would commit them with O: after a crash
      their inputs are read again and the records repeated. The partitions are picked under the
      lock too (all that have acknowledged offsets): Faust groups every topic's partition p under
      one transactional id, so a partition left out would have its records committed without
      its offset.
    - The offsets: Faust's ``Consumer._new_offset`` commits only the first run of consecutive
      acknowledged offsets, bridging holes with the gaps its fetch loop records. A read_committed
      consumer of a transactional topic (the repartitioned events) skips offsets all the time
      (markers, aborted records), and ``_drain_messages`` records such a gap *including* the
      offset of the record it delivers (``_add_gap(tp, r_offset + 1, offset)``): once that record
      is acknowledged its offset is in the list twice, the run breaks there, and the commit stops
      below acknowledged records whose outputs are in the transaction it commits
      (tests/unit/service/test_exactly_once.py; seen as 590 "duplicate" dead letters after two kills).
      The tracker acknowledges each partition's records in offset order (track: whole batches in
      turn; ingest: the merge releases each partition's head first, and holds dead letters until
      the lower offsets are forwarded), so every offset below the highest acknowledged one was
      acknowledged or never delivered: the highest + 1 is exactly what the transaction covers.
    """
    consumer = app.consumer
    if not consumer.in_transaction:
        raise RuntimeError("commit_under: the consumer does not run transactions "
                           "(processing_guarantee is not exactly_once, or read before the worker)")

    async def _commit_tps(tps: Any, start_new_transaction: bool) -> bool:
        async with lock:
            offsets: dict[TP, int] = {}
            for tp, acked in consumer._acked.items():  # type: ignore[attr-defined]
                if not acked:
                    continue
                offset = max(acked) + 1
                committed = consumer._committed_offset.get(tp)  # type: ignore[attr-defined]
                acked.clear()
                consumer._acked_index[tp].clear()  # type: ignore[attr-defined]
                consumer._gap[tp].chop(0, offset)  # type: ignore[attr-defined]
                if committed is None or offset > committed:
                    offsets[tp] = offset
            if not offsets:
                return False
            return bool(await consumer._commit_offsets(  # type: ignore[attr-defined]
                offsets, start_new_transaction=start_new_transaction))

    consumer._commit_tps = _commit_tps  # type: ignore[attr-defined]


def fetched_highwaters(app: faust.App, *, embedded: bool) -> None:
    """Faust's table recovery reads each changelog partition up to a highwater
    (``AIOKafkaConsumerThread._highwaters``, faust/transport/drivers/aiokafka.py); this asks the
    brokers for it every time, and on the embedded broker corrects their answer.

    - Exactly once: faust-streaming 0.15.3 takes the highwater from aiokafka's
      ``last_stable_offset(tp)``, a value cached from the consumer's last fetch of that partition:
      ``None`` for a partition it has not fetched since it was assigned, e.g. a changelog partition
      handed over by another worker. Recovery then compares its persisted offset with -1 and
      crashes the worker (``ConsistencyError: The persisted offset ... is higher than the last
      offset in that topic (highwater) (6 > -1)``, seen with two workers). ``end_offsets`` sends
      ListOffsets with the consumer's isolation level, so a read_committed consumer gets the last
      stable offset from the broker: the same value, fetched.
    - ``embedded``: the embedded broker understates end offsets when a producer batches records
      (:func:`stream_app.kafka.admin.true_end_offsets`), so a table rebuilt from a batched
      changelog would miss the updates of its last batch; the true ends are fetched instead.

    The replacement is installed once per process; ``embedded`` is kept per app."""
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread, server_list

    from stream_app.kafka.admin import true_end_offsets

    app._tracker_true_ends = embedded  # type: ignore[attr-defined]
    if _patched(AIOKafkaConsumerThread, "_highwaters"):
        return

    async def _highwaters(self: Any, partitions: list[TP]) -> Any:
        reported = await self._ensure_consumer().end_offsets(partitions)
        if not getattr(self.app, "_tracker_true_ends", False):
            return reported
        servers = server_list(self.transport.url, self.transport.default_port)
        return await true_end_offsets(servers, reported)

    _patch(AIOKafkaConsumerThread, "_highwaters", _highwaters)


async def take_batches(stream: Any, max_: int, within: float,
                       quiet: float | None) -> AsyncIterator[list[EventT]]:
    """Micro-batches of ``stream``: Faust's ``Stream.take_events`` (faust/streams.py) with another
    rule for when a batch closes. Faust waits ``within`` after every batch, however few events
    came: a fixed tick that each hop adds to every event's latency. Here a batch opens with its
    first event and closes when it holds ``max_`` events, when no further event came for ``quiet``
    seconds (None: never early), or ``within`` after its first event. A backlog keeps the buffer
    growing, so batches stay full; live input closes one as soon as what was fetched is in. The mechanics are
    take_events' own: a buffering processor on the stream, fed by its passive drainer, the stream's
    acks off meanwhile and every event acknowledged once the batch's consumer is done with it."""
    from mode.utils.futures import notify

    loop = asyncio.get_running_loop()
    events: list[EventT] = []
    full, arrived, consumed = asyncio.Event(), asyncio.Event(), asyncio.Event()
    consuming: asyncio.Future[None] | None = None

    async def add_to_buffer(value: Any) -> Any:
        nonlocal consuming
        try:
            if consuming is not None:  # the batch in hand is not released yet
                try:
                    await consuming
                finally:
                    consuming = None
            event = stream.current_event
            if event is None:
                raise RuntimeError("take_batches found no current event")
            events.append(event)
            arrived.set()
            if len(events) >= max_:  # never more than max_: wait for the batch to be taken
                full.set()
                consumed.clear()
                await stream.wait(consumed)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # as take_events does: the stream crashes, the worker stops
            stream.log.exception("Error adding to take buffer: %r", exc)
            await stream.crash(exc)
        return value

    enable_acks = stream.enable_acks
    stream.enable_acks = False
    stream.add_processor(add_to_buffer)
    stream._enable_passive(aiter(stream.channel))
    try:
        while not stream.should_stop:
            await stream.wait_for_stopped(arrived, timeout=within)  # also looks at should_stop
            if not events:
                continue
            closes = loop.time() + within
            while not full.is_set():
                n, left = len(events), closes - loop.time()
                if left <= 0:
                    break
                await stream.wait_for_stopped(full, timeout=left if quiet is None else min(quiet, left))
                if len(events) == n:
                    break  # quiet: what was fetched is in
            consuming = loop.create_future()  # add_to_buffer waits on it until the acks below
            batch = events[:]
            events.clear()
            arrived.clear()
            try:
                yield batch
            finally:
                for event in batch:
                    await stream.ack(event)
                notify(consuming)
                full.clear()
                consumed.set()
    finally:
        stream.enable_acks = enable_acks
        stream._processors.remove(add_to_buffer)
