"""Training on CPU: negative log-likelihood of the next item and the next category under the full
(softmax over the whole vocabulary + copy) distributions, and churn BCE, on the served positions of
every segment; Adam, early stopping on a validation metric, seeded."""

from __future__ import annotations

import copy
import logging
import random
import time
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from export.evaluate import churn_inputs, evaluate, evaluate_model, model_hidden
from export.model import CHURN_FEATURES, InterestModel, ModelConfig
from export.prepare import PreparedData, repeat_share
from export.splits import TRAIN, VALID

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 2
    d_ff: int = 256
    dropout: float = 0.2
    epochs: int = 60
    batch_size: int | None = None  # segments per step; None: from the data (decide_batch_size)
    lr: float = 1e-3
    weight_decay: float = 0.0
    category_weight: float = 0.5  # loss = item CE + w_c * category CE + w_h * churn BCE
    churn_weight: float = 0.5
    patience: int = 5  # epochs without validation improvement before stopping
    # "combined" (see combined_score), "item_ndcg@10", "category_ndcg@10" or "churn_roc_auc"
    early_stop_metric: str = "combined"
    # item ranking excludes the user's past items (the MovieLens protocol); None: decided from
    # the training data by decide_history
    exclude_history: bool | None = None
    seed: int = 0
    threads: int = 2
    max_minutes: float | None = None  # wall-clock budget; stops after the epoch that crosses it
    churn_refit_epochs: int = 100  # second phase on the churn head alone (0: off), see refit_churn_head

    def model_config(self, data: PreparedData) -> ModelConfig:
        return ModelConfig.for_spec(data.spec, len(data.items), len(data.categories), d_model=self.d_model,
                                    n_heads=self.n_heads, n_layers=self.n_layers, d_ff=self.d_ff,
                                    dropout=self.dropout, category_distinct_rank=True)


@dataclass
class TrainResult:
    model: InterestModel
    best_epoch: int
    best_valid: dict[str, float]
    curve: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    config: dict[str, object] = field(default_factory=dict)


def seed_everything(seed: int, threads: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)


def _targets(data: PreparedData) -> tuple[torch.Tensor, ...]:
    """Per-position targets of the training loss (0 / False where a position does not count)."""
    seg, split = data.segments, data.split
    g = np.where(seg.event_index >= 0, seg.event_index, 0)
    train_pt = seg.served & (split.target_role[g] == TRAIN)
    item = np.where(train_pt & (data.next_item[g] > 1), data.next_item[g], 0)
    cat = np.where(train_pt & (data.next_category[g] > 1), data.next_category[g], 0)
    churn_mask = seg.served & (split.churn_role[g] == TRAIN)
    churn = split.churn_label[g].astype(np.float32)
    return (torch.from_numpy(item), torch.from_numpy(cat), torch.from_numpy(churn_mask),
            torch.from_numpy(churn))


# below this share of repeated items the user's past items are excluded from the ranking
REPEAT_SHARE_TO_KEEP = 0.01


def decide_history(cfg: TrainConfig, data: PreparedData) -> TrainConfig:
    """``cfg`` with ``exclude_history`` set: as given, else excluded when users (almost) never
    return to an item in the training period (MovieLens), kept when they do (Taobao, Diginetica:
    excluding them there makes a fifth to a quarter of the next items unreachable)."""
    if cfg.exclude_history is not None:
        return cfg
    share = repeat_share(data)
    exclude = share < REPEAT_SHARE_TO_KEEP
    log.info("%.1f%% of the training events repeat an item of the user's: past items %s the ranking",
             100 * share, "excluded from" if exclude else "kept in")
    return replace(cfg, exclude_history=exclude)


HEADLINE = {"item_ndcg@10": 0.0, "category_ndcg@10": 0.0, "churn_roc_auc": 0.5}  # metric: chance


def best_baselines(data: PreparedData, cfg: TrainConfig) -> dict[str, float]:
    """The best baseline's validation value of each headline metric the split measures."""
    scores = evaluate(InterestModel(cfg.model_config(data)), data, VALID, bool(cfg.exclude_history))
    best: dict[str, float] = {}
    for metric in HEADLINE:
        values = [s[metric] for name, s in scores.items()
                  if name != "model" and not name.startswith("_") and metric in s and s[metric] == s[metric]]
        if values:  # NaN or absent: not measured (no churn under leave-one-out)
            best[metric] = max(values)
    return best


def combined_score(valid: dict[str, float], reference: dict[str, float]) -> float:
    """The early-stopping score of the default recipe: the mean, over the headline metrics, of the
    model's skill relative to the best baseline's ((value - chance) / (baseline - chance)), so that
    no one task decides when to stop on every dataset: item NDCG on MovieLens, next category and
    churn on Taobao and Diginetica (where item NDCG peaks in the first epoch)."""
    parts = [(valid[m] - HEADLINE[m]) / (ref - HEADLINE[m]) for m, ref in reference.items()
             if ref > HEADLINE[m] and valid.get(m) == valid.get(m)]
    return float(np.mean(parts)) if parts else float("nan")


