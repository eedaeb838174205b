"""The training recipe's rules, the same for every dataset: the item ranking keeps or excludes the
user's past items by the training data (excluded where users (almost) never return to an item),
the batch size follows the data size, and early stopping weighs every headline metric."""

from __future__ import annotations

import pytest

from export.prepare import prepare, repeat_share
from export.splits import SplitSpec
from export.train import TrainConfig, combined_score, decide_batch_size, decide_history
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


def test_batch_size_gives_every_epoch_at_least_50_steps() -> None:
    assert decide_batch_size(TrainConfig(), 10_000).batch_size == 128  # MovieLens-1M, Diginetica
    assert decide_batch_size(TrainConfig(), 1_901).batch_size == 38  # Taobao head84k
    assert decide_batch_size(TrainConfig(), 100).batch_size == 16
    assert decide_batch_size(TrainConfig(batch_size=7), 10_000).batch_size == 7


def test_combined_score_is_the_mean_skill_over_the_best_baselines() -> None:
    reference = {"item_ndcg@10": 0.02, "category_ndcg@10": 0.5, "churn_roc_auc": 0.75}
    same = {"item_ndcg@10": 0.02, "category_ndcg@10": 0.5, "churn_roc_auc": 0.75}
    assert combined_score(same, reference) == 1.0
    better_items = {**same, "item_ndcg@10": 0.03}  # +50% skill on one of three metrics
    assert abs(combined_score(better_items, reference) - (1.5 + 1 + 1) / 3) < 1e-12
    # churn skill is measured above chance (0.5): 0.80 is 0.30 / 0.25 of the baseline's
    assert abs(combined_score({**same, "churn_roc_auc": 0.80}, reference) - (1 + 1 + 1.2) / 3) < 1e-12
    # leave-one-out measures no churn: the mean of the two others
    assert combined_score({**same, "churn_roc_auc": float("nan")}, reference) == 1.0
