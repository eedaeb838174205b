"""bench_worker's table: one pair of rows (bare loop, tracker) per engine, ratio to that engine's
bare loop, and each engine's recovery line."""

from __future__ import annotations

from benchmarks.bench_worker import Measured, build_table


def test_table_gives_each_engine_its_own_ratio() -> None:
    table = build_table([Measured("tansu", 8000.0, 4000.0, 1.5, 900),
                         Measured("kafka", 2000.0, 1500.0, 3.25, 1200)]).splitlines()
    assert table[0].split() == ["engine", "what", "events/s", "ratio"]
    assert table[1].startswith("tansu") and table[1].split()[-2:] == ["8,000", "1.00"]
    assert table[2].split()[-2:] == ["4,000", "0.50"]
    assert table[4].startswith("kafka") and table[4].split()[-2:] == ["1,500", "0.75"]
    assert table[5] == ("tansu: state recovery from the changelog 1.50 s for ~900 changelog records "
                        "(highwater sum)")
    assert table[6].startswith("kafka: state recovery from the changelog 3.25 s")
