"""``replay`` against the real embedded broker: lossless round trips, cut files, shifting, pace.
(The same worker outputs whatever the replay speed: tests/test_replay_worker.py.)"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson
import pytest

from stream_app.core.config import Settings
from stream_app.kafka.admin import create_topics
from stream_app.kafka.clients import make_producer
from stream_app.tools.recording import RecordingReader, record
from stream_app.tools.replay import ReplayOptions, replay
from tests.support.streaming import produce_mixed
from tests.support.topic_reader import read_topics

pytestmark = [pytest.mark.broker, pytest.mark.both_engines]


def renamed(settings: Settings, topics: list[str], suffix: str) -> dict[str, str]:
    return {t: f"{t}-{suffix}" for t in topics}


def fields(msg: Any) -> tuple[Any, ...]:
    return msg.key, msg.value, tuple(msg.headers or ()), msg.timestamp


def test_record_replay_round_trip_is_lossless(settings: Settings, tmp_path: Path) -> None:
    topics = [settings.topic_clicks, settings.topic_browses]
    asyncio.run(produce_mixed(settings, topics[0], 3000))
    asyncio.run(produce_mixed(settings, topics[1], 1000, ts0=1_650_000_000_000))
    original = asyncio.run(read_topics(settings, topics, expected=4000))
    path = tmp_path / "r.rec.zst"
    asyncio.run(record(settings, topics, path, idle_s=1.0))

    rename = renamed(settings, topics, "copy")
    summary = asyncio.run(replay(settings, path, ReplayOptions(rename=rename)))
    assert summary.sent == 4000 and summary.recording_status == "complete: 4000 records"
    copy = asyncio.run(read_topics(settings, list(rename.values()), expected=4000))
    assert sum(len(m) for m in copy.values()) == 4000
    for (topic, partition), msgs in original.items():
        assert [fields(m) for m in copy[(rename[topic], partition)]] == [fields(m) for m in msgs], (
            f"{topic}[{partition}] differs after record -> replay")

    # Into a topic with another partition count: placed by key, each key's order kept.
    other = Settings(**{**settings.model_dump(), "partitions": 3})
    asyncio.run(create_topics(other, [f"{topics[0]}-p3"], 3))
    asyncio.run(replay(other, path, ReplayOptions(rename={topics[0]: f"{topics[0]}-p3"}, topics=[topics[0]])))
    three = asyncio.run(read_topics(settings, [f"{topics[0]}-p3"], expected=3000))
    assert len(three) == 3

    def per_key(parts: dict[tuple[str, int], list[Any]], topic: str) -> dict[bytes, list[Any]]:
        out: dict[bytes, list[Any]] = defaultdict(list)
        for (t, _), msgs in parts.items():
            for m in msgs:
                if t == topic and m.key is not None:
                    out[m.key].append(fields(m))
        return out

    assert per_key(three, f"{topics[0]}-p3") == per_key(original, topics[0])


def test_cut_recording_replays_what_it_holds(settings: Settings, tmp_path: Path) -> None:
    topic = settings.topic_clicks
    asyncio.run(produce_mixed(settings, topic, 20_000))
    path = tmp_path / "r.rec.zst"
    asyncio.run(record(settings, [topic], path, idle_s=1.0))
    cut = tmp_path / "cut.rec.zst"
    data = path.read_bytes()
    cut.write_bytes(data[: int(len(data) * 0.6)])
    reader = RecordingReader(cut)
    held = list(reader)
    assert 0 < len(held) < 20_000

    summary = asyncio.run(replay(settings, cut, ReplayOptions(rename={topic: topic + "-cut"})))
    assert summary.sent == len(held)
    assert summary.recording_status == f"partial: {len(held)} records, file was cut (no trailer)"
    got = asyncio.run(read_topics(settings, [topic + "-cut"], expected=len(held)))
    expected: dict[int, list[Any]] = defaultdict(list)
    for r in held:
        expected[r.partition].append((r.key, r.value, r.headers, r.timestamp))
    for (_, partition), msgs in got.items():
        assert [fields(m) for m in msgs] == expected[partition]


async def _send_events_with_ts(settings: Settings, n: int, ts0: int, step_ms: int) -> None:
    await create_topics(settings, [settings.topic_clicks])
    producer = make_producer(settings)
    await producer.start()
    for i in range(n):
        ts, user = ts0 + i * step_ms, f"u{i % 3}"
        value = orjson.dumps({"event_id": f"e{i}", "user_id": user, "item_id": "i1", "ts": ts})
        await producer.send(settings.topic_clicks, value, key=user.encode(), timestamp_ms=ts)
    await producer.stop()


def test_shift_to_now_moves_record_and_event_time_alike(settings: Settings, tmp_path: Path) -> None:
    ts0 = 1_600_000_000_000
    asyncio.run(_send_events_with_ts(settings, 60, ts0, 1000))
    path = tmp_path / "r.rec.zst"
    asyncio.run(record(settings, [settings.topic_clicks], path, idle_s=1.0))
    before = int(time.time() * 1000)
    target = settings.topic_clicks + "-now"
    summary = asyncio.run(replay(settings, path, ReplayOptions(rename={settings.topic_clicks: target},
                                                               shift_to_now=True)))
    shift = summary.shift_ms
    assert before - ts0 <= shift <= int(time.time() * 1000) - ts0
    got = [m for msgs in asyncio.run(read_topics(settings, [target], expected=60)).values() for m in msgs]
    assert len(got) == 60
    for m in got:
        v = orjson.loads(m.value)
        i = int(v["event_id"][1:])
        assert v["ts"] == ts0 + i * 1000 + shift == m.timestamp  # value and record time moved alike
        assert v["user_id"] == m.key.decode() == f"u{i % 3}"


def test_replay_pace_follows_event_time(settings: Settings, tmp_path: Path) -> None:
    # 40 events over 3.9 s of event time.
    asyncio.run(_send_events_with_ts(settings, 40, 1_600_000_000_000, 100))
    path = tmp_path / "r.rec.zst"
    asyncio.run(record(settings, [settings.topic_clicks], path, idle_s=1.0))
    target = {settings.topic_clicks: settings.topic_clicks + "-paced"}
    fast = asyncio.run(replay(settings, path, ReplayOptions(rename=target)))
    paced = asyncio.run(replay(settings, path, ReplayOptions(rename=target, speed=3.0)))
    assert fast.seconds < 0.8
    assert 1.2 <= paced.seconds < 2.5  # 3.9 s / 3
    limited = asyncio.run(replay(settings, path, ReplayOptions(rename=target, rate=40)))
    assert 0.9 <= limited.seconds < 1.8  # 40 records at 40/s
