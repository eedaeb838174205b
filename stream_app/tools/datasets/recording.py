"""The project's own recordings (``.rec.zst``, :mod:`stream_app.tools.recording`): the input events they
hold, with their own event ids, validated as the worker validates them (its own rules, so no
timestamp bounds here); a rejected value or a cut/damaged file is reported like a bad line (the
record number as the line number)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from stream_app.core.events import Event
from stream_app.tools.datasets.base import LoadReport

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def is_recording(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(4) == ZSTD_MAGIC


def read_recording(path: Path, report: LoadReport, progress: bool) -> Iterator[Event]:
    from stream_app.core.events import Rejection, parse_event
    from stream_app.tools.recording import RecordingReader

    reader = RecordingReader(path)
    types = reader.header.get("event_topics", {})
    try:
        for n, rec in enumerate(reader, 1):
            etype = types.get(rec.topic)
            if etype is None:
                continue
            report.lines += 1
            ev = parse_event(rec.value, etype, max_bytes=1 << 30, now_ms=0, max_future_ms=1 << 62)
            if isinstance(ev, Rejection):
                report.bad(n, f"{ev.reason}: {ev.detail}", (rec.value or b"").decode("utf-8", "replace"),
                           ev.reason)
            else:
                yield ev
        if not reader.status().startswith("complete"):
            report.bad(reader.records + 1, f"recording is {reader.status()}", "", "cut recording")
    finally:
        reader.close()
