"""The compatibility module's copy of a Faust method does what Faust's does, in the fixed order."""

from __future__ import annotations

import inspect
import re

from faust.tables.recovery import Recovery

from stream_app.service import compat


def calls(fn: object) -> list[str]:
    """Names of the methods and functions a function calls, in source order."""
    return re.findall(r"\.?(\w+)\(", inspect.getsource(fn))  # type: ignore[arg-type]


def test_seek_before_resuming_keeps_every_step_of_faust_and_seeks_first() -> None:
    compat.seek_before_resuming()
    ours = Recovery.on_recovery_completed
    original = ours._faust_original  # type: ignore[attr-defined]
    missing = set(calls(original)) - set(calls(ours)) - {"dev", "cast"}
    assert not missing, f"steps of Faust's on_recovery_completed not in the copy: {missing}"
    steps = calls(ours)
    assert steps.index("perform_seek") < steps.index("resume_partitions") < steps.index("resume_flow")
    compat.seek_before_resuming()  # installed once: a second call keeps the same function
    assert Recovery.on_recovery_completed is ours
