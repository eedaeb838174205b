"""Recording files and the ``record`` command, against the real embedded broker."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stream_app.core.config import Settings
from stream_app.core.events import Event
from stream_app.kafka.admin import create_topics
from stream_app.kafka.clients import encode_event, make_producer
from stream_app.tools.recording import (
    RecordedRecord,
    RecordingError,
    RecordingReader,
    RecordingWriter,
    iter_recorded_events,
    parse_time,
    record,
)
from tests.support import ROOT
from tests.support.streaming import produce_mixed

pytestmark = pytest.mark.both_engines  # the tests that need a broker (tests/conftest.py)


def read_all(path: Path) -> tuple[list[RecordedRecord], RecordingReader]:
    reader = RecordingReader(path)
    return list(reader), reader


def test_file_format_keeps_every_field(tmp_path: Path) -> None:
    records = [
        RecordedRecord("a", 0, 0, 1, 0, None, None),
        RecordedRecord("a", 3, 7, 2, 1, b"", b"", (("h", None), ("", b""))),
        RecordedRecord("b-topic", 1, 2**40, -1, 0, b"\x00\xff", os.urandom(70_000), (("x", b"\x01"),)),
        RecordedRecord("a", 0, 1, 10**13, 0, "ключ".encode(), b'{"ts": 1}', (("ü", "ß".encode()),)),
    ]
    path = tmp_path / "r.rec.zst"
    with RecordingWriter(path, ["a", "b-topic"], partitions={"a": 4, "b-topic": 2}) as w:
        for r in records:
            w.write(r)
    got, reader = read_all(path)
    assert got == records
    assert reader.status() == "complete: 4 records" and reader.complete
    assert reader.trailer is not None and reader.trailer["offsets"]["a"] == {"0": [0, 1, 2], "3": [7, 7, 1]}
    assert reader.header["partitions"] == {"a": 4, "b-topic": 2}


def test_not_a_recording_is_an_error(tmp_path: Path) -> None:
    bad = tmp_path / "x.csv"
    bad.write_text("1,2,3\n")
    with pytest.raises(RecordingError):
        RecordingReader(bad)


def test_parse_time() -> None:
    assert parse_time("1700000000") == parse_time("1700000000000") == 1_700_000_000_000
    assert parse_time("2023-11-14T22:13:20Z") == parse_time("2023-11-14T22:13:20") == 1_700_000_000_000
    assert parse_time("2023-11-14T23:13:20+01:00") == 1_700_000_000_000


def test_cut_file_yields_what_it_holds(settings: Settings, tmp_path: Path) -> None:
    topic = settings.topic_clicks
    asyncio.run(produce_mixed(settings, topic, 30_000))
    path = tmp_path / "full.rec.zst"
    summary = asyncio.run(record(settings, [topic], path, idle_s=1.0))
    assert summary.records == 30_000 and summary.status == "complete"
    full, reader = read_all(path)
    assert len(full) == 30_000 and reader.complete
    data = path.read_bytes()
    held = []
    for cut in (len(data) // 3, int(len(data) * 0.77), len(data) - 1):
        part = tmp_path / f"cut-{cut}.rec.zst"
        part.write_bytes(data[:cut])
        got, r = read_all(part)
        assert got == full[: len(got)], "a cut file must hold an exact prefix"
        assert r.status().startswith(f"partial: {len(got)} records, file was cut")
        assert not r.complete
        held.append(len(got))
    # A third of the file holds records (blocks are flushed as it grows); more of it holds more.
    assert 0 < held[0] < held[1] <= held[2] <= 30_000


def test_record_time_window_and_offsets(settings: Settings, tmp_path: Path) -> None:
    topic = settings.topic_browses
    ts0 = 1_600_000_000_000
    asyncio.run(produce_mixed(settings, topic, 400, ts0))
    window = tmp_path / "window.rec.zst"
    asyncio.run(record(settings, [topic], window, from_ts=ts0 + 100, to_ts=ts0 + 300, idle_s=1.0))
    got, _ = read_all(window)
    assert sorted(r.timestamp - ts0 for r in got) == list(range(100, 300))
    late = tmp_path / "offsets.rec.zst"
    asyncio.run(record(settings, [topic], late, from_offset=50, idle_s=1.0))
    got, reader = read_all(late)
    assert got and min(r.offset for r in got) == 50
    assert all(r.offset >= 50 for r in got)
    assert reader.trailer is not None
    ranges = reader.trailer["offsets"][topic]
    assert sum(count for _, _, count in ranges.values()) == len(got)
    assert all(first == 50 for first, _, _ in ranges.values())


def test_recorded_events_are_the_input_events(settings: Settings, tmp_path: Path) -> None:
    events = [Event(f"e{i}", f"u{i % 5}", f"i{i}", "c1", 1_700_000_000_000 + i, "purchase", 9.5, 2)
              for i in range(200)]

    async def send() -> None:
        await create_topics(settings, [settings.topic_purchases, settings.topic_dead_letters])
        producer = make_producer(settings)
        await producer.start()
        for ev in events:
            key, value = encode_event(ev)
            await producer.send(settings.topic_purchases, value, key=key)
        await producer.send(settings.topic_purchases, b"not json", key=b"u1")
        await producer.send(settings.topic_dead_letters, b"{}", key=b"u1")  # not an input topic
        await producer.stop()

    asyncio.run(send())
    path = tmp_path / "p.rec.zst"
    asyncio.run(record(settings, [settings.topic_purchases, settings.topic_dead_letters], path, idle_s=1.0))
    rejected: list[object] = []
    got = list(iter_recorded_events(path, rejected))
    by_user = lambda evs: {u: [e for e in evs if e.user_id == u] for u in {e.user_id for e in evs}}  # noqa: E731
    assert by_user(got) == by_user(events)
    assert len(rejected) == 1


def test_record_stopped_by_sigterm_leaves_a_readable_file(settings: Settings, tmp_path: Path) -> None:
    topic = settings.topic_clicks
    asyncio.run(produce_mixed(settings, topic, 2000))
    path = tmp_path / "stopped.rec.zst"
    env = {**os.environ, "TRACKER_BROKER_URL": settings.broker_url, "TRACKER_LOG_LEVEL": "warning"}
    # --idle 600: without the signal it would wait ten minutes for more records.
    proc = subprocess.Popen(
        [sys.executable, "-m", "stream_app", "record", str(path), "--topic", topic, "--idle", "600",
         "--no-progress"], env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and (not path.exists() or path.stat().st_size < 10_000):
            time.sleep(0.2)
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=15)
    finally:
        proc.kill()
    assert proc.returncode == 0, err.decode()[-2000:]
    assert b"recorded 2000 records" in out and b"interrupted" in out
    got, reader = read_all(path)
    assert len(got) == 2000
    assert reader.status() == "partial: 2000 records, recording was interrupted"
