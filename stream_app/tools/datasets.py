"""Dataset adapters: real behaviour logs -> :class:`stream_app.core.events.Event`, streaming.

Every adapter reads line by line (gzip transparently), yields events in file order, and counts a
malformed line into a :class:`LoadReport` instead of raising. Event ids are deterministic
(``"<kind>:<line number>"``), so loading the same file twice gives the same events.

Mappings (documented choices):

- **taobao** (UserBehavior CSV ``user,item,category,behavior,ts_seconds``): ``pv`` -> browse,
  ``cart``/``fav`` -> click, ``buy`` -> purchase.
- **movielens** (``user::item::rating::ts_seconds``): every rating is an interaction of type
  browse (implicit feedback, the usual protocol of SASRec-style models); the category is the
  movie's first genre from ``movies.dat`` / ``ml-1m_movies.dat`` beside the ratings file, else None.
- **diginetica** (``;``-separated, header): item views and purchases; the category comes from
  ``product-categories.csv`` in the same folder. The user is ``userId``, or ``session:<id>`` when
  it is ``NA``. Time is ``eventdate`` (UTC midnight) + ``timeframe`` (ms since the session's first
  query): the dataset carries no absolute time of day. A folder path reads views, then purchases.
- **retailrocket** (``events.csv``: ``timestamp_ms,visitorid,event,itemid,transactionid``):
  ``view`` -> browse, ``addtocart`` -> click, ``transaction`` -> purchase; the category is the
  item's ``categoryid`` property from ``item_properties*.csv`` beside it, as of the event's time
  (the first known value when the event predates it), else None.
- **recording** (the project's own ``.rec.zst`` files, :mod:`stream_app.tools.recording`): the input
  events it holds, with their own event ids; invalid values and a cut file are reported.
"""

from __future__ import annotations

import bisect
import calendar
import csv
import gzip
import io
import os
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from stream_app.core.events import Event, EventType

KINDS = ("taobao", "movielens", "diginetica", "retailrocket", "recording")
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
MAX_BAD_EXAMPLES = 20
CLIP = 200

TAOBAO_TYPES: dict[str, EventType] = {"pv": "browse", "cart": "click", "fav": "click", "buy": "purchase"}
RETAILROCKET_TYPES: dict[str, EventType] = {
    "view": "browse", "addtocart": "click", "transaction": "purchase",
}
DIGINETICA_VIEWS = ("train-item-views.csv", "sample_train-item-views.csv")
DIGINETICA_PURCHASES = ("train-purchases.csv",)


class BadLine(ValueError):
    """A line that cannot become an event; the message is the reason in the report."""


@dataclass
class LoadReport:
    path: str
    kind: str
    lines: int = 0  # data lines read (headers excluded)
    events: int = 0
    bad_lines: int = 0
    bad_examples: list[tuple[int, str, str]] = field(default_factory=list)  # (line no, reason, text)

    def bad(self, line_no: int, reason: str, text: str) -> None:
        self.bad_lines += 1
        if len(self.bad_examples) < MAX_BAD_EXAMPLES:
            self.bad_examples.append((line_no, reason, text[:CLIP]))

    def summary(self) -> str:
        s = f"{self.path} ({self.kind}): {self.lines} lines, {self.events} events, {self.bad_lines} bad"
        for line_no, reason, text in self.bad_examples:
            s += f"\n  line {line_no}: {reason}: {text!r}"
        if self.bad_lines > len(self.bad_examples):
            s += f"\n  ... {self.bad_lines - len(self.bad_examples)} more bad lines not shown"
        return s


def _open_text(path: Path, encoding: str = "utf-8") -> tuple[IO[str], IO[bytes]]:
    """Text stream of a plain or gzip file, and the raw byte stream (for progress by bytes)."""
    raw = open(path, "rb")  # noqa: SIM115 - closed by the caller through the text stream
    gzipped = raw.read(2) == b"\x1f\x8b"
    raw.seek(0)
    binary = typing.cast(IO[bytes], gzip.GzipFile(fileobj=raw) if gzipped else raw)
    return io.TextIOWrapper(binary, encoding=encoding, errors="replace"), raw


def _lines(path: Path, progress: bool, encoding: str = "utf-8") -> Iterator[tuple[int, str]]:
    """(1-based line number, line without newline), with an optional tqdm bar over file bytes."""
    text, raw = _open_text(path, encoding)
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


