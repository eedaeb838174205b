"""Continuous training end to end on the embedded broker: a worker serves v1 from a directory of
versions; ``interest-tracker retrain`` records the input topics, trains a candidate, beats v1 on
the newest events and publishes it; the worker hot-reloads it. A candidate that does not beat the
version in service by the margin is not published."""

from __future__ import annotations

import asyncio
import gzip
import itertools
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from export.prepare import prepare
from export.splits import SplitSpec
from stream_app.core.config import Settings
from stream_app.kafka.embedded import free_port
from stream_app.model.features import FeatureSpec
from stream_app.service.metrics import scrape
from stream_app.tools.datasets import read_dataset
from tests.conftest import ROOT, shared_data
from tests.integration.conftest import L
from tests.support.artifacts import publish, tiny_artifact
from tests.support.streaming import WorkerProcess, produce, read_topic

pytestmark = [pytest.mark.broker]
# a small recipe: the test is about the loop (record, train, gate, publish, reload), not quality
RECIPE = ["--epochs", "8", "--d-model", "32", "--layers", "1", "--min-item-count", "2",
          "--horizon-hours", "24", "--seed", "0"]
RATINGS = 20_000  # the first users of MovieLens-1M (partial): a clear sequential signal


@pytest.fixture(scope="module")
def movielens(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first RATINGS lines of ../shared/data's MovieLens-1M ratings, with its movies file beside
    them (genres), in a temporary folder."""
    src = shared_data("movielens/ml-1m_ratings_partial.dat.gz")
    folder = tmp_path_factory.mktemp("ml")
    with gzip.open(src, "rt", encoding="latin-1") as fh:
        (folder / "ratings.dat").write_text("".join(itertools.islice(fh, RATINGS)), encoding="latin-1")
    (folder / "movies.dat").symlink_to(src.parent / "ml-1m_movies.dat")
    return folder / "ratings.dat"


def retrain(settings: Settings, *extra: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "stream_app", "retrain", *RECIPE, *extra],
                          env={**settings.to_env(), "PATH": "/usr/bin:/bin"}, cwd=ROOT,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout.strip().splitlines()[-1]


@pytest.mark.timeout(1200)
def test_retrain_publishes_a_better_model_and_the_worker_reloads_it(
        settings: Settings, movielens: Path, tmp_path: Path) -> None:
    versions = tmp_path / "models"
    versions.mkdir()
    data = prepare(movielens, SplitSpec("time"), FeatureSpec(window_length=L), min_item_count=2,
                   progress=False)
    # v1, in service: an untrained model over the same vocabularies (a trained one should beat it)
    publish(tiny_artifact(data, tmp_path / "untrained"), versions, "v1")
    port = free_port()
    # (a dedupe memory above any user's count: MovieLens files are not in time order within a user,
    # and one rating older than a full memory of 512 would be dead-lettered as too late)
    settings = settings.model_copy(update={"model_dir": versions, "window_length": L, "metrics_port": port,
                                           "model_poll_s": 0.5, "dedupe_memory": 4096})
    events = list(read_dataset(movielens))
    later = events[-200:]
    worker = WorkerProcess(settings, tmp_path / "worker.log").start()
    try:
        asyncio.run(produce(settings, events[:-200]))
        asyncio.run(read_topic(settings, settings.topic_recommendations, expect=len(events) - 200,
                               timeout_s=600))
        started = time.monotonic()
        line = retrain(settings)
        print(f"\n{line} ({time.monotonic() - started:.0f} s)")
        assert "published v" in line, line
        published = [p for p in versions.iterdir() if p.name not in ("v1",) and not p.name.startswith(".")]
        assert len(published) == 1
        new = published[0].name
        deadline = time.monotonic() + 120
        while scrape("127.0.0.1", port).get(("tracker_model_info", (("name", "attention"), ("version", new))),
                                            0) < 1:
            assert worker.alive and time.monotonic() < deadline, worker.log()[-3000:]
            time.sleep(0.5)
        asyncio.run(produce(settings, later))
        recs = asyncio.run(read_topic(settings, settings.topic_recommendations, expect=len(events),
                                      timeout_s=600))
        ids = {e.event_id for e in later}
        got = {orjson.loads(r.value)["model"]["version"] for r in recs
               if orjson.loads(r.value)["trigger"]["event_id"] in ids}
        assert got == {new}
        # the same data again, but the gate asks for more than any model can gain: not published
        line = retrain(settings, "--margin", "1.0")
        print(line)
        assert "not published (gate)" in line and f"serving {new}" in line
        assert sorted(p.name for p in versions.iterdir()) == sorted(["v1", new])
    finally:
        worker.stop()
