"""Per-user state: the sequence window, the long-term interest profile and activity statistics.

One :class:`UserState` per user lives in the RocksDB-backed Faust table, encoded with msgpack
(``encode``/``decode``). It is read and written once per user per micro-batch: the hot path.

Policies (documented in the README):
- an event id seen among the user's last ``dedupe_memory`` applied events is a duplicate and is
  not applied;
- an event is too late, and not applied, if it is older than every event in a full dedupe memory
  (it could be a duplicate that was forgotten), or, when ``late_tolerance_ms`` is set, older than
  the user's newest event by more than that; any other late event is inserted at its place in
  time, so the window, counts and interests do not depend on the order in which events arrive;
- interest strength per category decays in event time, on two horizons: long-term
  (``interest_half_life_ms``, a week by default) and short-term (``short_half_life_ms``, a day), so
  replays give the same profile as live processing;
- recommendations are rate-limited per user in event time: an applied event triggers one when the
  user has none yet or when its time is at least ``recommend_min_gap_ms`` after the event that
  triggered the user's last one (0: every applied event). The decision reads only event times kept
  in the state, so it is the same at any speed and whatever the micro-batches; a late event (older
  than the last trigger) never triggers one unless the gap is 0.
"""

from __future__ import annotations

import bisect
import hashlib
import heapq
import math
from array import array
from collections.abc import Iterable
from dataclasses import dataclass, field

import msgpack

from stream_app.core.events import TYPE_CODE, Event

# 2: short-term interest beside the long-term one (1 is read, short = long); 3: the model's churn
# risk at the newest event and the rule of the open churn episode (1 and 2 are read: none known);
# 4: the event time of the user's last recommendation (1-3 are read: none yet)
FORMAT_VERSION = 4
SILENCE, RISK = "silence", "risk"  # the churn-warning rules (core/churn.py)
# Interest added per event, by type code (click, browse, purchase): buying says most.
TYPE_WEIGHT = (3.0, 1.0, 5.0)
PURCHASE = TYPE_CODE["purchase"]
# The profile forgets a category once its strength has decayed below PRUNE_BELOW (~20 half-lives
# without an event of it): what is forgotten is that small whatever the arrival order, so the profile
# does not depend on it. MAX_CATEGORIES bounds the state of extreme users (the weakest go first;
# only there does arrival order matter).
PRUNE_BELOW = 1e-6
MAX_CATEGORIES = 1024

WindowEntry = tuple[str, str | None, int, int]  # item_id, category_id, type code, ts (ms)


def event_id_hash(event_id: str) -> int:
    """Stable 64-bit hash of an event id (Python's hash() differs between processes)."""
    return int.from_bytes(hashlib.blake2b(event_id.encode(), digest_size=8).digest(), "little")


@dataclass(frozen=True, slots=True)
class StatePolicy:
    window_length: int = 50
    dedupe_memory: int = 256
    late_tolerance_ms: int | None = None
    interest_half_life_ms: int = 7 * 24 * 3600 * 1000
    short_half_life_ms: int = 24 * 3600 * 1000
    recommend_min_gap_ms: int = 0  # event time between two recommendations of a user (0: every event)

    @property
    def decay_rate(self) -> float:  # per ms
        return math.log(2) / self.interest_half_life_ms

    @property
    def short_decay_rate(self) -> float:  # per ms
        return math.log(2) / self.short_half_life_ms


