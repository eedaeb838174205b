"""aiokafka clients configured from :class:`Settings` (bootstrap servers and security)."""

from __future__ import annotations

from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from stream_app.core.config import Settings
from stream_app.core.events import Event


def producer_durability(settings: Settings) -> dict[str, Any]:
    """On Apache Kafka (``kafka`` profile) a record is acknowledged only once every in-sync replica
    has it (``acks=all``, with ``min.insync.replicas`` on the topics), and retries cannot duplicate
    or reorder it (idempotence): a leader failover loses nothing that was acknowledged. On the
    embedded broker (one node, no replicas) aiokafka's defaults stay."""
    if settings.broker_profile == "kafka":
        return {"acks": "all", "enable_idempotence": True}
    return {}


def make_producer(settings: Settings, **kwargs: Any) -> AIOKafkaProducer:
    kw: dict[str, Any] = {"linger_ms": 5, "max_batch_size": 256 * 1024, **producer_durability(settings)}
    kw.update(kwargs)
    return AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap_servers(), **settings.kafka_client_kwargs(), **kw
    )


def make_consumer(settings: Settings, *topics: str, **kwargs: Any) -> AIOKafkaConsumer:
    kw: dict[str, Any] = {"auto_offset_reset": "earliest", "enable_auto_commit": False}
    kw.update(kwargs)
    return AIOKafkaConsumer(
        *topics, bootstrap_servers=settings.bootstrap_servers(),
        **settings.kafka_client_kwargs(), **kw,
    )


def encode_event(event: Event) -> tuple[bytes, bytes]:
    """(key, value) of an input event as producers should send it: keyed by user id."""
    import orjson

    return event.user_id.encode(), orjson.dumps(event.to_json())
