"""Writing recording files (format: :mod:`stream_app.tools.recording.format`)."""

from __future__ import annotations

import datetime as dt
import time
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson
import zstandard

from stream_app.tools.recording.format import (
    FLUSH_EVERY_RECORDS,
    FLUSH_EVERY_S,
    FORMAT,
    FRAME,
    LEN,
    NAME_LEN,
    RECORD,
    VERSION,
    RecordedRecord,
)


@dataclass
class _PartitionStats:
    first_offset: int
    last_offset: int
    count: int = 0


class RecordingWriter:
    """Append records to a new recording file; ``close(status)`` writes the trailer."""

    def __init__(self, path: str | Path, topics: Sequence[str], *, partitions: dict[str, int] | None = None,
                 event_topics: Mapping[str, str] | None = None, meta: dict[str, Any] | None = None,
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
            "event_topics": dict(event_topics or {}), **(meta or {}),
        }
        self._frame(b"H", orjson.dumps(self.header))
        self.flush()

    def _frame(self, kind: bytes, payload: bytes) -> None:
        self._zw.write(FRAME.pack(kind, len(payload), zlib.crc32(payload)))
        self._zw.write(payload)

    def write(self, r: RecordedRecord) -> None:
        parts = [RECORD.pack(self._index[r.topic], r.partition, r.offset, r.timestamp, r.timestamp_type)]
        for b in (r.key, r.value):
            parts.append(LEN.pack(-1 if b is None else len(b)))
            if b:
                parts.append(b)
        parts.append(NAME_LEN.pack(len(r.headers)))
        for name, hv in r.headers:
            nb = name.encode()
            parts += [NAME_LEN.pack(len(nb)), nb, LEN.pack(-1 if hv is None else len(hv))]
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
