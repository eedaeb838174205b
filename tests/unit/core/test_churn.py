"""Churn timers in event time (no broker): deadlines, one warning per episode, rebuild."""

from __future__ import annotations

from stream_app.core.churn import ChurnDetector
from stream_app.core.events import Event
from stream_app.core.state import StatePolicy, UserState, event_id_hash

DAY = 86_400_000
T0 = 1_700_000_000_000
POLICY = StatePolicy()


def user_with_gap(gap_ms: int, n: int = 10) -> UserState:
    state = UserState()
    for i in range(n):
        e = Event(f"e{i}", "u", "i", "c", T0 + i * gap_ms, "browse")
        state.apply(e, event_id_hash(e.event_id), POLICY)
    return state


def at(ts: int) -> UserState:
    """A user whose newest event is at ``ts``."""
    state = UserState()
    e = Event(f"at{ts}", "x", "i", "c", ts, "click")
    state.apply(e, event_id_hash(e.event_id), POLICY)
    return state


def test_deadline_is_the_larger_of_min_silence_and_gap_multiple() -> None:
    churn = ChurnDetector(min_silence_ms=2 * DAY, gap_multiple=10)
    frequent = user_with_gap(60_000)  # 10 x 1 min < 2 days
    rare = user_with_gap(DAY)  # 10 x 1 day > 2 days
    assert churn.deadline(frequent) == frequent.last_ts + 2 * DAY
    assert churn.deadline(rare) == rare.last_ts + 10 * DAY
    assert 0 < churn.risk(frequent) <= 1 and "silent" in churn.reason(rare)


def test_watermark_passing_a_deadline_reports_the_user_once() -> None:
    churn = ChurnDetector(min_silence_ms=2 * DAY, gap_multiple=10, quorum=1)
    state = user_with_gap(60_000)
    churn.track(0, b"u", state)
    assert churn.advance(0) == []
    churn.track(0, b"v", at(churn.deadline(state) - 1))
    assert churn.advance(0) == []
    churn.track(0, b"w", at(churn.deadline(state)))
    assert churn.advance(0) == [b"u"]
    churn.track(0, b"w", at(churn.deadline(state) + DAY))
    assert churn.advance(0) == []  # the heap entry is spent
    churn.track(1, b"x", at(churn.deadline(state) + DAY))
    assert churn.advance(1) == []  # other partitions are separate


def test_one_far_future_event_does_not_move_the_watermark() -> None:
    churn = ChurnDetector(min_silence_ms=2 * DAY, gap_multiple=10, quorum=3)
    for n in range(5):
        churn.track(0, f"u{n}".encode(), user_with_gap(60_000))
    churn.advance(0)
    wm = churn.watermark[0]
    churn.track(0, b"future", at(T0 + 365 * DAY))
    assert churn.advance(0) == [] and churn.watermark[0] == wm
    for n in range(2):  # once a quorum of users is that far, everyone else is silent
        churn.track(0, f"late{n}".encode(), at(T0 + 365 * DAY))
    assert sorted(churn.advance(0)) == [f"u{n}".encode() for n in range(5)]


def test_a_user_who_comes_back_is_re_armed() -> None:
    churn = ChurnDetector(min_silence_ms=2 * DAY, gap_multiple=10, quorum=1)
    state = user_with_gap(60_000)
    churn.track(0, b"u", state)
    back = Event("back", "u", "i", "c", state.last_ts + DAY, "click")
    state.apply(back, event_id_hash(back.event_id), POLICY)
    churn.track(0, b"u", state)
    churn.track(0, b"v", at(state.last_ts + DAY))
    assert churn.advance(0) == []  # the old deadline is superseded
    churn.track(0, b"v", at(churn.deadline(state)))
    assert churn.advance(0) == [b"u"]


def test_rebuild_skips_warned_users_and_resumes_the_watermark() -> None:
    churn = ChurnDetector(min_silence_ms=2 * DAY, gap_multiple=10, quorum=1)
    quiet, warned = user_with_gap(60_000), user_with_gap(60_000)
    warned.churn_warned_at = churn.deadline(warned)
    churn.rebuild_partition(3, [(b"q", quiet), (b"w", warned)])
    assert churn.watermark[3] == quiet.last_ts and churn.users_tracked == 2
    churn.track(3, b"v", at(churn.deadline(quiet)))
    assert churn.advance(3) == [b"q"]
