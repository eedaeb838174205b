"""Reading recording files, whole or partial (format: :mod:`stream_app.tools.recording.format`)."""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import orjson
import zstandard

from stream_app.core.events import Event, EventType, Rejection, parse_event
from stream_app.tools.recording.format import (
    FORMAT,
    FRAME,
    VERSION,
    RecordedRecord,
    RecordingError,
    decode_record,
)


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
        if not self._fill(FRAME.size):
            return None
        kind, length, crc = FRAME.unpack_from(self._buf, self._pos)
        if kind not in (b"H", b"R", b"T"):
            self.damage = f"unknown frame kind {kind!r} after {self.records} records"
            return None
        if not self._fill(FRAME.size + length):
            return None
        start = self._pos + FRAME.size
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
                yield decode_record(p, topics)
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
