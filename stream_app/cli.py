"""The ``interest-tracker`` command line. Heavy imports happen inside each command."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from stream_app.config import Settings

# Settings fields that every service command accepts as --options (env: TRACKER_<NAME>).
COMMON_FIELDS = (
    "broker_url", "broker_profile", "app_id", "partitions", "data_dir", "window_length",
    "metrics_host", "metrics_port", "web_port", "model_dir", "catalog_path",
    "security_protocol", "sasl_mechanism", "sasl_username", "sasl_password",
    "ssl_cafile", "ssl_certfile", "ssl_keyfile", "log_level",
)
# The public dataset formats (stream_app.tools.datasets.FILE_KINDS; a test keeps them in sync).
# "movielens" reads every MovieLens release: ``::``, tab-separated u.data, CSV with or without header.
DATASET_KINDS = ("taobao", "movielens", "diginetica", "retailrocket", "yoochoose")


def settings_options(fields: tuple[str, ...] = COMMON_FIELDS) -> Callable[..., Any]:
    """Add one --option per Settings field; the command receives ``settings: Settings``."""

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def wrapper(**kwargs: Any) -> Any:
            given = {f: kwargs.pop(f) for f in fields if kwargs.get(f) is not None}
            for f in fields:
                kwargs.pop(f, None)
            settings = Settings(**given)
            logging.basicConfig(
                level=settings.log_level.upper(),
                format="%(asctime)s %(levelname)s %(name)s: %(message)s",
            )
            return fn(settings=settings, **kwargs)

        for name in reversed(fields):
            info = Settings.model_fields[name]
            wrapper = click.option(
                "--" + name.replace("_", "-"),
                name,
                default=None,
                help=f"{info.description or name} [env TRACKER_{name.upper()}; "
                f"default {info.default}]",
            )(wrapper)
        return wrapper

    return decorate


@click.group()
@click.version_option(package_name="interest-tracker")
def main() -> None:
    """Real-time streaming interest tracker."""


@main.command()
@settings_options()
def broker(settings: Settings) -> None:
    """Run the embedded Kafka-compatible broker and create the tracker's topics."""
    import time

    from stream_app.broker import running_broker

    with running_broker(settings) as b:
        click.echo(f"embedded broker listening on {b.url}; topics created; Ctrl-C to stop")
        try:
            while b.proc and b.proc.poll() is None:
                time.sleep(1)
        except KeyboardInterrupt:
            pass


@main.command()
@settings_options()
def worker(settings: Settings) -> None:
    """Run one tracker worker (same --app-id = same consumer group)."""
    from stream_app.app import run_worker

    run_worker(settings)


@main.command()
@settings_options()
@click.option("--data", "data_path", default=None, help="a dataset file to replay (Taobao CSV, "
              "MovieLens ratings.dat, ...); generated events when omitted")
@click.option("--duration", type=float, default=None, help="stop after this many seconds")
@click.option("--rate", type=float, default=500.0, show_default=True, help="events/s to send")
@click.option("--limit", type=int, default=None, help="send at most this many events")
def demo(settings: Settings, data_path: str | None, duration: float | None, rate: float,
         limit: int | None) -> None:
    """Broker + worker + a replay of events, printing what comes out."""
    from stream_app.demo import run_demo
    from stream_app.tools.datasets import detect_kind

    if data_path:
        try:
            detect_kind(data_path)
        except (ValueError, OSError) as exc:
            raise click.BadParameter(str(exc), param_hint="--data") from exc
    asyncio.run(run_demo(settings, data_path, duration, rate, limit))


# --- record / replay / datasets / load generation (stream_app/tools) ------------------------


def _print_lines(*lines: str) -> None:
    for line in lines:
        click.echo(line)


@main.command()
@settings_options()
@click.argument("output", type=click.Path(dir_okay=False))
@click.option("--topic", "topics", multiple=True,
              help="topic to record (repeatable); default: the input topics (clicks, browses, purchases)")
@click.option("--all-topics", is_flag=True, help="record the input and the output topics")
@click.option("--from", "from_time", default=None,
              help="first record time: ISO 8601 (UTC if no zone), epoch s or ms; default: earliest")
