"""The records the service writes: repartitioned events with their envelope headers, and the
values of dead letters, recommendations and churn warnings (schemas/ has their public contract)."""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from aiokafka.partitioner import murmur2

from stream_app.core.events import Event, EventType, event_from_validated
from stream_app.core.recommender import Recommendation

# Header names on <app_id>-events-by-user records (internal; kept short, one set per event).
H_TYPE, H_SRC, H_KEY, H_RECV, H_KTS = "t", "src", "k", "recv", "kts"


def partition_for_user(user: bytes, partitions: int) -> int:
    """The partition the default (Java-compatible murmur2) partitioner gives a user id key."""
    return (murmur2(user) & 0x7FFFFFFF) % partitions


@dataclass(frozen=True, slots=True)
class Source:
    """Where an input record was read: its coordinates, Kafka timestamp (s) and original key."""

    topic: str
    partition: int
    offset: int
    timestamp: float | None
    key: bytes | None


@dataclass(frozen=True, slots=True)
class Envelope:
    """What ingest attaches to a repartitioned event: its type, source and receipt wall time (s)."""

    type: EventType
    source: Source
    received: float

    def headers(self) -> list[tuple[str, bytes]]:
        s = self.source
        return [
            (H_TYPE, self.type.encode()),
            (H_SRC, f"{s.topic}:{s.partition}:{s.offset}".encode()),
            (H_KEY, s.key or b""),
            (H_RECV, repr(self.received).encode()),
            (H_KTS, repr(s.timestamp).encode()),
        ]

    @classmethod
    def from_headers(cls, raw: Any) -> Envelope:
        h = dict(raw or ())
        # topic names cannot contain ':' (Kafka allows [a-zA-Z0-9._-])
        topic, partition, offset = h[H_SRC].decode().rsplit(":", 2)
        kts = h.get(H_KTS)
        timestamp = float(kts) if kts is not None and kts != b"None" else None
        source = Source(topic, int(partition), int(offset), timestamp, h.get(H_KEY) or None)
        return cls(h[H_TYPE].decode(), source, float(h[H_RECV]))


def decode_repartitioned(value: bytes, envelope: Envelope) -> Event:
    """An event that ingest already validated: the original JSON plus its type header (not validated
    again: :func:`~stream_app.core.events.event_from_validated`). Raises ValueError (or KeyError,
    TypeError) if it is no such event."""
    obj = orjson.loads(value)
    if not isinstance(obj, dict):
        raise ValueError(f"a repartitioned value is a JSON {type(obj).__name__}, not an object")
    return event_from_validated(obj, envelope.type)


# Bytes of the original value (and key) a dead letter keeps: a letter stays far below any
# producer's or broker's record limit (1 MB by default), whatever the input was.
DEAD_LETTER_KEEP_BYTES = 16 * 1024


def _kept(data: bytes, digest_only: bool = False) -> dict[str, Any]:
    """A bounded copy of ``data`` (base64; empty when ``digest_only``) with the size and sha256 of
    the whole."""
    kept = b"" if digest_only else data[:DEAD_LETTER_KEEP_BYTES]
    return {"b64": base64.b64encode(kept).decode(), "size": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
            "truncated": len(data) > len(kept)}


def dead_letter(reason: str, detail: str, source: Source, value: bytes | None,
                digest_only: bool = False) -> tuple[bytes | None, bytes]:
    """(Kafka key, value) of the dead letter of an input record: the key is the original one,
    truncated like the value. A null value is kept as empty bytes; a null or empty key as null.
    ``digest_only`` (TRACKER_DEAD_LETTER_VALUES=digest): no bytes of the value or key are kept,
    only their size and sha256 (``value_b64`` is empty, ``key_b64`` and the Kafka key null)."""
    v = _kept(value or b"", digest_only)
    k = _kept(source.key, digest_only) if source.key else None
    letter = {
        "reason": reason, "detail": detail,
        "source": {
            "topic": source.topic, "partition": source.partition, "offset": source.offset,
            "timestamp": int(source.timestamp * 1000) if source.timestamp is not None else None,
            "key_b64": None if k is None or digest_only else k["b64"], "key_size": k and k["size"],
            "key_sha256": k and k["sha256"], "key_truncated": bool(k and k["truncated"]),
        },
        "value_b64": v["b64"], "value_size": v["size"], "value_sha256": v["sha256"],
        "value_truncated": v["truncated"],
        "dead_lettered_at": int(time.time() * 1000),
    }
    if digest_only:
        letter["digest_only"] = True
        return None, orjson.dumps(letter)
    key = source.key[:DEAD_LETTER_KEEP_BYTES] if source.key is not None else None
    return key, orjson.dumps(letter)


def recommendation_value(event: Event, src_topic: str, answer: Recommendation,
                         interests: list[tuple[str, float]], model: dict[str, str],
                         short_interests: Sequence[tuple[str, float]] = ()) -> bytes:
    value: dict[str, Any] = {
        "user_id": event.user_id, "ts": event.ts,
        "items": [{"item_id": i, "score": s, "category_id": c} for i, s, c in answer.items],
        "interests": [{"category_id": c, "strength": round(s, 6)} for c, s in interests],
        "short_term_interests": [{"category_id": c, "strength": round(s, 6)} for c, s in short_interests],
        "model": model,
        "trigger": {"event_id": event.event_id, "topic": src_topic, "ts": event.ts},
        "emitted_at": int(time.time() * 1000),
    }
    if answer.categories is not None:
        value["predicted_categories"] = [
            {"category_id": c, "probability": round(p, 6)} for c, p in answer.categories]
    if answer.churn_probability is not None:
        value["churn_probability"] = round(answer.churn_probability, 6)
    return orjson.dumps(value)
