"""The window operator's state machine (pure): firing, lateness, late output, sessions,
checkpoints that never fire a window twice."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from rtml.stream import Session, Sliding, Tumbling
from rtml.stream._keys import key_group
from rtml.stream._window import WindowResult, WindowState


def count_state(spec, lateness=0.0):
    return WindowState(spec, int, lambda a, _: a + 1, lateness)


def feed(state, events, wm_lag):
    """Events (key, ts) in order; the watermark trails the max ts by wm_lag."""
    out, late, wm = [], [], float("-inf")
    for key, ts in events:
        state.add(key_group(key), key, ts, ts, wm, out, late)
        wm = max(wm, ts - wm_lag)
        state.advance(wm, out)
        state.validate()
    state.advance(float("inf"), out)
    state.validate()
    return out, late


def test_tumbling_counts_fire_once_per_key_and_window():
    s = count_state(Tumbling(seconds=10))
    out, late = feed(s, [("a", 1), ("b", 2), ("a", 9), ("a", 11), ("b", 25)], 0)
    got = {(r.key, r.start): r.value for r in out}
    assert got == {("a", 0): 2, ("b", 0): 1, ("a", 10): 1, ("b", 20): 1}
    assert late == []
    assert s.groups == {}


def test_late_events_go_to_the_side_output_or_update_within_lateness():
    s = count_state(Tumbling(seconds=10), lateness=5)
    out, late = [], []
    s.add(key_group("k"), "k", 3, "x", float("-inf"), out, late)
    s.advance(12, out)  # window [0,10) fires, kept until wm >= 15
    assert out == [WindowResult("k", 0, 10, 1)]
    s.add(key_group("k"), "k", 4, "y", 12, out, late)  # late but within lateness: re-emitted
    assert out[-1] == WindowResult("k", 0, 10, 2)
    s.advance(15, out)
    s.add(key_group("k"), "k", 5, "z", 15, out, late)  # past lateness: side output
    assert late == [("k", 5, "z")]
    assert len(out) == 2
    s.validate()


def test_sessions_merge_and_fold_in_time_order():
    s = WindowState(Session(gap=5), list, lambda acc, v: [*acc, v])
    out, late = [], []
    for ts in (10, 30, 14, 18):  # 10, 14, 18 merge into one session; 30 is its own
        s.add(0, "u", ts, ts, float("-inf"), out, late)
    s.validate()
    s.advance(float("inf"), out)
    got = sorted((r.start, r.end, r.value) for r in out)
    assert got == [(10, 23, [10, 14, 18]), (30, 35, [30])]


def test_a_restored_state_does_not_fire_a_window_again():
    s = count_state(Tumbling(seconds=10), lateness=100)
    out, late = [], []
    s.add(1, "k", 1, None, float("-inf"), out, late)
    s.advance(20, out)
    assert len(out) == 1
    r = count_state(Tumbling(seconds=10), lateness=100)
    r.restore(s.snapshot())
    r.validate()
    again = []
    r.advance(50, again)
    assert again == []  # fired before the checkpoint; kept for lateness only
    r.add(1, "k", 2, None, 50, again, late)
    assert again == [WindowResult("k", 0, 10, 2)]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from("abc"), st.floats(0, 100)), max_size=60),
    st.floats(0, 20),
    st.sampled_from([Tumbling(seconds=7), Sliding(seconds=10, every=5)]),
)
def test_every_event_counts_once_in_each_open_window_and_misses_are_reported(events, lag, spec):
    s = count_state(spec)
    out, late = feed(s, events, lag)
    fired = {}
    for r in out:
        assert (r.key, r.start) not in fired, "a window fired twice without lateness"
        fired[(r.key, r.start)] = r.value
    # The same stream by brute force: the watermark at each arrival decides what was missed.
    expect, expect_late, wm = {}, [], float("-inf")
    for key, ts in events:
        missed = False
        for start, end in spec.windows(ts):
            if end <= wm:
                missed = True
            else:
                expect[(key, start)] = expect.get((key, start), 0) + 1
        if missed:
            expect_late.append((key, ts, ts))
        wm = max(wm, ts - lag)
    assert fired == expect
    assert late == expect_late


def test_random_out_of_order_stream_matches_a_batch_count():
    rng = random.Random(7)
    events = [(rng.choice("xyz"), t + rng.uniform(-3, 0)) for t in range(0, 500)]
    s = count_state(Tumbling(seconds=25))
    out, late = feed(s, events, wm_lag=5)  # lag covers the disorder: nothing late
    assert late == []
    batch = {}
    for key, ts in events:
        w = Tumbling(seconds=25).windows(ts)[0]
        batch[(key, w[0])] = batch.get((key, w[0]), 0) + 1
    assert {(r.key, r.start): r.value for r in out} == batch
