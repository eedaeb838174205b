"""Test helpers for the worker's HTTP endpoints (profile API, /live, /ready)."""

from __future__ import annotations

import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import orjson


def get(port: int, path: str, timeout: float = 10) -> tuple[int, Any, dict[str, str]]:
    """(status, decoded JSON body or None, headers) of GET http://127.0.0.1:port/path."""
    url = f"http://127.0.0.1:{port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - loopback
            return resp.status, orjson.loads(resp.read()), dict(resp.headers)
    except urllib.error.HTTPError as exc:
        body = exc.read()
        return exc.code, orjson.loads(body) if body else None, dict(exc.headers)


def user_path(user_id: str) -> str:
    return "/users/" + urllib.parse.quote(user_id, safe="")


def wait_live(port: int, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if get(port, "/live", timeout=2)[0] == 200:
                return
        except OSError:
            pass
        assert time.monotonic() < deadline, f"no /live on port {port}"
        time.sleep(0.1)


def wait_ready(ports: list[int], timeout: float = 120, settle_s: float = 0) -> list[int]:
    """Until every port's /ready is 200 (for ``settle_s`` in a row, if given); the statuses seen."""
    deadline = time.monotonic() + timeout
    seen: list[int] = []
    ok_since: float | None = None
    while True:
        statuses = []
        for port in ports:
            try:
                statuses.append(get(port, "/ready", timeout=5)[0])
            except OSError:
                statuses.append(0)
        seen += statuses
        if all(s == 200 for s in statuses):
            ok_since = ok_since or time.monotonic()
            if time.monotonic() - ok_since >= settle_s:
                return seen
        else:
            ok_since = None
        assert time.monotonic() < deadline, f"/ready statuses {statuses} after {timeout} s"
        time.sleep(0.2)
