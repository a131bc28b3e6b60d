"""Local mode's actors: their records and the create / call / kill / die operations.

A mixin of ``LocalClient`` (``_local.py``): it owns the actor tables (``_actors`` by id,
``_names`` by (namespace, name), ``_handles`` counting handles, ``_classes`` the user's
classes by id) and uses the client's store and lock. An actor is ALIVE from its construction
until it is killed, its last handle goes, its constructor fails or it exits; DEAD is final
unless restarts are left (``max_restarts``), in which case the constructor runs again.
"""

from __future__ import annotations

import asyncio
import bdb
import contextlib
import inspect
import os
import pickle
import threading
from typing import TYPE_CHECKING, Any

import cloudpickle

from rtml import _checkpoint
from rtml import exceptions as exc
from rtml._protocol._actor import READY_METHODS, TERMINATE_METHODS, ActorExitRequest
from rtml._protocol._ids import return_id, to_hex
from rtml._protocol._payload import ERR, INLINE, OOB
from rtml._protocol._spec import TaskSpec

# A large value with out-of-band buffers (numpy arrays): (pickle bytes, [buffer bytes]). The
# buffers are copied once into immutable bytes, so arrays come back read-only, as from the
# runtime's shared memory: PayloadKind.OOB, a kind of its own (it never leaves the driver).
_OOB = OOB

_EXIT = (ActorExitRequest, exc.AsyncioActorExit)
_PASS_THROUGH = (KeyboardInterrupt, bdb.BdbQuit)
_TERMINATE = TERMINATE_METHODS
_READY = READY_METHODS
_ALIVE, _DEAD = "ALIVE", "DEAD"
_INTERNAL_FILES = (
    __file__,
    os.path.join(os.path.dirname(__file__), "_local.py"),
    _checkpoint.__file__,
    os.path.dirname(asyncio.__file__),
)


def _system_blob(error: BaseException) -> bytes:
    return pickle.dumps(error, protocol=5)


def _trim(e: BaseException) -> None:
    """Start the traceback at the user's code: drop this module's (and asyncio's) frames."""
    tb = e.__traceback__
    while (
        tb is not None
        and tb.tb_next is not None
        and tb.tb_frame.f_code.co_filename.startswith(_INTERNAL_FILES)
    ):
        tb = tb.tb_next
    e.__traceback__ = tb


def _task_error_blob(e: BaseException, name: str, task_id: int) -> bytes:
    """The pickled TaskError for an exception raised by user code (as a worker makes it)."""
    _trim(e)
    pid = os.getpid()
    err = exc.TaskError.from_exception(e, name, pid=pid, task_id=to_hex(task_id))
    try:
        return cloudpickle.dumps(err)
    except Exception as pe:
        return cloudpickle.dumps(
            exc.TaskError(
                name,
                err.traceback_str,
                exc.RtmlError(f"{type(e).__name__}: {e} (not picklable: {pe})"),
                pid=pid,
            )
        )


def _ready() -> bool:
    return True


async def _awaited(awaitable: Any) -> Any:
    return await awaitable


async def _drain(agen: Any, sink: Any) -> None:
    async for item in agen:
        sink(item)


def _close_loop(loop: asyncio.AbstractEventLoop) -> None:
    try:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.run_until_complete(loop.shutdown_default_executor())
    finally:
        loop.close()


def _run_coroutine(
    coro: Any, loop: asyncio.AbstractEventLoop | None = None, loop_lock: Any = None
) -> Any:
    """Run ``coro`` to completion and return its result.

    It runs on ``loop`` (an async actor's) unless that loop is busy with another call further
    up the stack or in another thread (``loop_lock`` is held): then, as without ``loop``, on a
    fresh loop. If an event loop already runs in this thread (an async caller, or an async
    actor calling another actor), the coroutine is driven on a helper thread, joined before
    returning.
    """
    try:
        asyncio.get_running_loop()
        nested = True
    except RuntimeError:
        nested = False

    def run() -> Any:
        if loop is not None and loop_lock.acquire(blocking=False):
            try:
                if not loop.is_closed():
                    return loop.run_until_complete(coro)
            finally:
                loop_lock.release()
        own = asyncio.new_event_loop()
        try:
            return own.run_until_complete(coro)
        finally:
            _close_loop(own)

    if not nested:
        return run()
    box: dict[str, Any] = {}

    def helper() -> None:
        try:
            box["value"] = run()
        except BaseException as e:
            box["error"] = e

    t = threading.Thread(target=helper, name="rtml-local-async")
    t.start()
    t.join()
    if "error" in box:
        raise box.pop("error")
    return box.get("value")


