"""Erasure at real workers: a request goes through the user's partition to the worker that owns
it, which deletes the state (a changelog tombstone), forgets the user's caches and confirms. Then
nothing of the user remains in any worker's RocksDB, nor in a state rebuilt from the changelog
(kill -9, RocksDB files deleted, restart), the profile API answers 404, and a later event of the
user starts a fresh state. Also after a rebalance, with a stale local copy on the former owner."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

from stream_app.cli import main
from stream_app.core.config import Settings
from stream_app.core.events import Event
from stream_app.service.records import partition_for_user
from tests.conftest import shared_data
from tests.integration.service.test_profile_api import two_workers
from tests.integration.service.test_recovery import wait_until_applied
from tests.support.expected import taobao_events
from tests.support.streaming import (
    WorkerProcess,
    json_values,
    latest_by_key,
    local_states,
    produce,
    read_topic,
)
from tests.support.web import get, user_path, wait_ready

pytestmark = pytest.mark.broker


def request_erasure(settings: Settings, user_id: str, request_id: str) -> None:
    """A raw request on the erasures topic (no key), as any producer would send it."""
    value = orjson.dumps({"user_id": user_id, "request_id": request_id})
    asyncio.run(produce(settings, [], raw=[(settings.topic_erasures, None, value)]))


def confirmations(settings: Settings, n: int) -> dict[str, dict]:
    records = asyncio.run(read_topic(settings, settings.topic_erasure_confirmations, expect=n))
    return {v["request_id"]: v for v in json_values(records)}


def changelog_latest(settings: Settings) -> dict[bytes, bytes | None]:
    """The changelog compacted by hand: the newest value per key (None: a tombstone)."""
    records = asyncio.run(read_topic(settings, f"{settings.app_id}-user-state-changelog", idle_s=3))
    return {k: r.value for k, r in latest_by_key(records).items()}


def feed_pair(a: WorkerProcess, b: WorkerProcess, settings: Settings, events: list[Event]) -> None:
    """Start both workers, apply ``events`` and wait until both serve the profile API."""
    a.start()
    b.start()
    asyncio.run(produce(settings, events))
    asyncio.run(wait_until_applied(settings, events))
    wait_ready([a.settings.web_port, b.settings.web_port], settle_s=3)


def test_erasure_leaves_nothing_and_a_later_event_starts_afresh(settings: Settings,
                                                                  tmp_path: Path) -> None:
    events = taobao_events(shared_data("taobao/UserBehavior_head84k.csv"), limit=4000)
    a, b = two_workers(settings, tmp_path)
    ports = [a.settings.web_port, b.settings.web_port]
    users = sorted({e.user_id for e in events})
    try:
        feed_pair(a, b, settings, events)
        owner = {u: get(ports[0], user_path(u))[2]["X-Tracker-Served-By"] for u in users}
        # one victim per worker: one erased with the CLI, one by a raw request
        by_cli = users[0]
        by_topic = next(u for u in users if owner[u] != owner[by_cli])
        victims = {by_cli, by_topic}
        result = CliRunner(env=settings.to_env()).invoke(
            main, ["erase", by_cli, "--request-id", "r-cli", "--wait", "120"])
        assert result.exit_code == 0, result.output
        assert orjson.loads(result.output.strip().splitlines()[-1])["request_id"] == "r-cli"
        request_erasure(settings, by_topic, "r-topic")
        confirmed = confirmations(settings, 2)
        for request_id, user in (("r-cli", by_cli), ("r-topic", by_topic)):
            c = confirmed[request_id]
            assert c["user_id"] == user and c["had_state"] is True
            assert c["partition"] == partition_for_user(user.encode(), settings.partitions)
        for port in ports:
            for user in users:
                assert get(port, user_path(user))[0] == (404 if user in victims else 200), user
        a.kill()  # kill -9 both, lose every local RocksDB file
        b.kill()
    finally:
        a.stop()
        b.stop()
    for w in (a, b):
        held = local_states(w.settings)
        assert held and not victims & {k.decode() for k in held}, "an erased user is in RocksDB"
    log = changelog_latest(settings)
    for user in victims:
        assert user.encode() in log and log[user.encode()] is None, "the newest record is a tombstone"
    assert all(log[u.encode()] is not None for u in users if u not in victims)
    shutil.rmtree(a.settings.data_dir)
    shutil.rmtree(b.settings.data_dir)

    rebuilt = WorkerProcess(a.settings, tmp_path / "rebuilt.log").start()
    try:
        wait_ready([a.settings.web_port], settle_s=2)
        for user in users:
            assert get(ports[0], user_path(user))[0] == (404 if user in victims else 200), user
        ts = max(e.ts for e in events) + 1000
        back = Event("after-erasure", by_cli, "i-new", "c-new", ts, "click")
        asyncio.run(produce(settings, [back]))
        asyncio.run(wait_until_applied(settings, [back]))
        status, profile, _ = get(ports[0], user_path(by_cli))
        assert status == 200 and profile["events_total"] == 1, profile
        assert [w["item_id"] for w in profile["window"]] == ["i-new"]
    finally:
        rebuilt.stop()
    states = local_states(a.settings)
    assert by_topic.encode() not in states
    assert states[by_cli.encode()].events_total == 1 and len(states) == len(users) - 1
    print(f"\nerasure: {len(users)} users, erased {sorted(victims)}; after kill -9 + rmtree + "
          f"rebuild: {len(states)} users in RocksDB, {by_cli} back with 1 event")


def test_erasure_after_a_rebalance_reaches_a_stale_copy(settings: Settings, tmp_path: Path) -> None:
    events = taobao_events(shared_data("taobao/UserBehavior_head84k.csv"), limit=3000)
    a, b = two_workers(settings, tmp_path)
    ports = [a.settings.web_port, b.settings.web_port]
    users = sorted({e.user_id for e in events})
    try:
        feed_pair(a, b, settings, events)
        a_parts = set(get(ports[0], "/ready")[1]["partitions"])
        victim = next(u for u in users if partition_for_user(u.encode(), settings.partitions) in a_parts)
        a.kill()  # b takes a's partitions over; a's RocksDB keeps a stale copy of the victim
        assert victim.encode() in local_states(a.settings)
        wait_ready(ports[1:], settle_s=1)
        for _ in range(120):  # until b serves every partition
            if len(get(ports[1], "/ready")[1]["partitions"]) == settings.partitions:
                break
            asyncio.run(asyncio.sleep(1))
        request_erasure(settings, victim, "r-rebalanced")
        assert confirmations(settings, 1)["r-rebalanced"]["had_state"] is True
        assert get(ports[1], user_path(victim))[0] == 404
        a = WorkerProcess(a.settings, tmp_path / "a-again.log").start()  # recovers from the changelog
        wait_ready(ports, settle_s=3)
        for port in ports:
            assert get(port, user_path(victim))[0] == 404
            assert get(port, user_path(next(u for u in users if u != victim)))[0] == 200
        # The stale copy goes once the former owner reads the partition's changelog again (as its
        # owner or a standby). Which partitions a gets back is up to the assignor: with b gone,
        # a owns them all.
        b.stop()
        for _ in range(120):
            if len(get(ports[0], "/ready")[1].get("partitions", [])) == settings.partitions:
                break
            asyncio.run(asyncio.sleep(1))
        assert get(ports[0], user_path(victim))[0] == 404
    finally:
        a.stop()
        b.stop()
    for w in (a, b):
        assert victim.encode() not in local_states(w.settings)
    held = {**local_states(a.settings), **local_states(b.settings)}
    assert held.keys() == {u.encode() for u in users if u != victim}
