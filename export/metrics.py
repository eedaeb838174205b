"""Full-ranking metrics with one target per point, and churn ROC-AUC / PR-AUC."""

from __future__ import annotations

import numpy as np


def target_ranks(scores: np.ndarray, target: np.ndarray) -> np.ndarray:
    """0-based rank of each row's target among all columns. Ties count against the target (a
    baseline's equal scores cannot flatter it); excluded columns should hold -inf beforehand."""
    rows = np.arange(len(target))
    t = scores[rows, target][:, None]
    return (scores > t).sum(1) + (scores == t).sum(1) - 1


def hr_ndcg(ranks: np.ndarray, k: int = 10) -> dict[str, float]:
    hit = ranks < k
    gain = np.where(hit, 1.0 / np.log2(np.minimum(ranks, k) + 2.0), 0.0)
    return {f"hr@{k}": float(hit.mean()) if len(ranks) else float("nan"),
            f"ndcg@{k}": float(gain.mean()) if len(ranks) else float("nan")}


def churn_metrics(label: np.ndarray, prob: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import average_precision_score, roc_auc_score

    if len(np.unique(label)) < 2:
        return {"roc_auc": float("nan"), "pr_auc": float("nan"), "positives": float(label.sum())}
    return {"roc_auc": float(roc_auc_score(label, prob)),
            "pr_auc": float(average_precision_score(label, prob)),
            "positive_rate": float(label.mean())}
