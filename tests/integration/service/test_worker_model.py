"""The worker serving the attention model: every recommendation equals what ONNX Runtime computes
from the full window of the same history (so the cached one-event steps inside the worker are
right), and an artifact the worker cannot serve is refused with a clear message."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from pathlib import Path

import orjson
import pytest

from export.prepare import prepare
from export.splits import SplitSpec
from stream_app.core.config import Settings
from stream_app.core.schemas import validator
from stream_app.kafka.embedded import free_port
from stream_app.model.features import FeatureSpec
from stream_app.model.runtime import ModelRuntime
from stream_app.service.metrics import scrape
from tests.conftest import shared_data
from tests.support.artifacts import tiny_artifact
from tests.support.expected import CODE, taobao_events
from tests.support.streaming import WorkerProcess, produce, read_topic

pytestmark = [pytest.mark.broker, pytest.mark.both_engines]
L = 8
K = 10


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained tiny model over real vocabularies (serving mechanics, not quality)."""
    data = prepare(shared_data("taobao/UserBehavior_10k.csv"), SplitSpec("time"),
                   FeatureSpec(window_length=L), min_item_count=2, progress=False)
    return tiny_artifact(data, tmp_path_factory.mktemp("artifact"))


def test_worker_recommendations_equal_full_window_inference(
        settings: Settings, artifact: Path, tmp_path: Path) -> None:
    port = free_port()
    settings = settings.model_copy(update={"model_dir": artifact, "window_length": L,
                                           "metrics_port": port})
    events = taobao_events(shared_data("taobao/UserBehavior_10k.csv"), limit=1500)
    by_id = {e.event_id: e for e in events}
    worker = WorkerProcess(settings, tmp_path / "worker.log").start()
    try:
        asyncio.run(produce(settings, events))
        recs = asyncio.run(read_topic(settings, settings.topic_recommendations, expect=len(events)))
        assert len(recs) == len(events) and worker.alive
        metrics = scrape("127.0.0.1", port)
    finally:
        worker.stop()
    assert metrics[("tracker_model_updates_total", (("path", "step"),))] > 0
    assert metrics[("tracker_model_updates_total", (("path", "full"),))] > 0
    # replay each user's events in the order the worker applied them (its output order)
    runtime = ModelRuntime(artifact, window_length=L)
    history: dict[str, list] = defaultdict(list)
    for rec in sorted(recs, key=lambda r: (r.partition, r.offset)):
        value = orjson.loads(rec.value)
        assert value["model"] == {"name": "attention", "version": runtime.version}
        validator("recommendations")(value)
        event = by_id[value["trigger"]["event_id"]]
        seen = history[event.user_id]
        seen.append(event)
        ordered = sorted(seen, key=lambda e: e.ts)  # stable: ties stay in applied order
        window = [(e.item_id, e.category_id, CODE[e.type], e.ts) for e in ordered[-L:]]
        pred = runtime.update([window], [len(seen)], None, k=K + 10, first_ts=[ordered[0].ts])
        bought = {e.item_id for e in ordered[-L:] if e.type == "purchase"}
        want = [(i, s) for i, s in pred.top_items[0] if i not in bought][:K]
        got = [(i["item_id"], i["score"]) for i in value["items"]]
        assert [i for i, _ in got] == [i for i, _ in want], event.event_id
        assert all(abs(a[1] - b[1]) <= 1e-4 for a, b in zip(got, want, strict=True))
        assert abs(value["churn_probability"] - float(pred.churn[0])) <= 1e-4


def test_worker_refuses_an_artifact_it_cannot_serve(settings: Settings, artifact: Path,
                                                     tmp_path: Path) -> None:
    settings = settings.model_copy(update={"model_dir": artifact, "window_length": 50})
    worker = WorkerProcess(settings, tmp_path / "worker.log").start()
    deadline = time.monotonic() + 60
    while worker.alive and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not worker.alive, "the worker must not start with an artifact it cannot serve"
    assert worker.proc is not None and worker.proc.returncode != 0
    assert "window length 8" in worker.log() and "TRACKER_WINDOW_LENGTH" in worker.log()
