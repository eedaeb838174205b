"""The tracker against a bare Faust loop and a naive design, side by side, on the Taobao sample and on
the synthetic workload, in one run on the embedded broker; the issue's targets printed next to the
figures (PASS/FAIL).

    .venv/bin/python -m benchmarks.bench_tracker --taobao-model DIR --synthetic-model DIR \
        [--events 20000] [--naive-events 1500] [--latency-seconds 30] [--profile-seconds 30]

Per workload, each consumer reads the same events, pre-loaded into its own topics before it starts:

- (a) bare: ``benchmarks.bare_faust_loop`` (Faust ``take_events`` over the input topics, no work);
- (b) tracker: the worker without a model (the baseline recommender);
- (c) tracker + model: the worker with ``TRACKER_MODEL_DIR`` (micro-batches, one runtime call per
  batch, cached keys/values);
- (d) naive: the same worker with ``TRACKER_BATCH_MAX=1`` (a micro-batch of one event: a state write,
  a changelog record and an output delivery per event, in ingest too), ``TRACKER_MODEL_CACHE_USERS=0``
  (no cached keys/values: every event recomputes its whole context from position 0) and
  ``TRACKER_RECOMMEND_MIN_GAP_S=0`` (a recommendation per event). All are documented settings; nothing
  in the worker changes.

(b), (c) and the latency run use ``--recommend-min-gap-s`` (default: the setting's default), so not
every event makes a recommendation (which ones depends on the order events are applied in: the Taobao
file is grouped by user, not in time order). Rates are events / (last output's Kafka timestamp - first
recommendation's) for the workers, where the outputs are the recommendations and the state changelog
(every micro-batch that applied events writes its users' states last), read until nothing new came for
``IDLE_S``; first to last batch for the bare loop; (d) is timed over its first ``--naive-events``
recommendations (one per event).

Then, for (c): a fresh worker fed at half of (c)'s measured rate for ``--latency-seconds``; latency =
the recommendation record's Kafka timestamp (stamped when the worker sends it) - the input record's
Kafka timestamp (stamped by this producer when it sent the event), matched by ``trigger.event_id``.
State bytes per user = the newest changelog value of each user (the msgpack state RocksDB holds);
changelog bytes per event = key + value bytes of every changelog record / events processed. KV cache:
``tracker_model_cache_bytes`` and ``tracker_model_updates_total{path}`` scraped from (c)'s /metrics
(hit rate = users answered from cached keys/values / all answers).

Profile: another (c) run on the first workload under py-spy (``record -f raw``, started at the
first recommendation, ``--profile-seconds``); the table lists the functions with the most self time.

Models (train them first; the exact commands are in the README's benchmark section)::

    interest-tracker train ../shared/data/taobao/UserBehavior_head84k.csv --out /tmp/wb/model-taobao \
        --split time --valid-fraction 0.15 --test-fraction 0.25 --horizon-hours 24 \
        --min-item-count 2 --keep-history --early-stop category_ndcg@10 --category-weight 3.0 \
        --churn-weight 1.0 --batch-size 32 --lr 2e-3 --epochs 30 --patience 5 --threads 1 \
        --max-minutes 4
    interest-tracker generate --output /tmp/wb/synthetic-train.rec.zst --events 100000 --seed 7
    interest-tracker train /tmp/wb/synthetic-train.rec.zst --out /tmp/wb/model-synthetic (same options)
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from benchmarks.bench_worker import output_span
from stream_app.core.config import Settings
from stream_app.core.events import Event
from stream_app.kafka.admin import create_topics
from stream_app.kafka.embedded import EmbeddedBroker, free_port
from stream_app.service.app import changelog_topic_name
from stream_app.service.metrics import scrape
from stream_app.service.process import spawn_worker, stop_process
from stream_app.tools.datasets import read_dataset
from stream_app.tools.generate import WorkloadSpec, iter_synthetic_events
from stream_app.tools.loading import RateLimiter, send_events

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = Path(os.environ.get("TRACKER_SHARED_DATA", ROOT.parent / "shared" / "data")) / (
    "taobao/UserBehavior_head84k.csv")
PYSPY = Path(sys.executable).parent / "py-spy"


# --- figures and the table (pure: unit-tested) ---------------------------------------------------

@dataclass
class Figures:
    """One workload's measurements (rates in events/s, bytes, milliseconds)."""

    workload: str
    events: int
    bare: float
    plain: float
    model: float
    naive: float
    naive_events: int
    latency_rate: float = 0.0
    latency_events: int = 0
    p50_ms: float = float("nan")
    p99_ms: float = float("nan")
    users: int = 0
    state_bytes_per_user: float = float("nan")
    changelog_bytes_per_event: float = float("nan")
    naive_changelog_bytes_per_event: float = float("nan")
    kv_cache_bytes: float = float("nan")
    kv_hit_rate: float = float("nan")
    recommendations: int = 0  # made by (c) (the rate limit in event time)
    extra: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Target:
    name: str
    value: Callable[[Figures], float]
    bound: float
    at_least: bool  # True: value >= bound passes; False: value <= bound passes
    unit: str = ""

    def check(self, f: Figures) -> tuple[float, bool]:
        v = self.value(f)
        ok = bool(np.isfinite(v)) and (v >= self.bound if self.at_least else v <= self.bound)
        return v, ok


