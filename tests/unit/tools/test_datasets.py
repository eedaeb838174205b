"""Dataset adapters against the real files in ../shared/data, and small files written here in the
exact formats the public datasets are distributed in (MovieLens releases, RetailRocket, YOOCHOOSE)."""

from __future__ import annotations

import gzip
import hashlib
import json
import time
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner

from stream_app.cli import main
from stream_app.cli.tools import DATASET_KINDS
from stream_app.tools.datasets import FILE_KINDS, LoadReport, detect_kind, read_dataset
from tests.conftest import shared_data


def test_taobao_head84k_reports_truncated_last_line_and_delivers_the_rest() -> None:
    path = shared_data("taobao/UserBehavior_head84k.csv")
    report = LoadReport(str(path), "taobao")
    events = list(read_dataset(path, report=report))
    assert detect_kind(path) == "taobao"
    assert report.lines == 84_476
    assert report.bad_lines == 1 and len(events) == 84_475 == report.events
    line_no, reason, text = report.bad_examples[0]
    assert line_no == 84_476 and "4" in reason and text.endswith(",pv")
    assert report.bad_reasons == {"truncated line": 1}
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
    from stream_app.tools.recording import RecordedRecord, RecordingWriter

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


def _read(path: Path, kind: str | None = None) -> tuple[list, LoadReport]:
    report = LoadReport(str(path), kind or detect_kind(path))
    return list(read_dataset(path, kind, report=report)), report


def test_taobao_truncated_and_implausible_times_are_bad_lines(tmp_path: Path) -> None:
    f = tmp_path / "UserBehavior.csv"
    future = int(time.time()) + 3 * 86_400
    f.write_text("1,2268318,2520377,pv,1511544070\n"
                 "301780,543546,4181361,pv,15\n"  # a cut timestamp: 15 s after 1970
                 f"1,2333346,2520771,buy,{future}\n"  # three days ahead of now
                 "1,2333346,2520771,cart,788918399\n"  # 1994-12-31 23:59:59, before the bound
                 "1,2576651,149192,fav,788918400\n"  # 1995-01-01: the lowest plausible time
                 "100370,1968385,1875258,pv\n")
    assert detect_kind(f) == "taobao"
    events, report = _read(f)
    assert [e.item_id for e in events] == ["2268318", "2576651"] and report.events == 2
    assert report.lines == 6 and report.bad_lines == 4
    assert report.bad_reasons == {"implausible timestamp": 3, "truncated line": 1}
    assert [b[0] for b in report.bad_examples] == [2, 3, 4, 6]
    assert "1970-01-01" in report.bad_examples[0][1]
    assert "implausible timestamp: 3" in report.summary()


def test_movielens_csv_with_header_half_stars_and_genres(tmp_path: Path) -> None:
    """ml-latest(-small) / ml-20m / ml-25m: ratings.csv and movies.csv (quoted titles with commas)."""
    (tmp_path / "ratings.csv").write_text(
        "userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,3,4.0,964981247\n"
        "1,6,3.5,964982224\n2,318,0.5,1445714835\n2,6,x,1445714836\n2,6,4.5\n")
    (tmp_path / "movies.csv").write_text(
        'movieId,title,genres\n1,Toy Story (1995),Adventure|Animation|Children|Comedy|Fantasy\n'
        '3,"American President, The (1995)",Comedy|Drama|Romance\n6,Heat (1995),Action|Crime|Thriller\n'
        "318,\"Shawshank Redemption, The (1994)\",(no genres listed)\n")
    path = tmp_path / "ratings.csv"
    assert detect_kind(path) == "movielens"
    events, report = _read(path)
    assert [(e.user_id, e.item_id, e.category_id, e.ts) for e in events] == [
        ("1", "1", "Adventure", 964_982_703_000), ("1", "3", "Comedy", 964_981_247_000),
        ("1", "6", "Action", 964_982_224_000), ("2", "318", None, 1_445_714_835_000)]
    assert report.lines == 6 and report.bad_reasons == {"bad rating": 1, "truncated line": 1}
    events2, _ = _read(path, "movielens")  # --kind movielens reads the CSV release too
    assert events2 == events


def test_movielens_csv_without_header(tmp_path: Path) -> None:
    f = tmp_path / "ratings_nohead.csv"
    f.write_text("1,31,2.5,1260759144\n1,1029,3.0,1260759179\n")
    assert detect_kind(f) == "movielens"
    events, report = _read(f)
    assert [e.item_id for e in events] == ["31", "1029"] and report.bad_lines == 0 and report.lines == 2


