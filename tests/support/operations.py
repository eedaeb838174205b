"""Measure restart and hand-over with real worker processes: probe events sent at a steady pace,
and the first recommendation each of them triggers, per partition of the repartitioned topic."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import orjson
from aiokafka.structs import TopicPartition

from stream_app.core.config import Settings
from stream_app.core.events import Event
from stream_app.kafka.clients import encode_event, make_consumer, make_producer
from stream_app.service.records import partition_for_user
from tests.support.streaming import WorkerProcess


def users_per_partition(settings: Settings, prefix: str = "ops-user") -> dict[int, str]:
    """One user id per partition of the repartitioned topic (and so of the state table)."""
    out: dict[int, str] = {}
    i = 0
    while len(out) < settings.partitions:
        user = f"{prefix}-{i}"
        out.setdefault(partition_for_user(user.encode(), settings.partitions), user)
        i += 1
    return out


@dataclass
class Probes:
    """Probe events, one per partition every ``every_s``, and the first output each partition gave
    for a probe sent at or after ``since`` (a monotonic time)."""

    settings: Settings
    every_s: float = 0.25
    users: dict[int, str] = field(init=False)
    sent: int = 0
    first_output: dict[int, float] = field(default_factory=dict)  # partition -> monotonic time
    outputs: dict[int, list[float]] = field(default_factory=dict)  # partition -> every output's
    _sent_at: dict[str, tuple[int, float]] = field(default_factory=dict)  # event id -> (p, time)

    def __post_init__(self) -> None:
        self.users = users_per_partition(self.settings)

    async def run(self, since: float, until: Callable[[], bool], timeout_s: float) -> None:
        """Send probes and read recommendations until ``until()`` or ``timeout_s``."""
        s = self.settings
        consumer = make_consumer(s, group_id=None)
        producer = make_producer(s, linger_ms=0)
        await consumer.start()
        await producer.start()
        try:
            tps = [TopicPartition(s.topic_recommendations, p) for p in range(s.partitions)]
            consumer.assign(tps)
            # (the embedded broker's end offsets may lie a little behind: old records are skipped
            # by their trigger ids)
            await consumer.seek_to_end(*tps)
            deadline = time.monotonic() + timeout_s
            next_probe = time.monotonic()
            while not until() and time.monotonic() < deadline:
                now = time.monotonic()
                if now >= next_probe:
                    await self._send_round(producer, now)
                    next_probe = now + self.every_s
                batch = await consumer.getmany(timeout_ms=50)
                seen = time.monotonic()
                for records in batch.values():
                    for r in records:
                        trigger = orjson.loads(r.value)["trigger"]["event_id"]
                        hit = self._sent_at.get(trigger)
                        if hit is not None and hit[1] >= since:
                            self.first_output.setdefault(hit[0], seen)
                            self.outputs.setdefault(hit[0], []).append(seen)
        finally:
            await producer.stop()
            await consumer.stop()

    async def _send_round(self, producer: object, now: float) -> None:
        ts = int(time.time() * 1000)
        futures = []
        for p, user in self.users.items():
            self.sent += 1
            event = Event(f"probe-{self.sent}", user, f"item-{self.sent % 50}", "c1", ts, "click")
            key, value = encode_event(event)
            futures.append(await producer.send(self.settings.topic_clicks, value, key=key))  # type: ignore[attr-defined]
            self._sent_at[event.event_id] = (p, now)
        await asyncio.gather(*futures)

    def seconds_after(self, t0: float) -> dict[int, float]:
        return {p: round(t - t0, 2) for p, t in sorted(self.first_output.items())}

    def all_answered(self, linger_s: float = 0.0) -> bool:
        """Every partition gave an output, the last of them ``linger_s`` ago."""
        return (len(self.first_output) == self.settings.partitions
                and time.monotonic() - max(self.first_output.values()) >= linger_s)

    def longest_gap(self, t0: float, partitions: set[int]) -> float:
        """The longest time without output on any of ``partitions`` after ``t0`` (a stall)."""
        gaps = [0.0]
        for p in partitions:
            times = [t0, *self.outputs.get(p, [])]
            gaps.extend(b - a for a, b in zip(times, times[1:], strict=False))
        return round(max(gaps), 2)


ASSIGNED = re.compile(r"Setting newly assigned partitions\s*\n(?P<table>(?:[|+].*\n)+)")


def assigned_partitions(log: str, topic: str) -> set[int] | None:
    """The partitions of ``topic`` in the newest assignment a worker logged (None: none yet)."""
    tables = ASSIGNED.findall(log)
    if not tables:
        return None
    for line in tables[-1].splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 2 and cells[0] == topic:
            return parse_partition_set(cells[1])
    return set()


def parse_partition_set(text: str) -> set[int]:
    """Faust's ``{0-2, 5}`` notation."""
    out: set[int] = set()
    for part in text.strip("{} ").split(","):
        part = part.strip()
        if not part:
            continue
        lo, _, hi = part.partition("-")
        out.update(range(int(lo), int(hi or lo) + 1))
    return out


