"""What every adapter shares: the load report, bad lines, (gzip) line reading, timestamp bounds."""

from __future__ import annotations

import calendar
import gzip
import io
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from stream_app.core.events import Event

MAX_BAD_EXAMPLES = 20
CLIP = 200
# Plausible event times (documented in docs/model.md): no public behaviour log predates 1995
# (MovieLens, the oldest, starts 1995-01-09); an event more than a day after the reading time is
# from a broken clock or a cut field (``...,pv,15`` is 15 s after 1970).
MIN_TS_MS = calendar.timegm((1995, 1, 1, 0, 0, 0)) * 1000
MAX_FUTURE_MS = 24 * 3600 * 1000


class BadLine(ValueError):
    """A line that cannot become an event: ``reason`` is its short class (counted in the report),
    ``detail`` what exactly is wrong."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


@dataclass
class LoadReport:
    path: str
    kind: str
    lines: int = 0  # data lines read (headers excluded)
    events: int = 0
    bad_lines: int = 0
    bad_examples: list[tuple[int, str, str]] = field(default_factory=list)  # (line no, reason, text)
    bad_reasons: Counter[str] = field(default_factory=Counter)  # short reason -> bad lines

    def bad(self, line_no: int, reason: str, text: str, key: str | None = None) -> None:
        self.bad_lines += 1
        self.bad_reasons[key or reason] += 1
        if len(self.bad_examples) < MAX_BAD_EXAMPLES:
            self.bad_examples.append((line_no, reason, text[:CLIP]))

    def summary(self) -> str:
        s = f"{self.path} ({self.kind}): {self.lines} lines, {self.events} events, {self.bad_lines} bad"
        if self.bad_reasons:
            s += " (" + ", ".join(f"{k}: {v}" for k, v in self.bad_reasons.most_common()) + ")"
        for line_no, reason, text in self.bad_examples:
            s += f"\n  line {line_no}: {reason}: {text!r}"
        if self.bad_lines > len(self.bad_examples):
            s += f"\n  ... {self.bad_lines - len(self.bad_examples)} more bad lines not shown"
        return s


def open_text(path: Path, encoding: str = "utf-8") -> tuple[IO[str], IO[bytes]]:
    """Text stream of a plain or gzip file, and the raw byte stream (for progress by bytes)."""
    raw = open(path, "rb")  # noqa: SIM115 - closed by the caller through the text stream
    gz = raw.read(2) == b"\x1f\x8b"
    raw.seek(0)
    binary: IO[bytes] = gzip.GzipFile(fileobj=raw) if gz else raw  # type: ignore[assignment]
    return io.TextIOWrapper(binary, encoding=encoding, errors="replace"), raw


def first_lines(path: Path, n: int = 2, encoding: str = "utf-8") -> list[str]:
    """The first ``n`` non-empty lines (stripped), for content sniffing."""
    text, _ = open_text(path, encoding)
    out: list[str] = []
    with text:
        for line in text:
            if line.strip():
                out.append(line.strip())
                if len(out) == n:
                    break
    return out


def lines(path: Path, progress: bool, encoding: str = "utf-8") -> Iterator[tuple[int, str]]:
    """(1-based line number, line without newline), with an optional tqdm bar over file bytes."""
    text, raw = open_text(path, encoding)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=os.path.getsize(path), unit="B", unit_scale=True, desc=path.name, leave=False)
    try:
        last = 0
        for n, line in enumerate(text, 1):
            yield n, line.rstrip("\r\n")
            if bar is not None and n % 4096 == 0:
                pos = raw.tell()
                bar.update(pos - last)
                last = pos
        if bar is not None:
            bar.update(os.path.getsize(path) - last)
    finally:
        text.close()
        if bar is not None:
            bar.close()


def to_int(value: str, what: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise BadLine(f"bad {what}", f"not an integer: {value[:40]!r}") from None


def need_id(value: str, what: str) -> str:
    if not value:
        raise BadLine(f"empty {what}")
    return value


def ts_bounds() -> tuple[int, int]:
    """(lowest, highest) plausible event time in ms, as of now."""
    return MIN_TS_MS, int(time.time() * 1000) + MAX_FUTURE_MS


def check_ts(ts_ms: int, bounds: tuple[int, int]) -> int:
    if not bounds[0] <= ts_ms <= bounds[1]:
        when = time.strftime("%Y-%m-%d", time.gmtime(ts_ms / 1000)) if -1e16 < ts_ms < 1e16 else "?"
        raise BadLine("implausible timestamp", f"{ts_ms} ms ({when}) is before 1995 or in the future")
    return ts_ms


def field_count(parts: list[str], n_fields: int, sep: str) -> None:
    if len(parts) < n_fields:
        raise BadLine("truncated line", f"expected {n_fields} {sep!r}-separated fields, got {len(parts)}")
    if len(parts) > n_fields:
        raise BadLine("too many fields", f"expected {n_fields} {sep!r}-separated fields, got {len(parts)}")


def delimited(path: Path, report: LoadReport, progress: bool, sep: str, n_fields: int,
              parse: Callable[[int, list[str]], Event], encoding: str = "utf-8",
              header: Callable[[str], bool] | None = None) -> Iterator[Event]:
    """Events of a delimited file: ``parse(line_no, fields)`` makes each line's event; a line with
    the wrong number of fields, that ``parse`` rejects, or with an implausible time is reported and
    skipped. ``header(first line)`` says whether line 1 is a header (not counted)."""
    bounds = ts_bounds()
    for n, line in lines(path, progress, encoding=encoding):
        if not line or (n == 1 and header is not None and header(line)):
            continue
        report.lines += 1
        try:
            parts = line.split(sep)
            field_count(parts, n_fields, sep)
            ev = parse(n, parts)
            check_ts(ev.ts, bounds)
            yield ev
        except BadLine as exc:
            report.bad(n, str(exc), line, exc.reason)
