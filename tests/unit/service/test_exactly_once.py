"""TRACKER_PROCESSING_GUARANTEE=exactly_once: refused on the embedded broker (no transactions);
the Kafka behaviour is tested in tests/integration/service/test_kafka_failures.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from stream_app.core.config import Settings
from stream_app.kafka.embedded import StartupError
from stream_app.service.app import make_faust_app
from stream_app.service.sender import RecordSender


def test_exactly_once_needs_the_kafka_profile(tmp_path: Path) -> None:
    settings = Settings(broker_profile="embedded", processing_guarantee="exactly_once",
                        data_dir=tmp_path)
    with pytest.raises(StartupError, match="needs Apache Kafka"):
        make_faust_app(settings)


def test_at_least_once_is_the_default_and_exactly_once_needs_the_app() -> None:
    assert Settings().processing_guarantee == "at_least_once"
    assert not RecordSender(Settings()).exactly_once
    with pytest.raises(ValueError, match="needs the Faust app"):
        RecordSender(Settings(processing_guarantee="exactly_once"))
