"""``record``: Kafka topics -> a recording file."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from stream_app.core.config import Settings
from stream_app.tools.recording.format import RecordedRecord, RecordingError
from stream_app.tools.recording.writer import RecordingWriter

log = logging.getLogger(__name__)


@dataclass
class RecordSummary:
    path: Path
    records: int
    status: str  # complete | interrupted
    per_topic: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def line(self) -> str:
        topics = ", ".join(f"{t}: {n}" for t, n in self.per_topic.items())
        return (f"recorded {self.records} records ({topics}) to {self.path} in {self.seconds:.1f} s; "
                f"{self.status}")


async def record(
    settings: Settings, topics: Sequence[str], path: str | Path, *, from_ts: int | None = None,
    from_offset: int | None = None, to_ts: int | None = None, idle_s: float = 2.0,
    progress: bool = False, max_records: int | None = None,
) -> RecordSummary:
    """Consume ``topics`` (all partitions) into a recording at ``path``.

    Start: the earliest offset, ``from_offset`` (every partition), or the first record whose
    timestamp is >= ``from_ts`` (earlier ones are skipped). Records with timestamp >= ``to_ts`` are
    excluded and end their partition. Without ``to_ts`` the recording goes "to now": a partition is
    done once it has reached the end offset seen at start and either the profile is ``kafka``
    (exact end offsets) or nothing new arrived for ``idle_s`` seconds; a record stamped after the
    start of the recording, past that end offset, also ends its partition (live topics). The
    embedded broker understates end offsets (GUIDE: ListOffsets bug), hence the idle rule there.
    Cancellation (Ctrl-C, SIGTERM) closes the file with status ``interrupted``.
    """
    from aiokafka.structs import TopicPartition

    from stream_app.kafka.admin import partition_counts
    from stream_app.kafka.clients import make_consumer

    started = time.monotonic()
    now_ms = int(time.time() * 1000)
    consumer = make_consumer(settings, group_id=None, max_partition_fetch_bytes=4 << 20)
    await consumer.start()
    writer: RecordingWriter | None = None
    status = "interrupted"
    per_topic: dict[str, int] = dict.fromkeys(topics, 0)
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    if task is not None:  # SIGTERM ends the recording like Ctrl-C: a trailer saying "interrupted"
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGTERM, task.cancel)
    bar = None
    try:
        # from the admin client: a consumer without subscriptions has no topics in its metadata
        # cache on Apache Kafka 4.x (partitions_for_topic stays None, see docs/apache-kafka.md)
        counts = await partition_counts(settings, topics)
        partitions: dict[str, int] = {}
        for t in topics:
            if not counts.get(t):
                raise RecordingError(f"topic {t!r} does not exist")
            partitions[t] = counts[t]
        tps = [TopicPartition(t, p) for t in topics for p in range(partitions[t])]
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        begins = await consumer.beginning_offsets(tps)
        next_off: dict[TopicPartition, int] = {}
        for tp in tps:
            if from_offset is not None:
                start = max(from_offset, begins[tp])
            elif from_ts is not None and settings.broker_profile == "kafka":
                found = (await consumer.offsets_for_times({tp: from_ts}))[tp]
                start = found.offset if found else ends[tp]
            else:  # the embedded broker's offsets_for_times is wrong: scan and filter instead
                start = begins[tp]
            consumer.seek(tp, start)
            next_off[tp] = start
        event_topics = {t: v for t, v in settings.event_topics().items() if t in partitions}
        meta = {
            "broker": settings.broker_url, "from_ts": from_ts, "from_offset": from_offset,
            "to_ts": to_ts, "started_at_ms": now_ms,
        }
        writer = RecordingWriter(path, topics, partitions=partitions, event_topics=event_topics, meta=meta)
        if progress:
            from tqdm import tqdm

            bar = tqdm(unit=" rec", desc="record", mininterval=0.5)
        done: set[TopicPartition] = set()
        last_arrival = time.monotonic()

        def finish(tp: TopicPartition) -> None:
            done.add(tp)
            consumer.pause(tp)

        while len(done) < len(tps):
            for tp in tps:
                if tp not in done and next_off[tp] >= ends[tp] and settings.broker_profile == "kafka":
                    finish(tp)
            if len(done) == len(tps):
                break
            batch = await consumer.getmany(timeout_ms=200, max_records=5000)
            n_before = writer.count
            for tp, msgs in batch.items():
                for m in msgs:
                    if tp in done:
                        break
                    next_off[tp] = m.offset + 1
                    if to_ts is not None and m.timestamp >= to_ts:
                        finish(tp)
                        break
                    if to_ts is None and m.offset >= ends[tp] and m.timestamp > now_ms:
                        finish(tp)  # produced after the recording started
                        break
                    if from_ts is not None and m.timestamp < from_ts:
                        continue
                    writer.write(RecordedRecord(
                        m.topic, m.partition, m.offset, m.timestamp, m.timestamp_type, m.key, m.value,
                        tuple(m.headers or ()),
                    ))
                    per_topic[m.topic] += 1
                    if max_records is not None and writer.count >= max_records:
                        done.update(tps)
                        break
            if batch:
                last_arrival = time.monotonic()
            if bar is not None:
                bar.update(writer.count - n_before)
            if (not batch and time.monotonic() - last_arrival >= idle_s
                    and all(next_off[tp] >= ends[tp] for tp in tps if tp not in done)):
                break
            writer.maybe_flush()
        status = "complete"
    except asyncio.CancelledError:
        if writer is None:
            raise
        status = "interrupted"  # the file is closed below with a trailer saying so
    finally:
        if bar is not None:
            bar.close()
        if writer is not None:
            writer.close(status)
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.remove_signal_handler(signal.SIGTERM)
        await consumer.stop()
    return RecordSummary(Path(path), writer.count, status, per_topic, time.monotonic() - started)