TARGETS = (
    Target("(c)/(a) tracker+model vs bare", lambda f: f.model / f.bare, 0.5, True, "x"),
    Target("(c)/(d) tracker+model vs naive", lambda f: f.model / f.naive, 5.0, True, "x"),
    Target("(b)/(a) tracker vs bare", lambda f: f.plain / f.bare, 0.7, True, "x"),
    Target("p99 latency at half (c) rate", lambda f: f.p99_ms, 200.0, False, " ms"),
    Target("changelog bytes per event (c)", lambda f: f.changelog_bytes_per_event, 1024.0, False, " B"),
)


def _num(v: float, unit: str = "") -> str:
    if not np.isfinite(v):
        return "n/a"
    if unit == "x":
        return f"{v:.2f}x"
    return f"{v:,.0f}{unit}" if abs(v) >= 100 else f"{v:.1f}{unit}"


def build_table(figs: Sequence[Figures], loadavg: tuple[float, float, float]) -> str:
    """The printed report: figures per workload side by side, then the targets with PASS/FAIL."""
    w = 24
    head = f"{'':<44}" + "".join(f"{f.workload:>{w}}" for f in figs)
    rows: list[tuple[str, Callable[[Figures], str]]] = [
        ("events", lambda f: f"{f.events:,}"),
        ("(a) bare Faust loop, events/s", lambda f: _num(f.bare)),
        ("(b) tracker, no model, events/s", lambda f: _num(f.plain)),
        ("(c) tracker + model, events/s", lambda f: _num(f.model)),
        ("(d) naive (batch 1, no KV cache), events/s",
         lambda f: f"{_num(f.naive)} ({f.naive_events:,} ev)"),
        ("(c)/(a)", lambda f: _num(f.model / f.bare, "x")),
        ("(c)/(d)", lambda f: _num(f.model / f.naive, "x")),
        ("(b)/(a)", lambda f: _num(f.plain / f.bare, "x")),
        ("(c) latency p50 / p99, ms", lambda f: f"{_num(f.p50_ms)} / {_num(f.p99_ms)}"),
        ("  at events/s (events)", lambda f: f"{_num(f.latency_rate)} ({f.latency_events:,})"),
        ("users", lambda f: f"{f.users:,}"),
        ("recommendations (c) per event", lambda f: f"{f.recommendations / max(f.events, 1):.1%}"),
        ("state bytes per user (newest changelog value)", lambda f: _num(f.state_bytes_per_user, " B")),
        ("changelog bytes per event (c)", lambda f: _num(f.changelog_bytes_per_event, " B")),
        ("changelog bytes per event (d)", lambda f: _num(f.naive_changelog_bytes_per_event, " B")),
        ("KV cache bytes (c, end of run)", lambda f: _num(f.kv_cache_bytes / 1e6, " MB")
         if np.isfinite(f.kv_cache_bytes) else "n/a"),
        ("KV cache hit rate (c: step / all answers)", lambda f: f"{f.kv_hit_rate:.1%}"
         if np.isfinite(f.kv_hit_rate) else "n/a"),
    ]
    for key in dict.fromkeys(k for f in figs for k in f.extra):
        rows.append((key, lambda f, k=key: f.extra.get(k, "")))  # type: ignore[misc]
    lines = [f"load average {loadavg[0]:.2f} {loadavg[1]:.2f} {loadavg[2]:.2f} "
             f"(1/5/15 min, {os.cpu_count()} cores) at the end of the run", head]
    lines += [f"{name:<44}" + "".join(f"{cell(f):>{w}}" for f in figs) for name, cell in rows]
    lines += ["", "targets (issue 10)" + " " * 26 + "".join(f"{f.workload:>{w}}" for f in figs)]
    for t in TARGETS:
        bound = f"{'>=' if t.at_least else '<='} {_num(t.bound, t.unit)}"
        cells = []
        for f in figs:
            v, ok = t.check(f)
            cells.append(f"{_num(v, t.unit)} {'PASS' if ok else 'FAIL'}")
        lines.append(f"{t.name + ' ' + bound:<44}" + "".join(f"{c:>{w}}" for c in cells))
    return "\n".join(lines)


