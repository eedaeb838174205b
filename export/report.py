"""Evaluation report: report.json, report.md (tables) and training_curve.png."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

from export.metrics import CHURN_PRECISION

ITEM_ROWS = ("model", "popularity", "repeat_last", "cooccurrence")
CATEGORY_ROWS = ("model", "popularity", "repeat_last", "cooccurrence", "user_frequency")
CHURN_ROWS = ("model", "recency_frequency")


def _fmt(v: object) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4f}"


def _table(results: dict[str, dict[str, float]], rows: tuple[str, ...], metrics: tuple[str, ...]) -> str:
    lines = ["| scorer | " + " | ".join(metrics) + " |", "|---" * (len(metrics) + 1) + "|"]
    for r in rows:
        if r in results and any(m in results[r] for m in metrics):
            lines.append(f"| {r} | " + " | ".join(_fmt(results[r].get(m)) for m in metrics) + " |")
    return "\n".join(lines)


def _comparison(comp: dict[str, dict]) -> str:
    if not comp:
        return "no baseline to compare with"
    lines = ["| metric | best baseline | model − baseline | 95% interval | resamples where the model wins |",
             "|---|---|---|---|---|"]
    for metric, c in comp.items():
        lines.append(f"| {metric} | {c['baseline']} | {c['difference']:+.4f} | "
                     f"[{c['ci95_low']:+.4f}, {c['ci95_high']:+.4f}] | {c['share_model_better']:.1%} |")
    return "\n".join(lines)


def _when(ms: object) -> str:
    return "–" if ms is None else time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(int(ms) / 1000))  # type: ignore[call-overload]


def split_lines(split: dict) -> list[str]:
    """The split's parameters that apply to its kind, and its point counts."""
    h = f"{split['churn_horizon_ms'] / 3.6e6:g} h"
    counts = ", ".join(f"{r} {split[f'{r}_targets']} targets / {split[f'{r}_churn_points']} churn points"
                       for r in ("train", "valid", "test"))
    if split["kind"] == "leave_one_out":
        head = (f"Split **leave_one_out**: each user's last event is the test target, the one before it "
                f"the validation target (users with at least 3 events); churn horizon H = {h} (trains "
                "the churn head; churn is not evaluated under this split).")
    else:
        head = (f"Split **{split['kind']}**: validation = the {split['valid_fraction']:.0%} of events "
                f"from {_when(split['valid_start_ms'])}, test = the last {split['test_fraction']:.0%} "
                f"from {_when(split['test_start_ms'])} to {_when(split['data_end_ms'])}; churn horizon "
                f"H = {h}.")
    return [head, f"Points: {counts}."]


def dataset_lines(ds: dict) -> list[str]:
    reasons = ds.get("bad_reasons") or {}
    bad = ", ".join(f"{k}: {v}" for k, v in reasons.items()) if reasons else "none"
    dropped = ds.get("dropped_events") or {}
    out = [f"- `{ds['path']}` ({ds['kind']}), sha256 `{ds['sha256']}`",
           f"- {ds['lines']} lines read, {ds['events']} events, {ds['bad_lines']} bad lines ({bad})",
           "- dropped events: " + (", ".join(f"{k}: {v}" for k, v in dropped.items()) or "none")
           + f"; {ds['users']} users, {ds['events_used']} events used"]
    out += [f"  - bad line {n}: {reason}: `{text[:80]}`"
            for n, reason, text in ds.get("bad_examples", [])[:5]]
    return out


