"""The Faust application: two agents, the user-state table and the output topics.

    clicks, browses, purchases --ingest--> <app_id>-events-by-user --track--> user-state table
        (any key, JSON)           |          (key = user id)            |--> recommendations
                                  +--> dead-letters                     |--> churn-warnings
                                                                        +--> dead-letters

``ingest`` validates every message against schemas/ and repartitions valid events by user id, so
each user's state lives in exactly one partition whatever the producers' keys were. ``track``
works in micro-batches: each user's state is read once, updated per event in order, and written
once per batch. Faust routes a table write to the changelog partition of the *current event*,
which a micro-batch does not have; we set it to one of that user's own events, so every changelog
record sits in its key's source partition and a rebalance restores the user where it belongs.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import time
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import faust
import orjson
from aiokafka.errors import IllegalStateError
from aiokafka.partitioner import murmur2
from faust.streams import _current_event  # see module docstring: micro-batch table writes
from faust.types import TP, EventT

from stream_app import metrics
from stream_app.alignment import EventTimeMerge
from stream_app.baseline import BaselineRecommender
from stream_app.broker import create_topics
from stream_app.catalog import Catalog
from stream_app.churn import ChurnDetector
from stream_app.config import Settings
from stream_app.events import Event, Rejection, parse_event
from stream_app.model_runtime import ModelRuntime
from stream_app.model_serving import ModelAnswer, ModelRecommender, ModelRequest
from stream_app.state import PURCHASE, StatePolicy, UserState, event_id_hash

log = logging.getLogger(__name__)

# Headers that ingest puts on repartitioned events.
H_TYPE, H_SRC, H_KEY, H_RECV, H_KTS = "t", "src", "k", "recv", "kts"
TABLE_NAME = "user-state"


def changelog_topic_name(settings: Settings) -> str:
    return f"{settings.app_id}-{TABLE_NAME}-changelog"


def partition_for_user(user: bytes, partitions: int) -> int:
    """The partition the default (Java-compatible murmur2) partitioner gives a user id key."""
    return (murmur2(user) & 0x7FFFFFFF) % partitions


@contextlib.contextmanager
def event_context(event: EventT) -> Iterator[None]:
    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)


def dead_letter_value(
    reason: str, detail: str, topic: str, partition: int, offset: int,
    timestamp: float | None, key: bytes | None, value: bytes | None,
) -> bytes:
    return orjson.dumps({
        "reason": reason, "detail": detail,
        "source": {
            "topic": topic, "partition": partition, "offset": offset,
            "timestamp": int(timestamp * 1000) if timestamp is not None else None,
            "key_b64": base64.b64encode(key).decode() if key else None,
        },
        "value_b64": base64.b64encode(value or b"").decode(),
        "dead_lettered_at": int(time.time() * 1000),
    })


def _credentials(settings: Settings) -> Any:
    kw = settings.kafka_client_kwargs()
    if settings.security_protocol.startswith("SASL"):
        return faust.SASLCredentials(
            username=settings.sasl_username, password=settings.sasl_password,
            mechanism=settings.sasl_mechanism, ssl_context=kw.get("ssl_context"),
        )
    if settings.security_protocol == "SSL":
        return faust.SSLCredentials(kw["ssl_context"])
    return None


def make_faust_app(settings: Settings) -> faust.App:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    conf: dict[str, Any] = dict(
        broker=[f"kafka://{s}" for s in settings.bootstrap_servers()],
        broker_credentials=_credentials(settings),
        store="rocksdb://",
        datadir=str(settings.data_dir / settings.app_id),
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=10.0,
        broker_heartbeat_interval=2.0,
        broker_rebalance_timeout=10.0,
        web_enabled=settings.web_port > 0,
        web_port=settings.web_port or 6066,
        web_bind="127.0.0.1",
    )
    if settings.broker_profile == "embedded":
        # The embedded broker answers ListOffsets(latest) with the base offset of the last
        # record batch + 1; Faust reads changelogs up to that mark on recovery, so with batched
        # records it would lose updates. One record per batch keeps the end offsets right. Faust's
        # producer then carries only changelog records: the rest goes through RecordSender.
        conf["producer_max_batch_size"] = 1
    return faust.App(settings.app_id, **conf)


def aiokafka_consumer(app: faust.App) -> Any:
    """The aiokafka consumer Faust runs in a thread of its own. Faust exposes a partition's last
    highwater but not when it was fetched (aiokafka's ``last_poll_timestamp`` tells), and fixes
    the fetch wait at 1.5 s."""
    return app.consumer._thread._ensure_consumer()  # type: ignore[attr-defined]  # noqa: SLF001


def set_fetch_wait(app: faust.App, wait_ms: int) -> None:
    """Set how long the consumer's fetches wait at the broker (read for every fetch request).
    The embedded broker holds a fetch for the whole wait even when records arrive meanwhile, so
    Faust's 1.5 s would be added to every hop of a quiet stream."""
    try:
        fetcher = aiokafka_consumer(app)._fetcher  # noqa: SLF001
    except (AssertionError, AttributeError):
        return  # the consumer is not running yet
    if fetcher is not None:
        fetcher._fetch_max_wait_ms = wait_ms  # noqa: SLF001


class RecordSender:
    """A batching producer of our own for repartitioned events and outputs.

    Each agent awaits the delivery of what a micro-batch sent before the batch's events are
    acknowledged, so offsets are never committed ahead of the records they produced."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.producer: Any = None
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        async with self._lock:
            if self.producer is None:
                from stream_app.kafka import make_producer

                producer = make_producer(self.settings, linger_ms=2)
                await producer.start()
                self.producer = producer

    async def send(self, topic: str, key: bytes | None, value: bytes, partition: int | None = None,
                   headers: list[tuple[str, bytes]] | None = None) -> asyncio.Future[Any]:
        return await self.producer.send(topic, value, key=key, partition=partition, headers=headers)


@dataclass
class Outputs:
    """Records a micro-batch emits: (topic, key, value, receipt wall time, Kafka timestamp)."""

    records: list[tuple[str, bytes, bytes, float | None, float | None]]

    def add(self, topic: str, key: bytes, value: Any, recv: float | None = None,
            kafka_ts: float | None = None) -> None:
        self.records.append((topic, key, value, recv, kafka_ts))


class Tracker:
    """The per-batch logic of the ``track`` agent."""

    def __init__(self, settings: Settings, app: faust.App, table: faust.Table, sender: RecordSender,
                 events_topic_name: str):
        self.settings, self.app, self.table, self.sender = settings, app, table, sender
        self.recommendations = settings.topic_recommendations
        self.churn_warnings = settings.topic_churn_warnings
        self.dead_letters = settings.topic_dead_letters
        self.events_topic_name = events_topic_name
        self.policy = StatePolicy(
            settings.window_length, settings.dedupe_memory, settings.late_tolerance_ms,
            settings.interest_half_life_ms,
        )
        catalog = Catalog.from_csv(settings.catalog_path) if settings.catalog_path else None
        self.recommender = BaselineRecommender(catalog, settings.recommendations_k, self.policy)
        self.churn = ChurnDetector(settings.churn_min_silence_ms, settings.churn_gap_multiple)
        self.model_info = {"name": self.recommender.name, "version": self.recommender.version}
        self.model: ModelRecommender | None = None
        if settings.model_dir is not None:  # ArtifactError (a clear message) if it can't be served
            runtime = ModelRuntime(settings.model_dir, window_length=settings.window_length)
            self.model = ModelRecommender(runtime, settings.recommendations_k, settings.model_cache_users)
            self.model_info = {"name": self.model.name, "version": self.model.version}
        self.churn_model_info = {"name": "baseline", "version": "silence-vs-usual-gap"}

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
        out = Outputs([])
        policy = self.policy
        model_requests: list[tuple[int, ModelRequest, Event, str, list[tuple[str, float]]]] = []
        for ev in batch:
            msg = ev.message
            user: bytes = msg.key
            headers = dict(msg.headers or ())
            event = decode_repartitioned(msg.value, headers)
            state = states.get(user)
            if state is None:
                state = states[user] = self.load(user)
            h = event_id_hash(event.event_id)
            reason = ("duplicate" if state.is_duplicate(h)
                      else "too_late" if state.is_too_late(event.ts, policy) else None)
            if reason is not None:
                self._dead_letter_later(out, reason, event, state, msg, headers)
                continue
            state.apply(event, h, policy)
            dirty[user] = ev
            src_topic = headers[H_SRC].decode().rsplit(":", 2)[0]
            metrics.EVENTS.labels(src_topic, event.type).inc()
            recv = float(headers[H_RECV])
            kts = float(headers[H_KTS]) if H_KTS in headers else None
            interests = state.top_interests(event.ts, policy)
            if self.model is None:
                items = self.recommender.recommend(state, event.ts, interests)
                out.add(self.recommendations, user,
                        self.recommendation(event, src_topic, items, interests), recv, kts)
            else:  # answered after the loop, in one model call per round
                model_requests.append((len(out.records), ModelRequest(
                    user, list(state.window), state.events_total, state.first_ts,
                    frozenset(e[0] for e in state.window if e[2] == PURCHASE)), event, src_topic,
                    interests))
                out.add(self.recommendations, user, b"", recv, kts)
            self.churn.track(msg.partition, user, state)
            for due in self.churn.advance(msg.partition, event.ts):
                due_state = states.get(due)
                if due_state is None:
                    due_state = states[due] = self.load(due)
                if due_state.churn_warned_at:
                    continue
                due_state.churn_warned_at = self.churn.deadline(due_state)
                dirty[due] = ev
                out.add(self.churn_warnings, due, self.churn_warning(due, due_state))
        for p in {ev.message.partition for ev in batch}:
            metrics.WATERMARK.labels(p).set(self.churn.watermark.get(p, 0))
        if model_requests:
            self.fill_model_recommendations(out, model_requests)
        # Outputs are delivered before the states are written: after a crash between the two the
        # events are applied again and their outputs repeated (at least once). The other order
        # could store an event as applied whose outputs were never sent.
        await self.send(out)
        for user, ctx in dirty.items():
            with event_context(ctx):
                self.table[user] = states[user].encode()
        metrics.USERS_TRACKED.set(self.churn.users_tracked)

    def fill_model_recommendations(
        self, out: Outputs,
        requests: list[tuple[int, ModelRequest, Event, str, list[tuple[str, float]]]],
    ) -> None:
        assert self.model is not None
        started = time.perf_counter()
        answers = self.model.score([r for _, r, _, _, _ in requests])
        metrics.MODEL_SECONDS.observe(time.perf_counter() - started)
        for (slot, _, event, src_topic, interests), answer in zip(requests, answers, strict=True):
            topic, key, _, recv, kts = out.records[slot]
            value = self.recommendation(
                event, src_topic, [(i, round(s, 6), None) for i, s in answer.items], interests,
                predicted=answer)
            out.records[slot] = (topic, key, value, recv, kts)

    async def send(self, out: Outputs) -> None:
        pending = []
        for topic, key, value, _recv, _kts in out.records:
            pending.append(await self.sender.send(topic, key, value))
            metrics.OUTPUTS.labels(topic).inc()
        await asyncio.gather(*pending)
        now = time.time()
        for _, _, _, recv, kts in out.records:
            if recv is not None:
                metrics.PROCESSING_SECONDS.observe(now - recv)
            if kts is not None:
                metrics.EVENT_TO_OUTPUT_SECONDS.observe(max(0.0, now - kts))

    def _dead_letter_later(self, out: Outputs, reason: str, event: Event, state: UserState,
                           msg: Any, headers: dict[str, bytes]) -> None:
        topic, partition, offset = headers[H_SRC].decode().rsplit(":", 2)
        detail = (f"event_id {event.event_id!r} was already applied" if reason == "duplicate"
                  else f"ts {event.ts} is {(state.last_ts - event.ts) / 60000:.1f} min older than the "
                       f"user's newest event and older than the {len(state.recent_ts)} events the "
                       f"dedupe memory holds (late tolerance {self.policy.late_tolerance_ms} ms)")
        metrics.DEAD_LETTERS.labels(reason).inc()
        out.add(self.dead_letters, headers.get(H_KEY) or msg.key, dead_letter_value(
            reason, detail, topic, int(partition), int(offset),
            float(headers[H_KTS]) if H_KTS in headers else None, headers.get(H_KEY), msg.value))

    # --- output records ------------------------------------------------------------------

    def recommendation(self, event: Event, src_topic: str, items: list[tuple[str, float, str | None]],
                       interests: list[tuple[str, float]], predicted: ModelAnswer | None = None) -> bytes:
        value: dict[str, Any] = {
            "user_id": event.user_id, "ts": event.ts,
            "items": [{"item_id": i, "score": s, "category_id": c} for i, s, c in items],
            "interests": [{"category_id": c, "strength": round(s, 6)} for c, s in interests],
            "model": self.model_info,
            "trigger": {"event_id": event.event_id, "topic": src_topic, "ts": event.ts},
            "emitted_at": int(time.time() * 1000),
        }
        if predicted is not None:
            value["predicted_categories"] = [
                {"category_id": c, "probability": round(p, 6)} for c, p in predicted.categories]
            value["churn_probability"] = round(predicted.churn, 6)
        return orjson.dumps(value)

    def churn_warning(self, user: bytes, state: UserState) -> bytes:
        detected = state.churn_warned_at  # the deadline, stamped when the warning was decided
        return orjson.dumps({
            "user_id": user.decode(), "risk": self.churn.risk(state),
            "reason": self.churn.reason(state), "last_event_ts": state.last_ts,
            "silence_ms": detected - state.last_ts, "typical_gap_ms": state.typical_gap_ms(),
            "detected_ts": detected, "events_total": state.events_total,
            "model": self.churn_model_info, "emitted_at": int(time.time() * 1000),
            # the attention model's churn head at the user's last event, when it has seen the user
            "model_churn_probability": (
                round(self.model.last_churn[user], 6)
                if self.model is not None and user in self.model.last_churn else None),
        })


def decode_repartitioned(value: bytes, headers: dict[str, bytes]) -> Event:
    """An event that ingest already validated: the original JSON plus its type header."""
    o = orjson.loads(value)
    return Event(o["event_id"], o["user_id"], o["item_id"], o.get("category_id"), o["ts"],
                 headers[H_TYPE].decode(), o.get("price"), o.get("quantity"))  # type: ignore[arg-type]


class Ingest:
    """The ``ingest`` agent's logic: validate, dead-letter, align in event time, repartition."""

    def __init__(self, settings: Settings, app: faust.App, sender: RecordSender, by_user: str):
        self.settings, self.app, self.sender, self.by_user = settings, app, sender, by_user
        self.type_by_topic = settings.event_topics()
        rank = {t: i for i, t in enumerate(self.type_by_topic)}
        self.last_offset: dict[tuple[str, int], int] = {}
        self.merge: EventTimeMerge[tuple[EventT, Event, float]] = EventTimeMerge(
            rank, self.caught_up_at, settings.align_max_wait_s, clock=time.time,
            on_release=lambda how: metrics.ALIGNED_EVENTS.labels(how).inc())
        self.lock = asyncio.Lock()

    def caught_up_at(self, topic: str, partition: int) -> float | None:
        """When (wall-clock seconds) the consumer received the newest fetch response covering this
        input partition, if it shows nothing left to read; None otherwise (see alignment.py)."""
        tp = TP(topic, partition)
        try:
            # The fetcher writes a partition's highwater, then its fetch time: read them in the
            # other order, so a fresh time never comes with an older highwater.
            fetched_ms = aiokafka_consumer(self.app).last_poll_timestamp(tp)
            hw = self.app.consumer.highwater(tp)
        except (AssertionError, AttributeError, KeyError, IllegalStateError):
            return None  # not assigned (yet), or the consumer is not running
        if fetched_ms is None or hw is None or hw < 0:
            return None
        seen = self.last_offset.get((topic, partition))
        if seen is None:
            # Nothing read from it by this process: caught up if nothing lies past where reading
            # starts, the group's committed offset (Faust keeps it as the next offset to read).
            # Without it a quiet partition would hold the merge for max_wait after every restart.
            start = self.app.consumer._committed_offset.get(tp)  # type: ignore[attr-defined]  # noqa: SLF001
            caught = hw <= (start or 0)
        else:
            caught = seen + 1 >= hw
        return fetched_ms / 1000 if caught else None

    async def on_batch(self, batch: Sequence[EventT]) -> None:
        now = time.time()
        pending = []
        for ev in batch:
            msg = ev.message
            metrics.INPUT_MESSAGES.labels(msg.topic).inc()
            self.last_offset[(msg.topic, msg.partition)] = msg.offset
            result = parse_event(
                msg.value, self.type_by_topic[msg.topic], max_bytes=self.settings.max_message_bytes,
                now_ms=int(now * 1000), max_future_ms=self.settings.max_future_ms,
            )
            if isinstance(result, Rejection):
                metrics.DEAD_LETTERS.labels(result.reason).inc()
                pending.append(await self.sender.send(
                    self.settings.topic_dead_letters, msg.key, dead_letter_value(
                        result.reason, result.detail, msg.topic, msg.partition, msg.offset,
                        msg.timestamp, msg.key, msg.value)))
                metrics.OUTPUTS.labels(self.settings.topic_dead_letters).inc()
                continue
            msg.incref()  # held by the merge: acknowledged only once forwarded
            self.merge.add(msg.topic, msg.partition, result.ts, msg.offset, (ev, result, now),
                           arrived=now)
        await asyncio.gather(*pending)
        await self.forward()

    async def forward(self) -> None:
        async with self.lock:
            assigned = {(tp.topic, tp.partition) for tp in self.app.consumer.assignment()}
            self.merge.drop_partitions(assigned)  # revoked: the new owner re-reads them
            ready = self.merge.ready()
            pending = []
            n = self.settings.partitions
            for ev, event, recv in ready:
                msg = ev.message
                user = event.user_id.encode()
                pending.append(await self.sender.send(
                    self.by_user, user, msg.value, partition_for_user(user, n), headers=[
                        (H_TYPE, event.type.encode()),
                        (H_SRC, f"{msg.topic}:{msg.partition}:{msg.offset}".encode()),
                        (H_KEY, msg.key or b""),
                        (H_RECV, repr(recv).encode()),
                        (H_KTS, repr(msg.timestamp).encode()),
                    ]))
            await asyncio.gather(*pending)  # delivered before the events are acknowledged
            for ev, _, _ in ready:
                ev.ack()


@dataclass
class TrackerApp:
    app: faust.App
    table: faust.Table
    tracker: Tracker


def build_app(settings: Settings) -> TrackerApp:
    app = make_faust_app(settings)
    raw: dict[str, Any] = dict(key_type=bytes, value_type=bytes, key_serializer="raw",
                               value_serializer="raw", partitions=settings.partitions)
    type_by_topic = settings.event_topics()
    inputs = app.topic(*type_by_topic, **raw)
    by_user = app.topic(settings.repartition_topic, **raw)
    recommendations = app.topic(settings.topic_recommendations, **raw)
    churn_warnings = app.topic(settings.topic_churn_warnings, **raw)
    dead_letters = app.topic(settings.topic_dead_letters, **raw)
    # bytes keys and values: raw serializers, so the changelog key is the user id's own bytes
    table = app.Table(TABLE_NAME, key_type=bytes, value_type=bytes, partitions=settings.partitions)
    sender = RecordSender(settings)
    by_user_name = by_user.get_topic_name()
    tracker = Tracker(settings, app, table, sender, by_user_name)

    @app.task
    async def declare_outputs() -> None:
        """Create the output topics at start-up, so consumers can subscribe before any output."""
        for topic in (recommendations, churn_warnings, dead_letters):
            await topic.maybe_declare()

    ingest_logic = Ingest(settings, app, sender, by_user_name)

    @app.agent(inputs, name="ingest")
    async def ingest(stream: faust.StreamT) -> None:
        await sender.start()
        async for batch in stream.take_events(settings.batch_max, settings.batch_within_s):
            await ingest_logic.on_batch(batch)

    @app.timer(0.05)
    async def forward_held_events() -> None:
        """Forward aligned events once their sources caught up (or waited long enough)."""
        if len(ingest_logic.merge):
            await ingest_logic.forward()

    fetch_wait_ms = settings.effective_fetch_wait_ms()
    if fetch_wait_ms is not None:
        @app.timer(1.0)
        async def keep_fetch_wait() -> None:
            """Applied once the consumer runs, and again if it is re-created."""
            set_fetch_wait(app, fetch_wait_ms)

    @app.agent(by_user, name="track")
    async def track(stream: faust.StreamT) -> None:
        await sender.start()
        async for batch in stream.take_events(settings.batch_max, settings.batch_within_s):
            await tracker.process(batch)

    return TrackerApp(app, table, tracker)


def run_worker(settings: Settings) -> None:
    """Run one worker until stopped (SIGTERM/SIGINT)."""
    from faust.sensors.prometheus import FaustMetrics, PrometheusMonitor
    from prometheus_client import REGISTRY

    # Create every topic with the configured partition count before anything can auto-create one
    # with the broker's default: the repartition topic must match the state changelog.
    asyncio.run(create_topics(settings, settings.topics_to_create()))
    tapp = build_app(settings)
    tapp.app.monitor = PrometheusMonitor(
        metrics=FaustMetrics.create(REGISTRY, "faust_" + settings.app_id.replace("-", "_")))
    metrics.serve(settings.metrics_host, settings.metrics_port)
    worker = faust.Worker(tapp.app, loglevel=settings.log_level.upper(), redirect_stdouts=False)
    worker.execute_from_commandline()
