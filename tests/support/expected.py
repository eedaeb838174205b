"""An independent, deliberately plain computation of what the tracker should hold per user.

The expectations do not use stream_app.core.state: they recompute windows, counts and interests from the raw
events, so a test comparing the two checks the worker, not the code against itself."""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path

from stream_app.core.config import Settings
from stream_app.core.events import Event
from stream_app.core.state import StatePolicy, UserState

TAOBAO_TYPES = {"pv": "browse", "cart": "click", "fav": "click", "buy": "purchase"}
CODE = {"click": 0, "browse": 1, "purchase": 2}
WEIGHT = {"click": 3.0, "browse": 1.0, "purchase": 5.0}


def taobao_events(path: Path, limit: int | None = None) -> list[Event]:
    """Taobao UserBehavior rows as events (skips lines that are not 5 well-formed fields)."""
    out: list[Event] = []
    with open(path, newline="") as f:
        for n, row in enumerate(csv.reader(f)):
            if len(row) != 5 or row[3] not in TAOBAO_TYPES or not row[4].isdigit():
                continue
            out.append(Event(f"taobao:{n}", row[0], row[1], row[2], int(row[4]) * 1000,
                             TAOBAO_TYPES[row[3]]))  # type: ignore[arg-type]
            if limit and len(out) >= limit:
                break
    return out


@dataclass
class Expected:
    events: list[Event] = field(default_factory=list)

    def counts(self) -> list[int]:
        c = [0, 0, 0]
        for e in self.events:
            c[CODE[e.type]] += 1
        return c

    def window(self, length: int) -> list[tuple[str, str | None, int, int]]:
        ordered = sorted(self.events, key=lambda e: e.ts)  # stable: file order within a ts
        return [(e.item_id, e.category_id, CODE[e.type], e.ts) for e in ordered[-length:]]

    def interests(self, half_life_ms: int) -> dict[str, float]:
        """Interest strength per category at the user's newest event time."""
        at = max(e.ts for e in self.events)
        out: dict[str, float] = {}
        for e in self.events:
            if e.category_id is not None:
                out[e.category_id] = out.get(e.category_id, 0.0) + WEIGHT[e.type] * math.exp(
                    -math.log(2) * (at - e.ts) / half_life_ms)
        return out


def expected_by_user(events: list[Event]) -> dict[str, Expected]:
    seen: set[str] = set()
    out: dict[str, Expected] = {}
    for e in events:
        if e.event_id in seen:
            continue
        seen.add(e.event_id)
        out.setdefault(e.user_id, Expected()).events.append(e)
    return out


def assert_windows_match(got: list[tuple], want: list[tuple]) -> None:
    """Windows hold the same events; entries sharing the oldest kept time may have been cut in
    either order, so the rest is compared exactly and the cut only by count and time."""
    assert len(got) == len(want)
    if not want:
        return
    cut = min(e[3] for e in want)
    assert sorted(e for e in got if e[3] > cut) == sorted(e for e in want if e[3] > cut)
    assert all(e[3] >= cut for e in got)


def assert_state_matches(state: UserState, exp: Expected, settings: Settings) -> None:
    policy = StatePolicy(settings.window_length, settings.dedupe_memory, settings.late_tolerance_ms,
                         settings.interest_half_life_ms, settings.interest_short_half_life_ms)
    assert state.counts == exp.counts()
    assert state.first_ts == min(e.ts for e in exp.events)
    assert state.last_ts == max(e.ts for e in exp.events)
    assert_windows_match(state.window, exp.window(settings.window_length))
    # categories that faded below PRUNE_BELOW may be forgotten (core/state.py): compare the rest
    exp_interests = {c: v for c, v in exp.interests(settings.interest_half_life_ms).items() if v >= 1e-5}
    got = {c: v for c, v in state.top_interests(state.last_ts, policy, n=len(state.interests)) if v >= 1e-5}
    assert got.keys() == exp_interests.keys()
    for cat, value in exp_interests.items():
        assert math.isclose(got[cat], value, rel_tol=1e-9), cat
    for cat, value in exp.interests(settings.interest_short_half_life_ms).items():  # short-term horizon
        if cat in got:
            assert math.isclose(state.short_strength(cat, state.last_ts, policy), value,
                                rel_tol=1e-9, abs_tol=1e-12), cat
