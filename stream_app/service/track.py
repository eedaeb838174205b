"""The ``track`` agent's logic: apply a micro-batch of repartitioned events to per-user state.

Each user's state is read once per batch, updated per event in event order, and written once per
batch. Outputs (recommendations, churn warnings, dead letters of duplicates and too-late events)
are delivered before the states are written."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Sequence
from typing import Any

import faust
import orjson
from faust.types import TP, EventT, TableT

from stream_app.core.baseline import BaselineRecommender
from stream_app.core.catalog import Catalog
from stream_app.core.churn import ChurnDetector, RiskRule
from stream_app.core.config import Settings
from stream_app.core.events import Event
from stream_app.core.recommender import RecommendationRequest, Recommender, bought_items
from stream_app.core.state import RISK, StatePolicy, UserState, event_id_hash, typical_gap_ms
from stream_app.service import compat, metrics
from stream_app.service.erasure import Erasures, is_erasure
from stream_app.service.profile import LatestRecommendations
from stream_app.service.records import (
    Envelope,
    Source,
    dead_letter,
    decode_repartitioned,
    partition_for_user,
    recommendation_value,
)
from stream_app.service.reload import ModelReloader
from stream_app.service.sender import OutputRecord, Outputs, RecordSender

log = logging.getLogger(__name__)


def make_recommender(settings: Settings, policy: StatePolicy) -> tuple[Recommender, ModelReloader | None]:
    """The attention model when ``model_dir`` is set (ArtifactError, a clear message, if it cannot
    be served), with what reloads it; else the baseline."""
    if settings.model_dir is not None:
        reloader = ModelReloader(settings)
        return reloader.first(), reloader
    catalog = Catalog.from_csv(settings.catalog_path) if settings.catalog_path else None
    return BaselineRecommender(catalog, settings.recommendations_k, policy), None


class Tracker:
    def __init__(self, settings: Settings, app: faust.App, table: TableT, sender: RecordSender,
                 events_topic_name: str):
        self.settings, self.app, self.table, self.sender = settings, app, table, sender
        self.events_topic_name = events_topic_name
        self.policy = StatePolicy(
            settings.window_length, settings.dedupe_memory, settings.late_tolerance_ms,
            settings.interest_half_life_ms, settings.interest_short_half_life_ms,
            round(settings.recommend_min_gap_s * 1000),
        )
        self.recommender, self.reloader = make_recommender(settings, self.policy)
        self.model_info = self._serve(self.recommender)
        self.churn = ChurnDetector(settings.churn_min_silence_ms, settings.churn_gap_multiple,
                                   settings.watermark_quorum)
        self.churn_model_info = {"name": "baseline", "version": "silence-vs-usual-gap"}
        self.risk_rule = RiskRule(self.recommender.risk_threshold)
        self.latest = LatestRecommendations(settings.model_cache_users)  # for the profile API
        self.erasures = Erasures(self)

    def _serve(self, recommender: Recommender) -> dict[str, str]:
        info = {"name": recommender.name, "version": recommender.version}
        metrics.MODEL_INFO.clear()
        metrics.MODEL_INFO.labels(info["name"], info["version"]).set(1)
        metrics.MODEL_ANN_RECALL.set(getattr(recommender, "ranking_recall", 1.0))  # the model's ANN index
        return info

    async def reload_model(self) -> None:
        """Take a newer model version into service, if one was published (service/reload.py). Runs
        on the event loop between batches: the swap below has no await, so a batch never sees two
        models."""
        if self.reloader is None:
            return
        model = await self.reloader.newer()
        if model is not None:
            self.recommender = model
            self.model_info = self._serve(model)
            self.risk_rule = RiskRule(model.risk_threshold)

    # --- state access --------------------------------------------------------------------

    def load(self, user: bytes) -> UserState:
        raw = self.table.get(user)
        return UserState.decode(raw) if raw is not None else UserState()

    def sync_assignment(self) -> None:
        """Rebuild churn timers for newly assigned partitions, forget revoked ones."""
        assigned = {tp.partition for tp in self.app.consumer.assignment()
                    if tp.topic == self.events_topic_name}
        known = self.churn.partitions()
        if assigned == known:
            return
        for p in known - assigned:
            self.churn.forget_partition(p)
        new = assigned - known
        by_partition: dict[int, list[tuple[bytes, UserState]]] = {p: [] for p in new}
        n = self.settings.partitions
        for key, raw in self.table.items():
            p = partition_for_user(key, n)
            if p in by_partition:
                by_partition[p].append((key, UserState.decode(raw)))
        for p, states in by_partition.items():
            self.churn.rebuild_partition(p, states)
        log.info("partitions %s assigned (%d users), %s revoked",
                 sorted(new), sum(len(s) for s in by_partition.values()), sorted(known - assigned))
        metrics.USERS_TRACKED.set(self.churn.users_tracked)

    # --- the batch -----------------------------------------------------------------------

    async def process(self, batch: Sequence[EventT]) -> None:
        self.sync_assignment()
        metrics.BATCH_SIZE.observe(len(batch))
        states: dict[bytes, UserState] = {}
        dirty: dict[bytes, EventT] = {}  # user -> an event of the user's partition (context)
        erased: dict[bytes, EventT] = {}  # user -> their erasure request (service/erasure.py)
        out = Outputs()
        policy = self.policy
        # (slot in out, request, triggering event, its source topic): answered after the loop
        asked: list[tuple[int, RecommendationRequest, Event, str]] = []
        applied: list[tuple[str, str]] = []  # (source topic, type) of each applied event
        # Held until the end: take_events acknowledges the batch even when this raises, and the
        # events may be acknowledged only once their outputs were delivered (sender.py, the rule).
        for ev in batch:
            ev.message.incref()
        for ev in batch:
            msg = ev.message
            if is_erasure(msg):
                erased[self.erasures.apply(msg, states, dirty, out)] = ev
                continue
            decoded = self._decode(msg, out)
            if decoded is None:
                continue
            user, event, envelope = decoded
            state = states.get(user)
            if state is None:
                state = states[user] = self.load(user)
            h = event_id_hash(event.event_id)
            reason = ("duplicate" if state.is_duplicate(h)
                      else "too_late" if state.is_too_late(event.ts, policy) else None)
            if reason is not None:
                self._dead_letter_later(out, reason, event, state, user, msg.value, envelope, msg.tp)
                if reason == "duplicate":
                    # A redelivery after a crash: the local store may hold this state while the
                    # changelog missed it (kill -9 before Faust's producer flushed). Writing it
                    # again puts it in the changelog before the offset is committed.
                    dirty.setdefault(user, ev)
                continue
            state.apply(event, h, policy)
            dirty[user] = ev
            src_topic = envelope.source.topic
            applied.append((src_topic, event.type))
            if state.triggers_recommendation(event.ts, policy):  # rate-limited in event time
                request = RecommendationRequest(
                    user, event.ts, list(state.window), state.events_total, state.first_ts,
                    bought_items(state.window, event),
                    state.top_interests(event.ts, policy), state.top_short_interests(event.ts, policy, 3))
                slot = out.add(OutputRecord(self.settings.topic_recommendations, user, b"",
                                            envelope.received, envelope.source.timestamp,
                                            source=msg.tp))
                asked.append((slot, request, event, src_topic))
            self.churn.track(msg.partition, user, state)
            for due in self.churn.advance(msg.partition):
                due_state = states.get(due)
                if due_state is None:
                    due_state = states[due] = self.load(due)
                if not self.churn.warn(due_state):
                    continue
                dirty[due] = ev
                out.add(OutputRecord(self.settings.topic_churn_warnings, due,
                                     self.churn_warning(due, due_state), source=msg.tp))
        metrics.count(metrics.EVENTS, applied)
        for p in {ev.message.partition for ev in batch}:
            metrics.WATERMARK.labels(p).set(self.churn.watermark.get(p, 0))
        if asked:
            self.fill_recommendations(out, asked, states)
        for user in erased:
            self.erasures.forget(user)
        # At least once: outputs are delivered before the states are written; after a crash
        # between the two the events are applied again and their outputs repeated. The other
        # order could store an event as applied whose outputs were never sent. Exactly once: the
        # changelog records go into the same transactions as the outputs (one per input
        # partition), committed with the offsets or not at all (service/sender.py).
        writes: list[tuple[bytes, bytes | None, EventT]] = [
            (user, states[user].encode(), ctx) for user, ctx in dirty.items()]
        # an erased user's tombstone, even if absent locally (unless an event after the request
        # re-created the user: written above)
        writes += [(user, None, ctx) for user, ctx in erased.items() if user not in dirty]
        async with self.sender.step():
            if self.sender.exactly_once:
                changelog = self.table.changelog_topic.get_topic_name()
                for user, value, ctx in writes:
                    out.add(OutputRecord(changelog, user, value, internal=True,
                                         partition=ctx.message.partition, source=ctx.message.tp))
            await out.send(self.sender, self.app)
            for user, value, ctx in writes:
                self._store(user, value, ctx)
            for ev in batch:
                self.sender.ack(ev)
        metrics.USERS_TRACKED.set(self.churn.users_tracked)

    def _store(self, user: bytes, value: bytes | None, ctx: EventT) -> None:
        """Write (None: delete) a user's state: through the table at least once (Faust sends the
        changelog record); exactly once into the local store only, its changelog record having
        gone out with the step's records."""
        with compat.current_event(ctx):
            target: Any = self.table.data if self.sender.exactly_once else self.table
            if value is not None:
                target[user] = value
            elif self.sender.exactly_once:
                with contextlib.suppress(KeyError):
                    del target[user]
            else:
                del target[user]

    def _decode(self, msg: Any, out: Outputs) -> tuple[bytes, Event, Envelope] | None:
        """(user, event, envelope) of a repartitioned record; None, with a dead letter of reason
        ``internal_error`` in ``out``, if it cannot be decoded. Ingest validated it, so this is a
        bug (or a schema changed under a backlog): one record is set aside, the batch goes on."""
        envelope = None
        try:
            envelope = Envelope.from_headers(msg.headers)
            if msg.key is None or msg.value is None:
                raise ValueError("a repartitioned record without key or value")
            return msg.key, decode_repartitioned(msg.value, envelope), envelope
        except Exception as exc:  # noqa: BLE001 - whatever it is, it must not lose the batch
            source = envelope.source if envelope is not None else Source(
                msg.topic, msg.partition, msg.offset, msg.timestamp, msg.key)
            log.error("track cannot decode %s:%s:%s (%r): dead-lettered as internal_error",
                      msg.topic, msg.partition, msg.offset, exc)
            key, value = dead_letter("internal_error", f"track cannot decode it: {exc!r}"[:500],
                                     source, msg.value,
                                     self.settings.dead_letter_values == "digest")
            out.add(OutputRecord(self.settings.topic_dead_letters, key or msg.key, value,
                                 dead_letter="internal_error", source=TP(msg.topic, msg.partition)))
            return None

    def fill_recommendations(self, out: Outputs, asked: list[tuple[int, RecommendationRequest, Event, str]],
                             states: dict[bytes, UserState]) -> None:
        """Answer the batch's requests in one recommender call; the model's churn risk at each
        user's newest event goes into their state and may open a ``risk`` churn episode."""
        started = time.perf_counter()
        answers = self.recommender.recommend([request for _, request, _, _ in asked])
        metrics.MODEL_SECONDS.observe(time.perf_counter() - started)
        cache_bytes = getattr(self.recommender, "cache_bytes", None)  # the model's KV pool
        if cache_bytes is not None:
            metrics.MODEL_CACHE_BYTES.set(cache_bytes)
        for (slot, request, event, src_topic), answer in zip(asked, answers, strict=True):
            if answer.churn_probability is not None:  # a model answered
                metrics.MODEL_UPDATES.labels("step" if answer.stepped else "full").inc()
            out.records[slot].value = value = recommendation_value(
                event, src_topic, answer, request.interests, self.model_info, request.short_interests)
            self.latest.put(request.user, value)
            # the risk at the user's newest event so far (a late event's answer is not the latest)
            if answer.churn_probability is not None and request.at_ts == request.window[-1][3]:
                state = states[request.user]
                if self.risk_rule.update(state, answer.churn_probability, request.at_ts):
                    out.add(OutputRecord(self.settings.topic_churn_warnings, request.user,
                                         self.churn_warning(request.user, state, request),
                                         source=out.records[slot].source))

    def _dead_letter_later(self, out: Outputs, reason: str, event: Event, state: UserState,
                           key: bytes, value: bytes | None, envelope: Envelope,
                           source: Any = None) -> None:
        detail = (f"event_id {event.event_id!r} was already applied" if reason == "duplicate"
                  else f"ts {event.ts} is {(state.last_ts - event.ts) / 60000:.1f} min older than the "
                       f"user's newest event and older than the {len(state.recent_ts)} events the "
                       f"dedupe memory holds (late tolerance {self.policy.late_tolerance_ms} ms)")
        dl_key, dl_value = dead_letter(reason, detail, envelope.source, value,
                                       self.settings.dead_letter_values == "digest")
        out.add(OutputRecord(self.settings.topic_dead_letters, dl_key or key, dl_value,
                             dead_letter=reason, source=source))

    def churn_warning(self, user: bytes, state: UserState,
                      at: RecommendationRequest | None = None) -> bytes:
        """The warning of the user's open episode: which rule fired, the risk, the lead expected
        (last event - warning: positive = before the last event, negative = after it). A ``risk``
        warning describes the user as of the event it was decided at (``at``: the state may hold
        later events of the same batch)."""
        detected = state.churn_warned_at  # stamped when the warning was decided
        last_ts, events_total, gap = state.last_ts, state.events_total, state.typical_gap_ms()
        if at is not None:
            last_ts, events_total, gap = at.at_ts, at.n_events, typical_gap_ms(at.window)
        if state.churn_rule == RISK:
            threshold = self.risk_rule.threshold
            risk, reason = state.churn_risk, self.risk_rule.reason(state)
            lead = threshold.expected_lead_ms if threshold is not None else None
            model = self.model_info
        else:  # silence: the warning comes its threshold after the last event
            risk, reason = self.churn.risk(state), self.churn.reason(state)
            lead, model = last_ts - detected, self.churn_model_info
        value: dict[str, Any] = {
            "user_id": user.decode(), "rule": state.churn_rule, "risk": round(risk or 0.0, 6),
            "reason": reason, "expected_lead_ms": lead, "last_event_ts": last_ts,
            "silence_ms": detected - last_ts, "typical_gap_ms": gap,
            "detected_ts": detected, "events_total": events_total,
            "model": model, "emitted_at": int(time.time() * 1000),
            # the attention model's churn risk at the user's last event (kept in the user's state)
            "model_churn_probability": (round(state.churn_risk, 6) if state.churn_risk is not None
                                        else None),
        }
        return orjson.dumps(value)
