"""Input events: parsing and validating raw Kafka values against ``schemas/``.

The hot path: ``parse_event`` turns bytes into an :class:`Event` or a :class:`Rejection` with a
machine-readable reason and a human-readable detail. It never raises, whatever the bytes.

The schemas are the contract; the code adds only what JSON Schema cannot say: a JSON Schema
"integer" is any number with a zero fraction (``1.0``, ``1e3``), while the contract wants integer
literals, and ``ts`` must not be further ahead of the wall clock than ``max_future_ms``. The bounds
below are the schemas' own (a unit test keeps them equal).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, Literal

import fastjsonschema
import orjson

from stream_app.core.schemas import load_schema, validator

EventType = Literal["click", "browse", "purchase"]
EVENT_TYPES: tuple[EventType, ...] = ("click", "browse", "purchase")
TYPE_CODE: dict[str, int] = {t: i for i, t in enumerate(EVENT_TYPES)}
# Schema of each event type (the topic's default name).
TYPE_SCHEMA: dict[str, str] = {"click": "clicks", "browse": "browses", "purchase": "purchases"}

MIN_TS_MS = 946_684_800_000  # 2000-01-01T00:00:00Z: older stamps are bugs (seconds, zero), not data
MAX_TS_MS = 9_999_999_999_999  # static bound (year 2286); the clock bound is max_future_ms
MAX_ID_CHARS = 128  # ids: 1-128 characters, no control characters (C0, DEL, C1)
MAX_PRICE = 1_000_000_000  # purchases only: a finite number, 0..MAX_PRICE
MAX_QUANTITY = 1_000_000  # purchases only: an integer, 1..MAX_QUANTITY
MAX_DETAIL_CHARS = 500  # a rejection's detail is bounded whatever the input


@dataclass(slots=True, frozen=True)
class Event:
    event_id: str
    user_id: str
    item_id: str
    category_id: str | None
    ts: int  # event time, epoch ms
    type: EventType
    price: float | None = None
    quantity: int | None = None

    def to_json(self) -> dict[str, object]:
        d: dict[str, object] = {
            "event_id": self.event_id, "user_id": self.user_id, "item_id": self.item_id,
            "category_id": self.category_id, "ts": self.ts,
        }
        if self.price is not None:
            d["price"] = self.price
        if self.quantity is not None:
            d["quantity"] = self.quantity
        return d


@dataclass(slots=True, frozen=True)
class Rejection:
    reason: str  # one of the dead-letters schema's reasons
    detail: str


def _reject(reason: str, detail: str) -> Rejection:
    if len(detail) > MAX_DETAIL_CHARS:
        detail = detail[:MAX_DETAIL_CHARS - 1] + "…"
    return Rejection(reason, detail)


def _strict_numbers(obj: dict[str, Any], schema: dict[str, Any]) -> str | None:
    """What JSON Schema lets through but the contract excludes: a float where an integer belongs
    (``1.0``; ``true`` is already no integer), a non-finite number. None when all is well."""
    for name, prop in schema["properties"].items():
        v = obj.get(name)
        if v is None:
            continue
        types = prop.get("type")
        types = [types] if isinstance(types, str) else types or []
        if "integer" in types and type(v) is not int:
            return f"{name} must be a JSON integer, got {v!r}"
        if "number" in types and isinstance(v, float) and not math.isfinite(v):
            return f"{name} must be a finite number, got {v!r}"
    return None


def event_from_json(obj: Any, event_type: EventType) -> Event | Rejection:
    """Validate a decoded JSON value of ``event_type``; the clock is not consulted."""
    topic = TYPE_SCHEMA[event_type]
    if not isinstance(obj, dict):
        return _reject("schema_violation", f"{topic}: value is a JSON {type(obj).__name__}, "
                                           "not an object")
    try:
        validator(topic)(obj)
    except fastjsonschema.JsonSchemaException as exc:
        return _reject("schema_violation", f"{topic}: {exc}")
    problem = _strict_numbers(obj, _schema(topic))
    if problem is not None:
        return _reject("schema_violation", f"{topic}: {problem}")
    return _event(obj, event_type)


_schema = functools.cache(load_schema)  # read once per topic (hot path: every event)


def _event(obj: dict[str, Any], event_type: EventType) -> Event:
    # fields a topic's schema does not declare are extra, and extra fields are ignored
    declared = _schema(TYPE_SCHEMA[event_type])["properties"]
    return Event(
        obj["event_id"], obj["user_id"], obj["item_id"], obj.get("category_id"), obj["ts"],
        event_type,
        obj.get("price") if "price" in declared else None,
        obj.get("quantity") if "quantity" in declared else None,
    )


def event_from_validated(obj: Any, event_type: EventType) -> Event:
    """An event from a value that :func:`event_from_json` accepted before (ingest, before it
    repartitioned it): read without running the schema again, only the fields the user's state relies
    on checked. Raises ValueError (or KeyError) if it is no such value."""
    event = _event(obj, event_type)
    if not (type(event.ts) is int and type(event.event_id) is type(event.item_id) is str
            and (event.category_id is None or type(event.category_id) is str)):
        raise ValueError(f"not an event validated by ingest: {obj!r:.200}")
    return event


def parse_event(
    value: bytes | None, event_type: EventType, *, max_bytes: int, now_ms: int, max_future_ms: int,
    key: bytes | None = None,
) -> Event | Rejection:
    """Validate one raw input record of ``event_type`` (the topic it came from)."""
    if value is None:
        return Rejection("malformed_json", "empty message (null value)")
    if len(value) > max_bytes:
        return _reject("oversized", f"value is {len(value)} bytes, limit {max_bytes}")
    if key is not None and len(key) > max_bytes:
        # the key travels with the event (envelope headers, dead letters): bounded alike
        return _reject("oversized", f"key is {len(key)} bytes, limit {max_bytes}")
    try:
        # orjson also rejects invalid UTF-8, NaN/Infinity, numbers that overflow a double, and
        # nesting deeper than 1024 (its own limit, not Python's recursion limit)
        obj = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        return _reject("malformed_json", f"invalid JSON: {exc}")
    result = event_from_json(obj, event_type)
    if isinstance(result, Event) and result.ts > now_ms + max_future_ms:
        return _reject(
            "future_timestamp",
            f"ts {result.ts} is {(result.ts - now_ms) / 3.6e6:.1f} h ahead of the clock "
            f"(limit {max_future_ms / 3.6e6:.1f} h)",
        )
    return result
