"""Evaluation on one role's points (validation or test): the model and the baselines, same points,
same full ranking. Items: HR@10 / NDCG@10 over every item of the vocabulary, optionally excluding
the user's past items. Categories: the same over categories, nothing excluded. A PAD or UNKNOWN
target is a miss for every scorer (``export.metrics.MISS_RANK``). Churn: ROC-AUC, PR-AUC and recall
at a fixed precision on the role's uncensored churn points, or a note saying why they are absent."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from export.baselines import Baselines, fit_churn_baseline, history_pairs
from export.metrics import churn_metrics, hr_ndcg, ndcg_gains, paired_bootstrap, target_ranks
from export.model import CHURN_FEATURES, InterestModel, ranking_scores
from export.prepare import PreparedData
from export.splits import ROLE_NAMES, TEST, TRAIN, VALID, Split

CHUNK = 1024


@torch.no_grad()
def model_hidden(model: InterestModel, data: PreparedData, points: np.ndarray, batch: int = 512
                 ) -> np.ndarray:
    """User vectors (P, d) at the given points, each computed from its serving context."""
    model.eval()
    seg = data.segments
    segs, pos = seg.point_segment[points], seg.point_position[points]
    uniq, inv = np.unique(segs, return_inverse=True)
    out = np.empty((len(points), model.cfg.d_model), np.float32)
    for c0 in range(0, len(uniq), batch):
        chunk = uniq[c0:c0 + batch]
        hidden, _ = model.encode({k: torch.from_numpy(v[chunk]) for k, v in seg.features.items()})
        mine = np.nonzero((inv >= c0) & (inv < c0 + len(chunk)))[0]
        out[mine] = hidden[inv[mine] - c0, pos[mine]].numpy()
    return out


def point_contexts(data: PreparedData, points: np.ndarray) -> tuple[torch.Tensor, ...]:
    """Item and category indices (P, L) of each point's context and its length (P,)."""
    seg = data.segments
    s = seg.point_segment[points]
    return (torch.from_numpy(seg.features["item"][s]), torch.from_numpy(seg.features["category"][s]),
            torch.from_numpy(seg.point_position[points] + 1))


def churn_inputs(data: PreparedData, points: np.ndarray) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """The churn head's inputs besides ``h`` at each point: its newest event's features and position."""
    seg = data.segments
    s, p = seg.point_segment[points], seg.point_position[points]
    return {k: torch.from_numpy(seg.features[k][s, p]) for k in CHURN_FEATURES}, torch.from_numpy(p)


@torch.no_grad()
def churn_logits(model: InterestModel, data: PreparedData, points: np.ndarray) -> torch.Tensor:
    last, position = churn_inputs(data, points)
    return model.churn_logit(torch.from_numpy(model_hidden(model, data, points)), last, position)


def _ranks(score: Callable[[np.ndarray, np.ndarray], np.ndarray], data: PreparedData, points: np.ndarray,
           target: np.ndarray, exclude: np.ndarray | None) -> np.ndarray:
    """Ranks of the targets; ``score(chunk_index, chunk_points)`` gives (chunk, N) scores and
    ``exclude`` (per event) the vocabulary index to mask out of each point's history."""
    ranks = []
    for c0 in range(0, len(points), CHUNK):
        pts = points[c0:c0 + CHUNK]
        s = np.array(score(np.arange(c0, c0 + len(pts)), pts), dtype=np.float64)
        if exclude is not None:
            rows, events, _ = history_pairs(data.table, pts, None)
            s[rows, exclude[events]] = -np.inf
        ranks.append(target_ranks(s, target[c0:c0 + len(pts)]))
    return np.concatenate(ranks) if ranks else np.zeros(0, np.int64)


def churn_note(split: Split, role: int) -> str | None:
    """Why churn cannot be measured (or only partly) on ``role``'s points, in one sentence; None when
    it can. Under the time split a period shorter than the horizon H cannot hold a labelled point."""
    name = ROLE_NAMES[role]
    h = split.spec.churn_horizon_ms
    if split.spec.kind == "leave_one_out":
        return "churn is not evaluated under the leave-one-out split (use --split time)"
    ends = {TRAIN: split.valid_start_ms, VALID: split.test_start_ms, TEST: split.data_end_ms}
    starts = {TRAIN: None, VALID: split.valid_start_ms, TEST: split.test_start_ms}
    start, end = starts[role], ends[role]
    if start is not None and end is not None and end - start < h:
        return (f"not measurable: the {name} period spans {(end - start) / 3.6e6:.1f} h, shorter than "
                f"the churn horizon H = {h / 3.6e6:g} h, so no {name} point can be seen to churn "
                f"(use a shorter --horizon-hours or a larger --{name}-fraction)")
    pts = split.churn_role == role
    n, pos = int(pts.sum()), int(split.churn_label[pts].sum())
    if n == 0:
        return f"not measurable: no {name} point is observed for H = {h / 3.6e6:g} h after it"
    if pos in (0, n):
        return (f"not measurable: the {n} {name} churn points are all "
                f"{'returns' if pos == 0 else 'churners'} within H = {h / 3.6e6:g} h (ROC-AUC needs both)")
    train = split.churn_role == TRAIN
    if len(np.unique(split.churn_label[train])) < 2:
        return "the training churn points have a single class: no recency_frequency baseline"
    return None


def _metrics(prefix: str, ranks: np.ndarray) -> dict[str, float]:
    return {f"{prefix}_{k}": v for k, v in hr_ndcg(ranks).items()}


