"""Item catalog for the baseline recommender: each category's items by popularity.

Loaded from a CSV file ``item_id,category_id,count`` (``--catalog-path``) or built from events
(the demo builds it from the data it replays). Static while the worker runs, so recommendations
depend only on a user's own event history: a replay gives the same outputs as live processing.
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from stream_app.core.events import Event

TOP_PER_CATEGORY = 200


class Catalog:
    def __init__(self, counts: dict[tuple[str, str], int]):
        by_cat: dict[str, list[tuple[str, int]]] = {}
        for (item, cat), n in counts.items():
            by_cat.setdefault(cat, []).append((item, n))
        self.top: dict[str, list[tuple[str, float]]] = {}
        for cat, items in by_cat.items():
            items.sort(key=lambda x: (-x[1], x[0]))
            best = items[0][1]
            self.top[cat] = [(i, n / best) for i, n in items[:TOP_PER_CATEGORY]]

    def __len__(self) -> int:
        return len(self.top)

    @classmethod
    def from_events(cls, events: Iterable[Event]) -> Catalog:
        return cls(dict(Counter((e.item_id, e.category_id) for e in events if e.category_id)))

    @classmethod
    def from_csv(cls, path: Path) -> Catalog:
        with open(path, newline="") as f:
            rows = csv.DictReader(f)
            return cls({(r["item_id"], r["category_id"]): int(r["count"]) for r in rows})

    def to_csv(self, path: Path) -> None:
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["item_id", "category_id", "count"])
            for cat, items in self.top.items():
                for item, share in items:
                    w.writerow([item, cat, max(1, round(share * 1000))])
