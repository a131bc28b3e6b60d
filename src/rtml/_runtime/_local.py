"""Local mode (``rtml.init(local_mode=True)``): every task and actor call runs in the driver.

::

    f.remote(x) ──▶ LocalClient.submit_task ──▶ pack_args (the arguments are pickled, so the
                    task gets copies, as a worker would) ──▶ f runs now, in the calling thread
                    ──▶ return values pickled into the in-process store ──▶ ready ObjectRef(s)
    Cls.remote() ──▶ actor_op("create") ──▶ the instance is built here, at once
    handle.m.remote() ──▶ submit_task(actor_id=...) ──▶ the method runs now (async methods run
                    to completion on the actor's own event loop)
    get / wait ──▶ read the store: nothing is ever pending; errors come back as TaskError,
                    ActorDiedError, ... exactly as the embedded runtime stores them

There are no worker processes, sockets or shared-memory segments: a breakpoint or an IDE
debugger stops inside tasks, and ``os.getpid()`` in a task is the driver's. What differs from
the embedded runtime, on purpose:

- Calls run one at a time and to completion when submitted, so a task or actor call that
  waits for work submitted *after* it (a barrier, an actor method waiting for another call of
  the same actor, a blocking ``Queue.get`` on an empty queue) waits forever, as in Ray's old
  local mode. Generators run to their end at submission; the ObjectRefGenerator then yields
  the stored values.
- Tasks see the driver's module globals (the original function runs, not an unpickled copy),
  so a global mutated by a task is visible to the driver afterwards.
- ``cancel`` has nothing to cancel: every task has finished by the time its ref exists.
- ``KeyboardInterrupt`` and ``bdb.BdbQuit`` (quitting the debugger) are not turned into task
  errors: they stop the driver.
- Nothing in a task can crash a worker: ``os._exit`` in a task ends the driver.
- Resources are checked for feasibility (an impossible request fails with
  TaskUnschedulableError) but never waited for; ``get_gpu_ids()`` is empty.

Objects are reference counted through the same per-process ``counter`` as in the runtime:
an object is dropped once no ObjectRef to it exists in the process, no stored value contains
it, and no unconsumed generator holds it. An actor ends when its last handle is gone, unless
it is named or detached.
"""

from __future__ import annotations

import asyncio
import bdb
import contextlib
import inspect
import os
import pickle
import secrets
import threading
from collections.abc import Iterator
from typing import Any

import cloudpickle

from rtml import _checkpoint
from rtml import exceptions as exc
from rtml._node._build import node_resources
from rtml._protocol._actor import READY_METHODS, TERMINATE_METHODS, ActorExitRequest
from rtml._protocol._ids import DRIVER_INDEX, return_id, to_hex
from rtml._protocol._payload import ERR, INLINE, OOB
from rtml._protocol._spec import STREAMING, TaskSpec
from rtml._runtime._client import CoreClient
from rtml._runtime._payload import decode_value, fill_deps, freeze_arrays, split_returns
from rtml._runtime._refs import ObjectRef, counter
from rtml._runtime._remote_function import RemoteFunction
from rtml._runtime._session import Session
from rtml._scheduler import ResourcePool
from rtml._serialization import INLINE_THRESHOLD, dumps

# A large value with out-of-band buffers (numpy arrays): (pickle bytes, [buffer bytes]). The
# buffers are copied once into immutable bytes, so arrays come back read-only, as from the
# runtime's shared memory: PayloadKind.OOB, a kind of its own (it never leaves the driver).
_OOB = OOB

_EXIT = (ActorExitRequest, exc.AsyncioActorExit)
_PASS_THROUGH = (KeyboardInterrupt, bdb.BdbQuit)
_TERMINATE = TERMINATE_METHODS
_READY = READY_METHODS
_ALIVE, _DEAD = "ALIVE", "DEAD"
_INTERNAL_FILES = (__file__, _checkpoint.__file__, os.path.dirname(asyncio.__file__))


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


class _Entry:
    """A stored object: its payload and how many stored values or pins keep it alive."""

    __slots__ = ("contained", "kind", "payload", "pins")

    def __init__(self, kind: int, payload: Any, contained: Any) -> None:
        self.kind = kind
        self.payload = payload
        self.contained = tuple(contained)
        self.pins = 0


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


