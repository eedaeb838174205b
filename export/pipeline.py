"""What the CLI commands do: train (+ export + evaluate), export, evaluate."""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from export.artifact import load_model, write_artifact
from export.churn_warning import WARNING_PRECISION, calibrate_warning_threshold
from export.evaluate import churn_logits, churn_note, evaluate, model_hidden
from export.model import InterestModel
from export.onnx_export import chunk_parity, export_onnx, step_parity, top_k_of, window_parity
from export.prepare import PreparedData, prepare
from export.report import write_report
from export.splits import TEST, VALID, SplitSpec
from export.train import TrainConfig, TrainResult, decide_history, train_model
from stream_app.model.artifact import (
    CATEGORIES_FILE,
    ITEMS_FILE,
    SCHEMA_VERSION,
    USER_VECTORS_FILE,
    read_metadata,
    write_metadata,
)
from stream_app.model.features import FeatureSpec, Vocab, encode_windows, is_incremental

log = logging.getLogger(__name__)
PARITY_USERS = 256


def parity_windows(data: PreparedData, n: int = PARITY_USERS, seed: int = 0):  # noqa: ANN201
    """Real windows for the parity checks: the test points' contexts (or any points when there are
    none), and for those whose context grew by one event, the windows before and after it."""
    pts = sample_points(data, TEST, n, seed)
    user = data.table.user_of()
    L = data.spec.window_length
    wins, counts, first = [], [], []
    for g in pts:
        u = user[g]
        i = int(g - data.table.offsets[u]) + 1
        wins.append(data.table.histories[u][max(0, i - L):i])
        counts.append(i)
        first.append(data.table.histories[u][0][3])
    full = encode_windows(wins, data.items, data.categories, data.spec, counts, first)
    inc = [j for j, c in enumerate(counts) if is_incremental(c, L)]
    before = encode_windows([wins[j][:-1] for j in inc], data.items, data.categories, data.spec,
                            [counts[j] - 1 for j in inc], [first[j] for j in inc])
    after = encode_windows([wins[j] for j in inc], data.items, data.categories, data.spec,
                           [counts[j] for j in inc], [first[j] for j in inc])
    return full, before, after


def export_and_check(model: InterestModel, art_dir: Path, data: PreparedData) -> dict[str, float]:
    top_k = top_k_of(model)
    export_onnx(model, art_dir, top_k)
    full, before, after = parity_windows(data)
    parity = {"window_onnx_vs_torch": window_parity(model, art_dir, full, top_k)}
    parity.update(step_parity(model, art_dir, before, after, top_k))
    parity.update(chunk_parity(model, art_dir, full, top_k))
    log.info("ONNX parity: %s", parity)
    bad = {k: v for k, v in parity.items() if not v <= 1e-4}
    if bad:
        raise RuntimeError(f"ONNX export does not match PyTorch within 1e-4 (scaled): {bad}")
    np.save(art_dir / USER_VECTORS_FILE, calibration_vectors(model, data))
    return parity


def calibration_vectors(model: InterestModel, data: PreparedData, n: int = 256, seed: int = 0) -> np.ndarray:
    """User vectors at held-out points (validation, else any): the queries an ANN index over this
    model's items calibrates its search breadth on (stream_app/model/ann.py)."""
    return model_hidden(model, data, sample_points(data, VALID, n, seed))


def sample_points(data: PreparedData, role: int, n: int, seed: int) -> np.ndarray:
    """Up to ``n`` target points of ``role`` (any points when the split has none), in order."""
    pts = np.nonzero(data.split.target_role == role)[0]
    if len(pts) == 0:
        pts = np.arange(data.table.n_events)
    return np.sort(np.random.default_rng(seed).choice(pts, min(n, len(pts)), replace=False))


def _dataset_info(data: PreparedData) -> dict[str, object]:
    r, dropped = data.table.report, data.table.dropped_rare
    return {"path": r.path, "kind": r.kind, "sha256": data.table.fingerprint, "lines": r.lines,
            "events": r.events, "bad_lines": r.bad_lines, "bad_reasons": dict(r.bad_reasons),
            "bad_examples": r.bad_examples[:5],
            "users": len(data.table.users), "events_used": data.table.n_events,
            "dropped_rare_item_events": data.table.dropped_rare,
            "dropped_events": {f"item seen < {data.min_item_count} times (leave-one-out)": dropped}
            if dropped else {}}


