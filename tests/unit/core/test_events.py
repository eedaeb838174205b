"""The input contract, rule by rule: ``parse_event`` accepts exactly what schemas/ (plus the two
rules JSON Schema cannot state: integer literals, the clock bound on ``ts``) allows, and never
raises, whatever the bytes. Property-based tests check the same against an independent oracle."""

from __future__ import annotations

import json
import math
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stream_app.core.events import (
    MAX_DETAIL_CHARS,
    MAX_ID_CHARS,
    MAX_PRICE,
    MAX_QUANTITY,
    MAX_TS_MS,
    MIN_TS_MS,
    Event,
    EventType,
    Rejection,
    event_from_json,
    parse_event,
)
from stream_app.core.schemas import example, load_schema

NOW = 1_767_225_600_000  # 2026-01-01
FUTURE = 86_400_000
MAX_BYTES = 65_536
GOOD: dict[str, Any] = {"event_id": "e1", "user_id": "u1", "item_id": "i1", "category_id": "c1",
                        "ts": NOW - 1000}
TOPIC: dict[str, EventType] = {"clicks": "click", "browses": "browse", "purchases": "purchase"}
# derandomize: the verdict must not depend on chance (and no example database in the worktree)
PROPERTY = settings(derandomize=True, database=None, deadline=None, max_examples=400,
                    suppress_health_check=[HealthCheck.too_slow])


def parse(value: bytes | None, etype: EventType = "click", key: bytes | None = None
          ) -> Event | Rejection:
    return parse_event(value, etype, max_bytes=MAX_BYTES, now_ms=NOW, max_future_ms=FUTURE, key=key)


def parse_obj(obj: Any, etype: EventType = "click") -> Event | Rejection:
    return parse(json.dumps(obj).encode(), etype)


def reason(result: Event | Rejection) -> str:
    return result.reason if isinstance(result, Rejection) else "accepted"


# --- the constants are the schemas' own ------------------------------------------------------

@pytest.mark.parametrize("topic", ["clicks", "browses", "purchases"])
def test_bounds_are_the_schemas(topic: str) -> None:
    props = load_schema(topic)["properties"]
    assert (props["ts"]["minimum"], props["ts"]["maximum"]) == (MIN_TS_MS, MAX_TS_MS)
    for name in ("event_id", "user_id", "item_id", "category_id"):
        assert (props[name]["minLength"], props[name]["maxLength"]) == (1, MAX_ID_CHARS)
    if topic == "purchases":
        assert (props["price"]["minimum"], props["price"]["maximum"]) == (0, MAX_PRICE)
        assert (props["quantity"]["minimum"], props["quantity"]["maximum"]) == (1, MAX_QUANTITY)
    else:  # extra fields there, ignored
        assert "price" not in props and "quantity" not in props


@pytest.mark.parametrize("topic", ["clicks", "browses", "purchases"])
def test_examples_are_accepted(topic: str) -> None:
    event = parse(orjson.dumps(example(topic)), TOPIC[topic])
    assert isinstance(event, Event) and event.to_json() == example(topic)


# --- ts --------------------------------------------------------------------------------------

@pytest.mark.parametrize(("raw", "expected"), [
    (b"1767225600000", "accepted"),
    (b"1767225600000.0", "schema_violation"),  # a float where an integer belongs
    (b"1.7672256e12", "schema_violation"),
    (b"true", "schema_violation"),
    (b'"1767225600000"', "schema_violation"),
    (b"null", "schema_violation"),
    (str(MIN_TS_MS).encode(), "accepted"),
    (str(MIN_TS_MS - 1).encode(), "schema_violation"),  # before 2000-01-01
    (b"1511544070", "schema_violation"),  # seconds, not ms
    (b"-1", "schema_violation"),
    (str(NOW + FUTURE).encode(), "accepted"),
    (str(NOW + FUTURE + 1).encode(), "future_timestamp"),
    (str(MAX_TS_MS + 1).encode(), "schema_violation"),
    (b"1" + b"0" * 30, "schema_violation"),  # overflows an integer: a float for orjson
    (b"18446744073709551615", "schema_violation"),
    (b"1e400", "malformed_json"),  # overflows a double
    (b"NaN", "malformed_json"),
    (b"Infinity", "malformed_json"),
])
def test_ts(raw: bytes, expected: str) -> None:
    value = orjson.dumps({**GOOD, "ts": 0}).replace(b'"ts":0', b'"ts":' + raw)
    assert reason(parse(value)) == expected


