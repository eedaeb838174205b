"""Continuous training: train on the newest data, publish only if it beats the model in service.

``interest-tracker retrain`` (stream_app/cli/training.py) calls :func:`retrain` with the workers'
directory of versions (``TRACKER_MODEL_DIR``; :mod:`stream_app.model.versions`) and a recording of
the input topics (or a dataset file). The candidate is trained with the documented recipe under a
time split, so its validation and test periods are the newest events; then the candidate and the
version in service are evaluated on the same test points, each through its own vocabularies (items
the serving model never saw count against it: that is what retraining is for), with the protocol of
``evaluate``. The candidate is published into the directory of versions (hidden name, then one
rename; the workers hot-reload it) only if its item NDCG@10 is higher by at least ``margin``.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from export.artifact import load_model
from export.evaluate import evaluate_model
from export.pipeline import run_train
from export.prepare import prepare
from export.splits import TEST, SplitSpec
from export.train import TrainConfig
from stream_app.model.artifact import (
    CATEGORIES_FILE,
    ITEMS_FILE,
    ArtifactError,
    check_artifact,
    read_metadata,
    write_metadata,
)
from stream_app.model.features import FeatureSpec, Vocab
from stream_app.model.versions import ModelVersions

log = logging.getLogger(__name__)
GATE_METRIC = "item_ndcg@10"


@dataclass
class RetrainResult:
    candidate_score: float
    serving: Path | None  # the version in service when retraining started
    serving_score: float | None
    margin: float
    published: Path | None  # the new version's directory, None when the gate refused it
    test_points: int

    def line(self) -> str:
        cand = f"candidate {GATE_METRIC} {self.candidate_score:.4f}"
        if self.serving is None:
            versus = "no version in service"
        else:
            versus = (f"serving {self.serving.name} {self.serving_score:.4f}, "
                      f"margin {self.margin:+.4f} required")
        verdict = f"published {self.published.name}" if self.published else "not published (gate)"
        return f"retrain on {self.test_points} test points: {cand} vs {versus}: {verdict}"


def serving_version(root: Path, window_length: int) -> Path | None:
    """The version the workers serve: the newest one that passes the artifact check."""
    for path in ModelVersions(root).candidates(None):
        try:
            check_artifact(path, window_length)
            return path
        except ArtifactError as exc:
            log.warning("skipping version %s: %s", path.name, exc)
    return None


def score_on(art_dir: Path, data_path: Path, split: SplitSpec, min_item_count: int,
             exclude_history: bool) -> float:
    """``GATE_METRIC`` of an artifact on ``data_path``'s test period, through its own vocabularies
    (the candidate's protocol: same split, same history exclusion)."""
    meta = read_metadata(art_dir)
    vocabs = (Vocab.load(art_dir / ITEMS_FILE), Vocab.load(art_dir / CATEGORIES_FILE))
    data = prepare(data_path, split, FeatureSpec.from_dict(meta["feature_spec"]),  # type: ignore[arg-type]
                   min_item_count, vocabs=vocabs, progress=False)
    return float(evaluate_model(load_model(art_dir), data, TEST, exclude_history)[GATE_METRIC])


def publish(candidate: Path, root: Path) -> Path:
    """Copy ``candidate`` into the directory of versions under a new, newest name: a hidden copy,
    then one rename (a worker never sees half an artifact)."""
    name = f"v{datetime.now(UTC):%Y%m%dT%H%M%S%f}"
    hidden = root / f".{name}.tmp"
    shutil.copytree(candidate, hidden)
    meta = read_metadata(hidden)
    meta["model_version"] = name  # the version in every output is the directory's name
    write_metadata(hidden, meta)
    return hidden.rename(root / name)


def retrain(data_path: Path, root: Path, split: SplitSpec, cfg: TrainConfig, min_item_count: int,
            window_length: int, margin: float, kind: str | None = None) -> RetrainResult:
    if split.kind != "time":
        raise ValueError("retrain evaluates on the newest events: it needs the time split")
    root.mkdir(parents=True, exist_ok=True)
    serving = serving_version(root, window_length)
    with tempfile.TemporaryDirectory(prefix=".retrain-", dir=root) as work:
        # inside the directory of versions, hidden from the workers: publishing copies within one
        # file system
        candidate = Path(work) / "candidate"
        run_train(data_path, candidate, split, FeatureSpec(window_length=window_length), cfg,
                  min_item_count, Path(work) / "report", kind)
        meta = read_metadata(candidate)
        test = meta["metrics"]["test"]  # type: ignore[index]
        cand_score = float(test["model"][GATE_METRIC])
        points = int(test["_points"]["targets"])
        serv_score = (score_on(serving, data_path, split, min_item_count, bool(meta["exclude_history"]))
                      if serving else None)
        wins = serv_score is None or cand_score >= serv_score + margin
        published = publish(candidate, root) if wins else None
    result = RetrainResult(cand_score, serving, serv_score, margin, published, points)
    log.info("%s", result.line())
    return result
