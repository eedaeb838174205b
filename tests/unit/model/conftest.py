"""A tiny untrained artifact over real Taobao vocabularies, shared by the model's unit tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from export.prepare import PreparedData, prepare
from export.splits import SplitSpec
from stream_app.model.features import FeatureSpec
from tests.conftest import shared_data
from tests.support.artifacts import tiny_artifact

L = 8


@pytest.fixture(scope="session")
def data() -> PreparedData:
    path = shared_data("taobao/UserBehavior_10k.csv")
    return prepare(path, SplitSpec("time"), FeatureSpec(window_length=L), min_item_count=2, progress=False)


@pytest.fixture(scope="session")
def artifact(data: PreparedData, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_artifact(data, tmp_path_factory.mktemp("artifact"))
