"""Shared fixtures: a runtime per test module or per test, and a leak check after every test.

The leak check compares against what existed before the first test: once no runtime is
running, no child process, rtml thread, socket/pipe descriptor or rtml shared-memory segment
may remain (waiting on that condition with a deadline, never a bare sleep).
"""

from __future__ import annotations

import glob
import os
import threading
import time

import psutil
import pytest

import rtml


def _children() -> set[int]:
    return {
        p.pid
        for p in psutil.Process().children(recursive=True)
        if p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    }


def _threads() -> set[str]:
    return {t.name for t in threading.enumerate() if t.name.startswith("rtml")}


def _fds() -> set[str]:
    out = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(("socket:", "pipe:")):
            out.add(f"{fd}:{target}")
    return out


def _segments() -> set[str]:
    # Only sessions started by this test process: other runs on the machine may be live.
    from rtml._runtime._runtime import SESSIONS

    out: set[str] = set()
    for session in SESSIONS:
        out.update(glob.glob(f"/dev/shm/rtml_{session}_*"))
    return out


def _snapshot() -> dict[str, set]:
    return {"processes": _children(), "threads": _threads(), "fds": _fds(), "segments": _segments()}


_BASELINE: dict[str, set] = {}


def wait_for(cond, timeout: float = 10.0, interval: float = 0.01, what: str = "condition"):
    """Poll ``cond`` until it returns a truthy value or ``timeout`` passes (then fail)."""
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


README = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "README.md")


def readme_block(heading: str) -> str:
    """The first python code block of the README after ``heading``."""
    import re

    with open(README, encoding="utf-8") as f:
        text = f.read()
    section = text[text.index(heading) :]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def in_threads(target, n: int, timeout: float) -> list[BaseException]:
    """Run ``target(i)`` for i in range(n) on n threads at once; the exceptions they raised
    (a thread still running after ``timeout`` counts as one)."""
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            target(i)
        except BaseException as e:  # reported to the caller
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    errors.extend(
        TimeoutError(f"{t.name} still running after {timeout} s") for t in threads if t.is_alive()
    )
    return errors


@pytest.fixture(autouse=True, scope="session")
def _baseline():
    _BASELINE.update(_snapshot())
    yield
    rtml.shutdown()
    _check_leaks("end of session")


def _check_leaks(where: str) -> None:
    def leaks() -> dict[str, set]:
        now = _snapshot()
        return {k: now[k] - _BASELINE[k] for k in now if now[k] - _BASELINE[k]}

    deadline = time.monotonic() + 10
    found = leaks()
    while found and time.monotonic() < deadline:
        time.sleep(0.02)
        found = leaks()
    assert not found, f"leaked after {where}: {found}"


@pytest.fixture(autouse=True)
def _no_leaks(request):
    yield
    if not rtml.is_initialized():
        _check_leaks(request.node.nodeid)


@pytest.fixture(scope="module")
def shared_runtime():
    """One runtime for a whole test module (tests that do not break or reconfigure it)."""
    rtml.init(num_cpus=2)
    yield
    rtml.shutdown()


@pytest.fixture
def runtime():
    """A fresh runtime for one test; pass init arguments with the ``runtime_args`` marker."""
    yield rtml
    rtml.shutdown()


@pytest.fixture
def gate_path(tmp_path):
    """A file tasks wait for; touched at teardown too, so a failed test frees its workers."""
    path = tmp_path / "gate"
    yield path
    path.touch()
