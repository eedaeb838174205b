"""``interest-tracker demo``: the main job on the embedded default.

Starts the embedded broker (unless one answers at ``--broker-url``), one worker process, and a
replay of events (a dataset file when given, a synthetic workload otherwise), and prints what
comes out of the output topics, with the worker's Prometheus endpoint up.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import subprocess
import time
from collections import Counter
from pathlib import Path

import orjson
from aiokafka import TopicPartition

from stream_app.broker import EmbeddedBroker, create_topics, wait_until_ready
from stream_app.catalog import Catalog
from stream_app.config import Settings
from stream_app.events import Event
from stream_app.kafka import make_consumer
from stream_app.metrics import scrape
from stream_app.worker_process import spawn_worker

DEFAULT_EVENTS = 20_000


def demo_events(data_path: str | None, limit: int | None) -> tuple[list[Event], str]:
    n = limit or DEFAULT_EVENTS
    if data_path:
        from stream_app.tools.datasets import LoadReport, read_dataset

        report = LoadReport(path=data_path, kind="")
        events = list(itertools.islice(read_dataset(data_path, report=report), n))
        return events, f"{data_path}: {report.summary()}"
    from stream_app.generate import WorkloadSpec, iter_synthetic_events

    spec = WorkloadSpec(users=300, items=3000, categories=40, seed=1)
    return list(itertools.islice(iter_synthetic_events(spec), n)), (
        f"synthetic workload ({spec.users} users, {spec.items} items, {spec.categories} categories, "
        f"seed {spec.seed}; `interest-tracker generate --help` for more)")


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


async def watch_outputs(settings: Settings, counts: Counter[str], stop: asyncio.Event) -> None:
    """Print a sample of the outputs as they arrive; count them all."""
    consumer = make_consumer(settings)
    await consumer.start()
    topics = settings.output_topics()
    tps = [TopicPartition(t, p) for t in topics for p in range(settings.partitions)]
    consumer.assign(tps)
    await consumer.seek_to_beginning(*tps)
    shown_recs = 0
    try:
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=500)
            for tp, records in batch.items():
                counts[tp.topic] += len(records)
                for r in records:
                    value = orjson.loads(r.value)
                    if tp.topic == settings.topic_recommendations and shown_recs < 5:
                        shown_recs += 1
                        items = ", ".join(i["item_id"] for i in value["items"][:5])
                        cats = ", ".join(f"{c['category_id']}:{c['strength']:.2f}"
                                         for c in value["interests"][:3])
                        print(f"  recommendation for {value['user_id']} after "
                              f"{value['trigger']['topic']} {value['trigger']['event_id']}: "
                              f"[{items}]  interests {cats}")
                    elif tp.topic == settings.topic_churn_warnings and counts[tp.topic] <= 5:
                        print(f"  churn warning: {value['user_id']} risk {value['risk']:.2f} "
                              f"({value['reason']})")
                    elif tp.topic == settings.topic_dead_letters and counts[tp.topic] <= 5:
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
                   limit: int | None) -> None:
    from stream_app.loading import send_events

    started = time.monotonic()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    broker: EmbeddedBroker | None = None
    if not await broker_answers(settings):
        host, _, port = settings.bootstrap_servers()[0].partition(":")
        broker = EmbeddedBroker(int(port), host, settings.data_dir / "broker.log")
        await asyncio.to_thread(broker.start)
        print(f"embedded broker started on {broker.url}")
    worker: subprocess.Popen[bytes] | None = None
    try:
        await create_topics(settings, settings.topics_to_create())
        events, source = demo_events(data_path, limit)
        catalog_path = settings.data_dir / "demo-catalog.csv"
        Catalog.from_events(events).to_csv(catalog_path)
        print(f"events: {len(events)} from {source}")
        log_path = settings.data_dir / "demo-worker.log"
        worker = spawn_worker(settings.model_copy(update={"catalog_path": catalog_path}), log_path)
        print(f"worker pid {worker.pid} starting (log: {log_path})")
        await wait_for_log(log_path, "[^Worker]: Ready", worker, timeout=120)
        print(f"worker ready; metrics on http://{settings.metrics_host}:{settings.metrics_port}/metrics"
              f"; sending at {rate:.0f} events/s")
        counts: Counter[str] = Counter()
        stop = asyncio.Event()
        watcher = asyncio.create_task(watch_outputs(settings, counts, stop))
        sender = asyncio.create_task(send_events(settings, events, rate=rate, create=False))
        deadline = started + duration if duration else None
        last_print, last_total, idle_since = 0.0, -1, time.monotonic()
        while deadline is None or time.monotonic() < deadline:
            await asyncio.sleep(0.5)
            total = sum(counts.values())
            if total != last_total:
                last_total, idle_since = total, time.monotonic()
            if time.monotonic() - last_print > 5:
                last_print = time.monotonic()
                print("  outputs so far: " + ", ".join(f"{t} {n}" for t, n in sorted(counts.items())))
            if sender.done() and time.monotonic() - idle_since > 5:
                break  # everything sent and the outputs have stopped coming
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            summary = await sender
            print(summary.line("sent"))
        print(metrics_summary(settings))
        stop.set()
        await watcher
        print("outputs: " + ", ".join(f"{t} {n}" for t, n in sorted(counts.items())))
    finally:
        if worker is not None:
            worker.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                worker.wait(30)
        if broker is not None:
            broker.stop()
        print(f"demo finished in {time.monotonic() - started:.0f}s")
