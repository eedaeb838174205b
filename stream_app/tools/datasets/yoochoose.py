"""YOOCHOOSE (RecSys Challenge 2015): ``yoochoose-clicks.dat`` (``session,ISO 8601 time,item,
category``, no header) and ``yoochoose-buys.dat`` (``session,ISO 8601 time,item,price,quantity``).

Clicks -> browse, buys -> purchase (with price and quantity when positive). The dataset has no
users: the user is the session id. Category ``0`` means "unknown" in the dataset and becomes None;
``S`` (a special offer) and brand ids are kept as they are.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from stream_app.core.events import Event
from stream_app.tools.datasets.base import BadLine, LoadReport, delimited, first_lines, need_id, to_int


def iso_ms(value: str) -> int:
    """Epoch ms of an ISO 8601 time (``2014-04-07T10:51:09.277Z``; no zone means UTC)."""
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise BadLine("bad timestamp", f"not ISO 8601: {value[:40]!r}") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return round(dt.timestamp() * 1000)


def yoochoose_role(line: str) -> str | None:
    """"clicks" or "buys" when the line looks like one of those files, else None."""
    parts = line.split(",")
    if len(parts) not in (4, 5) or not parts[0].isdigit() or "T" not in parts[1]:
        return None
    try:
        iso_ms(parts[1])
    except BadLine:
        return None
    return "clicks" if len(parts) == 4 else "buys"


def read_yoochoose(path: Path, report: LoadReport, progress: bool) -> Iterator[Event]:
    head = first_lines(path, 1)
    buys = bool(head) and yoochoose_role(head[0]) == "buys"

    def parse_click(n: int, parts: list[str]) -> Event:
        session, ts, item, cat = parts
        return Event(f"yoochoose-clicks:{n}", need_id(session, "session"), need_id(item, "item"),
                     None if cat in ("", "0") else cat, iso_ms(ts), "browse")

    def parse_buy(n: int, parts: list[str]) -> Event:
        session, ts, item, price, quantity = parts
        try:
            p = float(price)
        except ValueError:
            raise BadLine("bad price", repr(price[:20])) from None
        q = to_int(quantity, "quantity")
        return Event(f"yoochoose-buys:{n}", need_id(session, "session"), need_id(item, "item"),
                     None, iso_ms(ts), "purchase", p if p > 0 else None, q if q > 0 else None)

    if buys:
        return delimited(path, report, progress, ",", 5, parse_buy)
    return delimited(path, report, progress, ",", 4, parse_click)