class _Call:
    """One task or actor method call to run now."""

    __slots__ = (
        "actor",
        "blob",
        "deps",
        "env_vars",
        "fn",
        "name",
        "num_returns",
        "resources",
        "retries",
        "retry_exceptions",
        "task_id",
    )

    def __init__(
        self,
        task_id: int,
        name: str,
        fn: Any,
        blob: bytes,
        deps: tuple,
        num_returns: int,
        resources: dict,
        retries: int,
        retry_exceptions: Any,
        env_vars: dict | None,
        actor: _Actor | None,
    ) -> None:
        self.task_id, self.name, self.fn, self.blob, self.deps = task_id, name, fn, blob, deps
        self.num_returns, self.resources, self.retries = num_returns, resources, retries
        self.retry_exceptions, self.env_vars, self.actor = retry_exceptions, env_vars, actor


class _Actor:
    """The local record of one actor: its instance while alive, its error once dead."""

    def __init__(
        self, spec: TaskSpec, cls: type, info: dict[str, Any], key: tuple[str, str] | None
    ) -> None:
        self.actor_id = spec.task_id
        self.spec = spec
        self.cls = cls
        self.info = info
        self.key = key
        self.class_name: str = info.get("class_name") or cls.__name__
        self.is_async = bool(info.get("is_async"))
        self.env_vars: dict | None = info.get("env_vars")
        self.restarts_left: int = info.get("max_restarts", 0)
        ck = info.get("checkpoint")
        # Written before the call returns: no writer thread may outlive the runtime here.
        self.checkpointer = (
            _checkpoint.Checkpointer(ck, self.class_name, background=False) if ck else None
        )
        self.pinned_handle = key is not None or bool(info.get("detached"))
        self.creator: int | None = None  # the actor whose method created this one, if any
        self.state = _ALIVE
        self.instance: Any = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.alloc: Any = None
        self.error_blob: bytes | None = None
        self.exit_cause: str | None = None  # exit once the running call returns
        self.pinned: list[int] = []  # constructor arguments kept for restarts
        self.stale_loops: list[asyncio.AbstractEventLoop] = []  # closed once not running
        # One call at a time, as a max_concurrency=1 actor (a call it makes back to itself
        # runs, as a nested call). Threaded and async actors take calls concurrently in the
        # runtime, so here too; an async actor's loop runs one call, others get a fresh loop.
        serial = not self.is_async and info.get("max_concurrency", 1) == 1
        self.lock: Any = threading.RLock() if serial else contextlib.nullcontext()
        self.loop_lock = threading.Lock()

    @property
    def handle_oid(self) -> int:
        return return_id(self.actor_id, 1)


