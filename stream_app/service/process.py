"""Run ``interest-tracker worker`` as a child process (demo, benchmarks, tests)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from stream_app.core.config import Settings


def spawn_worker(settings: Settings, log_path: Path, **env: str) -> subprocess.Popen[bytes]:
    """Start a worker with ``settings`` (as TRACKER_* variables), logging to ``log_path``."""
    full_env = {**os.environ, **settings.to_env(), **settings.secret_env(), **env}
    with open(log_path, "ab") as log:  # the child keeps its own descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "stream_app", "worker"], env=full_env,
            cwd=Path(__file__).resolve().parents[2], stdout=log, stderr=subprocess.STDOUT,
        )


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    """SIGTERM, then SIGKILL if ``proc`` has not exited within ``timeout`` seconds."""
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
