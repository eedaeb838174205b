"""The worker serving the attention model: every recommendation equals what ONNX Runtime computes
from the full window of the same history (so the cached one-event steps inside the worker are
right), an artifact the worker cannot serve is refused with a clear message, and a new version in
a directory of versions is taken into service without a restart (hot reload)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter, defaultdict
from pathlib import Path

import orjson
import pytest

from stream_app.core.config import Settings
from stream_app.core.schemas import validator
from stream_app.kafka.embedded import free_port
from stream_app.model.runtime import ModelRuntime
from stream_app.service.metrics import scrape
from tests.conftest import shared_data
from tests.integration.conftest import L
from tests.support.artifacts import publish
from tests.support.expected import CODE, taobao_events
from tests.support.streaming import WorkerProcess, produce, read_topic

pytestmark = [pytest.mark.broker, pytest.mark.both_engines]
K = 10


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
        event = by_id[value["trigger"]["event_id"]]
        seen = history[event.user_id]
        seen.append(event)
        _assert_offline_answer(runtime, value, seen)


def test_rate_limited_recommendations_equal_full_window_inference(
        settings: Settings, artifact: Path, tmp_path: Path) -> None:
    """TRACKER_RECOMMEND_MIN_GAP_S: recommendations at the events the rule picks (computed here from
    event times alone), each equal to the offline model on the user's whole history up to it: the
    events in between reached the model as chunks appended to the cached keys/values."""
    gap_ms = 300_000
    settings = settings.model_copy(update={"model_dir": artifact, "window_length": L,
                                           "recommend_min_gap_s": gap_ms / 1000})
    events = taobao_events(shared_data("taobao/UserBehavior_10k.csv"), limit=2000)
    times = Counter((e.user_id, e.ts) for e in events)
    # in event time, one event per user and time: the order they are applied in is event time (the
    # file is grouped by user, not in time order: later events would come before earlier ones)
    events = sorted((e for e in events if times[(e.user_id, e.ts)] == 1), key=lambda e: e.ts)
    by_user: dict[str, list] = defaultdict(list)
    for e in sorted(events, key=lambda e: e.ts):
        by_user[e.user_id].append(e)
    triggers: dict[str, int] = {}  # event id -> the user's event count at it
    for evs in by_user.values():
        last = None
        for n, e in enumerate(evs, 1):
            if last is None or e.ts - last >= gap_ms:
                triggers[e.event_id], last = n, e.ts
    assert len(events) / 2 > len(triggers) > len(by_user)
    worker = WorkerProcess(settings, tmp_path / "worker.log").start()
    try:
        asyncio.run(produce(settings, events))
        recs = asyncio.run(read_topic(settings, settings.topic_recommendations, expect=len(triggers)))
        time.sleep(3)  # nothing more comes
        recs += asyncio.run(read_topic(settings, settings.topic_recommendations, idle_s=1))[len(recs):]
        assert worker.alive
    finally:
        worker.stop()
    values = [orjson.loads(r.value) for r in recs]
    assert sorted(v["trigger"]["event_id"] for v in values) == sorted(triggers)
    runtime = ModelRuntime(artifact, window_length=L)
    by_id = {e.event_id: e for e in events}
    for value in values:
        event = by_id[value["trigger"]["event_id"]]
        _assert_offline_answer(runtime, value, by_user[event.user_id][:triggers[event.event_id]])


def _assert_offline_answer(runtime: ModelRuntime, value: dict, seen: list) -> None:
    """``value`` (a recommendation) is what the model computes offline from the full window of the
    user's events ``seen`` (in applied order; the trigger last)."""
    assert value["model"] == {"name": "attention", "version": runtime.version}
    validator("recommendations")(value)
    ordered = sorted(seen, key=lambda e: e.ts)  # stable: ties stay in applied order
    window = [(e.item_id, e.category_id, CODE[e.type], e.ts) for e in ordered[-L:]]
    pred = runtime.update([window], [len(seen)], None, k=K + 10, first_ts=[ordered[0].ts])
    bought = {e.item_id for e in ordered[-L:] if e.type == "purchase"}
    want = [(i, s) for i, s in pred.top_items[0] if i not in bought][:K]
    got = [(i["item_id"], i["score"]) for i in value["items"]]
    assert [i for i, _ in got] == [i for i, _ in want], value["trigger"]["event_id"]
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


def wait_for_sample(port: int, sample: tuple[str, tuple[tuple[str, str], ...]], worker: WorkerProcess,
                    timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while scrape("127.0.0.1", port).get(sample, 0) < 1:
        assert worker.alive and time.monotonic() < deadline, worker.log()[-3000:]
        time.sleep(0.5)


def test_worker_hot_reloads_a_new_model_version_and_refuses_a_bad_one(
        settings: Settings, artifact: Path, tmp_path: Path) -> None:
    """A directory of versions: the worker serves v1, takes v2 into service without a restart
    (every output after the swap carries v2, the metric says so), refuses a broken v3 with one log
    line and goes on serving v2."""
    versions = tmp_path / "models"
    versions.mkdir()
    publish(artifact, versions, "v1")
    port = free_port()
    settings = settings.model_copy(update={"model_dir": versions, "window_length": L,
                                           "metrics_port": port, "model_poll_s": 0.5})
    events = taobao_events(shared_data("taobao/UserBehavior_10k.csv"), limit=900)
    parts = [events[:300], events[300:600], events[600:]]

    def versions_of(part: list) -> Counter[str]:
        ids = {e.event_id for e in part}
        recs = asyncio.run(read_topic(settings, settings.topic_recommendations, idle_s=2))
        return Counter(orjson.loads(r.value)["model"]["version"] for r in recs
                       if orjson.loads(r.value)["trigger"]["event_id"] in ids)

    worker = WorkerProcess(settings, tmp_path / "worker.log").start()
    try:
        asyncio.run(produce(settings, parts[0]))
        asyncio.run(read_topic(settings, settings.topic_recommendations, expect=300))
        assert versions_of(parts[0]) == {"reload-v1": 300}
        published = time.monotonic()
        publish(artifact, versions, "v2")
        wait_for_sample(port, ("tracker_model_info", (("name", "attention"), ("version", "reload-v2"))),
                        worker)
        print(f"\nv2 in service {time.monotonic() - published:.2f} s after it was published "
              f"(poll every {settings.model_poll_s} s)")
        asyncio.run(produce(settings, parts[1]))
        asyncio.run(read_topic(settings, settings.topic_recommendations, expect=600))
        assert versions_of(parts[1]) == {"reload-v2": 300}
        publish(artifact, versions, "v3", servable=False)
        wait_for_sample(port, ("tracker_model_reloads_total", (("outcome", "refused"),)), worker)
        asyncio.run(produce(settings, parts[2]))
        asyncio.run(read_topic(settings, settings.topic_recommendations, expect=900))
        assert versions_of(parts[2]) == {"reload-v2": 300}
        metrics = scrape("127.0.0.1", port)
        assert worker.alive
    finally:
        worker.stop()
    assert metrics[("tracker_model_reloads_total", (("outcome", "loaded"),))] == 1
    assert metrics[("tracker_model_info", (("name", "attention"), ("version", "reload-v2")))] == 1
    assert ("tracker_model_info", (("name", "attention"), ("version", "reload-v1"))) not in metrics
    assert metrics[("tracker_model_ann_recall", ())] == 1  # a small catalog: ranked exactly
    log = worker.log()
    assert "model version v3 refused, still serving v2" in log and "schema version 99" in log
