"""Taobao UserBehavior CSV (Alibaba Tianchi), no header: ``user,item,category,behavior,ts_seconds``.

``pv`` -> browse, ``cart``/``fav`` -> click (an explicit interaction short of buying), ``buy`` ->
purchase.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from stream_app.core.events import Event, EventType
from stream_app.tools.datasets.base import BadLine, LoadReport, delimited, need_id, to_int

TAOBAO_TYPES: dict[str, EventType] = {"pv": "browse", "cart": "click", "fav": "click", "buy": "purchase"}


def looks_like_taobao(line: str) -> bool:
    parts = line.split(",")
    return len(parts) == 5 and parts[3] in TAOBAO_TYPES and parts[0].isdigit()


def read_taobao(path: Path, report: LoadReport, progress: bool) -> Iterator[Event]:
    def parse(n: int, parts: list[str]) -> Event:
        user, item, cat, behavior, ts = parts
        if behavior not in TAOBAO_TYPES:
            raise BadLine("unknown behavior", repr(behavior[:20]))
        return Event(f"taobao:{n}", need_id(user, "user"), need_id(item, "item"),
                     cat or None, to_int(ts, "timestamp") * 1000, TAOBAO_TYPES[behavior])

    return delimited(path, report, progress, ",", 5, parse)
