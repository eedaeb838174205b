"""A bare Faust loop over the input topics (the benchmark's yardstick): the same broker settings,
topics and micro-batching as the tracker's ingest agent, and no work at all.

Run: python -m benchmarks.bare_faust_loop  (settings from TRACKER_* env; BENCH_EXPECT events;
writes ``first last count`` wall times to BENCH_OUT when BENCH_EXPECT events were seen)."""

from __future__ import annotations

import os
import time

import faust

from stream_app.core.config import Settings
from stream_app.service.app import make_faust_app

settings = Settings()
expect = int(os.environ["BENCH_EXPECT"])
out_path = os.environ["BENCH_OUT"]
app = make_faust_app(settings)
inputs = app.topic(*settings.event_topics(), key_type=bytes, value_type=bytes,
                   partitions=settings.partitions)
seen = {"n": 0, "first": 0.0}


@app.agent(inputs)
async def bare(stream: faust.StreamT) -> None:
    async for batch in stream.take_events(settings.batch_max, settings.batch_within_s):
        if not seen["n"]:
            seen["first"] = time.time()
        seen["n"] += len(batch)
        if seen["n"] >= expect:
            with open(out_path, "w") as f:
                f.write(f"{seen['first']} {time.time()} {seen['n']}\n")


if __name__ == "__main__":
    worker = faust.Worker(app, loglevel="WARNING", redirect_stdouts=False)
    worker.spinner = None  # as in the tracker (service/app.py): no root logger at DEBUG
    worker.execute_from_commandline()