def test_ts_must_be_present() -> None:
    assert reason(parse_obj({k: v for k, v in GOOD.items() if k != "ts"})) == "schema_violation"


# --- ids -------------------------------------------------------------------------------------

@pytest.mark.parametrize("field", ["event_id", "user_id", "item_id"])
@pytest.mark.parametrize(("value", "expected"), [
    ("x" * MAX_ID_CHARS, "accepted"),
    ("ü" * MAX_ID_CHARS, "accepted"),  # characters, not bytes
    ("用户-🙂", "accepted"),
    ("x" * (MAX_ID_CHARS + 1), "schema_violation"),
    ("", "schema_violation"),
    (None, "schema_violation"),
    (7, "schema_violation"),
    (["u1"], "schema_violation"),
    ("a\u0000b", "schema_violation"),  # control characters, escaped in the JSON
    ("a\n", "schema_violation"),
    ("a\u007f", "schema_violation"),
    ("a\u0085", "schema_violation"),
])
def test_ids(field: str, value: Any, expected: str) -> None:
    assert reason(parse_obj({**GOOD, field: value})) == expected


@pytest.mark.parametrize("field", ["event_id", "user_id", "item_id"])
def test_ids_must_be_present(field: str) -> None:
    assert reason(parse_obj({k: v for k, v in GOOD.items() if k != field})) == "schema_violation"


def test_raw_control_character_in_a_string_is_malformed() -> None:
    assert reason(parse(b'{"event_id": "a\x01"}')) == "malformed_json"


@pytest.mark.parametrize(("value", "expected"), [
    (None, "accepted"), ("c" * MAX_ID_CHARS, "accepted"), ("", "schema_violation"),
    (3, "schema_violation"), ("c\t", "schema_violation"), ("c" * 129, "schema_violation"),
])
def test_category_id(value: Any, expected: str) -> None:
    assert reason(parse_obj({**GOOD, "category_id": value})) == expected


def test_category_id_may_be_absent() -> None:
    event = parse_obj({k: v for k, v in GOOD.items() if k != "category_id"})
    assert isinstance(event, Event) and event.category_id is None


# --- price and quantity ----------------------------------------------------------------------

@pytest.mark.parametrize(("raw", "expected"), [
    (b"0", "accepted"), (b"19.9", "accepted"), (b"1000000000", "accepted"), (b"null", "accepted"),
    (b"-0.01", "schema_violation"), (b"1000000000.5", "schema_violation"),
    (b"1" + b"0" * 30, "schema_violation"), (b'"19.9"', "schema_violation"),
    (b"true", "schema_violation"), (b"NaN", "malformed_json"), (b"-Infinity", "malformed_json"),
    (b"1e400", "malformed_json"),
])
def test_price(raw: bytes, expected: str) -> None:
    value = orjson.dumps({**GOOD, "price": 0}).replace(b'"price":0', b'"price":' + raw)
    assert reason(parse(value, "purchase")) == expected


@pytest.mark.parametrize(("raw", "expected"), [
    (b"1", "accepted"), (b"1000000", "accepted"), (b"null", "accepted"),
    (b"0", "schema_violation"), (b"1000001", "schema_violation"), (b"2.0", "schema_violation"),
    (b"1" + b"0" * 30, "schema_violation"), (b"true", "schema_violation"),
    (b'"2"', "schema_violation"),
])
def test_quantity(raw: bytes, expected: str) -> None:
    value = orjson.dumps({**GOOD, "quantity": 1}).replace(b'"quantity":1', b'"quantity":' + raw)
    assert reason(parse(value, "purchase")) == expected