MIN_STEPS_PER_EPOCH = 50


def decide_batch_size(cfg: TrainConfig, n_segments: int) -> TrainConfig:
    """``cfg`` with ``batch_size`` set: as given, else 128 segments, fewer (down to 16) when an
    epoch would take under 50 steps (Taobao head84k: 1.7k segments, batch 34; MovieLens-1M and
    Diginetica keep 128)."""
    if cfg.batch_size is not None:
        return cfg
    return replace(cfg, batch_size=int(np.clip(n_segments // MIN_STEPS_PER_EPOCH, 16, 128)))


def train_model(data: PreparedData, cfg: TrainConfig, progress: bool = True) -> TrainResult:
    cfg = decide_history(cfg, data)
    seed_everything(cfg.seed, cfg.threads)
    model = InterestModel(cfg.model_config(data))
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    feats = {k: torch.from_numpy(v) for k, v in data.segments.features.items()}
    item_t, cat_t, churn_m, churn_y = _targets(data)
    useful = ((item_t > 0) | (cat_t > 0) | churn_m).any(1).nonzero().squeeze(1)
    cfg = decide_batch_size(cfg, len(useful))
    log.info("%d training segments, batch size %d", len(useful), cfg.batch_size)
    gen = torch.Generator().manual_seed(cfg.seed)
    reference = best_baselines(data, cfg) if cfg.early_stop_metric == "combined" else {}
    best_score, best_epoch, best_state, best_valid = -np.inf, 0, None, {}
    curve: list[dict[str, float]] = []
    start = time.monotonic()
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        order = useful[torch.randperm(len(useful), generator=gen)]
        totals = np.zeros(4)
        batches = range(0, len(order), cfg.batch_size)
        bar = tqdm(batches, desc=f"epoch {epoch}", leave=False, disable=not progress)
        for b0 in bar:
            idx = order[b0:b0 + cfg.batch_size]
            batch = {k: v[idx] for k, v in feats.items()}
            hidden, _ = model.encode(batch)
            loss = torch.zeros(())
            parts = []
            for tgt, head, table, block, ids, w in (
                (item_t[idx], model.item_head, model.item_emb.weight, model.item_block, batch["item"], 1.0),
                (cat_t[idx], model.cat_head, model.cat_emb.weight, model.cat_block, batch["category"],
                 cfg.category_weight),
            ):
                sel = tgt > 0
                part = (-head.train_log_prob(hidden, ids, table, block, sel, tgt).mean() if sel.any()
                        else torch.zeros(()))
                loss = loss + w * part
                parts.append(float(part.detach()))
            sel = churn_m[idx]
            if sel.any():
                position = torch.arange(hidden.shape[1]).expand(len(idx), -1)[sel]
                logit = model.churn_logit(hidden[sel], {k: batch[k][sel] for k in CHURN_FEATURES}, position)
                churn_loss = F.binary_cross_entropy_with_logits(logit, churn_y[idx][sel])
            else:
                churn_loss = torch.zeros(())
            loss = loss + cfg.churn_weight * churn_loss
            opt.zero_grad()
            loss.backward()
            opt.step()
            totals += [float(loss.detach()), parts[0], parts[1], float(churn_loss.detach())]
            bar.set_postfix(loss=f"{totals[0] / (b0 // cfg.batch_size + 1):.3f}")
        n = max(len(batches), 1)
        valid = evaluate_model(model, data, VALID, cfg.exclude_history)
        if cfg.early_stop_metric == "combined":  # before the row: the curve and its plot show it
            valid["combined"] = combined_score(valid, reference)
        row = {"epoch": epoch, "loss": totals[0] / n, "item_loss": totals[1] / n,
               "category_loss": totals[2] / n, "churn_loss": totals[3] / n,
               "seconds": time.monotonic() - start, **{f"valid_{k}": v for k, v in valid.items()}}
        curve.append(row)
        score = valid.get(cfg.early_stop_metric, float("nan"))
        log.info("epoch %d loss %.4f valid %s=%.4f (%.0fs)", epoch, row["loss"], cfg.early_stop_metric,
                 score, row["seconds"])
        if progress:
            tqdm.write(f"epoch {epoch}: loss {row['loss']:.4f}  " + "  ".join(
                f"{k} {v:.4f}" for k, v in valid.items()) + f"  [{row['seconds']:.0f}s]")
        if score > best_score:
            best_score, best_epoch, best_valid = score, epoch, valid
            best_state = copy.deepcopy(model.state_dict())
        elif epoch - best_epoch >= cfg.patience:
            break
        if cfg.max_minutes is not None and time.monotonic() - start > 60 * cfg.max_minutes:
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    if cfg.churn_refit_epochs > 0:
        best_valid.update(refit_churn_head(model, data, cfg))
    return TrainResult(model, best_epoch, best_valid, curve, time.monotonic() - start, asdict(cfg))


ChurnPoints = tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor, torch.Tensor]  # h, last, pos, y


def _churn_points(model: InterestModel, data: PreparedData, role: int) -> ChurnPoints:
    pts = np.nonzero(data.split.churn_role == role)[0]
    last, position = churn_inputs(data, pts)
    h = torch.from_numpy(model_hidden(model, data, pts))
    return h, last, position, torch.from_numpy(data.split.churn_label[pts].astype(np.float32))


def refit_churn_head(model: InterestModel, data: PreparedData, cfg: TrainConfig) -> dict[str, float]:
    """Second phase, the encoder frozen. Jointly, the rare churn positives (about 1-2% on Taobao)
    barely move a head whose input the item objective keeps reshaping, so: (1) the linear
    recency/frequency/pace part is fitted alone as an L2-regularised logistic regression, full
    batch with L-BFGS to convergence (deterministic; a few dozen validation positives make
    early stopping on them a coin toss); (2) the MLP on ``h`` is fitted on top of it as a residual,
    early-stopped on validation ROC-AUC, and kept only if it beats the linear part there."""
    from sklearn.metrics import roc_auc_score

    torch.manual_seed(cfg.seed)
    train, valid = _churn_points(model, data, TRAIN), _churn_points(model, data, VALID)
    y_t, y_v = train[3], valid[3]
    if len(y_t) == 0 or y_t.min() == y_t.max() or len(y_v) == 0 or y_v.min() == y_v.max():
        return {}
    raw = model.wide_inputs(train[1], train[2], raw=True)
    model.wide_mean.copy_(raw.mean(0))
    model.wide_std.copy_(raw.std(0).clamp(min=1e-3))

    def logits(points: ChurnPoints, idx: torch.Tensor | slice = slice(None)) -> torch.Tensor:
        h, last, position, _ = points
        return model.churn_logit(h[idx], {k: v[idx] for k, v in last.items()}, position[idx])

    def valid_auc() -> float:
        with torch.no_grad():
            return float(roc_auc_score(y_v.numpy(), logits(valid).numpy()))

    for m in model.churn_head.modules():
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()
    nn.init.zeros_(model.churn_head[2].weight)  # the MLP's output is exactly 0 while (1) runs
    nn.init.zeros_(model.churn_head[2].bias)
    model.churn_wide.reset_parameters()
    wide = list(model.churn_wide.parameters())
    lbfgs = torch.optim.LBFGS(wide, lr=1.0, max_iter=500, tolerance_grad=1e-9, tolerance_change=1e-12,
                              history_size=20, line_search_fn="strong_wolfe")
    l2 = 1.0 / len(y_t)  # sklearn's LogisticRegression(C=1): sum(w^2) / 2 against the summed loss

    def closure() -> torch.Tensor:
        lbfgs.zero_grad()
        loss = F.binary_cross_entropy_with_logits(logits(train), y_t) + l2 / 2 * (
            model.churn_wide.weight ** 2).sum()
        loss.backward()
        return loss

    lbfgs.step(closure)
    linear_auc = valid_auc()
    linear_state = copy.deepcopy((model.churn_wide.state_dict(), model.churn_head.state_dict()))

    for p in wide:
        p.requires_grad_(False)
    opt = torch.optim.Adam(model.churn_head.parameters(), lr=cfg.lr, weight_decay=1e-4)
    gen = torch.Generator().manual_seed(cfg.seed)
    best, best_state, since = linear_auc, linear_state, 0
    for _ in range(cfg.churn_refit_epochs):
        for idx in torch.randperm(len(y_t), generator=gen).split(256):
            loss = F.binary_cross_entropy_with_logits(logits(train, idx), y_t[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        auc = valid_auc()
        if auc > best:
            best, since = auc, 0
            best_state = copy.deepcopy((model.churn_wide.state_dict(), model.churn_head.state_dict()))
        else:
            since += 1
            if since >= 2 * cfg.patience:
                break
    for p in wide:
        p.requires_grad_(True)
    model.churn_wide.load_state_dict(best_state[0])
    model.churn_head.load_state_dict(best_state[1])
    use_h = best_state is not linear_state
    log.info("churn head refitted (%s): validation ROC-AUC %.4f (linear part alone %.4f)",
             "linear + MLP on h" if use_h else "linear only", best, linear_auc)
    return {"churn_refit_roc_auc": best, "churn_refit_uses_h": float(use_h)}
