"""Full-ranking metrics with one target per point, churn ROC-AUC / PR-AUC / recall at a fixed
precision, and paired bootstrap intervals for the model's margin over a baseline."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

# Rank given to a target that is PAD or UNKNOWN: beyond every cut-off, so a miss for every scorer
# at every k. Decision (docs/model.md, "Metrics"): such points stay in the denominator as misses
# rather than being excluded, so every scorer is measured on the same points and a dataset whose
# targets are often unknown (rare items under the time split, events without a category) does not
# look better than it is. Before this, an UNKNOWN target tied with PAD at the bottom of the ranking,
# which with fewer than ~10 categories is still inside the top 10: a hit for every scorer.
MISS_RANK = np.iinfo(np.int32).max
SPECIAL_IDS = 2  # vocabulary indices 0 = PAD and 1 = UNKNOWN (stream_app.features)


def target_ranks(scores: np.ndarray, target: np.ndarray) -> np.ndarray:
    """0-based rank of each row's target among all columns. Ties count against the target (a
    baseline's equal scores cannot flatter it); excluded columns should hold -inf beforehand.
    A PAD or UNKNOWN target gets :data:`MISS_RANK` (never a hit)."""
    target = np.asarray(target)
    rows = np.arange(len(target))
    t = scores[rows, target][:, None]
    ranks = (scores > t).sum(1) + (scores == t).sum(1) - 1
    return np.where(target < SPECIAL_IDS, MISS_RANK, ranks).astype(np.int64)


def ndcg_gains(ranks: np.ndarray, k: int = 10) -> np.ndarray:
    """Each point's NDCG@k (one relevant target: 1 / log2(rank + 2) inside the top k, else 0)."""
    return np.where(ranks < k, 1.0 / np.log2(np.minimum(ranks, k) + 2.0), 0.0)


def hr_ndcg(ranks: np.ndarray, k: int = 10) -> dict[str, float]:
    return {f"hr@{k}": float((ranks < k).mean()) if len(ranks) else float("nan"),
            f"ndcg@{k}": float(ndcg_gains(ranks, k).mean()) if len(ranks) else float("nan")}


def paired_bootstrap(difference: Callable[[np.ndarray], float], n_points: int, resamples: int = 1000,
                     seed: int = 0) -> dict[str, float]:
    """How sure a difference between two scorers on the same points is: ``difference(idx)`` is
    model minus baseline on the points ``idx``; resampled points, both scorers on each resample."""
    rng = np.random.default_rng(seed)
    d = np.array([difference(rng.integers(0, n_points, n_points)) for _ in range(resamples)])
    d = d[~np.isnan(d)]
    return {"difference": float(difference(np.arange(n_points))),
            "ci95_low": float(np.quantile(d, 0.025)), "ci95_high": float(np.quantile(d, 0.975)),
            "share_model_better": float((d > 0).mean())}


CHURN_PRECISION = 0.5  # the fixed precision of the reported recall: at most one false alarm per churner


def recall_at_precision(label: np.ndarray, prob: np.ndarray, precision: float = CHURN_PRECISION) -> float:
    """The largest share of churners caught by a threshold whose alarms are at least ``precision``
    right (0 when no threshold is that precise)."""
    from sklearn.metrics import precision_recall_curve

    p, r, _ = precision_recall_curve(label, prob)
    ok = p >= precision
    return float(r[ok].max()) if ok.any() else 0.0


def churn_metrics(label: np.ndarray, prob: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import average_precision_score, roc_auc_score

    if len(np.unique(label)) < 2:
        return {"roc_auc": float("nan"), "pr_auc": float("nan"), "positives": float(label.sum())}
    return {"roc_auc": float(roc_auc_score(label, prob)),
            "pr_auc": float(average_precision_score(label, prob)),
            f"recall@p{CHURN_PRECISION:g}": recall_at_precision(label, prob),
            "positive_rate": float(label.mean())}
