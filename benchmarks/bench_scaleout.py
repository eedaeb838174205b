"""Scale-out: 1, 2 and 3 workers of one consumer group on the same synthetic events, side by side in
one run, on a 3-node Apache Kafka (replication factor 3, the tests' ``kafka`` profile) or on the
embedded broker.

    .venv/bin/python -m benchmarks.bench_scaleout [--engine kafka|tansu] [--events 100000] \
        [--workers 1,2,3] [--partitions 6] [--model-dir DIR]

The events are the generator's default workload (``WorkloadSpec`` defaults, seed 7) with the users
cut down so that ``--events`` is about the whole workload (``users_for``), keyed by user id
(``send_events``). The engine starts once; each worker count k gets a fresh app id (consumer group
and topics, ``--partitions`` each) and k worker processes, each with its own data dir and metrics
port, the baseline recommender unless ``--model-dir`` is given, and ``recommend_min_gap_s=0``: every
applied event makes one recommendation, so counting recommendations counts applied events.

On Apache Kafka a group forms with whoever joins first (``group.initial.rebalance.delay.ms=0``), so a
backlog produced before the workers start would be read by the first worker alone until the others
join and the group rebalances. The workers therefore start on empty topics; once each one's latest
assignment holds partitions of the repartition topic (the split, read from the worker logs), the
events are produced at full speed (their send time is printed: the producer shares the cores with
the workers for those seconds). Rate = events / (last - first recommendation), Kafka record
timestamps (``output_span``). Per worker: the repartition partitions it holds at the end (the
state's partitions) and the events it applied (``tracker_events_total`` from its /metrics).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import re
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from benchmarks.bench_worker import output_span
from stream_app.core.config import Settings
from stream_app.core.events import Event
from stream_app.kafka.admin import create_topics
from stream_app.kafka.embedded import free_port
from stream_app.service.metrics import scrape
from stream_app.tools.generate import WorkloadSpec, iter_synthetic_events
from stream_app.tools.loading import SendSummary, send_events
from tests.support.engines import ENGINE_NAMES, ENGINE_SETTINGS, engine_url
from tests.support.streaming import WorkerProcess, wait_until_group_splits

# events per user of the generator's default workload (694,226 events for its 1,000 users), a
# little low so that the users make at least the events asked for
EVENTS_PER_USER = 680


def users_for(events: int) -> int:
    """Users of the default workload that make about ``events`` events (at least that many)."""
    return max(1, math.ceil(events / EVENTS_PER_USER))


def assigned_partitions(log: str, topic: str) -> set[int]:
    """Partitions of ``topic`` in the latest "Setting newly assigned partitions" table of a worker
    log (Faust writes ranges: ``{0-2, 5}``)."""
    blocks = log.split("Setting newly assigned partitions")
    if len(blocks) < 2:
        return set()
    match = re.search(rf"^\| {re.escape(topic)} +\| \{{([^}}]*)\}}", blocks[-1], re.MULTILINE)
    parts: set[int] = set()
    for item in match.group(1).split(",") if match else []:
        lo, _, hi = item.strip().partition("-")
        parts.update(range(int(lo), int(hi or lo) + 1))
    return parts


@dataclass
class Row:
    """One worker count's run."""

    workers: int
    events: int
    seconds: float  # first to last recommendation
    sent: SendSummary
    partitions: list[set[int]]  # per worker
    applied: list[float]  # events applied, per worker
    errors: int  # ERROR lines in the worker logs

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


def build_table(rows: Sequence[Row]) -> str:
    """The rows side by side; speed-up against the 1-worker row (or the first row)."""
    base = next((r for r in rows if r.workers == 1), rows[0]).rate if rows else 0.0
    lines = [f"{'workers':>7} {'events/s':>9} {'speed-up':>8} {'span s':>7} {'sent in s':>9}  "
             f"{'partitions per worker':<24} {'events per worker':<28} {'ERROR lines':>11}"]
    for r in rows:
        parts = " | ".join(",".join(map(str, sorted(p))) or "-" for p in r.partitions)
        applied = " / ".join(f"{a:,.0f}" for a in r.applied)
        lines.append(f"{r.workers:>7} {r.rate:>9,.0f} {r.rate / base if base else 0:>7.2f}x "
                     f"{r.seconds:>7.1f} {r.sent.seconds:>9.1f}  {parts:<24} {applied:<28} {r.errors:>11}")
    return "\n".join(lines)


