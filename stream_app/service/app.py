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
import logging
import shutil
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faust
import mode
from aiokafka.errors import KafkaConnectionError
from faust.types import EventT, TableT

from stream_app.core.config import Settings
from stream_app.core.pseudonym import pseudonyms_for
from stream_app.kafka.admin import create_topics, partition_counts
from stream_app.kafka.embedded import PortInUseError, StartupError, check_port_free
from stream_app.service import compat, metrics
from stream_app.service.erasure import install_erase_agent
from stream_app.service.ingest import Ingest
from stream_app.service.sender import RecordSender
from stream_app.service.track import Tracker
from stream_app.service.web import canonical_url, install_web

TABLE_NAME = "user-state"
METRICS_PORT = "the metrics port (--metrics-port)"


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
        broker_session_timeout=settings.effective_session_timeout_s(),
        broker_heartbeat_interval=settings.heartbeat_interval_s,
        broker_rebalance_timeout=settings.rebalance_timeout_s,
        broker_commit_interval=settings.commit_interval_s,
        broker_commit_every=settings.commit_every,
        table_standby_replicas=settings.standby_replicas,
        consumer_group_instance_id=settings.instance_id,
        web_enabled=settings.web_port > 0,
        web_port=settings.web_port or 6066,
        web_bind=settings.web_host,
        canonical_url=canonical_url(settings),  # where other workers forward profile requests
        web_tables_enabled=False,  # Faust's raw /table/ views: /users/{id} is the one way in
    )
    if settings.processing_guarantee == "exactly_once":
        if settings.broker_profile != "kafka":
            # Tansu answers InitProducerIdRequest with UnknownError (docs/apache-kafka.md)
            raise StartupError("TRACKER_PROCESSING_GUARANTEE=exactly_once needs Apache Kafka "
                               "(TRACKER_BROKER_PROFILE=kafka): the embedded broker has no transactions")
        conf["processing_guarantee"] = "exactly_once"
    if settings.broker_profile != "embedded":
        conf["producer_acks"] = -1  # acks=all (+ idempotence below): no loss on a leader failover
    app = faust.App(settings.app_id, **conf)
    # else a restart with state to recover can lose events (each says how)
    compat.seek_before_resuming()
    compat.fetch_what_is_active()
    compat.seek_uncommitted_to_start()
    compat.note_handed_records()  # the event-time merge waits for records already fetched
    compat.deliver_without_tasks()  # Faust's consumer loop: no task per record when none blocks
    # else a hand-over crashes exactly-once recovery, and the embedded broker's understated end
    # offsets make recovery stop short of a batched changelog's end
    compat.fetched_highwaters(app, embedded=settings.broker_profile == "embedded")
    if settings.broker_profile == "kafka":
        compat.idempotent_producer(app)
    return app


FORWARD_INTERVAL_S = 0.05  # pause between two rounds of forwarding held events


class SenderCloser(mode.Service):
    """Stops :class:`RecordSender`'s producer when the app stops (after everything that sends
    through it), delivering what it still holds; without it the worker exits with "Unclosed
    AIOKafkaProducer"."""

    def __init__(self, sender: RecordSender, **kwargs: Any):
        self.sender = sender
        super().__init__(**kwargs)

    async def on_stop(self) -> None:
        await self.sender.stop()


@dataclass
class TrackerApp:
    app: faust.App
    table: TableT
    tracker: Tracker
    ingest: Ingest


def build_app(settings: Settings) -> TrackerApp:
    app = make_faust_app(settings)
    raw: dict[str, Any] = dict(key_type=bytes, value_type=bytes, key_serializer="raw",
                               value_serializer="raw", partitions=settings.partitions)
    inputs = app.topic(*settings.event_topics(), **raw)
    by_user = app.topic(settings.repartition_topic, **raw)
    outputs = [app.topic(name, **raw) for name in settings.output_topics()]
    # bytes keys and values: raw serializers, so the changelog key is the user id's own bytes
    table = app.Table(TABLE_NAME, key_type=bytes, value_type=bytes, partitions=settings.partitions)
    sender = RecordSender(settings, app)
    # added before the app starts: the first child started and the last one stopped, after the
    # agents that send through it and Faust's own producer
    app.add_dependency(SenderCloser(sender, loop=app.loop, beacon=app.beacon))
    by_user_name = by_user.get_topic_name()
    tracker = Tracker(settings, app, table, sender, by_user_name)
    ingest_logic = Ingest(settings, app, sender, by_user_name)

    @app.task
    async def declare_outputs() -> None:
        """Create the output topics at start-up, so consumers can subscribe before any output."""
        for topic in outputs:
            await topic.maybe_declare()

    async def batches(stream: faust.StreamT) -> AsyncIterator[Sequence[EventT]]:
        """Micro-batches of ``stream``, once the output producer runs."""
        await sender.start()
        async for batch in compat.take_batches(stream, settings.batch_max, settings.batch_within_s,
                                               settings.batch_quiet_s):
            yield batch

    @app.agent(inputs, name="ingest")
    async def ingest(stream: faust.StreamT) -> None:
        async for batch in batches(stream):
            await ingest_logic.on_batch(batch)

    @app.task
    async def forward_held_events() -> None:
        """Forward aligned events once their sources caught up (or waited long enough).

        A loop that sleeps *between* rounds, not an ``app.timer``: under a backlog a round waits
        for the batch in progress (the merge's lock) and for the delivery of what it releases,
        often longer than the interval, and a timer then logs "Timer ... is overlapping" for
        every such round."""
        while not app.should_stop:
            await asyncio.sleep(FORWARD_INTERVAL_S)
            if ingest_logic.holding():
                await ingest_logic.forward()

    @app.on_partitions_assigned.connect
    def fetch_wait_on_assignment(sender: Any, /, *args: Any, signal: Any, **_: Any) -> None:
        """Before the first fetch of a new assignment: right after a (re)start the timer below
        would leave Faust's 1.5 s fetch wait on the first fetches."""
        compat.set_fetch_wait(app, settings.fetch_wait_ms)

    @app.timer(1.0)
    async def keep_fetch_wait() -> None:
        """Applied once the consumer runs, and again if it is re-created."""
        compat.set_fetch_wait(app, settings.fetch_wait_ms)

    if tracker.reloader is not None and tracker.reloader.versions is not None:
        @app.task
        async def reload_model() -> None:
            """Hot reload from the directory of versions (service/reload.py); a loop sleeping between
            looks, like forward_held_events, since loading a version may outlast the interval."""
            while not app.should_stop:
                await asyncio.sleep(settings.model_poll_s)
                await tracker.reload_model()

    @app.agent(by_user, name="track")
    async def track(stream: faust.StreamT) -> None:
        async for batch in batches(stream):
            await tracker.process(batch)

    pseudonyms = pseudonyms_for(settings)
    install_erase_agent(app, settings, sender, by_user_name, pseudonyms)  # service/erasure.py
    if settings.web_port > 0:
        install_web(app, tracker, settings, pseudonyms)  # service/web.py
    return TrackerApp(app, table, tracker, ingest_logic)


