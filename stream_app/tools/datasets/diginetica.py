"""DIGINETICA (CIKM Cup 2016), ``;``-separated with a header: item views (``session_id;user_id;
item_id;timeframe;eventdate``) and purchases (``sessionId;userId;timeframe;eventdate;ordernumber;
itemId``); the category comes from ``product-categories.csv`` in the same folder.

The user is ``userId``, or ``session:<id>`` when it is ``NA``. Time is ``eventdate`` (UTC midnight)
+ ``timeframe`` (ms since the session's first query): the dataset carries no absolute time of day.
A folder path reads views, then purchases.
"""

from __future__ import annotations

import calendar
import csv
from collections.abc import Iterator
from pathlib import Path

from stream_app.core.events import Event
from stream_app.tools.datasets.base import (
    BadLine,
    LoadReport,
    check_ts,
    field_count,
    lines,
    need_id,
    to_int,
    ts_bounds,
)

VIEWS = ("train-item-views.csv", "sample_train-item-views.csv")
PURCHASES = ("train-purchases.csv",)
REQUIRED = {"sessionid", "userid", "itemid", "timeframe", "eventdate"}


def _columns(header_line: str) -> dict[str, int]:
    cols = [c.strip().lower().replace("_", "") for c in header_line.split(";")]
    return {c: i for i, c in enumerate(cols)}


def looks_like_diginetica(line: str) -> bool:
    return ";" in line and _columns(line).keys() >= REQUIRED


def _date_ms(value: str) -> int:
    try:
        y, m, d = (int(x) for x in value.split("-"))
        return calendar.timegm((y, m, d, 0, 0, 0)) * 1000
    except ValueError:
        raise BadLine("bad eventdate", f"not YYYY-MM-DD: {value[:40]!r}") from None


def _categories(folder: Path) -> dict[str, str]:
    f = folder / "product-categories.csv"
    if not f.exists():
        return {}
    with open(f, encoding="utf-8") as fh:
        rows = csv.reader(fh, delimiter=";")
        next(rows, None)
        return {r[0]: r[1] for r in rows if len(r) == 2}


def _file(path: Path, categories: dict[str, str], report: LoadReport, progress: bool,
          id_prefix: str) -> Iterator[Event]:
    header: dict[str, int] | None = None
    purchases = False
    bounds = ts_bounds()
    for n, line in lines(path, progress):
        if header is None:
            header = _columns(line)
            missing = REQUIRED - header.keys()
            if missing:
                report.bad(n, f"header lacks {sorted(missing)}", line, "bad header")
                return
            purchases = "ordernumber" in header
            continue
        if not line:
            continue
        report.lines += 1
        try:
            parts = line.split(";")
            field_count(parts, len(header), ";")
            session = need_id(parts[header["sessionid"]], "session")
            user = parts[header["userid"]]
            if not user or user == "NA":
                user = f"session:{session}"
            item = need_id(parts[header["itemid"]], "item")
            ts = _date_ms(parts[header["eventdate"]]) + to_int(parts[header["timeframe"]], "timeframe")
            check_ts(ts, bounds)
            yield Event(f"{id_prefix}:{n}", user, item, categories.get(item), ts,
                        "purchase" if purchases else "browse")
        except BadLine as exc:
            report.bad(n, str(exc), line, exc.reason)


def read_diginetica(path: Path, report: LoadReport, progress: bool) -> Iterator[Event]:
    folder = path if path.is_dir() else path.parent
    categories = _categories(folder)
    if not path.is_dir():
        role = "purchases" if "purchase" in path.name.lower() else "views"
        yield from _file(path, categories, report, progress, f"diginetica-{role}")
        return
    for names, role in ((VIEWS, "views"), (PURCHASES, "purchases")):
        for name in names:
            if (path / name).exists():
                yield from _file(path / name, categories, report, progress, f"diginetica-{role}")
                break
