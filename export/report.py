"""Evaluation report: report.json, report.md (tables) and training_curve.png."""

from __future__ import annotations

import json
import math
from pathlib import Path

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


def markdown(report: dict) -> str:
    res = report["test"]
    split = report["split"]
    proto = report["protocol"]
    out = [
        f"# Evaluation: {report['dataset']['path']}",
        "",
        f"Model `{report.get('model_version', '?')}`; split **{split['kind']}** "
        f"({json.dumps({k: v for k, v in split.items() if k != 'kind'})}).",
        f"Protocol: full ranking over all {proto['n_items'] - 2} items of the vocabulary "
        f"({'user history excluded' if proto['exclude_history'] else 'user history not excluded'}); "
        f"categories: full ranking over {proto['n_categories'] - 2}, nothing excluded; "
        f"UNKNOWN targets count as misses. Test points: {int(res['_points']['targets'])} item/category "
        f"targets, {int(res['_points']['churn_points'])} churn points (horizon "
        f"{split['churn_horizon_ms'] / 3.6e6:g} h).",
        "",
        "## Next item",
        _table(res, ITEM_ROWS, ("item_hr@10", "item_ndcg@10")),
        "",
        "## Next category",
        _table(res, CATEGORY_ROWS, ("category_hr@10", "category_ndcg@10")),
        "",
        "## Churn (no event within H)",
        _table(res, CHURN_ROWS, ("churn_roc_auc", "churn_pr_auc", "churn_positive_rate"))
        if "recency_frequency" in res else "not evaluated under this split (no held-out churn points)",
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
        out += ["", "## ONNX parity (max abs difference)",
                "\n".join(f"- {k}: {v:.2e}" for k, v in report["parity"].items())]
    return "\n".join(out) + "\n"


def plot_curve(curve: list[dict[str, float]], path: Path, metric: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in curve]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(epochs, [r["loss"] for r in curve], "o-", label="training loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("training loss")
    ax2 = ax.twinx()
    keys = dict.fromkeys((f"valid_{metric}", "valid_item_ndcg@10", "valid_category_ndcg@10",
                          "valid_churn_roc_auc"))
    for key, style in zip(keys, ("s-", "^--", "d:", "x-."), strict=False):
        if any(key in r for r in curve):
            ax2.plot(epochs, [r.get(key, float("nan")) for r in curve], style, label=key)
    ax2.set_ylabel("validation metric")
    handles = ax.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
    ax.legend(handles, [h.get_label() for h in handles], loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_report(report: dict, out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.json").write_text(json.dumps(report, indent=2, default=float))
    (out_dir / "report.md").write_text(markdown(report))
    plot_curve(report["training"]["curve"], out_dir / "training_curve.png",
               report["training"]["config"]["early_stop_metric"])
    return out_dir / "report.md"