@pytest.mark.parametrize("etype", ["click", "browse"])
def test_price_and_quantity_elsewhere_are_extra_fields_and_ignored(etype: EventType) -> None:
    event = parse_obj({**GOOD, "price": "free", "quantity": -3, "note": {"a": [1]}}, etype)
    assert isinstance(event, Event) and event.price is None and event.quantity is None


def test_purchase_keeps_price_and_quantity() -> None:
    event = parse_obj({**GOOD, "price": 19.9, "quantity": 2}, "purchase")
    assert isinstance(event, Event) and (event.price, event.quantity) == (19.9, 2)


def test_non_finite_numbers_are_rejected_even_when_decoded_elsewhere() -> None:
    # orjson never yields them; event_from_json is also used on values it did not decode
    for bad in (math.nan, math.inf):
        assert reason(event_from_json({**GOOD, "price": bad}, "purchase")) == "schema_violation"


# --- the value as a whole --------------------------------------------------------------------

@pytest.mark.parametrize(("value", "expected"), [
    (None, "malformed_json"),  # a null value (tombstone)
    (b"", "malformed_json"),
    (b"null", "schema_violation"),
    (b"[1, 2, 3]", "schema_violation"),
    (b'"a string"', "schema_violation"),
    (b"42", "schema_violation"),
    (b"{}", "schema_violation"),
    (b"\xff\xfe{}", "malformed_json"),  # invalid UTF-8
    (b'{"event_id": "\xc3\x28"}', "malformed_json"),
    (b'{"event_id": "\\ud800"}', "malformed_json"),  # a lone surrogate
    (b"\xef\xbb\xbf{}", "malformed_json"),  # a byte-order mark
    (b"{" * 10, "malformed_json"),
    (b"[" * 5000 + b"]" * 5000, "malformed_json"),  # deeper than orjson's limit: clean
    (b"{}\x00", "malformed_json"),
])
def test_whole_value(value: bytes | None, expected: str) -> None:
    assert reason(parse(value)) == expected


def test_deep_nesting_in_an_extra_field_within_orjsons_limit_is_ignored() -> None:
    value = orjson.dumps(GOOD)[:-1] + b',"deep":' + b"[" * 1000 + b"]" * 1000 + b"}"
    assert reason(parse(value)) == "accepted"


def test_oversized_value_and_key() -> None:
    big = orjson.dumps({**GOOD, "blob": "z" * MAX_BYTES})
    assert reason(parse(big)) == "oversized"
    assert reason(parse(orjson.dumps(GOOD), key=b"k" * (MAX_BYTES + 1))) == "oversized"
    assert reason(parse(orjson.dumps(GOOD), key=b"k" * MAX_BYTES)) == "accepted"


def test_detail_is_bounded() -> None:
    result = parse_obj({**GOOD, "user_id": "\n" * 100_000})
    assert isinstance(result, Rejection) and len(result.detail) <= MAX_DETAIL_CHARS


# --- properties ------------------------------------------------------------------------------

@PROPERTY
@given(st.binary(max_size=2048), st.sampled_from(["click", "browse", "purchase"]))
def test_never_raises_on_arbitrary_bytes(value: bytes, etype: EventType) -> None:
    result = parse(value, etype)
    assert isinstance(result, Event | Rejection)
    if isinstance(result, Rejection):
        assert result.reason in {"malformed_json", "schema_violation", "oversized",
                                 "future_timestamp"}
        assert 0 < len(result.detail) <= MAX_DETAIL_CHARS


json_scalars = (st.none() | st.booleans() | st.integers() | st.floats()
                | st.text(max_size=40))
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=20)


def dumps(obj: Any) -> bytes:
    """JSON as a careless producer writes it: NaN/Infinity literals and huge integers included."""
    return json.dumps(obj, ensure_ascii=False).encode()


