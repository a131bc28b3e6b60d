"""Actor state checkpoints: what is saved, where, how it is written, read back and removed.

::

    Cls.options(checkpoint_interval=N).remote()
        └─ new_config(): {"interval", "dir", "key"} in the actor's info (key unique per actor)
    actor host (worker process)                                       <root>/<key>/
        every N-th call returns, or handle.__rtml_checkpoint__.remote()
        ── Checkpointer: snapshot() + encode() in the call's thread
                         ── writer thread: write() ──▶ .tmp-<pid>-<thread> ─fsync, rename─┐
        restart: constructor ran ── Checkpointer.restore() ◀── load() ◀── checkpoint ◀─────┘
    node: the actor died for good ── remove(info) ── the actor's directory is deleted
    node stops ── remove_session(session) ── what its actors left under the default root

The state is what the class's ``__rtml_checkpoint__()`` returns (restored by
``__rtml_restore__(state)``), or else the instance's ``__dict__`` (restored into the fresh
instance's ``__dict__``, over what the constructor set). A file is replaced by rename only once
it is complete and fsynced, so a process killed in the middle of a write leaves the previous
checkpoint intact (and at most a temp file, removed with the directory).

``<root>`` is ``checkpoint_dir`` if given, else ``<state dir>/checkpoints`` with the per-user
state directory of the cluster tokens (``$RTML_STATE_DIR`` or ``/tmp/rtml-<uid>``, mode 0700):
every node on one machine reads the same files, so an actor restarted on another node of the
machine resumes from them. A cluster across machines needs ``checkpoint_dir`` on a filesystem
every machine mounts at the same path. ``<key>`` is ``<session>/<actor id>-<random>``
(``detached/...`` for detached actors, which outlive the session): actor ids repeat across
separate runtimes, keys do not.

What a checkpoint cannot hold: ``ObjectRef``s and actor handles pickle, but nothing keeps
their objects alive while they sit in a file, so keep the state plain data. In a threaded actor
other calls may run while the snapshot is taken: take your own lock in
``__rtml_checkpoint__``. (An async actor's snapshot is taken on its event loop, between calls'
steps, so it is consistent.)

Pure functions and one small class; no process, socket or rtml runtime is needed to use them.
"""

from __future__ import annotations

import inspect
import os
import pickle
import secrets
import shutil
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

import cloudpickle

FILE = "checkpoint"
_MAGIC = b"RTMLCKPT1\n"
SAVE_METHOD = "__rtml_checkpoint__"
RESTORE_METHOD = "__rtml_restore__"


class DirectoryRemoved(FileNotFoundError):
    """The actor's checkpoint directory was removed while it was being written: the actor
    was ended for good (not worth a warning)."""


@dataclass(frozen=True)
class Checkpoint:
    """One checkpoint as read back: its sequence number, when it was taken, the state."""

    seq: int
    time: float
    state: Any


# ---------------------------------------------------------------------------- configuration
def check_interval(value: Any) -> int:
    """``checkpoint_interval``: an int >= 0 (0: only on demand)."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(
            f"checkpoint_interval must be an int >= 0 (checkpoint after every N calls; 0: only "
            f"when asked with handle.__rtml_checkpoint__.remote()), got {value!r}"
        )
    return value


def check_dir(value: Any) -> str | None:
    """``checkpoint_dir``: None or a path, made absolute (workers may run elsewhere)."""
    if value is None:
        return None
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str) or not value:
        raise ValueError(
            f"checkpoint_dir must be a directory path (str or os.PathLike), got {value!r}"
        )
    return os.path.abspath(value)


def new_config(
    interval: int, directory: str | None, session: str, actor_id: int, detached: bool = False
) -> dict[str, Any]:
    """The checkpoint settings of a new actor, carried in its info to every (re)start."""
    group = "detached" if detached else session
    return {
        "interval": interval,
        "dir": directory,
        "key": f"{group}/{actor_id:x}-{secrets.token_hex(4)}",
    }


def default_root() -> str:
    """``<state dir>/checkpoints`` (the path only: nothing is created)."""
    base = os.environ.get("RTML_STATE_DIR") or os.path.join("/tmp", f"rtml-{os.getuid()}")
    return os.path.join(base, "checkpoints")


def actor_dir(config: dict[str, Any]) -> str:
    """The directory of one actor's checkpoint (the path only: nothing is created)."""
    return os.path.join(config["dir"] or default_root(), *config["key"].split("/"))