def warm_up(settings: Settings, workers: list[WorkerProcess], timeout_s: float = 120) -> list[set[int]]:
    """Until every partition has answered a probe and the workers' newest logged assignments
    split the partitions among them (each holds some, none twice); returns those assignments."""
    deadline = time.monotonic() + timeout_s
    topic = settings.repartition_topic
    while True:
        probes = Probes(settings)
        asyncio.run(probes.run(0, probes.all_answered, max(deadline - time.monotonic(), 1)))
        held = [assigned_partitions(w.log(), topic) or set() for w in workers]
        if (len(probes.first_output) == settings.partitions and all(held)
                and sorted(p for h in held for p in h) == list(range(settings.partitions))):
            return held
        assert time.monotonic() < deadline, f"no stable assignment: {held}"
        time.sleep(1)


@dataclass
class Measured:
    """Seconds from ``t0`` (a restart or a kill) to the first output for a probe, per partition."""

    per_partition: dict[int, float]

    def first(self, partitions: set[int] | None = None) -> float:
        return min(v for p, v in self.per_partition.items() if partitions is None or p in partitions)

    def last(self, partitions: set[int] | None = None) -> float:
        return max(v for p, v in self.per_partition.items() if partitions is None or p in partitions)


def restart_to_processing(settings: Settings, logs: Path, timeout_s: float = 120) -> Measured:
    """A worker processing probes is killed with kill -9 and started again under the same app id:
    seconds from the restart to the first output for a probe sent after the kill, per partition."""
    worker = WorkerProcess(settings, logs / "before-kill.log").start()
    try:
        worker.wait_ready()
        warm_up(settings, [worker])
        time.sleep(3)  # a commit or so, as in a worker that has been running for a while
    finally:
        worker.kill()
    killed = time.monotonic()
    again = WorkerProcess(settings, logs / "restarted.log").start()
    restarted = time.monotonic()
    try:
        probes = Probes(settings)
        asyncio.run(probes.run(killed, probes.all_answered, timeout_s))
        assert again.alive, again.log()[-3000:]
    finally:
        again.stop()
    assert len(probes.first_output) == settings.partitions, (probes.first_output, again.log()[-3000:])
    return Measured(probes.seconds_after(restarted))


def hand_over(settings: Settings, logs: Path, timeout_s: float = 120) -> tuple[Measured, set[int], float]:
    """Two workers share the partitions; one is killed with kill -9: seconds from the kill to the
    first output for a probe sent after it, per partition; the dead worker's partitions; and the
    survivor's stall (the longest time without output on its own partitions)."""
    a = WorkerProcess(settings.model_copy(update={"data_dir": settings.data_dir / "a"}), logs / "a.log")
    b = WorkerProcess(settings.model_copy(update={"data_dir": settings.data_dir / "b"}), logs / "b.log")
    try:
        a.start()
        b.start()
        a.wait_ready()
        b.wait_ready()
        held_a, _ = warm_up(settings, [a, b])
        time.sleep(3)
        a.kill()
        killed = time.monotonic()
        probes = Probes(settings)
        asyncio.run(probes.run(killed, lambda: probes.all_answered(linger_s=3), timeout_s))
        assert b.alive, b.log()[-3000:]
    finally:
        a.stop()
        b.stop()
    assert len(probes.first_output) == settings.partitions, (probes.first_output, b.log()[-3000:])
    survivor = set(range(settings.partitions)) - held_a
    return Measured(probes.seconds_after(killed)), held_a, probes.longest_gap(killed, survivor)
