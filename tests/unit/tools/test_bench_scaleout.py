"""The scale-out benchmark's pure parts (benchmarks/bench_scaleout.py): workload size, the worker log's
assignment table, the table of rates."""

from __future__ import annotations

from benchmarks.bench_scaleout import Row, assigned_partitions, build_table, users_for
from stream_app.tools.loading import SendSummary

LOG = """\
[2026-12-03 11:07:30,100] [10811] [INFO] Setting newly assigned partitions
+Topic Partition Set----------+------------+
| topic                       | partitions |
+-----------------------------+------------+
| app-events-by-user          | {0-5}      |
| app-user-state-changelog    | {0-5}      |
+-----------------------------+------------+ for group app
[2026-12-03 11:07:30,199] [10811] [INFO] Executing _on_partitions_assigned
[2026-12-03 11:07:34,196] [10811] [INFO] Setting newly assigned partitions
+Topic Partition Set----------+------------+
| topic                       | partitions |
+-----------------------------+------------+
| app-events-by-user          | {0-1, 4}   |
| app-user-state-changelog    | {0-5}      |
+-----------------------------+------------+ for group app
"""


def test_users_for_makes_at_least_the_events_asked_for() -> None:
    assert users_for(100_000) == 148
    assert users_for(1) == 1


def test_assigned_partitions_reads_the_latest_table() -> None:
    assert assigned_partitions(LOG, "app-events-by-user") == {0, 1, 4}
    assert assigned_partitions(LOG, "app-user-state-changelog") == {0, 1, 2, 3, 4, 5}
    assert assigned_partitions(LOG, "other") == set()
    assert assigned_partitions("no assignment yet", "app-events-by-user") == set()


def test_table_shows_rates_speed_up_and_shares() -> None:
    sent = SendSummary(sent=1000, seconds=0.5)
    rows = [Row(1, 1000, 2.0, sent, [{0, 1}], [1000.0], 0),
            Row(2, 1000, 1.25, sent, [{0}, {1}], [600.0, 400.0], 1)]
    lines = build_table(rows).splitlines()
    assert lines[1].split()[:4] == ["1", "500", "1.00x", "2.0"]
    assert lines[2].split()[:3] == ["2", "800", "1.60x"]
    assert "0 | 1" in lines[2] and "600 / 400" in lines[2] and lines[2].endswith("1")
