"""Tool commands: record / replay / recording-info, load-dataset, generate."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import click

from stream_app.cli.group import main
from stream_app.cli.options import settings_options
from stream_app.core.config import Settings

# The public dataset formats (stream_app.tools.datasets.FILE_KINDS; a test keeps them in sync).
# "movielens" reads every MovieLens release: ``::``, tab-separated u.data, CSV with or without header.
DATASET_KINDS = ("taobao", "movielens", "diginetica", "retailrocket", "yoochoose")


def _print_lines(*lines: str) -> None:
    for line in lines:
        click.echo(line)


@main.command()
@settings_options
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
    from stream_app.tools.recording import parse_time
    from stream_app.tools.recording import record as record_topics

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

    from stream_app.tools.recording import RecordingReader

    reader = RecordingReader(path)
    counts: collections.Counter[tuple[str, int]] = collections.Counter()
    for rec in reader:
        counts[(rec.topic, rec.partition)] += 1
    click.echo(orjson.dumps(reader.header, option=orjson.OPT_INDENT_2).decode())
    for (topic, partition), n in sorted(counts.items()):
        click.echo(f"{topic}[{partition}]: {n}")
    click.echo(reader.status())


@main.command()
@settings_options
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
    from stream_app.tools.recording import RecordingReader
    from stream_app.tools.replay import ReplayOptions
    from stream_app.tools.replay import replay as replay_file

    mapping: dict[str, str] = {}
    if to_input_topics:
        with RecordingReader(path) as reader:
            by_type = settings.topics_by_type()
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
@settings_options
@click.argument("path", type=click.Path(exists=True))
@click.option("--kind", type=click.Choice(DATASET_KINDS), default=None,
              help="dataset format; detected from the file's content when omitted")
@click.option("--rate", type=float, default=None, help="events/s (default: as fast as possible)")
@click.option("--limit", type=int, default=None, help="send at most this many events")
@click.option("--progress/--no-progress", default=True, show_default=True)
def load_dataset(settings: Settings, path: str, kind: str | None, rate: float | None, limit: int | None,
                 progress: bool) -> None:
    """Put a public dataset file on the input topics; bad lines are reported, not fatal."""
    from stream_app.tools.datasets import detect_kind
    from stream_app.tools.loading import load_dataset as load

    try:
        kind = kind or detect_kind(path)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="PATH") from exc
    result = asyncio.run(load(settings, path, kind=kind, rate=rate, limit=limit, progress=progress))
    _print_lines(*result.lines())


@main.command()
@settings_options
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
@click.option("--churn-decline-days", type=float, default=7.0, show_default=True,
              help="churners' activity declines over this long before they stop (0: abrupt stop)")
@click.option("--churn-slowdown", type=float, default=8.0, show_default=True,
              help="churners' gaps at the end of the decline, x their usual gap (1: no slowdown)")
@click.option("--events", type=int, default=None, help="stop after this many events")
@click.option("--rate", type=float, default=None, help="events/s (default: as fast as possible)")
@click.option("--duration", type=float, default=None, help="stop after this many seconds")
@click.option("--output", type=click.Path(dir_okay=False), default=None,
              help="write a recording file (for replay) instead of producing to the topics")
@click.option("--truth", type=click.Path(dir_okay=False), default=None,
              help="ground-truth JSON; default OUTPUT.truth.json or DATA_DIR/generated/truth-SEED.json")
@click.option("--progress/--no-progress", default=True, show_default=True)
def generate(settings: Settings, users: int, items: int, categories: int, seed: int, days: float,
             start: str | None, mean_gap_min: float, drift: float, churn: float,
             churn_decline_days: float, churn_slowdown: float, events: int | None,
             rate: float | None, duration: float | None, output: str | None, truth: str | None,
             progress: bool) -> None:
    """Synthetic workload (drifting interests, churners) at a target rate, with its ground truth."""

    from stream_app.tools.generate import DAY_MS, GroundTruth, WorkloadSpec, iter_synthetic_events
    from stream_app.tools.generate import write_workload_recording as write_recording
    from stream_app.tools.loading import send_events
    from stream_app.tools.recording import parse_time

    spec = WorkloadSpec(
        users=users, items=items, categories=categories, seed=seed, span_ms=int(days * DAY_MS),
        mean_gap_ms=int(mean_gap_min * 60_000), drift_probability=drift, churn_fraction=churn,
        churn_decline_ms=int(churn_decline_days * DAY_MS), churn_slowdown=churn_slowdown,
        max_events=events,
    )
    if start:
        spec = dataclasses.replace(spec, start_ts_ms=parse_time(start))
    gt = GroundTruth(spec)
    if output:
        topics = settings.topics_by_type()
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


