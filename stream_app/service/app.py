"""The Faust application: two agents, the user-state table and the output topics.

    clicks, browses, purchases --ingest--> <app_id>-events-by-user --track--> user-state table
        (any key, JSON)           |          (key = user id)            |--> recommendations
                                  +--> dead-letters                     |--> churn-warnings
                                                                        +--> dead-letters

``ingest`` (:mod:`stream_app.service.ingest`) validates every message against schemas/ and
repartitions valid events by user id, so each user's state lives in exactly one partition whatever
the producers' keys were. ``track`` (:mod:`stream_app.service.track`) works in micro-batches.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import faust
from faust.types import TableT

from stream_app.core.config import Settings
from stream_app.kafka.admin import create_topics
from stream_app.service import compat, metrics
from stream_app.service.ingest import Ingest
from stream_app.service.sender import RecordSender
from stream_app.service.track import Tracker

TABLE_NAME = "user-state"


def changelog_topic_name(settings: Settings) -> str:
    return f"{settings.app_id}-{TABLE_NAME}-changelog"


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
    else:
        conf["producer_acks"] = -1  # acks=all (+ idempotence below): no loss on a leader failover
    app = faust.App(settings.app_id, **conf)
    if settings.broker_profile == "kafka":
        compat.idempotent_producer(app)
    return app


@dataclass
class TrackerApp:
    app: faust.App
    table: TableT
    tracker: Tracker


def build_app(settings: Settings) -> TrackerApp:
    app = make_faust_app(settings)
    raw: dict[str, Any] = dict(key_type=bytes, value_type=bytes, key_serializer="raw",
                               value_serializer="raw", partitions=settings.partitions)
    inputs = app.topic(*settings.event_topics(), **raw)
    by_user = app.topic(settings.repartition_topic, **raw)
    outputs = [app.topic(name, **raw) for name in settings.output_topics()]
    # bytes keys and values: raw serializers, so the changelog key is the user id's own bytes
    table = app.Table(TABLE_NAME, key_type=bytes, value_type=bytes, partitions=settings.partitions)
    sender = RecordSender(settings)
    by_user_name = by_user.get_topic_name()
    tracker = Tracker(settings, app, table, sender, by_user_name)
    ingest_logic = Ingest(settings, app, sender, by_user_name)

    @app.task
    async def declare_outputs() -> None:
        """Create the output topics at start-up, so consumers can subscribe before any output."""
        for topic in outputs:
            await topic.maybe_declare()

    @app.agent(inputs, name="ingest")
    async def ingest(stream: faust.StreamT) -> None:
        await sender.start()
        # take_events is on faust.Stream, not on the StreamT interface (faust-streaming 0.15.3)
        async for batch in stream.take_events(  # type: ignore[attr-defined]
                settings.batch_max, settings.batch_within_s):
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
            compat.set_fetch_wait(app, fetch_wait_ms)

    @app.agent(by_user, name="track")
    async def track(stream: faust.StreamT) -> None:
        await sender.start()
        # take_events is on faust.Stream, not on the StreamT interface (faust-streaming 0.15.3)
        async for batch in stream.take_events(  # type: ignore[attr-defined]
                settings.batch_max, settings.batch_within_s):
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
