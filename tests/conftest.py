"""Shared fixtures: one embedded broker process for the whole run, per-test app ids and topics,
and the real datasets in ../shared/data (skipped on a user's fresh clone, a failure in CI)."""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from stream_app.core.config import Settings
from stream_app.kafka.embedded import EmbeddedBroker, free_port

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("TRACKER_SHARED_DATA", ROOT.parent / "shared" / "data"))


def shared_data(relative: str) -> Path:
    """Path of a file in ../shared/data; skip when absent, unless CI demands the data."""
    path = SHARED_DATA / relative
    if not path.exists():
        msg = f"{path} is absent (set TRACKER_SHARED_DATA to the shared data folder)"
        if os.environ.get("TRACKER_REQUIRE_SHARED_DATA") == "1":
            pytest.fail(msg + "; TRACKER_REQUIRE_SHARED_DATA=1 forbids skipping")
        pytest.skip(msg)
    return path


@pytest.fixture(scope="session")
def broker_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One Tansu broker for the whole test session (each test uses its own topics)."""
    log = tmp_path_factory.mktemp("broker") / "broker.log"
    with EmbeddedBroker(free_port(), log_path=log) as broker:
        yield broker.url


@pytest.fixture
def unique_id(request: pytest.FixtureRequest) -> str:
    name = re.sub(r"[^a-zA-Z0-9]+", "-", request.node.name)[:40].strip("-")
    return f"t-{name}-{uuid.uuid4().hex[:6]}"


@pytest.fixture
def settings(broker_url: str, unique_id: str, tmp_path: Path) -> Settings:
    """Settings for one test: its own app id (consumer group), topics and data dir."""
    return Settings(broker_url=broker_url, data_dir=tmp_path / "data", metrics_port=0, web_port=0,
                    partitions=4).namespaced(unique_id)
