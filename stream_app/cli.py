"""The ``interest-tracker`` command line. Heavy imports happen inside each command."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from typing import Any

import click

from stream_app.config import Settings

# Settings fields that every service command accepts as --options (env: TRACKER_<NAME>).
COMMON_FIELDS = (
    "broker_url", "broker_profile", "app_id", "partitions", "data_dir", "window_length",
    "metrics_host", "metrics_port", "web_port", "model_dir", "catalog_path",
    "security_protocol", "sasl_mechanism", "sasl_username", "sasl_password",
    "ssl_cafile", "ssl_certfile", "ssl_keyfile", "log_level",
)


def settings_options(fields: tuple[str, ...] = COMMON_FIELDS) -> Callable[..., Any]:
    """Add one --option per Settings field; the command receives ``settings: Settings``."""

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def wrapper(**kwargs: Any) -> Any:
            given = {f: kwargs.pop(f) for f in fields if kwargs.get(f) is not None}
            for f in fields:
                kwargs.pop(f, None)
            settings = Settings(**given)
            logging.basicConfig(
                level=settings.log_level.upper(),
                format="%(asctime)s %(levelname)s %(name)s: %(message)s",
            )
            return fn(settings=settings, **kwargs)

        for name in reversed(fields):
            info = Settings.model_fields[name]
            wrapper = click.option(
                "--" + name.replace("_", "-"),
                name,
                default=None,
                help=f"{info.description or name} [env TRACKER_{name.upper()}; "
                f"default {info.default}]",
            )(wrapper)
        return wrapper

    return decorate


@click.group()
@click.version_option(package_name="interest-tracker")
def main() -> None:
    """Real-time streaming interest tracker."""


@main.command()
@settings_options()
def broker(settings: Settings) -> None:
    """Run the embedded Kafka-compatible broker and create the tracker's topics."""
    import time

    from stream_app.broker import running_broker

    with running_broker(settings) as b:
        click.echo(f"embedded broker listening on {b.url}; topics created; Ctrl-C to stop")
        try:
            while b.proc and b.proc.poll() is None:
                time.sleep(1)
        except KeyboardInterrupt:
            pass


@main.command()
@settings_options()
def worker(settings: Settings) -> None:
    """Run one tracker worker (same --app-id = same consumer group)."""
    from stream_app.app import run_worker

    run_worker(settings)


@main.command()
@settings_options()
@click.option("--data", "data_path", default=None, help="a dataset file to replay (Taobao CSV, "
              "MovieLens ratings.dat, ...); generated events when omitted")
@click.option("--duration", type=float, default=None, help="stop after this many seconds")
@click.option("--rate", type=float, default=500.0, show_default=True, help="events/s to send")
@click.option("--limit", type=int, default=None, help="send at most this many events")
def demo(settings: Settings, data_path: str | None, duration: float | None, rate: float,
         limit: int | None) -> None:
    """Broker + worker + a replay of events, printing what comes out."""
    from stream_app.demo import run_demo

    asyncio.run(run_demo(settings, data_path, duration, rate, limit))


# --- record / replay / datasets / load generation (stream_app/tools) ------------------------


# --- training, export, evaluation (export/) -------------------------------------------------


if __name__ == "__main__":
    main()
