"""Training commands: train, retrain, export, evaluate (the offline side, in export/)."""

from __future__ import annotations

import asyncio
import functools
import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from stream_app.cli.group import main
from stream_app.cli.options import settings_options
from stream_app.cli.tools import DATASET_KINDS
from stream_app.core.config import Settings


@dataclass
class Recipe:
    """The training recipe from the command line (export's SplitSpec and TrainConfig)."""

    split: Any
    cfg: Any
    min_item_count: int
    kind: str | None


RECIPE_OPTIONS = (
    click.option("--kind", type=click.Choice(DATASET_KINDS), default=None,
                 help="dataset format; detected from the file's content when omitted"),
    click.option("--valid-fraction", type=float, default=0.1, show_default=True),
    click.option("--test-fraction", type=float, default=0.1, show_default=True),
    click.option("--horizon-hours", type=float, default=168.0, show_default=True,
                 help="churn horizon H: no event within H after the newest one"),
    click.option("--min-item-count", type=int, default=5, show_default=True,
                 help="rarer items share UNKNOWN (time split) or are dropped (leave-one-out)"),
    click.option("--exclude-history/--keep-history", default=None,
                 help="whether the item ranking excludes the user's past items; by default excluded "
                      "when under 1% of the training events repeat an item of the user's "
                      "(MovieLens), kept otherwise (Taobao, Diginetica)"),
    click.option("--early-stop", default="combined", show_default=True,
                 help="validation metric: combined (the mean skill over the best baselines of item "
                      "NDCG@10, category NDCG@10 and churn ROC-AUC), item_ndcg@10, category_ndcg@10 "
                      "or churn_roc_auc"),
    click.option("--category-weight", type=float, default=0.5, show_default=True,
                 help="weight of the next-category loss (the item loss has weight 1)"),
    click.option("--churn-weight", type=float, default=0.5, show_default=True),
    click.option("--epochs", type=int, default=60, show_default=True),
    click.option("--patience", type=int, default=5, show_default=True),
    click.option("--batch-size", type=int, default=None,
                 help="segments per step; by default 128, fewer (down to 16) when an epoch would "
                      "take under 50 steps"),
    click.option("--lr", type=float, default=2e-3, show_default=True),
    click.option("--d-model", type=int, default=64, show_default=True),
    click.option("--layers", type=int, default=2, show_default=True),
    click.option("--heads", type=int, default=2, show_default=True),
    click.option("--dropout", type=float, default=0.2, show_default=True),
    click.option("--seed", type=int, default=0, show_default=True),
    click.option("--threads", type=int, default=2, show_default=True),
    click.option("--max-minutes", type=float, default=None, help="stop training after this wall time"),
)


def recipe_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The training recipe's options (one definition for train and retrain); the command receives
    them as ``recipe_args`` for :func:`make_recipe`."""

    names: list[str] = []

    @functools.wraps(fn)
    def wrapper(**kwargs: Any) -> Any:
        return fn(recipe_args={name: kwargs.pop(name) for name in names}, **kwargs)

    for option in reversed(RECIPE_OPTIONS):
        wrapper = option(wrapper)
    names.extend(p.name for p in wrapper.__click_params__)  # type: ignore[attr-defined]  # only these yet
    return wrapper


def make_recipe(data: Path, split_kind: str, a: dict[str, Any]) -> Recipe:
    from export.splits import SplitSpec
    from export.train import TrainConfig
    from stream_app.tools.datasets import detect_kind

    try:
        kind = a["kind"] or detect_kind(data)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="DATA") from exc
    split = SplitSpec(split_kind.replace("-", "_"), a["valid_fraction"], a["test_fraction"],
                      int(a["horizon_hours"] * 3_600_000))
    cfg = TrainConfig(d_model=a["d_model"], n_layers=a["layers"], n_heads=a["heads"], d_ff=4 * a["d_model"],
                      dropout=a["dropout"], category_weight=a["category_weight"],
                      churn_weight=a["churn_weight"], epochs=a["epochs"], batch_size=a["batch_size"],
                      lr=a["lr"], patience=a["patience"], early_stop_metric=a["early_stop"],
                      exclude_history=a["exclude_history"], seed=a["seed"], threads=a["threads"],
                      max_minutes=a["max_minutes"])
    return Recipe(split, cfg, a["min_item_count"], kind)


@main.command()
@click.argument("data", type=click.Path(exists=True, path_type=Path))
@click.option("--out", "out_dir", type=click.Path(path_type=Path), required=True,
              help="model artifact directory to write")
@click.option("--split", "split_kind", type=click.Choice(["time", "leave-one-out"]), default="time",
              show_default=True)
@click.option("--window-length", type=int, default=50, show_default=True, help="L (the worker's window)")
@click.option("--report-dir", type=click.Path(path_type=Path), default=None,
              help="where report.json/.md/.png go (default OUT/report)")
@recipe_options
def train(data: Path, out_dir: Path, split_kind: str, window_length: int, report_dir: Path | None,
          recipe_args: dict[str, Any]) -> None:
    """Train the attention model on DATA, export it to ONNX (with a parity check) and evaluate it
    against the baselines on the test split."""
    from export.data import NoEvents
    from export.pipeline import run_train
    from stream_app.model.features import FeatureSpec

    r = make_recipe(data, split_kind, recipe_args)
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        md = run_train(data, out_dir, r.split, FeatureSpec(window_length=window_length), r.cfg,
                       r.min_item_count, report_dir, r.kind)
    except NoEvents as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(md.read_text())
    click.echo(f"artifact: {out_dir}  report: {md.parent}")


@main.command()
@settings_options
@click.argument("data", type=click.Path(exists=True, path_type=Path), required=False)
@click.option("--margin", type=float, default=0.002, show_default=True,
              help="publish only if the candidate's item NDCG@10 beats the serving version's by this")
@click.option("--idle", type=float, default=2.0, show_default=True,
              help="without DATA: the input topics are recorded until nothing arrives for this long")
@recipe_options
def retrain(settings: Settings, data: Path | None, margin: float, idle: float,
            recipe_args: dict[str, Any]) -> None:
    """Train on the newest data (DATA: a recording or dataset file; default: a recording of the
    input topics made now), evaluate against the version in service (TRACKER_MODEL_DIR, a directory
    of versions) on the newest events, and publish it there only if it wins by --margin: workers
    hot-reload it (docs/model.md)."""
    from export.data import NoEvents
    from export.retrain import retrain as run_retrain
    from stream_app.tools.recording import record as record_topics

    if settings.model_dir is None:
        raise click.UsageError("--model-dir (TRACKER_MODEL_DIR): the workers' directory of versions")
    with tempfile.TemporaryDirectory(prefix="retrain-data-") as tmp:
        if data is None:
            data = Path(tmp) / "inputs.rec.zst"
            click.echo(asyncio.run(record_topics(settings, list(settings.event_topics()), data,
                                                 idle_s=idle)).line())
        r = make_recipe(data, "time", recipe_args)
        try:
            result = run_retrain(data, settings.model_dir, r.split, r.cfg, r.min_item_count,
                                 settings.window_length, margin, r.kind)
        except NoEvents as exc:
            raise click.ClickException(str(exc)) from exc
    click.echo(result.line())


@main.command("export")
@click.argument("artifact", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--data", type=click.Path(exists=True, path_type=Path), default=None,
              help="dataset for the parity check's real windows (default: the training data)")
def export_cmd(artifact: Path, data: Path | None) -> None:
    """Re-export an artifact's weights to ONNX and check parity with PyTorch (max abs diff <= 1e-4)."""
    from export.pipeline import run_export

    for k, v in run_export(artifact, data).items():
        click.echo(f"{k}: {v:.2e}")


