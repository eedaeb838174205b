"""Test helper: read whole topics back with a plain aiokafka consumer (manual assignment)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

from aiokafka.structs import TopicPartition

from stream_app.core.config import Settings
from stream_app.kafka.clients import make_consumer


async def read_topics(settings: Settings, topics: Sequence[str], expected: int | None = None,
                      timeout: float = 30.0, idle: float = 1.5,
                      isolation_level: str = "read_uncommitted") -> dict[tuple[str, int], list[Any]]:
    """(topic, partition) -> messages in offset order; stops at ``expected`` messages, or after
    ``idle`` seconds without new ones when ``expected`` is None. Fails when ``timeout`` seconds pass
    without a new message (a hold), not on the total time: a slow machine is not a failure."""
    consumer = make_consumer(settings, group_id=None, isolation_level=isolation_level)
    await consumer.start()
    try:
        deadline = time.monotonic() + timeout
        while True:  # a worker may not have created its output topics yet
            # consumer.topics() does not refresh the metadata that partitions_for_topic reads
            await consumer._client.force_metadata_update()  # noqa: SLF001
            if all(consumer.partitions_for_topic(t) for t in topics):
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"topics {list(topics)} do not exist after {timeout} s")
            await asyncio.sleep(0.5)
        tps = [TopicPartition(t, p) for t in topics for p in sorted(consumer.partitions_for_topic(t) or ())]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        out: dict[tuple[str, int], list[Any]] = {(tp.topic, tp.partition): [] for tp in tps}
        n, last = 0, time.monotonic()
        while expected is None or n < expected:
            if time.monotonic() - last > timeout:
                raise TimeoutError(f"read {n} of {expected} messages from {list(topics)}, then none "
                                   f"for {timeout} s")
            batch = await consumer.getmany(timeout_ms=200)
            for tp, msgs in batch.items():
                out[(tp.topic, tp.partition)].extend(msgs)
                n += len(msgs)
            if batch:
                last = time.monotonic()
            elif expected is None and time.monotonic() - last > idle:
                break
        return out
    finally:
        await consumer.stop()
