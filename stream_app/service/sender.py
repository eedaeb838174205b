"""The service's own batching producer for repartitioned events and outputs.

Faust's producer carries only the state table's changelog; everything else goes through here.

The delivery rule, the same in both agents: an input record is acknowledged only after the broker
acknowledged every record it produced (:meth:`Outputs.send`), so offsets are never committed ahead
of them, and metrics count a record only then. If any record is not delivered (the producer raises,
e.g. MessageSizeTooLarge), nothing behind it is acknowledged and the worker stops with one clear log
line: a restart re-reads from the last committed offset. Skipping past the failure would lose the
inputs; retrying in place would stall silently.

Exactly once (``TRACKER_PROCESSING_GUARANTEE=exactly_once``, Apache Kafka): Faust runs one
transactional producer per input partition (``processing_guarantee="exactly_once"``) and commits each
input partition's offsets in its producer's transaction. Every record here is then sent with the
transactional producer of the input partition that caused it (``OutputRecord.source``), not with
the shared producer, and a step (send, write the state, acknowledge) holds :attr:`RecordSender.step`
so that Faust's offset commit (:func:`stream_app.service.compat.commit_under`) never falls between
the records of a step and the acknowledgement of its inputs: a committed transaction holds the
records of exactly the input offsets it commits, and an aborted one (a crash) none that a commit
covers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import faust
from faust.types import TP, EventT

from stream_app.core.config import Settings
from stream_app.service import compat, metrics

log = logging.getLogger(__name__)


class DeliveryFailed(Exception):
    """An output was not delivered: the inputs behind it must not be acknowledged."""


class RecordSender:
    def __init__(self, settings: Settings, app: faust.App | None = None):
        self.settings, self.app = settings, app
        self.producer: Any = None
        self._lock = asyncio.Lock()
        self.exactly_once = settings.processing_guarantee == "exactly_once"
        if self.exactly_once and app is None:
            raise ValueError("exactly_once needs the Faust app (its transactional producers)")
        self._step_lock = asyncio.Lock()
        self._commits_serialized = False

    def step(self) -> contextlib.AbstractAsyncContextManager[Any]:
        """Hold around one step's sends, state writes and acknowledgements (exactly once: Faust's
        commit waits for it, and it for a commit in progress); a no-op at least once."""
        return self._step_lock if self.exactly_once else contextlib.nullcontext()

    def ack(self, ev: EventT) -> None:
        """Acknowledge an input whose records were sent. Exactly once: its offset becomes
        committable now, inside the step, not when take_events releases the batch later."""
        if self.exactly_once:
            compat.ack_now(ev)
        else:
            ev.ack()

    async def start(self) -> None:
        async with self._lock:
            if self.exactly_once:
                if not self._commits_serialized:
                    assert self.app is not None
                    compat.commit_under(self.app, self._step_lock)
                    self._commits_serialized = True
                return
            if self.producer is None:
                from stream_app.kafka.clients import make_producer

                producer = make_producer(self.settings, linger_ms=2)
                await producer.start()
                self.producer = producer

    async def stop(self) -> None:
        """Deliver what the producer still holds and close it."""
        async with self._lock:
            producer, self.producer = self.producer, None
        if producer is not None:
            await producer.stop()

    async def send(self, topic: str, key: bytes | None, value: bytes | None,
                   partition: int | None = None, headers: list[tuple[str, bytes]] | None = None,
                   source: TP | None = None) -> asyncio.Future[Any]:
        """Queue one record; the returned future resolves once the broker has it. Exactly once:
        ``source`` (the input partition that caused it) picks the transaction."""
        if self.exactly_once:
            assert self.app is not None
            if source is None:
                raise ValueError(f"exactly_once: a record for {topic} without its input partition")
            return await self.app.producer.send(  # type: ignore[return-value]
                topic, key, value, partition, None, headers,
                transactional_id=compat.transactional_id(self.app, source))
        return await self.producer.send(topic, value, key=key, partition=partition, headers=headers)


@dataclass(slots=True)
class OutputRecord:
    topic: str
    key: bytes | None
    value: bytes | None  # None: a tombstone (exactly once: a state deleted in the changelog)
    received: float | None = None  # wall time (s) the triggering input reached the worker
    kafka_ts: float | None = None  # Kafka timestamp (s) of the triggering input record
    dead_letter: str | None = None  # a dead letter's reason (counted by reason once delivered)
    partition: int | None = None
    headers: list[tuple[str, bytes]] | None = None
    internal: bool = False  # a repartitioned event, not an output (not in tracker_outputs_total)
    source: TP | None = None  # the input partition whose event caused it (exactly once: its transaction)


@dataclass
class Outputs:
    """The records one step emits, delivered together by :meth:`send`."""

    records: list[OutputRecord] = field(default_factory=list)

    def add(self, record: OutputRecord) -> int:
        """Append ``record``; its index lets a later step fill in the value."""
        self.records.append(record)
        return len(self.records) - 1

    async def send(self, sender: RecordSender, app: faust.App) -> None:
        """Deliver every record, or stop the worker and raise :class:`DeliveryFailed`."""
        if not self.records:
            return
        try:
            pending = [await sender.send(r.topic, r.key, r.value, r.partition, r.headers, r.source)
                       for r in self.records]
            await asyncio.gather(*pending)
        except Exception as exc:
            failed = DeliveryFailed(
                f"delivery of {len(self.records)} records (to {sorted({r.topic for r in self.records})})"
                f" failed: {exc!r}")
            log.critical("%s. Stopping the worker without acknowledging their inputs: a restart "
                         "re-reads them from the last committed offset.", failed)
            await app.crash(failed)
            raise failed from exc
        now = time.time()
        for r in self.records:
            if r.dead_letter is not None:
                metrics.DEAD_LETTERS.labels(r.dead_letter).inc()
            if not r.internal:
                metrics.OUTPUTS.labels(r.topic).inc()
            if r.received is not None:
                metrics.PROCESSING_SECONDS.observe(now - r.received)
            if r.kafka_ts is not None:
                metrics.EVENT_TO_OUTPUT_SECONDS.observe(max(0.0, now - r.kafka_ts))