def detect_kind(path: str | os.PathLike[str]) -> str:
    """Guess the dataset kind from the path and the first line. Raises ValueError if unknown."""
    p = Path(path)
    if p.is_dir():
        if any((p / n).exists() for n in DIGINETICA_VIEWS + DIGINETICA_PURCHASES):
            return "diginetica"
        if (p / "events.csv").exists():
            return "retailrocket"
        raise ValueError(f"{p}: a folder that holds no known dataset")
    with open(p, "rb") as fh:
        if fh.read(4) == ZSTD_MAGIC:
            return "recording"
    text, _ = _open_text(p)
    with text:
        first = text.readline().strip()
    if "::" in first:
        return "movielens"
    if first.startswith("timestamp,visitorid,event"):
        return "retailrocket"
    if ";" in first and ("session" in first.lower() or "itemid" in first.lower()):
        return "diginetica"
    parts = first.split(",")
    if len(parts) == 5 and parts[3] in TAOBAO_TYPES:
        return "taobao"
    raise ValueError(f"{p}: cannot tell the dataset kind from its first line {first[:80]!r}")


def _int(value: str, what: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise BadLine(f"{what} is not an integer: {value[:40]!r}") from None


def _need_id(value: str, what: str) -> str:
    if not value:
        raise BadLine(f"empty {what}")
    return value


def _delimited(path: Path, report: LoadReport, progress: bool, sep: str, n_fields: int,
               parse: Callable[[int, list[str]], Event], encoding: str = "utf-8",
               header: str | None = None) -> Iterator[Event]:
    """Lines of a delimited file parsed by ``parse(line_no, fields)``; a line with the wrong
    number of fields, or that ``parse`` rejects with :class:`BadLine`, is reported and skipped."""
    what = "fields" if sep == "," else f"{sep!r}-separated fields"
    for n, line in _lines(path, progress, encoding=encoding):
        if not line or (n == 1 and header is not None and line.startswith(header)):
            continue
        report.lines += 1
        try:
            parts = line.split(sep)
            if len(parts) != n_fields:
                raise BadLine(f"expected {n_fields} {what}, got {len(parts)}")
            yield parse(n, parts)
        except BadLine as exc:
            report.bad(n, str(exc), line)


def _taobao(path: Path, report: LoadReport, progress: bool) -> Iterator[Event]:
    def parse(n: int, parts: list[str]) -> Event:
        user, item, cat, behavior, ts = parts
        if behavior not in TAOBAO_TYPES:
            raise BadLine(f"unknown behavior {behavior[:20]!r}")
        return Event(f"taobao:{n}", _need_id(user, "user"), _need_id(item, "item"),
                     cat or None, _int(ts, "timestamp") * 1000, TAOBAO_TYPES[behavior])

    return _delimited(path, report, progress, ",", 5, parse)


def movielens_genres(ratings_path: Path) -> dict[str, str]:
    """item -> first genre, from the movies file beside the ratings (empty when absent)."""
    for name in ("ml-1m_movies.dat", "movies.dat"):
        f = ratings_path.parent / name
        if f.exists():
            out: dict[str, str] = {}
            with open(f, encoding="latin-1") as fh:
                for line in fh:
                    parts = line.rstrip("\r\n").split("::")
                    if len(parts) == 3 and parts[2]:
                        out[parts[0]] = parts[2].split("|")[0]
            return out
    return {}


def _movielens(path: Path, report: LoadReport, progress: bool) -> Iterator[Event]:
    genres = movielens_genres(path)

    def parse(n: int, parts: list[str]) -> Event:
        user, item, rating, ts = parts
        _int(rating, "rating")
        return Event(f"movielens:{n}", _need_id(user, "user"), _need_id(item, "item"),
                     genres.get(item), _int(ts, "timestamp") * 1000, "browse")

    return _delimited(path, report, progress, "::", 4, parse, encoding="latin-1")


def _date_ms(value: str) -> int:
    try:
        y, m, d = (int(x) for x in value.split("-"))
        return calendar.timegm((y, m, d, 0, 0, 0)) * 1000
    except ValueError:
        raise BadLine(f"eventdate is not YYYY-MM-DD: {value[:40]!r}") from None


def _diginetica_categories(folder: Path) -> dict[str, str]:
    f = folder / "product-categories.csv"
    if not f.exists():
        return {}
    with open(f, encoding="utf-8") as fh:
        rows = csv.reader(fh, delimiter=";")
        next(rows, None)
        return {r[0]: r[1] for r in rows if len(r) == 2}


def _diginetica_file(path: Path, categories: dict[str, str], report: LoadReport, progress: bool,
                     id_prefix: str) -> Iterator[Event]:
    header: dict[str, int] | None = None
    purchases = False
    for n, line in _lines(path, progress):
        if header is None:
            cols = [c.strip().lower().replace("_", "") for c in line.split(";")]
            header = {c: i for i, c in enumerate(cols)}
            missing = {"sessionid", "userid", "itemid", "timeframe", "eventdate"} - header.keys()
            if missing:
                report.bad(n, f"header lacks {sorted(missing)}", line)
                return
            purchases = "ordernumber" in header
            continue
        if not line:
            continue
        report.lines += 1
        try:
            parts = line.split(";")
            if len(parts) != len(header):
                raise BadLine(f"expected {len(header)} fields, got {len(parts)}")
            session = _need_id(parts[header["sessionid"]], "session")
            user = parts[header["userid"]]
            if not user or user == "NA":
                user = f"session:{session}"
            item = _need_id(parts[header["itemid"]], "item")
            ts = _date_ms(parts[header["eventdate"]]) + _int(parts[header["timeframe"]], "timeframe")
            yield Event(f"{id_prefix}:{n}", user, item, categories.get(item), ts,
                        "purchase" if purchases else "browse")
        except BadLine as exc:
            report.bad(n, str(exc), line)


def _diginetica(path: Path, report: LoadReport, progress: bool) -> Iterator[Event]:
    folder = path if path.is_dir() else path.parent
    categories = _diginetica_categories(folder)
    if not path.is_dir():
        role = "purchases" if "purchase" in path.name.lower() else "views"
        yield from _diginetica_file(path, categories, report, progress, f"diginetica-{role}")
        return
    for names, role in ((DIGINETICA_VIEWS, "views"), (DIGINETICA_PURCHASES, "purchases")):
        for name in names:
            if (path / name).exists():
                yield from _diginetica_file(path / name, categories, report, progress,
                                            f"diginetica-{role}")
                break


def _retailrocket_categories(folder: Path) -> dict[str, tuple[list[int], list[str]]]:
    """item -> (sorted times, categoryid at those times) from item_properties*.csv."""
    rows: dict[str, list[tuple[int, str]]] = {}
    for f in sorted(folder.glob("item_properties*.csv*")):
        for _, line in _lines(f, progress=False):
            parts = line.split(",")
            if len(parts) == 4 and parts[2] == "categoryid" and parts[0].isdigit():
                rows.setdefault(parts[1], []).append((int(parts[0]), parts[3]))
    out = {}
    for item, values in rows.items():
        values.sort()
        out[item] = ([t for t, _ in values], [c for _, c in values])
    return out


def _retailrocket(path: Path, report: LoadReport, progress: bool) -> Iterator[Event]:
    if path.is_dir():
        path = path / "events.csv"
    categories = _retailrocket_categories(path.parent)

    def parse(n: int, parts: list[str]) -> Event:
        ts_s, visitor, event, item, _transaction = parts
        if event not in RETAILROCKET_TYPES:
            raise BadLine(f"unknown event {event[:20]!r}")
        ts = _int(ts_s, "timestamp")
        cat = None
        if item in categories:
            times, cats = categories[item]
            cat = cats[max(bisect.bisect_right(times, ts) - 1, 0)]
        return Event(f"retailrocket:{n}", _need_id(visitor, "visitor"), _need_id(item, "item"),
                     cat, ts, RETAILROCKET_TYPES[event])

    return _delimited(path, report, progress, ",", 5, parse, header="timestamp")


def _recording(path: Path, report: LoadReport, progress: bool) -> Iterator[Event]:
    """Input events of a recording (stream_app.tools.recording), validated like the worker does; a
    rejected value or a cut/damaged file is reported like a bad line (record number as line)."""
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
                report.bad(n, f"{ev.reason}: {ev.detail}", (rec.value or b"").decode("utf-8", "replace"))
            else:
                yield ev
        if not reader.status().startswith("complete"):
            report.bad(reader.records + 1, f"recording is {reader.status()}", "")
    finally:
        reader.close()


READERS: dict[str, Callable[[Path, LoadReport, bool], Iterator[Event]]] = {
    "taobao": _taobao,
    "movielens": _movielens,
    "diginetica": _diginetica,
    "retailrocket": _retailrocket,
    "recording": _recording,
}


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
