"""The worker's HTTP endpoints, on Faust's web server (``TRACKER_WEB_HOST``:``TRACKER_WEB_PORT``):

- ``GET /live``: the process is up (200 as soon as the web server runs);
- ``GET /ready``: 200 once the worker was assigned partitions and recovered its tables, and is
  not in a rebalance or a recovery; 503 (with the reason) otherwise;
- ``GET /users/{user_id}``: the user's profile (:func:`stream_app.service.profile.profile`), 404
  for a user the tracker does not know (or erased). ``user_id`` is the raw id: with
  TRACKER_PSEUDONYMIZE it is hashed like ingest hashes it.

Any worker answers ``/users/…``: the user's partition is ``partition_for_user`` of the table key
(murmur2, as the repartition topic and the changelog), and the owner of that changelog partition is
looked up in Faust's assignor (``app.router.table_metadata``, from the group's assignment); another
worker's request is forwarded to it once (header ``X-Tracker-Forwarded``). While the assignment is
in flux (no owner known, or the owner disagrees) the answer is 503: retry.
"""

from __future__ import annotations

import logging
from typing import Any

import aiohttp
import faust
import orjson
from faust.web import Request, Response, View
from yarl import URL

from stream_app.core.config import Settings
from stream_app.core.events import MAX_ID_CHARS
from stream_app.core.pseudonym import Pseudonyms
from stream_app.service.profile import profile
from stream_app.service.records import partition_for_user
from stream_app.service.track import Tracker

log = logging.getLogger(__name__)

FORWARDED = "X-Tracker-Forwarded"
SERVED_BY = "X-Tracker-Served-By"
FORWARD_TIMEOUT = aiohttp.ClientTimeout(total=10)


def canonical_url(settings: Settings) -> str:
    """The URL other workers reach this one at (Faust's ``canonical_url``): the bind address, or
    the host name when bound to every interface."""
    import socket

    host = settings.web_host
    if host in ("0.0.0.0", "::", ""):
        host = socket.gethostname()
    return f"http://{host}:{settings.web_port}"


def readiness(app: faust.App) -> tuple[bool, str]:
    """(ready, why): tables recovered after an assignment, no rebalance or recovery under way."""
    recovery = getattr(app.tables, "recovery", None)
    if recovery is None or not recovery.completed.is_set():
        return False, "not assigned and recovered yet"
    if app.rebalancing:
        return False, "rebalancing"
    if app.in_recovery:
        return False, "recovering tables"
    return True, "ready"


def _ident(url: Any) -> tuple[str, int]:
    u = URL(str(url))
    return (u.host or "", u.port or 80)


def _valid_id(user_id: str) -> bool:
    return 0 < len(user_id) <= MAX_ID_CHARS and not any(
        ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in user_id)


def install_web(app: faust.App, tracker: Tracker, settings: Settings, pseudonyms: Pseudonyms) -> None:
    """Register /live, /ready and /users/{user_id} on the app's web server."""
    me = _ident(app.conf.canonical_url)
    changelog = tracker.table.changelog_topic.get_topic_name()

    def as_json(view: View, value: Any, status: int = 200) -> Response:
        return view.bytes(orjson.dumps(value), content_type="application/json", status=status,
                          headers={SERVED_BY: str(app.conf.canonical_url)})

    def owner_of(partition: int) -> str | None:
        for url, topics in app.router.table_metadata(tracker.table.name).items():
            if partition in topics.get(changelog, ()):
                return url
        return None

    @app.page("/live", name="tracker-live")
    async def live(view: View, request: Request) -> Response:
        return as_json(view, {"status": "live"})

    @app.page("/ready", name="tracker-ready")
    async def ready(view: View, request: Request) -> Response:
        ok, why = readiness(app)
        partitions = sorted(tp.partition for tp in app.consumer.assignment()
                            if tp.topic == settings.repartition_topic) if ok else []
        return as_json(view, {"ready": ok, "status": why, "partitions": partitions},
                       200 if ok else 503)

    @app.page("/users/{user_id}", name="tracker-user-profile")
    async def user_profile(view: View, request: Request, user_id: str) -> Response:
        if not _valid_id(user_id):
            return as_json(view, {"error": "a user id is 1-128 characters without control characters"},
                           400)
        ok, why = readiness(app)
        if not ok:
            return as_json(view, {"error": f"not ready: {why}"}, 503)
        user = pseudonyms.user_key(user_id)
        partition = partition_for_user(user, settings.partitions)
        owner = owner_of(partition)
        if owner is None:
            return as_json(view, {"error": f"no worker owns partition {partition} now"}, 503)
        if _ident(owner) == me:
            found = profile(tracker, user, partition)
            if found is None:
                return as_json(view, {"error": "unknown user"}, 404)
            return as_json(view, found)
        if request.headers.get(FORWARDED):  # the sender thinks we own it: assignment in flux
            return as_json(view, {"error": f"partition {partition} is not served here"}, 503)
        target = URL(owner).join(URL(request.raw_path, encoded=True))  # type: ignore[attr-defined]
        try:
            async with app.http_client.get(target, headers={FORWARDED: "1"},
                                           timeout=FORWARD_TIMEOUT) as resp:
                body = await resp.read()
                return view.bytes(body, content_type=resp.content_type, status=resp.status,
                                  headers={SERVED_BY: resp.headers.get(SERVED_BY, owner)})
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("profile request for partition %d: owner %s unreachable (%r)",
                        partition, owner, exc)
            return as_json(view, {"error": f"the owner of partition {partition} is unreachable"},
                           503)
