"""Replaying a recording at different speeds into fresh workers gives the same worker outputs."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path
from typing import Any

import pytest

from stream_app.core.config import Settings
from stream_app.tools.generate import DAY_MS, WorkloadSpec, write_workload_recording
from stream_app.tools.replay import ReplayOptions, replay
from tests.support.streaming import WorkerProcess, local_states, values_by_user

pytestmark = [pytest.mark.broker, pytest.mark.both_engines]


def test_replay_speed_does_not_change_worker_outputs(settings: Settings, tmp_path: Path) -> None:
    """The same recording replayed at a compressed original pace and at full speed into two fresh
    workers: recommendations and churn warnings per user, and the final user windows, counts and
    interests must be identical (event time, not wall clock, drives the tracker)."""
    span_ms = 6 * DAY_MS
    spec = WorkloadSpec(users=60, items=600, categories=12, seed=3, span_ms=span_ms,
                        mean_gap_ms=3 * 3600 * 1000, churn_fraction=0.25)
    path = tmp_path / "workload.rec.zst"
    n = write_workload_recording(spec, path, {"click": "src-clicks", "browse": "src-browses",
                                              "purchase": "src-purchases"}, settings.partitions)
    assert 1500 < n < 4000

    runs: list[tuple[Settings, ReplayOptions]] = []
    for name, speed in (("paced", span_ms / 6000), ("max", None)):  # paced: the 6 days in ~6 s
        s = settings.namespaced(f"{settings.app_id}-{name}", data_dir=tmp_path / name)
        rename = {"src-clicks": s.topic_clicks, "src-browses": s.topic_browses,
                  "src-purchases": s.topic_purchases}
        runs.append((s, ReplayOptions(speed=speed, rename=rename)))

    # The paced replay goes into a live worker; the fast one is a backfill: replayed as fast as
    # possible into topics that a worker then reads at full speed. (The paced run is the live
    # case: an event may pass a quiet input partition only after a fetch newer than the event
    # shows it caught up; see stream_app/alignment.py.)
    (paced, paced_opts), (fast, fast_opts) = runs
    workers = [WorkerProcess(paced, tmp_path / f"{paced.app_id}.log").start()]
    try:
        workers[0].wait_ready()

        async def replay_both() -> list[Any]:
            return await asyncio.gather(replay(paced, path, paced_opts), replay(fast, path, fast_opts))

        summaries = asyncio.run(replay_both())
        assert [x.sent for x in summaries] == [n, n]
        assert summaries[0].seconds > 4 > summaries[1].seconds
        workers.append(WorkerProcess(fast, tmp_path / f"{fast.app_id}.log").start())
        recs = [values_by_user(s, s.topic_recommendations, n) for s, _ in runs]
        churn = [values_by_user(s, s.topic_churn_warnings) for s, _ in runs]
        for w in workers:
            assert w.alive, w.log()[-3000:]
    finally:
        for w in workers:
            w.stop()
    assert sum(len(v) for v in recs[0].values()) == n
    assert sum(len(v) for v in churn[0].values()) > 0, "the workload has churners: expected warnings"
    states = [local_states(s) for s, _ in runs]
    assert len(states[0]) == len(states[1]) == spec.users
    for user, st in states[0].items():  # what the user did, not the order it was read in
        other = states[1][user]
        assert st.window == other.window and st.counts == other.counts, user
        assert st.interests.keys() == other.interests.keys(), user
        for cat, (strength, ref_ts) in st.interests.items():
            assert other.interests[cat][1] == ref_ts and math.isclose(
                other.interests[cat][0], strength, rel_tol=1e-9), (user, cat)
    # Per user, the events reach the tracker in the same order at any speed (stream_app/alignment.py),
    # so the recommendation and churn-warning sequences are identical too.
    differing = sorted(u for u in set(recs[0]) | set(recs[1]) if recs[0].get(u) != recs[1].get(u))
    assert not differing, (f"outputs differ for {len(differing)} of {len(recs[0])} users: "
                           + "; ".join(first_difference(u, recs[0].get(u, []), recs[1].get(u, []))
                                       for u in differing[:5]))
    assert churn[0] == churn[1]


def first_difference(user: bytes, paced: list[dict[str, Any]], fast: list[dict[str, Any]]) -> str:
    """Where two output sequences of a user part: the index and both outputs (trigger and items)."""
    parts = (i for i, (a, b) in enumerate(zip(paced, fast, strict=False)) if a != b)
    i = next(parts, min(len(paced), len(fast)))
    show = [seq[i] if i < len(seq) else None for seq in (paced, fast)]
    return f"{user.decode()} at output {i} of {len(paced)}/{len(fast)}: paced {show[0]} | fast {show[1]}"
