"""End to end on the real broker: Taobao events in, per-user state and outputs checked against an
independent computation (tests/expected.py)."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

import pytest

from stream_app.app import changelog_topic_name, partition_for_user
from stream_app.config import Settings
from stream_app.schemas import validator
from stream_app.state import MAX_CATEGORIES, StatePolicy, UserState
from tests.conftest import shared_data
from tests.expected import Expected, assert_windows_match, expected_by_user, taobao_events
from tests.streaming import (
    WorkerProcess,
    json_values,
    latest_by_key,
    local_states,
    produce,
    read_topic,
)

pytestmark = pytest.mark.broker


def assert_state_matches(state: UserState, exp: Expected, settings: Settings) -> None:
    policy = StatePolicy(settings.window_length, settings.dedupe_memory, settings.late_tolerance_ms,
                         settings.interest_half_life_ms)
    assert state.counts == exp.counts()
    assert state.first_ts == min(e.ts for e in exp.events)
    assert state.last_ts == max(e.ts for e in exp.events)
    assert_windows_match(state.window, exp.window(settings.window_length))
    exp_interests = exp.interests(settings.interest_half_life_ms)
    got = dict(state.top_interests(state.last_ts, policy, n=1000))
    if len(exp_interests) > MAX_CATEGORIES:  # the profile keeps the strongest categories only
        assert len(got) == MAX_CATEGORIES
        exp_interests = dict(sorted(exp_interests.items(), key=lambda kv: -kv[1])[:10])
    else:
        assert got.keys() == exp_interests.keys()
    for cat, value in exp_interests.items():
        assert math.isclose(got[cat], value, rel_tol=1e-9), cat


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
