"""RetailRocket ``events.csv`` (``timestamp_ms,visitorid,event,itemid,transactionid``, header).

``view`` -> browse, ``addtocart`` -> click, ``transaction`` -> purchase; the category is the item's
``categoryid`` property from ``item_properties*.csv`` beside it, as of the event's time (the first
known value when the event predates it), else None. A folder path reads its ``events.csv``.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from pathlib import Path

from stream_app.core.events import Event, EventType
from stream_app.tools.datasets.base import BadLine, LoadReport, delimited, lines, need_id, to_int

RETAILROCKET_TYPES: dict[str, EventType] = {
    "view": "browse", "addtocart": "click", "transaction": "purchase",
}
HEADER = "timestamp,visitorid,event,itemid,transactionid"


def looks_like_retailrocket(line: str) -> bool:
    parts = line.split(",")
    return line.startswith(HEADER) or (
        len(parts) == 5 and parts[2] in RETAILROCKET_TYPES and parts[0].isdigit())


def _categories(folder: Path) -> dict[str, tuple[list[int], list[str]]]:
    """item -> (sorted times, categoryid at those times) from item_properties*.csv."""
    rows: dict[str, list[tuple[int, str]]] = {}
    for f in sorted(folder.glob("item_properties*.csv*")):
        for _, line in lines(f, progress=False):
            parts = line.split(",")
            if len(parts) == 4 and parts[2] == "categoryid" and parts[0].isdigit():
                rows.setdefault(parts[1], []).append((int(parts[0]), parts[3]))
    out = {}
    for item, values in rows.items():
        values.sort()
        out[item] = ([t for t, _ in values], [c for _, c in values])
    return out


def read_retailrocket(path: Path, report: LoadReport, progress: bool) -> Iterator[Event]:
    if path.is_dir():
        path = path / "events.csv"
    categories = _categories(path.parent)

    def parse(n: int, parts: list[str]) -> Event:
        ts_s, visitor, event, item, _transaction = parts
        if event not in RETAILROCKET_TYPES:
            raise BadLine("unknown event", repr(event[:20]))
        ts = to_int(ts_s, "timestamp")
        cat = None
        if item in categories:
            times, cats = categories[item]
            cat = cats[max(bisect.bisect_right(times, ts) - 1, 0)]
        return Event(f"retailrocket:{n}", need_id(visitor, "visitor"), need_id(item, "item"),
                     cat, ts, RETAILROCKET_TYPES[event])

    return delimited(path, report, progress, ",", 5, parse, header=lambda line: line.startswith("timestamp"))