def _make_dir(config: dict[str, Any]) -> None:
    """Create the actor's directory and those above it up to the root, owner-only."""
    if config["dir"] is None:
        from rtml._transport._auth import state_dir

        top = state_dir()  # created owner-only, and refused if someone else could read it
        parts = ["checkpoints", *config["key"].split("/")]
    else:
        top = config["dir"]
        os.makedirs(top, mode=0o700, exist_ok=True)
        parts = config["key"].split("/")
    for attempt in range(2):
        path = top
        try:
            for part in parts:
                path = os.path.join(path, part)
                try:
                    os.mkdir(path, 0o700)
                except FileExistsError:
                    pass
            return
        except FileNotFoundError:  # the session's directory was just removed (``remove``)
            if attempt:
                raise


# ---------------------------------------------------------------------------- state
def snapshot(instance: Any) -> Any:
    """The state to save: ``__rtml_checkpoint__()`` if the class defines it, else ``__dict__``."""
    hook = getattr(type(instance), SAVE_METHOD, None)
    if hook is not None:
        state = hook(instance)
        if inspect.isawaitable(state):
            if inspect.iscoroutine(state):
                state.close()
            raise TypeError(
                f"{type(instance).__name__}.{SAVE_METHOD} must be a plain def "
                "returning the state, not a coroutine function"
            )
        return state
    try:
        return dict(vars(instance))
    except TypeError:
        raise TypeError(
            f"{type(instance).__name__} has no __dict__ (it uses __slots__): define "
            f"{SAVE_METHOD}(self) -> state and {RESTORE_METHOD}(self, state) to checkpoint "
            "it"
        ) from None


def restore(instance: Any, state: Any) -> None:
    """Put ``state`` back into a freshly constructed ``instance``."""
    hook = getattr(type(instance), RESTORE_METHOD, None)
    if hook is not None:
        result = hook(instance, state)
        if inspect.iscoroutine(result):
            result.close()
            raise TypeError(
                f"{type(instance).__name__}.{RESTORE_METHOD} must be a plain def, "
                "not a coroutine function"
            )
        return
    if not isinstance(state, dict):
        raise TypeError(
            f"the checkpoint of {type(instance).__name__} holds a {type(state).__name__}, not "
            f"an instance __dict__: define {RESTORE_METHOD}(self, state) to restore it"
        )
    vars(instance).update(state)


def encode(state: Any, seq: int, class_name: str = "actor") -> bytes:
    """The bytes of a checkpoint file."""
    try:
        body = cloudpickle.dumps(state, protocol=5)
    except Exception as e:
        raise TypeError(
            f"the state of {class_name} cannot be checkpointed: it is not picklable ({e}); "
            f"define {SAVE_METHOD}(self) to return only picklable state (and "
            f"{RESTORE_METHOD}(self, state) to put it back)"
        ) from e
    head = pickle.dumps((seq, time.time()), protocol=5)
    return _MAGIC + len(head).to_bytes(4, "little") + head + body


def decode(blob: bytes, where: str = "checkpoint") -> Checkpoint:
    if not blob.startswith(_MAGIC):
        raise ValueError(f"{where} is not an rtml checkpoint")
    n = len(_MAGIC)
    size = int.from_bytes(blob[n : n + 4], "little")
    seq, when = pickle.loads(blob[n + 4 : n + 4 + size])
    return Checkpoint(seq, when, pickle.loads(blob[n + 4 + size :]))


