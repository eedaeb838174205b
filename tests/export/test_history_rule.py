"""The item ranking keeps or excludes the user's past items by a rule on the training data, the
same for every dataset: excluded where users (almost) never return to an item."""

from __future__ import annotations

import pytest

from export.prepare import prepare, repeat_share
from export.splits import SplitSpec
from export.train import TrainConfig, decide_history
from stream_app.model.features import FeatureSpec
from tests.conftest import shared_data


@pytest.mark.parametrize(("path", "exclude"), [
    ("movielens/ml-1m_ratings_partial.dat.gz", True),
    ("taobao/UserBehavior_10k.csv", False),
    ("diginetica", False),
])
def test_history_rule_on_the_shared_datasets(path: str, exclude: bool) -> None:
    data = prepare(shared_data(path), SplitSpec("time", 0.1, 0.1, 24 * 3_600_000), FeatureSpec(),
                   min_item_count=2, progress=False)
    share = repeat_share(data)
    assert (share < 0.001) if exclude else (share > 0.1), share
    assert decide_history(TrainConfig(), data).exclude_history is exclude
    assert decide_history(TrainConfig(exclude_history=not exclude), data).exclude_history is not exclude