@click.option("--from-offset", type=int, default=None, help="start every partition at this offset")
@click.option("--to", "to_time", default=None, help="end time (exclusive); default: now (see docs/tools.md)")
@click.option("--idle", type=float, default=2.0, show_default=True,
              help="'now' reached once nothing arrives for this many seconds (embedded broker)")
@click.option("--max-records", type=int, default=None)
@click.option("--progress/--no-progress", default=True, show_default=True)
def record(settings: Settings, output: str, topics: tuple[str, ...], all_topics: bool,
           from_time: str | None, from_offset: int | None, to_time: str | None, idle: float,
           max_records: int | None, progress: bool) -> None:
    """Record topics (all partitions) into a compressed file; Ctrl-C leaves a readable partial file."""
    from stream_app.recording import parse_time
    from stream_app.recording import record as record_topics

    chosen = list(topics) or (settings.all_topics() if all_topics else list(settings.event_topics()))
    summary = asyncio.run(record_topics(
        settings, chosen, output, from_ts=parse_time(from_time) if from_time else None,
        from_offset=from_offset, to_ts=parse_time(to_time) if to_time else None, idle_s=idle,
        progress=progress, max_records=max_records,
    ))
    click.echo(summary.line())


@main.command("recording-info")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
def recording_info(path: str) -> None:
    """Describe a recording: header, records per topic and partition, complete or partial."""
    import collections

    import orjson

    from stream_app.recording import RecordingReader

    reader = RecordingReader(path)
    counts: collections.Counter[tuple[str, int]] = collections.Counter()
    for rec in reader:
        counts[(rec.topic, rec.partition)] += 1
    click.echo(orjson.dumps(reader.header, option=orjson.OPT_INDENT_2).decode())
    for (topic, partition), n in sorted(counts.items()):
        click.echo(f"{topic}[{partition}]: {n}")
    click.echo(reader.status())


@main.command()
@settings_options()
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option("--speed", default="max", show_default=True,
              help="'max' (as fast as possible), or a factor of the original pace (1 = original, 10 = 10x)")
@click.option("--rate", type=float, default=None, help="cap in records/s")
@click.option("--rename", multiple=True, metavar="SRC=DST", help="replay topic SRC into DST (repeatable)")
@click.option("--to-input-topics", is_flag=True,
              help="replay recorded input topics into this configuration's input topics, by event type")
@click.option("--topic", "topics", multiple=True, help="replay only this recorded topic (repeatable)")
@click.option("--shift-to-now", is_flag=True, help="move timestamps so the first record is stamped now")
@click.option("--shift-ms", type=int, default=0, help="move timestamps by this many ms")
@click.option("--partitioning", type=click.Choice(["auto", "original", "key"]), default="auto",
              show_default=True)
@click.option("--limit", type=int, default=None, help="send at most this many records")
@click.option("--progress/--no-progress", default=True, show_default=True)
def replay(settings: Settings, path: str, speed: str, rate: float | None, rename: tuple[str, ...],
           to_input_topics: bool, topics: tuple[str, ...], shift_to_now: bool, shift_ms: int,
           partitioning: str, limit: int | None, progress: bool) -> None:
    """Produce a recording back: same keys, per-partition order, event ids (a worker applies them once)."""
    from stream_app.recording import RecordingReader
    from stream_app.replay import ReplayOptions
    from stream_app.replay import replay as replay_file

    mapping: dict[str, str] = {}
    if to_input_topics:
        with RecordingReader(path) as reader:
            by_type = {etype: topic for topic, etype in settings.event_topics().items()}
            mapping = {t: by_type[etype] for t, etype in reader.header.get("event_topics", {}).items()}
    for pair in rename:
        src, sep, dst = pair.partition("=")
        if not sep or not src or not dst:
            raise click.BadParameter(f"expected SRC=DST, got {pair!r}", param_hint="--rename")
        mapping[src] = dst
    try:
        factor = None if speed == "max" else float(speed)
    except ValueError as exc:
        raise click.BadParameter(f"'max' or a number, got {speed!r}", param_hint="--speed") from exc
    opts = ReplayOptions(
        speed=factor, rate=rate, rename=mapping, topics=list(topics) or None, shift_ms=shift_ms,
        shift_to_now=shift_to_now, partitioning=partitioning,  # type: ignore[arg-type]
        limit=limit, progress=progress,
    )
    click.echo(asyncio.run(replay_file(settings, path, opts)).line())


