"""Apache Kafka (KRaft) on loopback, from Maven jars: one or several combined broker+controller
nodes for tests and local runs against the real broker (the ``kafka`` profile).

``fetch_jars()`` copies the broker's jars (deploy/kafka/pom.xml) into a cache once;
``with ApacheKafkaCluster(brokers=3) as kafka: kafka.url`` formats, starts and waits for the nodes
and removes everything on exit. ``python -m stream_app.kafka.apache --brokers 3`` runs one until
Ctrl-C (the jars: :mod:`stream_app.kafka.apache_jars`).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import logging
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from stream_app.kafka.apache_jars import KafkaUnavailable, fetch_jars, java_binary
from stream_app.kafka.embedded import free_port

log = logging.getLogger(__name__)

# Lean JVMs: the machines have 2 cores for up to 3 nodes plus the tests. Serial GC and C1-only
# compilation start faster and use less CPU than G1 + C2 (measured: see docs/apache-kafka.md).
JVM_FLAGS = ("-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Xss512k", "-Djava.awt.headless=true")
LOG4J2 = """\
status = warn
appender.file.type = File
appender.file.name = file
appender.file.fileName = {path}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = file
logger.state.name = state.change.logger
logger.state.level = WARN
"""


def _cluster_id() -> str:
    # Kafka's Uuid text form: 16 random bytes, URL-safe base64 without padding, not starting
    # with '-' (saves a JVM start for `kafka-storage random-uuid`)
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text


def _die_with_parent() -> None:
    # Linux: the JVM gets SIGKILL if the process that started it dies (a killed pytest must not
    # leave brokers eating the machine's two cores). prctl(PR_SET_PDEATHSIG=1, SIGKILL).
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)


@dataclass
class KafkaNode:
    """One combined broker+controller JVM."""

    node_id: int
    port: int
    controller_port: int
    dir: Path
    log_path: Path
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class ApacheKafkaCluster:
    """``brokers`` KRaft nodes (each broker and controller) on loopback, in a temporary folder.

    Replication defaults follow the size: 1 node → everything 1; n nodes → replication factor n
    and min ISR a majority (2 of 3), so that one node can die without stopping acks=all writes.
    Start and restart nodes from a thread that outlives them (e.g. the main thread, not
    ``asyncio.to_thread``): on Linux a node is killed when the thread that started it ends.
    """

    def __init__(
        self,
        brokers: int = 1,
        log_dir: Path | None = None,
        heap: str = "512m",
        startup_timeout: float = 180.0,
        properties: dict[str, str] | None = None,
    ):
        if brokers < 1:
            raise ValueError("brokers must be >= 1")
        self.brokers = brokers
        self.min_isr = brokers // 2 + 1
        self.heap, self.startup_timeout = heap, startup_timeout
        self.extra = properties or {}
        self.cluster_id = _cluster_id()
        self._tmp = Path(tempfile.mkdtemp(prefix="apache-kafka-"))
        logs = Path(log_dir) if log_dir else self._tmp
        logs.mkdir(parents=True, exist_ok=True)
        self.nodes = [
            KafkaNode(i, free_port(), free_port(), self._tmp / f"node-{i}", logs / f"kafka-{i}.log")
            for i in range(1, brokers + 1)
        ]
        self.url = ",".join(n.address for n in self.nodes)
        self.jars: Path | None = None

    @property
    def pids(self) -> list[int | None]:
        return [n.pid for n in self.nodes]

    def node(self, node_id: int) -> KafkaNode:
        return self.nodes[node_id - 1]

    def properties(self, node: KafkaNode) -> dict[str, str]:
        n = str(self.brokers)
        isr = str(self.min_isr)
        voters = ",".join(f"{x.node_id}@127.0.0.1:{x.controller_port}" for x in self.nodes)
        props = {
            "process.roles": "broker,controller",
            "node.id": str(node.node_id),
            # a static voter set: every node formatted alike, no --standalone/--initial-controllers
            "controller.quorum.voters": voters,
            "listeners": f"PLAINTEXT://127.0.0.1:{node.port},CONTROLLER://127.0.0.1:{node.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{node.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(node.dir / "data"),
            "default.replication.factor": n,
            "min.insync.replicas": isr,
            "offsets.topic.replication.factor": n,
            "transaction.state.log.replication.factor": n,
            "transaction.state.log.min.isr": isr,
            "share.coordinator.state.topic.replication.factor": n,
            "share.coordinator.state.topic.min.isr": isr,
            # fewer internal partitions than the default 50: the first group / transaction
            # creates them, and 50 x n replicas cost seconds on two cores
            "offsets.topic.num.partitions": "5",
            "transaction.state.log.num.partitions": "5",
            "group.initial.rebalance.delay.ms": "0",
            # as in deploy/: a topic created by a stray metadata request would get one partition,
            # and inputs not co-partitioned are merged wrongly (the workers create every topic)
            "auto.create.topics.enable": "false",
            "num.network.threads": "2",
            "num.io.threads": "2",
        }
        props.update(self.extra)
        return props

    def _write_config(self, node: KafkaNode) -> Path:
        node.dir.mkdir(parents=True, exist_ok=True)
        (node.dir / "log4j2.properties").write_text(LOG4J2.format(path=node.log_path))
        config = node.dir / "server.properties"
        config.write_text("".join(f"{k}={v}\n" for k, v in self.properties(node).items()))
        return config

    def _java(self, node: KafkaNode, heap: str, *args: str) -> list[str]:
        assert self.jars is not None
        log4j = f"-Dlog4j2.configurationFile={node.dir / 'log4j2.properties'}"
        return [java_binary(), f"-Xmx{heap}", *JVM_FLAGS, log4j, "-cp", f"{self.jars}/*", *args]

    def _popen(self, node: KafkaNode, cmd: list[str]) -> subprocess.Popen[bytes]:
        with open(node.log_path, "ab") as out:  # stdout: JVM errors before log4j is up
            return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=node.dir,
                                    start_new_session=True, preexec_fn=_die_with_parent)

    def start(self) -> ApacheKafkaCluster:
        try:
            self.jars = fetch_jars()
            configs = [self._write_config(n) for n in self.nodes]
            # format all nodes at once (one JVM start each, in parallel)
            formats = [
                self._popen(n, self._java(n, "256m", "kafka.tools.StorageTool", "format",
                                          "-t", self.cluster_id, "-c", str(c)))
                for n, c in zip(self.nodes, configs, strict=True)
            ]
            for n, p in zip(self.nodes, formats, strict=True):
                if p.wait(120) != 0:
                    raise RuntimeError(f"formatting node {n.node_id} failed: see {n.log_path}")
            for n in self.nodes:
                self._launch(n)
            asyncio.run(self._wait_ready(time.monotonic() + self.startup_timeout))
        except BaseException:
            self.stop()
            raise
        log.info("Apache Kafka %s up: %s (pids %s)", self.cluster_id, self.url, self.pids)
        return self

    def _launch(self, node: KafkaNode) -> None:
        config = str(node.dir / "server.properties")
        node.proc = self._popen(node, self._java(node, self.heap, "kafka.Kafka", config))

    def kill(self, node_id: int, sig: int = signal.SIGKILL, timeout: float = 60.0) -> None:
        """Send ``sig`` to a node and wait for it to exit (SIGKILL: a crash, SIGTERM: a shutdown)."""
        node = self.node(node_id)
        if node.proc and node.proc.poll() is None:
            node.proc.send_signal(sig)
            try:
                node.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                node.proc.kill()
                node.proc.wait()

    def restart(self, node_id: int) -> None:
        """Start a stopped or killed node again on its data; wait until the cluster lists it."""
        node = self.node(node_id)
        if node.alive:
            self.kill(node_id, signal.SIGTERM)
        self._launch(node)
        asyncio.run(self._wait_ready(time.monotonic() + self.startup_timeout, check_topic=False))

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM every node, wait, SIGKILL what is left; delete data (and logs unless log_dir).
        The wait is short because the data is thrown away: once a majority has stopped, the last
        nodes' controlled shutdown waits for a quorum that is gone (6 s for 3 nodes here, 30 s
        and more with the CPU busy)."""
        running = [n.proc for n in self.nodes if n.proc and n.proc.poll() is None]
        for p in running:
            p.terminate()
        deadline = time.monotonic() + timeout
        for p in running:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> ApacheKafkaCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def _wait_ready(self, deadline: float, check_topic: bool = True) -> None:
        """Ready = every node registered with the controller and, after a fresh start, a topic
        with replication factor n can be created and gets a full ISR."""
        quiet = logging.getLogger("aiokafka")
        level = quiet.level
        quiet.setLevel(logging.CRITICAL)  # refused connections are expected for a while
        last: object = None
        try:
            while time.monotonic() < deadline:
                for n in self.nodes:
                    if n.proc and n.proc.poll() is not None:
                        raise RuntimeError(f"Kafka node {n.node_id} exited with code "
                                           f"{n.proc.returncode}: see {n.log_path}")
                try:
                    last = await self._probe(check_topic)
                    if last is True:
                        return
                except Exception as exc:  # noqa: BLE001 - any failure means "not yet"
                    last = exc
                await asyncio.sleep(0.3)
        finally:
            quiet.setLevel(level)
        raise TimeoutError(f"Apache Kafka at {self.url} not ready in time: {last!r}")

    async def _probe(self, check_topic: bool) -> object:
        # imported here: the module loads without aiokafka
        from aiokafka.admin import AIOKafkaAdminClient, NewTopic

        admin = AIOKafkaAdminClient(bootstrap_servers=self.url, request_timeout_ms=5000)
        try:
            await admin.start()
            cluster = await admin.describe_cluster()
            ids = sorted(b["node_id"] for b in cluster["brokers"])
            if ids != [n.node_id for n in self.nodes]:
                return f"brokers registered: {ids}"
            if not check_topic:
                return True
            topic = "__tracker-ready-check"
            if topic not in await admin.list_topics():
                await admin.create_topics([NewTopic(topic, 1, self.brokers)])
            (info,) = await admin.describe_topics([topic])
            parts = info["partitions"]
            if not parts or len(parts[0]["isr"]) != self.brokers:
                return f"ready-check topic not fully replicated yet: {info}"
            await admin.delete_topics([topic])
            return True
        finally:
            with contextlib.suppress(Exception):
                await admin.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m stream_app.kafka.apache",
                                     description="Apache Kafka (KRaft) on loopback until Ctrl-C")
    parser.add_argument("--brokers", type=int, default=1)
    parser.add_argument("--log-dir", type=Path, default=None, help="keep the broker logs here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    # Ctrl-C and SIGTERM leave through the with-block, which stops the nodes (handled explicitly:
    # a shell's background job inherits SIGINT ignored)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: sys.exit(0))
    try:
        with ApacheKafkaCluster(args.brokers, log_dir=args.log_dir) as cluster:
            print(cluster.url, flush=True)
            while all(n.alive for n in cluster.nodes):
                time.sleep(1)
    except KafkaUnavailable as exc:
        raise SystemExit(str(exc)) from None


if __name__ == "__main__":
    main()
