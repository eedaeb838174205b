"""End to end on the real broker: Taobao events in, per-user state and outputs checked against an
independent computation (tests/expected.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from stream_app.core.config import Settings
from stream_app.core.schemas import validator
from stream_app.core.state import UserState
from stream_app.service.app import changelog_topic_name
from stream_app.service.records import partition_for_user
from tests.conftest import shared_data
from tests.support.expected import assert_state_matches, expected_by_user, taobao_events
from tests.support.streaming import (
    WorkerProcess,
    json_values,
    latest_by_key,
    local_states,
    produce,
    read_topic,
)

pytestmark = [pytest.mark.broker, pytest.mark.both_engines]


def test_taobao_end_to_end(settings: Settings, tmp_path: Path) -> None:
    events = taobao_events(shared_data("taobao/UserBehavior_10k.csv"))
    expected = expected_by_user(events)
    worker = WorkerProcess(settings, tmp_path / "worker.log").start()
    try:
        asyncio.run(produce(settings, events))
        recs = asyncio.run(read_topic(settings, settings.topic_recommendations, expect=len(events),
                                      timeout_s=240))
        assert worker.alive, worker.log()[-3000:]
        # one recommendation per event, each naming its trigger, for the trigger's user
        values = json_values(recs)
        assert len(values) == len(events)
        by_id = {e.event_id: e for e in events}
        assert {v["trigger"]["event_id"] for v in values} == set(by_id)
        for rec, value in zip(recs, values, strict=True):
            trigger = by_id[value["trigger"]["event_id"]]
            assert rec.key == trigger.user_id.encode() and value["user_id"] == trigger.user_id
            assert value["ts"] == trigger.ts and value["model"]["name"] == "baseline"
            assert value["interests"][0]["strength"] > 0
            validator("recommendations")(value)
            if trigger.type == "purchase":  # just bought: not recommended again
                assert trigger.item_id not in {i["item_id"] for i in value["items"]}
        # without a catalog, items come from the user's own history: empty only when all bought
        assert sum(1 for v in values if v["items"]) > 0.95 * len(values)
        # state in the changelog: every record in its key's partition, latest values correct
        changelog = asyncio.run(read_topic(settings, changelog_topic_name(settings), idle_s=4))
        assert changelog
        for r in changelog:
            assert r.partition == partition_for_user(r.key, settings.partitions), r.key
        logged = {k: UserState.decode(r.value) for k, r in latest_by_key(changelog).items()}
        assert set(logged) == {u.encode() for u in expected}
        for user, exp in expected.items():
            assert_state_matches(logged[user.encode()], exp, settings)
        dead = asyncio.run(read_topic(settings, settings.topic_dead_letters, idle_s=2))
        assert dead == []
        # churn warnings: users silent (in event time) past their threshold, once per episode
        warnings = json_values(asyncio.run(read_topic(settings, settings.topic_churn_warnings, idle_s=2)))
        assert warnings, "the Taobao sample spans 9 days: some users fall silent for 2+ days"
        for w in warnings:
            validator("churn-warnings")(w)
            assert w["silence_ms"] == w["detected_ts"] - w["last_event_ts"]
            assert w["silence_ms"] >= settings.churn_min_silence_ms and 0.5 <= w["risk"] <= 1
            assert w["last_event_ts"] in {e.ts for e in expected[w["user_id"]].events}
        episodes = [(w["user_id"], w["last_event_ts"]) for w in warnings]
        assert len(episodes) == len(set(episodes))  # once per episode
    finally:
        worker.stop()
    # the local RocksDB state of the stopped worker holds the same
    local = local_states(settings)
    assert set(local) == {u.encode() for u in expected}
    for user, exp in expected.items():
        assert_state_matches(local[user.encode()], exp, settings)
