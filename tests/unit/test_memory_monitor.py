"""The memory monitor without processes: whom it kills, when, and its settings."""

from __future__ import annotations

import pickle

import pytest

from rtml import exceptions as exc
from rtml._node import _memory
from rtml._node._workers import DEAD, LEASED


def test_the_newest_retriable_task_is_the_victim():
    assert _memory.pick_victim([]) is None
    assert _memory.pick_victim([(1.0, False, "a"), (3.0, False, "b")]) == "b"
    assert _memory.pick_victim([(1.0, True, "a"), (3.0, False, "b"), (2.0, True, "c")]) == "c"


def test_settings_come_from_the_environment_and_bad_ones_are_named():
    assert _memory.settings_from_env({}) == (0.95, 0.25)
    env = {_memory.THRESHOLD_ENV: "0.5", _memory.REFRESH_ENV: "100"}
    assert _memory.settings_from_env(env) == (0.5, 0.1)
    with pytest.raises(ValueError, match=_memory.THRESHOLD_ENV):
        _memory.settings_from_env({_memory.THRESHOLD_ENV: "95"})
    with pytest.raises(ValueError, match=_memory.REFRESH_ENV):
        _memory.settings_from_env({_memory.REFRESH_ENV: "soon"})


def test_system_memory_is_plausible():
    used, total = _memory.system_memory()
    assert 0 < used <= total


class _Worker:
    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.state = LEASED


class _Node:
    def __init__(self, workers: list[tuple[float, bool, _Worker]]) -> None:
        self.workers = workers
        self.killed: list[tuple[_Worker, int]] = []

    def oom_candidates(self) -> list[tuple[float, bool, _Worker]]:
        return [c for c in self.workers if c[2].state != DEAD]

    def oom_kill(self, w: _Worker, rss: int, used: int, total: int, threshold: float) -> None:
        self.killed.append((w, rss))


def test_one_kill_at_a_time_and_only_above_the_threshold():
    a, b = _Worker(10), _Worker(11)
    node = _Node([(1.0, True, a), (2.0, True, b)])
    mon = _memory.MemoryMonitor(0.9, 0.25, reader=lambda: (0, 1), rss=lambda pid: pid * 100)
    assert mon.act(node, (80, 100), 0.0) is None  # below
    assert mon.act(node, (95, 100), 0.0) is b
    assert node.killed == [(b, 1100)]
    assert mon.act(node, (95, 100), 0.1) is None  # b is still going away
    b.state = DEAD
    assert mon.act(node, (95, 100), 0.2) is None  # gone, but its memory gets a period
    assert mon.act(node, (95, 100), 0.5) is a
    assert mon.kills == 2


def test_sampling_follows_the_refresh_period():
    reads = []
    mon = _memory.MemoryMonitor(0.9, 0.25, reader=lambda: reads.append(1) or (1, 2))
    assert mon.sample(0.0) == (1, 2)
    assert mon.sample(0.1) is None
    assert mon.sample(0.3) == (1, 2)
    assert len(reads) == 2


def test_the_error_names_the_task_and_its_memory():
    e = exc.OutOfMemoryError(
        task_name="hog (0a0b)", rss=700 * 2**20, used=95 * 2**20, total=100 * 2**20, threshold=0.9
    )
    text = str(e)
    assert "hog (0a0b)" in text
    assert "700.0 MiB" in text
    assert "threshold 90%" in text
    back = pickle.loads(pickle.dumps(e))
    assert back.rss == e.rss
    assert str(back) == text
    assert "running out of memory" in str(exc.OutOfMemoryError())
