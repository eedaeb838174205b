"""Dataset adapters against the real files in ../shared/data (and a RetailRocket-format file)."""

from __future__ import annotations

import gzip
import hashlib
import json
from collections import Counter
from pathlib import Path

from conftest import shared_data

from stream_app.tools.datasets import LoadReport, detect_kind, read_dataset


def test_taobao_head84k_reports_truncated_last_line_and_delivers_the_rest() -> None:
    path = shared_data("taobao/UserBehavior_head84k.csv")
    report = LoadReport(str(path), "taobao")
    events = list(read_dataset(path, report=report))
    assert detect_kind(path) == "taobao"
    assert report.lines == 84_476
    assert report.bad_lines == 1 and len(events) == 84_475 == report.events
    line_no, reason, text = report.bad_examples[0]
    assert line_no == 84_476 and "4" in reason and text.endswith(",pv")
    assert "1 bad" in report.summary() and "line 84476" in report.summary()
    types = Counter(e.type for e in events)
    # README counts: pv 75,873 (one of them is the truncated line) / cart+fav 6,853 / buy 1,750.
    assert types == {"browse": 75_872, "click": 4_497 + 2_356, "purchase": 1_750}
    assert len({e.user_id for e in events}) == 815
    first = events[0]
    assert (first.event_id, first.user_id, first.item_id, first.category_id, first.ts, first.type) == (
        "taobao:1", "1", "2268318", "2520377", 1_511_544_070_000, "browse")


def test_reload_is_idempotent() -> None:
    path = shared_data("taobao/UserBehavior_10k.csv")
    a = list(read_dataset(path))
    b = list(read_dataset(path, kind="taobao"))
    assert a == b and len(a) == 10_000 and len({e.event_id for e in a}) == 10_000


def test_movielens_gzip_with_genres() -> None:
    path = shared_data("movielens/ml-1m_ratings_partial.dat.gz")
    assert detect_kind(path) == "movielens"
    report = LoadReport(str(path), "movielens")
    n, users, missing_cat = 0, set(), 0
    first = None
    for e in read_dataset(path, report=report):
        first = first or e
        n += 1
        users.add(e.user_id)
        missing_cat += e.category_id is None
    assert n == 487_650 and report.bad_lines == 0 and len(users) == 2999
    assert missing_cat == 0  # every rated movie is in ml-1m_movies.dat
    assert first is not None and first.item_id == "1193" and first.ts == 978_300_760_000
    assert first.category_id == "Drama" and first.type == "browse"


def test_movielens_bad_lines_counted(tmp_path: Path) -> None:
    f = tmp_path / "ratings.dat.gz"
    with gzip.open(f, "wt") as fh:
        fh.write("1::10::5::978300760\n1::11::x::978300761\n2::12::4\n2::13::3::978300999\n")
    report = LoadReport(str(f), "movielens")
    events = list(read_dataset(f, report=report))
    assert [e.item_id for e in events] == ["10", "13"]
    assert all(e.category_id is None for e in events)  # no movies file beside it
    assert report.bad_lines == 2 and [b[0] for b in report.bad_examples] == [2, 3]


def test_diginetica_views_purchases_and_sessions() -> None:
    views = shared_data("diginetica/sample_train-item-views.csv")
    folder = views.parent
    assert detect_kind(views) == "diginetica" and detect_kind(folder) == "diginetica"
    report = LoadReport(str(folder), "diginetica")
    events = list(read_dataset(folder, report=report))
    assert report.bad_lines == 0
    assert Counter(e.type for e in events) == {"browse": 12_391, "purchase": 18_025}
    first = events[0]  # 1;NA;81766;526309;2016-05-09
    assert first.user_id == "session:1" and first.item_id == "81766"
    assert first.ts == 1_462_752_000_000 + 526_309
    with_cat = sum(e.category_id is not None for e in events)
    assert with_cat / len(events) > 0.99
    assert any(not e.user_id.startswith("session:") for e in events)


