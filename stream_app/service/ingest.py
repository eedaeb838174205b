"""The ``ingest`` agent's logic: validate, dead-letter, align in event time, repartition by user.

Kafka orders records only within a partition and the three input topics are separate, so partition
p of clicks, browses and purchases is merged in event time (:mod:`stream_app.core.alignment`)
before the events are repartitioned by user id onto ``<app_id>-events-by-user``."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Sequence
from typing import Any

import faust
from aiokafka.errors import IllegalStateError
from faust.types import TP, EventT

from stream_app.core.alignment import ARRIVING, BEHIND, EventTimeMerge, SourceView
from stream_app.core.config import Settings
from stream_app.core.events import Event, Rejection, parse_event
from stream_app.core.pseudonym import pseudonyms_for
from stream_app.service import compat, metrics
from stream_app.service.records import Envelope, Source, dead_letter, partition_for_user
from stream_app.service.sender import OutputRecord, Outputs, RecordSender

log = logging.getLogger(__name__)

def source_of(ev: EventT) -> Source:
    msg = ev.message
    return Source(msg.topic, msg.partition, msg.offset, msg.timestamp, msg.key)


class Ingest:
    def __init__(self, settings: Settings, app: faust.App, sender: RecordSender, by_user: str):
        self.settings, self.app, self.sender, self.by_user = settings, app, sender, by_user
        self.type_by_topic = settings.event_topics()
        rank = {t: i for i, t in enumerate(self.type_by_topic)}
        self.last_offset: dict[tuple[str, int], int] = {}
        self.merge: EventTimeMerge[tuple[EventT, Event, float]] = EventTimeMerge(
            rank, self.source_view, settings.align_max_wait_s, clock=time.time,
            on_release=self._released, stall_s=settings.align_stall_s)
        self.lock = asyncio.Lock()
        self.digest_only = settings.dead_letter_values == "digest"
        self.pseudonyms = pseudonyms_for(settings)
        # exactly once: dead letters of rejected records wait here (offset, event, letter) until
        # every lower offset of their partition was forwarded, so that a partition's transaction
        # never holds records of offsets above the one it commits (service/sender.py)
        self._stall_logged = 0.0
        self.pending_dead: dict[tuple[str, int], list[tuple[int, EventT, OutputRecord]]] = {}

    def holding(self) -> bool:
        """Whether events or dead letters wait for a later :meth:`forward`."""
        return bool(len(self.merge) or self.pending_dead)

    def let_go(self) -> None:
        """A rebalance began: let go of every held event and dead letter (see
        :func:`compat.forget_unacked`; Faust would otherwise wait for them for ever, its partitions
        paused). They are read again from the committed offsets once partitions are assigned; so is
        what this process has read since, hence the offsets seen are forgotten too. Called by
        :meth:`forward` while ``app.rebalancing``: the forwarding loop runs every 50 ms and Faust
        looks again every second, and a batch already taken from a stream can still arrive."""
        held = [ev for ev, _, _ in self.merge.clear()]
        held += [ev for letters in self.pending_dead.values() for _, ev, _ in letters]
        self.pending_dead.clear()
        self.last_offset.clear()
        compat.forget_unacked(self.app, held)
        if held:
            log.info("rebalance: %d held input records let go (read again after the assignment)",
                     len(held))

    def _released(self, how: str) -> None:
        metrics.ALIGNED_EVENTS.labels(how).inc()
        if how == "stalled" and time.monotonic() - self._stall_logged >= 10:
            self._stall_logged = time.monotonic()
            log.warning("event-time merge: input partitions %s reported behind delivered nothing for "
                        "TRACKER_ALIGN_STALL_S; passing them (order may vary): %s",
                        self.merge.stalled_by, [self._describe(*tp) for tp in self.merge.stalled_by])

    def _describe(self, topic: str, partition: int) -> dict[str, Any]:
        """What the consumer knows of an input partition, for the stall's log line."""
        tp = TP(topic, partition)
        try:
            active, buffered = compat.fetch_state(self.app, tp)
            return {"highwater": self.app.consumer.highwater(tp), "last_seen": self.last_offset.get(tp),
                    "committed": compat.committed_offset(self.app, tp),
                    "fetch_position": compat.fetch_position(self.app, tp),
                    "in_process": compat.records_in_process(self.app, tp, self._next_offset(tp)),
                    "active": active, "buffered": buffered}
        except Exception as exc:  # diagnostics only: never let them take the worker down
            return {"error": repr(exc)}

    def source_view(self, topic: str, partition: int) -> SourceView:
        """What the consumer knows of an input partition with nothing buffered (see alignment.py)."""
        tp = TP(topic, partition)
        try:
            # The fetcher writes a partition's highwater, then its fetch time: read them in the
            # other order, so a fresh time never comes with an older highwater.
            fetched_ms = compat.last_fetch_ms(self.app, tp)
            hw = self.app.consumer.highwater(tp)
        except (AssertionError, AttributeError, KeyError, IllegalStateError):
            return BEHIND  # not assigned (yet), or the consumer is not running: nothing known
        if fetched_ms is None or hw is None or hw < 0:
            return BEHIND
        next_offset = self._next_offset(tp)
        if hw <= next_offset:
            return SourceView(fetched_ms / 1000, False)
        if compat.records_in_process(self.app, tp, next_offset):
            return ARRIVING
        if tp not in self.last_offset and (compat.fetch_position(self.app, tp) or 0) >= hw:
            # The fetcher moved past the committed offset and no record is on its way to us:
            # retention removed them. Idle, not caught up.
            return SourceView(None, False)
        return BEHIND

    def _next_offset(self, tp: TP) -> int:
        """The next offset of ``tp`` this process expects: after the last one seen, else the
        group's committed offset (where reading starts)."""
        seen = self.last_offset.get(tp)
        return seen + 1 if seen is not None else compat.committed_offset(self.app, tp) or 0

    async def on_batch(self, batch: Sequence[EventT]) -> None:
        # Every event is held first and acknowledged only once what it produced was delivered:
        # take_events acknowledges the batch even when this raises (see sender.py, the rule).
        for ev in batch:
            ev.message.incref()
        now = time.time()
        out, rejected = Outputs(), []
        metrics.count(metrics.INPUT_MESSAGES, ((ev.message.topic,) for ev in batch))
        for ev in batch:
            msg = ev.message
            self.last_offset[(msg.topic, msg.partition)] = msg.offset
            result = parse_event(
                msg.value, self.type_by_topic[msg.topic], max_bytes=self.settings.max_message_bytes,
                now_ms=int(now * 1000), max_future_ms=self.settings.max_future_ms, key=msg.key,
            )
            if isinstance(result, Rejection):
                key, value = dead_letter(result.reason, result.detail, source_of(ev), msg.value,
                                         self.digest_only)
                letter = OutputRecord(self.settings.topic_dead_letters, key, value,
                                      dead_letter=result.reason, source=msg.tp)
                if self.sender.exactly_once:
                    self.pending_dead.setdefault((msg.topic, msg.partition), []).append(
                        (msg.offset, ev, letter))
                else:
                    out.add(letter)
                    rejected.append(ev)
                continue
            # held by the merge: acknowledged once forwarded
            self.merge.add(msg.topic, msg.partition, result.ts, msg.offset, (ev, result, now),
                           arrived=now)
        await out.send(self.sender, self.app)
        for ev in rejected:
            ev.ack()
        await self.forward()

    async def forward(self) -> None:
        if self.app.rebalancing:  # until the assignment is done and the streams seek back
            self.let_go()
            return
        async with self.lock, self.sender.step():
            assigned = {(tp.topic, tp.partition) for tp in self.app.consumer.assignment()}
            self.merge.drop_partitions(assigned)  # revoked: the new owner re-reads them
            for tp in [tp for tp in self.pending_dead if tp not in assigned]:
                del self.pending_dead[tp]
            ready = self.merge.ready()
            out = Outputs()
            letters = self._letters_due()
            for _, record in letters:
                out.add(record)
            n = self.settings.partitions
            for ev, event, recv in ready:
                assert ev.message.value is not None  # parse_event rejects a null value
                # pseudonymized (TRACKER_PSEUDONYMIZE) before anything is written by user
                user_id = self.pseudonyms.user_id(event.user_id)
                user = user_id.encode()
                source = source_of(ev)
                if self.pseudonyms.enabled:  # the producer's key may be the raw user id
                    source = dataclasses.replace(source, key=None)
                envelope = Envelope(event.type, source, recv)
                value = self.pseudonyms.rewrite_event(ev.message.value, user_id)
                out.add(OutputRecord(self.by_user, user, value, internal=True,
                                     partition=partition_for_user(user, n),
                                     headers=envelope.headers(), source=ev.message.tp))
            await out.send(self.sender, self.app)
            for ev, _, _ in ready:
                self.sender.ack(ev)
            for ev, _ in letters:
                self.sender.ack(ev)

    def _letters_due(self) -> list[tuple[EventT, OutputRecord]]:
        """Exactly once: the held dead letters below the lowest offset the merge still holds of
        their partition (called after ``merge.ready()``, whose events go out in the same step)."""
        due: list[tuple[EventT, OutputRecord]] = []
        for tp, held in list(self.pending_dead.items()):
            floor = self.merge.first_offset(*tp)
            keep = [h for h in held if floor is not None and h[0] > floor]
            due.extend((ev, record) for offset, ev, record in held
                       if floor is None or offset < floor)
            if keep:
                self.pending_dead[tp] = keep
            else:
                del self.pending_dead[tp]
        return due
