"""TRACKER_PSEUDONYMIZE at a real worker: state, changelog, the repartition topic and every output
are keyed by HMAC-SHA256(user id), never the raw id; the profile API and erasure take the raw id;
the key is in no log and no to_env(). With TRACKER_DEAD_LETTER_VALUES=digest a dead letter keeps
no byte of the rejected record."""

from __future__ import annotations

import asyncio
import base64
import hashlib
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner
from pydantic import SecretStr

from stream_app.cli import main
from stream_app.core.config import Settings
from stream_app.core.pseudonym import pseudonym
from stream_app.kafka.embedded import free_port
from tests.conftest import shared_data
from tests.integration.service.test_recovery import wait_until_applied
from tests.support.expected import taobao_events
from tests.support.streaming import WorkerProcess, json_values, local_states, produce, read_topic
from tests.support.web import get, user_path, wait_ready

pytestmark = pytest.mark.broker

KEY = "pseudonym-test-key-7f3a9c1e"


def test_pseudonymized_worker_never_keys_by_the_raw_id(settings: Settings, tmp_path: Path) -> None:
    s = settings.model_copy(update={"pseudonymize": True, "pseudonym_key": SecretStr(KEY),
                                    "dead_letter_values": "digest", "web_port": free_port()})
    assert KEY not in str(s.to_env()) and KEY not in repr(s)
    events = taobao_events(shared_data("taobao/UserBehavior_head84k.csv"), limit=1500)
    raw_ids = sorted({e.user_id for e in events})
    alias = {u: pseudonym(u, KEY.encode()) for u in raw_ids}
    pseudonyms = {p.encode() for p in alias.values()}
    bad = b'{"event_id": "x", "user_id": "raw-secret-user", "ts": '
    worker = WorkerProcess(s, tmp_path / "worker.log").start()
    try:
        asyncio.run(produce(s, events, raw=[(s.topic_clicks, b"raw-secret-user", bad)]))
        asyncio.run(wait_until_applied(s, events))
        wait_ready([s.web_port])
        user = raw_ids[0]
        status, profile, _ = get(s.web_port, user_path(user))
        assert status == 200 and profile["user_id"] == alias[user], profile
        assert profile["latest_recommendation"]["user_id"] == alias[user]
        assert get(s.web_port, user_path(alias[user]))[0] == 404  # a pseudonym is no raw id
        # the CLI needs no key: it sends the raw id, the worker hashes it
        result = CliRunner(env=s.to_env()).invoke(main, ["erase", user, "--request-id", "r-p"])
        assert result.exit_code == 0, result.output
        confirmation = orjson.loads(result.output.strip().splitlines()[-1])
        assert confirmation["user_id"] == alias[user] and confirmation["had_state"] is True
        assert get(s.web_port, user_path(user))[0] == 404
        by_user = asyncio.run(read_topic(s, s.repartition_topic, idle_s=3))
        recs = asyncio.run(read_topic(s, s.topic_recommendations, idle_s=3))
        letters = asyncio.run(read_topic(s, s.topic_dead_letters, expect=1))
        changelog = asyncio.run(read_topic(s, f"{s.app_id}-user-state-changelog", idle_s=3))
    finally:
        worker.stop()
    events_by_user = [r for r in by_user if dict(r.headers).get("t") != b"erase"]
    assert len(events_by_user) == len(events)
    for r in events_by_user:
        assert r.key in pseudonyms and orjson.loads(r.value)["user_id"] == r.key.decode()
        assert dict(r.headers)["k"] == b""  # the producer's key (the raw id) is not carried on
    assert {r.key for r in recs} <= pseudonyms
    assert {v["user_id"] for v in json_values(recs)} == set(alias.values())
    assert {r.key for r in changelog} <= pseudonyms
    assert set(local_states(s)) == pseudonyms - {alias[user].encode()}
    (letter_record,) = letters
    letter = orjson.loads(letter_record.value)
    assert letter_record.key is None and letter["digest_only"] is True
    assert letter["value_b64"] == "" and letter["source"]["key_b64"] is None
    assert letter["value_sha256"] == hashlib.sha256(bad).hexdigest() and letter["value_size"] == len(bad)
    assert b"raw-secret-user" not in letter_record.value
    assert base64.b64encode(b"raw-secret-user") not in letter_record.value
    assert KEY not in worker.log()
