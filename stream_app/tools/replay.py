"""Replay a recording into Kafka: same or renamed topics, original keys, per-partition order.

Order: records are sent in file order, which is each partition's offset order, through one
producer that has at most one batch in flight per partition; so every partition's order, and
with it every key's, is kept. A live replay (``speed`` or ``rate`` given) also waits for every
record sent to be acknowledged before it sends one with a later timestamp: on Apache Kafka with
replicas a record can be read only once every in-sync replica has it, so without the wait a later
event on one partition could become readable before an earlier one on another, and the worker's
event-time merge (which can only order what is readable) would see them in that order. A backfill
(neither given) sends freely; the worker reads it after the fact.

Partitioning (``auto`` by default): a record goes to its recorded partition when the target topic
has as many partitions as the recorded one (identical layout, null keys included); otherwise it
is placed by key with the producer's default partitioner (``key``); ``original`` insists on the
recorded partition and fails if the target has too few.

Pace: ``speed=None`` sends as fast as the producer takes records; ``speed=s`` sends a record once
``(ts - ts_first) / s`` has passed on the wall clock, where ``ts`` is the largest record timestamp
seen so far (a record stamped earlier than one already sent goes out at once, so file order is
never changed for pacing). ``rate`` additionally caps records/s.

Shifting (``shift_ms``, or ``shift_to_now``: the earliest record timestamp lands on the replay's
start time): every record's Kafka timestamp moves by the offset, and so does the ``ts`` field of
values on the recording's input-event topics (JSON objects with an integer ``ts``; such a value is
re-serialised compactly, its other fields unchanged). Other values are sent byte for byte. Event
ids are never changed, so replaying into a worker that has already seen the events is a no-op
(the worker applies an event id once).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import orjson

from stream_app.core.config import Settings
from stream_app.tools.loading import BAR_EVERY, PendingSends, RateLimiter, progress_bar
from stream_app.tools.recording import RecordedRecord, RecordingReader

Partitioning = Literal["auto", "original", "key"]


@dataclass
class ReplayOptions:
    speed: float | None = None  # None: as fast as possible; 1.0: original pace; 10: ten times faster
    rate: float | None = None  # cap, records/s
    rename: dict[str, str] = field(default_factory=dict)  # recorded topic -> target topic
    topics: list[str] | None = None  # recorded topics to replay (default: all)
    shift_ms: int = 0
    shift_to_now: bool = False
    partitioning: Partitioning = "auto"
    limit: int | None = None
    progress: bool = False

    def __post_init__(self) -> None:
        if self.speed is not None and self.speed <= 0:
            raise ValueError("speed must be > 0 (None for as fast as possible)")


@dataclass
class ReplaySummary:
    path: Path
    sent: int = 0
    per_topic: dict[str, int] = field(default_factory=dict)  # target topic -> records
    seconds: float = 0.0
    shift_ms: int = 0
    recording_status: str = ""
    interrupted: bool = False

    @property
    def rate(self) -> float:
        return self.sent / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        topics = ", ".join(f"{t}: {n}" for t, n in self.per_topic.items())
        shift = f", timestamps shifted by {self.shift_ms} ms" if self.shift_ms else ""
        tail = "; interrupted" if self.interrupted else ""
        return (f"replayed {self.sent} records ({topics}) in {self.seconds:.1f} s ({self.rate:,.0f}/s)"
                f"{shift}; recording {self.recording_status}{tail}")


class _Pacer:
    """Sleeps so that event time advances ``speed`` times faster than the wall clock."""

    def __init__(self, speed: float | None):
        self.speed = speed
        self.ts0: int | None = None
        self.max_ts = 0
        self.wall0 = 0.0

    async def wait(self, ts: int) -> None:
        if self.speed is None:
            return
        if self.ts0 is None:
            self.ts0, self.max_ts, self.wall0 = ts, ts, time.monotonic()
            return
        if ts <= self.max_ts:
            return
        self.max_ts = ts
        ahead = self.wall0 + (ts - self.ts0) / 1000 / self.speed - time.monotonic()
        if ahead > 0.005:
            await asyncio.sleep(ahead)


def shift_value(value: bytes | None, shift_ms: int) -> bytes | None:
    """An input-event value with its ``ts`` moved by ``shift_ms``; anything else unchanged."""
    if value is None or not shift_ms:
        return value
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError:
        return value
    if not isinstance(obj, dict) or type(obj.get("ts")) is not int:
        return value
    obj["ts"] += shift_ms
    return orjson.dumps(obj)


async def replay(settings: Settings, path: str | Path, options: ReplayOptions | None = None) -> ReplaySummary:
    """Produce the records of a recording (see the module doc for order, pace and shifting)."""
    from stream_app.kafka.admin import create_topics
    from stream_app.kafka.clients import make_producer

    opts = options or ReplayOptions()
    reader = RecordingReader(path)
    header = reader.header
    wanted = set(opts.topics or reader.topics)
    unknown = wanted - set(reader.topics)
    if unknown:
        reader.close()
        raise ValueError(f"topics not in the recording: {sorted(unknown)}")
    target = {t: opts.rename.get(t, t) for t in reader.topics if t in wanted}
    rec_parts: dict[str, int] = header.get("partitions", {})
    event_topics = set(header.get("event_topics", {}))
    for src, dst in target.items():
        await create_topics(settings, [dst], rec_parts.get(src) or settings.partitions,
                            event_time_stamped=[dst])

    records: Iterator[RecordedRecord] = (r for r in reader if r.topic in wanted)
    first = next(records, None)
    shift = opts.shift_ms
    if opts.shift_to_now and first is not None:
        shift = int(time.time() * 1000) - _earliest(path, wanted)

    producer = make_producer(settings)
    await producer.start()
    summary = ReplaySummary(Path(path), per_topic=dict.fromkeys(target.values(), 0), shift_ms=shift)
    try:
        keep_partition: dict[str, bool] = {}
        for src, dst in target.items():
            n = len(await producer.partitions_for(dst))
            keep_partition[src] = opts.partitioning == "original" or (
                opts.partitioning == "auto" and n == rec_parts.get(src))
            if opts.partitioning == "original" and n < rec_parts.get(src, 0):
                raise ValueError(f"{dst} has {n} partitions, the recording of {src} {rec_parts[src]}")
        total = (reader.trailer or {}).get("records") if opts.topics is None else None
        bar = progress_bar(opts.progress, "replay", total, unit=" rec")
        pacer, limiter, pending = _Pacer(opts.speed), RateLimiter(opts.rate), PendingSends()
        started = time.monotonic()
        live, last_ts = opts.speed is not None or opts.rate is not None, -1
        try:
            stream = records if first is None else _chain(first, records)
            for rec in stream:
                if opts.limit is not None and summary.sent >= opts.limit:
                    break
                if live and rec.timestamp > last_ts:
                    # Readable in event-time order: on a replicated cluster a record is readable
                    # only once acknowledged by every in-sync replica, so a later record's batch
                    # could otherwise become readable first (module docstring, "Order")
                    await pending.settle()
                last_ts = max(last_ts, rec.timestamp)
                await pacer.wait(rec.timestamp)
                dst = target[rec.topic]
                value = shift_value(rec.value, shift) if rec.topic in event_topics else rec.value
                partition = rec.partition if keep_partition[rec.topic] else None
                ts = rec.timestamp + shift if rec.timestamp >= 0 else None
                await pending.add(await producer.send(
                    dst, value, key=rec.key, partition=partition, timestamp_ms=ts,
                    headers=list(rec.headers) or None,
                ))
                summary.sent += 1
                summary.per_topic[dst] += 1
                if bar is not None and summary.sent % BAR_EVERY == 0:
                    bar.update(BAR_EVERY)
                await limiter.tick()
            await pending.settle()
        except asyncio.CancelledError:
            summary.interrupted = True
            await pending.settle()
        finally:
            summary.seconds = time.monotonic() - started
            if bar is not None:
                bar.update(summary.sent % BAR_EVERY)
                bar.close()
    finally:
        await producer.stop()
        reader.close()
    if opts.limit is None and not summary.interrupted:
        summary.recording_status = reader.status()
    else:
        summary.recording_status = f"read in part ({reader.records} records so far)"
    return summary


def _earliest(path: str | Path, wanted: set[str]) -> int:
    """The smallest record timestamp of the replayed topics (a first pass: the trailer is at the
    end of the file, and a cut file has none)."""
    earliest: int | None = None
    with RecordingReader(path) as first_pass:
        for r in first_pass:
            if r.topic in wanted and r.timestamp >= 0 and (earliest is None or r.timestamp < earliest):
                earliest = r.timestamp
    return earliest if earliest is not None else int(time.time() * 1000)


def _chain(first: RecordedRecord, rest: Iterator[RecordedRecord]) -> Iterator[RecordedRecord]:
    yield first
    yield from rest
