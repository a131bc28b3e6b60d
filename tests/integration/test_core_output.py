"""Worker output: what tasks print shows up on the driver, prefixed with the task and pid."""

from __future__ import annotations

import os
import sys

import pytest

import rtml
from conftest import wait_for


@rtml.remote
def printer(token):
    print(f"hello from {token}")  # noqa: T201
    return os.getpid()


@rtml.remote
def multi_line(token):
    print(f"line one {token}\nline two {token}")  # noqa: T201
    print(f"to stderr {token}", file=sys.stderr)  # noqa: T201
    print(f"no newline {token}", end="")  # noqa: T201
    return os.getpid()


class _Output:
    """Accumulates what capfd has captured so far (readouterr() consumes it)."""

    def __init__(self, capfd):
        self.capfd = capfd
        self.out = ""
        self.err = ""

    def read(self):
        captured = self.capfd.readouterr()
        self.out += captured.out
        self.err += captured.err
        return self

    def has(self, text, stream="out"):
        self.read()
        return text in (self.out if stream == "out" else self.err)


@pytest.fixture
def output(capfd):
    return _Output(capfd)


def test_task_print_appears_on_driver_stdout_with_prefix(runtime, output):
    rtml.init(num_cpus=1)
    pid = rtml.get(printer.remote("task-a"), timeout=30)
    line = f"(printer pid={pid}) hello from task-a"
    wait_for(lambda: output.has(line), timeout=10, what=f"{line!r} on stdout")
    assert line + "\n" in output.out


def test_each_line_is_prefixed_and_stderr_goes_to_stderr(runtime, output):
    rtml.init(num_cpus=1)
    pid = rtml.get(multi_line.remote("t2"), timeout=30)
    prefix = f"(multi_line pid={pid}) "
    wait_for(
        lambda: output.has(prefix + "no newline t2"), timeout=10, what="the unterminated last line"
    )
    assert prefix + "line one t2\n" in output.out
    assert prefix + "line two t2\n" in output.out
    wait_for(lambda: output.has(prefix + "to stderr t2", "err"), timeout=10, what="the stderr line")
    assert "to stderr t2" not in output.out


def test_prefix_uses_the_task_name_option(runtime, output):
    rtml.init(num_cpus=1)
    pid = rtml.get(printer.options(name="renamed").remote("t3"), timeout=30)
    line = f"(renamed pid={pid}) hello from t3"
    wait_for(lambda: output.has(line), timeout=10, what=f"{line!r} on stdout")


def test_output_of_nested_tasks(runtime, output):
    rtml.init(num_cpus=2)

    @rtml.remote
    def outer():
        return rtml.get(printer.remote("nested"), timeout=30)

    pid = rtml.get(outer.remote(), timeout=60)
    wait_for(
        lambda: output.has(f"(printer pid={pid}) hello from nested"),
        timeout=10,
        what="the nested task's output",
    )


def test_no_output_with_log_to_driver_false(runtime, output):
    rtml.init(num_cpus=1, log_to_driver=False)
    pids = rtml.get([printer.remote("silent"), multi_line.remote("silent")], timeout=30)
    # output travels ahead of the result on the worker's channel: had it been printed, it
    # would be there by the time get() returns; one more round trip for good measure
    rtml.get(printer.remote("silent-2"), timeout=30)
    output.read()
    assert "silent" not in output.out
    assert "silent" not in output.err
    for pid in pids:
        assert f"pid={pid}" not in output.out
