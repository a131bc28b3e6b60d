"""Keyed window aggregation: the state machine of one window operator in one actor (pure).

::

    add(kg, key, ts, value, wm) ──▶ windows of ts ──┬─ end + lateness <= wm ──▶ late output
                                                     ├─ end <= wm (already fired) ─▶ fold, re-emit
                                                     └─ open ──▶ fold into the accumulator
    advance(wm) ──▶ pop timers <= wm ──▶ fire (emit WindowResult) ─▶ purge at end + lateness

State is held per key group (``kg``) so a checkpoint can be re-partitioned over a different
number of actors; each window remembers whether it fired, so a restore never fires it twice.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable
from typing import Any, NamedTuple

from rtml.stream._keys import KEY_GROUPS, key_group
from rtml.stream._time import Session, Tumbling, WindowSpec, tumbling_window

__all__ = ["WindowResult", "WindowState"]


class WindowResult(NamedTuple):
    """What a window operator emits for one key and one window ``[start, end)``."""

    key: Any
    start: float
    end: float
    value: Any


class WindowState:
    """Window aggregation over keyed events with event-time timers.

    Args:
        spec: Tumbling, Sliding or Session.
        init: makes an empty accumulator.
        fold: ``fold(acc, value) -> acc``.
        lateness: how long after a window's end late events still update it (re-emitting it).
    """

    def __init__(
        self,
        spec: WindowSpec,
        init: Callable[[], Any],
        fold: Callable[[Any, Any], Any],
        lateness: float = 0.0,
    ) -> None:
        self.spec, self.init, self.fold, self.lateness = spec, init, fold, float(lateness)
        self.session = isinstance(spec, Session)
        # kg -> key -> {(start, end): [acc, fired]}; sessions keep acc as [(ts, value), ...]
        self.groups: dict[int, dict[Any, dict[tuple[float, float], list]]] = {}
        # Timers grouped by time: many windows end together (tumbling windows of all keys),
        # so the heap holds each time once and the windows due then sit in a list.
        self._times: list[float] = []
        self._due: dict[float, list[tuple[int, Any, tuple[float, float]]]] = {}

    def add_batch(
        self,
        items: list,
        wm: float,
        out: list,
        late: list,
        on_error: Callable[[tuple, Exception], None],
    ) -> None:
        """``add`` for a batch of ``(key, ts, value)``; tumbling windows take a fast path.
        An event whose init or fold raises goes to ``on_error`` (the others are kept)."""
        spec = self.spec
        if type(spec) is not Tumbling:
            for it in items:
                try:
                    self.add(key_group(it[0]), it[0], it[1], it[2], wm, out, late)
                except Exception as e:
                    on_error(it, e)
            return
        size, origin, lateness = spec.seconds, spec.origin, self.lateness
        groups, init, fold, floor = self.groups, self.init, self.fold, math.floor
        for k, t, v in items:
            start = origin + floor((t - origin) / size) * size
            if not start <= t < start + size:  # rounding (see tumbling_window)
                start = tumbling_window(t, size, origin)[0]
            end = start + size
            if end + lateness <= wm:
                late.append((k, t, v))
                continue
            kg = k % KEY_GROUPS if type(k) is int else key_group(k)
            keys = groups.get(kg)
            if keys is None:
                keys = groups[kg] = {}
            wins = keys.get(k)
            if wins is None:
                wins = keys[k] = {}
            w = (start, end)
            slot = wins.get(w)
            try:
                if slot is None:
                    acc = fold(init(), v)
                    slot = wins[w] = [acc, False]
                    self._push(end, kg, k, w)
                else:
                    slot[0] = fold(slot[0], v)
            except Exception as e:
                if not wins:
                    del keys[k]
                on_error((k, t, v), e)
                continue
            if slot[1]:
                out.append(WindowResult(k, start, end, slot[0]))

    # -- events ---------------------------------------------------------------------------

    def add(
        self, kg: int, key: Any, ts: float, value: Any, wm: float, out: list, late: list
    ) -> None:
        """Fold one event in; appends re-emitted results to ``out`` and the event to ``late``
        if it missed a window that is already purged."""
        wins = self.groups.setdefault(kg, {}).setdefault(key, {})
        if self.session:
            self._add_session(kg, key, wins, ts, value, wm, out, late)
            return
        missed = False
        for w in self.spec.windows(ts):  # type: ignore[union-attr]
            start, end = w
            if end + self.lateness <= wm:
                missed = True
                continue
            slot = wins.get(w)
            if slot is None:
                slot = wins[w] = [self.init(), False]
                self._push(end, kg, key, w)
            slot[0] = self.fold(slot[0], value)
            if slot[1]:
                out.append(WindowResult(key, start, end, slot[0]))
        if missed:
            late.append((key, ts, value))
        if not wins:
            self._drop_key(kg, key)

    def _add_session(
        self, kg: int, key: Any, wins: dict, ts: float, value: Any, wm: float, out: list, late: list
    ) -> None:
        gap = self.spec.gap  # type: ignore[union-attr]
        start, end = ts, ts + gap
        merged = [w for w in wins if w[0] < end and start < w[1]]
        if not merged and end + self.lateness <= wm:
            # Every window still kept ends after wm - lateness, so an event that merges with
            # none of them would open a session that is already past its lateness.
            late.append((key, ts, value))
            if not wins:
                self._drop_key(kg, key)
            return
        events = [(ts, value)]
        fired = False
        for w in merged:
            slot = wins.pop(w)
            events.extend(slot[0])
            fired = fired or slot[1]
            start, end = min(start, w[0]), max(end, w[1])
        wins[(start, end)] = [events, fired]
        self._push(end, kg, key, (start, end))
        if fired:
            out.append(self._result(key, (start, end), events))

    # -- time -------------------------------------------------------------------------------

    def advance(self, wm: float, out: list) -> None:
        """Fire every window whose end is at or below ``wm``; purge those past lateness."""
        times, groups = self._times, self.groups
        while times and times[0] <= wm:
            t = heapq.heappop(times)
            for kg, key, w in self._due.pop(t):
                keys = groups.get(kg)
                wins = keys.get(key) if keys is not None else None
                if not wins or w not in wins:
                    continue  # merged away (sessions) or purged already
                slot = wins[w]
                end = w[1]
                if not slot[1] and t == end:
                    slot[1] = True
                    out.append(self._result(key, w, slot[0]))
                if end + self.lateness <= wm:
                    del wins[w]
                    if not wins:
                        self._drop_key(kg, key)
                elif t == end:
                    self._push(end + self.lateness, kg, key, w)

    def _result(self, key: Any, w: tuple[float, float], acc: Any) -> WindowResult:
        if self.session:
            value = self.init()
            for _, v in sorted(acc, key=lambda e: e[0]):
                value = self.fold(value, v)
            return WindowResult(key, w[0], w[1], value)
        return WindowResult(key, w[0], w[1], acc)

    def _push(self, t: float, kg: int, key: Any, w: tuple[float, float]) -> None:
        due = self._due.get(t)
        if due is None:
            self._due[t] = [(kg, key, w)]
            heapq.heappush(self._times, t)
        else:
            due.append((kg, key, w))

    def _drop_key(self, kg: int, key: Any) -> None:
        keys = self.groups.get(kg)
        if keys is not None:
            keys.pop(key, None)
            if not keys:
                del self.groups[kg]

    # -- checkpoints --------------------------------------------------------------------------

    def snapshot(self) -> dict[int, Any]:
        return {
            kg: {k: {w: list(s) for w, s in wins.items()} for k, wins in keys.items()}
            for kg, keys in self.groups.items()
        }

    def restore(self, groups: dict[int, Any]) -> None:
        self.groups = {}
        self._times, self._due = [], {}
        for kg, keys in groups.items():
            self.groups[kg] = keys
            for key, wins in keys.items():
                for w, slot in wins.items():
                    self._push(w[1] + self.lateness if slot[1] else w[1], kg, key, w)

    def open_windows(self) -> int:
        return sum(len(w) for keys in self.groups.values() for w in keys.values())

    def validate(self) -> None:
        """Invariants: every window has a timer; no empty key or group is kept."""
        assert sorted(self._times) == sorted(self._due), "a time without windows, or reverse"
        timed = {(kg, self._hashable(key), w) for due in self._due.values() for kg, key, w in due}
        for kg, keys in self.groups.items():
            assert keys, f"empty key group {kg} kept"
            for key, wins in keys.items():
                assert wins, f"key {key!r} kept with no window"
                for w in wins:
                    assert w[0] < w[1], w
                    assert (kg, self._hashable(key), w) in timed, f"window {w} of {key!r} untimed"

    @staticmethod
    def _hashable(key: Any) -> Any:
        try:
            hash(key)
            return key
        except TypeError:
            return repr(key)
