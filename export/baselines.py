"""Baselines scored on the same points as the model: popularity, repeat-last, co-occurrence
(item-kNN with the last item) for items and categories, the user's category frequency, and a
recency/frequency logistic regression for churn. Every statistic comes from training events only."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import sparse

from export.data import EventTable

Scorer = Callable[[np.ndarray], np.ndarray]  # points (P,) -> scores (P, N)
TIE_BREAK = 1e-3  # weight of popularity among items a baseline scores equally


def history_pairs(table: EventTable, points: np.ndarray, limit: int | None
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row, flat event, age) of each point's past events up to and including the point itself,
    only the newest ``limit`` when given; age 0 is the point's own event."""
    first = table.offsets[table.user_of()[points]]
    start = first if limit is None else np.maximum(first, points - limit + 1)
    counts = points - start + 1
    rows = np.repeat(np.arange(len(points)), counts)
    within = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    age = np.repeat(counts, counts) - 1 - within
    return rows, np.repeat(points, counts) - age, age


class Baselines:
    """Scorers over one vocabulary (items or categories) given each event's index in it."""

    def __init__(self, table: EventTable, index: np.ndarray, size: int, train_events: np.ndarray,
                 window: int, cooc_window: int = 3) -> None:
        self.table, self.index, self.size, self.window = table, index, size, window
        self.user = table.user_of()
        known = train_events & (index > 1)
        pop = np.bincount(index[known], minlength=size).astype(np.float64)
        pop[:2] = 0
        self.pop = pop / max(pop.max(), 1.0)
        rows, cols = [], []
        same_user = lambda a, b: self.user[a] == self.user[b]  # noqa: E731
        n = table.n_events
        for d in range(1, cooc_window + 1):
            a = np.arange(n - d)
            b = a + d
            ok = same_user(a, b) & known[a] & known[b]
            rows.append(index[a[ok]])
            cols.append(index[b[ok]])
        r, c = np.concatenate(rows), np.concatenate(cols)
        self.cooc = sparse.csr_matrix((np.ones(len(r)), (r, c)), shape=(size, size))

    def _blank(self, p: int) -> np.ndarray:
        s = np.tile(TIE_BREAK * self.pop, (p, 1))
        s[:, :2] = -np.inf
        return s

    def popularity(self, points: np.ndarray) -> np.ndarray:
        return self._blank(len(points))

    def cooccurrence(self, points: np.ndarray) -> np.ndarray:
        s = self._blank(len(points))
        s[:, 2:] += self.cooc[self.index[points]].toarray()[:, 2:]
        return s

    def repeat_last(self, points: np.ndarray) -> np.ndarray:
        """The most recent items of the window first (newest highest), then popularity."""
        s = self._blank(len(points))
        rows, events, age = history_pairs(self.table, points, self.window)
        cols = self.index[events]
        ok = cols > 1
        np.maximum.at(s, (rows[ok], cols[ok]), 1.0 + (self.window - age[ok]))
        return s

    def frequency(self, points: np.ndarray) -> np.ndarray:
        """How often the user had each entry in their whole history so far, then popularity."""
        s = self._blank(len(points))
        rows, events, _ = history_pairs(self.table, points, None)
        cols = self.index[events]
        ok = cols > 1
        np.add.at(s, (rows[ok], cols[ok]), 1.0)
        return s


def churn_features(table: EventTable, points: np.ndarray) -> np.ndarray:
    """Recency and frequency at each point: log time since the previous event, log event rate per
    day over the user's history so far, log event count."""
    user = table.user_of()[points]
    first = table.offsets[user]
    n = points - first + 1
    prev = np.where(points > first, table.ts[np.maximum(points - 1, 0)], table.ts[points])
    recency_s = (table.ts[points] - prev) / 1000.0
    span_days = np.maximum(table.ts[points] - table.ts[first], 3_600_000) / 86_400_000
    return np.stack([np.log1p(recency_s), np.log(n / span_days), np.log(n), (n == 1).astype(float)], 1)


def fit_churn_baseline(table: EventTable, train_points: np.ndarray, labels: np.ndarray,
                       seed: int = 0, max_points: int = 200_000) -> Callable[[np.ndarray], np.ndarray]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(seed)
    if len(train_points) > max_points:
        pick = rng.choice(len(train_points), max_points, replace=False)
        train_points, labels = train_points[pick], labels[pick]
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    clf.fit(churn_features(table, train_points), labels)
    return lambda pts: clf.predict_proba(churn_features(table, pts))[:, 1]
