"""``load-dataset`` on the real Taobao sample, against the real embedded broker."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

from stream_app.cli import main
from stream_app.core.config import Settings
from tests.conftest import shared_data
from tests.support.topic_reader import read_topics

pytestmark = pytest.mark.broker


def test_taobao_sample_every_valid_line_delivered_truncated_one_reported(settings: Settings) -> None:
    path = shared_data("taobao/UserBehavior_head84k.csv")
    lines = path.read_text().splitlines()
    assert len(lines) == 84_476 and len(lines[-1].split(",")) == 4  # the file's known truncated line
    result = CliRunner(env=settings.to_env()).invoke(main, ["load-dataset", str(path), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "84476 lines, 84475 events, 1 bad" in result.output
    assert "line 84476: " in result.output and repr(lines[-1]) in result.output
    assert "loaded 84475 events" in result.output

    got = asyncio.run(read_topics(settings, list(settings.event_topics()), expected=84_475, timeout=60))
    behaviours = {settings.topic_browses: {"pv"}, settings.topic_clicks: {"cart", "fav"},
                  settings.topic_purchases: {"buy"}}
    # (user, topic) -> (line number, ts): order is defined per key within one topic.
    delivered: dict[tuple[str, str], list[tuple[int, int]]] = defaultdict(list)
    for (topic, _), msgs in got.items():
        for m in msgs:
            v = orjson.loads(m.value)
            assert m.key.decode() == v["user_id"]
            delivered[(v["user_id"], topic)].append((int(v["event_id"].split(":")[1]), v["ts"]))
    assert sum(map(len, delivered.values())) == 84_475
    # Every valid line arrived once, on its behaviour's topic, keyed by its user, in file order.
    expected: dict[tuple[str, str], list[tuple[int, int]]] = defaultdict(list)
    for n, line in enumerate(lines[:-1], start=1):
        user, _, _, behaviour, ts = line.split(",")
        topic = next(t for t, names in behaviours.items() if behaviour in names)
        expected[(user, topic)].append((n, int(ts) * 1000))
    assert delivered == expected


def test_load_rate_and_limit(settings: Settings) -> None:
    path = shared_data("taobao/UserBehavior_10k.csv")
    result = CliRunner(env=settings.to_env()).invoke(
        main, ["load-dataset", str(path), "--limit", "1000", "--rate", "800", "--no-progress"])
    assert result.exit_code == 0, result.output
    line = next(x for x in result.output.splitlines() if x.startswith("loaded 1000 events"))
    seconds = float(line.split(" in ")[1].split(" s ")[0])
    assert 1.1 <= seconds < 2.5  # 1,000 events at 800/s
    got = asyncio.run(read_topics(settings, list(settings.event_topics()), expected=1000))
    assert sum(map(len, got.values())) == 1000


def test_unknown_file_is_a_clear_error(settings: Settings, tmp_path: Path) -> None:
    bad = tmp_path / "notes.txt"
    bad.write_text("hello\n")
    result = CliRunner(env=settings.to_env()).invoke(main, ["load-dataset", str(bad), "--no-progress"])
    assert result.exit_code == 2 and "Invalid value for PATH" in result.output, result.output
