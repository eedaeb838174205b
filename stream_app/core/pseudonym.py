"""Pseudonyms: state and outputs keyed by a keyed hash of the user id instead of the raw id.

With ``TRACKER_PSEUDONYMIZE=true`` ingest replaces every event's ``user_id`` by
``HMAC-SHA256(TRACKER_PSEUDONYM_KEY, user id)`` (hex, the first 32 characters: 128 bits) before it
repartitions the event, so the repartition topic, the state table, its changelog and every output
only ever see the pseudonym. The profile API and erasure requests take the raw id and hash it the
same way. Without the key a pseudonym cannot be linked back to the id (nor computed from it); with
another key the same id gets another pseudonym, so changing the key starts every user afresh.
"""

from __future__ import annotations

import hashlib
import hmac

import orjson

from stream_app.core.config import Settings

PSEUDONYM_CHARS = 32


def pseudonym(user_id: str, key: bytes) -> str:
    """HMAC-SHA256 of the user id's UTF-8 bytes, hex, truncated to 32 characters."""
    return hmac.new(key, user_id.encode(), hashlib.sha256).hexdigest()[:PSEUDONYM_CHARS]


class Pseudonyms:
    """The user id -> key map of one worker: the raw id, or its pseudonym when a key is given."""

    def __init__(self, key: bytes | None):
        self._key = key

    def __repr__(self) -> str:  # never show the key
        return f"Pseudonyms(enabled={self.enabled})"

    @property
    def enabled(self) -> bool:
        return self._key is not None

    def user_id(self, raw_id: str) -> str:
        """The id state and outputs use for ``raw_id``."""
        return pseudonym(raw_id, self._key) if self._key is not None else raw_id

    def user_key(self, raw_id: str) -> bytes:
        """The table / Kafka key of ``raw_id``."""
        return self.user_id(raw_id).encode()

    def rewrite_event(self, value: bytes, user_id: str) -> bytes:
        """An event's JSON value with ``user_id`` replaced (unchanged when not pseudonymizing).
        Other fields, extra ones included, are kept."""
        if self._key is None:
            return value
        event = orjson.loads(value)
        event["user_id"] = user_id
        return orjson.dumps(event)


MIN_KEY_CHARS = 16


def pseudonyms_for(settings: Settings) -> Pseudonyms:
    """The worker's map: pseudonyms when ``settings.pseudonymize``, else raw ids. Raises
    ValueError when pseudonymizing without a key of at least 16 characters. (Only the worker
    needs the key: ``interest-tracker erase`` sends the raw id and the worker hashes it.)"""
    if not settings.pseudonymize:
        return Pseudonyms(None)
    key = settings.pseudonym_key.get_secret_value() if settings.pseudonym_key else ""
    if len(key) < MIN_KEY_CHARS:
        raise ValueError(f"TRACKER_PSEUDONYMIZE needs TRACKER_PSEUDONYM_KEY of at least {MIN_KEY_CHARS} "
                         "characters in the environment")
    return Pseudonyms(key.encode())