def run_worker(settings: Settings) -> None:
    """Run one worker until stopped (SIGTERM/SIGINT). Raises :class:`StartupError` (a message for
    the user, no traceback needed) when a port is taken or the brokers do not answer."""
    from faust.sensors.prometheus import FaustMetrics
    from prometheus_client import REGISTRY

    from stream_app.service.sensors import LeanPrometheusMonitor

    if settings.metrics_port:
        check_port_free(settings.metrics_host, settings.metrics_port, METRICS_PORT)
    if settings.web_port:
        check_port_free(settings.web_host, settings.web_port, "Faust's web port (--web-port)")
    # Create every topic with the configured partition count before anything can auto-create one
    # with the broker's default: the repartition topic must match the state changelog.
    asyncio.run(prepare_topics(settings))
    tapp = build_app(settings)
    if settings.processing_guarantee == "exactly_once":
        # The local store holds writes of transactions that a crash aborted (RocksDB is written
        # at once); the committed changelog is the state. Rebuilt from it at every start, as
        # Kafka Streams does after an unclean shutdown under exactly-once.
        shutil.rmtree(Path(tapp.app.conf.tabledir), ignore_errors=True)
    tapp.app.monitor = LeanPrometheusMonitor(
        metrics=FaustMetrics.create(REGISTRY, "faust_" + settings.app_id.replace("-", "_")))
    try:
        metrics.serve(settings.metrics_host, settings.metrics_port)
    except OSError:  # taken since the check above
        raise PortInUseError.at(settings.metrics_host, settings.metrics_port, METRICS_PORT) from None
    worker = faust.Worker(tapp.app, loglevel=settings.log_level.upper(), redirect_stdouts=False)
    # At log levels from WARNING up Faust installs a terminal spinner that turns the root logger to
    # DEBUG, so every debug line of aiokafka and Faust (several per record sent) is built and handled:
    # a few percent of the worker's time, for a spinner nobody sees in a service's log.
    worker.spinner = None
    worker.execute_from_commandline()


async def prepare_topics(settings: Settings) -> None:
    """Create the tracker's topics, waiting up to ``broker_connect_timeout_s`` for the brokers
    to answer (they may be starting too); :class:`StartupError` if they never do."""
    deadline = time.monotonic() + settings.broker_connect_timeout_s
    quiet = logging.getLogger("aiokafka")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)  # one "Unable to bootstrap" per attempt says nothing new
    try:
        while True:
            left = deadline - time.monotonic()
            try:
                await asyncio.wait_for(create_topics(settings, settings.topics_to_create()),
                                       max(left, 0.1))
                break
            except (KafkaConnectionError, TimeoutError, OSError) as exc:
                if time.monotonic() + 0.5 >= deadline:
                    raise StartupError(
                        f"the broker at {settings.broker_url} is unreachable (no answer within "
                        f"{settings.broker_connect_timeout_s:g} s, {type(exc).__name__}); is it "
                        f"running? (--broker-url / TRACKER_BROKER_URL)") from None
                await asyncio.sleep(0.5)
    finally:
        quiet.setLevel(level)
    await check_co_partitioned(settings)


async def check_co_partitioned(settings: Settings) -> None:
    """:class:`StartupError` unless the input topics have one partition count: the event-time merge
    joins partition p of each (topics that existed before the tracker may have been made apart)."""
    counts = await partition_counts(settings, settings.event_topics())
    if len(set(counts.values())) > 1:
        shown = ", ".join(f"{topic} {n}" for topic, n in counts.items())
        raise StartupError(
            f"the input topics have different partition counts ({shown}); the tracker merges "
            "partition p of each in event time, so they must have the same count and be keyed by "
            "user id")
