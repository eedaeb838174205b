"""Early churn warnings scored against the generator's ground truth, through a real worker.

A worker serving the packaged demo model takes a two-week synthetic workload it was not trained on
(the demo workload's settings, another seed: churners decline for 4 days, then stop), sent as a
backlog. Its churn warnings (the model's ``risk`` rule and the ``silence`` backstop) are scored with
``stream_app.tools.churn_score``: the share of churners warned before their last event, precision
(warned users who are churners) and the median lead. The worker's outputs do not depend on its
speed (event time, a per-partition watermark), so neither does the verdict. ``pytest -s`` prints the
figures."""

from __future__ import annotations

import asyncio
import statistics
from collections import Counter
from dataclasses import replace
from pathlib import Path

import orjson
import pytest

from stream_app.core.churn import RiskThreshold
from stream_app.core.config import Settings
from stream_app.core.schemas import validator
from stream_app.model.artifact import DEMO_ARTIFACT_DIR, read_metadata
from stream_app.tools.churn_score import score_churn_warnings
from stream_app.tools.demo import DEMO_WORKLOAD
from stream_app.tools.generate import DAY_MS, GroundTruth, iter_synthetic_events
from tests.support.streaming import WorkerProcess, produce, read_topic

pytestmark = [pytest.mark.broker]

WORKLOAD = replace(DEMO_WORKLOAD, seed=2)  # the demo model was trained on seed 1
EARLY_RECALL, PRECISION = 0.7, 0.5  # the targets


def test_churners_are_warned_before_their_last_event(settings: Settings, tmp_path: Path) -> None:
    threshold = RiskThreshold.from_metadata(read_metadata(DEMO_ARTIFACT_DIR))
    assert threshold is not None, "the demo model carries a calibrated churn-warning threshold"
    truth = GroundTruth(WORKLOAD)
    events = list(iter_synthetic_events(WORKLOAD, truth))
    assert WORKLOAD.span_ms >= 14 * DAY_MS and len(truth.churners) >= 30
    settings = settings.model_copy(update={"model_dir": DEMO_ARTIFACT_DIR, "window_length": 50})
    worker = WorkerProcess(settings, tmp_path / "worker.log").start()
    try:
        asyncio.run(produce(settings, events))
        recs = asyncio.run(read_topic(settings, settings.topic_recommendations, expect=len(events),
                                      timeout_s=600))
        assert len(recs) == len(events), worker.log()[-3000:]
        # a batch's warnings are delivered before its events are acknowledged: all are out by now
        warnings = [orjson.loads(r.value) for r in asyncio.run(
            read_topic(settings, settings.topic_churn_warnings, idle_s=3))]
        assert worker.alive
    finally:
        worker.stop()

    check = validator("churn-warnings")
    for w in warnings:
        check(w)
        if w["rule"] == "risk":
            assert w["risk"] >= threshold.threshold and w["detected_ts"] == w["last_event_ts"]
            assert w["expected_lead_ms"] == threshold.expected_lead_ms
            assert w["model"]["name"] == "attention"
        else:
            assert w["rule"] == "silence" and w["expected_lead_ms"] == -w["silence_ms"] < 0
    episodes = Counter((w["user_id"], w["last_event_ts"]) for w in warnings)
    assert max(episodes.values()) == 1  # one warning per episode

    score = score_churn_warnings(((w["user_id"], w["detected_ts"]) for w in warnings), truth)
    by_rule = Counter(w["rule"] for w in warnings)
    first_rule: dict[str, str] = {}
    for w in sorted(warnings, key=lambda w: w["detected_ts"]):
        first_rule.setdefault(w["user_id"], w["rule"])
    print(f"\nworkload: {len(events)} events, {WORKLOAD.users} users, {WORKLOAD.span_ms / DAY_MS:g} days, "
          f"seed {WORKLOAD.seed}; model {read_metadata(DEMO_ARTIFACT_DIR)['model_version']}, risk "
          f"threshold {threshold.threshold:.4f} (precision {threshold.precision:.0%} on validation users, "
          f"expected lead {(threshold.expected_lead_ms or 0) / 3.6e6:.1f} h)")
    print(f"warnings: {len(warnings)} ({dict(by_rule)}); users' first warnings by rule: "
          f"{dict(Counter(first_rule.values()))}")
    print(score.line())
    leads = [w["expected_lead_ms"] for w in warnings if w["rule"] == "risk"]
    if leads:
        print(f"expected lead of the risk warnings: {statistics.median(leads) / 3.6e6:.1f} h")
    assert score.early_recall is not None and score.precision is not None
    assert score.early_recall >= EARLY_RECALL, score.line()
    assert score.precision >= PRECISION, score.line()