@PROPERTY
@given(json_values, st.sampled_from(["click", "browse", "purchase"]))
def test_never_raises_on_arbitrary_json(obj: Any, etype: EventType) -> None:
    assert isinstance(parse(dumps(obj), etype), Event | Rejection)


# An oracle written from the README's contract, independent of the schemas and of parse_event.
def ok_id(v: Any, nullable: bool = False) -> bool:
    if v is None:
        return nullable
    return (type(v) is str and 1 <= len(v) <= 128
            and not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in v))


def finite_everywhere(v: Any) -> bool:
    if isinstance(v, float):
        return math.isfinite(v)
    if isinstance(v, list):
        return all(finite_everywhere(x) for x in v)
    if isinstance(v, dict):
        return all(finite_everywhere(x) for x in v.values())
    return True


def oracle(obj: dict[str, Any], etype: EventType) -> bool:
    ts = obj.get("ts", "missing")
    price, quantity = obj.get("price"), obj.get("quantity")
    return (finite_everywhere(obj)
            and all(ok_id(obj.get(f)) for f in ("event_id", "user_id", "item_id"))
            and ok_id(obj.get("category_id"), nullable=True)
            and type(ts) is int and 946_684_800_000 <= ts <= NOW + FUTURE
            and (etype != "purchase" or (
                (price is None or (type(price) in (int, float) and 0 <= price <= 1e9))
                and (quantity is None or (type(quantity) is int and 1 <= quantity <= 1e6)))))


hostile = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=140),
    st.just(""), st.just("x" * 129), st.sampled_from(["a\x00", "b\n", "\x7f", "c\x9f", "ü"]),
    st.integers(NOW - 10**9, NOW).map(float),  # a float where an integer belongs
    st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3), st.integers(),
                                                         max_size=2))


def mostly(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``valid`` nine times in ten, else a hostile value: about half the objects are valid."""
    return st.integers(0, 9).flatmap(lambda i: valid if i else hostile)


clean_text = st.text(st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=128)
field_values = {
    "event_id": mostly(clean_text), "user_id": mostly(clean_text), "item_id": mostly(clean_text),
    "category_id": mostly(st.none() | clean_text),
    "ts": mostly(st.integers(MIN_TS_MS - 10, NOW + FUTURE + 10)),
    "price": mostly(st.floats(0, 1e9) | st.integers(0, 10**9) | st.none()),
    "quantity": mostly(st.integers(0, 1_000_001) | st.none()),
    "extra": json_values,
}


@st.composite
def events(draw: st.DrawFn) -> dict[str, Any]:
    """Objects whose fields are each valid, invalid, or missing."""
    return {name: draw(strategy) for name, strategy in field_values.items()
            if draw(st.integers(0, 49)) > 0}  # each field missing one time in fifty


@settings(PROPERTY, max_examples=2000)
@given(events(), st.sampled_from(["click", "browse", "purchase"]))
def test_accepts_exactly_the_valid_ones(obj: dict[str, Any], etype: EventType) -> None:
    result = parse(dumps(obj), etype)
    assert isinstance(result, Event) == oracle(obj, etype), (obj, result)
    if isinstance(result, Event):
        assert (result.event_id, result.user_id, result.ts) == (
            obj["event_id"], obj["user_id"], obj["ts"])
        declared = etype == "purchase"
        assert result.price == (obj.get("price") if declared else None)
        assert result.quantity == (obj.get("quantity") if declared else None)


@PROPERTY
@given(st.builds(
    Event, st.text(min_size=1, max_size=20).filter(lambda s: ok_id(s)), st.just("u1"),
    st.just("i1"), st.none() | st.just("c"), st.integers(MIN_TS_MS, NOW + FUTURE),
    st.just("purchase"), st.none() | st.floats(0, 1e9), st.none() | st.integers(1, 10**6)))
def test_valid_events_round_trip(event: Event) -> None:
    assert parse(orjson.dumps(event.to_json()), "purchase") == event
