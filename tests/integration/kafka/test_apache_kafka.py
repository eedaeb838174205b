"""Apache Kafka 4.x (KRaft, three nodes from Maven jars) with the project's client, aiokafka:
replicated topics, idempotent acks=all produce, consumer groups, read_committed, a leader killed
mid-produce, transactions. Real broker processes; skipped without java/mvn unless
TRACKER_REQUIRE_KAFKA=1 (CI)."""

from __future__ import annotations

import asyncio
import signal
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from stream_app.kafka.apache import ApacheKafkaCluster

pytestmark = pytest.mark.kafka

WAIT_S = 180.0  # only ever a bound on waiting; verdicts never depend on it


@pytest.fixture
def kafka(kafka_cluster: ApacheKafkaCluster) -> ApacheKafkaCluster:
    """The session's 3-node cluster (tests/conftest.py), shared with the streaming tests."""
    return kafka_cluster


async def create_topic(url: str, name: str, partitions: int, **configs: str) -> None:
    """Create a topic with replication factor 3; return once every broker knows its leaders
    (metadata reaches the brokers a moment after the controller accepts the topic)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=url)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, partitions, 3, topic_configs=configs)])
    finally:
        await admin.close()
    async with asyncio.timeout(WAIT_S):
        for _ in url.split(","):  # a few answers in a row, from whichever brokers aiokafka asks
            while len([p for p in await describe(url, name) if p["leader"] >= 0]) < partitions:
                await asyncio.sleep(0.1)


async def describe(url: str, topic: str) -> list[dict[str, Any]]:
    admin = AIOKafkaAdminClient(bootstrap_servers=url)
    await admin.start()
    try:
        (info,) = await admin.describe_topics([topic])
        return sorted(info["partitions"], key=lambda p: p["partition"])
    finally:
        await admin.close()


async def read_to_end(url: str, topic: str, group: str | None = None,
                      isolation: str = "read_committed") -> list[Any]:
    """Every record of ``topic`` up to its end offsets (the last stable offsets for
    read_committed), through a consumer group when ``group`` is given (offsets committed)."""
    partitions = {TopicPartition(topic, p["partition"]) for p in await describe(url, topic)}
    assert partitions, f"no partitions for {topic}"
    consumer = AIOKafkaConsumer(bootstrap_servers=url, group_id=group, auto_offset_reset="earliest",
                                enable_auto_commit=False, isolation_level=isolation)
    await consumer.start()
    records: list[Any] = []
    try:
        async with asyncio.timeout(WAIT_S):
            if group:
                consumer.subscribe([topic])
                while consumer.assignment() != partitions:  # a group of one gets every partition
                    records += [r for rs in (await consumer.getmany(timeout_ms=500)).values() for r in rs]
            else:
                consumer.assign(list(partitions))
            ends = await consumer.end_offsets(list(partitions))
            while [tp for tp in partitions if await consumer.position(tp) < ends[tp]]:
                records += [r for rs in (await consumer.getmany(timeout_ms=500)).values() for r in rs]
            if group:
                await consumer.commit()
    finally:
        await consumer.stop()
    return records


def test_three_nodes_replicate_topics(kafka: ApacheKafkaCluster) -> None:
    assert len(kafka.url.split(",")) == 3 and all(kafka.pids)

    async def run() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka.url)
        await admin.start()
        try:
            cluster = await admin.describe_cluster()
            assert sorted(b["node_id"] for b in cluster["brokers"]) == [1, 2, 3]
        finally:
            await admin.close()
        await create_topic(kafka.url, "replicated", 6, **{"min.insync.replicas": "2"})
        parts = await describe(kafka.url, "replicated")
        assert len(parts) == 6
        assert all(sorted(p["replicas"]) == [1, 2, 3] for p in parts)

    asyncio.run(run())


def test_idempotent_acks_all_read_back_by_group(kafka: ApacheKafkaCluster) -> None:
    topic, n = "idempotent", 3000

    async def run() -> None:
        await create_topic(kafka.url, topic, 6, **{"min.insync.replicas": "2"})
        producer = AIOKafkaProducer(bootstrap_servers=kafka.url, acks="all", enable_idempotence=True,
                                    linger_ms=5)
        await producer.start()
        try:
            futures = [await producer.send(topic, str(i).encode(), key=f"u{i % 97}".encode())
                       for i in range(n)]
            await producer.flush()
            metas = [await f for f in futures]
        finally:
            await producer.stop()
        records = await read_to_end(kafka.url, topic, group="g-idempotent")
        assert sorted(int(r.value) for r in records) == list(range(n))  # all, each once
        # per-key order is the send order, and every record sits where its ack said
        by_key: dict[bytes, list[int]] = {}
        for r in records:
            by_key.setdefault(r.key, []).append(int(r.value))
        assert all(v == sorted(v) for v in by_key.values())
        placed = {(r.partition, r.offset): int(r.value) for r in records}
        assert all(placed[(m.partition, m.offset)] == i for i, m in enumerate(metas))
        # the group committed everything: a second read through it finds nothing new
        assert await read_to_end(kafka.url, topic, group="g-idempotent") == []

    asyncio.run(run())


def test_leader_killed_mid_produce_loses_no_acknowledged_record(kafka: ApacheKafkaCluster) -> None:
    topic, kill_after, after_kill = "leader-kill", 400, 1000

    async def run() -> int:
        await create_topic(kafka.url, topic, 1, **{"min.insync.replicas": "2"})
        (part,) = await describe(kafka.url, topic)
        leader = int(part["leader"])
        producer = AIOKafkaProducer(bootstrap_servers=kafka.url, acks="all", enable_idempotence=True,
                                    linger_ms=2, max_batch_size=4096, request_timeout_ms=60_000)
        await producer.start()
        acked: list[int] = []

        async def kill_leader() -> None:
            while len(acked) < kill_after:
                await asyncio.sleep(0.005)
            await asyncio.to_thread(kafka.kill, leader, signal.SIGKILL)

        killer = asyncio.create_task(kill_leader())
        futures: list[asyncio.Future[Any]] = []
        try:
            # pipelined sends, going on while the leader is killed and `after_kill` more after it:
            # batches are in flight and buffered when it dies, others go to a leaderless partition
            sent_after = 0
            while sent_after < after_kill:
                i = len(futures)
                future = await producer.send(topic, str(i).encode())
                future.add_done_callback(lambda f, i=i: f.exception() or acked.append(i))
                futures.append(future)
                sent_after += killer.done()
                await asyncio.sleep(0)  # let acks (and the killer) run while sending
            await asyncio.gather(*futures)  # raises if any record was not acknowledged
        finally:
            killer.cancel()
            await producer.stop()
        n = len(futures)
        assert sorted(acked) == list(range(n))
        (after,) = await describe(kafka.url, topic)
        assert after["leader"] != leader and leader not in after["isr"]
        records = await read_to_end(kafka.url, topic)
        assert [int(r.value) for r in records] == list(range(n))  # none lost or doubled, in order
        return leader

    leader = asyncio.run(run())
    kafka.restart(leader)  # the module's other tests get three nodes again

    async def wait_isr() -> None:
        async with asyncio.timeout(WAIT_S):
            while len((await describe(kafka.url, topic))[0]["isr"]) != 3:
                await asyncio.sleep(0.5)

    asyncio.run(wait_isr())


def test_transactions_commit_abort_and_offsets(kafka: ApacheKafkaCluster) -> None:
    source, sink, group = "tx-source", "tx-sink", "g-transform"

    async def run() -> None:
        await create_topic(kafka.url, source, 3, **{"min.insync.replicas": "2"})
        await create_topic(kafka.url, sink, 3, **{"min.insync.replicas": "2"})
        producer = AIOKafkaProducer(bootstrap_servers=kafka.url, transactional_id="tx-test")
        await producer.start()
        try:
            async with producer.transaction():
                for i in range(100):
                    await producer.send(source, str(i).encode(), key=str(i).encode())
            await producer.begin_transaction()
            for i in range(100, 150):
                await producer.send(source, str(i).encode(), key=str(i).encode())
            await producer.abort_transaction()
        finally:
            await producer.stop()
        committed = await read_to_end(kafka.url, source)
        assert sorted(int(r.value) for r in committed) == list(range(100))
        everything = await read_to_end(kafka.url, source, isolation="read_uncommitted")
        assert sorted(int(r.value) for r in everything) == list(range(150))

        # consume-transform-produce with the input offsets committed in the same transaction
        # (what Faust's exactly_once does)
        consumer = AIOKafkaConsumer(source, bootstrap_servers=kafka.url, group_id=group,
                                    auto_offset_reset="earliest", enable_auto_commit=False,
                                    isolation_level="read_committed")
        transform = AIOKafkaProducer(bootstrap_servers=kafka.url, transactional_id="tx-transform")
        await consumer.start()
        await transform.start()
        try:
            seen: list[int] = []
            async with asyncio.timeout(WAIT_S):
                while len(seen) < 100:
                    batch = await consumer.getmany(timeout_ms=500)
                    if not batch:
                        continue
                    async with transform.transaction():
                        for records in batch.values():
                            for r in records:
                                seen.append(int(r.value))
                                await transform.send(sink, str(int(r.value) * 2).encode(), key=r.key)
                        offsets = {tp: rs[-1].offset + 1 for tp, rs in batch.items()}
                        await transform.send_offsets_to_transaction(offsets, group)
            assert sorted(seen) == list(range(100))
        finally:
            await transform.stop()
            await consumer.stop()
        # the transactions committed the group's offsets: the group has nothing left to read
        assert await read_to_end(kafka.url, source, group=group) == []
        out = await read_to_end(kafka.url, sink)
        assert sorted(int(r.value) for r in out) == [2 * i for i in range(100)]

    asyncio.run(run())


def test_input_topics_are_created_without_time_retention(kafka: ApacheKafkaCluster) -> None:
    """Input topics hold records stamped with their event time, often long past: created by the
    tracker with time retention, Kafka deleted them unread (a paced replay lost 2-104 of 2,600
    events). Created without it; output topics keep the broker's default."""
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    from stream_app.core.config import Settings
    from stream_app.kafka.admin import create_topics

    settings = Settings(broker_url=kafka.url, broker_profile="kafka", replication_factor=3,
                        app_id="retention-check").namespaced("retention-check")

    async def retention_ms(topics: list[str]) -> dict[str, str]:
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka.url)
        await admin.start()
        try:
            answers = await admin.describe_configs(
                [ConfigResource(ConfigResourceType.TOPIC, t, {"retention.ms": None}) for t in topics])
        finally:
            await admin.close()
        return {res[3]: cfg[1] for answer in answers for res in answer.resources
                for cfg in res[4] if cfg[0] == "retention.ms"}

    async def run() -> None:
        await create_topics(settings, [*settings.event_topics(), settings.topic_recommendations])
        got = await retention_ms([*settings.event_topics(), settings.topic_recommendations])
        assert {t: got[t] for t in settings.event_topics()} == dict.fromkeys(settings.event_topics(), "-1")
        assert got[settings.topic_recommendations] == str(7 * 24 * 3600 * 1000)  # the broker's default

    asyncio.run(run())
