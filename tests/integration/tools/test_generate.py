"""The synthetic workload: determinism, schema-valid events, and a ground truth that holds."""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from dataclasses import replace
from pathlib import Path

import orjson
import pytest
from aiokafka.partitioner import DefaultPartitioner
from click.testing import CliRunner

from stream_app.cli import main
from stream_app.core.config import Settings
from stream_app.core.events import TYPE_SCHEMA
from stream_app.core.schemas import validator
from stream_app.tools.generate import (
    DAY_MS,
    GroundTruth,
    WorkloadSpec,
    iter_synthetic_events,
    write_workload_recording,
)
from stream_app.tools.recording import RecordingReader, iter_recorded_events
from tests.support.topic_reader import read_topics

SPEC = WorkloadSpec(users=120, items=800, categories=16, seed=11, span_ms=10 * DAY_MS,
                    mean_gap_ms=2 * 3600 * 1000, drift_probability=0.01, churn_fraction=0.2)


def test_same_seed_same_events_in_event_time_order() -> None:
    a = list(iter_synthetic_events(SPEC))
    assert a == list(iter_synthetic_events(SPEC))
    assert a != list(iter_synthetic_events(replace(SPEC, seed=12)))
    assert all(x.ts <= y.ts for x, y in zip(a, a[1:], strict=False))
    assert len({e.event_id for e in a}) == len(a)
    assert SPEC.start_ts_ms <= a[0].ts and a[-1].ts < SPEC.start_ts_ms + SPEC.span_ms
    for e in a:
        validator(TYPE_SCHEMA[e.type])(e.to_json())
    types = Counter(e.type for e in a)
    assert types["browse"] > types["click"] > types["purchase"] > 0
    assert len(list(iter_synthetic_events(replace(SPEC, max_events=500)))) == 500


def test_ground_truth_matches_the_events() -> None:
    truth = GroundTruth(SPEC)
    events = list(iter_synthetic_events(SPEC, truth))
    by_user: dict[str, list] = defaultdict(list)
    for e in events:
        by_user[e.user_id].append(e)
    assert truth.events == len(events)
    assert len(truth.churn_at) == round(SPEC.users * SPEC.churn_fraction)
    end = SPEC.start_ts_ms + SPEC.span_ms
    for user, evs in by_user.items():
        assert truth.last_seen[user] == evs[-1].ts
        if user in truth.churn_at:
            assert evs[-1].ts < truth.churn_at[user] and truth.churners[user] == evs[-1].ts
            lo, hi = (SPEC.start_ts_ms + f * SPEC.span_ms for f in SPEC.churn_window)
            assert lo <= truth.churn_at[user] <= hi
    # Users who did not churn stay active to the end (their gaps are hours, the tail days).
    stayers = [u for u in by_user if u not in truth.churn_at]
    assert sum(truth.last_seen[u] > end - DAY_MS for u in stayers) >= 0.95 * len(stayers)
    assert max(truth.last_seen[u] for u in truth.churners) < end - 0.3 * SPEC.span_ms + 1

    # After a shift, the user's events follow the new favourites (until the next shift).
    assert len(truth.shifts) > 20
    in_new = total = 0
    shifts_by_user: dict[str, list] = defaultdict(list)
    for s in truth.shifts:
        shifts_by_user[s.user_id].append(s)
    for user, shifts in shifts_by_user.items():
        for i, s in enumerate(shifts):
            until = shifts[i + 1].ts if i + 1 < len(shifts) else end
            window = [e for e in by_user[user] if s.ts <= e.ts < until]
            in_new += sum(e.category_id in s.after for e in window)
            total += len(window)
    assert total > 200 and in_new / total > 0.75

    js = orjson.loads(orjson.dumps(truth.to_json()))
    assert {c["user_id"] for c in js["churners"]} == set(truth.churners)