@main.command("load-dataset")
@settings_options()
@click.argument("path", type=click.Path(exists=True))
@click.option("--kind", type=click.Choice(DATASET_KINDS), default=None,
              help="dataset format; detected from the file's content when omitted")
@click.option("--rate", type=float, default=None, help="events/s (default: as fast as possible)")
@click.option("--limit", type=int, default=None, help="send at most this many events")
@click.option("--progress/--no-progress", default=True, show_default=True)
def load_dataset(settings: Settings, path: str, kind: str | None, rate: float | None, limit: int | None,
                 progress: bool) -> None:
    """Put a public dataset file on the input topics; bad lines are reported, not fatal."""
    from stream_app.loading import load_dataset as load
    from stream_app.tools.datasets import detect_kind

    try:
        kind = kind or detect_kind(path)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="PATH") from exc
    result = asyncio.run(load(settings, path, kind=kind, rate=rate, limit=limit, progress=progress))
    _print_lines(*result.lines())


@main.command()
@settings_options()
@click.option("--users", type=int, default=1000, show_default=True)
@click.option("--items", type=int, default=5000, show_default=True)
@click.option("--categories", type=int, default=50, show_default=True)
@click.option("--seed", type=int, default=7, show_default=True)
@click.option("--days", type=float, default=14.0, show_default=True, help="event-time span")
@click.option("--start", default=None, help="event time of the start (ISO 8601 or epoch); default 2023-11-14")
@click.option("--mean-gap-min", type=float, default=30.0, show_default=True,
              help="mean minutes between one user's events")
@click.option("--drift", type=float, default=0.005, show_default=True,
              help="probability per event that a user's interests shift")
@click.option("--churn", type=float, default=0.1, show_default=True, help="fraction of users who churn")
@click.option("--events", type=int, default=None, help="stop after this many events")
@click.option("--rate", type=float, default=None, help="events/s (default: as fast as possible)")
@click.option("--duration", type=float, default=None, help="stop after this many seconds")
@click.option("--output", type=click.Path(dir_okay=False), default=None,
              help="write a recording file (for replay) instead of producing to the topics")
@click.option("--truth", type=click.Path(dir_okay=False), default=None,
              help="ground-truth JSON; default OUTPUT.truth.json or DATA_DIR/generated/truth-SEED.json")
@click.option("--progress/--no-progress", default=True, show_default=True)
def generate(settings: Settings, users: int, items: int, categories: int, seed: int, days: float,
             start: str | None, mean_gap_min: float, drift: float, churn: float, events: int | None,
             rate: float | None, duration: float | None, output: str | None, truth: str | None,
             progress: bool) -> None:
    """Synthetic workload (drifting interests, churners) at a target rate, with its ground truth."""
    from pathlib import Path

    from stream_app.generate import DAY_MS, GroundTruth, WorkloadSpec, iter_synthetic_events
    from stream_app.generate import write_workload_recording as write_recording
    from stream_app.loading import send_events
    from stream_app.recording import parse_time

    spec = WorkloadSpec(
        users=users, items=items, categories=categories, seed=seed, span_ms=int(days * DAY_MS),
        mean_gap_ms=int(mean_gap_min * 60_000), drift_probability=drift, churn_fraction=churn,
        max_events=events, **({"start_ts_ms": parse_time(start)} if start else {}),
    )
    gt = GroundTruth(spec)
    if output:
        topics = {etype: topic for topic, etype in settings.event_topics().items()}
        n = write_recording(spec, output, topics, settings.partitions, gt)
        click.echo(f"wrote {n} events to {output}")
    else:
        summary = asyncio.run(send_events(
            settings, iter_synthetic_events(spec, gt), rate=rate, duration=duration,
            progress=progress, desc="generate", total=events,
        ))
        click.echo(summary.line("generated"))
    truth_path = Path(truth or (f"{output}.truth.json" if output
                                else settings.data_dir / "generated" / f"truth-{seed}.json"))
    gt.write(truth_path)
    click.echo(f"ground truth: {len(gt.churners)} churners, {len(gt.shifts)} interest shifts -> {truth_path}")