class LocalActors:
    """The actor half of ``LocalClient`` (see the module docstring)."""

    if TYPE_CHECKING:  # the store, lock and call machinery are the client's (``_local.py``)

        def __getattr__(self, name: str) -> Any: ...

    # ------------------------------------------------------------------ actors
    def actor_op(self, op: str, args: tuple) -> tuple[str, Any]:
        """Create, look up or kill an actor: ("ok", value) or ("err", exception)."""
        self._apply_ref_updates()
        ops: dict[str, Any] = {
            "create": self._create_actor,
            "get": self._get_actor,
            "kill": self._kill_actor,
        }
        fn = ops.get(op)
        if fn is None:
            return "err", exc.RtmlSystemError(f"unknown actor operation {op!r}")
        try:
            return "ok", fn(*args)
        except (ValueError, TypeError, exc.RtmlError) as e:
            return "err", e

    def _create_actor(
        self, spec: TaskSpec, fn_blob: bytes | None, info: dict[str, Any]
    ) -> tuple[str, int, Any]:
        name = info.get("name")
        key = None
        with self._lock:
            if name is not None:
                ns = info.get("namespace") or self.namespace
                key = (ns, name)
                aid = self._names.get(key)
                if aid is not None:
                    if info.get("get_if_exists"):
                        return "existing", aid, self._actors[aid].info["meta"]
                    raise ValueError(
                        f"an actor named {name!r} already exists in namespace {ns!r}; pick "
                        f"another name, fetch the existing one with rtml.get_actor({name!r}), "
                        "or pass get_if_exists=True to reuse it"
                    )
            cls = self._classes.get(spec.fn_id)
            if cls is None:
                if fn_blob is None:
                    raise exc.RtmlSystemError(f"the class of actor {spec.name} is unknown")
                cls = self._classes[spec.fn_id] = cloudpickle.loads(fn_blob)
            rec = _Actor(spec, cls, info, key)
            rec.creator = self.current_actor_id
            self._actors[rec.actor_id] = rec
            if key is not None:
                self._names[key] = rec.actor_id
            self._handles[rec.handle_oid] = rec
            self._seal(rec.handle_oid, INLINE, pickle.dumps(None))
            if rec.pinned_handle:
                self._store[rec.handle_oid].pins += 1
            if rec.restarts_left != 0:  # keep the constructor's arguments for restarts
                for oid in (*spec.deps, *spec.contained):
                    e = self._store.get(oid)
                    if e is not None:
                        e.pins += 1
                        rec.pinned.append(oid)
        if not self.pool.feasible(spec.resources):
            self._die(
                rec,
                (
                    f"it asks for {spec.resources}, but this node only has {self.pool.totals()} "
                    "in total, so it could never be placed; lower the request or start rtml with "
                    "more resources (rtml.init(num_cpus=, num_gpus=, resources=))"
                ),
                created=False,
            )
        else:
            self._construct(rec)
        return "created", rec.actor_id, None

    def _construct(self, rec: _Actor) -> None:
        spec = rec.spec
        payloads, err = self._dep_payloads(spec.deps, spec.name)
        if err is not None:
            self._die(rec, pickle.loads(err), created=False)
            return
        with self._lock:
            rec.alloc = self.pool.acquire(spec.resources) if spec.resources else None
        name = spec.name
        try:
            with self._scope(spec.task_id, rec.actor_id, rec.env_vars, None):
                args, kwargs = self._unpack(spec.args, payloads)
                init = getattr(rec.cls, "__init__", None)
                if inspect.iscoroutinefunction(init):  # async def __init__: on the actor's loop
                    rec.loop = asyncio.new_event_loop()
                    instance = rec.cls.__new__(rec.cls)  # type: ignore[call-overload]
                    _run_coroutine(init(instance, *args, **kwargs), rec.loop, rec.loop_lock)
                else:
                    instance = rec.cls(*args, **kwargs)
                if rec.checkpointer is not None:  # a restart resumes from the latest one
                    name = f"{rec.class_name}.{_checkpoint.RESTORE_METHOD}"
                    rec.checkpointer.restore(instance)
        except _PASS_THROUGH:
            raise
        except BaseException as e:
            blob = _task_error_blob(e, name, spec.task_id)
            del e
            self._die(rec, pickle.loads(blob), created=False)
            return
        rec.instance = instance
        if rec.is_async and rec.loop is None:
            rec.loop = asyncio.new_event_loop()

    def _call_actor(self, rec: _Actor, call: _Call, method: str) -> None:
        with rec.lock:
            instance = rec.instance
            if rec.state == _DEAD or instance is None:
                # No instance while alive: another thread is restarting it right now.
                self._fail(call, rec.error_blob or _system_blob(exc.ActorUnavailableError()))
                return
            if method in _TERMINATE:
                for i in range(1, max(call.num_returns, 0) + 1):
                    self._seal(return_id(call.task_id, i), INLINE, pickle.dumps(None))
                self._die(
                    rec, f"it was terminated by {method}() (calls made after that one are not run)"
                )
                return
            ck = rec.checkpointer
            counted = False
            if method in _READY:
                call.fn = _ready
            elif method == _checkpoint.SAVE_METHOD:
                if ck is None:
                    self._fail(
                        call,
                        _system_blob(
                            exc.RtmlSystemError(
                                f"actor {rec.class_name} has no checkpoint settings"
                            )
                        ),
                    )
                    return
                call.fn = lambda: ck.save(instance)
            else:
                call.fn = getattr(instance, method)
                counted = ck is not None and ck.interval > 0
            try:
                self._execute(call)
                if counted and ck is not None and rec.exit_cause is None:
                    ck.call_done(instance)
            finally:
                if rec.exit_cause is not None:
                    self._die(rec, rec.exit_cause)
                if rec.stale_loops:
                    self._close_stale_loops(rec)

    def _get_actor(self, name: str, namespace: str | None) -> tuple[int, Any]:
        ns = namespace or self.namespace
        with self._lock:
            aid = self._names.get((ns, name))
            if aid is None:
                raise ValueError(
                    f"there is no live actor named {name!r} in namespace {ns!r}; create it "
                    f"with Cls.options(name={name!r}).remote(), check the namespace (rtml.init("
                    "namespace=...) or get_actor(name, namespace=...)), or it may have died"
                )
            return aid, self._actors[aid].info["meta"]

    def _kill_actor(self, actor_id: int, no_restart: bool, node: str | None = None) -> None:
        with self._lock:
            rec = self._actors.get(actor_id)
        if rec is None or rec.state == _DEAD:
            return
        if no_restart:
            self._die(rec, "it was killed with rtml.kill()")
            return
        if rec.restarts_left == 0:
            self._die(
                rec,
                "it was killed with rtml.kill(no_restart=False) and has no restarts "
                f"left (max_restarts={rec.info.get('max_restarts', 0)})",
            )
            return
        if rec.restarts_left > 0:
            rec.restarts_left -= 1
        self._release_instance(rec)
        self._fate_share(rec)  # (a restart is a new process in a runtime with workers)
        self._construct(rec)

    def _fate_share(self, rec: _Actor) -> None:
        """As in Ray: the actors an actor created die with it, unless they are detached."""
        with self._lock:
            children = [
                r
                for r in self._actors.values()
                if r.creator == rec.actor_id and r.state != _DEAD and not r.info.get("detached")
            ]
        for child in children:
            self._die(
                child,
                f"The actor is dead because its owner has died: the actor {rec.class_name} "
                "created it and is gone, and an actor dies with its creator unless it is "
                "detached (create it with lifetime='detached' to outlive its creator)",
            )

    def _release_instance(self, rec: _Actor) -> None:
        rec.instance = None
        loop, rec.loop = rec.loop, None
        if loop is not None:
            rec.stale_loops.append(loop)
        self._close_stale_loops(rec)
        with self._lock:
            alloc, rec.alloc = rec.alloc, None
            if alloc is not None:
                self.pool.release(alloc)

    @staticmethod
    def _close_stale_loops(rec: _Actor) -> None:
        # A loop in use runs a call of this actor (further up the stack, when the actor died
        # or restarted inside its own async method): that call closes it when it returns.
        if not rec.loop_lock.acquire(blocking=False):
            return
        try:
            loops, rec.stale_loops = rec.stale_loops, []
            for loop in loops:
                _close_loop(loop)
        finally:
            rec.loop_lock.release()

    def _die(self, rec: _Actor, cause: Any, created: bool = True) -> None:
        """Mark the actor dead: later calls fail with ActorDiedError(cause)."""
        with self._lock:
            if rec.state == _DEAD:
                return
            rec.state = _DEAD
            rec.error_blob = _system_blob(
                exc.ActorDiedError(
                    cause,
                    actor_id=to_hex(rec.actor_id),
                    class_name=rec.class_name,
                    actor_name=rec.key[1] if rec.key else None,
                )
            )
            if rec.key is not None and self._names.get(rec.key) == rec.actor_id:
                del self._names[rec.key]
            handle = self._store.get(rec.handle_oid)
            if handle is not None and not created:
                handle.kind, handle.payload = ERR, rec.error_blob
            pinned, rec.pinned = rec.pinned, []
            if rec.pinned_handle:
                rec.pinned_handle = False
                pinned.append(rec.handle_oid)
        self._release_instance(rec)
        self._unpin(pinned)
        _checkpoint.remove(rec.info)
        self._fate_share(rec)