def warning_threshold(model: InterestModel, data: PreparedData, precision: float = WARNING_PRECISION
                      ) -> dict[str, float | int | None]:
    """The churn-warning threshold calibrated on the validation split's labelled churn points
    (``export/churn_warning.py``)."""
    pts = np.nonzero(data.split.churn_role == VALID)[0]
    risk = torch.sigmoid(churn_logits(model, data, pts)).numpy() if len(pts) else np.zeros(0)
    found = calibrate_warning_threshold(data.table.user_of()[pts], data.table.ts[pts],
                                        data.split.churn_label[pts], risk, precision)
    log.info("churn warning threshold (validation, precision >= %g): %s", precision, found)
    return found


def _report(data: PreparedData, result: TrainResult, test: dict, meta: dict, exclude_history: bool,
            parity: dict[str, float] | None) -> dict:
    report = {
        "model_version": meta["model_version"],
        "dataset": _dataset_info(data),
        "split": data.split.describe(),
        "protocol": {"ranking": "full", "exclude_history": exclude_history, "k": 10,
                     "n_items": len(data.items), "n_categories": len(data.categories),
                     "min_item_count": data.min_item_count, "window_length": data.spec.window_length},
        "test": test,
        "training": {"best_epoch": result.best_epoch, "best_valid": result.best_valid, "curve": result.curve,
                     "seconds": result.seconds, "config": result.config},
    }
    if parity is not None:
        report["parity"] = parity
    return report


def run_train(data_path: Path, art_dir: Path, split_spec: SplitSpec, spec: FeatureSpec, cfg: TrainConfig,
              min_item_count: int, report_dir: Path | None = None, kind: str | None = None) -> Path:
    """Train, write the artifact, export ONNX with the parity check, evaluate on the test split with
    the baselines, write the report; returns the report's Markdown path."""
    data = prepare(data_path, split_spec, spec, min_item_count, kind)
    log.info("%s", data.table.report.summary())
    note = churn_note(data.split, TEST)
    if note:
        log.warning("churn on the test split: %s", note)
    cfg = decide_history(cfg, data)  # train_model would too; the artifact's metadata needs it
    result = train_model(data, cfg)
    extra = {"churn_horizon_ms": split_spec.churn_horizon_ms, "split": data.split.describe(),
             "training_data": _dataset_info(data), "train_config": asdict(cfg),
             "min_item_count": min_item_count, "exclude_history": cfg.exclude_history}
    meta = write_artifact(art_dir, result.model, data.items, data.categories, spec, extra)
    parity = export_and_check(result.model, art_dir, data)
    test = evaluate(result.model, data, TEST, cfg.exclude_history)
    meta["metrics"] = {"test": test, "parity": parity}
    meta["churn_warning"] = warning_threshold(result.model, data)
    meta["training"] = {"best_epoch": result.best_epoch, "seconds": result.seconds, "curve": result.curve}
    write_metadata(art_dir, meta)
    return write_report(_report(data, result, test, meta, cfg.exclude_history, parity),
                        report_dir or art_dir / "report")


def _artifact_data(art_dir: Path, data_path: Path | None) -> tuple[dict, PreparedData]:
    meta = read_metadata(art_dir)
    split = SplitSpec(**{k: meta["split"][k] for k in ("kind", "valid_fraction", "test_fraction",
                                                        "churn_horizon_ms")})
    path = data_path or Path(meta["training_data"]["path"])
    vocabs = (Vocab.load(art_dir / ITEMS_FILE), Vocab.load(art_dir / CATEGORIES_FILE))
    data = prepare(path, split, FeatureSpec.from_dict(meta["feature_spec"]),
                   int(meta.get("min_item_count", 5)), vocabs=vocabs)
    return meta, data


def run_export(art_dir: Path, data_path: Path | None = None) -> dict[str, float]:
    """Re-export the ONNX graphs of an artifact's weights and check parity on real windows."""
    meta, data = _artifact_data(art_dir, data_path)
    parity = export_and_check(load_model(art_dir), art_dir, data)
    meta["schema_version"] = SCHEMA_VERSION  # an older artifact now has every file this version serves
    meta.setdefault("metrics", {})["parity"] = parity
    write_metadata(art_dir, meta)
    return parity


def run_evaluate(art_dir: Path, data_path: Path | None, report_dir: Path) -> Path:
    """Evaluate an artifact (with the baselines) on a dataset under the artifact's split."""
    meta, data = _artifact_data(art_dir, data_path)
    model = load_model(art_dir)
    exclude = bool(meta.get("exclude_history", True))
    test = evaluate(model, data, TEST, exclude)
    t = meta["training"]
    result = TrainResult(model, t["best_epoch"], {}, t["curve"], t["seconds"], meta["train_config"])
    return write_report(_report(data, result, test, meta, exclude, None), report_dir)
