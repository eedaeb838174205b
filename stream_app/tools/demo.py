"""``interest-tracker demo``: the main job on the embedded default.

Starts the embedded broker (unless one answers at ``--broker-url``), one worker process, and a
replay of events (a dataset file when given, the synthetic :data:`DEMO_WORKLOAD` otherwise) with a
few hostile records mixed in, and prints what comes out of the output topics, with the worker's
Prometheus endpoint up. On the synthetic workload the worker serves the packaged demo model
(:data:`stream_app.model.artifact.DEMO_ARTIFACT_DIR`, trained on this same workload by
``interest-tracker build-demo-model``) unless ``--model-dir`` or ``--no-model`` says otherwise, and
the churn warnings are scored against the workload's ground truth at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import subprocess
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiokafka import TopicPartition

from stream_app.core.catalog import Catalog
from stream_app.core.config import Settings
from stream_app.core.events import Event
from stream_app.kafka.admin import create_topics, group_lag, wait_until_ready
from stream_app.kafka.clients import encode_event, make_consumer, make_producer
from stream_app.kafka.embedded import EmbeddedBroker
from stream_app.model.artifact import DEMO_ARTIFACT_DIR, ArtifactError, check_artifact
from stream_app.service.metrics import scrape
from stream_app.service.process import spawn_worker
from stream_app.tools.churn_score import score_churn_warnings
from stream_app.tools.generate import DAY_MS, GroundTruth, WorkloadSpec, iter_synthetic_events

DEFAULT_EVENTS = 20_000  # from a dataset file
SAMPLES = {1, 2, 5000, 10_000, 15_000, 20_000}  # the recommendations printed (1st, 2nd, ... to arrive)

# The demo's synthetic workload (about 29,000 events over 14 days of event time; 40 churners who
# slow down over 6 days, to 20x their usual gaps, and stop between days 6.3 and 13.3). The packaged
# demo model was trained on it: change it, rebuild the model (`interest-tracker build-demo-model`).
DEMO_WORKLOAD = WorkloadSpec(users=200, items=1000, categories=30, seed=1, span_ms=14 * DAY_MS,
                             mean_gap_ms=150 * 60_000, churn_fraction=0.2, churn_window=(0.45, 0.95),
                             churn_decline_ms=6 * DAY_MS, churn_slowdown=20.0)


def demo_events(data_path: str | None, limit: int | None) -> tuple[list[Event], str, GroundTruth | None]:
    if data_path:
        from stream_app.tools.datasets import LoadReport, read_dataset

        report = LoadReport(path=data_path, kind="")
        events = list(itertools.islice(read_dataset(data_path, report=report), limit or DEFAULT_EVENTS))
        return events, f"{data_path}: {report.summary()}", None
    spec = DEMO_WORKLOAD
    truth = GroundTruth(spec)
    events = list(itertools.islice(iter_synthetic_events(spec, truth), limit))
    return events, (
        f"synthetic workload ({spec.users} users, {spec.items} items, {spec.categories} categories, "
        f"{spec.span_ms / DAY_MS:.0f} days of event time, {len(truth.churners)} churners, seed {spec.seed}; "
        "`interest-tracker generate --help` for more)"), truth


def hostile_records(settings: Settings, events: list[Event]) -> list[tuple[str, bytes | None, bytes, str]]:
    """A few records a careless producer sends: (topic, key, value, what is wrong with it)."""
    ts = events[0].ts if events else 1_700_000_000_000
    valid = {"event_id": "demo-hostile", "user_id": "u-hostile", "item_id": "i1", "category_id": "c1",
             "ts": ts}
    far_future = int(time.time() * 1000) + 365 * DAY_MS
    clicks, browses = settings.topic_of("click"), settings.topic_of("browse")
    records: list[tuple[str, bytes | None, bytes, str]] = [
        (clicks, b"u-hostile", b'{"event_id": "demo-bad-json", "user_id": ', "truncated JSON"),
        (clicks, b"u-hostile", orjson.dumps({k: v for k, v in valid.items() if k != "ts"}), "no ts"),
        (browses, None, orjson.dumps(valid)[:-1].replace(str(ts).encode(), f"{ts}.0".encode()) + b"}",
         "decimal ts"),
        (browses, b"u-hostile", orjson.dumps(valid | {"user_id": 42}), "numeric user_id"),
        (browses, b"u-hostile", b"", "empty value"),
        (clicks, b"u-hostile", orjson.dumps(valid | {"ts": far_future}), "ts a year ahead"),
    ]
    if events:  # a redelivered event: the worker applies it once, the copy is a dead letter
        key, value = encode_event(events[0])
        records.append((settings.topic_of(events[0].type), key, value, "duplicate of the first event"))
    return records


async def send_hostile(settings: Settings, records: list[tuple[str, bytes | None, bytes, str]]) -> None:
    producer = make_producer(settings)
    await producer.start()
    try:
        for topic, key, value, _ in records:
            await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()


def demo_model_dir(settings: Settings, data_path: str | None, no_model: bool) -> Path | None:
    """The artifact the demo's worker serves: ``--model-dir`` when given, else the packaged demo
    model on the synthetic workload (it knows only that workload's items), else none (baseline)."""
    if no_model:
        return None
    if settings.model_dir is not None:
        return settings.model_dir
    return None if data_path else DEMO_ARTIFACT_DIR


async def broker_answers(settings: Settings) -> bool:
    try:
        await wait_until_ready(settings.bootstrap_servers()[0], timeout=2)
        return True
    except (TimeoutError, RuntimeError):
        return False


async def wait_for_log(path: Path, text: str, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"worker exited (code {proc.returncode}); see {path}")
        if path.exists() and text in path.read_text(errors="replace"):
            return
        await asyncio.sleep(0.5)
    raise TimeoutError(f"worker not ready after {timeout}s; see {path}")


@dataclass
class DemoOutputs:
    """What the demo saw on the output topics."""

    counts: Counter[str] = field(default_factory=Counter)  # records per topic
    models: Counter[str] = field(default_factory=Counter)  # recommendations per "name version"
    interests: dict[str, str] = field(default_factory=dict)  # user -> latest top interests
    warnings: list[tuple[str, int]] = field(default_factory=list)  # (user, detected_ts)
    warning_rules: Counter[str] = field(default_factory=Counter)  # per rule (risk, silence)
    dead_letters: Counter[str] = field(default_factory=Counter)  # per reason

    def summary_lines(self) -> list[str]:
        lines = ["outputs: " + ", ".join(f"{t} {n}" for t, n in sorted(self.counts.items()))]
        models = ", ".join(f"{m} ({n})" for m, n in self.models.most_common()) or "none"
        lines.append(f"recommendations by model: {models}")
        for user, text in itertools.islice(sorted(self.interests.items(), key=lambda kv: int(kv[0][1:])
                                                  if kv[0][1:].isdigit() else 0), 3):
            lines.append(f"interests of {user} (long-term): {text}")
        users = len({u for u, _ in self.warnings})
        rules = ", ".join(f"{r} {n}" for r, n in self.warning_rules.most_common())
        lines.append(f"churn warnings: {len(self.warnings)} ({users} users; by rule: {rules or 'none'})")
        reasons = ", ".join(f"{r} {n}" for r, n in self.dead_letters.most_common()) or "none"
        lines.append(f"dead letters: {sum(self.dead_letters.values())} ({reasons})")
        return lines


def _interests(value: dict[str, Any], n: int = 3) -> str:
    return ", ".join(f"{c['category_id']}:{c['strength']:.2f}" for c in value.get("interests", [])[:n])


async def watch_outputs(settings: Settings, out: DemoOutputs, stop: asyncio.Event) -> None:
    """Print a sample of the outputs as they arrive; count and collect them all."""
    consumer = make_consumer(settings)
    await consumer.start()
    topics = settings.output_topics()
    tps = [TopicPartition(t, p) for t in topics for p in range(settings.partitions)]
    consumer.assign(tps)
    await consumer.seek_to_beginning(*tps)
    counts = out.counts
    try:
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=500)
            for tp, records in batch.items():
                for r in records:
                    counts[tp.topic] += 1
                    value = orjson.loads(r.value)
                    if tp.topic == settings.topic_recommendations:
                        model = f"{value['model']['name']} {value['model']['version']}"
                        out.models[model] += 1
                        out.interests[value["user_id"]] = _interests(value)
                        if counts[tp.topic] in SAMPLES:
                            items = ", ".join(i["item_id"] for i in value["items"][:5])
                            print(f"  recommendation ({model}) for {value['user_id']} after "
                                  f"{value['trigger']['topic']} {value['trigger']['event_id']}: "
                                  f"[{items}]  interests {_interests(value)}")
                    elif tp.topic == settings.topic_churn_warnings:
                        out.warnings.append((value["user_id"], value["detected_ts"]))
                        out.warning_rules[value["rule"]] += 1
                        if counts[tp.topic] <= 5:
                            print(f"  churn warning ({value['rule']}): {value['user_id']} risk "
                                  f"{value['risk']:.2f} ({value['reason']})")
                    elif tp.topic == settings.topic_dead_letters:
                        out.dead_letters[value["reason"]] += 1
                        if counts[tp.topic] <= 8:
                            print(f"  dead letter: {value['reason']}: {value['detail']}")
    finally:
        await consumer.stop()


