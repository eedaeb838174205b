"""Recording files: Kafka records (topic, partition, offset, key, value, headers, timestamp) on disk.

Format (version 1). The file is one zstd stream (``zstdcat`` reads it); decompressed, it is a
sequence of frames ``kind (1 byte) | length (u32 LE) | crc32 of payload (u32 LE) | payload``:

- ``H``: header, JSON: format, version, created_at, topics (index -> name), partitions per topic,
  event_topics (recorded topic -> input event type), the from/to spec and the broker;
- ``R``: one record, binary (see ``RECORD``): topic index, partition, offset, timestamp,
  timestamp type, key, value, headers (lengths of -1 mean null);
- ``T``: trailer, JSON, written on close: status (``complete``/``interrupted``), record count,
  per-partition offset ranges, first/last timestamps.

The writer flushes a zstd block at least every second, so a process killed mid-write leaves a
file whose flushed part decodes; the reader returns every whole record it finds and reports the
file as partial ("cut": no trailer, "interrupted": stopped before the end spec) instead of raising.
"""

from __future__ import annotations

import datetime as dt
import logging
import struct
import time
from dataclasses import dataclass

log = logging.getLogger(__name__)

FORMAT = "interest-tracker-recording"
VERSION = 1
FRAME = struct.Struct("<cII")  # kind, payload length, crc32
RECORD = struct.Struct("<HIqqb")  # topic index, partition, offset, timestamp, timestamp type
LEN = struct.Struct("<i")
NAME_LEN = struct.Struct("<H")
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


def iso(ms: int | None) -> str | None:
    return None if ms is None else dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat()


def decode_record(p: bytes, topics: list[str]) -> RecordedRecord:
    ti, partition, offset, ts, ts_type = RECORD.unpack_from(p, 0)
    pos = RECORD.size
    kv: list[bytes | None] = []
    for _ in range(2):
        (n,) = LEN.unpack_from(p, pos)
        pos += 4
        if n < 0:
            kv.append(None)
        else:
            kv.append(p[pos: pos + n])
            pos += n
    (nh,) = NAME_LEN.unpack_from(p, pos)
    pos += 2
    headers: list[tuple[str, bytes | None]] = []
    for _ in range(nh):
        (nl,) = NAME_LEN.unpack_from(p, pos)
        pos += 2
        name = p[pos: pos + nl].decode()
        pos += nl
        (vl,) = LEN.unpack_from(p, pos)
        pos += 4
        if vl < 0:
            headers.append((name, None))
        else:
            headers.append((name, p[pos: pos + vl]))
            pos += vl
    return RecordedRecord(topics[ti], partition, offset, ts, ts_type, kv[0], kv[1], tuple(headers))
