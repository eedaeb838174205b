"""Operations, with real processes: the broker command stops its Tansu child on SIGTERM, start-up
problems are one line, a worker stops cleanly, and after kill -9 a restarted worker or a surviving
one processes again. The restart and hand-over tests assert that it happens and print how long it
took (the README's figures come from these prints; the target is 10 s); those two run on both
engines."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from stream_app.core.config import Settings
from stream_app.kafka.admin import create_topics
from stream_app.kafka.embedded import free_port
from tests.conftest import ROOT, shared_data
from tests.support.expected import taobao_events
from tests.support.operations import hand_over, restart_to_processing
from tests.support.streaming import WorkerProcess, produce, read_topic

pytestmark = pytest.mark.broker

TARGET_S = 10.0


def cli(*args: str, env: dict[str, str] | None = None, **kw: object) -> subprocess.Popen[str]:
    return subprocess.Popen(  # type: ignore[call-overload, no-any-return]
        [sys.executable, "-m", "stream_app", *args], cwd=ROOT, text=True,
        env={**os.environ, **(env or {})}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


def pid_gone(pid: int, timeout_s: float) -> bool:
    """The process ``pid`` has exited (reaped, or at least a zombie) within ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return True
        if state == "Z":
            return True
        time.sleep(0.1)
    return False


# --- the broker command -------------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_broker_command_stops_its_child(signum: int, tmp_path: Path) -> None:
    port = free_port()
    proc = cli("broker", "--broker-url", f"127.0.0.1:{port}", "--data-dir", str(tmp_path))
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # printed once the broker answers and the topics exist
        assert "(pid " in line, line + (proc.stderr.read() if proc.stderr else "")
        child = int(line.split("(pid ", 1)[1].split(")", 1)[0])
        assert not pid_gone(child, 0)
        proc.send_signal(signum)
        # bounds against a hang only (a loaded CI machine once took over 20 s): the verdict is
        # that the command exits cleanly and takes its child with it, not how fast
        assert proc.wait(120) == 0
        assert pid_gone(child, 30), f"Tansu (pid {child}) outlived the broker command"
        with socket.socket() as s:  # and its port is free again
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", port))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# --- start-up errors ------------------------------------------------------------------------


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def one_line_error(proc: subprocess.Popen[str], timeout_s: float) -> str:
    out, err = proc.communicate(timeout=timeout_s)
    lines = [ln for ln in (out + err).splitlines() if ln.strip()]
    assert proc.returncode != 0
    assert len(lines) == 1 and lines[0].startswith("Error: "), out + err
    return lines[0]


@pytest.mark.parametrize("what", ["metrics", "web", "broker"])
def test_port_in_use_is_one_line(what: str, taken_port: int, tmp_path: Path) -> None:
    args = {
        # an unreachable broker: the port is checked first, before any connection
        "metrics": ["worker", "--broker-url", "127.0.0.1:1", "--metrics-port", str(taken_port),
                    "--web-port", "0"],
        "web": ["worker", "--broker-url", "127.0.0.1:1", "--metrics-port", "0",
                "--web-port", str(taken_port)],
        "broker": ["broker", "--broker-url", f"127.0.0.1:{taken_port}"],
    }[what]
    line = one_line_error(cli(*args, "--data-dir", str(tmp_path)), timeout_s=60)
    assert f"127.0.0.1:{taken_port}" in line and "already in use" in line, line
    print(line)


