"""Event table for training: users' histories in time order, flattened, with a fingerprint."""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from stream_app.core.events import TYPE_CODE
from stream_app.model.features import WindowEvent
from stream_app.tools.datasets import LoadReport, read_dataset


class NoEvents(ValueError):
    """A dataset of which no line could be read as an event (the message says why, in one line)."""


@dataclass
class EventTable:
    """All users' events, grouped by user and sorted by time (file order breaks ties).

    ``histories[u]`` is user ``users[u]``'s list of window tuples; the flat arrays index the same
    events in user order (``offsets[u]:offsets[u+1]``).
    """

    users: list[str]
    histories: list[list[WindowEvent]]
    report: LoadReport
    fingerprint: str
    dropped_rare: int = 0
    offsets: np.ndarray = field(init=False)
    ts: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.offsets = np.concatenate([[0], np.cumsum([len(h) for h in self.histories])]).astype(np.int64)
        self.ts = np.fromiter((e[3] for h in self.histories for e in h), np.int64, int(self.offsets[-1]))

    @property
    def n_events(self) -> int:
        return int(self.offsets[-1])

    def user_of(self) -> np.ndarray:
        """User index of every flat event."""
        return np.repeat(np.arange(len(self.users)), np.diff(self.offsets))


def file_fingerprint(path: Path) -> str:
    """sha256 of the file, as ``sha256sum`` prints it (so it can be checked against a published
    SHA256SUMS); for a folder, sha256 of its files' ``sha256sum`` lines in name order."""
    if path.is_dir():
        lines = "".join(f"{file_fingerprint(f)}  {f.name}\n"
                        for f in sorted(p for p in path.iterdir() if p.is_file()))
        return hashlib.sha256(lines.encode()).hexdigest()
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_table(path: Path, kind: str | None = None, min_item_count_drop: int = 0,
               progress: bool = True) -> EventTable:
    """Read a dataset into an :class:`EventTable`. With ``min_item_count_drop`` > 0, the events of
    items seen fewer times than that in the whole file are removed (the reference protocol of
    leave-one-out evaluation on MovieLens; it looks at all data, so time splits map rare items to
    UNKNOWN from training counts instead)."""
    from stream_app.tools.datasets import detect_kind

    kind = kind or detect_kind(path)
    report = LoadReport(str(path), kind)
    per_user: dict[str, list[WindowEvent]] = defaultdict(list)
    for e in read_dataset(path, kind, report, progress=progress):
        per_user[e.user_id].append((e.item_id, e.category_id, TYPE_CODE[e.type], e.ts))
    if report.events == 0:
        reasons = ", ".join(f"{k}: {v}" for k, v in report.bad_reasons.most_common(3)) or "empty file"
        raise NoEvents(f"{path}: no event could be read as {kind} ({report.lines} lines, "
                       f"{report.bad_lines} bad: {reasons})")
    dropped = 0
    if min_item_count_drop > 0:
        counts = Counter(e[0] for h in per_user.values() for e in h)
        for u, h in per_user.items():
            kept = [e for e in h if counts[e[0]] >= min_item_count_drop]
            dropped += len(h) - len(kept)
            per_user[u] = kept
    users = sorted((u for u, h in per_user.items() if h), key=_user_key)
    histories = [sorted(per_user[u], key=lambda e: e[3]) for u in users]  # stable: file order on ties
    return EventTable(users, histories, report, file_fingerprint(path), dropped)


def _user_key(u: str) -> tuple[int, int | str]:
    return (0, int(u)) if u.isdigit() else (1, u)
