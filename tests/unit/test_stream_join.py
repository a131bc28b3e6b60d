"""Joins of rtml.stream (pure): as-of lookups never see the future; interval and window joins
find exactly the pairs a brute-force join finds among events that are not late."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rtml.stream import StreamConfigError, Table, Tumbling
from rtml.stream._join import AsOfIndex, IntervalJoinState, WindowJoinState
from rtml.stream._keys import key_group


def test_as_of_lookup_is_point_in_time_correct():
    rows = [
        {"user": "u1", "t": 10.0, "tier": "free"},
        {"user": "u1", "t": 20.0, "tier": "pro"},
        {"user": "u2", "t": 5.0, "tier": "free"},
    ]
    idx = AsOfIndex(timed=True)
    idx.replace(Table.from_rows(rows, key="user", time="t").load())
    assert idx.lookup("u1", 9.99) is None  # before any row: nothing from the future
    assert idx.lookup("u1", 10.0)["tier"] == "free"
    assert idx.lookup("u1", 19.0)["tier"] == "free"
    assert idx.lookup("u1", 25.0)["tier"] == "pro"
    assert idx.lookup("nobody", 25.0) is None


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 3), st.floats(0, 100)), min_size=1, max_size=40),
    st.floats(-10, 110),
)
def test_as_of_returns_the_newest_row_not_after_the_event(rows, ts):
    table = [{"k": k, "t": t, "i": i} for i, (k, t) in enumerate(rows)]
    idx = AsOfIndex(timed=True)
    idx.replace(Table.from_rows(table, key="k", time="t").load())
    for k in range(4):
        got = idx.lookup(k, ts)
        older = [r for r in table if r["k"] == k and r["t"] <= ts]
        if not older:
            assert got is None
        else:
            assert got["t"] == max(r["t"] for r in older)
            assert got["t"] <= ts


def test_static_tables_and_table_errors():
    idx = AsOfIndex(timed=False)
    idx.replace(Table.from_dict({"a": {"x": 1}}).load())
    assert idx.lookup("a", None)["x"] == 1
    with pytest.raises(StreamConfigError, match="no column 'when'"):
        Table.from_rows([{"k": 1, "t": 2}], key="k", time="when").load()


def brute_interval(events, lower, upper):
    lefts = [(k, t, v) for side, k, t, v in events if side == 0]
    rights = [(k, t, v) for side, k, t, v in events if side == 1]
    return sorted(
        (lv, rv)
        for lk, lt, lv in lefts
        for rk, rt, rv in rights
        if lk == rk and lt + lower <= rt <= lt + upper
    )


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 1), st.integers(0, 2), st.floats(0, 50)), max_size=40),
    st.floats(-5, 5),
    st.floats(0, 10),
    st.floats(0, 8),
)
def test_interval_join_finds_every_pair_of_events_that_are_not_late(raw, lower, span, lag):
    upper = lower + span
    events = [(side, k, t, f"{side}{i}") for i, (side, k, t) in enumerate(raw)]
    state = IntervalJoinState(lower, upper)
    out, late, wm = [], [], float("-inf")
    for side, k, t, v in events:
        state.add(side, key_group(k), k, t, v, wm, out, late)
        wm = max(wm, t - lag)
        state.advance(wm)
    on_time = [
        e for e in events if (e[0], e[1], e[2], e[3]) not in {(s, k, t, v) for s, k, t, v in late}
    ]
    assert sorted(pair for _, pair in out) == brute_interval(on_time, lower, upper)
    assert len(late) + len(on_time) == len(events)


def test_window_join_pairs_within_a_window_and_purges():
    state = WindowJoinState(Tumbling(seconds=10))
    out, late = [], []
    state.add(0, 1, "k", 1.0, "L1", float("-inf"), out, late)
    state.add(1, 1, "k", 2.0, "R1", float("-inf"), out, late)
    state.add(1, 1, "k", 12.0, "R2", float("-inf"), out, late)  # another window
    assert [p for _, p in out] == [("L1", "R1")]
    state.advance(10.0)
    state.add(0, 1, "k", 3.0, "L2", 10.0, out, late)  # its window is closed: late
    assert late == [(0, "k", 3.0, "L2")]
    assert list(state.groups[1]["k"]) == [(10.0, 20.0)]


def test_interval_bounds_are_checked():
    with pytest.raises(StreamConfigError, match="lower must"):
        IntervalJoinState(5, 1)


def test_random_interval_join_against_brute_force_with_no_lateness():
    rng = random.Random(3)
    events = [
        (rng.randint(0, 1), rng.randint(0, 9), t + rng.uniform(0, 2), i)
        for i, t in enumerate(range(300))
    ]
    state = IntervalJoinState(0, 5)
    out, late = [], []
    for side, k, t, v in events:
        state.add(side, key_group(k), k, t, v, float("-inf"), out, late)
    assert sorted(p for _, p in out) == brute_interval(events, 0, 5)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 1), st.integers(0, 2), st.floats(0, 50)), max_size=40),
    st.floats(0, 10),
)
def test_left_interval_join_closes_each_unmatched_left_once_and_only_those(raw, span):
    """In event-time order (nothing late): every left either pairs or closes as
    (left, None) at lt + upper, exactly once, after the watermark passed it."""
    events = sorted([(t, side, k, f"{side}{i}") for i, (side, k, t) in enumerate(raw)])
    state = IntervalJoinState(0.0, span, how="left")
    out, late, closed = [], [], []
    for t, side, k, v in events:
        state.add(side, key_group(k), k, t, v, t, out, late)
        closed.extend(state.advance(t))
    closed.extend(state.advance(float("inf")))
    assert late == []
    matched = {left for _, (left, _) in out}
    lefts = [(t, k, v) for t, side, k, v in events if side == 0]
    assert sorted(v for _, _, (v, right) in closed if right is None) == sorted(
        v for _, _, v in lefts if v not in matched
    )
    for key, ts, (v, _) in closed:
        ((t0, k0, _),) = [(t, k, x) for t, k, x in lefts if x == v]
        assert key == k0
        assert ts == t0 + span
    assert state.groups == {}


def test_left_interval_join_restores_a_snapshot_and_rejects_unknown_how():
    state = IntervalJoinState(0.0, 5.0, how="left")
    out: list = []
    state.add(0, 1, "k", 1.0, "imp", float("-inf"), out, [])
    restored = IntervalJoinState(0.0, 5.0, how="left")
    restored.restore(state.snapshot())
    assert restored.advance(7.0) == [("k", 6.0, ("imp", None))]
    with pytest.raises(StreamConfigError, match="how='outer'"):
        IntervalJoinState(0.0, 1.0, how="outer")
