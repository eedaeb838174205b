"""Service commands: the embedded broker, a worker, the demo."""

from __future__ import annotations

import asyncio

import click

from stream_app.cli.group import main
from stream_app.cli.options import settings_options
from stream_app.core.config import Settings


@main.command()
@settings_options
def broker(settings: Settings) -> None:
    """Run the embedded Kafka-compatible broker and create the tracker's topics."""
    import time

    from stream_app.kafka.embedded import running_broker

    with running_broker(settings) as b:
        click.echo(f"embedded broker listening on {b.url}; topics created; Ctrl-C to stop")
        try:
            while b.proc and b.proc.poll() is None:
                time.sleep(1)
        except KeyboardInterrupt:
            pass


@main.command()
@settings_options
def worker(settings: Settings) -> None:
    """Run one tracker worker (same --app-id = same consumer group)."""
    from stream_app.service.app import run_worker

    run_worker(settings)


@main.command()
@settings_options
@click.option("--data", "data_path", default=None, help="a dataset file to replay (Taobao CSV, "
              "MovieLens ratings.dat, ...); generated events when omitted")
@click.option("--duration", type=float, default=None, help="stop after this many seconds")
@click.option("--rate", type=float, default=500.0, show_default=True, help="events/s to send")
@click.option("--limit", type=int, default=None, help="send at most this many events")
def demo(settings: Settings, data_path: str | None, duration: float | None, rate: float,
         limit: int | None) -> None:
    """Broker + worker + a replay of events, printing what comes out."""
    from stream_app.tools.datasets import detect_kind
    from stream_app.tools.demo import run_demo

    if data_path:
        try:
            detect_kind(data_path)
        except (ValueError, OSError) as exc:
            raise click.BadParameter(str(exc), param_hint="--data") from exc
    asyncio.run(run_demo(settings, data_path, duration, rate, limit))


