"""Which adapter reads a path: detection by content (then by folder layout), and the one entry point
:func:`read_dataset`."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

from stream_app.core.events import Event
from stream_app.tools.datasets.base import LoadReport, first_lines
from stream_app.tools.datasets.diginetica import PURCHASES, VIEWS, looks_like_diginetica, read_diginetica
from stream_app.tools.datasets.movielens import read_movielens, separator
from stream_app.tools.datasets.recording import is_recording, read_recording
from stream_app.tools.datasets.retailrocket import looks_like_retailrocket, read_retailrocket
from stream_app.tools.datasets.taobao import looks_like_taobao, read_taobao
from stream_app.tools.datasets.yoochoose import read_yoochoose, yoochoose_role

Reader = Callable[[Path, LoadReport, bool], Iterator[Event]]
READERS: dict[str, Reader] = {
    "taobao": read_taobao,
    "movielens": read_movielens,
    "diginetica": read_diginetica,
    "retailrocket": read_retailrocket,
    "yoochoose": read_yoochoose,
    "recording": read_recording,
}
KINDS = tuple(READERS)
FILE_KINDS = tuple(k for k in KINDS if k != "recording")  # the public formats (CLI --kind)
FORMATS = ("MovieLens ratings (:: / tab / CSV), Taobao UserBehavior, Diginetica, RetailRocket "
           "events.csv, YOOCHOOSE clicks/buys, or a recording")


def _kind_of_line(line: str) -> str | None:
    if separator(line) is not None:
        return "movielens"
    if looks_like_taobao(line):
        return "taobao"
    if looks_like_retailrocket(line):
        return "retailrocket"
    if looks_like_diginetica(line):
        return "diginetica"
    if yoochoose_role(line) is not None:
        return "yoochoose"
    return None


def detect_kind(path: str | os.PathLike[str]) -> str:
    """The dataset kind of a file from its content (first lines), or of a folder from its files.
    Raises ValueError with a one-line message when it is none of the known formats."""
    p = Path(path)
    if p.is_dir():
        if any((p / n).exists() for n in VIEWS + PURCHASES):
            return "diginetica"
        if (p / "events.csv").exists():
            return "retailrocket"
        raise ValueError(f"{p}: a folder that holds no known dataset (expected {FORMATS})")
    if is_recording(p):
        return "recording"
    head = first_lines(p, 2, encoding="latin-1")
    for line in head:  # the first line may be a header only a data line tells apart
        kind = _kind_of_line(line)
        if kind is not None:
            return kind
    shown = head[0][:80] if head else ""
    raise ValueError(f"{p}: unknown dataset format (first line {shown!r}); expected {FORMATS}")


def read_dataset(path: str | os.PathLike[str], kind: str | None = None, report: LoadReport | None = None,
                 progress: bool = False) -> Iterator[Event]:
    """Stream the events of a dataset file (or folder) in file order; bad lines go to ``report``."""
    p = Path(path)
    kind = kind or detect_kind(p)
    if kind not in READERS:
        raise ValueError(f"unknown dataset kind {kind!r}; known: {', '.join(READERS)}")
    report = report if report is not None else LoadReport(str(p), kind)
    for ev in READERS[kind](p, report, progress):
        report.events += 1
        yield ev
