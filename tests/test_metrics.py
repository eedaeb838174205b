"""Ranking metrics: PAD and UNKNOWN targets are misses for every scorer, at every k and vocabulary size."""

from __future__ import annotations

import numpy as np

from export.metrics import MISS_RANK, hr_ndcg, target_ranks
from stream_app.features import PAD, UNKNOWN


def test_unknown_and_pad_targets_are_misses_even_with_few_categories() -> None:
    # 5 categories (2 special + 3 real): every column is inside the top 10.
    scores = np.array([[-np.inf, -np.inf, 0.5, 0.2, 0.1]] * 4)
    target = np.array([2, 4, UNKNOWN, PAD])
    ranks = target_ranks(scores, target)
    assert ranks.tolist() == [0, 2, MISS_RANK, MISS_RANK]
    m = hr_ndcg(ranks, k=10)
    assert m["hr@10"] == 0.5  # the two real targets hit, the unknown and PAD ones do not
    assert np.isclose(m["ndcg@10"], (1.0 + 1.0 / np.log2(4)) / 4)
    flat = np.zeros((2, 5))  # a scorer that ties everything, special columns included
    assert target_ranks(flat, np.array([UNKNOWN, 3])).tolist() == [MISS_RANK, 4]
