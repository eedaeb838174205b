"""The service's own batching producer for repartitioned events and outputs.

Faust's producer carries only the state table's changelog (on the embedded broker it is set to one
record per batch, see :mod:`stream_app.service.app`); everything else goes through here. Each agent
awaits the delivery of what a micro-batch sent before the batch's events are acknowledged, so
offsets are never committed ahead of the records they produced."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from stream_app.core.config import Settings
from stream_app.service import metrics


class RecordSender:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.producer: Any = None
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        async with self._lock:
            if self.producer is None:
                from stream_app.kafka.clients import make_producer

                producer = make_producer(self.settings, linger_ms=2)
                await producer.start()
                self.producer = producer

    async def send(self, topic: str, key: bytes | None, value: bytes, partition: int | None = None,
                   headers: list[tuple[str, bytes]] | None = None) -> asyncio.Future[Any]:
        """Queue one record; the returned future resolves once the broker has it."""
        return await self.producer.send(topic, value, key=key, partition=partition, headers=headers)


@dataclass(slots=True)
class OutputRecord:
    topic: str
    key: bytes
    value: bytes
    received: float | None = None  # wall time (s) the triggering input reached the worker
    kafka_ts: float | None = None  # Kafka timestamp (s) of the triggering input record


@dataclass
class Outputs:
    """The records one micro-batch emits, delivered together by :meth:`send`."""

    records: list[OutputRecord] = field(default_factory=list)

    def add(self, record: OutputRecord) -> int:
        """Append ``record``; its index lets a later step fill in the value."""
        self.records.append(record)
        return len(self.records) - 1

    async def send(self, sender: RecordSender) -> None:
        pending = []
        for r in self.records:
            pending.append(await sender.send(r.topic, r.key, r.value))
            metrics.OUTPUTS.labels(r.topic).inc()
        await asyncio.gather(*pending)
        now = time.time()
        for r in self.records:
            if r.received is not None:
                metrics.PROCESSING_SECONDS.observe(now - r.received)
            if r.kafka_ts is not None:
                metrics.EVENT_TO_OUTPUT_SECONDS.observe(max(0.0, now - r.kafka_ts))
