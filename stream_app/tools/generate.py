"""A synthetic workload: users with category interests that drift, some of whom churn.

Deterministic for a seed and emitted in global event-time order, so the same spec gives the same
events on every machine. The ground truth (who churned and when they were last seen, when each
user's interests shifted) is collected while generating, because it depends on where the stream
was cut (``max_events``).

Model of one user:
- a personal mean gap between events (log-normal around ``mean_gap_ms``), exponential gaps;
- ``interests_per_user`` favourite categories with random weights; each event picks a favourite
  (or, with ``explore_probability``, any category), then an item of that category, skewed towards
  the category's popular items and, with ``sequel_probability``, the item after the previous one
  (a next-item signal a sequence model can learn);
- before each event, with ``drift_probability``, the favourites are replaced by new ones
  (an interest shift, recorded in the ground truth);
- churners (``churn_fraction`` of users) stop for good at a random point between
  ``churn_window`` fractions of the workload's span, after a decline: over the last
  ``churn_decline_ms`` before that point their gaps grow linearly up to ``churn_slowdown`` times
  their usual gap and their purchase probability fades linearly to zero (progress ``x`` from 0 at
  the start of the phase to 1 at the churn time: gap x ``1 + (churn_slowdown - 1) x``, purchase
  probability x ``1 - x``). Churners do not look different before the phase. ``churn_slowdown = 1``
  and ``churn_decline_ms = 0`` give the abrupt stop of earlier versions. The decline draws no extra
  random numbers: the workload stays a function of the spec alone.
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson

from stream_app.core.events import Event, EventType

DAY_MS = 24 * 3600 * 1000


@dataclass(frozen=True)
class WorkloadSpec:
    users: int = 1000
    items: int = 5000
    categories: int = 50
    seed: int = 7
    start_ts_ms: int = 1_700_000_000_000  # 2023-11-14T22:13:20Z
    span_ms: int = 14 * DAY_MS  # event time covered; users stop at start + span
    mean_gap_ms: int = 30 * 60 * 1000  # mean time between one user's events
    max_events: int | None = None  # stop after this many events (None: the whole span)
    interests_per_user: int = 3
    drift_probability: float = 0.005  # per event: favourites replaced by new ones
    explore_probability: float = 0.1  # per event: a category outside the favourites
    sequel_probability: float = 0.3  # per event: the item after the previous one
    churn_fraction: float = 0.1
    churn_window: tuple[float, float] = (0.3, 0.7)  # churn time, as fractions of the span
    churn_decline_ms: int = 7 * DAY_MS  # churners' activity declines over this long before they stop
    churn_slowdown: float = 8.0  # churners' gaps at the end of the decline, x their usual gap
    click_probability: float = 0.15
    purchase_probability: float = 0.04  # the rest are browses

    def __post_init__(self) -> None:
        if min(self.users, self.items, self.categories) < 1:
            raise ValueError("users, items and categories must be >= 1")
        if self.interests_per_user > self.categories:
            raise ValueError("interests_per_user cannot exceed categories")
        if not 0 <= self.churn_window[0] <= self.churn_window[1] <= 1:
            raise ValueError("churn_window must be 0 <= a <= b <= 1")
        if self.click_probability + self.purchase_probability > 1:
            raise ValueError("click + purchase probability must be <= 1")
        if self.churn_decline_ms < 0 or self.churn_slowdown < 1:
            raise ValueError("churn_decline_ms must be >= 0 and churn_slowdown >= 1")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class InterestShift:
    user_id: str
    ts: int  # event time of the first event under the new interests
    before: list[str]
    after: list[str]


@dataclass
class GroundTruth:
    """What the generator did, for scoring the tracker: filled in while events are generated."""

    spec: WorkloadSpec
    events: int = 0
    first_ts: int | None = None
    last_ts: int | None = None
    churners: dict[str, int] = field(default_factory=dict)  # user -> last event ts (churned users)
    churn_at: dict[str, int] = field(default_factory=dict)  # user -> planned churn time
    shifts: list[InterestShift] = field(default_factory=list)
    last_seen: dict[str, int] = field(default_factory=dict)  # every user -> last event ts

    def to_json(self) -> dict[str, Any]:
        return {
            "spec": self.spec.to_json(),
            "events": self.events,
            "first_ts": self.first_ts,
            "last_ts": self.last_ts,
            "churners": [
                {"user_id": u, "last_event_ts": self.last_seen.get(u), "churn_at": self.churn_at[u]}
                for u in sorted(self.churners, key=_user_order)
            ],
            "interest_shifts": [asdict(s) for s in self.shifts],
            "last_seen": dict(sorted(self.last_seen.items(), key=lambda kv: _user_order(kv[0]))),
        }

    def write(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(orjson.dumps(self.to_json(), option=orjson.OPT_INDENT_2))
        return path


def _user_order(user_id: str) -> int:
    return int(user_id[1:])


@dataclass(slots=True)
class _User:
    uid: str
    gap_ms: float
    favourites: list[int]
    weights: list[float]
    churn_at: int | None
    last_item: int | None = None

    def decline(self, ts: int, spec: WorkloadSpec) -> float:
        """Progress of the user's pre-churn decline at ``ts``: 0 before the phase (and for users
        who do not churn), rising linearly to 1 at the churn time."""
        if self.churn_at is None or spec.churn_decline_ms == 0:
            return 0.0
        return min(1.0, max(0.0, 1 - (self.churn_at - ts) / spec.churn_decline_ms))


class _Catalog:
    """Items assigned to categories; each category's items in popularity order."""

    def __init__(self, spec: WorkloadSpec, rng: random.Random):
        cats: list[list[int]] = [[] for _ in range(spec.categories)]
        # Every category gets at least one item; the rest land at random.
        for item in range(spec.items):
            cat = item if item < spec.categories else rng.randrange(spec.categories)
            cats[cat % spec.categories].append(item)
        self.by_category = cats
        self.category_of = {i: c for c, items in enumerate(cats) for i in items}
        self.position = {i: n for items in cats for n, i in enumerate(items)}
        self.price = {i: round(rng.uniform(1, 200), 2) for i in range(spec.items)}

    def pick(self, rng: random.Random, cat: int) -> int:
        items = self.by_category[cat]
        # Squaring a uniform skews towards the head: a popular few, a long tail.
        return items[int(len(items) * rng.random() ** 2)]

    def sequel(self, item: int) -> int:
        items = self.by_category[self.category_of[item]]
        return items[(self.position[item] + 1) % len(items)]