def test_unreachable_broker_is_one_line_within_20_s(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    t0 = time.monotonic()
    line = one_line_error(cli("worker", "--broker-url", f"127.0.0.1:{port}", "--metrics-port", "0",
                              "--web-port", "0", "--data-dir", str(tmp_path)), timeout_s=60)
    took = time.monotonic() - t0
    assert "unreachable" in line and f"127.0.0.1:{port}" in line, line
    print(f"unreachable broker reported after {took:.1f} s: {line}")
    assert took < 30  # broker_connect_timeout_s (15 s) plus start-up, with room for a busy machine


def test_input_topics_not_co_partitioned_are_refused(settings: Settings, tmp_path: Path) -> None:
    """Input topics that existed before the tracker with different partition counts: the worker
    stops with one line naming them, instead of merging partition p of each (a user's events would
    sit in different partition numbers, and the merge would wait for partitions that do not
    exist)."""
    asyncio.run(create_topics(settings, [settings.topic_clicks], partitions=1))
    worker = WorkerProcess(settings, tmp_path / "worker.log").start()
    try:
        assert worker.proc is not None
        worker.proc.wait(90)
    finally:
        worker.stop()
    line = next(ln for ln in worker.log().splitlines() if ln.startswith("Error: "))
    assert "different partition counts" in line, line
    assert f"{settings.topic_clicks} 1" in line and f"{settings.topic_browses} {settings.partitions}" in line
    assert worker.proc.returncode != 0


# --- clean shutdown -------------------------------------------------------------------------


def test_sigterm_under_a_backlog_is_clean(settings: Settings, tmp_path: Path) -> None:
    """A backlog of 20k events (the size that made the old 0.05 s timer overlap), SIGTERM while
    the worker is busy, a second worker finishes: no unclosed producer, no traceback, no error,
    no overlapping timer, and every event applied."""
    events = taobao_events(shared_data("taobao/UserBehavior_head84k.csv"), limit=20_000)
    asyncio.run(produce(settings, events))
    first = WorkerProcess(settings, tmp_path / "first.log").start()
    try:
        asyncio.run(read_topic(settings, settings.topic_recommendations, expect=len(events) // 4,
                               timeout_s=240))
        assert first.proc is not None
        first.proc.send_signal(signal.SIGTERM)
        assert first.proc.wait(60) == 0
    finally:
        first.stop()
    second = WorkerProcess(settings, tmp_path / "second.log").start()
    try:
        applied = asyncio.run(applied_ids(settings, {e.event_id for e in events}))
        assert second.alive and second.proc is not None
        second.proc.send_signal(signal.SIGTERM)
        assert second.proc.wait(60) == 0
    finally:
        second.stop()
    assert applied >= {e.event_id for e in events}
    for worker in (first, second):
        log = worker.log()
        for bad in ("Unclosed", "Traceback", "[ERROR]", "is overlapping"):
            assert bad not in log, f"{bad!r} in {worker.log_path}:\n" + excerpt(log, bad)
        assert "[^Worker]: Closing event loop" in log


async def applied_ids(settings: Settings, want: set[str], timeout_s: float = 300) -> set[str]:
    """Trigger event ids of the recommendations, read until every id in ``want`` is among them
    (a SIGTERM may repeat a few outputs, so counting records is not enough)."""
    deadline = time.monotonic() + timeout_s
    while True:
        recs = await read_topic(settings, settings.topic_recommendations, idle_s=2,
                                timeout_s=timeout_s)
        seen = {str(orjson.loads(r.value)["trigger"]["event_id"]) for r in recs}
        if want <= seen or time.monotonic() > deadline:
            return seen
        await asyncio.sleep(2)


def excerpt(log: str, needle: str, around: int = 1500) -> str:
    i = log.find(needle)
    return log[max(0, i - around): i + around]


# --- restart and hand-over ------------------------------------------------------------------


@pytest.mark.both_engines
def test_restarted_worker_processes_again(settings: Settings, tmp_path: Path) -> None:
    """kill -9, then the same app id again: it takes its partitions back and processes."""
    measured = restart_to_processing(settings, tmp_path, timeout_s=120)
    print(f"restart to processing: first output {measured.first():.1f} s, every partition "
          f"{measured.last():.1f} s after the restart (target {TARGET_S:g} s; session timeout "
          f"{settings.effective_session_timeout_s():g} s) {measured.per_partition}")


@pytest.mark.both_engines
def test_survivor_takes_over_a_killed_workers_partitions(settings: Settings, tmp_path: Path) -> None:
    """Two workers, kill -9 one: the survivor emits for the dead worker's users."""
    measured, dead, stall = hand_over(settings, tmp_path, timeout_s=120)
    print(f"hand-over: the dead worker's partitions {sorted(dead)} answered "
          f"{measured.last(dead):.1f} s after the kill (target {TARGET_S:g} s); the survivor's own "
          f"partitions went {stall:.1f} s without output; session timeout "
          f"{settings.effective_session_timeout_s():g} s {measured.per_partition}")
