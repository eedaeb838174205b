"""Throughput of one tracker worker next to a bare Faust loop on the same events, and the time to
recover its state from the changelog, measured side by side in one run on each engine asked for
(the embedded broker by default; also the tests' 3-node Apache Kafka with ``--engines tansu,kafka``).

    .venv/bin/python -m benchmarks.bench_worker [--events 40000] [--data PATH] [--engines tansu,kafka]

Both consumers read the same Taobao events, pre-loaded into their own topics before they start.
Worker throughput = events / (last output time - first output time); the bare loop is timed
from its first batch to its last. Recovery: the worker is stopped, its RocksDB files deleted,
and a new worker rebuilds the table from the changelog (timed from the worker's own log).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from stream_app.core.config import Settings
from stream_app.core.events import Event
from stream_app.kafka.admin import create_topics
from stream_app.service.process import spawn_worker
from stream_app.tools.datasets import read_dataset
from stream_app.tools.loading import send_events
from tests.support.engines import ENGINE_NAMES, ENGINE_SETTINGS, engine_url, parse_engines

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "taobao" / "UserBehavior_head84k.csv"


def log_time(line: str) -> float:
    stamp = re.match(r"\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\]", line)
    assert stamp, line
    return datetime.strptime(stamp.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()


async def output_span(settings: Settings, expect: int, timeout: float = 900,
                      on_first: Callable[[], None] | None = None) -> tuple[float, float, int]:
    """(first, last) Kafka timestamps (s) of the recommendations, once ``expect`` have arrived."""
    from aiokafka import TopicPartition

    from stream_app.kafka.clients import make_consumer

    consumer = make_consumer(settings)
    await consumer.start()
    tps = [TopicPartition(settings.topic_recommendations, p) for p in range(settings.partitions)]
    consumer.assign(tps)
    await consumer.seek_to_beginning(*tps)
    first, last, n = float("inf"), 0.0, 0
    deadline = time.monotonic() + timeout
    try:
        while n < expect and time.monotonic() < deadline:
            for recs in (await consumer.getmany(timeout_ms=500)).values():
                if n == 0 and recs and on_first is not None:
                    on_first()
                n += len(recs)
                first = min(first, *(r.timestamp / 1000 for r in recs))
                last = max(last, *(r.timestamp / 1000 for r in recs))
    finally:
        await consumer.stop()
    if n < expect:
        raise TimeoutError(f"{settings.app_id}: {n} of {expect} recommendations in {timeout} s")
    return first, last, n


def wait_file(path: Path, proc: subprocess.Popen[bytes], timeout: float = 900) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return path.read_text()
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}")
        time.sleep(0.5)
    raise TimeoutError(path)


@dataclass
class Measured:
    engine: str
    bare_rate: float
    tracker_rate: float
    recovery_s: float
    changelog_records: int


def measure(engine: str, events: list[Event], work: Path) -> Measured:
    """The bare loop, the tracker and its recovery on one engine, started for this measurement."""
    with engine_url(engine, work) as url:
        # a recommendation per event (no rate limit), so the outputs count the applied events
        base = Settings(broker_url=url, data_dir=work / "data", metrics_port=0, web_port=0,
                        log_level="warning", recommend_min_gap_s=0,
                        ).model_copy(update=ENGINE_SETTINGS[engine])
        bare, tracker = base.namespaced("bench-bare"), base.namespaced("bench-tracker")
        for s in (bare, tracker):
            asyncio.run(create_topics(s, s.topics_to_create()))
            asyncio.run(send_events(s, events, create=False))
        print(f"{engine}: {len(events)} events pre-loaded into each set of topics", flush=True)

        out = work / "bare.txt"
        with open(work / "bare.log", "wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "benchmarks.bare_faust_loop"], cwd=ROOT,
                env={**os.environ, **bare.to_env(), "BENCH_EXPECT": str(len(events)),
                     "BENCH_OUT": str(out)}, stdout=log, stderr=subprocess.STDOUT)
        first, last, n = map(float, wait_file(out, proc).split())
        proc.terminate()
        proc.wait()
        bare_rate = n / (last - first)

        proc = spawn_worker(tracker, work / "tracker.log", TRACKER_LOG_LEVEL="info")
        first, last, n = asyncio.run(output_span(tracker, len(events)))
        proc.terminate()
        proc.wait()
        tracker_rate = n / (last - first)

        # recovery: the same app id with its RocksDB files deleted rebuilds from the changelog
        shutil.rmtree(tracker.data_dir / tracker.app_id)
        log2 = work / "tracker-recover.log"
        proc = spawn_worker(tracker, log2, TRACKER_LOG_LEVEL="info")
        deadline = time.monotonic() + 600
        text = ""
        while "Recovery complete" not in text and time.monotonic() < deadline:
            time.sleep(0.5)
            text = log2.read_text(errors="replace")
        proc.terminate()
        proc.wait()
    lines = text.splitlines()
    start = log_time(next(ln for ln in lines if "Setting newly assigned partitions" in ln))
    done = log_time(next(ln for ln in lines if "Recovery complete" in ln))
    changelog_records = sum(int(m) for m in re.findall(r"user-state-changelog\s*\|\s*\d+\s*\|\s*(\d+)",
                                                       text))
    return Measured(engine, bare_rate, tracker_rate, done - start, changelog_records)


def build_table(rows: list[Measured]) -> str:
    lines = [f"{'engine':<8}{'what':<44}{'events/s':>12}{'ratio':>8}"]
    for r in rows:
        lines.append(f"{r.engine:<8}{'bare Faust take_events loop (no work)':<44}{r.bare_rate:>12,.0f}"
                     f"{1:>8.2f}")
        lines.append(f"{r.engine:<8}{'tracker worker (validate, state, outputs)':<44}"
                     f"{r.tracker_rate:>12,.0f}{r.tracker_rate / r.bare_rate:>8.2f}")
    for r in rows:
        lines.append(f"{r.engine}: state recovery from the changelog {r.recovery_s:.2f} s for "
                     f"~{r.changelog_records} changelog records (highwater sum)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=40_000)
    ap.add_argument("--data", type=Path, default=Path(os.environ.get(
        "TRACKER_SHARED_DATA", DEFAULT_DATA.parent.parent)) / "taobao" / "UserBehavior_head84k.csv")
    ap.add_argument("--engines", default="tansu",
                    help="comma-separated, measured one after the other: tansu, kafka")
    args = ap.parse_args(argv)
    try:
        engines = parse_engines(args.engines)
    except ValueError as exc:
        ap.error(str(exc))
    events = list(itertools.islice(read_dataset(args.data), args.events))
    load = os.getloadavg()
    rows = []
    for engine in engines:
        work = Path(tempfile.mkdtemp(prefix=f"bench-worker-{engine}-"))
        rows.append(measure(engine, events, work))
        shutil.rmtree(work, ignore_errors=True)
    for engine in engines:
        print(f"{engine}: {ENGINE_NAMES[engine]}")
    print(f"{len(events)} events from {args.data.name}; cores {os.cpu_count()}, load average at "
          f"start {load[0]:.2f}, at end {os.getloadavg()[0]:.2f}")
    print(build_table(rows))


if __name__ == "__main__":
    main()