def iter_synthetic_events(spec: WorkloadSpec, truth: GroundTruth | None = None) -> Iterator[Event]:
    """The workload's events in event-time order; fills ``truth`` (if given) as it goes."""
    rng = random.Random(spec.seed)
    catalog = _Catalog(spec, rng)
    end_ts = spec.start_ts_ms + spec.span_ms
    n_churners = round(spec.users * spec.churn_fraction)
    churner_idx = set(rng.sample(range(spec.users), n_churners))
    users: list[_User] = []
    heap: list[tuple[int, int]] = []
    lo, hi = spec.churn_window
    for n in range(spec.users):
        churn_at = None
        if n in churner_idx:
            churn_at = spec.start_ts_ms + int(spec.span_ms * rng.uniform(lo, hi))
        favs, weights = _new_interests(spec, rng)
        user = _User(f"u{n}", spec.mean_gap_ms * rng.lognormvariate(0, 0.5), favs, weights, churn_at)
        users.append(user)
        if truth is not None and churn_at is not None:
            truth.churn_at[user.uid] = churn_at
        heapq.heappush(heap, (spec.start_ts_ms + int(rng.expovariate(1 / user.gap_ms)), n))

    produced = 0
    while heap and (spec.max_events is None or produced < spec.max_events):
        ts, n = heapq.heappop(heap)
        user = users[n]
        if ts >= end_ts or (user.churn_at is not None and ts >= user.churn_at):
            continue  # this user is done
        if rng.random() < spec.drift_probability:
            before = user.favourites
            user.favourites, user.weights = _new_interests(spec, rng)
            user.last_item = None
            if truth is not None:
                truth.shifts.append(InterestShift(
                    user.uid, ts, [f"c{c}" for c in before], [f"c{c}" for c in user.favourites]
                ))
        event = _next_event(spec, rng, catalog, user, ts, produced)
        produced += 1
        if truth is not None:
            truth.events = produced
            truth.first_ts = ts if truth.first_ts is None else truth.first_ts
            truth.last_ts = ts
            truth.last_seen[user.uid] = ts
            if user.churn_at is not None:
                truth.churners[user.uid] = ts
        yield event
        slowdown = 1 + (spec.churn_slowdown - 1) * user.decline(ts, spec)
        heapq.heappush(heap, (ts + 1 + int(slowdown * rng.expovariate(1 / user.gap_ms)), n))