class LocalClient(CoreClient):
    """The core client of local mode: runs calls in this process (module docstring)."""

    def __init__(
        self,
        session: str,
        node_id: str,
        job_id: str,
        namespace: str,
        resources: dict[str, float],
        env_vars: dict[str, str],
    ) -> None:
        self._tls = threading.local()
        super().__init__(DRIVER_INDEX, session, "", node_id, job_id)
        self.namespace = namespace
        self.env_vars = dict(env_vars)
        self.pool = ResourcePool(resources)
        self._lock = threading.RLock()  # the store, streams and actor tables
        self._store: dict[int, _Entry] = {}
        self._streams: dict[int, int] = {}  # task id -> number of values it produced
        self._stream_held: set[int] = set()  # produced but not yet handed out
        self._functions: dict[str, Any] = {}
        self._classes: dict[str, type] = {}
        self._actors: dict[int, _Actor] = {}
        self._names: dict[tuple[str, str], int] = {}
        self._handles: dict[int, _Actor] = {}  # handle object id -> actor

    # Per thread: a task submitted from another thread of the driver is not "inside" the
    # task that happens to run in this one.
    @property  # type: ignore[override]
    def current_task_id(self) -> int | None:
        return getattr(self._tls, "task_id", None)

    @current_task_id.setter
    def current_task_id(self, value: int | None) -> None:
        self._tls.task_id = value

    @property  # type: ignore[override]
    def current_actor_id(self) -> int | None:
        return getattr(self._tls, "actor_id", None)

    @current_actor_id.setter
    def current_actor_id(self, value: int | None) -> None:
        self._tls.actor_id = value

    # ------------------------------------------------------------------ objects
    def _encode(self, value: Any, what: str) -> tuple[int, Any, list[int]]:
        s = dumps(value, what)
        if s.size < INLINE_THRESHOLD or not s.buffers:
            return INLINE, s.inline_bytes(), s.contained
        return _OOB, (s.data, [bytes(b.raw()) for b in s.buffers]), s.contained

    @staticmethod
    def _decode(kind: int, payload: Any) -> Any:
        if kind == _OOB:
            data, buffers = payload
            return pickle.loads(data, buffers=buffers)
        return decode_value(kind, payload)

    def _seal(self, oid: int, kind: int, payload: Any, contained: Any = ()) -> None:
        with self._lock:
            store = self._store
            for c in contained:
                e = store.get(c)
                if e is not None:
                    e.pins += 1
            store[oid] = _Entry(kind, payload, contained)

    def _apply_ref_updates(self) -> None:
        """Drop the objects whose last ObjectRef in this process went away."""
        _acquired, released = counter.take_updates()
        if released:
            with self._lock:
                for oid in released:
                    self._maybe_free(oid)

    def _maybe_free(self, oid: int) -> None:
        """Free ``oid`` (and what only it kept alive) if nothing refers to it (lock held)."""
        store = self._store
        todo = [oid]
        while todo:
            o = todo.pop()
            e = store.get(o)
            # counter._counts: the live ObjectRef instances of ``o`` in this process.
            if e is None or e.pins or o in self._stream_held or counter._counts.get(o):
                continue
            del store[o]
            rec = self._handles.pop(o, None)
            if rec is not None and rec.state == _ALIVE:
                self._die(
                    rec,
                    "every handle to it was dropped, so it was terminated (keep a "
                    "handle while you use the actor, or create it with a name or "
                    "lifetime='detached')",
                )
            for c in e.contained:
                ce = store.get(c)
                if ce is not None:
                    ce.pins -= 1
                    todo.append(c)

    def _unpin(self, oids: list[int]) -> None:
        with self._lock:
            for o in oids:
                e = self._store.get(o)
                if e is not None:
                    e.pins -= 1
                    self._maybe_free(o)

    def put(self, value: Any) -> ObjectRef:
        if isinstance(value, ObjectRef):
            return super().put(value)  # raises the runtime's TypeError
        self._apply_ref_updates()
        oid = return_id(self.ids.next_task_id(), 0)
        kind, payload, contained = self._encode(value, "value passed to put()")
        self._seal(oid, kind, payload, contained)
        return ObjectRef(oid)

    def _fetch(self, ids: list[int], timeout: float | None) -> list[tuple[int, Any]]:
        out = []
        with self._lock:
            for o in ids:
                e = self._store.get(o)
                if e is None:
                    out.append(
                        (
                            ERR,
                            _system_blob(
                                exc.ObjectLostError(
                                    to_hex(o),
                                    f"object {to_hex(o)} was freed or never existed: no "
                                    "reference to it remained (keep an ObjectRef alive for as long as "
                                    "you need its value)",
                                )
                            ),
                        )
                    )
                else:
                    out.append((e.kind, e.payload))
        return out

    def get(self, refs: list[ObjectRef], timeout: float | None) -> list[Any]:
        self._apply_ref_updates()
        return [
            self._decode(kind, payload)
            for kind, payload in self._fetch([r._id for r in refs], timeout)
        ]

    def _wait(self, ids: list[int], num_returns: int, timeout: float | None) -> list[int]:
        self._apply_ref_updates()
        return list(ids)  # everything has been computed by the time its ref exists

    def cancel(self, oid: int, force: bool, recursive: bool) -> None:
        """Nothing to do: the task behind every ref has finished (as cancel of a finished
        task in the runtime, ``get`` still returns its value)."""
        self._apply_ref_updates()

    def on_ready(self, oid: int, callback: Any) -> None:
        callback()

    def stream_next(self, task_id: int, index: int, timeout: float | None) -> int | None:
        with self._lock:
            produced = self._streams.get(task_id)
            if produced is None:
                return None
            if index < produced:
                oid = return_id(task_id, index + 1)
                self._stream_held.discard(oid)
                return oid
            del self._streams[task_id]
            return None

    def stream_drop(self, task_id: int, index: int) -> None:
        with self._lock:
            produced = self._streams.pop(task_id, None)
            for i in range(index, produced or 0):
                oid = return_id(task_id, i + 1)
                self._stream_held.discard(oid)
                self._maybe_free(oid)

    def _stream_item(self, task_id: int, kind: int, payload: Any, contained: Any = ()) -> None:
        with self._lock:
            produced = self._streams.get(task_id, 0)
            oid = return_id(task_id, produced + 1)
            self._stream_held.add(oid)
            self._seal(oid, kind, payload, contained)
            self._streams[task_id] = produced + 1

    def resources(self) -> tuple[dict[str, float], dict[str, float]]:
        with self._lock:
            return self.pool.totals(), self.pool.availability()

    def nodes(self) -> list[dict[str, Any]]:
        """``rtml.nodes()``: this process, the only node."""
        return [
            {
                "NodeID": self.node_id,
                "Alive": True,
                "Resources": self.resources()[0],
                "NodeManagerAddress": "127.0.0.1",
                "Labels": {},
            }
        ]

    # ------------------------------------------------------------------ tasks
    def _function(self, fn_id: str, blob_fn: Any) -> Any:
        fn = self._functions.get(fn_id)
        if fn is None:
            # The original function, not an unpickled copy: it sees the driver's globals,
            # and breakpoints set on it hold.
            owner = getattr(blob_fn, "__self__", None)
            if isinstance(owner, RemoteFunction):
                fn = owner._function
            else:
                fn = cloudpickle.loads(blob_fn())
            self._functions[fn_id] = fn
            self.registered_fns.add(fn_id)
        return fn

    def register_class(self, fn_id: str, cls: type) -> None:
        """Keep the original class of an actor class (called by ``ActorClass`` in local mode,
        so that instances are of the user's class, not of an unpickled copy)."""
        self._classes[fn_id] = cls
        self.registered_fns.add(fn_id)

    def submit_task(
        self,
        fn_id: str,
        blob_fn: Any,
        name: str,
        args: tuple,
        kwargs: dict,
        num_returns: int,
        resources: dict,
        max_retries: int,
        retry_exceptions: Any,
        env_vars: dict | None,
        actor_id: int | None = None,
        strategy: Any = None,
        placement: Any = None,
    ) -> Any:
        """Run a task (or an actor method call) now; returns its refs, already ready.

        Scheduling hints (``strategy`` and the like) mean nothing in one process: ignored.
        """
        self._apply_ref_updates()
        fn = self._function(fn_id, blob_fn) if actor_id is None else None
        blob, deps, _contained, keep = self.pack_args(name, args, kwargs)
        task_id = self.ids.next_task_id()
        if num_returns == STREAMING:
            with self._lock:
                self._streams[task_id] = 0
        if actor_id is None:
            self._execute(
                _Call(
                    task_id,
                    name,
                    fn,
                    blob,
                    deps,
                    num_returns,
                    resources,
                    max_retries,
                    retry_exceptions,
                    env_vars,
                    None,
                )
            )
        else:
            with self._lock:
                rec = self._actors.get(actor_id)
            call = _Call(
                task_id,
                name,
                None,
                blob,
                deps,
                num_returns,
                {},
                max_retries,
                retry_exceptions,
                None,
                rec,
            )
            if rec is None:
                self._fail(
                    call,
                    _system_blob(
                        exc.ActorDiedError(
                            "no such actor on this runtime (the handle comes from another session, or "
                            "the actor was never created)",
                            actor_id=to_hex(actor_id),
                        )
                    ),
                )
            else:
                self._call_actor(rec, call, fn_id)
        del keep  # large arguments were put() for the call: they may go now
        return self.refs_for(task_id, num_returns)

    def _dep_payloads(self, deps: tuple, name: str) -> tuple[list[tuple[int, Any]], bytes | None]:
        """The payloads of a call's ref arguments, or the error blob the call inherits."""
        out = []
        with self._lock:
            for d in deps:
                e = self._store.get(d)
                if e is None:
                    return [], _system_blob(
                        exc.ObjectLostError(
                            to_hex(d),
                            f"argument {to_hex(d)} of task {name} was freed before the task ran",
                        )
                    )
                if e.kind == ERR:
                    return [], e.payload  # a failed argument fails the task with its error
                out.append((e.kind, e.payload))
        return out, None

    def _unpack(self, blob: bytes, payloads: list[tuple[int, Any]]) -> tuple[list, dict]:
        if not blob:
            return [], {}
        args, kwargs = pickle.loads(blob)
        if payloads:
            fill_deps(args, kwargs, [self._decode(k, p) for k, p in payloads])
        freeze_arrays(args, kwargs)
        return args, kwargs

    @contextlib.contextmanager
    def _scope(
        self, task_id: int, actor_id: int | None, env_vars: dict | None, resources: dict | None
    ) -> Iterator[None]:
        """Run a call as the current task: context ids, environment, resources held."""
        tls = self._tls
        prev = (getattr(tls, "task_id", None), getattr(tls, "actor_id", None))
        tls.task_id, tls.actor_id = task_id, actor_id
        env = {**self.env_vars, **(env_vars or {})}
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        alloc = None
        if resources:
            with self._lock:
                alloc = self.pool.acquire(resources)  # None when nested calls overcommit
        try:
            yield
        finally:
            if alloc is not None:
                with self._lock:
                    self.pool.release(alloc)
            for k, old in saved.items():
                if old is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = old
            tls.task_id, tls.actor_id = prev

    def _fail(self, call: _Call, blob: bytes) -> None:
        """Store ``blob`` as every result of the call (as its next value when streaming)."""
        if call.num_returns == STREAMING:
            self._stream_item(call.task_id, ERR, blob)
            return
        for i in range(1, call.num_returns + 1):
            self._seal(return_id(call.task_id, i), ERR, blob)

    def _execute(self, call: _Call) -> None:
        """Run a call to completion, with its retries, and store what it produced."""
        payloads, err = self._dep_payloads(call.deps, call.name)
        if err is None and call.resources and not self.pool.feasible(call.resources):
            err = _system_blob(
                exc.TaskUnschedulableError(
                    f"task {call.name} asks for {call.resources}, but this node only has "
                    f"{self.pool.totals()} in total, so it could never run; lower the request or "
                    "start rtml with more resources (rtml.init(num_cpus=, num_gpus=, resources=))"
                )
            )
        if err is not None:
            self._fail(call, err)
            return
        rec = call.actor
        env = rec.env_vars if rec is not None else call.env_vars
        with self._scope(call.task_id, rec.actor_id if rec else None, env, call.resources):
            retries = call.retries
            while self._attempt(call, payloads, retries != 0):
                if retries > 0:
                    retries -= 1

    def _attempt(self, call: _Call, payloads: list[tuple[int, Any]], may_retry: bool) -> bool:
        """Run the call once and store its results; True if it should run again instead."""
        streamed = 0
        rec = call.actor
        loop = rec.loop if rec is not None and rec.is_async else None

        def emit(item: Any) -> None:
            nonlocal streamed
            kind, payload, contained = self._encode(item, f"value yielded by {call.name}")
            self._stream_item(call.task_id, kind, payload, contained)
            streamed += 1

        results: list[tuple[int, Any, list[int]]] = []
        try:
            args, kwargs = self._unpack(call.blob, payloads)
            value = call.fn(*args, **kwargs)
            del args, kwargs
            if rec is not None and rec.is_async and inspect.isawaitable(value):
                value = _run_coroutine(_awaited(value), loop, rec.loop_lock)
            elif inspect.iscoroutine(value):
                value = _run_coroutine(value)
            if call.num_returns == STREAMING:
                if rec is not None and rec.is_async and inspect.isasyncgen(value):
                    _run_coroutine(_drain(value, emit), loop, rec.loop_lock)
                elif not hasattr(value, "__iter__"):
                    raise TypeError(
                        f"task {call.name} uses num_returns='streaming' but "
                        f"returned {type(value).__name__}, not a generator"
                    )
                else:
                    for item in value:
                        emit(item)
            else:
                results = self._encode_returns(call, value)
        except _PASS_THROUGH:
            raise
        except BaseException as e:  # user code may raise anything, even SystemExit
            if rec is not None and isinstance(e, _EXIT):
                rec.exit_cause = f"exit_actor() was called in {call.name.rpartition('.')[2]}()"
                died = exc.ActorDiedError(rec.exit_cause, class_name=call.name.partition(".")[0])
                self._fail(call, cloudpickle.dumps(died))  # its own call too, as in Ray
                return False
            elif may_retry and not streamed and self._retryable(call, e):
                return True
            else:
                self._fail(call, _task_error_blob(e, call.name, call.task_id))
                return False
        for i, (kind, payload, contained) in enumerate(results, 1):
            self._seal(return_id(call.task_id, i), kind, payload, contained)
        return False

    def _encode_returns(self, call: _Call, value: Any) -> list[tuple[int, Any, list[int]]]:
        n = call.num_returns
        if n == STREAMING or n == 0:
            return []
        values = split_returns(value, n, call.name)
        return [self._encode(v, f"return value of {call.name}") for v in values]

    @staticmethod
    def _retryable(call: _Call, error: BaseException) -> bool:
        rx = call.retry_exceptions
        if rx is True:
            return True
        if not rx:
            return False
        return isinstance(error, tuple(rx))

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
        if rec.is_async:
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
        self._construct(rec)

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

    # ------------------------------------------------------------------ shutdown
    def close(self) -> None:
        """Drop every object and actor (``rtml.shutdown()``)."""
        with self._lock:
            actors = list(self._actors.values())
            self._actors.clear()
            self._names.clear()
            self._handles.clear()
            self._store.clear()
            self._streams.clear()
            self._stream_held.clear()
            self._functions.clear()
            self._classes.clear()
        for rec in actors:
            rec.state = _DEAD
            self._release_instance(rec)
            _checkpoint.remove(rec.info)
        _checkpoint.remove_session(self.session)


class LocalRuntime(Session):
    """What ``rtml.init(local_mode=True)`` starts: a LocalClient and nothing else."""

    def __init__(self, config: Any) -> None:
        super().__init__()
        self.config = config
        self.session = "l" + secrets.token_hex(4)
        self.node_id = secrets.token_hex(8)
        self.job_id = "01000000"
        resources = node_resources(
            config.num_cpus, config.num_gpus, config.resources, config.object_store_memory
        )
        self.client = LocalClient(
            self.session, self.node_id, self.job_id, config.namespace, resources, config.env_vars
        )

    def _stop_parts(self) -> None:
        self.client.close()  # drops every object and actor
