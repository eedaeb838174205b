"""A rebalance begins while the event-time merge holds events: Faust pauses every partition and
then waits, with no time limit, until each message in process is acknowledged. Seen on Apache
Kafka: the only worker left after a kill -9 held an event whose merge partner had been fetched
but not delivered (the flow was stopped), waited there for good and was dropped from its group.
The worker's app (real Faust objects, not started) must let held events go unacknowledged."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import faust
from faust.types import Message

from stream_app.core.config import Settings
from stream_app.service.app import build_app
from stream_app.service.ingest import Ingest


def hold(app: faust.App, ingest: Ingest, topic: str, offset: int) -> Message:
    """A message of partition 0 of ``topic`` as Faust delivers it and the merge holds it."""
    msg = Message(topic, 0, offset, time.time(), 0, [], b"u1", b"{}", None)
    app.consumer.track_message(msg)  # what Faust does before a stream sees it
    msg.incref()  # what Ingest.on_batch does: held until forwarded
    event = faust.Event(app, msg.key, msg.value, msg.headers, msg)
    ingest.merge.add(topic, 0, 1_000 + offset, offset, (event, None, 0.0), arrived=0.0)
    return msg


def test_rebalance_start_lets_go_of_held_events_without_acknowledging_them(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, app_id="t-unit-rebalance")
    tapp = build_app(settings)
    app, ingest = tapp.app, tapp.ingest
    consumer = app.consumer
    messages = [hold(app, ingest, topic, offset)
                for offset, topic in enumerate([settings.topic_browses, settings.topic_clicks])]
    ingest.last_offset[(settings.topic_clicks, 0)] = 1
    assert ingest.holding() and len(consumer._unacked_messages) == 2  # noqa: SLF001

    app.on_rebalance_start()  # what aiokafka's rebalance listener calls first
    asyncio.run(ingest.forward())  # the worker's forwarding loop, every 50 ms

    assert not ingest.holding()
    assert not consumer._unacked_messages  # noqa: SLF001  # wait_empty has nothing to wait for
    assert not any(m.acked for m in messages)  # never acknowledged, so never committed
    assert not ingest.last_offset  # re-read from the committed offsets after the assignment

    # a batch taken from a stream before the flow stopped arrives during the rebalance
    late = hold(app, ingest, settings.topic_purchases, 2)
    asyncio.run(ingest.forward())
    assert not ingest.holding() and not consumer._unacked_messages and not late.acked  # noqa: SLF001
    app.on_rebalance_end()
    hold(app, ingest, settings.topic_purchases, 3)
    assert ingest.holding()  # after the rebalance events are held again
