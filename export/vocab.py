"""Item and category vocabularies from the events a split allows (PAD=0, UNKNOWN=1 reserved)."""

from __future__ import annotations

from collections import Counter

import numpy as np

from export.data import EventTable
from stream_app.model.features import Vocab


def build_vocabs(table: EventTable, allowed: np.ndarray, min_item_count: int = 1) -> tuple[Vocab, Vocab]:
    """Items seen at least ``min_item_count`` times among the allowed events (rarer ones share
    UNKNOWN), most frequent first; every category seen among them."""
    items: Counter[str] = Counter()
    cats: Counter[str] = Counter()
    g = 0
    for h in table.histories:
        for e in h:
            if allowed[g]:
                items[e[0]] += 1
                if e[1] is not None:
                    cats[e[1]] += 1
            g += 1
    keep = sorted((i for i, c in items.items() if c >= min_item_count), key=lambda i: (-items[i], i))
    return Vocab(keep), Vocab(sorted(cats, key=lambda c: (-cats[c], c)))
