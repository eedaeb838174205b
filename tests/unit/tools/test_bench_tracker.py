"""The benchmark's table builder and profile reader (benchmarks/bench_tracker.py) on made-up figures."""

from __future__ import annotations

from benchmarks.bench_tracker import Figures, build_table, top_self_time


def test_table_prints_figures_side_by_side_with_pass_and_fail() -> None:
    good = Figures("taobao", 1000, bare=1000.0, plain=800.0, model=600.0, naive=100.0, naive_events=50,
                   latency_rate=300.0, latency_events=900, p50_ms=40.0, p99_ms=150.0, users=10,
                   state_bytes_per_user=2000.0, changelog_bytes_per_event=500.0,
                   naive_changelog_bytes_per_event=2100.0, kv_cache_bytes=5e6, kv_hit_rate=0.9)
    bad = Figures("synthetic", 1000, bare=1000.0, plain=500.0, model=100.0, naive=50.0, naive_events=50,
                  p99_ms=900.0, changelog_bytes_per_event=3000.0)
    table = build_table([good, bad], (1.0, 2.0, 3.0))
    lines = table.splitlines()
    assert lines[0].startswith("load average 1.00 2.00 3.00")
    assert "taobao" in lines[1] and "synthetic" in lines[1]
    targets = {ln.split(">=")[0].split("<=")[0].strip(): ln for ln in lines if "PASS" in ln or "FAIL" in ln}
    assert len(targets) == 5
    row = targets["(c)/(a) tracker+model vs bare"]
    assert "0.60x PASS" in row and "0.10x FAIL" in row
    assert "6.00x PASS" in targets["(c)/(d) tracker+model vs naive"]
    assert "2.00x FAIL" in targets["(c)/(d) tracker+model vs naive"]
    assert "150 ms PASS" in targets["p99 latency at half (c) rate"]
    assert "900 ms FAIL" in targets["p99 latency at half (c) rate"]
    assert "500 B PASS" in targets["changelog bytes per event (c)"]
    assert "90.0%" in table and "n/a" in table  # the second workload has no KV figures


def test_top_self_time_counts_leaf_frames() -> None:
    raw = "main;run;f (a.py:1) 6\nmain;g (b.py:2) 3\nmain;run;f (a.py:1) 1\n"
    assert top_self_time(raw) == [("f (a.py:1)", 7, 0.7), ("g (b.py:2)", 3, 0.3)]

