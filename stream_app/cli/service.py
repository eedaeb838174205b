"""Service commands: the embedded broker, a worker, the demo."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Iterator
from types import FrameType

import click

from stream_app.cli.group import main
from stream_app.cli.options import settings_options
from stream_app.core.config import Settings


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def _user_errors() -> Iterator[None]:
    """A start-up problem the user can fix (a port in use, an unreachable broker) as one line."""
    from stream_app.kafka.embedded import StartupError

    try:
        yield
    except StartupError as exc:
        raise click.ClickException(str(exc)) from None


@main.command()
@settings_options
def broker(settings: Settings) -> None:
    """Run the embedded Kafka-compatible broker and create the tracker's topics."""
    import threading

    from stream_app.kafka.embedded import running_broker

    # While starting, SIGTERM (kill, systemd, a supervisor) and SIGHUP stop the broker as Ctrl-C
    # does: the `with` below then stops the Tansu child instead of leaving it running without a
    # parent. Once it runs, the three only set a flag: an exception raised between two bytecodes of
    # Popen.poll can leave the Popen's wait lock held, and the kill that follows then waits for
    # ever (seen once in CI: SIGINT right after the start line, the command hung for 120 s).
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _interrupt)
    stop = threading.Event()
    try:
        with _user_errors(), running_broker(settings) as b:
            for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                signal.signal(signum, lambda *_: stop.set())
            click.echo(f"embedded broker listening on {b.url} (pid {b.pid}); topics created; "
                       "Ctrl-C or SIGTERM to stop")
            while not stop.wait(1) and b.proc and b.proc.poll() is None:
                pass
            if not stop.is_set():
                raise click.ClickException(
                    f"the embedded broker exited with code {b.proc and b.proc.returncode}")
    except KeyboardInterrupt:
        pass
    click.echo("embedded broker stopped")


@main.command()
@settings_options
def worker(settings: Settings) -> None:
    """Run one tracker worker (same --app-id = same consumer group)."""
    from stream_app.service.app import run_worker

    with _user_errors():
        run_worker(settings)


@main.command()
@settings_options
@click.option("--data", "data_path", default=None, help="a dataset file to replay (Taobao CSV, "
              "MovieLens ratings.dat, ...); generated events when omitted")
@click.option("--duration", type=float, default=None, help="stop after this many seconds")
@click.option("--rate", type=float, default=500.0, show_default=True, help="events/s to send")
@click.option("--limit", type=int, default=None, help="send at most this many events")
@click.option("--no-model", is_flag=True, help="run the baseline recommender, not the packaged demo model "
              "(which the demo serves on its synthetic workload unless --model-dir names another)")
def demo(settings: Settings, data_path: str | None, duration: float | None, rate: float,
         limit: int | None, no_model: bool) -> None:
    """Broker + worker (the attention model) + a replay of events with a few hostile records, printing
    what comes out and a score of the churn warnings against the workload's ground truth."""
    from stream_app.tools.datasets import detect_kind
    from stream_app.tools.demo import run_demo

    if data_path:
        try:
            detect_kind(data_path)
        except (ValueError, OSError) as exc:
            raise click.BadParameter(str(exc), param_hint="--data") from exc
    with _user_errors():
        asyncio.run(run_demo(settings, data_path, duration, rate, limit, no_model))


