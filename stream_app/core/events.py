"""Input events: parsing and validating raw Kafka values against ``schemas/``.

The hot path: ``parse_event`` turns bytes into an :class:`Event` or a :class:`Rejection` with a
machine-readable reason and a human-readable detail. It never raises on bad input.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import fastjsonschema
import orjson

from stream_app.core.schemas import validator

EventType = Literal["click", "browse", "purchase"]
EVENT_TYPES: tuple[EventType, ...] = ("click", "browse", "purchase")
TYPE_CODE: dict[str, int] = {t: i for i, t in enumerate(EVENT_TYPES)}
# Schema of each event type (the topic's default name).
TYPE_SCHEMA: dict[str, str] = {"click": "clicks", "browse": "browses", "purchase": "purchases"}


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


def parse_event(
    value: bytes | None, event_type: EventType, *, max_bytes: int, now_ms: int, max_future_ms: int
) -> Event | Rejection:
    """Validate one raw input value of ``event_type`` (the topic it came from)."""
    if value is None:
        return Rejection("malformed_json", "empty message (null value)")
    if len(value) > max_bytes:
        return Rejection("oversized", f"value is {len(value)} bytes, limit {max_bytes}")
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        return Rejection("malformed_json", f"invalid JSON: {exc}")
    try:
        validator(TYPE_SCHEMA[event_type])(obj)
    except fastjsonschema.JsonSchemaException as exc:
        return Rejection("schema_violation", f"{TYPE_SCHEMA[event_type]}: {exc}")
    ts = obj["ts"]
    if ts > now_ms + max_future_ms:
        return Rejection(
            "future_timestamp",
            f"ts {ts} is {(ts - now_ms) / 3.6e6:.1f} h ahead of the clock "
            f"(limit {max_future_ms / 3.6e6:.1f} h)",
        )
    return Event(
        obj["event_id"], obj["user_id"], obj["item_id"], obj.get("category_id"), ts, event_type,
        obj.get("price"), obj.get("quantity"),
    )