def top_self_time(raw: str, n: int = 15) -> list[tuple[str, int, float]]:
    """(function, samples, share) with the most self time in a py-spy ``-f raw`` profile (collapsed
    stacks: ``frame;frame;... count``, the leaf frame last)."""
    leaf: Counter[str] = Counter()
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        leaf[stack.rsplit(";", 1)[-1]] += int(count)
    total = sum(leaf.values()) or 1
    return [(fn, c, c / total) for fn, c in leaf.most_common(n)]


# --- runs ------------------------------------------------------------------------------------------

def loadavg() -> tuple[float, float, float]:
    return os.getloadavg()


async def preload(settings: Settings, events: list[Event]) -> None:
    await create_topics(settings, settings.topics_to_create())
    await send_events(settings, events, create=False)


IDLE_S = 10.0  # a worker is done once nothing new came out for this long


async def activity_span(settings: Settings, on_first: Callable[[], None] | None = None,
                        timeout: float = 900) -> tuple[float, float, int]:
    """(first recommendation, last recommendation or changelog record) Kafka timestamps (s) and the
    number of recommendations, once nothing new came for ``IDLE_S``."""
    from aiokafka import TopicPartition

    from stream_app.kafka.clients import make_consumer

    recs, changelog = settings.topic_recommendations, changelog_topic_name(settings)
    consumer = make_consumer(settings)
    await consumer.start()
    consumer.assign([TopicPartition(t, p) for t in (recs, changelog) for p in range(settings.partitions)])
    await consumer.seek_to_beginning()
    first, last, n = float("inf"), 0.0, 0
    deadline = time.monotonic() + timeout
    quiet_since = time.monotonic()
    try:
        while time.monotonic() < deadline and (n == 0 or time.monotonic() - quiet_since < IDLE_S):
            got = await consumer.getmany(timeout_ms=500)
            for tp, batch in got.items():
                if not batch:
                    continue
                quiet_since = time.monotonic()
                last = max(last, *(r.timestamp / 1000 for r in batch))
                if tp.topic == recs:
                    if n == 0 and on_first is not None:
                        on_first()
                    n += len(batch)
                    first = min(first, *(r.timestamp / 1000 for r in batch))
    finally:
        await consumer.stop()
    if n == 0:
        raise TimeoutError(f"{settings.app_id}: no recommendation in {timeout} s")
    return first, last, n


async def read_all(settings: Settings, topic: str) -> list[Any]:
    """Every record of ``topic`` up to its end offsets now."""
    from aiokafka import TopicPartition

    from stream_app.kafka.clients import make_consumer

    consumer = make_consumer(settings)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(settings.partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)
        out: list[Any] = []
        idle = 0
        while idle < 5:  # (5 empty fetches: the end offsets were overstated)
            positions = [await consumer.position(tp) for tp in tps]
            if all(pos >= end[tp] for pos, tp in zip(positions, tps, strict=True)):
                break
            got = await consumer.getmany(timeout_ms=1000)
            idle = 0 if got else idle + 1
            for recs in got.values():
                out.extend(recs)
        return out
    finally:
        await consumer.stop()