@main.command("evaluate")
@click.argument("artifact", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--data", type=click.Path(exists=True, path_type=Path), default=None,
              help="dataset (default: the training data), split as in the artifact")
@click.option("--report-dir", type=click.Path(path_type=Path), required=True)
def evaluate_cmd(artifact: Path, data: Path | None, report_dir: Path) -> None:
    """Evaluate a model artifact and the baselines on the test split; writes the report."""
    from export.pipeline import run_evaluate

    click.echo(run_evaluate(artifact, data, report_dir).read_text())



# The demo model's training settings: small and fast (a few minutes on 2 CPU cores), fixed seed.
DEMO_TRAIN_ARGS = dict(horizon_hours=24.0, valid_fraction=0.25, test_fraction=0.1, min_item_count=2,
                       d_model=32, layers=2, heads=2, dropout=0.1, epochs=30, patience=8, batch_size=64,
                       lr=3e-3, seed=0, threads=1,
                       # as when the packaged model was built (before these became rules of the recipe)
                       early_stop="item_ndcg@10", exclude_history=True)


@main.command("build-demo-model")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="where the served files go (default: the package's stream_app/model/demo_artifact)")
@click.option("--work-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="keep the workload recording, the full artifact and its report here (default: a "
                   "temporary directory)")
@click.pass_context
def build_demo_model(ctx: click.Context, out_dir: Path | None, work_dir: Path | None) -> None:
    """Train the demo model on the demo's own synthetic workload and write it as package data.

    Generates `interest-tracker demo`'s workload (stream_app.tools.demo.DEMO_WORKLOAD) to a
    recording file, runs `train` on it with fixed, small settings, and copies the files a worker
    serves (ONNX graphs, item table, vocabularies, metadata) plus the report and the workload spec to
    OUT. Needs the training extras (torch); serving the result needs onnxruntime only."""
    import json
    import shutil
    import tempfile

    from stream_app.core.config import Settings
    from stream_app.model.artifact import DEMO_ARTIFACT_DIR, REQUIRED_FILES
    from stream_app.tools.demo import DEMO_WORKLOAD
    from stream_app.tools.generate import write_workload_recording

    out_dir = out_dir or DEMO_ARTIFACT_DIR
    with tempfile.TemporaryDirectory(prefix="demo-model-") as tmp:
        work = work_dir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        data = work / "demo-workload.rec.zst"
        settings = Settings.model_validate({})  # topic names and partitions from TRACKER_* or defaults
        n = write_workload_recording(DEMO_WORKLOAD, data, settings.topics_by_type(), settings.partitions)
        click.echo(f"demo workload: {n} events -> {data}")
        artifact = work / "demo"
        if artifact.exists():
            shutil.rmtree(artifact)
        ctx.invoke(train, data=data, out_dir=artifact, **DEMO_TRAIN_ARGS)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        out_dir.mkdir(parents=True)
        for name in REQUIRED_FILES:
            shutil.copy2(artifact / name, out_dir / name)
        shutil.copy2(artifact / "report" / "report.md", out_dir / "report.md")
        (out_dir / "workload.json").write_text(json.dumps(DEMO_WORKLOAD.to_json(), indent=2) + "\n")
    size = sum(f.stat().st_size for f in out_dir.iterdir())
    click.echo(f"demo model: {out_dir} ({size / 1e6:.2f} MB)")
