"""Churn timers in event time (no broker): deadlines, one warning per episode, rebuild."""

from __future__ import annotations

from stream_app.core.churn import ChurnDetector, RiskRule, RiskThreshold
from stream_app.core.events import Event
from stream_app.core.state import RISK, SILENCE, StatePolicy, UserState, event_id_hash

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


# --- the risk rule and episodes shared by both rules -------------------------------------

RISK_AT = RiskThreshold(threshold=0.3, precision=0.5, expected_lead_ms=DAY)


def apply_at(state: UserState, ts: int) -> None:
    e = Event(f"e{ts}", "u", "i", "c", ts, "browse")
    state.apply(e, event_id_hash(e.event_id), POLICY)


def test_risk_rule_warns_once_per_episode_and_a_return_to_low_risk_closes_it() -> None:
    rule = RiskRule(RISK_AT)
    state = at(T0)
    assert not rule.update(state, 0.1, T0) and state.churn_risk == 0.1 and not state.churn_warned_at
    apply_at(state, T0 + 1)
    assert rule.update(state, 0.35, T0 + 1)  # reaches the threshold: a warning at this event
    assert (state.churn_warned_at, state.churn_rule) == (T0 + 1, RISK)
    apply_at(state, T0 + 2)  # a new event does not end a risk episode by itself...
    assert state.churn_warned_at == T0 + 1
    assert not rule.update(state, 0.9, T0 + 2)  # ...still high: the same episode, no second warning
    apply_at(state, T0 + 3)
    assert not rule.update(state, 0.2, T0 + 3)  # back under the threshold: the episode ends
    assert (state.churn_warned_at, state.churn_rule) == (0, "")
    apply_at(state, T0 + 4)
    assert rule.update(state, 0.5, T0 + 4)  # a new episode, a new warning
    assert "0.500 >= 0.300" in rule.reason(state) and "precision 50%" in rule.reason(state)


def test_without_a_calibrated_threshold_the_risk_is_kept_but_never_warns() -> None:
    rule = RiskRule(None)
    state = at(T0)
    assert not rule.update(state, 0.99, T0) and state.churn_risk == 0.99 and not state.churn_warned_at
    assert RiskThreshold.from_metadata({}) is None
    assert RiskThreshold.from_metadata({"churn_warning": {"threshold": None}}) is None
    assert RiskThreshold.from_metadata({"churn_warning": {
        "threshold": 0.3, "precision_target": 0.5, "expected_lead_ms": DAY}}) == RISK_AT


def test_silence_backstop_skips_a_user_in_a_risk_episode_and_a_return_closes_its_own() -> None:
    churn = ChurnDetector(min_silence_ms=2 * DAY, gap_multiple=10)
    rule = RiskRule(RISK_AT)
    warned = at(T0)
    rule.update(warned, 0.5, T0)  # warned by the model at its last event
    assert not churn.warn(warned)  # the silence that follows is the same episode
    assert (warned.churn_warned_at, warned.churn_rule) == (T0, RISK)
    quiet = at(T0)
    rule.update(quiet, 0.1, T0)
    assert churn.warn(quiet) and (quiet.churn_warned_at, quiet.churn_rule) == (T0 + 2 * DAY, SILENCE)
    assert not churn.warn(quiet)  # once per episode
    apply_at(quiet, T0 + 3 * DAY)  # back: a silence episode ends with the next event
    assert (quiet.churn_warned_at, quiet.churn_rule) == (0, "")
    assert rule.update(quiet, 0.4, T0 + 3 * DAY)  # and the model may open the next one
