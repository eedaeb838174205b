"""The profile API and health endpoints on two real workers: any worker answers for any user (the
owner of the user's partition serves it, the other forwards), the profile is the state the
owner's RocksDB holds, unknown users are 404, and /ready goes 503 -> 200. The latency of the
profile endpoint under load (a few concurrent clients, while both workers process a stream) is
measured and printed."""

from __future__ import annotations

import asyncio
import statistics
import threading
import time
from pathlib import Path

import aiohttp
import pytest

from stream_app.core.config import Settings
from stream_app.core.state import StatePolicy
from stream_app.kafka.embedded import free_port
from tests.conftest import shared_data
from tests.integration.service.test_recovery import wait_until_applied
from tests.support.expected import taobao_events
from tests.support.streaming import WorkerProcess, local_states, produce
from tests.support.web import get, user_path, wait_live, wait_ready

pytestmark = pytest.mark.broker


def two_workers(settings: Settings, tmp_path: Path) -> tuple[WorkerProcess, WorkerProcess]:
    return tuple(  # type: ignore[return-value]
        WorkerProcess(settings.model_copy(update={"data_dir": tmp_path / name, "web_port": free_port()}),
                      tmp_path / f"{name}.log")
        for name in ("a", "b"))


def comparable(profile: dict) -> dict:
    """What must equal the stored state (the rest is the worker's own view: churn, cache)."""
    keys = ("events_total", "counts", "first_ts", "last_ts", "typical_gap_ms", "window", "interests",
            "churn_warned_at")
    return {k: profile[k] for k in keys}


async def hammer(ports: list[int], paths: list[str], n: int, clients: int) -> list[float]:
    """``n`` GETs spread over ``clients`` concurrent clients; the latencies (s) of 200 answers."""
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    async with aiohttp.ClientSession() as session:
        async def client(c: int) -> None:
            for i in range(c, n, clients):
                url = f"http://127.0.0.1:{ports[i % len(ports)]}{paths[i % len(paths)]}"
                t0 = time.perf_counter()
                async with session.get(url) as resp:
                    await resp.read()
                    statuses[resp.status] = statuses.get(resp.status, 0) + 1
                    if resp.status == 200:
                        latencies.append(time.perf_counter() - t0)
        await asyncio.gather(*(client(c) for c in range(clients)))
    assert statuses.get(200, 0) >= 0.99 * n, statuses
    return latencies


def test_profiles_via_either_worker_equal_the_owners_state(settings: Settings, tmp_path: Path) -> None:
    events = taobao_events(shared_data("taobao/UserBehavior_head84k.csv"), limit=12_000)
    first = events[:4000]
    # the stream during the load: other users, so the profiles read before stay what is stored
    later = [e for e in events[4000:] if e.user_id not in {f.user_id for f in first}]
    a, b = two_workers(settings, tmp_path)
    ports = [a.settings.web_port, b.settings.web_port]
    a.start()
    try:
        wait_live(ports[0])
        assert get(ports[0], "/live")[0] == 200
        status, body, _ = get(ports[0], "/ready")
        assert status == 503 and body["ready"] is False, (status, body)  # up, not yet recovered
        seen = wait_ready(ports[:1])
        assert seen[-1] == 200 and 503 in [get(ports[0], "/ready")[0], *seen]
        b.start()
        wait_live(ports[1])
        asyncio.run(produce(settings, first))
        asyncio.run(wait_until_applied(settings, first))
        wait_ready(ports, settle_s=3)
        users = sorted({e.user_id for e in first})
        served_by: dict[str, set[str]] = {}
        profiles = {}
        for user in users:
            answers = [get(port, user_path(user)) for port in ports]
            assert [s for s, _, _ in answers] == [200, 200], (user, answers)
            assert answers[0][1] == answers[1][1], user  # the same answer through either worker
            assert answers[0][2]["X-Tracker-Served-By"] == answers[1][2]["X-Tracker-Served-By"]
            served_by.setdefault(answers[0][2]["X-Tracker-Served-By"], set()).add(user)
            profiles[user] = answers[0][1]
        assert len(served_by) == 2, "each worker owns some of the users"
        for port in ports:
            assert get(port, user_path("no-such-user"))[0] == 404
            assert get(port, user_path("bad\u0001id"))[0] == 400
        one = profiles[users[0]]
        assert one["user_id"] == users[0] and one["model"]["name"] == "baseline"
        assert one["latest_recommendation"]["user_id"] == users[0]
        assert {"warned_at", "deadline_ts", "risk"} <= one["churn"].keys()

        # latency under load: 2,000 requests from 4 clients while the workers process a stream
        stop = threading.Event()

        def stream() -> None:
            for i in range(0, len(later), 200):
                if stop.is_set():
                    return
                asyncio.run(produce(settings, later[i:i + 200]))
                time.sleep(0.2)

        feeder = threading.Thread(target=stream, daemon=True)
        feeder.start()
        paths = [user_path(u) for u in users]
        started = time.perf_counter()
        latencies = asyncio.run(hammer(ports, paths, 2000, 4))
        elapsed = time.perf_counter() - started
        stop.set()
        feeder.join()
        q = statistics.quantiles(latencies, n=100)
        print(f"\nprofile API: {len(latencies)} requests (4 clients, both workers, half forwarded) "
              f"in {elapsed:.1f} s: p50 {q[49] * 1000:.1f} ms, p99 {q[98] * 1000:.1f} ms, "
              f"max {max(latencies) * 1000:.1f} ms")
        assert q[98] < 2.0
    finally:
        a.stop()
        b.stop()
    # the profiles read before the load equal what the owners' RocksDB files hold
    policy = StatePolicy(settings.window_length, settings.dedupe_memory, settings.late_tolerance_ms,
                         settings.interest_half_life_ms)
    stored = {**local_states(a.settings), **local_states(b.settings)}
    for user in users:
        assert comparable(profiles[user]) == comparable(stored[user.encode()].to_json(policy)), user
