"""The two engines as the test suite runs them (tests/conftest.py; the benchmarks use them too):
the embedded Tansu broker (``embedded`` profile, 1 node) and a 3-node Apache Kafka (``kafka``
profile, replication factor 3), with the settings each engine's workers get on top of the defaults."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from stream_app.kafka.embedded import EmbeddedBroker, free_port

KAFKA_BROKERS = 3
ENGINE_SETTINGS: dict[str, dict[str, Any]] = {
    "tansu": {"broker_profile": "embedded", "replication_factor": 1},
    "kafka": {"broker_profile": "kafka", "replication_factor": KAFKA_BROKERS},
}
ENGINE_NAMES = {"tansu": "embedded broker (Tansu), 1 node",
                "kafka": f"Apache Kafka, {KAFKA_BROKERS} nodes, replication factor {KAFKA_BROKERS}"}


def parse_engines(raw: str) -> list[str]:
    """``"tansu,kafka"`` -> ``["tansu", "kafka"]``; ValueError (one line) for an unknown or no name."""
    chosen = [e.strip() for e in raw.split(",") if e.strip()]
    unknown = sorted(set(chosen) - set(ENGINE_SETTINGS))
    if unknown or not chosen:
        raise ValueError(f"engines {raw!r}: known engines are {', '.join(ENGINE_SETTINGS)}")
    return chosen


def apache_kafka(log_dir: Path) -> Any:
    """The 3-node cluster (not started). Records up to 8 MB, like Tansu: the hostile-input tests
    send values of ~2 MB that the worker must dead-letter (with Kafka's 1 MB default the broker
    rejects them, and aiokafka's idempotent producer then fails every later batch of that
    partition: OutOfOrderSequence)."""
    from stream_app.kafka.apache import ApacheKafkaCluster

    return ApacheKafkaCluster(brokers=KAFKA_BROKERS, heap="384m",
                              properties={"message.max.bytes": str(8 << 20)}, log_dir=log_dir)


@contextlib.contextmanager
def engine_url(engine: str, work: Path) -> Iterator[str]:
    """Bootstrap servers of the engine, started for the ``with`` block (logs under ``work``)."""
    if engine == "kafka":
        with apache_kafka(work / "kafka-logs") as cluster:
            yield cluster.url
    else:
        with EmbeddedBroker(free_port(), log_path=work / "broker.log") as broker:
            yield broker.url
