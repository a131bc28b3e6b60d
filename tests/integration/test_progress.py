"""``rtml.util.progress`` / ``progress_get``: order, values, errors, and both renderers.

tqdm is optional and not installed in the test environment: the fallback line is tested by
capturing its stream, and the tqdm path with a small fake ``tqdm`` module put in
``sys.modules``. Completion order is forced with a gate file, never with timing.
"""

from __future__ import annotations

import io
import os
import sys
import types

import pytest

import rtml
from conftest import wait_for
from rtml import exceptions as exc
from rtml.util import progress, progress_get
from rtml.util.progress import _TextBar, format_line

pytestmark = pytest.mark.usefixtures("shared_runtime")


@rtml.remote
def square(x):
    return x * x


@rtml.remote
def after_gate(path, value):
    wait_for(lambda: os.path.exists(path), timeout=60, what=path)
    return value


@rtml.remote
def broken(x):
    raise ValueError(f"broken {x}")


@rtml.remote
def produce(n):
    yield from range(n)


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def no_tqdm(monkeypatch):
    """Make sure the fallback renderer is used even where tqdm happens to be installed."""
    monkeypatch.setitem(sys.modules, "tqdm", None)  # import tqdm raises ImportError


# ---------------------------------------------------------------------------------- the line
def test_format_line():
    assert format_line("sim", 40, 100, 3.2) == "sim: 40/100 (40%) 12.5/s elapsed 0:03 eta 0:04"
    assert format_line(None, 0, 10, 0.0) == "0/10 (0%) 0.0/s elapsed 0:00 eta ?"
    assert format_line("gen", 7, None, 3725.0) == "gen: 7 0.0/s elapsed 1:02:05"
    assert format_line(None, 0, 0, 1.0).startswith("0/0 (100%)")


def test_text_bar_to_a_file_writes_few_lines():
    buf, clock = io.StringIO(), _Clock()
    bar = _TextBar(3, "job", buf, clock=clock, log_every=10.0)
    clock.now += 1
    bar.update(1)  # within log_every: not written
    clock.now += 10
    bar.update(1)
    clock.now += 1
    bar.update(1)
    bar.close()
    bar.close()
    assert buf.getvalue().splitlines() == [
        "job: 0/3 (0%) 0.0/s elapsed 0:00 eta ?",
        "job: 2/3 (66%) 0.2/s elapsed 0:11 eta 0:05",
        "job: 3/3 (100%) 0.2/s elapsed 0:12 eta 0:00",
    ]


def test_text_bar_on_a_terminal_redraws_in_place():
    term, clock = _Terminal(), _Clock()
    bar = _TextBar(2, None, term, clock=clock)
    clock.now += 1
    bar.update(2)
    bar.close()
    out = term.getvalue()
    assert out.startswith("\r0/2 (0%)")
    assert "\r2/2 (100%)" in out
    assert out.endswith("\n")
    assert out.count("\n") == 1


# ---------------------------------------------------------------------------------- iterator
def test_progress_yields_every_ref_once_and_draws_the_fallback(no_tqdm):
    refs = [square.remote(i) for i in range(20)]
    buf = io.StringIO()
    seen = list(progress(refs, desc="squares", file=buf))
    assert sorted(seen, key=refs.index) == refs
    assert len(seen) == 20
    lines = buf.getvalue().splitlines()
    assert lines[0].startswith("squares: 0/20 (0%)")
    assert lines[-1].startswith("squares: 20/20 (100%)")
    assert "elapsed" in lines[-1]


def test_progress_yields_in_finishing_order(gate_path):
    slow = after_gate.remote(str(gate_path), "slow")
    fast = square.remote(3)
    it = progress([slow, fast], disable=True, values=True)
    assert next(it) == 9  # the fast one first, while the slow one still waits
    gate_path.touch()
    assert next(it) == "slow"
    with pytest.raises(StopIteration):
        next(it)


def test_progress_duplicates_values_and_errors(no_tqdm):
    a, b = square.remote(2), square.remote(5)
    assert sorted(progress([a, b, a], values=True, disable=True)) == [4, 4, 25]
    buf = io.StringIO()
    bad = broken.remote(1)
    with pytest.raises(ValueError, match="broken 1") as info:
        list(progress([a, bad], values=True, file=buf))
    assert isinstance(info.value, exc.TaskError)
    assert buf.getvalue()  # the bar was closed (its last line written) on the error
    # Without values, a failed ref is just a finished one.
    assert set(progress([a, bad], disable=True)) == {a, bad}


def test_progress_over_a_streaming_generator(no_tqdm):
    buf = io.StringIO()
    assert list(progress(produce.remote(5), values=True, file=buf, desc="gen")) == [0, 1, 2, 3, 4]
    assert buf.getvalue().splitlines()[-1].startswith("gen: 5 ")


def test_progress_rejects_what_is_not_refs():
    with pytest.raises(TypeError, match="ObjectRefs"):
        progress([1, 2])
    with pytest.raises(TypeError, match="ObjectRefs"):
        progress_get(42)


def test_disable_draws_nothing(no_tqdm, capsys):
    refs = [square.remote(i) for i in range(3)]
    assert sorted(progress(refs, values=True, disable=True)) == [0, 1, 4]
    captured = capsys.readouterr()
    assert captured.err == ""
    assert captured.out == ""


# ---------------------------------------------------------------------------------- get
def test_progress_get_returns_values_in_order(no_tqdm):
    refs = [square.remote(i) for i in range(10)]
    buf = io.StringIO()
    assert progress_get(refs, file=buf) == [i * i for i in range(10)]
    assert buf.getvalue().splitlines()[-1].startswith("10/10 (100%)")
    assert progress_get(square.remote(4), disable=True) == 16
    assert progress_get([], disable=True) == []
    with pytest.raises(ValueError, match="broken 2"):
        progress_get([refs[0], broken.remote(2)], disable=True)


def test_progress_get_timeout(gate_path):
    stuck = after_gate.remote(str(gate_path), 1)
    with pytest.raises(exc.GetTimeoutError, match="1 of 1 refs unfinished"):
        progress_get([stuck], disable=True, timeout=0.05)
    gate_path.touch()
    assert progress_get([stuck], disable=True, timeout=60) == [1]


# ---------------------------------------------------------------------------------- tqdm
def test_tqdm_is_used_when_installed(monkeypatch):
    bars = []

    class FakeTqdm:
        def __init__(self, **kwargs):
            self.kwargs, self.n, self.closed = kwargs, 0, False
            bars.append(self)

        def update(self, n=1):
            self.n += n

        def refresh(self):
            pass

        def close(self):
            self.closed = True

    fake = types.ModuleType("tqdm")
    fake.tqdm = FakeTqdm
    monkeypatch.setitem(sys.modules, "tqdm", fake)
    refs = [square.remote(i) for i in range(6)]
    buf = io.StringIO()
    assert progress_get(refs, desc="with tqdm", file=buf) == [i * i for i in range(6)]
    (bar,) = bars
    assert bar.kwargs == {"total": 6, "desc": "with tqdm", "file": buf}
    assert bar.n == 6
    assert bar.closed
    assert buf.getvalue() == ""
    list(progress(refs[:2], total=10, disable=True))
    assert len(bars) == 1  # disabled: no bar at all
