"""Actor checkpoints without processes: options, state, the atomic file, removal."""

from __future__ import annotations

import os
import pathlib
import signal
import stat
import subprocess
import sys
import threading

import pytest

from rtml import _checkpoint as ck


def _config(tmp_path: pathlib.Path, interval: int = 0, aid: int = 0x2A) -> dict:
    return ck.new_config(interval, str(tmp_path), "s1234", aid)


class Plain:
    def __init__(self) -> None:
        self.n = 0
        self.log: list[int] = []

    def inc(self) -> None:
        self.n += 1
        self.log.append(self.n)


class Hooked:
    """Keeps an unpicklable lock: only the hooks make it checkpointable."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.n = 0
        self.restored_from: int | None = None

    def __rtml_checkpoint__(self) -> dict:
        with self.lock:
            return {"n": self.n}

    def __rtml_restore__(self, state: dict) -> None:
        self.n = state["n"]
        self.restored_from = state["n"]


class Slotted:
    __slots__ = ("n",)

    def __init__(self) -> None:
        self.n = 0


# ---------------------------------------------------------------------------- options
@pytest.mark.parametrize("good", [0, 1, 100])
def test_interval_accepts_non_negative_ints(good):
    assert ck.check_interval(good) == good


@pytest.mark.parametrize("bad", [-1, True, 1.5, "3", None])
def test_interval_rejects_the_rest(bad):
    with pytest.raises(ValueError, match="checkpoint_interval must be an int >= 0"):
        ck.check_interval(bad)


def test_dir_is_made_absolute_and_checked(tmp_path, monkeypatch):
    assert ck.check_dir(None) is None
    assert ck.check_dir(tmp_path) == str(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert ck.check_dir("ckpts") == str(tmp_path / "ckpts")
    for bad in ("", 3, b"x"):
        with pytest.raises(ValueError, match="checkpoint_dir must be a directory path"):
            ck.check_dir(bad)


def test_keys_are_unique_per_actor_and_grouped_by_session():
    a = ck.new_config(5, None, "s1", 7)
    b = ck.new_config(5, None, "s1", 7)  # the same actor id in another runtime
    assert a["key"] != b["key"]
    assert a["key"].startswith("s1/7-")
    assert ck.new_config(0, None, "s1", 7, detached=True)["key"].startswith("detached/7-")


def test_default_root_is_under_the_state_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("RTML_STATE_DIR", str(tmp_path))
    assert ck.default_root() == str(tmp_path / "checkpoints")
    monkeypatch.delenv("RTML_STATE_DIR")
    assert ck.default_root() == f"/tmp/rtml-{os.getuid()}/checkpoints"


# ---------------------------------------------------------------------------- state
def test_default_state_is_the_instance_dict():
    a = Plain()
    a.inc()
    state = ck.snapshot(a)
    assert state == {"n": 1, "log": [1]}
    b = Plain()
    b.extra = "set by the constructor"  # type: ignore[attr-defined]
    ck.restore(b, state)
    assert (b.n, b.log, b.extra) == (1, [1], "set by the constructor")  # type: ignore[attr-defined]


def test_hooks_replace_the_default():
    a = Hooked()
    a.n = 4
    state = ck.snapshot(a)
    assert state == {"n": 4}
    b = Hooked()
    ck.restore(b, state)
    assert (b.n, b.restored_from) == (4, 4)


def test_states_that_cannot_be_checkpointed_say_what_to_do():
    with pytest.raises(TypeError, match=r"__slots__.*__rtml_checkpoint__"):
        ck.snapshot(Slotted())
    a = Plain()
    a.lock = threading.Lock()  # type: ignore[attr-defined]
    with pytest.raises(TypeError, match=r"Plain cannot be checkpointed.*not picklable"):
        ck.encode(ck.snapshot(a), 1, "Plain")
    with pytest.raises(TypeError, match="__rtml_restore__"):
        ck.restore(Plain(), [1, 2])

    class AsyncHook:
        async def __rtml_checkpoint__(self) -> int:
            return 1

    with pytest.raises(TypeError, match="plain def"):
        ck.snapshot(AsyncHook())


# ---------------------------------------------------------------------------- files
def test_write_then_load_round_trips(tmp_path):
    cfg = _config(tmp_path)
    assert ck.load(cfg) is None  # never saved
    path = ck.write(cfg, ck.encode({"n": 1}, 1))
    assert path == os.path.join(ck.actor_dir(cfg), ck.FILE)
    ck.write(cfg, ck.encode({"n": 2}, 2))
    got = ck.load(cfg)
    assert got is not None
    assert (got.seq, got.state) == (2, {"n": 2})
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert os.listdir(ck.actor_dir(cfg)) == [ck.FILE]  # no temp file left behind


def test_default_root_is_created_private(tmp_path, monkeypatch):
    monkeypatch.setenv("RTML_STATE_DIR", str(tmp_path / "state"))
    cfg = ck.new_config(0, None, "s1", 1)
    ck.write(cfg, ck.encode(1, 1))
    assert ck.actor_dir(cfg).startswith(str(tmp_path / "state" / "checkpoints" / "s1"))
    d = ck.actor_dir(cfg)
    while d != str(tmp_path):  # every level, up to the state directory
        assert stat.S_IMODE(os.stat(d).st_mode) == 0o700, d
        d = os.path.dirname(d)
    assert ck.load(cfg).state == 1


def test_a_failed_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    cfg = _config(tmp_path)
    ck.write(cfg, ck.encode("old", 1))

    def broken_fsync(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="No space"):
        ck.write(cfg, ck.encode("new", 2))
    monkeypatch.undo()
    assert ck.load(cfg).state == "old"
    assert os.listdir(ck.actor_dir(cfg)) == [ck.FILE]


_KILLED_MID_WRITE = """
import os, signal, sys
from rtml import _checkpoint as ck
cfg = {"interval": 0, "dir": sys.argv[1], "key": "s1/2a-x"}
ck.write(cfg, ck.encode("old", 1))
os.fsync = lambda fd: os.kill(os.getpid(), signal.SIGKILL)  # dies with the new bytes written
ck.write(cfg, ck.encode("new" * 100000, 2))
"""


def test_a_process_killed_mid_write_leaves_the_previous_checkpoint(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-c", _KILLED_MID_WRITE, str(tmp_path)], capture_output=True, timeout=60
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    cfg = {"interval": 0, "dir": str(tmp_path), "key": "s1/2a-x"}
    leftovers = os.listdir(ck.actor_dir(cfg))
    assert ck.FILE in leftovers
    assert any(n.startswith(".tmp-") for n in leftovers)
    got = ck.load(cfg)
    assert got is not None
    assert (got.seq, got.state) == (1, "old")
    ck.remove({"checkpoint": cfg})  # the temp file goes with the directory
    assert not os.path.exists(ck.actor_dir(cfg))


def test_an_unreadable_file_is_an_error_naming_it(tmp_path):
    cfg = _config(tmp_path)
    os.makedirs(ck.actor_dir(cfg))
    path = os.path.join(ck.actor_dir(cfg), ck.FILE)
    with open(path, "wb") as f:
        f.write(b"garbage")
    with pytest.raises(RuntimeError, match=r"cannot be read back.*remove the file"):
        ck.load(cfg)


def test_remove_and_remove_session(tmp_path, monkeypatch):
    monkeypatch.setenv("RTML_STATE_DIR", str(tmp_path))
    own = _config(tmp_path / "own")
    a = ck.new_config(0, None, "s1", 1)
    b = ck.new_config(0, None, "s1", 2)
    d = ck.new_config(0, None, "s1", 3, detached=True)
    for cfg in (own, a, b, d):
        ck.write(cfg, ck.encode(0, 1))
    ck.remove({"checkpoint": a})
    assert not os.path.exists(ck.actor_dir(a))
    assert os.path.exists(ck.actor_dir(b))
    ck.remove(None)
    ck.remove({})
    ck.remove({"checkpoint": a})  # gone already: nothing to do
    ck.remove_session("s1")
    assert not os.path.exists(ck.actor_dir(b))
    assert os.path.exists(ck.actor_dir(d))  # detached actors outlive the session
    assert os.path.exists(ck.actor_dir(own))  # only the default root is swept
    ck.remove({"checkpoint": own})
    assert os.listdir(tmp_path / "own") == []  # with its session's directory, now empty
    for bad in ("", "..", "detached", "a/b"):
        ck.remove_session(bad)
    assert os.path.exists(ck.actor_dir(d))


# ---------------------------------------------------------------------------- Checkpointer
@pytest.mark.parametrize("background", [True, False])
def test_checkpointer_saves_every_interval_calls(tmp_path, background):
    cfg = _config(tmp_path, interval=3)
    a = Plain()
    c = ck.Checkpointer(cfg, "Plain", background=background)
    try:
        for _ in range(7):
            a.inc()
            c.call_done(a)
        c.flush()
        assert c.seq == c.written == 2
        assert ck.load(cfg).state["n"] == 6
        assert c.save(a) == 3
        assert ck.load(cfg).state["n"] == 7
        b = Plain()
        c2 = ck.Checkpointer(cfg, "Plain", background=background)  # the restarted actor
        got = c2.restore(b)
        assert got is not None
        assert b.n == 7
        assert c2.seq == 3
        assert c2.save(b) == 4  # numbers go on from the restored checkpoint
        c2.close()
    finally:
        c.close()


def test_a_checkpoint_due_while_the_last_is_written_waits_for_it(tmp_path, monkeypatch):
    cfg = _config(tmp_path, interval=1)
    c = ck.Checkpointer(cfg, "Plain")
    entered, gate = threading.Event(), threading.Event()
    written: list[int] = []
    real_write = ck.write

    def slow_write(config: dict, blob: bytes, create: bool = True) -> str:
        entered.set()
        assert gate.wait(10)
        written.append(ck.decode(blob).seq)
        return real_write(config, blob, create)

    monkeypatch.setattr(ck, "write", slow_write)
    a = Plain()
    try:
        a.inc()
        c.call_done(a)  # returns at once: checkpoint 1 is written in the background
        assert entered.wait(10)
        a.inc()
        second = threading.Thread(target=c.call_done, args=(a,))
        second.start()
        second.join(0.2)
        assert second.is_alive()  # checkpoint 2 waits: one in flight at most
        gate.set()
        second.join(10)
        c.flush()
    finally:
        gate.set()
        c.close()
    assert written == [1, 2]
    assert ck.load(cfg).state["n"] == 2


def test_a_write_after_the_directory_was_removed_does_not_recreate_it(tmp_path, capsys):
    cfg = _config(tmp_path, interval=1)
    c = ck.Checkpointer(cfg, "Plain")
    a = Plain()
    try:
        c.save(a)
        ck.remove({"checkpoint": cfg})  # the node: the actor died for good
        with pytest.raises(ck.DirectoryRemoved, match="was removed"):
            c.save(a)
        c.call_done(a)  # a periodic one: not worth a warning either
    finally:
        c.close()
    assert not os.path.exists(ck.actor_dir(cfg))
    assert capsys.readouterr().err == ""


def test_interval_zero_saves_only_on_demand(tmp_path):
    cfg = _config(tmp_path, interval=0)
    c = ck.Checkpointer(cfg)
    for _ in range(5):
        c.call_done(Plain())
    assert ck.load(cfg) is None
    assert c.restore(Plain()) is None


def test_a_failing_periodic_save_warns_once_and_goes_on(tmp_path, capsys):
    cfg = _config(tmp_path, interval=1)
    a = Plain()
    a.lock = threading.Lock()  # type: ignore[attr-defined]
    c = ck.Checkpointer(cfg, "Plain", background=False)
    for _ in range(3):
        c.call_done(a)  # never raises: the call itself succeeded
    err = capsys.readouterr().err
    assert err.count("checkpoint of actor Plain failed") == 1
    assert "not picklable" in err
    with pytest.raises(TypeError, match="not picklable"):
        c.save(a)  # asked for explicitly: the caller hears of it


def test_a_restore_hook_that_raises_propagates(tmp_path):
    cfg = _config(tmp_path)
    ck.Checkpointer(cfg, background=False).save(Hooked())

    class Bad(Hooked):
        def __rtml_restore__(self, state: dict) -> None:
            raise ValueError("cannot use this state")

    with pytest.raises(ValueError, match="cannot use this state"):
        ck.Checkpointer(cfg).restore(Bad())