def changelog_figures(settings: Settings) -> tuple[int, int, float]:
    """(records, total key+value bytes, mean newest value bytes per user) of the state changelog."""
    recs = asyncio.run(read_all(settings, changelog_topic_name(settings)))
    newest: dict[bytes, int] = {}
    total = 0
    for r in recs:
        total += max(r.serialized_key_size, 0) + max(r.serialized_value_size, 0)
        if r.value is None:
            newest.pop(r.key, None)
        else:
            newest[r.key] = len(r.value)
    per_user = float(np.mean(list(newest.values()))) if newest else float("nan")
    return len(recs), total, per_user


def bare_rate(settings: Settings, n: int, work: Path) -> float:
    out = work / f"{settings.app_id}.txt"
    with open(work / f"{settings.app_id}.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.bare_faust_loop"], cwd=ROOT,
            env={**os.environ, **settings.to_env(), "BENCH_EXPECT": str(n), "BENCH_OUT": str(out)},
            stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 900
        while not (out.exists() and out.read_text().strip()):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"bare loop exited ({proc.returncode}) or timed out: see {log.name}")
            time.sleep(0.2)
        first, last, seen = map(float, out.read_text().split())
        return seen / (last - first)
    finally:
        stop_process(proc)


def worker_rate(settings: Settings, n: int, work: Path, env: dict[str, str], expect: int | None = None,
                scrape_metrics: bool = False, profile_s: float = 0) -> tuple[float, dict[str, Any]]:
    """Events/s of a worker over ``n`` events (timed over its first ``expect`` recommendations if
    given, else until it falls silent: :func:`activity_span`); its metrics (and py-spy profile), and
    the number of recommendations, with it."""
    proc = spawn_worker(settings, work / f"{settings.app_id}.log", **env)
    extra: dict[str, Any] = {}
    spy: list[subprocess.Popen[bytes]] = []

    def start_spy() -> None:
        if profile_s:
            raw = work / f"{settings.app_id}.pyspy.txt"
            extra["profile_path"] = raw
            spy.append(subprocess.Popen(
                [str(PYSPY), "record", "-p", str(proc.pid), "-d", str(int(profile_s)), "-f", "raw",
                 "-o", str(raw)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT))

    try:
        if expect is None:
            first, last, extra["recommendations"] = asyncio.run(activity_span(settings, start_spy))
        else:
            first, last, extra["recommendations"] = asyncio.run(output_span(settings, expect,
                                                                            on_first=start_spy))
        if scrape_metrics:
            extra["metrics"] = scrape("127.0.0.1", settings.metrics_port)
        for s in spy:
            s.wait(profile_s + 60)
        return (n if expect is None else expect) / (last - first), extra
    finally:
        stop_process(proc)


def wait_ready(settings: Settings, proc: subprocess.Popen[bytes], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"worker {settings.app_id} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(  # noqa: S310 - loopback
                    f"http://127.0.0.1:{settings.web_port}/ready", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"worker {settings.app_id} not ready in {timeout} s")


async def produce_at_rate(settings: Settings, events: list[Event], rate: float) -> dict[str, int]:
    """Send ``events`` at ``rate``/s, each stamped with the wall time it was sent; {event_id: ms}."""
    from stream_app.kafka.clients import encode_event, make_producer

    producer = make_producer(settings)
    await producer.start()
    sent: dict[str, int] = {}
    limiter = RateLimiter(rate)
    futures = []
    try:
        for ev in events:
            key, value = encode_event(ev)
            now = int(time.time() * 1000)
            futures.append(await producer.send(settings.topic_of(ev.type), value, key=key,
                                               timestamp_ms=now))
            sent[ev.event_id] = now
            await limiter.tick()
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return sent


def latency(settings: Settings, events: list[Event], rate: float, work: Path,
            env: dict[str, str]) -> tuple[float, float, int]:
    """(p50, p99) ms from input record to recommendation record, for ``events`` sent at ``rate``
    (the recommendations that came until none came for ``IDLE_S``)."""
    asyncio.run(create_topics(settings, settings.topics_to_create()))
    proc = spawn_worker(settings, work / f"{settings.app_id}.log", **env)
    try:
        wait_ready(settings, proc)
        time.sleep(2)  # the assignment settles (the tracker's first batch after a rebalance)
        sent = asyncio.run(produce_at_rate(settings, events, rate))
        recs = asyncio.run(_read_recommendations(settings))
    finally:
        stop_process(proc)
    lat = [r.timestamp - sent[orjson.loads(r.value)["trigger"]["event_id"]] for r in recs]
    p50, p99 = np.percentile(lat, [50, 99])
    return float(p50), float(p99), len(lat)


async def _read_recommendations(settings: Settings, timeout: float = 300) -> list[Any]:
    from aiokafka import TopicPartition

    from stream_app.kafka.clients import make_consumer

    consumer = make_consumer(settings)
    await consumer.start()
    tps = [TopicPartition(settings.topic_recommendations, p) for p in range(settings.partitions)]
    consumer.assign(tps)
    await consumer.seek_to_beginning(*tps)
    out: list[Any] = []
    deadline = quiet = time.monotonic() + timeout
    try:
        while time.monotonic() < min(deadline, quiet + IDLE_S):
            for recs in (await consumer.getmany(timeout_ms=500)).values():
                if recs:
                    out.extend(recs)
                    quiet = time.monotonic()
    finally:
        await consumer.stop()
    return out


def metric(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str,
           **labels: str) -> float:
    want = tuple(sorted(labels.items()))
    return sum(v for (n, lab), v in samples.items() if n == name and all(x in lab for x in want))


def measure(name: str, events: list[Event], model_dir: Path, base: Settings, work: Path,
            naive_events: int, latency_seconds: float, profile_s: float,
            min_gap_s: float) -> tuple[Figures, Any]:
    n = len(events)
    tag = name.lower().split()[0]
    ns = {k: base.namespaced(f"{tag}-{k}", metrics_port=free_port(), web_port=free_port())
          for k in ("bare", "plain", "model", "naive", "latency", "profile")}
    for k in ("bare", "plain", "model", "naive") + (("profile",) if profile_s else ()):
        asyncio.run(preload(ns[k], events))
    print(f"[{name}] {n:,} events pre-loaded into each set of topics; load {loadavg()}", flush=True)
    gap_env = {"TRACKER_RECOMMEND_MIN_GAP_S": repr(min_gap_s)}
    model_env = {"TRACKER_MODEL_DIR": str(model_dir), **gap_env}

    f = Figures(name, n, bare_rate(ns["bare"], n, work), 0, 0, 0, min(naive_events, n))
    print(f"[{name}] (a) bare {f.bare:,.0f}/s; load {loadavg()}", flush=True)
    f.plain, _ = worker_rate(ns["plain"], n, work, gap_env)
    print(f"[{name}] (b) tracker {f.plain:,.0f}/s; load {loadavg()}", flush=True)
    f.model, extra = worker_rate(ns["model"], n, work, model_env, scrape_metrics=True)
    f.recommendations = extra["recommendations"]
    print(f"[{name}] (c) tracker + model {f.model:,.0f}/s; load {loadavg()}", flush=True)
    m = extra["metrics"]
    step = metric(m, "tracker_model_updates_total", path="step")
    full = metric(m, "tracker_model_updates_total", path="full")
    f.kv_hit_rate = step / (step + full) if step + full else float("nan")
    kv = [v for (k, _), v in m.items() if k == "tracker_model_cache_bytes"]
    f.kv_cache_bytes = kv[0] if kv else float("nan")
    records, total, f.state_bytes_per_user = changelog_figures(ns["model"])
    f.changelog_bytes_per_event = total / n
    f.extra["changelog records (c)"] = f"{records:,}"
    f.extra["TRACKER_RECOMMEND_MIN_GAP_S (b, c)"] = f"{min_gap_s:g} s"
    f.users = len({e.user_id for e in events})

    f.naive, _ = worker_rate(ns["naive"], f.naive_events, work,
                             {**model_env, "TRACKER_BATCH_MAX": "1", "TRACKER_MODEL_CACHE_USERS": "0",
                              "TRACKER_RECOMMEND_MIN_GAP_S": "0"}, f.naive_events)
    print(f"[{name}] (d) naive {f.naive:,.0f}/s; load {loadavg()}", flush=True)
    records_d, total_d, _ = changelog_figures(ns["naive"])
    f.naive_changelog_bytes_per_event = total_d / max(records_d, 1)  # one record per applied event

    f.latency_rate = f.model / 2
    lat_events = events[: max(1, min(n, int(f.latency_rate * latency_seconds)))]
    f.p50_ms, f.p99_ms, f.latency_events = latency(ns["latency"], lat_events, f.latency_rate, work,
                                                   model_env)
    print(f"[{name}] latency p50 {f.p50_ms:.0f} ms p99 {f.p99_ms:.0f} ms at {f.latency_rate:,.0f}/s; "
          f"load {loadavg()}", flush=True)
    profile = None
    if profile_s:
        _, extra = worker_rate(ns["profile"], n, work, model_env, profile_s=profile_s)
        path = extra.get("profile_path")
        profile = path.read_text() if path is not None and path.exists() else None
    return f, profile


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=20_000, help="events per workload")
    ap.add_argument("--naive-events", type=int, default=1_500, help="(d) is timed over this many")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the Taobao sample (read in place)")
    ap.add_argument("--taobao-model", type=Path, required=True)
    ap.add_argument("--synthetic-model", type=Path, required=True)
    ap.add_argument("--synthetic-seed", type=int, default=8,
                    help="generate.py seed of the measured workload (the model was trained on seed 7)")
    ap.add_argument("--latency-seconds", type=float, default=30)
    ap.add_argument("--profile-seconds", type=float, default=30, help="py-spy on (c), Taobao; 0: off")
    ap.add_argument("--only", choices=("taobao", "synthetic"), default=None)
    ap.add_argument("--recommend-min-gap-s", type=float, default=Settings().recommend_min_gap_s,
                    help="TRACKER_RECOMMEND_MIN_GAP_S of (b), (c) and the latency run ((d): 0)")
    ap.add_argument("--profile-out", type=Path, default=None, help="keep the raw py-spy profile here")
    args = ap.parse_args()
    started = time.monotonic()
    workloads: list[tuple[str, list[Event], Path]] = []
    if args.only in (None, "taobao"):
        workloads.append(("Taobao head84k", list(itertools.islice(read_dataset(args.data), args.events)),
                          args.taobao_model))
    if args.only in (None, "synthetic"):
        spec = WorkloadSpec(seed=args.synthetic_seed, max_events=args.events)
        workloads.append(("synthetic (generate)", list(iter_synthetic_events(spec)), args.synthetic_model))
    work = Path(tempfile.mkdtemp(prefix="bench-tracker-"))
    figs: list[Figures] = []
    profile = None
    try:
        with EmbeddedBroker(free_port(), log_path=work / "broker.log") as broker:
            base = Settings(broker_url=broker.url, data_dir=work / "data", log_level="warning")
            for i, (name, events, model) in enumerate(workloads):
                f, p = measure(name, events, model, base, work, args.naive_events,
                               args.latency_seconds, args.profile_seconds if i == 0 else 0,
                               args.recommend_min_gap_s)
                figs.append(f)
                profile = profile or p
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print()
    print(build_table(figs, loadavg()))
    if profile and args.profile_out is not None:
        args.profile_out.write_text(profile)
    if profile:
        print(f"\npy-spy on (c), {figs[0].workload}, {args.profile_seconds:.0f} s from the first "
              f"recommendation: top self time")
        for fn, samples, share in top_self_time(profile):
            print(f"{share:>7.1%} {samples:>7} {fn}")
    print(f"\nwall time {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
