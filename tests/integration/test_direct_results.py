"""A driver's ``get`` of one result reads it from the worker's connection itself.

While it polls, the selector thread leaves that connection alone, so everything else the
worker sends in the meantime (output, nested tasks, gets, its death) must be handled by the
polling thread exactly as the selector would, and the connection must go back to the selector
afterwards, whatever happened.
"""

from __future__ import annotations

import os

import pytest

import rtml
from conftest import in_threads
from rtml import exceptions as exc
from rtml._runtime import _context, _driver

pytestmark = pytest.mark.usefixtures("shared_runtime")


@pytest.fixture
def long_polls(monkeypatch):
    """Poll for up to 20 s, so that the worker's answer always arrives while polling."""
    monkeypatch.setattr(_driver, "SERVE_S", 20.0)
    return _context.get_client().shell


@rtml.remote
def square(x):
    return x * x


@rtml.remote
def nested(x):
    import time

    time.sleep(0.02)  # the driver is polling this worker by now
    print(f"nested sees {x}")  # noqa: T201
    return rtml.get(square.remote(x), timeout=30) + 1


@rtml.remote(max_retries=0)
def die():
    os._exit(3)


@rtml.remote
def slow(s):
    import time

    time.sleep(s)
    return s


def test_sync_gets_are_answered_while_the_driver_polls(long_polls):
    assert [rtml.get(square.remote(i), timeout=30) for i in range(50)] == [i * i for i in range(50)]
    # A result that lands before get() is called needs no polling; one that takes 20 ms
    # arrives while the driver polls.
    before = long_polls.served
    assert [rtml.get(slow.remote(0.02), timeout=30) for _ in range(10)] == [0.02] * 10
    assert long_polls.served - before == 10


def test_output_and_nested_tasks_of_the_polled_worker_are_served(long_polls, capfd):
    before = long_polls.served
    assert rtml.get(nested.remote(7), timeout=30) == 50
    assert long_polls.served > before
    rtml.get(rtml.put(0), timeout=10)  # (output is written before the result is sealed)
    import time

    deadline = time.monotonic() + 10
    out = ""
    while "nested sees 7" not in out and time.monotonic() < deadline:
        out += capfd.readouterr().out
        time.sleep(0.01)
    assert "nested sees 7" in out


def test_a_worker_dying_while_polled_fails_the_task_and_the_runtime_goes_on(long_polls):
    with pytest.raises(exc.WorkerCrashedError):
        rtml.get(die.remote(), timeout=30)
    assert rtml.get(square.remote(3), timeout=30) == 9


def test_after_polling_gives_up_the_selector_delivers_the_result(monkeypatch):
    monkeypatch.setattr(_driver, "SERVE_S", 0.005)
    shell = _context.get_client().shell
    before = shell.served
    assert rtml.get(slow.remote(0.3), timeout=30) == 0.3  # polled 5 ms, then the selector
    assert shell.served == before
    with pytest.raises(exc.GetTimeoutError):
        rtml.get(slow.remote(2), timeout=0.05)
    assert rtml.get(square.remote(4), timeout=30) == 16


def test_threads_getting_results_of_one_worker_at_once(long_polls):
    results: dict[int, int] = {}

    def run(i: int) -> None:
        for j in range(20):
            results[i * 100 + j] = rtml.get(square.remote(i * 100 + j), timeout=30)

    assert not in_threads(run, 4, timeout=60)
    assert results == {k: k * k for k in results}
    assert len(results) == 80


def test_without_epoll_the_connection_leaves_the_selector_and_comes_back(monkeypatch):
    shell = _context.get_client().shell
    monkeypatch.setattr(shell, "_epoll", None)  # as on platforms whose selector is not epoll
    monkeypatch.setattr(_driver, "SERVE_S", 20.0)
    before = shell.served
    assert [rtml.get(slow.remote(0.02), timeout=30) for _ in range(3)] == [0.02] * 3
    assert shell.served - before == 3
    monkeypatch.setattr(_driver, "SERVE_S", 0.005)
    assert rtml.get(slow.remote(0.2), timeout=30) == 0.2  # delivered by the selector again
