"""Recording files: Kafka records (topic, partition, offset, key, value, headers, timestamp) on disk.

Format (version 1). The file is one zstd stream (``zstdcat`` reads it); decompressed, it is a
sequence of frames ``kind (1 byte) | length (u32 LE) | crc32 of payload (u32 LE) | payload``:

- ``H``: header, JSON: format, version, created_at, topics (index -> name), partitions per topic,
  event_topics (recorded topic -> input event type), the from/to spec and the broker;
- ``R``: one record, binary (see ``_RECORD``): topic index, partition, offset, timestamp,
  timestamp type, key, value, headers (lengths of -1 mean null);
- ``T``: trailer, JSON, written on close: status (``complete``/``interrupted``), record count,
  per-partition offset ranges, first/last timestamps.

The writer flushes a zstd block at least every second, so a process killed mid-write leaves a
file whose flushed part decodes; the reader returns every whole record it finds and reports the
file as partial ("cut": no trailer, "interrupted": stopped before the end spec) instead of raising.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import signal
import struct
import time
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson
import zstandard

from stream_app.config import Settings
from stream_app.events import Event, EventType, Rejection, parse_event

log = logging.getLogger(__name__)

FORMAT = "interest-tracker-recording"
VERSION = 1
_FRAME = struct.Struct("<cII")  # kind, payload length, crc32
_RECORD = struct.Struct("<HIqqb")  # topic index, partition, offset, timestamp, timestamp type
_LEN = struct.Struct("<i")
_NAME_LEN = struct.Struct("<H")
FLUSH_EVERY_S = 1.0  # a killed recorder loses at most this much, or FLUSH_EVERY_RECORDS records
FLUSH_EVERY_RECORDS = 5000

Headers = tuple[tuple[str, bytes | None], ...]


class RecordingError(Exception):
    """The file is not a recording (or its header is unreadable)."""


@dataclass(slots=True, frozen=True)
class RecordedRecord:
    topic: str
    partition: int
    offset: int
    timestamp: int  # epoch ms
    timestamp_type: int  # 0 CreateTime, 1 LogAppendTime
    key: bytes | None
    value: bytes | None
    headers: Headers = ()


def parse_time(text: str) -> int:
    """Epoch ms from ``1700000000000`` (ms), ``1700000000`` (s) or ISO 8601 (UTC if no zone)."""
    text = text.strip()
    if text.lstrip("-").isdigit():
        n = int(text)
        return n if abs(n) >= 10**11 else n * 1000
    if text == "now":
        return int(time.time() * 1000)
    t = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.UTC)
    return int(t.timestamp() * 1000)


def _iso(ms: int | None) -> str | None:
    return None if ms is None else dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat()


# --- writing ---------------------------------------------------------------------------------


@dataclass
class _PartitionStats:
    first_offset: int
    last_offset: int
    count: int = 0


class RecordingWriter:
    """Append records to a new recording file; ``close(status)`` writes the trailer."""

    def __init__(self, path: str | Path, topics: Sequence[str], *, partitions: dict[str, int] | None = None,
                 event_topics: dict[str, str] | None = None, meta: dict[str, Any] | None = None,
                 level: int = 3):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.topics = list(topics)
        self._index = {t: i for i, t in enumerate(self.topics)}
        self._file: IO[bytes] = open(self.path, "wb")  # noqa: SIM115 - closed in close()
        compressor = zstandard.ZstdCompressor(level=level, write_checksum=True)
        self._zw = compressor.stream_writer(self._file, closefd=False)
        self.count = 0
        self.first_ts: int | None = None
        self.last_ts: int | None = None
        self.min_ts: int | None = None
        self.max_ts: int | None = None
        self.stats: dict[tuple[str, int], _PartitionStats] = {}
        self._last_flush = time.monotonic()
        self._flushed_count = 0
        self.closed = False
        self.header = {
            "format": FORMAT, "version": VERSION,
            "created_at": dt.datetime.now(dt.UTC).isoformat(),
            "topics": self.topics, "partitions": partitions or {},
            "event_topics": event_topics or {}, **(meta or {}),
        }
        self._frame(b"H", orjson.dumps(self.header))
        self.flush()

    def _frame(self, kind: bytes, payload: bytes) -> None:
        self._zw.write(_FRAME.pack(kind, len(payload), zlib.crc32(payload)))
        self._zw.write(payload)

    def write(self, r: RecordedRecord) -> None:
        parts = [_RECORD.pack(self._index[r.topic], r.partition, r.offset, r.timestamp, r.timestamp_type)]
        for b in (r.key, r.value):
            parts.append(_LEN.pack(-1 if b is None else len(b)))
            if b:
                parts.append(b)
        parts.append(_NAME_LEN.pack(len(r.headers)))
        for name, hv in r.headers:
            nb = name.encode()
            parts += [_NAME_LEN.pack(len(nb)), nb, _LEN.pack(-1 if hv is None else len(hv))]
            if hv:
                parts.append(hv)
        self._frame(b"R", b"".join(parts))
        self.count += 1
        ts = r.timestamp
        if self.min_ts is None or self.max_ts is None:
            self.first_ts = self.min_ts = self.max_ts = ts
        else:
            self.min_ts, self.max_ts = min(self.min_ts, ts), max(self.max_ts, ts)
        self.last_ts = ts
        st = self.stats.get((r.topic, r.partition))
        if st is None:
            st = self.stats[(r.topic, r.partition)] = _PartitionStats(r.offset, r.offset)
        st.last_offset = r.offset
        st.count += 1
        self.maybe_flush()

    def maybe_flush(self) -> None:
        if (self.count - self._flushed_count >= FLUSH_EVERY_RECORDS
                or time.monotonic() - self._last_flush >= FLUSH_EVERY_S):
            self.flush()

    def flush(self) -> None:
        """Make everything written so far decodable from disk (a zstd block boundary)."""
        self._zw.flush(zstandard.FLUSH_BLOCK)
        self._file.flush()
        self._last_flush = time.monotonic()
        self._flushed_count = self.count

    def trailer(self, status: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        parts: dict[str, dict[str, list[int]]] = {}
        for (topic, p), st in sorted(self.stats.items()):
            parts.setdefault(topic, {})[str(p)] = [st.first_offset, st.last_offset, st.count]
        return {
            "status": status, "records": self.count, "offsets": parts,
            "first_ts": self.first_ts, "last_ts": self.last_ts, "min_ts": self.min_ts,
            "max_ts": self.max_ts, "closed_at": dt.datetime.now(dt.UTC).isoformat(), **(extra or {}),
        }

    def close(self, status: str = "complete", extra: dict[str, Any] | None = None) -> None:
        if self.closed:
            return
        self.closed = True
        self._frame(b"T", orjson.dumps(self.trailer(status, extra)))
        self._zw.close()  # ends the zstd frame (with its checksum)
        self._file.close()

    def __enter__(self) -> RecordingWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        self.close("complete" if exc_type is None else "interrupted")


# --- reading ---------------------------------------------------------------------------------


class RecordingReader:
    """Iterate a recording's records; a cut or damaged file yields what it holds and says so.

    ``reader.header`` is read on open; ``trailer``, ``records``, ``cut`` and ``damage`` are final once
    iteration has finished. ``status()`` describes the file in one line.
    """

    CHUNK = 1 << 20

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._file: IO[bytes] = open(self.path, "rb")  # noqa: SIM115 - closed in close()
        self._zd = zstandard.ZstdDecompressor().decompressobj()
        self._buf = bytearray()
        self._pos = 0
        self._eof = False
        self.trailer: dict[str, Any] | None = None
        self.records = 0
        self.cut = False
        self.damage: str | None = None
        try:
            frame = self._next_frame()
        except zstandard.ZstdError as exc:
            self.close()
            raise RecordingError(f"{path}: not a zstd recording ({exc})") from exc
        if frame is None or frame[0] != b"H":
            self.close()
            raise RecordingError(f"{path}: no recording header")
        try:
            self.header: dict[str, Any] = orjson.loads(frame[1])
        except orjson.JSONDecodeError as exc:
            self.close()
            raise RecordingError(f"{path}: unreadable header") from exc
        if self.header.get("format") != FORMAT or self.header.get("version") != VERSION:
            raise RecordingError(f"{path}: unsupported format {self.header.get('format')!r} "
                                 f"version {self.header.get('version')!r}")
        self.topics: list[str] = self.header["topics"]

    def _fill(self, need: int) -> bool:
        """Buffer at least ``need`` bytes past the read position; False at the end of the data."""
        while len(self._buf) - self._pos < need:
            if self._eof:
                return False
            raw = b"" if self._zd.eof else self._file.read(self.CHUNK)
            if not raw:
                self._eof = True
                return False
            try:
                chunk = self._zd.decompress(raw)
            except zstandard.ZstdError as exc:  # corrupt compressed data: stop here
                self.damage = f"compressed data unreadable: {exc}"
                self._eof = True
                return False
            if self._pos:
                del self._buf[: self._pos]
                self._pos = 0
            self._buf += chunk
        return True

    def _next_frame(self) -> tuple[bytes, bytes] | None:
        if not self._fill(_FRAME.size):
            return None
        kind, length, crc = _FRAME.unpack_from(self._buf, self._pos)
        if kind not in (b"H", b"R", b"T"):
            self.damage = f"unknown frame kind {kind!r} after {self.records} records"
            return None
        if not self._fill(_FRAME.size + length):
            return None
        start = self._pos + _FRAME.size
        payload = bytes(self._buf[start: start + length])
        if zlib.crc32(payload) != crc:
            self.damage = f"checksum mismatch after {self.records} records"
            return None
        self._pos = start + length
        return kind, payload

    def __iter__(self) -> Iterator[RecordedRecord]:
        topics = self.topics
        while True:
            frame = self._next_frame()
            if frame is None:
                self.cut = self.trailer is None
                break
            kind, p = frame
            if kind == b"T":
                self.trailer = orjson.loads(p)
                self._fill(1)  # read to the end of the zstd frame: its checksum is verified there
                self.cut = not self._zd.eof and not self.damage
                break
            if kind == b"R":
                self.records += 1
                yield _decode_record(p, topics)
        self.close()

    @property
    def complete(self) -> bool:
        return (self.trailer is not None and self.trailer.get("status") == "complete"
                and not self.damage and not self.cut)

    def status(self) -> str:
        if self.damage:
            return f"partial: {self.records} records, file damaged ({self.damage})"
        if self.trailer is None:
            return f"partial: {self.records} records, file was cut (no trailer)"
        if self.cut:
            return f"partial: {self.records} records, file was cut after its trailer"
        if self.trailer.get("status") != "complete":
            return f"partial: {self.records} records, recording was {self.trailer.get('status')}"
        return f"complete: {self.records} records"

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> RecordingReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _decode_record(p: bytes, topics: list[str]) -> RecordedRecord:
    ti, partition, offset, ts, ts_type = _RECORD.unpack_from(p, 0)
    pos = _RECORD.size
    kv: list[bytes | None] = []
    for _ in range(2):
        (n,) = _LEN.unpack_from(p, pos)
        pos += 4
        if n < 0:
            kv.append(None)
        else:
            kv.append(p[pos: pos + n])
            pos += n
    (nh,) = _NAME_LEN.unpack_from(p, pos)
    pos += 2
    headers: list[tuple[str, bytes | None]] = []
    for _ in range(nh):
        (nl,) = _NAME_LEN.unpack_from(p, pos)
        pos += 2
        name = p[pos: pos + nl].decode()
        pos += nl
        (vl,) = _LEN.unpack_from(p, pos)
        pos += 4
        if vl < 0:
            headers.append((name, None))
        else:
            headers.append((name, p[pos: pos + vl]))
            pos += vl
    return RecordedRecord(topics[ti], partition, offset, ts, ts_type, kv[0], kv[1], tuple(headers))


def read_recording(path: str | Path) -> RecordingReader:
    return RecordingReader(path)


def iter_recorded_events(path: str | Path, rejected: list[tuple[RecordedRecord, Rejection]] | None = None,
                         ) -> Iterator[Event]:
    """The input events held in a recording (records of its event topics), in file order.

    Values are validated like the worker does; invalid ones are skipped (appended to ``rejected``
    when given). A cut file yields the events it holds.
    """
    reader = RecordingReader(path)
    types: dict[str, EventType] = reader.header.get("event_topics", {})
    for rec in reader:
        etype = types.get(rec.topic)
        if etype is None:
            continue
        ev = parse_event(rec.value, etype, max_bytes=1 << 30, now_ms=0, max_future_ms=1 << 62)
        if isinstance(ev, Event):
            yield ev
        elif rejected is not None:
            rejected.append((rec, ev))


# --- record: topics -> file ------------------------------------------------------------------


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

    from stream_app.kafka import make_consumer

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
        partitions: dict[str, int] = {}
        await consumer.topics()  # refresh metadata
        for t in topics:
            parts = consumer.partitions_for_topic(t)
            if not parts:
                raise RecordingError(f"topic {t!r} does not exist")
            partitions[t] = len(parts)
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
