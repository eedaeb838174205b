"""Throughput of ``replay`` and ``load-dataset`` next to a raw aiokafka producer, in one run.

    .venv/bin/python -m benchmarks.bench_replay [--data FILE] [--limit N] [--rounds R]

Starts its own embedded broker. Every round sends the same events three ways, each into fresh
topics, with the same producer settings (``make_producer``):

- raw: a bare aiokafka producer sending events already encoded in memory (the ceiling);
- load-dataset: parse the dataset file with the shared adapters, encode, send (``load_dataset``);
- replay: read a recording of those events and send it at maximum speed (``replay``).

Rounds alternate the three so drift on the machine hits them alike; the median per method is
reported, with its ratio to raw.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path

from stream_app.broker import EmbeddedBroker, create_topics, free_port
from stream_app.config import Settings
from stream_app.kafka import encode_event, make_producer, topic_for
from stream_app.loading import PendingSends, load_dataset
from stream_app.recording import record
from stream_app.replay import ReplayOptions, replay
from stream_app.tools.datasets import read_dataset

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = Path(os.environ.get("TRACKER_SHARED_DATA", ROOT.parent / "shared" / "data")) / (
    "taobao/UserBehavior_head84k.csv")


def settings_for(url: str, prefix: str) -> Settings:
    return Settings(broker_url=url, topic_clicks=f"{prefix}-clicks", topic_browses=f"{prefix}-browses",
                    topic_purchases=f"{prefix}-purchases", log_level="warning")


async def raw_producer(settings: Settings, records: list[tuple[str, bytes, bytes, int]]) -> float:
    """Seconds to send pre-encoded (topic, key, value, ts) records with a bare producer."""
    await create_topics(settings, settings.event_topics())
    producer = make_producer(settings)
    await producer.start()
    pending = PendingSends()
    try:
        t0 = time.perf_counter()
        for topic, key, value, ts in records:
            await pending.add(await producer.send(topic, value, key=key, timestamp_ms=ts))
        await pending.settle()
        return time.perf_counter() - t0
    finally:
        await producer.stop()


async def run(url: str, data: Path, limit: int | None, rounds: int) -> None:
    events = list(read_dataset(data))[:limit]
    n = len(events)
    with tempfile.TemporaryDirectory() as tmp:
        source = settings_for(url, "src")
        await create_topics(source, source.event_topics())
        loaded = await load_dataset(source, data, limit=limit)
        assert loaded.sent.sent == n, (loaded.sent.sent, n)
        rec_path = Path(tmp) / "bench.rec.zst"
        summary = await record(source, list(source.event_topics()), rec_path, idle_s=1.0)
        assert summary.records == n, (summary.records, n)

        times: dict[str, list[float]] = {
            "raw aiokafka producer": [], "load-dataset": [], "replay (max speed)": []}
        for r in range(rounds):
            s = settings_for(url, f"raw{r}")
            encoded = [(topic_for(s, e), *encode_event(e), e.ts) for e in events]
            times["raw aiokafka producer"].append(await raw_producer(s, encoded))
            s = settings_for(url, f"load{r}")
            await create_topics(s, s.event_topics())
            res = await load_dataset(s, data, limit=limit)
            assert res.sent.sent == n
            times["load-dataset"].append(res.sent.seconds)
            s = settings_for(url, f"replay{r}")
            rename = {t: f"replay{r}-{t.removeprefix('src-')}" for t in source.event_topics()}
            rep = await replay(s, rec_path, ReplayOptions(rename=rename))
            assert rep.sent == n
            times["replay (max speed)"].append(rep.seconds)

    print(f"{n:,} events from {data.name}; embedded broker, 4 partitions per topic; "
          f"median of {rounds} rounds")
    base = n / statistics.median(times["raw aiokafka producer"])
    print(f"{'method':<24}{'events/s':>12}{'vs raw':>9}   per round (events/s)")
    for name, secs in times.items():
        rate = n / statistics.median(secs)
        rounds_s = ", ".join(f"{n / x:,.0f}" for x in secs)
        print(f"{name:<24}{rate:>12,.0f}{rate / base:>9.2f}   {rounds_s}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="dataset file (default: Taobao 84k)")
    ap.add_argument("--limit", type=int, default=None, help="use the first N events")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    with EmbeddedBroker(free_port()) as broker:
        asyncio.run(run(broker.url, args.data, args.limit, args.rounds))


if __name__ == "__main__":
    main()
