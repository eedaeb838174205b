"""What one runtime call answers, and the rows it runs the model on."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from stream_app.model.features import WindowEvent
from stream_app.model.kv_cache import KVCache


@dataclass
class Predictions:
    """Answers in input order: one row per answered event (``update``: one per user)."""

    top_items: list[list[tuple[str, float]]]  # best first, (item id, score)
    category_probs: np.ndarray  # (A, n_categories): next-category interest; column i = categories[i]
    churn: np.ndarray  # (A,) P(no event within the horizon H after the event)
    user_vectors: np.ndarray  # (A, d)
    caches: list[KVCache | None]  # per user: pass back to the next update of that user
    stepped: np.ndarray  # (A,) bool: answered from the cached keys/values (else a full recompute)
    user: np.ndarray  # (A,) the input index of each row's user


@dataclass
class Row:
    """One model row: a user's context after ``events`` new events, the first ``start`` positions
    from the cache (0: the whole context)."""

    entry: int
    context: Sequence[WindowEvent]
    n: int  # the user's event count at the context's newest event
    first_ts: int
    start: int
    answers: list[int]  # context positions to answer at
    handle: KVCache | None  # cache the row extends (start > 0)
    keep: bool  # the row's keys/values become the user's cache
    slot: int = -1
