"""Bad input on the real broker: every case lands in dead-letters with its reason, the original
bytes and its source coordinates; the valid events around it are all processed; the worker lives."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import time
from pathlib import Path

import orjson
import pytest

from stream_app.core.config import Settings
from stream_app.core.events import Event
from stream_app.core.schemas import validator
from tests.conftest import shared_data
from tests.support.expected import taobao_events
from tests.support.streaming import WorkerProcess, json_values, produce, read_topic

pytestmark = [pytest.mark.broker, pytest.mark.both_engines]
DAY = 86_400_000


def test_bad_input_goes_to_dead_letters(settings: Settings, tmp_path: Path) -> None:
    # 3 partitions, unlike the broker's default: every topic must still be created with 3
    settings = settings.model_copy(update={"late_tolerance_ms": 30 * DAY, "partitions": 3})
    valid = taobao_events(shared_data("taobao/UserBehavior_10k.csv"), limit=600)
    first, last = valid[0], valid[-1]
    now = int(time.time() * 1000)
    good = orjson.loads(orjson.dumps(first.to_json()))
    clicks = settings.topic_clicks
    bad: dict[str, tuple[str, bytes | None, bytes | None]] = {
        "malformed_json": (clicks, b"u1", b'{"event_id": "x1", "user_id": '),
        "wrong_type": (clicks, b"u1", orjson.dumps({**good, "event_id": "x2", "ts": "yesterday"})),
        "missing_field": (settings.topic_browses, None,
                          orjson.dumps({k: v for k, v in good.items() if k != "item_id"} | {
                              "event_id": "x3"})),
        "category_number": (clicks, b"u1", orjson.dumps({**good, "event_id": "x4", "category_id": 7})),
        "empty_user": (clicks, b"u1", orjson.dumps({**good, "event_id": "x5", "user_id": ""})),
        "oversized": (clicks, b"u1", orjson.dumps({**good, "event_id": "x6", "blob": "z" * 70_000})),
        "future": (clicks, b"u1", orjson.dumps({**good, "event_id": "x7", "ts": now + 3 * DAY})),
        "null_value": (clicks, b"u1", None),
        "not_an_object": (settings.topic_purchases, b"u1", b"[1, 2, 3]"),
    }
    reasons = {
        "malformed_json": "malformed_json", "wrong_type": "schema_violation",
        "missing_field": "schema_violation", "category_number": "schema_violation",
        "empty_user": "schema_violation", "oversized": "oversized", "future": "future_timestamp",
        "null_value": "malformed_json", "not_an_object": "schema_violation",
    }
    # a duplicate of an applied event, and an event far older than its user's newest event,
    # both sent on the same topic and key as the originals so that they arrive after them
    last_topic = {"click": clicks, "browse": settings.topic_browses,
                  "purchase": settings.topic_purchases}[last.type]
    duplicate = orjson.dumps(last.to_json())
    too_late = orjson.dumps(Event("late-1", last.user_id, "i-late", None, last.ts - 45 * DAY,
                                  last.type).to_json())
    unknown_item = Event("unknown-item-1", last.user_id, "item-nobody-has-seen", "cat-new",
                         last.ts + 1000, "click")
    worker = WorkerProcess(settings, tmp_path / "worker.log").start()
    try:
        asyncio.run(produce(settings, valid, raw=list(bad.values())))
        asyncio.run(produce(settings, [], raw=[
            (last_topic, last.user_id.encode(), duplicate),
            (last_topic, last.user_id.encode(), too_late),
        ]))
        asyncio.run(produce(settings, [unknown_item]))  # still accepted: state is item-agnostic
        n_valid = len(valid) + 1
        recs = asyncio.run(read_topic(settings, settings.topic_recommendations, expect=n_valid))
        dead = asyncio.run(read_topic(settings, settings.topic_dead_letters, expect=len(bad) + 2))
        assert worker.alive, worker.log()[-3000:]
        assert {v["trigger"]["event_id"] for v in json_values(recs)} == {
            e.event_id for e in [*valid, unknown_item]}
        assert len(recs) == n_valid
        # dead letters keep the first 16 KiB of the value, and the size and sha256 of all of it
        records = {orjson.loads(r.value)["value_sha256"]: r for r in dead}
        assert len(dead) == len(bad) + 2
        for case, (topic, key, value) in bad.items():
            rec = records[hashlib.sha256(value or b"").hexdigest()]
            letter = orjson.loads(rec.value)
            validator("dead-letters")(letter)
            assert letter["value_size"] == len(value or b"")
            assert letter["value_truncated"] == (len(value or b"") > 16 * 1024)
            assert (value or b"").startswith(base64.b64decode(letter["value_b64"]))
            assert letter["reason"] == reasons[case], (case, letter)
            assert letter["detail"], case
            assert letter["source"]["topic"] == topic
            assert rec.key == key
            # the source coordinates point at the original record
            originals = asyncio.run(read_topic(settings, topic, idle_s=1))
            src = next(r for r in originals if (r.partition, r.offset) == (
                letter["source"]["partition"], letter["source"]["offset"]))
            assert src.value == value
        assert orjson.loads(records[hashlib.sha256(duplicate).hexdigest()].value)["reason"] == "duplicate"
        letter = orjson.loads(records[hashlib.sha256(too_late).hexdigest()].value)
        assert letter["reason"] == "too_late" and "older than the user's newest" in letter["detail"]
        assert letter["source"]["topic"] == last_topic
        # still alive and still processing
        later = Event("after-bad-1", "user-after", "i1", "c1", last.ts, "browse")
        asyncio.run(produce(settings, [later]))
        recs = asyncio.run(read_topic(settings, settings.topic_recommendations, expect=n_valid + 1))
        assert "after-bad-1" in {v["trigger"]["event_id"] for v in json_values(recs)}
        assert worker.alive
    finally:
        worker.stop()
