"""All settings in one typed place: environment variables ``TRACKER_*`` or CLI options.

Every field's default is the embedded development profile (a local broker, no external
services). Point ``TRACKER_BROKER_URL`` at a real cluster and set ``TRACKER_BROKER_PROFILE=kafka``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from stream_app.core.events import EventType


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TRACKER_", extra="ignore")

    # --- Kafka ---------------------------------------------------------------------------
    broker_url: str = Field("127.0.0.1:19092", description="host:port[,host:port] of the brokers")
    broker_profile: Literal["embedded", "kafka"] = Field(
        "embedded",
        description="'embedded' works around the embedded broker's end-offset bug "
        "(table recovery fetches the changelogs' true ends, see README); 'kafka' for Apache Kafka.",
    )
    broker_connect_timeout_s: float = Field(
        15.0, gt=0, description="how long a starting worker waits for the brokers to answer "
        "before it gives up with 'broker unreachable'",
    )
    processing_guarantee: Literal["at_least_once", "exactly_once"] = Field(
        "at_least_once",
        description="'exactly_once' (kafka profile only): every output, repartitioned event and "
        "changelog record is written in the Kafka transaction that commits the offset of the input "
        "partition that caused it (docs/apache-kafka.md, 'Exactly once'); the local state is "
        "rebuilt from the committed changelog at every start. Proven for one worker per group "
        "(several workers: the hand-over fails, see the docs). The embedded broker has no "
        "transactions.",
    )
    app_id: str = Field("interest-tracker", description="Faust app id = consumer group")
    partitions: int = Field(4, ge=1, description="partitions of every topic the tracker creates")
    replication_factor: int = Field(1, ge=1, description="replication of the topics the tracker creates")
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="how clients talk to the brokers")
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = Field(
        "PLAIN", description="SASL mechanism (SASL_* protocols)")
    sasl_username: str | None = Field(None, description="SASL user name")
    sasl_password: str | None = Field(None, description="SASL password (prefer the environment variable)")
    ssl_cafile: Path | None = Field(None, description="CA bundle that signs the brokers' certificates")
    ssl_certfile: Path | None = Field(None, description="client certificate (mutual TLS)")
    ssl_keyfile: Path | None = Field(None, description="client certificate's private key")

    # --- topics --------------------------------------------------------------------------
    topic_clicks: str = Field("clicks", description="input topic of clicks (cart, favourite, click)")
    topic_browses: str = Field("browses", description="input topic of page views")
    topic_purchases: str = Field("purchases", description="input topic of purchases")
    topic_recommendations: str = Field("recommendations", description="output topic of recommendations")
    topic_churn_warnings: str = Field("churn-warnings", description="output topic of churn warnings")
    topic_dead_letters: str = Field("dead-letters", description="output topic of rejected input")
    topic_erasures: str = Field("erasures", description="input topic of erasure requests "
                                "({user_id, request_id}; interest-tracker erase)")
    topic_erasure_confirmations: str = Field(
        "erasure-confirmations", description="output topic: one record per applied erasure request")

    # --- consumer group (restart and hand-over) --------------------------------------------
    session_timeout_s: float | None = Field(
        None, gt=0, le=90, description="the broker drops a worker that sent no heartbeat for this "
        "long, and a killed worker's partitions move (or come back to it restarted) after that; "
        "unset: 4 s on the embedded broker (which also holds every group join for half of it), "
        "6 s on Apache Kafka (its default group.min.session.timeout.ms)",
    )
    heartbeat_interval_s: float = Field(
        1.0, gt=0, description="how often a worker heartbeats (a survivor hears of a rebalance "
        "on its next heartbeat); well below the session timeout",
    )
    rebalance_timeout_s: float = Field(
        10.0, gt=0, description="how long the broker waits for members to rejoin during a rebalance",
    )
    commit_interval_s: float = Field(
        2.8, gt=0, description="how often a worker commits the offsets of what it has applied or "
        "dead-lettered (Faust's broker_commit_interval); after a crash the records since the last "
        "commit are processed again (recognised as duplicates by event id)",
    )
    commit_every: int = Field(
        10_000, gt=0, description="commit sooner once this many records were acknowledged since "
        "the last commit (Faust's broker_commit_every)",
    )
    instance_id: str | None = Field(
        None, description="static group membership (Kafka's group.instance.id), unique per worker: "
        "a worker restarted with the same id takes its partitions back without a rebalance",
    )
    standby_replicas: int = Field(
        1, ge=0, description="standby copies of each state-table partition kept by other workers "
        "(Faust's table_standby_replicas), so a hand-over needs little or no changelog replay",
    )

    # --- state and processing ------------------------------------------------------------
    data_dir: Path = Field(Path("var"), description="RocksDB tables and local files")
    window_length: int = Field(50, ge=1, le=1000, description="events kept per user (L)")
    max_message_bytes: int = Field(64 * 1024, description="larger input values are dead-lettered")
    max_future_ms: int = Field(
        24 * 3600 * 1000, description="events stamped further ahead of the wall clock are rejected"
    )
    late_tolerance_ms: int | None = Field(
        None,
        description="if set, events older than the user's newest event by more are rejected as "
        "too late (unset: only events older than a full dedupe memory are)",
    )
    dedupe_memory: int = Field(512, ge=1, description="recent event ids remembered per user")
    interest_half_life_ms: int = Field(
        7 * 24 * 3600 * 1000, description="event-time half-life of category interest"
    )
    interest_short_half_life_ms: int = Field(
        24 * 3600 * 1000, ge=1, description="event-time half-life of the short-term interest profile"
    )
    churn_min_silence_ms: int = Field(
        2 * 24 * 3600 * 1000, description="shortest event-time silence that can count as churn"
    )
    churn_gap_multiple: float = Field(
        10.0, description="silence must also exceed this multiple of the user's usual gap"
    )
    watermark_quorum: int = Field(
        3, ge=1, description="a partition's event-time watermark is the newest time at least this "
        "many of its users have reached: one user's far-future events cannot trigger churn warnings",
    )
    recommendations_k: int = Field(10, ge=1, le=200, description="items per recommendation")
    recommend_min_gap_s: float = Field(
        30.0, ge=0, description="event time (seconds) between two recommendations of "
        "a user: an applied event triggers one if the user has none yet or its time is at least this "
        "much after the event that triggered the last one; 0: every applied event. The user's state "
        "(window, interests, counts) is still updated by every event",
    )
    batch_max: int = Field(1000, ge=1, description="micro-batch size (events)")
    batch_within_s: float = Field(0.05, gt=0, description="longest wait of a micro-batch (seconds), "
                                  "from its first event")
    batch_quiet_s: float | None = Field(
        None, ge=0, description="a micro-batch closes once no further event came for this long "
        "(seconds). Natural batching: a backlog still fills batches to TRACKER_BATCH_MAX, live input "
        "goes as soon as what was fetched is in. Unset (the default): never early, a batch waits "
        "TRACKER_BATCH_WITHIN_S from its first event; 0.005 cut latency at moderate rates (README)",
    )
    fetch_wait_ms: int = Field(
        100, ge=1, le=60_000, description="longest time a fetch waits at the broker for data "
        "(Faust's default is 1500 ms): the embedded broker holds every fetch that long even when "
        "data arrives, and on either engine the event-time merge and the recovery after a "
        "hand-over wait for fetch answers while inputs are quiet",
    )
    align_max_wait_s: float = Field(
        5.0, ge=0, description="idle bound of the event-time merge: how long an input partition "
        "that looks idle (caught up as of an older fetch) may hold the others; a partition with "
        "unread records holds them until it is read",
    )
    align_stall_s: float = Field(
        60.0, gt=0, description="last resort of the event-time merge: an input partition reported "
        "behind that delivered nothing for this long, while an event waited as long, is passed "
        "(tracker_aligned_events{how=\"stalled\"}, logged)",
    )
    model_dir: Path | None = Field(
        None, description="attention model: an artifact directory, or a directory of versions (one "
        "artifact per subdirectory; the newest servable one is served and newer ones are hot-reloaded)",
    )
    model_poll_s: float = Field(
        10.0, gt=0, description="how often a worker looks for a newer model version (when "
        "TRACKER_MODEL_DIR is a directory of versions)",
    )
    model_cache_users: int = Field(
        10_000, ge=0, description="users whose cached keys/values the worker keeps in memory"
    )
    model_threads: int = Field(
        1, ge=1, le=64, description="ONNX Runtime threads of the model's graph in a worker (the "
        "item ranking uses 1 on CPU): the worker's own threads (the event loop, the Kafka "
        "consumer's) and a local broker need the other cores; raise it on a dedicated many-core host",
    )
    catalog_path: Path | None = Field(
        None, description="item catalog (item, category, popularity) for the baseline"
    )

    # --- privacy -------------------------------------------------------------------------
    pseudonymize: bool = Field(
        False, description="key state and outputs by HMAC-SHA256(user id) (32 hex characters) "
        "instead of the raw id; needs TRACKER_PSEUDONYM_KEY")
    pseudonym_key: SecretStr | None = Field(
        None, description="the HMAC key of pseudonyms (at least 16 characters; set it in the "
        "environment, never on a command line; never logged)")
    dead_letter_values: Literal["keep", "digest"] = Field(
        "keep", description="'keep': dead letters carry the rejected record's first 16 KiB; "
        "'digest': only its size and sha256")

    # --- observability -------------------------------------------------------------------
    metrics_host: str = Field("127.0.0.1", description="bind address of the Prometheus endpoint")
    metrics_port: int = Field(9108, description="Prometheus /metrics; 0 disables")
    web_host: str = Field("127.0.0.1", description="bind address of the web server (profile API, "
                          "/live, /ready)")
    web_port: int = Field(6066, description="web server: profile API, /live, /ready (0: off)")
    log_level: str = Field("info", description="debug, info, warning or error")

    def effective_session_timeout_s(self) -> float:
        if self.session_timeout_s is not None:
            return self.session_timeout_s
        return 4.0 if self.broker_profile == "embedded" else 6.0

    def topics_by_type(self) -> dict[EventType, str]:
        """Event type -> its input topic: the one map between the two."""
        return {"click": self.topic_clicks, "browse": self.topic_browses, "purchase": self.topic_purchases}

    def topic_of(self, event_type: EventType) -> str:
        return self.topics_by_type()[event_type]

    def event_topics(self) -> dict[str, EventType]:
        """Input topic -> event type (the inverse of :meth:`topics_by_type`)."""
        return {topic: etype for etype, topic in self.topics_by_type().items()}

    def output_topics(self) -> list[str]:
        return [self.topic_recommendations, self.topic_churn_warnings, self.topic_dead_letters,
                self.topic_erasure_confirmations]

    def all_topics(self) -> list[str]:
        return [*self.event_topics(), self.topic_erasures, *self.output_topics()]

    @property
    def repartition_topic(self) -> str:
        """Internal: valid events keyed by user id (must match the state changelog's partitions)."""
        return f"{self.app_id}-events-by-user"

    def topics_to_create(self) -> list[str]:
        """Every topic a worker needs before it starts (Faust creates the changelog itself)."""
        return [*self.all_topics(), self.repartition_topic]

    def kafka_client_kwargs(self) -> dict[str, Any]:
        """Security settings as aiokafka keyword arguments."""
        kw: dict[str, Any] = {"security_protocol": self.security_protocol}
        if self.security_protocol.startswith("SASL"):
            kw.update(
                sasl_mechanism=self.sasl_mechanism,
                sasl_plain_username=self.sasl_username,
                sasl_plain_password=self.sasl_password,
            )
        if "SSL" in self.security_protocol:
            import ssl

            ctx = ssl.create_default_context(
                cafile=str(self.ssl_cafile) if self.ssl_cafile else None
            )
            if self.ssl_certfile:
                ctx.load_cert_chain(
                    str(self.ssl_certfile), str(self.ssl_keyfile) if self.ssl_keyfile else None
                )
            kw["ssl_context"] = ctx
        return kw

    def namespaced(self, prefix: str, **update: object) -> Settings:
        """A copy with app id ``prefix`` and every topic named ``<prefix>-<default name>``:
        an isolated tracker on a shared broker (tests, benchmarks, side-by-side runs)."""
        topics = {f: f"{prefix}-{info.default}" for f, info in type(self).model_fields.items()
                  if f.startswith("topic_")}
        return self.model_copy(update={"app_id": prefix, **topics, **update})

    def to_env(self) -> dict[str, str]:
        """These settings as ``TRACKER_*`` environment variables (for a worker process). Secrets
        (``pseudonym_key``) are left out: a child process inherits them from the environment."""
        return {f"TRACKER_{k.upper()}": str(v) for k, v in self.model_dump().items()
                if v is not None and not isinstance(v, SecretStr)}

    def secret_env(self) -> dict[str, str]:
        """The secrets :meth:`to_env` leaves out, for a child process's environment only (never
        print or log this)."""
        return {f"TRACKER_{k.upper()}": getattr(self, k).get_secret_value()
                for k, v in self.model_dump().items() if isinstance(v, SecretStr)}

    def bootstrap_servers(self) -> list[str]:
        return [s.strip().removeprefix("kafka://") for s in self.broker_url.split(",") if s.strip()]