def events_applied(settings: Settings) -> float:
    samples = scrape(settings.metrics_host, settings.metrics_port)
    return sum(v for (name, _), v in samples.items() if name == "tracker_events_total")


async def produce_and_time(app: Settings, events: list[Event], timeout: float
                           ) -> tuple[SendSummary, tuple[float, float, int]]:
    sent, span = await asyncio.gather(send_events(app, events, create=False),
                                      output_span(app, len(events), timeout))
    return sent, span


def run(base: Settings, k: int, events: list[Event], work: Path, timeout: float) -> Row:
    """k workers of a fresh app id on the events; stopped before returning."""
    app = base.namespaced(f"scale-k{k}-{uuid.uuid4().hex[:6]}")
    asyncio.run(create_topics(app, app.topics_to_create()))
    workers = [WorkerProcess(app.model_copy(update={"data_dir": work / f"k{k}-w{i}",
                                                    "metrics_port": free_port()}),
                             work / f"k{k}-w{i}.log").start() for i in range(k)]
    try:
        for w in workers:
            w.wait_ready(timeout=300)
        wait_until_group_splits(workers, timeout=300)
        sent, (first, last, n) = asyncio.run(produce_and_time(app, events, timeout))
        applied = [events_applied(w.settings) for w in workers]
        partitions = [assigned_partitions(w.log(), app.repartition_topic) for w in workers]
    finally:
        for w in workers:
            w.stop()
    errors = sum(w.log().count("[ERROR]") for w in workers)
    return Row(k, n, last - first, sent, partitions, applied, errors)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--engine", choices=sorted(ENGINE_SETTINGS), default="kafka")
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--workers", default="1,2,3", help="worker counts, comma-separated")
    ap.add_argument("--partitions", type=int, default=6, help="partitions of every topic")
    ap.add_argument("--model-dir", type=Path, help="serve this model (default: the baseline)")
    ap.add_argument("--timeout", type=float, default=1800, help="per worker count, for the outputs")
    args = ap.parse_args(argv)
    counts = [int(k) for k in args.workers.split(",")]

    spec = WorkloadSpec(users=users_for(args.events), max_events=args.events)
    events = list(iter_synthetic_events(spec))
    work = Path(tempfile.mkdtemp(prefix="bench-scaleout-"))
    load = os.getloadavg()
    started = time.monotonic()
    rows: list[Row] = []
    with engine_url(args.engine, work) as url:
        base = Settings(broker_url=url, partitions=args.partitions, recommend_min_gap_s=0,
                        model_dir=args.model_dir, web_port=0, log_level="info",
                        ).model_copy(update=ENGINE_SETTINGS[args.engine])
        for k in counts:
            try:
                rows.append(run(base, k, events, work, args.timeout))
            except (TimeoutError, AssertionError, RuntimeError) as exc:  # the other counts still run
                print(f"  {k} worker(s) FAILED: {str(exc)[-500:]}", flush=True)
                continue
            print(f"  {k} worker(s): {rows[-1].rate:,.0f} events/s", flush=True)

    print(f"engine: {ENGINE_NAMES[args.engine]}; {args.partitions} partitions per topic")
    print(f"events: {len(events):,} of the default synthetic workload with {spec.users} users "
          f"(seed {spec.seed}), keyed by user id; "
          f"{'model ' + str(args.model_dir) if args.model_dir else 'baseline recommender'}, "
          f"a recommendation per event")
    print(f"cores: {os.cpu_count()}; load average at start {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, "
          f"at end {' '.join(f'{x:.2f}' for x in os.getloadavg())}; run took "
          f"{time.monotonic() - started:.0f} s (logs: {work})")
    print(build_table(rows))


if __name__ == "__main__":
    main()