def evaluate_model(model: InterestModel, data: PreparedData, role: int, exclude_history: bool
                   ) -> dict[str, float]:
    """The model alone (for early stopping)."""
    return evaluate(model, data, role, exclude_history, baselines=False)["model"]


def evaluate(model: InterestModel, data: PreparedData, role: int, exclude_history: bool,
             baselines: bool = True) -> dict[str, dict[str, float]]:
    """{scorer name: {metric: value}} for the model and (optionally) every baseline."""
    split = data.split
    pts = np.nonzero(split.target_role == role)[0]
    h_item = torch.from_numpy(model_hidden(model, data, pts))
    ctx_items, ctx_cats, length = point_contexts(data, pts)
    exclude = data.item_index if exclude_history else None

    @torch.no_grad()
    def model_items(rows: np.ndarray, _: np.ndarray) -> np.ndarray:
        return ranking_scores(model.item_probs(h_item[rows], ctx_items[rows], length[rows])).numpy()

    @torch.no_grad()
    def model_cats(rows: np.ndarray, _: np.ndarray) -> np.ndarray:
        return ranking_scores(model.category_probs(h_item[rows], ctx_cats[rows], length[rows])).numpy()

    results: dict[str, dict[str, float]] = {"model": {}}
    ranks: dict[str, dict[str, np.ndarray]] = {"item": {}, "category": {}}  # target -> scorer -> ranks
    ranks["item"]["model"] = _ranks(model_items, data, pts, data.next_item[pts], exclude)
    ranks["category"]["model"] = _ranks(model_cats, data, pts, data.next_category[pts], None)
    churn_pts = np.nonzero(split.churn_role == role)[0]
    labels = split.churn_label[churn_pts]
    churn_probs: dict[str, np.ndarray] = {}
    if len(churn_pts):
        with torch.no_grad():
            churn_probs["model"] = torch.sigmoid(churn_logits(model, data, churn_pts)).numpy()
    if baselines:
        L = data.spec.window_length
        ib = Baselines(data.table, data.item_index, len(data.items), split.train_events, L)
        cb = Baselines(data.table, data.category_index, len(data.categories), split.train_events, L)
        for name, fn in (("popularity", ib.popularity), ("repeat_last", ib.repeat_last),
                         ("cooccurrence", ib.cooccurrence)):
            ranks["item"][name] = _ranks(lambda _, p, fn=fn: fn(p), data, pts, data.next_item[pts], exclude)
        for name, fn in (("popularity", cb.popularity), ("repeat_last", cb.repeat_last),
                         ("cooccurrence", cb.cooccurrence), ("user_frequency", cb.frequency)):
            ranks["category"][name] = _ranks(lambda _, p, fn=fn: fn(p), data, pts, data.next_category[pts],
                                             None)
        train_pts = np.nonzero(split.churn_role == TRAIN)[0]
        if len(churn_pts) and len(np.unique(split.churn_label[train_pts])) == 2:
            predict = fit_churn_baseline(data.table, train_pts, split.churn_label[train_pts])
            churn_probs["recency_frequency"] = predict(churn_pts)
    for target, by_scorer in ranks.items():
        for name, r in by_scorer.items():
            results.setdefault(name, {}).update(_metrics(target, r))
    for name, prob in churn_probs.items():
        results.setdefault(name, {}).update({f"churn_{k}": v for k, v in churn_metrics(labels, prob).items()})
    if baselines:
        results["_comparison"] = compare_with_best_baseline(ranks, labels, churn_probs)
        note = churn_note(split, role)
        if note:
            results["_notes"] = {"churn": note}
    results["_points"] = {"targets": float(len(pts)), "churn_points": float(len(churn_pts)),
                          "churn_positives": float(labels.sum()),
                          "unknown_item_targets": float((data.next_item[pts] < 2).sum()),
                          "unknown_category_targets": float((data.next_category[pts] < 2).sum())}
    return results


def compare_with_best_baseline(ranks: dict[str, dict[str, np.ndarray]], labels: np.ndarray,
                               churn_probs: dict[str, np.ndarray]) -> dict[str, dict[str, object]]:
    """The model's margin over the best baseline of each headline metric, with a paired bootstrap
    95% interval over the same test points (how much of the margin is luck of the sample)."""
    out: dict[str, dict[str, object]] = {}
    for target, by_scorer in ranks.items():
        gains = {name: ndcg_gains(r) for name, r in by_scorer.items() if len(r)}
        rivals = [n for n in gains if n != "model"]
        if "model" not in gains or not rivals:
            continue
        best = max(rivals, key=lambda n: gains[n].mean())
        m, b = gains["model"], gains[best]
        out[f"{target}_ndcg@10"] = {"baseline": best, **paired_bootstrap(
            lambda idx, m=m, b=b: float(m[idx].mean() - b[idx].mean()), len(m))}
    if {"model", "recency_frequency"} <= churn_probs.keys() and len(np.unique(labels)) == 2:
        from sklearn.metrics import roc_auc_score

        m, b = churn_probs["model"], churn_probs["recency_frequency"]

        def auc_difference(idx: np.ndarray) -> float:
            if labels[idx].min() == labels[idx].max():
                return float("nan")
            return float(roc_auc_score(labels[idx], m[idx]) - roc_auc_score(labels[idx], b[idx]))

        out["churn_roc_auc"] = {"baseline": "recency_frequency", **paired_bootstrap(auc_difference, len(m))}
    return out
