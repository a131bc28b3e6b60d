"""Actor state checkpoints with real processes: a SIGKILLed actor resumes from its last one.

Actors are killed while idle, with their pid from the actor listing (a call to ask it would
count towards the checkpoint interval), and only once the checkpoint the test expects is on
disk: periodic checkpoints are written by a background thread, so a kill right after one was
taken may find only the one before. They have ``max_task_retries`` so that a call which
reaches the node before it has seen the death is re-sent to the restarted actor.
"""

from __future__ import annotations

import os
import signal
import threading

import psutil
import pytest

import rtml
from conftest import wait_for
from rtml import _checkpoint
from rtml import exceptions as exc
from rtml.util.state import list_actors

T = 20


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _pid(actor) -> int:
    aid = actor._actor_id.hex()
    return wait_for(
        lambda: next(
            (
                r["pid"]
                for r in list_actors(limit=10_000)
                if r["actor_id"] == aid and r["state"] == "ALIVE"
            ),
            None,
        ),
        timeout=T,
        what="the actor to be alive",
    )


def _sigkill(actor) -> None:
    pid = _pid(actor)
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: _gone(pid), timeout=T, what="the actor's process to die")


def _files(root) -> list[str]:
    return sorted(
        os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs
    )


def _saved(root) -> list[int]:
    """Sequence numbers of the checkpoint files under ``root`` (one per actor)."""
    out = []
    for d, _, fs in os.walk(root):
        if _checkpoint.FILE in fs:
            with open(os.path.join(d, _checkpoint.FILE), "rb") as f:
                out.append(_checkpoint.decode(f.read()).seq)
    return out


def _wait_saved(root, seq: int, actors: int = 1) -> None:
    wait_for(
        lambda: (lambda s: len(s) == actors and min(s) >= seq)(_saved(root)),
        timeout=T,
        what=f"checkpoint {seq} on disk",
    )


@rtml.remote
class Counter:
    def __init__(self, start: int = 0) -> None:
        self.n = start
        self.history: list[int] = []

    def inc(self) -> int:
        self.n += 1
        self.history.append(self.n)
        return self.n

    def state(self) -> tuple[int, list[int]]:
        return self.n, self.history

    def pid(self) -> int:
        return os.getpid()


@rtml.remote
class Hooked:
    """Holds a lock (unpicklable): only its own hooks make it checkpointable."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.n = 0
        self.restores = 0

    def __rtml_checkpoint__(self) -> dict:
        with self.lock:
            return {"n": self.n, "restores": self.restores}

    def __rtml_restore__(self, state: dict) -> None:
        self.n = state["n"]
        self.restores = state["restores"] + 1

    def inc(self) -> int:
        self.n += 1
        return self.n

    def get(self) -> tuple[int, int]:
        return self.n, self.restores

    def pid(self) -> int:
        return os.getpid()


# ---------------------------------------------------------------------------- own runtimes
# (before the module's shared runtime starts: these start and stop their own)
def test_shutdown_removes_what_the_session_left(tmp_path, monkeypatch):
    monkeypatch.setenv("RTML_STATE_DIR", str(tmp_path))
    root = os.path.join(tmp_path, "checkpoints")
    rtml.init(num_cpus=1, include_dashboard=False)
    try:
        a = Counter.options(checkpoint_interval=1, name="kept").remote()  # named: never freed
        assert rtml.get(a.inc.remote(), timeout=T) == 1
        _wait_saved(root, 1)
    finally:
        rtml.shutdown()
    assert _files(root) == []


def test_local_mode_restores_on_restart(tmp_path):
    rtml.init(local_mode=True)
    try:
        a = Counter.options(
            max_restarts=1, checkpoint_interval=2, checkpoint_dir=str(tmp_path)
        ).remote()
        assert [rtml.get(a.inc.remote()) for _ in range(5)] == [1, 2, 3, 4, 5]
        rtml.kill(a, no_restart=False)
        assert rtml.get(a.inc.remote()) == 5  # from the checkpoint after call 4
        assert rtml.get(a.__rtml_checkpoint__.remote()) == 3
        rtml.kill(a)
        assert _files(tmp_path) == []
    finally:
        rtml.shutdown()


# ---------------------------------------------------------------------------- shared runtime
@pytest.fixture(scope="module")
def state_dir(tmp_path_factory):
    """The runtime's workers (and their restarts) see this per-user state directory."""
    path = str(tmp_path_factory.mktemp("state"))
    old = os.environ.get("RTML_STATE_DIR")
    os.environ["RTML_STATE_DIR"] = path
    rtml.init(num_cpus=2)
    yield path
    rtml.shutdown()
    if old is None:
        del os.environ["RTML_STATE_DIR"]
    else:
        os.environ["RTML_STATE_DIR"] = old


