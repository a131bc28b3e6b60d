"""The node's memory monitor, as Ray's: above a threshold of the machine's (or its cgroup's)
memory, it kills the worker of the most recently started task, preferring tasks that may be
retried; the node retries that task later, with back-off, or fails it with
``OutOfMemoryError`` naming the task and the memory its worker used.

The choice of a victim is pure (``pick_victim``); reading memory (``system_memory``, the
victim's resident size) is the shell's, which calls ``MemoryMonitor.sample`` outside the node's
lock and ``MemoryMonitor.act`` under it. One kill at a time: the next waits until the last
victim's process is gone and its memory has had a refresh period to be returned.

Settings (environment of the node): ``RTML_MEMORY_USAGE_THRESHOLD`` (fraction, default 0.95)
and ``RTML_MEMORY_MONITOR_REFRESH_MS`` (default 250; 0 turns the monitor off).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from rtml._node._workers import DEAD

DEFAULT_THRESHOLD = 0.95
DEFAULT_REFRESH_MS = 250
THRESHOLD_ENV = "RTML_MEMORY_USAGE_THRESHOLD"
REFRESH_ENV = "RTML_MEMORY_MONITOR_REFRESH_MS"

T = TypeVar("T")


def pick_victim(candidates: Sequence[tuple[float, bool, T]]) -> T | None:
    """Of ``(started, retriable, item)``, the item to kill: the most recently started
    retriable one, else the most recently started one (None if there is none)."""
    best: tuple[float, bool, T] | None = None
    for c in candidates:
        if best is None or (c[1], c[0]) > (best[1], best[0]):
            best = c
    return None if best is None else best[2]


def _read_int(path: str) -> int | None:
    try:
        with open(path) as f:
            text = f.read().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def system_memory() -> tuple[int, int]:
    """(used, total) bytes of this machine, or of its cgroup when that is tighter. Used
    memory is what is not available (page cache that can be dropped does not count)."""
    info: dict[str, int] = {}
    with open("/proc/meminfo") as f:
        for line in f:
            name, _, rest = line.partition(":")
            if name in ("MemTotal", "MemAvailable"):
                info[name] = int(rest.split()[0]) * 1024
    total = info["MemTotal"]
    used = total - info.get("MemAvailable", 0)
    for limit_path, usage_path in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),  # cgroup v2
        (
            "/sys/fs/cgroup/memory/memory.limit_in_bytes",
            "/sys/fs/cgroup/memory/memory.usage_in_bytes",
        ),
    ):
        limit, usage = _read_int(limit_path), _read_int(usage_path)
        if limit is not None and usage is not None and 0 < limit < total:
            return usage, limit
    return used, total


def process_rss(pid: int) -> int:
    """Resident bytes of process ``pid`` (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, IndexError, ValueError):
        return 0


def settings_from_env(env: Mapping[str, str] | None = None) -> tuple[float, float]:
    """(threshold, refresh seconds) from the environment; bad values raise ValueError naming
    the variable."""
    if env is None:
        env = os.environ
    raw = env.get(THRESHOLD_ENV)
    threshold = DEFAULT_THRESHOLD
    if raw is not None:
        try:
            threshold = float(raw)
        except ValueError:
            threshold = -1.0
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"{THRESHOLD_ENV}={raw!r}: give a fraction in (0, 1], e.g. 0.95")
    raw = env.get(REFRESH_ENV)
    refresh_ms = float(DEFAULT_REFRESH_MS)
    if raw is not None:
        try:
            refresh_ms = float(raw)
        except ValueError:
            refresh_ms = -1.0
        if refresh_ms < 0:
            raise ValueError(f"{REFRESH_ENV}={raw!r}: give milliseconds (0 turns it off)")
    return threshold, refresh_ms / 1000.0


class MemoryMonitor:
    def __init__(
        self,
        threshold: float,
        refresh_s: float,
        reader: Callable[[], tuple[int, int]] = system_memory,
        rss: Callable[[int], int] = process_rss,
    ) -> None:
        self.threshold = threshold
        self.refresh_s = refresh_s
        self.reader = reader
        self.rss = rss
        self.next_at = 0.0
        self.victim: Any = None  # the last worker killed, until its process is gone
        self.quiet_until = 0.0
        self.kills = 0

    def due(self, now: float) -> bool:
        return now >= self.next_at

    def sample(self, now: float) -> tuple[int, int] | None:
        """Read memory if a check is due (no lock held); None if not due."""
        if now < self.next_at:
            return None
        self.next_at = now + self.refresh_s
        try:
            return self.reader()
        except (OSError, KeyError, ValueError):
            return None

    def act(self, node: Any, usage: tuple[int, int], now: float) -> Any:
        """Under node.lock: above the threshold, kill one victim (returned) unless the last
        one is still going away."""
        used, total = usage
        if total <= 0 or used / total < self.threshold:
            return None
        if self.victim is not None:
            if self.victim.state != DEAD:
                return None  # its memory is not back yet
            self.victim = None
            self.quiet_until = now + self.refresh_s
        if now < self.quiet_until:
            return None
        w = pick_victim(node.oom_candidates())
        if w is None:
            return None
        node.oom_kill(w, self.rss(w.pid), used, total, self.threshold)
        self.victim = w
        self.kills += 1
        return w


def monitor_from_env() -> MemoryMonitor | None:
    threshold, refresh_s = settings_from_env()
    if refresh_s <= 0:
        return None
    return MemoryMonitor(threshold, refresh_s)
