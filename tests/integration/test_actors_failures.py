"""Actor failures with real processes: kill, crashes, restarts, retries, exits, bad code."""

from __future__ import annotations

import os
import signal

import psutil
import pytest

import rtml
from conftest import wait_for
from rtml import exceptions as exc

T = 20


@pytest.fixture(scope="module", autouse=True)
def _runtime(shared_runtime):
    return


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@rtml.remote
class Svc:
    def __init__(self, marker: str | None = None) -> None:
        self.calls = 0
        self.marker = marker

    def work(self) -> int:
        self.calls += 1
        return self.calls

    def pid(self) -> int:
        return os.getpid()

    def crash_once(self) -> str:
        """Kills its own process the first time (a marker file remembers it)."""
        if not os.path.exists(self.marker):
            open(self.marker, "w").close()
            os._exit(3)
        return "survived"

    def die(self, how: str) -> None:
        if how == "signal":
            os.kill(os.getpid(), signal.SIGKILL)
        os._exit(7)

    def fail(self, msg: str) -> None:
        raise ValueError(msg)

    def leave(self) -> str:
        rtml.actor.exit_actor()
        return "not reached"

    def on_exit_write(self, path: str) -> None:
        import atexit
        import pathlib

        atexit.register(pathlib.Path(path).write_text, "bye")


def test_kill_fails_pending_and_later_calls():
    a = Svc.remote()
    pid = rtml.get(a.pid.remote(), timeout=T)
    rtml.kill(a)
    with pytest.raises(exc.ActorDiedError, match=r"rtml\.kill"):
        rtml.get(a.work.remote(), timeout=T)
    wait_for(lambda: _gone(pid), timeout=T, what="the killed actor's process to exit")
    assert exc.RayActorError is exc.ActorDiedError
    with pytest.raises(TypeError, match="cancel"):
        rtml.kill(a.work.remote())


def test_crash_without_restarts_reports_the_exit_code():
    a = Svc.remote()
    with pytest.raises(exc.ActorDiedError, match="exit code 7"):
        rtml.get(a.die.remote("exit"), timeout=T)
    with pytest.raises(exc.ActorDiedError, match="exit code 7"):
        rtml.get(a.work.remote(), timeout=T)
    b = Svc.remote()
    with pytest.raises(exc.ActorDiedError, match="signal 9"):
        rtml.get(b.die.remote("signal"), timeout=T)


def test_restart_reruns_the_constructor_until_restarts_run_out():
    a = Svc.options(max_restarts=1).remote()
    pid = rtml.get(a.pid.remote(), timeout=T)
    assert rtml.get(a.work.remote(), timeout=T) == 1
    rtml.kill(a, no_restart=False)
    # The call made right after the kill waits for the restarted actor: fresh state.
    assert rtml.get(a.work.remote(), timeout=T) == 1
    assert rtml.get(a.pid.remote(), timeout=T) != pid
    with pytest.raises(exc.ActorDiedError, match="exit code 7"):
        rtml.get(a.die.remote("exit"), timeout=T)
    with pytest.raises(exc.ActorDiedError, match="1 restart"):
        rtml.get(a.work.remote(), timeout=T)


def test_max_task_retries_resends_the_call_that_was_in_flight(tmp_path):
    a = Svc.options(max_restarts=-1, max_task_retries=1).remote(str(tmp_path / "m1"))
    assert rtml.get(a.crash_once.remote(), timeout=T) == "survived"
    b = Svc.options(max_restarts=1).remote(str(tmp_path / "m2"))
    with pytest.raises(exc.ActorDiedError, match="max_task_retries"):
        rtml.get(b.crash_once.remote(), timeout=T)
    assert rtml.get(b.crash_once.remote(), timeout=T) == "survived"  # restarted


def test_method_exception_fails_only_that_call():
    a = Svc.remote()
    assert rtml.get(a.work.remote(), timeout=T) == 1
    with pytest.raises(ValueError, match="bad input") as info:
        rtml.get(a.fail.remote("bad input"), timeout=T)
    assert isinstance(info.value, exc.TaskError)
    assert "Svc.fail" in str(info.value)
    assert rtml.get(a.work.remote(), timeout=T) == 2  # state kept, still serving


def test_constructor_exception_kills_the_actor_with_its_traceback():
    @rtml.remote
    class Broken:
        def __init__(self, x):
            raise RuntimeError(f"bad config {x}")

        def f(self):
            return 1

    b = Broken.options(max_restarts=2).remote(42)
    for _ in range(2):
        with pytest.raises(exc.ActorDiedError) as info:
            rtml.get(b.f.remote(), timeout=T)
        text = str(info.value)
        assert "bad config 42" in text
        assert "__init__" in text
        assert "Traceback" in text


def test_exit_actor_fails_its_own_call_and_later_ones(tmp_path):
    a = Svc.options(max_restarts=3).remote()
    pid = rtml.get(a.pid.remote(), timeout=T)
    flag = tmp_path / "atexit"
    rtml.get(a.on_exit_write.remote(str(flag)), timeout=T)
    with pytest.raises(exc.ActorDiedError, match="exit_actor"):  # as in Ray
        rtml.get(a.leave.remote(), timeout=T)
    with pytest.raises(exc.ActorDiedError, match="exit_actor"):
        rtml.get(a.work.remote(), timeout=T)
    wait_for(lambda: _gone(pid), timeout=T, what="the actor's process to exit")
    assert flag.read_text() == "bye"  # atexit handlers ran
    with pytest.raises(TypeError, match="inside an actor"):
        rtml.actor.exit_actor()


@pytest.mark.parametrize("method", ["__rtml_terminate__", "__ray_terminate__"])
def test_terminate_runs_earlier_calls_then_exits_gracefully(tmp_path, method):
    a = Svc.remote()
    pid = rtml.get(a.pid.remote(), timeout=T)
    flag = tmp_path / "atexit"
    a.on_exit_write.remote(str(flag))
    earlier = [a.work.remote() for _ in range(3)]
    getattr(a, method).remote()
    later = a.work.remote()
    assert rtml.get(earlier, timeout=T) == [1, 2, 3]
    with pytest.raises(exc.ActorDiedError, match="terminate"):
        rtml.get(later, timeout=T)
    wait_for(lambda: _gone(pid), timeout=T, what="the actor's process to exit")
    assert flag.read_text() == "bye"


def test_retry_exceptions_on_a_method(tmp_path):
    @rtml.remote
    class Flaky:
        def __init__(self):
            self.n = 0

        @rtml.method(retry_exceptions=[KeyError])
        def flaky(self):
            self.n += 1
            if self.n < 3:
                raise KeyError("not yet")
            return self.n

    f = Flaky.options(max_task_retries=5).remote()
    assert rtml.get(f.flaky.remote(), timeout=T) == 3
    with pytest.raises(KeyError):
        rtml.get(Flaky.remote().flaky.options(max_task_retries=0).remote(), timeout=T)