@pytest.fixture
def root(state_dir):
    """The default checkpoint root of the module's runtime."""
    return os.path.join(state_dir, "checkpoints")


def test_a_restarted_actor_resumes_from_its_last_checkpoint(root, tmp_path):
    a = Counter.options(
        max_restarts=1, max_task_retries=-1, checkpoint_interval=3, checkpoint_dir=str(tmp_path)
    ).remote(10)
    assert [rtml.get(a.inc.remote(), timeout=T) for _ in range(7)] == list(range(11, 18))
    _wait_saved(tmp_path, 2)  # taken after calls 3 and 6
    _sigkill(a)
    assert rtml.get(a.state.remote(), timeout=T) == (16, list(range(11, 17)))
    assert rtml.get(a.inc.remote(), timeout=T) == 17


def test_without_checkpoints_a_restart_starts_from_the_constructor(root):
    a = Counter.options(max_restarts=1, max_task_retries=-1).remote(10)
    assert [rtml.get(a.inc.remote(), timeout=T) for _ in range(4)] == [11, 12, 13, 14]
    _sigkill(a)
    assert rtml.get(a.state.remote(), timeout=T) == (10, [])


def test_on_demand_checkpoint(root, tmp_path):
    a = Counter.options(max_restarts=1, max_task_retries=-1, checkpoint_dir=str(tmp_path)).remote()
    for _ in range(5):
        a.inc.remote()
    # The ref resolves once the checkpoint (of the state after the 5 calls) is on disk.
    assert rtml.get(a.__rtml_checkpoint__.remote(), timeout=T) == 1
    assert _saved(tmp_path) == [1]
    assert rtml.get(a.inc.remote(), timeout=T) == 6  # not saved
    _sigkill(a)
    assert rtml.get(a.state.remote(), timeout=T) == (5, [1, 2, 3, 4, 5])
    assert rtml.get(a.__rtml_checkpoint__.remote(), timeout=T) == 2  # numbering goes on


def test_custom_hooks_save_and_restore(root, tmp_path):
    a = Hooked.options(
        max_restarts=2, max_task_retries=-1, checkpoint_interval=2, checkpoint_dir=str(tmp_path)
    ).remote()
    for _ in range(4):
        a.inc.remote()
    _wait_saved(tmp_path, 2)  # {"n": 4, "restores": 0}
    _sigkill(a)
    assert rtml.get(a.get.remote(), timeout=T) == (4, 1)
    assert rtml.get(a.get.remote(), timeout=T) == (4, 1)
    _wait_saved(tmp_path, 3)  # {"n": 4, "restores": 1}
    _sigkill(a)
    assert rtml.get(a.get.remote(), timeout=T) == (4, 2)


def test_async_and_threaded_actors_checkpoint_too(root, tmp_path):
    @rtml.remote
    class AsyncCounter:
        def __init__(self) -> None:
            self.n = 0

        async def inc(self) -> int:
            self.n += 1
            return self.n

    a = AsyncCounter.options(
        max_restarts=1,
        max_task_retries=-1,
        checkpoint_interval=2,
        checkpoint_dir=str(tmp_path / "a"),
    ).remote()
    b = Counter.options(
        max_restarts=1,
        max_task_retries=-1,
        max_concurrency=4,
        checkpoint_interval=2,
        checkpoint_dir=str(tmp_path / "b"),
    ).remote()
    for actor, d in ((a, "a"), (b, "b")):
        assert [rtml.get(actor.inc.remote(), timeout=T) for _ in range(5)] == [1, 2, 3, 4, 5]
        _wait_saved(tmp_path / d, 2)
        _sigkill(actor)
        assert rtml.get(actor.inc.remote(), timeout=T) == 5  # from the one after call 4
        assert rtml.get(actor.__rtml_checkpoint__.remote(), timeout=T) == 3