# ---------------------------------------------------------------------------- files
def write(config: dict[str, Any], blob: bytes, create: bool = True) -> str:
    """Replace the actor's checkpoint with ``blob`` atomically; returns the file's path.

    Written to a temp file in the same directory, fsynced, renamed over the old file, then the
    directory is fsynced: a crash at any point leaves either the old or the new file whole.
    ``create=False``: the directory must exist (it was removed if the actor died for good, and
    a write still in progress then must not bring it back).
    """
    d = actor_dir(config)
    path = os.path.join(d, FILE)
    tmp = os.path.join(d, f".tmp-{os.getpid()}-{threading.get_ident()}")
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    try:
        fd = os.open(tmp, flags, 0o600)
    except FileNotFoundError:
        if not create:
            raise DirectoryRemoved(
                f"the checkpoint directory {d} was removed (the actor was ended for good)"
            ) from None
        _make_dir(config)
        fd = os.open(tmp, flags, 0o600)
    try:
        try:
            view = memoryview(blob)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, FileNotFoundError):  # our temp file vanished: ``remove`` ran
            raise DirectoryRemoved(
                f"the checkpoint directory {d} was removed while a "
                "checkpoint was written (the actor was ended for good)"
            ) from e
        raise
    try:
        dfd = os.open(d, os.O_RDONLY)
    except OSError:
        return path
    try:
        os.fsync(dfd)  # the rename itself survives a machine crash
    except OSError:
        pass
    finally:
        os.close(dfd)
    return path


def load(config: dict[str, Any]) -> Checkpoint | None:
    """The actor's latest checkpoint, or None if it never saved one.

    Raises:
        RuntimeError: the file exists but cannot be read back (its message says which file
            and why; delete the file to start from the constructor's state).
    """
    path = os.path.join(actor_dir(config), FILE)
    try:
        with open(path, "rb") as f:
            blob = f.read()
    except FileNotFoundError:
        return None
    try:
        return decode(blob, path)
    except Exception as e:
        raise RuntimeError(
            f"the actor's checkpoint {path} cannot be read back ({type(e).__name__}: {e}); "
            "remove the file to restart the actor from its constructor's state"
        ) from e


def remove(info: dict[str, Any] | None) -> None:
    """Delete an actor's checkpoints (it died for good). ``info``: the actor's info dict (or
    anything with its ``"checkpoint"`` entry); nothing happens if it has none or no file."""
    config = info.get("checkpoint") if info else None
    if config:
        d = actor_dir(config)
        shutil.rmtree(d, ignore_errors=True)
        try:
            os.rmdir(os.path.dirname(d))  # the session's directory, once its last actor is gone
        except OSError:
            pass


def remove_session(session: str) -> None:
    """Delete what the actors created in ``session`` left under the default root (the node
    stops; actors with their own ``checkpoint_dir`` are removed one by one by ``remove``)."""
    if session and "/" not in session and session not in (".", "..", "detached"):
        shutil.rmtree(os.path.join(default_root(), session), ignore_errors=True)