def _new_interests(spec: WorkloadSpec, rng: random.Random) -> tuple[list[int], list[float]]:
    favs = rng.sample(range(spec.categories), spec.interests_per_user)
    weights = [rng.random() + 0.2 for _ in favs]
    return favs, weights


def _next_event(
    spec: WorkloadSpec, rng: random.Random, catalog: _Catalog, user: _User, ts: int, n: int
) -> Event:
    if user.last_item is not None and rng.random() < spec.sequel_probability:
        item = catalog.sequel(user.last_item)
    else:
        if rng.random() < spec.explore_probability:
            cat = rng.randrange(spec.categories)
        else:
            cat = rng.choices(user.favourites, user.weights)[0]
        item = catalog.pick(rng, cat)
    user.last_item = item
    r = rng.random()
    etype: EventType = "browse"
    price: float | None = None
    quantity: int | None = None
    buy = spec.purchase_probability * (1 - user.decline(ts, spec))
    if r < buy:
        etype, price, quantity = "purchase", catalog.price[item], 1 + int(-math.log(1 - rng.random()))
    elif r < buy + spec.click_probability:
        etype = "click"
    return Event(
        f"syn-{spec.seed}-{n}", user.uid, f"i{item}", f"c{catalog.category_of[item]}", ts, etype,
        price, quantity,
    )


def write_workload_recording(
    spec: WorkloadSpec, path: str | Path, topics: Mapping[EventType, str], partitions: int,
    truth: GroundTruth | None = None,
) -> int:
    """Write the workload as a recording file (``replay`` sends it), as if a producer keyed by user
    id had put it on ``topics`` (event type -> topic name) with ``partitions`` partitions each.

    Partitions come from Kafka's default partitioner (murmur2 of the key), offsets count per
    partition, the record timestamp is the event time. Returns the number of events written.
    """
    from aiokafka.partitioner import DefaultPartitioner

    from stream_app.kafka.clients import encode_event
    from stream_app.tools.recording import RecordedRecord, RecordingWriter

    partitioner = DefaultPartitioner()
    all_parts = list(range(partitions))
    names = list(dict.fromkeys(topics.values()))
    offsets: dict[tuple[str, int], int] = {}
    meta = {"generated": spec.to_json()}
    with RecordingWriter(path, names, partitions=dict.fromkeys(names, partitions),
                         event_topics={t: e for e, t in topics.items()}, meta=meta) as writer:
        for ev in iter_synthetic_events(spec, truth):
            key, value = encode_event(ev)
            topic = topics[ev.type]
            p = partitioner(key, all_parts, all_parts)
            off = offsets.get((topic, p), 0)
            offsets[(topic, p)] = off + 1
            writer.write(RecordedRecord(topic, p, off, ev.ts, 0, key, value))
        return writer.count