def test_a_restore_that_raises_fails_the_actor(root, tmp_path):
    @rtml.remote
    class Picky(Hooked.__wrapped__):  # type: ignore[misc,name-defined]
        def __rtml_restore__(self, state: dict) -> None:
            raise ValueError(f"refusing state {state['n']}")

    a = Picky.options(
        max_restarts=3, max_task_retries=-1, checkpoint_interval=1, checkpoint_dir=str(tmp_path)
    ).remote()
    assert rtml.get(a.inc.remote(), timeout=T) == 1
    _wait_saved(tmp_path, 1)
    _sigkill(a)
    with pytest.raises(exc.ActorDiedError) as info:
        rtml.get(a.get.remote(), timeout=T)
    text = str(info.value)
    assert "refusing state 1" in text
    assert "__rtml_restore__" in text
    assert "Traceback" in text
    # Dead for good (a failed restore is not retried): its checkpoint is removed.
    wait_for(lambda: _files(tmp_path) == [] or None, timeout=T, what="the files' removal")


def test_checkpoint_files_are_removed_when_the_actor_ends(root, tmp_path):
    own = str(tmp_path / "own")
    wait_for(lambda: _files(root) == [] or None, timeout=T, what="earlier actors' files")
    killed = Counter.options(checkpoint_interval=1).remote()
    restarts_out = Counter.options(
        max_restarts=1, max_task_retries=-1, checkpoint_interval=1, checkpoint_dir=own
    ).remote()
    dropped = Counter.options(checkpoint_interval=1).remote()
    assert rtml.get(
        [killed.inc.remote(), restarts_out.inc.remote(), dropped.inc.remote()], timeout=T
    ) == [1, 1, 1]
    _wait_saved(root, 1, actors=2)  # in the default directory
    _wait_saved(own, 1)

    rtml.kill(killed)
    del dropped  # the last handle: the actor exits
    wait_for(lambda: _files(root) == [] or None, timeout=T, what="the files' removal")
    _sigkill(restarts_out)
    assert rtml.get(restarts_out.inc.remote(), timeout=T) == 2  # restarted from the file
    _sigkill(restarts_out)  # out of restarts: dead for good
    wait_for(lambda: _files(own) == [] or None, timeout=T, what="the files' removal")


def test_bad_checkpoint_options():
    for bad in (-1, True, 2.5, "10"):
        with pytest.raises(ValueError, match="checkpoint_interval must be an int >= 0"):
            Counter.options(checkpoint_interval=bad)
    with pytest.raises(ValueError, match="checkpoint_dir"):
        Counter.options(checkpoint_dir="")
    with pytest.raises(ValueError, match="checkpoint_interval must be"):

        @rtml.remote(checkpoint_interval=-3)
        class Nope:
            pass

    with pytest.raises(ValueError, match="invalid option 'checkpoint_interval'"):

        @rtml.remote(checkpoint_interval=3)
        def f() -> None:
            pass


def test_a_state_that_cannot_be_pickled_fails_only_the_explicit_checkpoint(root):
    @rtml.remote
    class Locked:
        def __init__(self) -> None:
            self.lock = threading.Lock()

        def ping(self) -> str:
            return "pong"

    a = Locked.options(checkpoint_interval=1).remote()
    assert rtml.get(a.ping.remote(), timeout=T) == "pong"  # the periodic one only warns
    with pytest.raises(TypeError, match=r"not picklable.*__rtml_checkpoint__"):
        rtml.get(a.__rtml_checkpoint__.remote(), timeout=T)
    assert rtml.get(a.ping.remote(), timeout=T) == "pong"
