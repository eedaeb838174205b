"""Helpers for tests of the streaming path: real worker processes, real topics, real RocksDB."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson
from aiokafka.structs import ConsumerRecord
from rocksdict import AccessType, Rdict

from stream_app.core.config import Settings
from stream_app.core.events import Event
from stream_app.core.state import UserState
from stream_app.kafka.admin import create_topics
from stream_app.kafka.clients import encode_event, make_producer
from stream_app.service.process import spawn_worker
from tests.support.topic_reader import read_topics


class WorkerProcess:
    """``interest-tracker worker`` as a child process, logging to a file."""

    def __init__(self, settings: Settings, log_path: Path):
        self.settings, self.log_path = settings, log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        self.proc = spawn_worker(self.settings, self.log_path)
        return self

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """kill -9: no shutdown, no final commit."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self, timeout: float = 30) -> None:
        if self.alive:
            assert self.proc is not None
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 90) -> None:
        """Until the worker logs that it is ready (assigned, recovered, agents running)."""
        deadline = time.monotonic() + timeout
        while "[^Worker]: Ready" not in self.log():
            assert time.monotonic() < deadline and self.alive, self.log()[-3000:]
            time.sleep(0.5)


def holds_partitions(worker: WorkerProcess, topic: str) -> bool:
    """Whether the worker's latest assignment (Faust's "Setting newly assigned partitions" table
    in its log) gives it partitions of ``topic``."""
    blocks = worker.log().split("Setting newly assigned partitions")
    return len(blocks) > 1 and f"| {topic} " in blocks[-1].split("Executing _on_partitions_assigned")[0]


def wait_until_group_splits(workers: list[WorkerProcess], timeout: float = 180) -> None:
    """Until every worker's latest assignment holds partitions of the repartition topic (whose
    partitions are the state table's). Apache Kafka with ``group.initial.rebalance.delay.ms=0``
    forms the group with whoever joins first: a test about a split must wait for the generation
    that includes all workers instead of assuming the first one does. (From the workers' logs:
    the embedded broker's DescribeGroups answer differs from Kafka's.)"""
    deadline = time.monotonic() + timeout
    while not all(holds_partitions(w, w.settings.repartition_topic) for w in workers):
        assert time.monotonic() < deadline and all(w.alive for w in workers), \
            [w.log()[-2000:] for w in workers]
        time.sleep(0.5)


async def produce(settings: Settings, events: Iterable[Event],
                  raw: Iterable[tuple[str, bytes | None, bytes | None]] = ()) -> int:
    """Send events to their input topics (keyed by user), then raw (topic, key, value) records.

    On a replicated cluster the three topics' partitions have different leaders, and a record
    becomes readable only once its followers have it: records sent together to two topics can
    become visible in either order, and the worker would merge them so (the limit in
    :mod:`stream_app.core.alignment`). There each switch of topic waits until what was sent before
    is acknowledged by all replicas, so the events become readable in the order given."""
    raw = list(raw)
    # as the worker does at its start (the brokers do not auto-create topics): a test may send
    # before its worker has started
    await create_topics(settings, [*settings.topics_to_create(), *(t for t, _, _ in raw)])
    producer = make_producer(settings)
    await producer.start()
    in_visible_order = settings.replication_factor > 1
    pending: list[asyncio.Future] = []
    last_topic = None
    n = 0
    try:
        for event in events:
            key, value = encode_event(event)
            topic = settings.topic_of(event.type)
            if in_visible_order and topic != last_topic and pending:
                await asyncio.gather(*pending)
                pending.clear()
            pending.append(await producer.send(topic, value=value, key=key))
            last_topic = topic
            n += 1
        for topic, key, value in raw:
            await producer.send(topic, value=value, key=key)
        await producer.flush()
    finally:
        await producer.stop()
    return n


async def read_topic(settings: Settings, topic: str, *, expect: int | None = None,
                     idle_s: float = 5.0, timeout_s: float = 120.0) -> list[ConsumerRecord]:
    """All records of ``topic`` from the start (partition by partition, offset order), until
    ``expect`` arrived or, without ``expect``, until nothing new came for ``idle_s``. The embedded
    broker's end offsets are unreliable, so this never relies on them."""
    parts = await read_topics(settings, [topic], expected=expect, timeout=timeout_s, idle=idle_s)
    return [r for _, records in sorted(parts.items()) for r in records]


def json_values(records: list[ConsumerRecord]) -> list[dict]:
    return [orjson.loads(r.value) for r in records]


def latest_by_key(records: list[ConsumerRecord]) -> dict[bytes, ConsumerRecord]:
    """Last record per key in offset order within each partition (a compacted view)."""
    out: dict[bytes, ConsumerRecord] = {}
    for r in sorted(records, key=lambda r: (r.partition, r.offset)):
        out[r.key] = r
    return out


def local_states(settings: Settings) -> dict[bytes, UserState]:
    """The user states in a stopped worker's local RocksDB files."""
    tables = settings.data_dir / settings.app_id / "v1" / "tables"
    states: dict[bytes, UserState] = {}
    for db_path in sorted(tables.glob("user-state-*.db")):
        db = Rdict(str(db_path), access_type=AccessType.read_only())
        try:
            for key, value in db.items():
                if isinstance(key, bytes) and not key.startswith(b"__faust"):
                    states[key] = UserState.decode(value)
        finally:
            db.close()
    return states


async def produce_mixed(settings: Settings, topic: str, n: int, ts0: int = 1_600_000_000_000) -> None:
    """``n`` records of every shape a recording must keep: null and binary keys/values, headers."""
    await create_topics(settings, [topic], 4)
    producer = make_producer(settings)
    await producer.start()
    try:
        futs = []
        for i in range(n):
            key = None if i % 17 == 0 else f"user-{i % 50}".encode()
            # (aiokafka cannot send a record without both key and value)
            value = None if i % 101 == 0 and key else bytes([i % 256]) * (i % 40) + f"|{i}".encode()
            headers = [("trace", f"t{i}".encode()), ("empty", b"")] if i % 3 else None
            futs.append(await producer.send(topic, value, key=key, headers=headers, timestamp_ms=ts0 + i,
                                            partition=None if key else i % 4))
        await asyncio.gather(*futs)
    finally:
        await producer.stop()


def values_by_user(settings: Settings, topic: str, expected: int | None = None, timeout: float = 120,
                   idle: float = 3.0) -> dict[bytes, list[dict[str, Any]]]:
    """An output topic's JSON values per key (offset order within the key's partition), with the
    wall-clock stamps dropped and a trigger's topic reduced to its role (``clicks``, ...)."""
    parts = asyncio.run(read_topics(settings, [topic], expected=expected, timeout=timeout, idle=idle))
    out: dict[bytes, list[dict[str, Any]]] = defaultdict(list)
    for msgs in parts.values():
        for m in msgs:
            v = orjson.loads(m.value)
            v.pop("emitted_at", None)
            v.pop("dead_lettered_at", None)
            if "trigger" in v:  # the run's own topic name -> the input's role
                v["trigger"]["topic"] = v["trigger"]["topic"].rsplit("-", 1)[1]
            out[m.key].append(v)
    return dict(out)
