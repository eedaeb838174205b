"""The embedded broker's end offsets: what ListOffsets reports for batched records, and the true ends
that Faust's table recovery reads to on that broker (``compat.fetched_highwaters``) and that
``admin.group_lag`` counts from. A real Tansu process; the tables rebuilt from batched changelogs
are checked by the kill -9 tests."""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from stream_app.core.config import Settings
from stream_app.kafka.admin import create_topics, group_lag, true_end_offsets


async def _produce(url: str, topic: str) -> None:
    """Partition 0: 1,000 records in as few batches as the producer makes (it is given the time);
    partition 1: 3 records, one request each; partition 2: none."""
    producer = AIOKafkaProducer(bootstrap_servers=url, linger_ms=200, max_batch_size=1 << 20)
    await producer.start()
    try:
        sent = [await producer.send(topic, b"x" * 100, partition=0) for _ in range(1_000)]
        await asyncio.gather(*sent)
        for _ in range(3):
            await producer.send_and_wait(topic, b"y", partition=1)
    finally:
        await producer.stop()


async def _ends(url: str, tps: list[TopicPartition]) -> tuple[dict[TopicPartition, int], ...]:
    consumer = AIOKafkaConsumer(bootstrap_servers=url, enable_auto_commit=False)
    await consumer.start()
    try:
        reported = await consumer.end_offsets(tps)
    finally:
        await consumer.stop()
    return reported, await true_end_offsets([url], reported)


def test_true_end_offsets_of_batched_records(tansu_url: str, unique_id: str) -> None:
    topic = f"{unique_id}-ends"
    settings = Settings(broker_url=tansu_url, app_id=f"{unique_id}-group")
    asyncio.run(create_topics(settings, [topic], partitions=3))
    asyncio.run(_produce(tansu_url, topic))
    tps = [TopicPartition(topic, p) for p in range(3)]
    reported, true = asyncio.run(_ends(tansu_url, tps))
    # the broker's bug (GUIDE): the last batch's base offset + 1. If this starts to fail, Tansu
    # reports end offsets right and compat.fetched_highwaters' correction can go.
    assert reported[tps[0]] < 1_000
    assert reported[tps[1]] == 3 and reported[tps[2]] == 0
    assert true == {tps[0]: 1_000, tps[1]: 3, tps[2]: 0}
    # a group that has committed nothing lags by every record, not by the reported ends
    assert asyncio.run(group_lag(settings, [topic])) == 1_003
