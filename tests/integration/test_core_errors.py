"""Failures: task exceptions, worker crashes and retries, cancellation, unpicklable values.

Attempts are counted with files in ``tmp_path`` (each attempt creates one), never with timing.
After every failure the runtime must still run new tasks (``_still_works``).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import uuid

import psutil
import pytest

import rtml
from conftest import wait_for
from rtml.exceptions import (
    RtmlError,
    TaskCancelledError,
    TaskError,
    WorkerCrashedError,
)

pytestmark = pytest.mark.usefixtures("shared_runtime")


class CustomError(Exception):
    def __init__(self, code, detail):
        super().__init__(f"custom failure {code}")
        self.code, self.detail = code, detail


def _attempt(directory: str) -> int:
    """Record one attempt; return how many attempts there have been (this one included)."""
    open(os.path.join(directory, f"attempt-{uuid.uuid4().hex}"), "w").close()
    return _attempts(directory)


def _attempts(directory: str) -> int:
    return len([n for n in os.listdir(directory) if n.startswith("attempt-")])


@rtml.remote
def ok(x=1):
    return x


@rtml.remote
def raise_value_error(pid_file):
    with open(pid_file, "w") as f:
        f.write(str(os.getpid()))
    raise ValueError("bad value 12345")


@rtml.remote
def raise_custom():
    raise CustomError(7, {"why": "testing"})


@rtml.remote
def add_one(x):
    return x + 1


@rtml.remote
def crash(directory):
    _attempt(directory)
    os._exit(1)


@rtml.remote
def crash_first_attempts(directory, crashes):
    if _attempt(directory) <= crashes:
        os._exit(1)
    return "survived"


@rtml.remote
def fail_first_attempts(directory, failures, exc_type):
    n = _attempt(directory)
    if n <= failures:
        raise exc_type(f"attempt {n} failed")
    return n


@rtml.remote
def wait_for_gate(gate, started=None):
    if started:
        open(started, "w").close()
    wait_for(lambda: os.path.exists(gate), timeout=60, what=gate)
    return "gate opened"


@rtml.remote
def loop_until_cancelled(started, timeout=5):
    """Sleeps in a loop (wait_for polls) until cancelled, or gives up after ``timeout``."""
    with open(started + ".tmp", "w") as f:
        f.write(str(os.getpid()))
    os.replace(started + ".tmp", started)  # atomic: the test never reads a half-written pid
    try:
        wait_for(lambda: False, timeout=timeout, what="cancellation")
    except AssertionError:
        return "not cancelled"


@rtml.remote
def parent_of_looping_child(started):
    return rtml.get(loop_until_cancelled.remote(started), timeout=60)


@rtml.remote
def return_lock():
    return threading.Lock()


def _still_works():
    assert rtml.get([ok.remote(i) for i in range(4)], timeout=60) == [0, 1, 2, 3]


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


# ---------------------------------------------------------------------------------- exceptions


def test_task_exception_is_task_error_and_original_class(tmp_path):
    pid_file = tmp_path / "pid"
    ref = raise_value_error.remote(str(pid_file))
    with pytest.raises(ValueError) as info:
        rtml.get(ref, timeout=30)
    err = info.value
    assert isinstance(err, TaskError)
    assert isinstance(err, RtmlError)
    assert isinstance(err, rtml.exceptions.RayTaskError)
    pid = int(pid_file.read_text())
    assert pid != os.getpid()
    text = str(err)
    assert "raise_value_error" in text
    assert f"pid={pid}" in text
    assert "bad value 12345" in text
    assert 'raise ValueError("bad value 12345")' in text  # the remote traceback
    assert "Traceback" in text
    assert isinstance(err.cause, ValueError)
    # getting it again raises again
    with pytest.raises(ValueError):
        rtml.get(ref, timeout=30)
    _still_works()


def test_except_original_class_works():
    try:
        rtml.get(raise_custom.remote(), timeout=30)
    except CustomError as e:
        assert e.code == 7
        assert e.detail == {"why": "testing"}
        assert isinstance(e, TaskError)
    else:
        pytest.fail("no exception raised")


def test_error_propagates_through_dependent_tasks(tmp_path):
    failed = raise_value_error.remote(str(tmp_path / "pid"))
    downstream = add_one.remote(add_one.remote(failed))
    with pytest.raises(ValueError, match="bad value 12345") as info:
        rtml.get(downstream, timeout=30)
    assert "raise_value_error" in str(info.value)
    # one failed item fails a list get
    with pytest.raises(ValueError):
        rtml.get([ok.remote(), downstream], timeout=30)
    _still_works()


def test_exception_caught_inside_a_task():
    @rtml.remote
    def catcher():
        try:
            rtml.get(raise_custom.remote(), timeout=30)
        except CustomError as e:
            return ("caught", e.code, isinstance(e, TaskError))
        return "nothing raised"

    assert rtml.get(catcher.remote(), timeout=60) == ("caught", 7, True)


# ---------------------------------------------------------------------------------- crashes


def test_crashing_worker_is_retried_then_fails(tmp_path):
    ref = crash.options(max_retries=2).remote(str(tmp_path))
    with pytest.raises(WorkerCrashedError) as info:
        rtml.get(ref, timeout=60)
    assert _attempts(str(tmp_path)) == 3  # 1 try + 2 retries
    assert "crash" in str(info.value)
    _still_works()


def test_max_retries_zero_fails_at_once(tmp_path):
    ref = crash.options(max_retries=0).remote(str(tmp_path))
    with pytest.raises(WorkerCrashedError):
        rtml.get(ref, timeout=60)
    assert _attempts(str(tmp_path)) == 1
    _still_works()


def test_default_max_retries_is_three(tmp_path):
    with pytest.raises(WorkerCrashedError):
        rtml.get(crash.remote(str(tmp_path)), timeout=60)
    assert _attempts(str(tmp_path)) == 4


def test_task_that_crashes_once_then_succeeds(tmp_path):
    ref = crash_first_attempts.options(max_retries=1).remote(str(tmp_path), 1)
    assert rtml.get(ref, timeout=60) == "survived"
    assert _attempts(str(tmp_path)) == 2
    _still_works()


def test_crashed_workers_are_replaced(tmp_path):
    # more crashes than CPUs: each one needs a fresh worker to run at all
    refs = [crash.options(max_retries=0).remote(str(tmp_path)) for _ in range(5)]
    for ref in refs:
        with pytest.raises(WorkerCrashedError):
            rtml.get(ref, timeout=60)
    assert _attempts(str(tmp_path)) == 5
    _still_works()


@pytest.mark.parametrize("how", ["sigkill", "segfault"])
def test_hard_crashes_are_worker_crashed_errors(how):
    @rtml.remote(max_retries=0)
    def die(how):
        if how == "sigkill":
            os.kill(os.getpid(), signal.SIGKILL)
        import ctypes

        ctypes.string_at(0)  # SIGSEGV

    with pytest.raises(WorkerCrashedError) as info:
        rtml.get(die.remote(how), timeout=60)
    assert "signal" in str(info.value)
    _still_works()


def test_system_exit_in_a_task_is_a_task_error():
    @rtml.remote(max_retries=0)
    def exits():
        sys.exit(3)

    with pytest.raises(TaskError) as info:
        rtml.get(exits.remote(), timeout=30)
    assert isinstance(info.value, SystemExit)
    _still_works()


def test_unpicklable_exception_still_reports_its_message():
    @rtml.remote
    def raise_holding_a_lock():
        err = RuntimeError("failed while holding a lock")
        err.lock = threading.Lock()
        raise err

    with pytest.raises(TaskError) as info:
        rtml.get(raise_holding_a_lock.remote(), timeout=30)
    assert "failed while holding a lock" in str(info.value)
    assert "raise_holding_a_lock" in str(info.value)
    _still_works()


def test_get_timeout_inside_a_task(gate_path):
    @rtml.remote
    def impatient(gate):
        try:
            rtml.get(wait_for_gate.remote(gate), timeout=0.2)
        except rtml.exceptions.GetTimeoutError as e:
            return type(e).__name__
        return "no timeout"

    assert rtml.get(impatient.remote(str(gate_path)), timeout=60) == "GetTimeoutError"


# ---------------------------------------------------------------------------------- app retries


def test_application_errors_are_not_retried_by_default(tmp_path):
    ref = fail_first_attempts.options(max_retries=3).remote(str(tmp_path), 1, ValueError)
    with pytest.raises(ValueError, match="attempt 1 failed"):
        rtml.get(ref, timeout=60)
    assert _attempts(str(tmp_path)) == 1


def test_retry_exceptions_true(tmp_path):
    ref = fail_first_attempts.options(max_retries=3, retry_exceptions=True).remote(
        str(tmp_path), 2, KeyError
    )
    assert rtml.get(ref, timeout=60) == 3


def test_retry_exceptions_true_gives_up_after_max_retries(tmp_path):
    ref = fail_first_attempts.options(max_retries=2, retry_exceptions=True).remote(
        str(tmp_path), 10, ValueError
    )
    with pytest.raises(ValueError, match="attempt 3 failed"):
        rtml.get(ref, timeout=60)
    assert _attempts(str(tmp_path)) == 3


def test_retry_exceptions_list_retries_listed_errors(tmp_path):
    ref = fail_first_attempts.options(max_retries=3, retry_exceptions=[ValueError]).remote(
        str(tmp_path), 2, ValueError
    )
    assert rtml.get(ref, timeout=60) == 3


def test_retry_exceptions_list_does_not_retry_other_errors(tmp_path):
    ref = fail_first_attempts.options(max_retries=3, retry_exceptions=[ValueError]).remote(
        str(tmp_path), 2, KeyError
    )
    with pytest.raises(KeyError):
        rtml.get(ref, timeout=60)
    assert _attempts(str(tmp_path)) == 1


# ---------------------------------------------------------------------------------- cancel


def test_cancel_queued_task(gate_path, tmp_path):
    # one task holding both CPUs: the next one can only queue
    busy = wait_for_gate.options(num_cpus=2).remote(str(gate_path), str(tmp_path / "busy"))
    wait_for((tmp_path / "busy").exists, timeout=30, what="the CPUs to be busy")
    assert "CPU" not in rtml.available_resources()  # used up: left out, as in Ray
    queued_marker = tmp_path / "queued-ran"
    queued = wait_for_gate.remote(str(gate_path), str(queued_marker))
    rtml.cancel(queued)
    with pytest.raises(TaskCancelledError):
        rtml.get(queued, timeout=30)
    gate_path.touch()
    assert rtml.get(busy, timeout=60) == "gate opened"
    _still_works()
    assert not queued_marker.exists(), "the cancelled task ran anyway"


def test_cancel_running_task(tmp_path):
    # repeated: the cancel must reach the task every time, not only when the timing is lucky
    for i in range(5):
        started = tmp_path / f"started-{i}"
        ref = loop_until_cancelled.remote(str(started))
        wait_for(started.exists, timeout=30, what="the task to start")
        pid = int(started.read_text())
        rtml.cancel(ref)
        try:
            value = rtml.get(ref, timeout=30)
        except TaskCancelledError:
            pass
        else:
            pytest.fail(f"cancel #{i + 1} was lost: the task kept running and returned {value!r}")
        assert _alive(pid), "force=False must not kill the worker"
    _still_works()


def test_cancel_running_parent_cancels_its_child(tmp_path):
    started = tmp_path / "child-started"
    parent = parent_of_looping_child.remote(str(started))
    wait_for(started.exists, timeout=30, what="the child task to start")
    rtml.cancel(parent)  # recursive=True by default
    with pytest.raises(TaskCancelledError):
        rtml.get(parent, timeout=30)
    # the child was cancelled too, so both CPUs come back long before its own deadline
    wait_for(
        lambda: rtml.available_resources()["CPU"] == 2,
        timeout=3,
        what="the cancelled child to release its CPU",
    )
    _still_works()


def test_force_cancel_kills_the_worker(tmp_path):
    started = tmp_path / "started"
    ref = loop_until_cancelled.remote(str(started))
    wait_for(started.exists, timeout=30, what="the task to start")
    pid = int(started.read_text())
    rtml.cancel(ref, force=True)
    with pytest.raises(TaskCancelledError):
        rtml.get(ref, timeout=30)
    wait_for(lambda: not _alive(pid), timeout=30, what="the worker to be killed")
    _still_works()


def test_cancel_finished_task_is_a_no_op():
    ref = ok.remote(5)
    assert rtml.get(ref, timeout=30) == 5
    rtml.cancel(ref)
    assert rtml.get(ref, timeout=30) == 5


def test_cancel_rejects_non_refs():
    with pytest.raises(TypeError, match="ObjectRef"):
        rtml.cancel("not a ref")


# ---------------------------------------------------------------------------------- pickling


def test_unpicklable_argument_raises_type_error_at_remote_time():
    lock = threading.Lock()
    with pytest.raises(TypeError, match="lock"):
        ok.remote(lock)
    with pytest.raises(TypeError, match="lock"):
        ok.remote(x={"nested": lock})
    _still_works()


def test_unpicklable_put_raises_type_error():
    with pytest.raises(TypeError, match="lock"):
        rtml.put(threading.Lock())


def test_unpicklable_return_value_is_a_task_error():
    with pytest.raises(TaskError) as info:
        rtml.get(return_lock.remote(), timeout=30)
    assert "return_lock" in str(info.value)
    assert "lock" in str(info.value).lower()
    _still_works()
