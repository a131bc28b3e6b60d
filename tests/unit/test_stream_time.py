"""Watermarks and window assigners of rtml.stream (pure)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rtml.stream import Session, Sliding, StreamConfigError, Tumbling
from rtml.stream._time import WatermarkGenerator


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_tumbling_windows_are_aligned_to_the_origin():
    w = Tumbling(seconds=10)
    assert w.windows(0) == [(0, 10)]
    assert w.windows(9.999) == [(0, 10)]
    assert w.windows(10) == [(10, 20)]
    assert w.windows(-0.5) == [(-10, 0)]
    assert Tumbling(seconds=10, origin=3).windows(12.9) == [(3, 13)]


@given(st.floats(-1e6, 1e6), st.floats(0.5, 100), st.floats(0.1, 1.0))
def test_sliding_windows_hold_the_event_and_start_on_the_grid(ts, size, frac):
    every = max(size * frac, 0.1)
    wins = Sliding(seconds=size, every=every).windows(ts)
    assert wins, "every event falls in at least one window"
    for start, end in wins:
        assert start <= ts < end
        assert math.isclose(end - start, size)
        k = start / every
        assert math.isclose(k, round(k), abs_tol=1e-6)
    assert len(wins) <= math.ceil(size / every) + 1


def test_window_misconfigurations_name_the_fix():
    with pytest.raises(StreamConfigError, match="positive"):
        Tumbling(seconds=0)
    with pytest.raises(StreamConfigError, match="gaps"):
        Sliding(seconds=5, every=10)
    with pytest.raises(StreamConfigError, match="number of seconds"):
        Session(gap="long")  # type: ignore[arg-type]


def test_watermark_is_max_minus_out_of_order_and_never_goes_back():
    clock = Clock()
    g = WatermarkGenerator(2.0, idle_after=5.0, clock=clock)
    assert g.current() == -math.inf
    g.observe(10.0)
    assert g.current() == 8.0
    g.observe(7.0)  # out of order: no step back
    assert g.current() == 8.0
    g.observe(12.5)
    assert g.current() == 10.5


def test_watermark_advances_with_the_clock_while_idle():
    clock = Clock()
    g = WatermarkGenerator(1.0, idle_after=0.5, clock=clock)
    g.observe(50.0)
    assert g.current() == 49.0
    clock.t += 0.4
    assert g.current() == 49.0  # not idle long enough yet
    clock.t += 2.1  # idle 2.5 s: 2.0 s beyond idle_after
    assert g.current() == pytest.approx(51.0)
    g.observe(50.5)  # a new (older) event resets idleness but the watermark stays
    assert g.current() == pytest.approx(51.0)


def test_watermark_state_restores():
    clock = Clock()
    g = WatermarkGenerator(1.0, clock=clock)
    g.observe(5.0)
    g.current()
    h = WatermarkGenerator(1.0, clock=clock)
    h.restore(g.snapshot())
    assert h.current() == 4.0


@given(st.floats(-1e6, 1e6), st.floats(0.01, 1000), st.floats(-50, 50))
def test_a_tumbling_window_always_holds_its_event(ts, size, origin):
    ((start, end),) = Tumbling(seconds=size, origin=origin).windows(ts)
    assert start <= ts < end
