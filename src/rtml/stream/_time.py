"""Event time: watermarks and window assigners (pure; no processes, no I/O).

::

    record ── extractor ──▶ ts ──▶ WatermarkGenerator.observe(ts)
                                      watermark = max ts seen - max_out_of_order
                                      (never backwards; advanced by the clock while idle)
    ts ──▶ Tumbling / Sliding .windows(ts) ──▶ [(start, end), ...]   aligned to `origin`
    Session(gap): per key, windows merge while events are closer than `gap`

Windows are half-open, ``[start, end)``; edges depend only on ``origin`` and the size, so they
are the same after a restart.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from rtml.stream._errors import StreamConfigError

__all__ = ["Session", "Sliding", "Tumbling", "WatermarkGenerator"]

NEG_INF = -math.inf
POS_INF = math.inf


def _positive(name: str, value: float) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise StreamConfigError(f"{name} must be a number of seconds, got {value!r}")
    if not v > 0 or math.isinf(v):
        raise StreamConfigError(
            f"{name} must be a positive, finite number of seconds, got {value!r}"
        )
    return v


def tumbling_window(ts: float, size: float, origin: float) -> tuple[float, float]:
    """The tumbling window ``[start, end)`` that holds ``ts`` (exactly, despite rounding)."""
    start = origin + math.floor((ts - origin) / size) * size
    if start > ts:
        start -= size
    elif start + size <= ts:
        start += size
    return (start, start + size)


@dataclass(frozen=True)
class Tumbling:
    """Fixed, non-overlapping windows of ``seconds``, aligned to ``origin``.

    Args:
        seconds: the window length.
        origin: a time at which a window starts (default 0, the epoch).
        processing_time: window by the wall clock at the operator instead of event time.
    """

    seconds: float
    origin: float = 0.0
    processing_time: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "seconds", _positive("Tumbling(seconds=)", self.seconds))

    def windows(self, ts: float) -> list[tuple[float, float]]:
        return [tumbling_window(ts, self.seconds, self.origin)]


@dataclass(frozen=True)
class Sliding:
    """Overlapping windows of ``seconds`` starting every ``every`` seconds from ``origin``.

    Args:
        seconds: the window length.
        every: the slide between window starts (at most ``seconds``; equal makes Tumbling).
        origin: a time at which a window starts.
        processing_time: window by the wall clock at the operator instead of event time.
    """

    seconds: float
    every: float
    origin: float = 0.0
    processing_time: bool = False

    def __post_init__(self) -> None:
        size = _positive("Sliding(seconds=)", self.seconds)
        slide = _positive("Sliding(every=)", self.every)
        if slide > size:
            raise StreamConfigError(
                f"Sliding(seconds={self.seconds}, every={self.every}) would leave gaps between "
                "windows (every > seconds); use every <= seconds, or Tumbling for no overlap"
            )
        object.__setattr__(self, "seconds", size)
        object.__setattr__(self, "every", slide)

    def windows(self, ts: float) -> list[tuple[float, float]]:
        last = math.floor((ts - self.origin) / self.every)
        first = math.floor((ts - self.seconds - self.origin) / self.every) + 1
        out = []
        for k in range(first - 1, last + 2):  # one extra each side: floats round both ways
            start = self.origin + k * self.every
            if start <= ts < start + self.seconds:
                out.append((start, start + self.seconds))
        return out


@dataclass(frozen=True)
class Session:
    """Per-key windows that stay open while events come less than ``gap`` seconds apart.

    Args:
        gap: the inactivity that closes a session.
        processing_time: window by the wall clock at the operator instead of event time.
    """

    gap: float
    processing_time: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "gap", _positive("Session(gap=)", self.gap))


WindowSpec = Tumbling | Sliding | Session


class WatermarkGenerator:
    """The watermark of one source partition.

    ``watermark = max event time seen - max_out_of_order``, never moving backwards. While the
    partition is idle for more than ``idle_after`` seconds, event time is taken to advance with
    the wall clock, so windows close without new input.
    """

    def __init__(
        self, max_out_of_order: float, idle_after: float | None = None, clock=time.monotonic
    ) -> None:
        self.max_out_of_order = float(max_out_of_order)
        self.idle_after = max(self.max_out_of_order, 0.2) if idle_after is None else idle_after
        self._clock = clock
        self.max_ts = NEG_INF
        self._last_arrival = clock()
        self._wm = NEG_INF

    def observe(self, ts: float) -> None:
        if ts > self.max_ts:
            self.max_ts = ts
        self._last_arrival = self._clock()

    def observe_batch(self, max_ts: float) -> None:
        self.observe(max_ts)

    def current(self) -> float:
        wm = self.max_ts - self.max_out_of_order
        if self.max_ts > NEG_INF:
            idle = self._clock() - self._last_arrival
            if idle > self.idle_after:
                wm = max(wm, self.max_ts + (idle - self.idle_after) - self.max_out_of_order)
        if wm > self._wm:
            self._wm = wm
        return self._wm

    def snapshot(self) -> tuple[float, float]:
        return (self.max_ts, self._wm)

    def restore(self, state: tuple[float, float]) -> None:
        self.max_ts, self._wm = state
        self._last_arrival = self._clock()
