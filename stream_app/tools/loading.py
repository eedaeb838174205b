"""Putting events on the input topics: at a target rate, with a progress bar and a final count.

``send_events`` is shared by ``load-dataset`` (public dataset files through
:mod:`stream_app.tools.datasets`, the same adapters ``export/`` trains on) and ``generate``
(:mod:`stream_app.tools.generate`). Events are keyed by user id (``encode_event``), so each user's events
stay in order on one partition.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stream_app.core.config import Settings
from stream_app.core.events import Event

# Awaiting every send's delivery would serialise the producer; collect futures and settle them
# in chunks instead (order per partition is kept by the producer either way).
PENDING_MAX = 20_000
BAR_EVERY = 1000


class RateLimiter:
    """Keeps a sender at ``rate`` items/s on average (None: no limit); sleeps only when >5 ms ahead."""

    def __init__(self, rate: float | None):
        if rate is not None and rate <= 0:
            raise ValueError("rate must be > 0")
        self.rate = rate
        self.start = time.monotonic()
        self.count = 0

    async def tick(self, n: int = 1) -> None:
        self.count += n
        if self.rate is None:
            return
        ahead = self.count / self.rate - (time.monotonic() - self.start)
        if ahead > 0.005:
            await asyncio.sleep(ahead)


@dataclass
class SendSummary:
    sent: int = 0
    per_topic: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    interrupted: bool = False

    @property
    def rate(self) -> float:
        return self.sent / self.seconds if self.seconds > 0 else 0.0

    def line(self, what: str = "sent") -> str:
        topics = ", ".join(f"{t}: {n}" for t, n in self.per_topic.items())
        tail = "; interrupted" if self.interrupted else ""
        return f"{what} {self.sent} events ({topics}) in {self.seconds:.1f} s ({self.rate:,.0f}/s){tail}"


class PendingSends:
    """Futures of sends in flight; ``settle`` waits for them and raises the first failure."""

    def __init__(self) -> None:
        self.futures: list[asyncio.Future[Any]] = []

    async def add(self, fut: asyncio.Future[Any]) -> None:
        self.futures.append(fut)
        if len(self.futures) >= PENDING_MAX:
            await self.settle()

    async def settle(self) -> None:
        futs, self.futures = self.futures, []
        if futs:
            await asyncio.gather(*futs)


def progress_bar(enabled: bool, desc: str, total: int | None = None, unit: str = " ev") -> Any:
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit=unit, desc=desc, mininterval=0.5, unit_scale=True)


async def send_events(
    settings: Settings, events: Iterable[Event], *, rate: float | None = None, limit: int | None = None,
    duration: float | None = None, progress: bool = False, desc: str = "send", total: int | None = None,
    create: bool = True,
) -> SendSummary:
    """Produce ``events`` to their input topics (``Settings.topic_of``); returns counts and elapsed time.

    Stops after ``limit`` events or ``duration`` seconds, whichever comes first; the source is
    never advanced past the last event sent (a generator's ground truth stays exact).

    Cancellation (Ctrl-C) stops sending, waits for what was already handed to the producer, and
    returns a summary marked ``interrupted``.
    """
    from stream_app.kafka.admin import create_topics
    from stream_app.kafka.clients import encode_event, make_producer

    if create:
        await create_topics(settings, settings.event_topics())
    producer = make_producer(settings)
    await producer.start()
    summary = SendSummary(per_topic=dict.fromkeys(settings.event_topics(), 0))
    limiter = RateLimiter(rate)
    pending = PendingSends()
    bar = progress_bar(progress, desc, total if limit is None else min(total or limit, limit))
    started = time.monotonic()
    try:
        # islice, not a check inside the loop: the source is not advanced past the limit.
        for ev in itertools.islice(events, limit):
            topic = settings.topic_of(ev.type)
            key, value = encode_event(ev)
            await pending.add(await producer.send(topic, value, key=key, timestamp_ms=ev.ts))
            summary.sent += 1
            summary.per_topic[topic] += 1
            if bar is not None and summary.sent % BAR_EVERY == 0:
                bar.update(BAR_EVERY)
            await limiter.tick()
            if duration is not None and time.monotonic() - started >= duration:
                break
        await pending.settle()
    except asyncio.CancelledError:
        summary.interrupted = True
        await pending.settle()
    finally:
        await producer.stop()
        summary.seconds = time.monotonic() - started
        if bar is not None:
            bar.update(summary.sent % BAR_EVERY)
            bar.close()
    return summary


@dataclass
class LoadResult:
    report: Any  # stream_app.tools.datasets.LoadReport
    sent: SendSummary

    def lines(self) -> list[str]:
        return [self.report.summary(), self.sent.line("loaded")]


async def load_dataset(
    settings: Settings, path: str | Path, *, kind: str | None = None, rate: float | None = None,
    limit: int | None = None, progress: bool = False,
) -> LoadResult:
    """Read a public dataset file with the shared adapters and produce its events; bad lines are
    counted in the report (with examples), never fatal."""
    from stream_app.tools.datasets import LoadReport, detect_kind, read_dataset

    kind = kind or detect_kind(path)
    report = LoadReport(str(path), kind)
    events: Iterator[Event] = read_dataset(path, kind, report=report, progress=progress)
    sent = await send_events(settings, events, rate=rate, limit=limit, progress=False, desc="load")
    return LoadResult(report, sent)