# ---------------------------------------------------------------------------- the host's side
class Checkpointer:
    """Checkpoints one actor instance: every ``interval`` calls and on demand.

    ::

        call_done() (N-th call) ─┐  snapshot + pickle, in the calling thread, so the state is
        save() (on demand) ──────┴─ that of the calls so far ── wait until the writer is free
                                                              ──▶ writer thread: write(),
        save() returns once its checkpoint is on disk ◀──────────── fsync, rename

    The disk write (with its two fsyncs, most of a millisecond on a local disk) happens off the
    call path in ``background`` mode: the next calls run while it is written, and only a
    checkpoint that falls due while the previous one is still being written waits for it (one
    in flight at most). So every checkpoint but the latest is on disk: a crash loses the calls
    since the last checkpoint, and at worst those since the one before (at most 2N - 1 calls),
    whatever the disk's stalls. ``save()`` (the on-demand checkpoint) waits until it is on
    disk. Without ``background`` (local mode: no thread may outlive the runtime) every
    checkpoint is written before the call returns.

    Thread-safe (threaded actors finish calls on several threads). A periodic checkpoint that
    fails is reported on stderr (which reaches the driver) once per distinct error, and the
    actor goes on serving: the call that triggered it has run, and failing it would invite a
    retry that runs it twice. ``save()`` raises instead.
    """

    def __init__(
        self, config: dict[str, Any], class_name: str = "actor", background: bool = True
    ) -> None:
        self.config = config
        self.interval: int = config.get("interval") or 0
        self.class_name = class_name
        self.background = background
        self.seq = 0  # of the last checkpoint taken or restored
        self.since = 0  # calls completed since then
        self.written = 0  # seq of the last checkpoint on disk
        self._lock = threading.Lock()  # taking a checkpoint: counters, snapshot, seq
        self._cond = threading.Condition(threading.Lock())  # the writer's mailbox
        self._pending: tuple[int, bytes] | None = None
        self._submitted = 0  # highest seq handed to the writer
        self._done = 0  # highest seq the writer has dealt with (written or failed)
        self._error: tuple[int, BaseException] | None = None  # the last failed write
        self._writer: threading.Thread | None = None
        self._closing = False
        self._dir_exists = False
        self._warned: str | None = None

    def restore(self, instance: Any) -> Checkpoint | None:
        """Load the latest checkpoint, if any, into ``instance`` (fresh from its constructor).
        What ``__rtml_restore__`` raises propagates."""
        ck = load(self.config)
        if ck is not None:
            self._dir_exists = True
            restore(instance, ck.state)
            self.seq = self.written = self._submitted = self._done = ck.seq
        self.since = 0
        return ck

    def save(self, instance: Any) -> int:
        """Checkpoint now and wait until it is on disk; returns its sequence number (1, 2, ...;
        it goes on from the restored one after a restart)."""
        seq, blob = self._take(instance)
        if not self.background:
            self._write(seq, blob)
            return seq
        self._submit(seq, blob)
        with self._cond:
            while self._done < seq:
                self._cond.wait()
            if self.written >= seq:
                return seq
            assert self._error is not None
            raise self._error[1]

    def call_done(self, instance: Any) -> None:
        """A call of the actor's own methods ended: checkpoint if ``interval`` calls did."""
        if not self.interval:
            return
        with self._lock:
            self.since += 1
            if self.since < self.interval:
                return
        try:
            seq, blob = self._take(instance)
            if self.background:
                self._submit(seq, blob)
            else:
                self._write(seq, blob)
        except Exception as e:
            self._warn(e)

    def flush(self) -> None:
        """Wait until every checkpoint taken so far has been written (or failed)."""
        with self._cond:
            while self._done < self.seq and self._writer is not None:
                self._cond.wait()

    def close(self) -> None:
        """Write what is pending, then stop the writer thread (a worker process just exits)."""
        with self._cond:
            self._closing = True
            writer = self._writer
            self._cond.notify_all()
        if writer is not None:
            writer.join()

    # ------------------------------------------------------------------ internals
    def _take(self, instance: Any) -> tuple[int, bytes]:
        with self._lock:
            blob = encode(snapshot(instance), self.seq + 1, self.class_name)
            self.seq += 1
            self.since = 0
            return self.seq, blob

    def _write(self, seq: int, blob: bytes) -> None:
        write(self.config, blob, create=not self._dir_exists)
        self._dir_exists = True
        self.written = self._done = seq

    def _submit(self, seq: int, blob: bytes) -> None:
        with self._cond:
            while self._done < self._submitted:  # one checkpoint in flight at most
                self._cond.wait()
            if seq <= self._submitted:
                return  # another thread handed over a newer one while this one was taken
            self._pending = (seq, blob)
            self._submitted = seq
            if self._writer is None:
                self._writer = threading.Thread(
                    target=self._write_loop, daemon=True, name="rtml-checkpoint-writer"
                )
                self._writer.start()
            self._cond.notify_all()

    def _write_loop(self) -> None:
        while True:
            with self._cond:
                while self._pending is None:
                    if self._closing:
                        self._writer = None
                        self._cond.notify_all()
                        return
                    self._cond.wait()
                seq, blob = self._pending
                self._pending = None
            try:
                write(self.config, blob, create=not self._dir_exists)
                self._dir_exists = True
                error = None
            except Exception as e:
                error = e
            with self._cond:
                if error is None:
                    self.written = seq
                else:
                    self._error = (seq, error)
                self._done = seq
                self._cond.notify_all()
            if error is not None:
                self._warn(error)

    def _warn(self, e: BaseException) -> None:
        if isinstance(e, DirectoryRemoved):
            return  # the actor is being ended for good: its checkpoints no longer matter
        text = f"{type(e).__name__}: {e}"
        if text != self._warned:  # once per distinct failure, not once per call
            self._warned = text
            print(  # noqa: T201
                f"rtml: checkpoint of actor {self.class_name} failed, it goes on from its "
                f"previous checkpoint if restarted: {text}",
                file=sys.stderr,
            )
