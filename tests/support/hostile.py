"""Hostile input records for the end-to-end property test: hypothesis strategies and a collector
that draws many examples in one deterministic run (a worker per example would be far too slow)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from stream_app.core.events import MAX_TS_MS, MIN_TS_MS, EventType

TYPES: tuple[EventType, ...] = ("click", "browse", "purchase")
TS0 = 1_700_000_000_000  # valid events' event time starts here (2023-11-14)
HUGE_AT_MOST = 3  # values or keys of 2 MB: a few are enough, each costs broker and worker


@dataclass(frozen=True, slots=True)
class Record:
    kind: str  # what made it hostile (for the report)
    type: EventType  # the input topic's event type
    key: bytes | None
    value: bytes | None


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner,
                                                                max_size=4),
    max_leaves=12)
wrong_values = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40), st.just(""), st.just("x" * 129), st.just(10**30), st.just(-1),
    st.sampled_from(["a\x00b", "line\n", "\x7f", "c\x85", "\x1b[31m"]),
    st.integers(TS0, TS0 + 10**9).map(float),  # a float where an integer belongs
    st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3), st.integers(),
                                                         max_size=2))
# textual literals a careless producer writes where a number belongs
literals = st.sampled_from([b"NaN", b"Infinity", b"-Infinity", b"1e400", b"-1e400",
                            b"1767225600000.0", b"1" + b"0" * 30, b"true", b"1.5e12", b"0x10",
                            b"01767225600000", b"+1"])
keys = st.one_of(st.none(), st.just(b""), st.binary(max_size=40),
                 st.text(max_size=20).map(str.encode), st.just(b"\xff\xfe" * 8))


def template(n: int, etype: EventType, ts: int) -> dict[str, Any]:
    d: dict[str, Any] = {"event_id": f"h-{n}", "user_id": f"u{n % 97}", "item_id": f"i{n % 501}",
                         "category_id": f"c{n % 13}", "ts": ts}
    if etype == "purchase":
        d |= {"price": 9.5, "quantity": 1}
    return d


@st.composite
def hostile_record(draw: st.DrawFn) -> tuple[str, Any, EventType, bytes | None]:
    """(kind, recipe, type, key): the value is built by :func:`build` (it needs a serial number)."""
    etype = draw(st.sampled_from(TYPES))
    key = draw(keys)
    kind = draw(st.sampled_from([
        "bytes", "json", "field", "field", "field", "missing", "literal", "literal",
        "invalid_utf8", "deep", "control", "future", "old", "null_value", "empty", "not_object"]))
    if draw(st.integers(0, 99)) == 50:  # one in a hundred (0, favoured by hypothesis, is not it)
        kind = draw(st.sampled_from(["huge", "huge_key"]))
    recipe: Any = None
    if kind == "bytes":
        recipe = draw(st.binary(max_size=200))
    elif kind in ("json", "not_object"):
        recipe = draw(json_values if kind == "json" else st.lists(json_values, max_size=3))
    elif kind == "field":
        field = draw(st.sampled_from(["event_id", "user_id", "item_id", "category_id", "ts",
                                      "price", "quantity"]))
        recipe = (field, draw(wrong_values))
    elif kind == "missing":
        recipe = draw(st.sampled_from(["event_id", "user_id", "item_id", "ts"]))
    elif kind == "literal":
        recipe = (draw(st.sampled_from(["ts", "price", "quantity"])), draw(literals))
    elif kind == "invalid_utf8":
        recipe = draw(st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xe2\x82"]))
    elif kind == "deep":
        recipe = draw(st.sampled_from([1025, 2000, 20_000, 40_000]))
    elif kind == "control":
        recipe = draw(st.sampled_from(["user_id", "item_id", "event_id"])), chr(
            draw(st.sampled_from([*range(0x20), 0x7F, *range(0x80, 0xA0)])))
    elif kind == "future":
        recipe = draw(st.integers(10 * 86_400_000, 10**12))  # ahead of the clock by this
    elif kind == "old":
        recipe = draw(st.integers(-(10**12), MIN_TS_MS - 1))
    elif kind in ("huge", "huge_key"):
        recipe = draw(st.sampled_from([70_000, 100_000, 300_000]))
    return kind, recipe, etype, key


def build(n: int, kind: str, recipe: Any, etype: EventType, key: bytes | None, ts: int,
          now_ms: int, huge_left: list[int]) -> Record:
    """The record a drawn recipe stands for; ``n`` makes its event id unique."""
    d = template(n, etype, ts)
    value: bytes | None
    if kind == "bytes":
        value = recipe
    elif kind in ("json", "not_object"):
        value = json.dumps(recipe).encode()  # NaN/Infinity literals and huge integers included
    elif kind == "field":
        d[recipe[0]] = recipe[1]
        value = json.dumps(d).encode()
    elif kind == "missing":
        del d[recipe]
        value = orjson.dumps(d)
    elif kind == "literal":
        d[recipe[0]] = 0
        value = orjson.dumps(d).replace(f'"{recipe[0]}":0'.encode(), f'"{recipe[0]}":'.encode()
                                        + recipe[1])
    elif kind == "invalid_utf8":
        value = orjson.dumps(d).replace(b'"i', b'"' + recipe + b"i", 1)
    elif kind == "deep":
        value = orjson.dumps(d)[:-1] + b',"x":' + b"[" * recipe + b"]" * recipe + b"}"
    elif kind == "control":
        d[recipe[0]] += recipe[1]
        value = orjson.dumps(d)
    elif kind == "future":
        d["ts"] = min(now_ms + recipe, MAX_TS_MS)
        value = orjson.dumps(d)
    elif kind == "old":
        d["ts"] = recipe
        value = orjson.dumps(d)
    elif kind == "null_value":
        value, key = None, key or b"k"  # aiokafka sends no record without both key and value
    elif kind == "empty":
        value = b""
    else:  # huge, huge_key: the first few of 2 MB, the rest 70-300 kB
        size = 2_000_000 if huge_left[0] > 0 else min(recipe, 300_000)
        huge_left[0] -= 1
        if kind == "huge":
            value = orjson.dumps({**d, "blob": "z" * size})
        else:
            value, key = orjson.dumps(d), b"K" * size
    return Record(kind, etype, key, value)


def draw_hostile(n: int, ts_of: Callable[[int], int], now_ms: int) -> list[Record]:
    """``n`` hostile records drawn by hypothesis in one derandomized run (same list every time)."""
    drawn: list[tuple[str, Any, EventType, bytes | None]] = []

    @settings(max_examples=n, derandomize=True, database=None, deadline=None,
              phases=[Phase.generate], suppress_health_check=list(HealthCheck))
    @given(hostile_record())
    def collect(example: tuple[str, Any, EventType, bytes | None]) -> None:
        drawn.append(example)

    collect()
    huge_left = [HUGE_AT_MOST]
    return [build(i, *ex, ts=ts_of(i), now_ms=now_ms, huge_left=huge_left)
            for i, ex in enumerate(drawn)]
