"""The delivery rule and bounded dead letters, without a broker: outputs count only once delivered,
a failed delivery stops the worker, a record track cannot decode becomes an internal_error letter."""

from __future__ import annotations

import asyncio
import base64
import hashlib
from types import SimpleNamespace
from typing import Any

import orjson
import pytest

from stream_app.core.config import Settings
from stream_app.core.schemas import validator
from stream_app.service import metrics
from stream_app.service.records import DEAD_LETTER_KEEP_BYTES, Envelope, Source, dead_letter
from stream_app.service.sender import DeliveryFailed, OutputRecord, Outputs
from stream_app.service.track import Tracker


class FakeSender:
    def __init__(self, fail_on: bytes | None = None):
        self.fail_on, self.sent = fail_on, []

    async def send(self, topic: str, key: bytes | None, value: bytes, partition: int | None = None,
                   headers: Any = None, source: Any = None) -> asyncio.Future[Any]:
        if value == self.fail_on:
            raise RuntimeError("MessageSizeTooLarge")
        self.sent.append(value)
        fut = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        return fut


class FakeApp:
    def __init__(self) -> None:
        self.crashed: BaseException | None = None

    async def crash(self, reason: BaseException) -> None:
        self.crashed = reason


def count(reason: str) -> float:
    return metrics.DEAD_LETTERS.labels(reason)._value.get()  # noqa: SLF001


def test_counted_only_once_delivered_and_a_failure_stops_the_worker() -> None:
    out = Outputs()
    out.add(OutputRecord("dead-letters", b"k", b"a", dead_letter="malformed_json"))
    out.add(OutputRecord("dead-letters", b"k", b"b", dead_letter="malformed_json"))
    before, app = count("malformed_json"), FakeApp()
    with pytest.raises(DeliveryFailed):
        asyncio.run(out.send(FakeSender(fail_on=b"b"), app))  # type: ignore[arg-type]
    assert isinstance(app.crashed, DeliveryFailed)
    assert count("malformed_json") == before  # nothing counted: not all was written
    asyncio.run(out.send(FakeSender(), app))  # type: ignore[arg-type]
    assert count("malformed_json") == before + 2


@pytest.mark.parametrize("size", [0, 10, DEAD_LETTER_KEEP_BYTES, DEAD_LETTER_KEEP_BYTES + 1, 2_000_000])
def test_dead_letters_are_bounded(size: int) -> None:
    value, key = b"v" * size, b"k" * size
    dl_key, raw = dead_letter("oversized", "big", Source("clicks", 1, 2, 3.0, key or None), value)
    letter = orjson.loads(raw)
    validator("dead-letters")(letter)
    assert len(raw) < 3 * DEAD_LETTER_KEEP_BYTES and len(dl_key or b"") <= DEAD_LETTER_KEEP_BYTES
    assert letter["value_size"] == size and letter["value_truncated"] == (size > DEAD_LETTER_KEEP_BYTES)
    assert letter["value_sha256"] == hashlib.sha256(value).hexdigest()
    assert base64.b64decode(letter["value_b64"]) == value[:DEAD_LETTER_KEEP_BYTES]
    src = letter["source"]
    if size:
        assert (src["key_size"], src["key_sha256"]) == (size, hashlib.sha256(key).hexdigest())
        assert src["key_truncated"] == (size > DEAD_LETTER_KEEP_BYTES)
    else:
        assert src["key_b64"] is src["key_size"] is src["key_sha256"] is None


def test_track_dead_letters_a_record_it_cannot_decode() -> None:
    headers = Envelope("click", Source("clicks", 0, 7, 1.0, b"orig"), 2.0).headers()
    broken = [  # (headers, value): a float ts, no headers, not JSON
        (headers, b'{"event_id":"e","user_id":"u","item_id":"i","ts":1767225600000.0}'),
        ([], b"{}"), (headers, b"\xff"),
    ]
    tracker = SimpleNamespace(settings=Settings())
    for hdrs, value in broken:
        out = Outputs()
        msg = SimpleNamespace(topic="by-user", partition=3, offset=9, timestamp=1.0, key=b"u",
                              value=value, headers=hdrs)
        assert Tracker._decode(tracker, msg, out) is None  # type: ignore[arg-type]  # noqa: SLF001
        [record] = out.records
        letter = orjson.loads(record.value)
        assert record.dead_letter == letter["reason"] == "internal_error"
        expected = ("clicks", 7) if hdrs else ("by-user", 9)
        assert (letter["source"]["topic"], letter["source"]["offset"]) == expected


def test_dead_letter_digest_only_keeps_no_bytes() -> None:
    value, key = b'{"user_id": "someone", "bad', b"someone"
    source = Source("clicks", 1, 5, 1.5, key)
    dl_key, raw = dead_letter("malformed_json", "invalid JSON", source, value, digest_only=True)
    letter = orjson.loads(raw)
    validator("dead-letters")(letter)
    assert dl_key is None and letter["digest_only"] is True
    assert letter["value_b64"] == "" and letter["source"]["key_b64"] is None
    assert letter["value_size"] == len(value) and letter["value_truncated"] is True
    assert letter["value_sha256"] == hashlib.sha256(value).hexdigest()
    assert letter["source"]["key_sha256"] == hashlib.sha256(key).hexdigest()
    assert b"someone" not in raw