def metrics_summary(settings: Settings) -> str:
    """Processing latency scraped from the worker's /metrics endpoint."""
    url = f"http://{settings.metrics_host}:{settings.metrics_port}/metrics"
    try:
        samples = scrape(settings.metrics_host, settings.metrics_port, timeout=3)
    except OSError as exc:
        return f"metrics endpoint {url} not reachable: {exc}"
    name = "tracker_processing_seconds"
    buckets = sorted((float(dict(labels)["le"]), v) for (n, labels), v in samples.items()
                     if n == f"{name}_bucket")
    total, count = samples.get((f"{name}_sum", ()), 0.0), samples.get((f"{name}_count", ()), 0.0)

    def quantile(q: float) -> str:
        le = next((b for b, c in buckets if count and c >= q * count), None)
        return f"<= {le * 1000:.0f} ms" if le is not None and le != float("inf") else "n/a"

    mean = total / count * 1000 if count else float("nan")
    return (f"metrics: {url} ({len(samples)} samples); processing latency over {int(count)} "
            f"outputs: mean {mean:.0f} ms, p50 {quantile(0.5)}, p99 {quantile(0.99)}")


async def run_demo(settings: Settings, data_path: str | None, duration: float | None, rate: float,
                   limit: int | None, no_model: bool = False) -> DemoOutputs:
    from stream_app.tools.loading import send_events

    started = time.monotonic()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    model_dir = demo_model_dir(settings, data_path, no_model)
    if model_dir is not None:
        try:
            meta = check_artifact(model_dir, settings.window_length)
        except ArtifactError as exc:
            raise RuntimeError(f"{exc} (`--no-model` runs the baseline)") from exc
        print(f"model: {meta['model_version']} from {model_dir}")
    else:
        print("model: none, the baseline recommender" + (" (the demo model knows only the synthetic "
              "workload's items; --model-dir to serve one)" if data_path and not no_model else ""))
    broker: EmbeddedBroker | None = None
    if not await broker_answers(settings):
        host, _, port = settings.bootstrap_servers()[0].partition(":")
        broker = EmbeddedBroker(int(port), host, settings.data_dir / "broker.log")
        await asyncio.to_thread(broker.start)
        print(f"embedded broker started on {broker.url}")
    worker: subprocess.Popen[bytes] | None = None
    out = DemoOutputs()
    try:
        await create_topics(settings, settings.topics_to_create())
        events, source, truth = demo_events(data_path, limit)
        hostile = hostile_records(settings, events)
        catalog_path = settings.data_dir / "demo-catalog.csv"
        Catalog.from_events(events).to_csv(catalog_path)
        print(f"events: {len(events)} from {source}")
        print(f"hostile records: {len(hostile)} ({', '.join(what for *_, what in hostile)})")
        log_path = settings.data_dir / "demo-worker.log"
        worker = spawn_worker(settings.model_copy(update={"catalog_path": catalog_path,
                                                          "model_dir": model_dir}), log_path)
        print(f"worker pid {worker.pid} starting (log: {log_path})")
        await wait_for_log(log_path, "[^Worker]: Ready", worker, timeout=120)
        print(f"worker ready; metrics on http://{settings.metrics_host}:{settings.metrics_port}/metrics"
              f"; sending at {rate:.0f} events/s")
        stop = asyncio.Event()
        watcher = asyncio.create_task(watch_outputs(settings, out, stop))
        await send_hostile(settings, hostile)
        sender = asyncio.create_task(send_events(settings, events, rate=rate, create=False))
        deadline = started + duration if duration else None
        last_print, last_total, idle_since = 0.0, -1, time.monotonic()
        inputs = [*settings.event_topics(), settings.repartition_topic]
        while deadline is None or time.monotonic() < deadline:
            await asyncio.sleep(0.5)
            total = sum(out.counts.values())
            if total != last_total:
                last_total, idle_since = total, time.monotonic()
            if time.monotonic() - last_print > 5:
                last_print = time.monotonic()
                print("  outputs so far: " + ", ".join(f"{t} {n}" for t, n in sorted(out.counts.items())))
            if worker.poll() is not None:
                raise RuntimeError(f"the worker exited with code {worker.returncode} (log: {log_path})")
            if sender.done() and time.monotonic() - idle_since > 2 and await group_lag(settings, inputs) == 0:
                break  # everything sent, applied and committed, and the outputs have stopped coming
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            summary = await sender
            print(summary.line("sent"))
        print(metrics_summary(settings))
        stop.set()
        await watcher
        for line in out.summary_lines():
            print(line)
        if truth is not None:
            print(score_churn_warnings(out.warnings, truth).line())
        else:
            print("churn warnings vs ground truth: none for a dataset file (the synthetic workload has it)")
    finally:
        if worker is not None:
            worker.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                worker.wait(30)
        if broker is not None:
            broker.stop()
        print(f"demo finished in {time.monotonic() - started:.0f}s")
    return out
