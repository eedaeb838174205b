"""Per-user state alone (no broker): ordering, duplicates, lateness, the codec."""

from __future__ import annotations

import math
import random

import msgpack

from stream_app.core.events import Event
from stream_app.core.state import MAX_CATEGORIES, StatePolicy, UserState, event_id_hash

POLICY = StatePolicy(window_length=50, dedupe_memory=512)
T0 = 1_700_000_000_000


def events(n: int, categories: int, seed: int = 1) -> list[Event]:
    rng = random.Random(seed)
    types = ("click", "browse", "purchase")
    return [Event(f"e{i}", "u", f"i{rng.randrange(200)}", f"c{rng.randrange(categories)}",
                  T0 + rng.randrange(30 * 86_400_000), types[rng.randrange(3)]) for i in range(n)]


def apply_all(evs: list[Event], policy: StatePolicy = POLICY) -> UserState:
    state = UserState()
    for e in evs:
        h = event_id_hash(e.event_id)
        if not state.is_duplicate(h) and not state.is_too_late(e.ts, policy):
            state.apply(e, h, policy)
    return state


def test_state_does_not_depend_on_arrival_order_within_the_dedupe_memory() -> None:
    evs = events(400, categories=40)
    in_order = apply_all(sorted(evs, key=lambda e: (e.ts, e.event_id)))
    for seed in range(5):
        shuffled = evs[:]
        random.Random(seed).shuffle(shuffled)
        got = apply_all(shuffled)
        assert got.counts == in_order.counts and got.events_total == 400
        assert (got.first_ts, got.last_ts) == (in_order.first_ts, in_order.last_ts)
        assert [e[3] for e in got.window] == [e[3] for e in in_order.window]
        assert sorted(got.recent_ids) == sorted(in_order.recent_ids)
        for top in (UserState.top_interests, UserState.top_short_interests):
            a = dict(top(got, got.last_ts, POLICY, n=100))
            b = dict(top(in_order, in_order.last_ts, POLICY, n=100))
            assert a.keys() == b.keys()
            for c in a:
                assert math.isclose(a[c], b[c], rel_tol=1e-9, abs_tol=1e-12)


def test_duplicates_are_not_applied_twice() -> None:
    evs = events(100, categories=5)
    once = apply_all(evs)
    twice = apply_all(evs + evs[::-1])
    assert twice.encode() == once.encode()


def test_an_event_older_than_a_full_dedupe_memory_is_too_late() -> None:
    policy = StatePolicy(window_length=10, dedupe_memory=20)
    state = apply_all([Event(f"e{i}", "u", "i", "c", T0 + i * 1000, "click") for i in range(20)], policy)
    assert state.is_too_late(T0 - 1, policy)
    assert not state.is_too_late(T0 + 500, policy)  # inside the remembered span: inserted in order
    tolerant = StatePolicy(window_length=10, dedupe_memory=20, late_tolerance_ms=5_000)
    assert state.is_too_late(T0 + 10_000, tolerant)


def test_profile_beyond_64_categories_does_not_depend_on_arrival_order() -> None:
    evs = events(500, categories=300, seed=3)
    want = apply_all(sorted(evs, key=lambda e: e.ts))
    assert len(want.interests) > 200
    for seed in range(3):
        shuffled = evs[:]
        random.Random(seed).shuffle(shuffled)
        got = apply_all(shuffled)
        assert got.interests.keys() == want.interests.keys()
        for c in got.interests:
            assert math.isclose(got.strength(c, T0, POLICY.decay_rate),
                                want.strength(c, T0, POLICY.decay_rate), rel_tol=1e-9)


def test_faded_categories_are_forgotten_and_extreme_profiles_bounded() -> None:
    old = Event("old", "u", "i", "faded", T0, "browse")
    new = [Event(f"n{i}", "u", "i", f"c{i}", T0 + 200 * 86_400_000 + i, "browse")
           for i in range(MAX_CATEGORIES + 50)]
    state = apply_all([old, *new[:1]])
    assert "faded" not in state.interests  # 200 days at a 7-day half-life: below PRUNE_BELOW
    assert len(apply_all([old, *new]).interests) == MAX_CATEGORIES