def test_workload_recording_holds_the_workload(tmp_path: Path) -> None:
    spec = replace(SPEC, max_events=3000)
    path = tmp_path / "w.rec.zst"
    topics = {"click": "c", "browse": "b", "purchase": "p"}
    assert write_workload_recording(spec, path, topics, 4) == 3000
    assert list(iter_recorded_events(path)) == list(iter_synthetic_events(spec))
    reader = RecordingReader(path)
    records = list(reader)
    assert reader.complete and reader.header["partitions"] == {"c": 4, "b": 4, "p": 4}
    part = DefaultPartitioner()
    offsets: dict[tuple[str, int], int] = Counter()
    for r in records:
        assert r.partition == part(r.key, [0, 1, 2, 3], [0, 1, 2, 3])
        assert r.offset == offsets[(r.topic, r.partition)]
        offsets[(r.topic, r.partition)] += 1


@pytest.mark.broker
def test_generate_command_sends_at_the_target_rate(settings: Settings, tmp_path: Path) -> None:
    truth = tmp_path / "truth.json"
    result = CliRunner(env=settings.to_env()).invoke(main, [
        "generate", "--users", "50", "--events", "1500", "--rate", "1000", "--seed", "5",
        "--truth", str(truth), "--no-progress",
    ])
    assert result.exit_code == 0, result.output
    line = next(x for x in result.output.splitlines() if x.startswith("generated 1500 events"))
    seconds = float(line.split(" in ")[1].split(" s ")[0])
    assert 1.3 <= seconds < 3.0  # 1,500 events at 1,000/s
    got = asyncio.run(read_topics(settings, list(settings.event_topics()), expected=1500))
    values = [orjson.loads(m.value) for msgs in got.values() for m in msgs]
    assert len(values) == 1500
    assert {v["event_id"] for v in values} == {f"syn-5-{i}" for i in range(1500)}
    gt = orjson.loads(truth.read_bytes())
    assert gt["events"] == 1500 and gt["spec"]["seed"] == 5


def test_churners_decline_before_they_stop() -> None:
    """Over the decline phase a churner's gaps grow (up to ``churn_slowdown`` x) and purchases
    fade; before it they behave like everyone else. Without the phase the stop is abrupt."""
    spec = replace(SPEC, users=300, churn_decline_ms=4 * DAY_MS, churn_slowdown=10.0)

    def gaps_and_buys(spec: WorkloadSpec) -> tuple[float, float, float, float]:
        truth = GroundTruth(spec)
        by_user: dict[str, list] = defaultdict(list)
        for e in iter_synthetic_events(spec, truth):
            by_user[e.user_id].append(e)
        early_gaps, late_gaps, early_buys, late_buys = [], [], [], []
        for user, churn_at in truth.churn_at.items():
            evs = by_user[user]
            for a, b in zip(evs, evs[1:], strict=False):
                if b.ts < churn_at - spec.churn_decline_ms - DAY_MS:  # well before the phase
                    early_gaps.append(b.ts - a.ts)
                    early_buys.append(b.type == "purchase")
                elif a.ts > churn_at - DAY_MS:  # the last day of the phase: 8-10x slower
                    late_gaps.append(b.ts - a.ts)
                if a.ts > churn_at - 2 * DAY_MS:
                    late_buys.append(b.type == "purchase")
        mean = lambda xs: sum(xs) / max(len(xs), 1)  # noqa: E731
        return mean(early_gaps), mean(late_gaps), mean(early_buys), mean(late_buys)

    early_gap, late_gap, early_buy, late_buy = gaps_and_buys(spec)
    assert late_gap > 3 * early_gap  # (gaps that would end after the churn time are cut off)
    assert late_buy < 0.6 * early_buy
    abrupt = replace(spec, churn_decline_ms=0, churn_slowdown=1.0)
    early_gap, late_gap, _, _ = gaps_and_buys(abrupt)
    assert late_gap < 2 * early_gap