def test_retailrocket_format(tmp_path: Path) -> None:
    (tmp_path / "events.csv").write_text(
        "timestamp,visitorid,event,itemid,transactionid\n"
        "1433221332117,257597,view,355908,\n"
        "1433224214164,992329,view,248676,\n"
        "1433221999827,111016,addtocart,318965,\n"
        "1433222147345,483625,transaction,253185,14\n"
        "1433222147345,483625,refund,253185,\n"
        "1433222147345,483625,view\n"
    )
    (tmp_path / "item_properties_part1.csv").write_text(
        "timestamp,itemid,property,value\n"
        "1433000000000,355908,categoryid,1173\n"
        "1433222000000,355908,categoryid,999\n"
        "1433000000000,248676,available,1\n"
    )
    assert detect_kind(tmp_path / "events.csv") == "retailrocket"
    report = LoadReport(str(tmp_path), "retailrocket")
    events = list(read_dataset(tmp_path, report=report))
    assert [(e.user_id, e.item_id, e.type) for e in events] == [
        ("257597", "355908", "browse"), ("992329", "248676", "browse"),
        ("111016", "318965", "click"), ("483625", "253185", "purchase")]
    assert events[0].category_id == "1173"  # the value as of the event time, not the later one
    assert events[1].category_id is None and events[0].ts == 1_433_221_332_117
    assert report.bad_lines == 2 and report.lines == 6
    assert "unknown event" in report.bad_examples[0][1]


def test_recording_events_with_rejections_and_cut(tmp_path: Path) -> None:
    from stream_app.recording import RecordedRecord, RecordingWriter

    def click(i: int) -> bytes:
        return json.dumps({"event_id": f"c-{i}", "user_id": "u1", "item_id": f"i{i}", "category_id": "7",
                           "ts": 1_511_561_733_000 + i}).encode()

    path = tmp_path / "r.rec.zst"
    with RecordingWriter(path, ["clicks", "recommendations"], event_topics={"clicks": "click"}) as w:
        w.write(RecordedRecord("clicks", 0, 0, 1, 0, b"u1", click(1)))
        w.write(RecordedRecord("recommendations", 0, 0, 2, 0, b"u1", b"{}"))  # not an input topic
        w.write(RecordedRecord("clicks", 0, 1, 3, 0, b"u1", b"{not json"))
        w.write(RecordedRecord("clicks", 0, 2, 4, 0, b"u1", click(2)))
    assert detect_kind(path) == "recording"
    report = LoadReport(str(path), "recording")
    events = list(read_dataset(path, report=report))
    got = [(e.event_id, e.item_id, e.type) for e in events]
    assert got == [("c-1", "i1", "click"), ("c-2", "i2", "click")]
    assert report.lines == 3 and report.bad_lines == 1 and "malformed_json" in report.bad_examples[0][1]
    cut = tmp_path / "cut.rec.zst"
    cut.write_bytes(path.read_bytes()[:-20])  # the trailer is lost
    report = LoadReport(str(cut), "recording")
    list(read_dataset(cut, report=report))
    assert report.bad_lines >= 1 and "partial" in report.bad_examples[-1][1]


def test_training_data_fingerprint_is_the_published_sha256() -> None:
    """The artifact's training-data fingerprint can be checked against ../shared/data/SHA256SUMS."""
    from export.data import file_fingerprint

    path = shared_data("taobao/UserBehavior_head84k.csv")
    sums = dict(reversed(line.split("  ./", 1)) for line in
                (path.parent.parent / "SHA256SUMS").read_text().splitlines() if line.strip())
    assert file_fingerprint(path) == sums["taobao/UserBehavior_head84k.csv"]
    folder = shared_data("diginetica/train-purchases.csv").parent
    manifest = "".join(f"{sums['diginetica/' + f.name]}  {f.name}\n" for f in sorted(folder.iterdir()))
    assert file_fingerprint(folder) == hashlib.sha256(manifest.encode()).hexdigest()