@dataclass(slots=True)
class UserState:
    window: list[WindowEntry] = field(default_factory=list)
    # category -> [long-term strength at ref_ts, ref_ts]; decayed lazily, in event time
    interests: dict[str, list[float]] = field(default_factory=dict)
    counts: list[int] = field(default_factory=lambda: [0, 0, 0])
    first_ts: int = 0
    last_ts: int = 0
    # ring of the last applied events' id hashes and their event times (dedupe memory)
    recent_ids: array = field(default_factory=lambda: array("Q"))
    recent_ts: array = field(default_factory=lambda: array("q"))
    churn_warned_at: int = 0  # event time of the current churn episode's warning; 0 = none
    short: dict[str, float] = field(default_factory=dict)  # category -> short-term strength at ref_ts
    churn_risk: float | None = None  # the model's churn risk at the newest event; None = no model
    churn_rule: str = ""  # the rule that opened the current churn episode (SILENCE, RISK; "" = none)
    recommended_ts: int | None = None  # event time of the event that triggered the last recommendation
    _id_set: set[int] | None = None

    # --- applying events -----------------------------------------------------------------

    @property
    def events_total(self) -> int:
        return sum(self.counts)

    def is_duplicate(self, id_hash: int) -> bool:
        if self._id_set is None:
            self._id_set = set(self.recent_ids)
        return id_hash in self._id_set

    def is_too_late(self, ts: int, policy: StatePolicy) -> bool:
        if self.events_total == 0 or ts >= self.last_ts:  # in order: no scan of the dedupe memory
            return False
        if policy.late_tolerance_ms is not None and ts < self.last_ts - policy.late_tolerance_ms:
            return True
        return len(self.recent_ts) >= policy.dedupe_memory and ts < min(self.recent_ts)

    def apply(self, event: Event, id_hash: int, policy: StatePolicy) -> None:
        """Apply an accepted event (the caller has checked duplicates and lateness)."""
        code = TYPE_CODE[event.type]
        ts = event.ts
        self._remember(id_hash, ts, policy.dedupe_memory)
        entry: WindowEntry = (event.item_id, event.category_id, code, ts)
        window = self.window
        if not window or ts >= window[-1][3]:
            window.append(entry)
        else:  # out of order: keep the window in event-time order (stable for equal ts)
            bisect.insort_right(window, entry, key=lambda e: e[3])
        if len(window) > policy.window_length:
            del window[: len(window) - policy.window_length]
        if event.category_id is not None:
            self._add_interest(event.category_id, TYPE_WEIGHT[code], ts, policy)
        if self.events_total == 0:
            self.first_ts = self.last_ts = ts
        elif ts > self.last_ts:
            self.last_ts = ts
            if self.churn_rule != RISK:  # back after a silence: the episode ends (a risk episode
                self.close_churn_episode()  # ends when the risk falls: core/churn.py RiskRule)
        else:
            self.first_ts = min(self.first_ts, ts)
        self.counts[code] += 1

    def triggers_recommendation(self, ts: int, policy: StatePolicy) -> bool:
        """Whether the applied event at ``ts`` triggers a recommendation (the rule in the module
        docstring); if so, it is remembered as the user's last trigger."""
        gap = policy.recommend_min_gap_ms
        if gap > 0 and self.recommended_ts is not None and ts - self.recommended_ts < gap:
            return False
        self.recommended_ts = ts if self.recommended_ts is None else max(ts, self.recommended_ts)
        return True

    def close_churn_episode(self) -> None:
        self.churn_warned_at, self.churn_rule = 0, ""

    def _remember(self, id_hash: int, ts: int, memory: int) -> None:
        ids = self.recent_ids
        if len(ids) >= memory:
            n = len(ids) - memory + 1
            dropped = ids[:n]
            del ids[:n], self.recent_ts[:n]
            if self._id_set is not None:
                self._id_set.difference_update(dropped)
        ids.append(id_hash)
        self.recent_ts.append(ts)
        if self._id_set is not None:
            self._id_set.add(id_hash)

    def _add_interest(self, category: str, weight: float, ts: int, policy: StatePolicy) -> None:
        rate, short_rate = policy.decay_rate, policy.short_decay_rate
        cur = self.interests.get(category)
        if cur is None:
            self.interests[category] = [weight, ts]
            self.short[category] = weight
            self._prune(max(ts, self.last_ts), rate)
        elif ts >= cur[1]:
            cur[0] = cur[0] * math.exp(-rate * (ts - cur[1])) + weight
            self.short[category] = self.short[category] * math.exp(-short_rate * (ts - cur[1])) + weight
            cur[1] = ts
        else:  # a late event adds its weight as decayed to the category's reference time
            cur[0] += weight * math.exp(-rate * (cur[1] - ts))
            self.short[category] += weight * math.exp(-short_rate * (cur[1] - ts))

    def _prune(self, now: int, rate: float) -> None:
        # the short-term strength never exceeds the long-term one: pruning by the latter suffices
        faded = [c for c in self.interests if self.strength(c, now, rate) < PRUNE_BELOW]
        if len(self.interests) - len(faded) > MAX_CATEGORIES:
            faded.append(min((c for c in self.interests if c not in faded),
                             key=lambda c: (self.strength(c, now, rate), c)))
        for c in faded:
            del self.interests[c], self.short[c]

    # --- reading -------------------------------------------------------------------------

    def strength(self, category: str, at_ts: int, rate: float) -> float:
        value, ref = self.interests[category]
        return value * math.exp(-rate * max(0, at_ts - ref))

    def short_strength(self, category: str, at_ts: int, policy: StatePolicy) -> float:
        return self.short[category] * math.exp(
            -policy.short_decay_rate * max(0, at_ts - self.interests[category][1]))

    def top_interests(self, at_ts: int, policy: StatePolicy, n: int = 5) -> list[tuple[str, float]]:
        """Strongest categories (long-term) with their strength decayed to ``at_ts``."""
        rate = policy.decay_rate
        return _strongest(((c, self.strength(c, at_ts, rate)) for c in self.interests), n)

    def top_short_interests(self, at_ts: int, policy: StatePolicy, n: int = 5) -> list[tuple[str, float]]:
        """Strongest categories of the last days (short-term horizon) at ``at_ts``."""
        return _strongest(((c, self.short_strength(c, at_ts, policy)) for c in self.interests), n)

    def typical_gap_ms(self) -> int | None:
        """Median gap between the window's distinct event times (None before two of them).

        Derived from the window, so it does not depend on the order events arrived in."""
        return typical_gap_ms(self.window)

    # --- encoding ------------------------------------------------------------------------

    def encode(self) -> bytes:
        flat: list[object] = []
        for cat, (value, ref) in self.interests.items():
            flat += (cat, value, int(ref), self.short[cat])
        return msgpack.packb(
            (
                FORMAT_VERSION, self.window, flat, self.counts, self.first_ts, self.last_ts,
                self.recent_ids.tobytes(), self.recent_ts.tobytes(), self.churn_warned_at,
                self.churn_risk, self.churn_rule, self.recommended_ts,
            ),
            use_bin_type=True,
        )

    @classmethod
    def decode(cls, data: bytes) -> UserState:
        # tuples throughout (cheaper than lists: window entries are tuples anyway)
        (version, window, flat, counts, first_ts, last_ts, ids, id_ts, warned,
         *churn) = msgpack.unpackb(data, use_list=False)
        if version not in (1, 2, 3, FORMAT_VERSION):
            raise ValueError(f"user state format {version} is not {FORMAT_VERSION}")
        risk, rule = churn[:2] if version >= 3 else (None, SILENCE if warned else "")
        recommended = churn[2] if version >= 4 else None
        step = 3 if version == 1 else 4
        cats = flat[0::step]
        interests = {c: [v, r] for c, v, r in zip(cats, flat[1::step], flat[2::step], strict=True)}
        short = dict(zip(cats, flat[1::step] if version == 1 else flat[3::step], strict=True))
        recent, recent_ts = array("Q"), array("q")
        recent.frombytes(ids)
        recent_ts.frombytes(id_ts)
        return cls(list(window), interests, list(counts), first_ts, last_ts, recent, recent_ts,
                   warned, short, risk, rule, recommended)

    def to_json(self, policy: StatePolicy) -> dict[str, object]:
        """A readable view (for the HTTP endpoint and tests)."""
        return {
            "events_total": self.events_total,
            "counts": dict(zip(("click", "browse", "purchase"), self.counts, strict=True)),
            "first_ts": self.first_ts, "last_ts": self.last_ts,
            "typical_gap_ms": self.typical_gap_ms(),
            "window": [
                {"item_id": i, "category_id": c, "type": ("click", "browse", "purchase")[t], "ts": ts}
                for i, c, t, ts in self.window
            ],
            "interests": [
                {"category_id": c, "strength": round(s, 6),
                 "short_term": round(self.short_strength(c, self.last_ts, policy), 6)}
                for c, s in self.top_interests(self.last_ts, policy, n=len(self.interests))
            ],
            "churn_warned_at": self.churn_warned_at or None,
            "churn_rule": self.churn_rule or None,
            "churn_risk": round(self.churn_risk, 6) if self.churn_risk is not None else None,
        }


def typical_gap_ms(window: Iterable[WindowEntry]) -> int | None:
    """Median gap between a window's distinct event times (None before two of them)."""
    times = sorted({e[3] for e in window})
    if len(times) < 2:
        return None
    gaps = sorted(b - a for a, b in zip(times, times[1:], strict=False))
    return gaps[len(gaps) // 2]


def _strongest(scored: Iterable[tuple[str, float]], n: int) -> list[tuple[str, float]]:
    """The ``n`` strongest (category, strength), ties by category: a partial selection, not a sort
    of the whole profile (which may hold up to MAX_CATEGORIES), on every event."""
    return heapq.nsmallest(n, scored, key=lambda cs: (-cs[1], cs[0]))