def test_movielens_10m_half_stars_and_100k_tabs(tmp_path: Path) -> None:
    ml10 = tmp_path / "ml-10M100K"
    ml10.mkdir()
    (ml10 / "ratings.dat").write_text("1::122::5::838985046\n1::185::4.5::838983525\n")
    (ml10 / "movies.dat").write_text("122::Boomerang (1992)::Comedy|Romance\n185::Net, The (1995)::Action\n")
    events, report = _read(ml10 / "ratings.dat")
    assert report.kind == "movielens" and report.bad_lines == 0
    assert [(e.item_id, e.category_id) for e in events] == [("122", "Comedy"), ("185", "Action")]
    ml100 = tmp_path / "ml-100k"
    ml100.mkdir()
    (ml100 / "u.data").write_text("196\t242\t3\t881250949\n186\t302\t3\t891717742\n")
    flags = ["0"] * 19
    flags[5] = "1"  # Comedy
    (ml100 / "u.item").write_bytes(
        ("242|Kolya (1996)|24-Jan-1997||http://us.imdb.com/M/title-exact?Kolya%20(1996)|"
         + "|".join(flags) + "\n").encode("latin-1"))
    events, report = _read(ml100 / "u.data")
    assert report.kind == "movielens" and report.bad_lines == 0
    assert [(e.user_id, e.item_id, e.category_id, e.ts) for e in events] == [
        ("196", "242", "Comedy", 881_250_949_000), ("186", "302", None, 891_717_742_000)]


def test_yoochoose_clicks_and_buys(tmp_path: Path) -> None:
    clicks = tmp_path / "yoochoose-clicks.dat"
    clicks.write_text("1,2014-04-07T10:51:09.277Z,214536502,0\n1,2014-04-07T10:54:09.868Z,214536500,S\n"
                      "2,2014-04-07T13:56:37.614Z,214662742,2053701186\n3,1970-01-01T00:00:15.000Z,1,0\n"
                      "2,2014-04-07T13:57")
    assert detect_kind(clicks) == "yoochoose"
    events, report = _read(clicks)
    assert [(e.user_id, e.item_id, e.category_id, e.ts, e.type) for e in events] == [
        ("1", "214536502", None, 1_396_867_869_277, "browse"),
        ("1", "214536500", "S", 1_396_868_049_868, "browse"),
        ("2", "214662742", "2053701186", 1_396_878_997_614, "browse")]
    assert report.bad_reasons == {"implausible timestamp": 1, "truncated line": 1}
    buys = tmp_path / "yoochoose-buys.dat"
    buys.write_text("420374,2014-04-06T18:44:58.314Z,214537888,12462,1\n420374,2014-04-06T18:44:58.325Z,"
                    "214537850,0,0\n")
    assert detect_kind(buys) == "yoochoose"
    events, report = _read(buys)
    assert [(e.item_id, e.type, e.price, e.quantity) for e in events] == [
        ("214537888", "purchase", 12462.0, 1), ("214537850", "purchase", None, None)]


def test_retailrocket_without_header_is_detected(tmp_path: Path) -> None:
    f = tmp_path / "events_part.csv"
    f.write_text("1433221332117,257597,view,355908,\n1433222147345,483625,transaction,253185,14\n")
    assert detect_kind(f) == "retailrocket"
    events, report = _read(f)
    assert [e.type for e in events] == ["browse", "purchase"] and report.lines == 2


def test_unknown_format_is_one_clear_line(tmp_path: Path) -> None:
    f = tmp_path / "notes.csv"
    f.write_text("a,b,c\n1,2,3\n")
    with pytest.raises(ValueError, match="unknown dataset format") as info:
        detect_kind(f)
    assert "\n" not in str(info.value) and "MovieLens" in str(info.value)
    res = CliRunner().invoke(main, ["train", str(f), "--out", str(tmp_path / "m")])
    assert res.exit_code == 2 and "unknown dataset format" in res.output, res.output
    assert "Traceback" not in res.output and not isinstance(res.exception, ValueError)


def test_forced_kind_that_reads_nothing_is_one_clear_line(tmp_path: Path) -> None:
    f = tmp_path / "UserBehavior.csv"
    f.write_text("1,2268318,2520377,pv,1511544070\n")
    res = CliRunner().invoke(main, ["train", str(f), "--kind", "movielens", "--out", str(tmp_path / "m")])
    assert res.exit_code == 1 and "no event could be read as movielens" in res.output, res.output
    assert "Traceback" not in res.output


def test_cli_kinds_are_the_adapters_kinds() -> None:
    assert DATASET_KINDS == FILE_KINDS