# --- training, export, evaluation (export/) -------------------------------------------------


@main.command()
@click.argument("data", type=click.Path(exists=True, path_type=Path))
@click.option("--out", "out_dir", type=click.Path(path_type=Path), required=True,
              help="model artifact directory to write")
@click.option("--kind", type=click.Choice(DATASET_KINDS), default=None,
              help="dataset format; detected from the file's content when omitted")
@click.option("--split", "split_kind", type=click.Choice(["time", "leave-one-out"]), default="time",
              show_default=True)
@click.option("--valid-fraction", type=float, default=0.1, show_default=True)
@click.option("--test-fraction", type=float, default=0.1, show_default=True)
@click.option("--horizon-hours", type=float, default=168.0, show_default=True,
              help="churn horizon H: no event within H after the newest one")
@click.option("--window-length", type=int, default=50, show_default=True, help="L (the worker's window)")
@click.option("--min-item-count", type=int, default=5, show_default=True,
              help="rarer items share UNKNOWN (time split) or are dropped (leave-one-out)")
@click.option("--exclude-history/--keep-history", default=True, show_default=True,
              help="item ranking excludes the user's past items")
@click.option("--early-stop", default="item_ndcg@10", show_default=True,
              help="validation metric: item_ndcg@10, category_ndcg@10 or churn_roc_auc")
@click.option("--category-weight", type=float, default=0.5, show_default=True,
              help="weight of the next-category loss (the item loss has weight 1)")
@click.option("--churn-weight", type=float, default=0.5, show_default=True)
@click.option("--epochs", type=int, default=60, show_default=True)
@click.option("--patience", type=int, default=5, show_default=True)
@click.option("--batch-size", type=int, default=128, show_default=True)
@click.option("--lr", type=float, default=1e-3, show_default=True)
@click.option("--d-model", type=int, default=64, show_default=True)
@click.option("--layers", type=int, default=2, show_default=True)
@click.option("--heads", type=int, default=2, show_default=True)
@click.option("--dropout", type=float, default=0.2, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--threads", type=int, default=2, show_default=True)
@click.option("--max-minutes", type=float, default=None, help="stop training after this wall time")
@click.option("--report-dir", type=click.Path(path_type=Path), default=None,
              help="where report.json/.md/.png go (default OUT/report)")
def train(data: Path, out_dir: Path, kind: str | None, split_kind: str, valid_fraction: float,
          test_fraction: float, horizon_hours: float, window_length: int, min_item_count: int,
          exclude_history: bool, early_stop: str, category_weight: float, churn_weight: float,
          epochs: int, patience: int, batch_size: int, lr: float,
          d_model: int, layers: int, heads: int, dropout: float, seed: int, threads: int,
          max_minutes: float | None, report_dir: Path | None) -> None:
    """Train the attention model on DATA, export it to ONNX (with a parity check) and evaluate it
    against the baselines on the test split."""
    from export.data import NoEvents
    from export.pipeline import run_train
    from export.splits import SplitSpec
    from export.train import TrainConfig
    from stream_app.features import FeatureSpec
    from stream_app.tools.datasets import detect_kind

    try:
        kind = kind or detect_kind(data)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="DATA") from exc
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    split = SplitSpec(split_kind.replace("-", "_"), valid_fraction, test_fraction,  # type: ignore[arg-type]
                      int(horizon_hours * 3_600_000))
    cfg = TrainConfig(d_model=d_model, n_layers=layers, n_heads=heads, d_ff=4 * d_model, dropout=dropout,
                      category_weight=category_weight, churn_weight=churn_weight,
                      epochs=epochs, batch_size=batch_size, lr=lr, patience=patience,
                      early_stop_metric=early_stop, exclude_history=exclude_history, seed=seed,
                      threads=threads, max_minutes=max_minutes)
    try:
        md = run_train(data, out_dir, split, FeatureSpec(window_length=window_length), cfg, min_item_count,
                       report_dir, kind)
    except NoEvents as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(md.read_text())
    click.echo(f"artifact: {out_dir}  report: {md.parent}")


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



if __name__ == "__main__":
    main()
