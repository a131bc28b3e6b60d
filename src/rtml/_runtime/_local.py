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
from rtml._protocol._spec import STREAMING
from rtml._runtime._client import CoreClient
from rtml._runtime._local_actors import (
    LocalActors,
    _Actor,
    _awaited,
    _Call,
    _drain,
    _run_coroutine,
    _system_blob,
    _task_error_blob,
)
from rtml._runtime._payload import (
    PartialReturns,
    decode_value,
    fill_deps,
    freeze_arrays,
    split_returns,
)
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


class _Entry:
    """A stored object: its payload and how many stored values or pins keep it alive."""

    __slots__ = ("contained", "kind", "payload", "pins")

    def __init__(self, kind: int, payload: Any, contained: Any) -> None:
        self.kind = kind
        self.payload = payload
        self.contained = tuple(contained)
        self.pins = 0


class LocalClient(LocalActors, CoreClient):
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
                fn = owner._runnable(blob_fn)
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
        try:
            values = split_returns(value, n, call.name)
        except PartialReturns as p:  # the values before the error stay readable, as in Ray
            out = [self._encode(v, f"return value of {call.name}") for v in p.values]
            blob = _task_error_blob(p.error, call.name, call.task_id)
            return out + [(ERR, blob, [])] * (n - len(out))
        return [self._encode(v, f"return value of {call.name}") for v in values]

    @staticmethod
    def _retryable(call: _Call, error: BaseException) -> bool:
        rx = call.retry_exceptions
        if rx is True:
            return True
        if not rx:
            return False
        return isinstance(error, tuple(rx))

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
