"""Topic administration and broker readiness, for any Kafka-protocol broker."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TypeVar

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from stream_app.core.config import Settings
from stream_app.kafka.clients import make_consumer


async def wait_until_ready(
    url: str, timeout: float = 30.0, proc: subprocess.Popen[bytes] | None = None
) -> None:
    """Wait until the broker answers a metadata request."""
    deadline = time.monotonic() + timeout
    quiet = logging.getLogger("aiokafka")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)  # "connection refused" is the expected answer for a while
    try:
        await _poll_until_ready(url, deadline, proc)
    finally:
        quiet.setLevel(level)


async def _poll_until_ready(url: str, deadline: float, proc: subprocess.Popen[bytes] | None) -> None:
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"broker process exited with code {proc.returncode}")
        admin = AIOKafkaAdminClient(bootstrap_servers=url, request_timeout_ms=3000)
        try:
            await admin.start()
            await admin.list_topics()
            return
        except Exception as exc:  # noqa: BLE001 - any failure means "not yet"
            last = exc
            await asyncio.sleep(0.2)
        finally:
            with contextlib.suppress(Exception):
                await admin.close()
    raise TimeoutError(f"broker at {url} did not answer in time: {last!r}")


# Topics whose records carry their event time as Kafka timestamp (the input topics, and what
# `replay` writes) may hold records stamped years ago: Apache Kafka's time retention compares a
# segment's newest record timestamp with the clock, so it deletes such a segment at its next check
# (minutes), read or not; a worker then finds its position out of range and skips ahead. Seen on
# 3-node Kafka: 104 of 2,600 replayed events gone before the worker read them. Created without time
# retention instead; give them your own (`retention.bytes`, or `retention.ms` once the timestamps are
# recent).
EVENT_TIME_TOPIC_CONFIG = {"retention.ms": "-1"}


T = TypeVar("T")


async def retried(call: Callable[[], Awaitable[T]], timeout_s: float = 60.0) -> T:
    """``call()``, again while it fails with a retriable Kafka error, for up to ``timeout_s``.

    aiokafka's admin client sends most requests to a random broker of its metadata: while one
    broker of a cluster is down (until the controller fences it, about 10 s on Kafka 4.x) a
    request can go to it and fail with NodeNotReadyError although the cluster would answer."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return await call()
        except KafkaError as exc:
            if not exc.retriable or time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


async def create_topics(
    settings: Settings, topics: Iterable[str], partitions: int | None = None,
    event_time_stamped: Iterable[str] = (),
) -> list[str]:
    """Create the topics that do not exist yet; return the ones created. The input topics, and
    ``event_time_stamped``, get :data:`EVENT_TIME_TOPIC_CONFIG`."""
    keep = {*settings.event_topics(), *event_time_stamped}
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.bootstrap_servers(), **settings.kafka_client_kwargs()
    )
    await admin.start()
    try:
        existing = set(await retried(admin.list_topics))
        new = [
            NewTopic(t, partitions or settings.partitions, settings.replication_factor,
                     topic_configs=EVENT_TIME_TOPIC_CONFIG if t in keep else None)
            for t in dict.fromkeys(topics)
            if t not in existing
        ]
        if new:
            with contextlib.suppress(TopicAlreadyExistsError):
                await retried(lambda: admin.create_topics(new))
        return [t.name for t in new]
    finally:
        await admin.close()


async def partition_counts(settings: Settings, topics: Iterable[str]) -> dict[str, int]:
    """Partitions per existing topic (absent topics are left out), from the admin client's
    DescribeTopics: a fresh answer from the cluster. (A consumer's ``partitions_for_topic`` reads
    its metadata cache, which holds no unsubscribed topics on Apache Kafka 4.x.)"""
    wanted = list(dict.fromkeys(topics))
    if not wanted:
        return {}
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.bootstrap_servers(), **settings.kafka_client_kwargs()
    )
    await admin.start()
    try:
        # only existing topics are described: a metadata request naming a topic lets the broker
        # auto-create it (aiokafka asks with allow_auto_topic_creation=True)
        existing = set(await retried(admin.list_topics))
        wanted = [t for t in wanted if t in existing]
        described = await retried(lambda: admin.describe_topics(wanted)) if wanted else []
    finally:
        await admin.close()
    return {
        info["topic"]: len(info["partitions"])
        for info in described
        if info.get("error_code", 0) == 0 and info.get("partitions")
    }


async def group_lag(settings: Settings, topics: Iterable[str]) -> int:
    """Records of ``topics`` past the consumer group's (``settings.app_id``) committed offsets: 0
    once the group has applied everything the broker holds, whatever the machine's speed."""
    counts = await partition_counts(settings, topics)
    tps = [TopicPartition(t, p) for t, n in counts.items() for p in range(n)]
    if not tps:
        return 0
    consumer = make_consumer(settings)
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.bootstrap_servers(), **settings.kafka_client_kwargs()
    )
    await consumer.start()
    await admin.start()
    try:
        ends = await consumer.end_offsets(tps)
        if settings.broker_profile == "embedded":
            ends = await true_end_offsets(settings.bootstrap_servers(), ends)
        committed = await admin.list_consumer_group_offsets(settings.app_id, partitions=tps)
    finally:
        await admin.close()
        await consumer.stop()
    done = {tp: meta.offset for tp, meta in committed.items() if meta is not None and meta.offset >= 0}
    return sum(max(0, end - done.get(tp, 0)) for tp, end in ends.items())


async def true_end_offsets(bootstrap_servers: list[str], reported: Mapping[TopicPartition, int],
                           timeout_s: float = 60) -> dict[TopicPartition, int]:
    """Each partition's end offset (last offset + 1) from the embedded broker's ``reported`` ones.

    Tansu answers ListOffsets(latest) with the base offset of a partition's last record batch + 1,
    not its last offset + 1 (GUIDE: 1,000 records in one batch give 1). A fetch from that base
    offset returns the whole batch (and any written since), so its last record's offset + 1 is the
    end. Partitions reported empty (0) stay 0."""
    ends = dict(reported)
    pending = {tp: end for tp, end in reported.items() if end > 0}
    if not pending:
        return ends
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, enable_auto_commit=False,
                                group_id=None)
    await consumer.start()
    try:
        consumer.assign(list(pending))
        for tp, end in pending.items():
            consumer.seek(tp, end - 1)
        deadline = asyncio.get_running_loop().time() + timeout_s
        while pending:
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"no record at the reported end - 1 of {sorted(pending)}")
            for tp, records in (await consumer.getmany(*pending, timeout_ms=500)).items():
                if records:
                    ends[tp] = max(records[-1].offset + 1, pending.pop(tp))
    finally:
        await consumer.stop()
    return ends