def markdown(report: dict) -> str:
    res = report["test"]
    split = report["split"]
    proto = report["protocol"]
    pts = res["_points"]
    note = res.get("_notes", {}).get("churn")
    churn_metrics = ("churn_roc_auc", "churn_pr_auc", f"churn_recall@p{CHURN_PRECISION:g}",
                     "churn_positive_rate")
    has_churn = any("churn_roc_auc" in res.get(r, {}) for r in CHURN_ROWS)
    churn = [_table(res, CHURN_ROWS, churn_metrics)] if has_churn else []
    if note:
        churn.append(f"**Churn {note}.**")
    out = [
        f"# Evaluation: {Path(report['dataset']['path']).name}",
        "",
        f"Model `{report.get('model_version', '?')}`.",
        "",
        "## Data",
        "",
        *dataset_lines(report["dataset"]),
        "",
        "## Split and protocol",
        "",
        *split_lines(split),
        f"Full ranking over all {proto['n_items'] - 2} items of the vocabulary "
        f"({'user history excluded' if proto['exclude_history'] else 'user history not excluded'}); "
        f"categories: full ranking over {proto['n_categories'] - 2}, nothing excluded. "
        f"PAD/UNKNOWN targets count as misses for every scorer ({int(pts.get('unknown_item_targets', 0))} "
        f"item, {int(pts.get('unknown_category_targets', 0))} category targets of "
        f"{int(pts['targets'])}). Test churn points: {int(pts['churn_points'])}"
        + (f", {int(pts['churn_positives'])} churners." if "churn_positives" in pts else "."),
        "",
        "## Next item",
        _table(res, ITEM_ROWS, ("item_hr@10", "item_ndcg@10")),
        "",
        "## Next category",
        _table(res, CATEGORY_ROWS, ("category_hr@10", "category_ndcg@10")),
        "",
        f"## Churn (no event within H = {split['churn_horizon_ms'] / 3.6e6:g} h)",
        *(churn or ["not evaluated (no held-out churn points)"]),
        "",
        "## Model vs the best baseline (paired bootstrap over the test points, 1,000 resamples)",
        _comparison(res.get("_comparison", {})),
        "",
        "## Training",
        f"best epoch {report['training']['best_epoch']} of {len(report['training']['curve'])}, "
        f"{report['training']['seconds']:.0f} s; early stopping on validation "
        f"`{report['training']['config']['early_stop_metric']}`.",
    ]
    if "parity" in report:
        out += ["", "## ONNX parity (max difference, relative where the output exceeds 1)",
                "\n".join(f"- {k}: {v:.2e}" for k, v in report["parity"].items())]
    return "\n".join(out) + "\n"


LOSS_COLOURS = {"loss": "black", "item_loss": "tab:red", "category_loss": "tab:orange",
                "churn_loss": "tab:brown"}
METRIC_PANELS = (("valid_item_ndcg@10", "item NDCG@10", "tab:blue"),
                 ("valid_category_ndcg@10", "category NDCG@10", "tab:green"),
                 ("valid_churn_roc_auc", "churn ROC-AUC", "tab:purple"),
                 ("valid_combined", "combined skill", "tab:red"))


def plot_curve(curve: list[dict[str, float]], path: Path, metric: str, title: str = "",
               best_epoch: int | None = None) -> None:
    """One panel for the training losses and one per validation metric (own y scale each), the
    best epoch marked, the legend outside the data."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    epochs = [r["epoch"] for r in curve]
    panels = [(k, label, c) for k, label, c in METRIC_PANELS
              if any(not math.isnan(r.get(k, math.nan)) for r in curve)]
    fig, axes = plt.subplots(1, 1 + len(panels), figsize=(3.4 * (1 + len(panels)), 3.6), squeeze=False)
    ax = axes[0, 0]
    for key, colour in LOSS_COLOURS.items():
        if any(key in r for r in curve):
            ax.plot(epochs, [r.get(key, math.nan) for r in curve], "o-", ms=3, color=colour,
                    label="total loss" if key == "loss" else key.replace("_", " "))
    ax.set_title("training loss", fontsize=10)
    for ax, (key, label, colour) in zip(axes[0, 1:], panels, strict=True):
        ax.plot(epochs, [r.get(key, math.nan) for r in curve], "s-", ms=3, color=colour, label=label)
        ax.set_title(f"validation {label}" + (" (early stop)" if key == f"valid_{metric}" else ""),
                     fontsize=10)
    for ax in axes[0]:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        if best_epoch:
            ax.axvline(best_epoch, color="grey", ls="--", lw=1)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    if best_epoch:
        handles.append(plt.Line2D([], [], color="grey", ls="--", lw=1))
        labels.append(f"best epoch ({best_epoch})")
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8, frameon=False)
    fig.suptitle(title or "training curve", fontsize=11)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_report(report: dict, out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.json").write_text(json.dumps(report, indent=2, default=float))
    (out_dir / "report.md").write_text(markdown(report))
    ds, split = report["dataset"], report["split"]
    title = f"{Path(ds['path']).name} ({ds['kind']}), {split['kind']} split"
    plot_curve(report["training"]["curve"], out_dir / "training_curve.png",
               report["training"]["config"]["early_stop_metric"], title, report["training"]["best_epoch"])
    return out_dir / "report.md"