def test_codec_round_trip() -> None:
    state = apply_all(events(300, categories=10))
    state.churn_warned_at, state.churn_rule, state.churn_risk = T0 + 5, "risk", 0.25
    state.recommended_ts = T0 + 7
    back = UserState.decode(state.encode())
    assert back.encode() == state.encode()
    assert back.to_json(POLICY) == state.to_json(POLICY)
    assert (back.churn_rule, back.churn_risk, back.recommended_ts) == ("risk", 0.25, T0 + 7)


def test_codec_reads_format_3_states() -> None:
    """A state written before recommendations were rate-limited (format 3): none made yet."""
    state = apply_all(events(30, categories=3))
    state.churn_risk, state.recommended_ts = 0.5, T0
    v3 = msgpack.packb((3, *msgpack.unpackb(state.encode(), use_list=False)[1:11]), use_bin_type=True)
    back = UserState.decode(v3)
    assert (back.churn_risk, back.recommended_ts) == (0.5, None)
    assert back.window == state.window and back.interests == state.interests


def test_recommendations_are_rate_limited_in_event_time() -> None:
    """A trigger when the user has none yet or the event is at least the gap after the last trigger;
    a late event never triggers; gap 0: every event. Only event times decide."""
    policy = StatePolicy(recommend_min_gap_ms=30_000)
    state = UserState()
    times = [0, 10_000, 29_999, 30_000, 45_000, 20_000, 61_000, 200_000, 200_000]
    got = [state.triggers_recommendation(T0 + t, policy) for t in times]
    assert got == [True, False, False, True, False, False, True, True, False]
    assert state.recommended_ts == T0 + 200_000
    every = UserState()
    assert all(every.triggers_recommendation(T0 + t, StatePolicy()) for t in times)
    assert every.recommended_ts == T0 + 200_000  # the newest trigger, also after a late one


def test_codec_reads_format_2_states() -> None:
    """A state written before the churn risk was kept (format 2): no risk known, and an open
    episode was the silence rule's (the only rule then)."""
    state = apply_all(events(30, categories=3))
    state.churn_warned_at = T0 + 5
    old = msgpack.unpackb(state.encode(), use_list=False)
    v2 = msgpack.packb((2, *old[1:9]), use_bin_type=True)
    back = UserState.decode(v2)
    assert (back.churn_warned_at, back.churn_rule, back.churn_risk) == (T0 + 5, "silence", None)
    assert back.window == state.window and back.interests == state.interests


def test_short_term_profile_follows_a_recent_shift() -> None:
    old = [Event(f"o{i}", "u", "i", "books", T0 + i * 3_600_000, "browse") for i in range(40)]
    new = [Event(f"n{i}", "u", "i", "games", T0 + 3 * 86_400_000 + i * 60_000, "browse") for i in range(16)]
    state = apply_all(old + new)
    assert state.top_interests(state.last_ts, POLICY, n=1)[0][0] == "books"  # a week's half-life
    assert state.top_short_interests(state.last_ts, POLICY, n=1)[0][0] == "games"  # a day's
    assert state.short_strength("games", state.last_ts, POLICY) <= state.strength(
        "games", state.last_ts, POLICY.decay_rate)


def test_reads_the_previous_state_format() -> None:
    import msgpack

    v1 = msgpack.packb((1, [["i", "c", 1, T0]], ["c", 1.5, T0], [0, 1, 0], T0, T0, b"", b"", 0),
                       use_bin_type=True)
    state = UserState.decode(v1)
    assert state.interests == {"c": [1.5, T0]} and state.short == {"c": 1.5}
    assert UserState.decode(state.encode()).encode() == state.encode()

