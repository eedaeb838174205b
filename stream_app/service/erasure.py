"""Erasure: forget a user on request, through the user's own partition.

    erasures --erase agent--> <app_id>-events-by-user --track--> del table[user] (changelog tombstone)
    ({user_id, request_id})   (key = user id, header       |    caches, churn timers, latest recommendation
                               t=erase)                     +--> erasure-confirmations

The ``erase`` agent validates a request (schemas/erasures.schema.json; anything else is a dead
letter), pseudonymizes the id like ingest does (TRACKER_PSEUDONYMIZE) and repartitions it by user
id onto the events topic. It is therefore ordered with the user's events that ingest forwarded
before it, and applied by the worker that owns the user's state, in the ``track`` batch loop:

- the user's state is dropped and ``del table[user]`` writes a tombstone to the changelog (always,
  even when the local store has no value: a redelivered request after a crash writes it again);
- the recommender's per-user caches, the churn detector's timers and the latest recommendation
  kept for the profile API are dropped; no churn warning of the erased state can follow;
- a confirmation goes to ``erasure-confirmations`` (key = the user id as the state was keyed);
- an event of the user after the request starts a fresh state.

Like every output, the confirmation is delivered before the table is written (the delivery rule in
:mod:`stream_app.service.sender`); a crash in between re-reads the request, which is idempotent.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import fastjsonschema
import faust
import orjson
from faust.types import EventT

from stream_app.core.config import Settings
from stream_app.core.events import Rejection
from stream_app.core.pseudonym import Pseudonyms
from stream_app.core.schemas import validator
from stream_app.core.state import UserState
from stream_app.service import compat
from stream_app.service.records import H_KEY, H_KTS, H_RECV, H_SRC, H_TYPE, dead_letter, partition_for_user
from stream_app.service.sender import OutputRecord, Outputs, RecordSender

if TYPE_CHECKING:
    from stream_app.service.track import Tracker

log = logging.getLogger(__name__)

ERASE = b"erase"  # the type header of an erasure request on <app_id>-events-by-user
SCHEMA = "erasures"


def parse_request(value: bytes | None) -> tuple[str, str] | Rejection:
    """(user id, request id) of an erasure request, or why it is not one."""
    if not value:
        return Rejection("malformed_json", "empty message (null value)")
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        return Rejection("malformed_json", f"invalid JSON: {exc}"[:500])
    try:
        validator(SCHEMA)(obj)
    except fastjsonschema.JsonSchemaException as exc:
        return Rejection("schema_violation", f"{SCHEMA}: {exc}"[:500])
    return obj["user_id"], obj["request_id"]


def is_erasure(msg: Any) -> bool:
    """Whether a record of the events topic is an erasure request (not an event)."""
    return any(k == H_TYPE and v == ERASE for k, v in msg.headers or ())


def _request_ts_ms(headers: Any) -> int | None:
    """The request record's Kafka timestamp (ms), carried in the envelope header."""
    kts = dict(headers or ()).get(H_KTS)
    return int(float(kts) * 1000) if kts and kts != b"None" else None


class ErasureIntake:
    """The ``erase`` agent's logic: validate, pseudonymize, repartition by user id."""

    def __init__(self, settings: Settings, app: faust.App, sender: RecordSender, by_user: str,
                 pseudonyms: Pseudonyms):
        self.settings, self.app, self.sender, self.by_user = settings, app, sender, by_user
        self.pseudonyms = pseudonyms
        self.digest_only = settings.dead_letter_values == "digest"

    async def on_batch(self, batch: Sequence[EventT]) -> None:
        from stream_app.service.ingest import source_of

        for ev in batch:  # acknowledged only once what they produced was delivered
            ev.message.incref()
        out = Outputs()
        now = time.time()
        n = self.settings.partitions
        for ev in batch:
            msg = ev.message
            parsed = parse_request(msg.value)
            if isinstance(parsed, Rejection):
                key, value = dead_letter(parsed.reason, parsed.detail, source_of(ev), msg.value,
                                         self.digest_only)
                out.add(OutputRecord(self.settings.topic_dead_letters, key, value,
                                     dead_letter=parsed.reason, source=msg.tp))
                continue
            raw_id, request_id = parsed
            user_id = self.pseudonyms.user_id(raw_id)
            user = user_id.encode()
            headers = [(H_TYPE, ERASE), (H_SRC, f"{msg.topic}:{msg.partition}:{msg.offset}".encode()),
                       (H_KEY, b""), (H_RECV, repr(now).encode()), (H_KTS, repr(msg.timestamp).encode())]
            value = orjson.dumps({"user_id": user_id, "request_id": request_id})
            out.add(OutputRecord(self.by_user, user, value, internal=True,
                                 partition=partition_for_user(user, n), headers=headers,
                                 source=msg.tp))
        async with self.sender.step():
            await out.send(self.sender, self.app)
            for ev in batch:
                self.sender.ack(ev)


class Erasures:
    """The ``track`` side: apply a request within a batch, then forget the user everywhere."""

    def __init__(self, tracker: Tracker):
        self.tracker = tracker

    def apply(self, msg: Any, states: dict[bytes, UserState], dirty: dict[bytes, Any],
              out: Outputs) -> bytes:
        """Erase the request's user from the batch's view; return the user key. The caller
        deletes the table entry at the end of the batch unless a later event re-created it."""
        t = self.tracker
        user: bytes = msg.key
        request = orjson.loads(msg.value)
        prior = states.get(user)
        had_state = (prior if prior is not None else t.load(user)).events_total > 0
        states[user] = UserState()  # an event after the request starts afresh
        dirty.pop(user, None)
        t.churn.forget_user(msg.partition, user)
        self.forget(user)
        value = {"user_id": request["user_id"], "request_id": request["request_id"],
                 "had_state": had_state, "partition": msg.partition,
                 "requested_at": _request_ts_ms(msg.headers),
                 "erased_at": int(time.time() * 1000)}
        out.add(OutputRecord(t.settings.topic_erasure_confirmations, user, orjson.dumps(value),
                             source=msg.tp))
        log.info("erasure request %s applied on partition %d", request["request_id"], msg.partition)
        return user

    def forget(self, user: bytes) -> None:
        """Drop every in-memory trace of the user (called again once the batch's recommendations
        were computed, which may have cached the user anew)."""
        t = self.tracker
        t.recommender.forget(user)
        t.latest.forget(user)


def install_erase_agent(app: faust.App, settings: Settings, sender: RecordSender, by_user: str,
                        pseudonyms: Pseudonyms) -> None:
    """Register the ``erase`` agent on the erasures topic."""
    topic = app.topic(settings.topic_erasures, key_type=bytes, value_type=bytes, key_serializer="raw",
                      value_serializer="raw")
    intake = ErasureIntake(settings, app, sender, by_user, pseudonyms)

    @app.agent(topic, name="erase")
    async def erase(stream: faust.StreamT) -> None:
        await sender.start()
        async for batch in compat.take_batches(stream, settings.batch_max, settings.batch_within_s,
                                               settings.batch_quiet_s):
            await intake.on_batch(batch)
