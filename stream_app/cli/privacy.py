"""Privacy commands: ``interest-tracker erase USER_ID``."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import click

from stream_app.cli.group import main
from stream_app.cli.options import settings_options
from stream_app.core.config import Settings


async def request_erasure(settings: Settings, user_id: str, request_id: str,
                          wait_s: float) -> dict[str, Any] | None:
    """Produce the request to the erasures topic; with ``wait_s`` > 0, return its confirmation
    (None if none came in time). No Kafka key: the worker repartitions by the (hashed) user id."""
    import orjson

    from stream_app.kafka.clients import make_consumer, make_producer

    value = orjson.dumps({"user_id": user_id, "request_id": request_id})
    consumer = None
    if wait_s > 0:  # subscribed before the request is sent, reading from the topic's start
        consumer = make_consumer(settings, settings.topic_erasure_confirmations, group_id=None)
        await consumer.start()
    try:
        producer = make_producer(settings)
        await producer.start()
        try:
            await (await producer.send(settings.topic_erasures, value))
        finally:
            await producer.stop()
        if consumer is None:
            return None
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for r in records:
                    confirmation = orjson.loads(r.value)
                    if confirmation.get("request_id") == request_id:
                        return confirmation
        return None
    finally:
        if consumer is not None:
            await consumer.stop()


@main.command()
@settings_options
@click.argument("user_id")
@click.option("--request-id", default=None, help="id echoed by the confirmation (default: a new uuid)")
@click.option("--wait", "wait_s", type=float, default=60.0, show_default=True,
              help="seconds to wait for the confirmation on the erasure-confirmations topic (0: don't)")
def erase(settings: Settings, user_id: str, request_id: str | None, wait_s: float) -> None:
    """Ask the workers to forget USER_ID (the raw id; hashed by the workers when pseudonymizing):
    its state is deleted (a changelog tombstone), its caches dropped, and the erasure confirmed."""
    import orjson

    request_id = request_id or uuid.uuid4().hex
    confirmation = asyncio.run(request_erasure(settings, user_id, request_id, wait_s))
    if wait_s <= 0:
        click.echo(f"erasure request {request_id} sent to {settings.topic_erasures}")
        return
    if confirmation is None:
        raise click.ClickException(f"erasure request {request_id} sent; no confirmation within "
                                   f"{wait_s:g} s (is a worker running?)")
    click.echo(orjson.dumps(confirmation).decode())
