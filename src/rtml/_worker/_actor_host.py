"""The actor side of a worker process: the instance, its methods, and how calls run.

::

    node ──"actor_init"──▶ ActorHost (installs the constructor as the creation's function)
         ──"exec" (constructor)──▶ Worker.execute ──▶ instance, methods installed,
                                                       "actor_ready" ──▶ node
         ──"exec" (calls)──▶ max_concurrency 1: Worker's own queue, one call at a time
                             threaded (max_concurrency > 1): a thread pool runs execute()
                             async (any async def method): one event loop runs them all,
                                                            up to max_concurrency at once

In the threaded and async modes the process's main thread only reads the channel (the
WorkerClient is switched to ``threaded`` so that nested get/wait calls wait for replies the
main thread delivers). ``exit_actor()`` and ``__rtml_terminate__`` make the call return None
and the process exit afterwards (running atexit handlers); the node fails later calls with
ActorDiedError.

Checkpoints (``_checkpoint.py``): right after the constructor, the latest checkpoint of the
actor, if any, is restored (a restart resumes from it; an error there fails the creation like
one in the constructor). With ``checkpoint_interval=N`` the state is snapshotted when every
N-th call of the class's own methods returns, before its result is sent, and written to disk by
a background thread while the next calls run (one checkpoint in flight at most);
``__rtml_checkpoint__`` takes one on demand and returns its sequence number once it is on disk.
"""

from __future__ import annotations

import asyncio
import atexit
import inspect
import os
import sys
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import cloudpickle

from rtml import exceptions as exc
from rtml._checkpoint import SAVE_METHOD, Checkpointer
from rtml._protocol import _ids
from rtml._protocol._actor import READY_METHODS, TERMINATE_METHODS, ActorExitRequest
from rtml._protocol._spec import STREAMING, TaskSpec
from rtml._runtime._payload import encode_value
from rtml._runtime._refs import counter
from rtml._worker._client import SPIN_S, cancelled_error

_EXIT = (ActorExitRequest, exc.AsyncioActorExit)
_TERMINATE = TERMINATE_METHODS
_READY = READY_METHODS
_NOT_COUNTED = (*_TERMINATE, *_READY, SAVE_METHOD)  # calls that do not advance the interval


def _ready() -> bool:
    return True


def _error_blob(e: BaseException, spec: TaskSpec, pid: int, name: str | None = None) -> bytes:
    name = name or spec.name
    err = exc.TaskError.from_exception(e, name, pid=pid, task_id=_ids.to_hex(spec.task_id))
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


def _trim_rtml_frames(e: BaseException) -> None:
    """Start the traceback at the first frame of user code (e.g. ``__rtml_restore__``)."""
    tb = e.__traceback__
    while (
        tb is not None
        and tb.tb_next is not None
        and tb.tb_frame.f_globals.get("__name__", "").startswith("rtml.")
    ):
        tb = tb.tb_next
    e.__traceback__ = tb


def _exit_cause(e: BaseException, method: str) -> str:
    if isinstance(e, _EXIT):
        return f"exit_actor() was called in {method}()"
    return f"sys.exit({getattr(e, 'code', None)!r}) was called in {method}()"


class ActorHost:
    """Created by the worker on "actor_init"; lives as long as the process."""

    def __init__(self, worker: Any, m: tuple) -> None:
        _tag, actor_id, fn_id, info = m
        self.worker = worker
        self.actor_id: int = actor_id
        self.fn_id: str = fn_id
        self.class_name: str = info["class_name"]
        self.methods: list[str] = info["methods"]
        self.is_async: bool = info["is_async"]
        self.max_concurrency: int = info["max_concurrency"]
        self.concurrent = False  # threaded or async: "exec" goes to submit(), not the queue
        self.instance: Any = None
        self.pool: ThreadPoolExecutor | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.sem: asyncio.Semaphore | None = None
        self.tasks: dict[int, asyncio.Task] = {}
        self.inbox: deque[tuple] = deque()  # async: calls for the loop to start
        self.scheduled = False  # async: a _start_tasks is on its way to the loop
        self.lingering = False  # async: the loop polls the inbox after its last call ended
        self.handoff = threading.Lock()  # guards inbox, scheduled and lingering together
        self._tls = threading.local()
        ck = info.get("checkpoint")
        self.checkpointer = Checkpointer(ck, self.class_name) if ck else None
        if info.get("env_vars"):
            os.environ.update(info["env_vars"])
        worker.fns[fn_id] = self._construct
        worker.client.current_actor_id = actor_id

    # ------------------------------------------------------------------ messages
    def handle(self, m: tuple) -> None:
        tag = m[0]
        if tag == "actor_cancel":
            self.worker.cancels.add(m[1])
            if self.loop is not None:
                self.loop.call_soon_threadsafe(self._cancel_task, m[1])
        else:
            raise exc.RtmlSystemError(f"actor worker got unknown message {tag!r}")

    def submit(self, m: tuple) -> None:
        """An "exec" in threaded or async mode (called on the main, reading thread)."""
        if self.loop is not None:
            # One wake-up of the loop per batch of calls, not one per call.
            with self.handoff:
                self.inbox.append(m)
                if self.scheduled or self.lingering:
                    return  # the loop takes it with the others, or sees it while polling
                self.scheduled = True
            self.loop.call_soon_threadsafe(self._start_tasks)
        else:
            assert self.pool is not None
            self.pool.submit(self._run_threaded, m)

    # ------------------------------------------------------------------ construction
    def creation_failed(self, error: BaseException, spec: Any) -> None:
        """The constructor's arguments could not be unpickled: the creation fails with that."""
        self.worker.blobs.pop(self.fn_id, None)
        self.worker.send(
            [("actor_ready", self.actor_id, _error_blob(error, spec, self.worker.pid))]
        )

    def _construct(self, *args: Any, **kwargs: Any) -> None:
        w = self.worker
        spec = w.current
        try:
            cls = cloudpickle.loads(w.blobs.pop(self.fn_id))  # (may fail: the actor dies of it)
            init = getattr(cls, "__init__", None)
            if self.is_async and inspect.iscoroutinefunction(init):
                # async def __init__ runs on the actor's event loop, where its methods run (it
                # may start a server there); it must not wait for other rtml calls.
                self._start_loop()
                assert self.loop is not None
                instance = cls.__new__(cls)
                asyncio.run_coroutine_threadsafe(
                    init(instance, *args, **kwargs), self.loop
                ).result()
            else:
                instance = cls(*args, **kwargs)
        except BaseException as e:
            tb = e.__traceback__
            if tb is not None:
                e.__traceback__ = tb.tb_next  # the traceback starts at the user's __init__
            w.send([("actor_ready", self.actor_id, _error_blob(e, spec, w.pid))])
            raise
        ck = self.checkpointer
        if ck is not None:
            try:
                ck.restore(instance)  # a restart resumes from the latest checkpoint
            except BaseException as e:
                _trim_rtml_frames(e)
                w.send(
                    [
                        (
                            "actor_ready",
                            self.actor_id,
                            _error_blob(e, spec, w.pid, f"{self.class_name}.__rtml_restore__"),
                        )
                    ]
                )
                raise
        self.instance = instance
        counted = ck is not None and ck.interval > 0
        fns = w.fns
        for name in self.methods:
            if name in _TERMINATE:
                fns[name] = self._terminate
            elif name in _READY:
                fns[name] = _ready
            elif name == SAVE_METHOD:
                fns[name] = self._checkpoint_now
            elif self.is_async:
                fns[name] = getattr(instance, name)  # _run handles exit_actor itself
            else:
                fns[name] = self._wrap(getattr(instance, name), counted)
        if self.is_async:
            if self.loop is None:
                self._start_loop()
        elif self.max_concurrency > 1:
            self.pool = ThreadPoolExecutor(self.max_concurrency, thread_name_prefix="rtml-actor")
            w.client.threaded = True
            self.concurrent = True
        w.send([("actor_ready", self.actor_id, None)])

    def _wrap(self, method: Any, counted: bool = False) -> Any:
        ck = self.checkpointer if counted else None
        instance = self.instance

        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                value = method(*args, **kwargs)
            except (*_EXIT, SystemExit) as e:
                cause = _exit_cause(e, getattr(method, "__name__", "a method"))
                self._request_exit(self._current_task(), cause)
                raise self._exit_error(cause) from None
            except BaseException as e:
                tb = e.__traceback__
                if tb is not None:
                    e.__traceback__ = tb.tb_next  # hide this wrapper from the traceback
                if ck is not None:  # the call ran (and may have changed the state)
                    ck.call_done(instance)
                raise
            if ck is not None:
                if inspect.isgenerator(value):  # it runs as the worker streams it
                    return _count_when_done(value, ck, instance)
                ck.call_done(instance)
            return value

        return call

    def _checkpoint_now(self) -> int:
        """``handle.__rtml_checkpoint__.remote()``: save now; the checkpoint's number."""
        if self.checkpointer is None:
            raise exc.RtmlSystemError(
                f"actor {self.class_name} has no checkpoint settings (its node did not pass "
                "them on); it cannot be checkpointed"
            )
        return self.checkpointer.save(self.instance)

    def current_call(self) -> int | None:
        """The task id of the call running on this thread (or asyncio task), if any."""
        if self.loop is not None:
            try:
                current = asyncio.current_task()
            except RuntimeError:  # not on the actor's event loop
                current = None
            if current is not None:
                for tid, task in list(self.tasks.items()):
                    if task is current:
                        return tid
                return None
        return self._current_task()

    def _current_task(self) -> int | None:
        tid = getattr(self._tls, "task_id", None)
        if tid is None and self.worker.current is not None:
            tid = self.worker.current.task_id
        return tid

    def _exit_error(self, cause: str) -> exc.ActorDiedError:
        """What the call that ended the actor gives its caller (as in Ray)."""
        err = exc.ActorDiedError(
            cause, actor_id=_ids.to_hex(self.actor_id), class_name=self.class_name
        )
        err._rtml_actor_exit = True  # type: ignore[attr-defined]
        return err

    def _request_exit(self, task_id: int | None, cause: str) -> None:
        self.worker.send([("actor_exiting", self.actor_id, task_id, cause)])
        if not self.concurrent:
            self.worker.exiting = True  # the main loop stops after this call's "done"

    def _terminate(self) -> None:
        if not self.concurrent:
            self.worker.exiting = True
        # threaded/async: the node sends "exit" once this call's "done" has arrived

    def on_exit(self) -> None:
        """The process is about to exit on purpose: run the user's atexit handlers."""
        try:
            atexit._run_exitfuncs()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()

    # ------------------------------------------------------------------ threaded mode
    def _run_threaded(self, m: tuple) -> None:
        self._tls.task_id = m[1].task_id
        try:
            self.worker.execute(m[1], m[2], m[3])
            if counter.acquired or counter.released:
                # The reading thread may sit in receive() for long: send our releases (e.g.
                # of refs inside the result, held until "done" went out) now.
                self.worker.flush_refs()
        except (ConnectionError, OSError):
            pass  # the node is gone; the main thread sees it and exits
        finally:
            self._tls.task_id = None

    # ------------------------------------------------------------------ async mode
    def _start_loop(self) -> None:
        loop = self.loop = asyncio.new_event_loop()
        started = threading.Event()

        def main() -> None:
            asyncio.set_event_loop(loop)
            self.sem = asyncio.Semaphore(self.max_concurrency)
            started.set()
            loop.run_forever()

        threading.Thread(target=main, name="rtml-actor-loop", daemon=True).start()
        started.wait()
        self.worker.client.threaded = True
        self.concurrent = True

    def _start_tasks(self) -> None:
        with self.handoff:
            self.scheduled = False  # a call appended from now on wakes us again
            calls = list(self.inbox)
            self.inbox.clear()
        loop = self.loop
        assert loop is not None
        for m in calls:
            spec = m[1]
            self.tasks[spec.task_id] = loop.create_task(self._run(spec, m[2], m[3]))

    def _linger(self, until: float) -> None:
        """Poll the inbox for a while after the last call ended, instead of sleeping until the
        reading thread wakes the loop (decision 0010): a caller that waits for each result
        sends the next call within a round trip."""
        with self.handoff:
            more = not self.inbox and not self.tasks and time.perf_counter() < until
            if not more:
                self.lingering = False
                start = bool(self.inbox)
        if more:
            os.sched_yield()  # lets the reading thread take the GIL when a message arrives
            assert self.loop is not None
            self.loop.call_soon(self._linger, until)
        elif start:
            self._start_tasks()

    def _cancel_task(self, task_id: int) -> None:
        task = self.tasks.get(task_id)
        if task is not None:
            task.cancel()

    async def _run(self, spec: TaskSpec, deps: list | None, gpu_ids: list[int] | None) -> None:
        w = self.worker
        t0 = time.perf_counter()
        retryable = False
        value = None
        counted = True
        try:
            assert self.sem is not None
            async with self.sem:
                if gpu_ids:
                    w.client.gpu_ids = list(gpu_ids)
                    os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, gpu_ids))
                if spec.task_id in w.cancels:
                    raise cancelled_error(spec.name, spec.task_id)
                fn = w.fns[spec.fn_id]
                args, kwargs = w.unpack_args(spec, deps)
                value = fn(*args, **kwargs)
                del args, kwargs
                if inspect.isawaitable(value):
                    value = await value
                if spec.num_returns == STREAMING:
                    await self._stream(spec, value)
                    results: list[tuple] = []
                else:
                    results = w.encode_returns(spec, value)
        except (asyncio.CancelledError, exc.TaskCancelledError):
            results = w.error_results(
                spec, cloudpickle.dumps(cancelled_error(spec.name, spec.task_id))
            )
        except (*_EXIT, SystemExit) as e:
            counted = False
            cause = _exit_cause(e, spec.name.rpartition(".")[2])
            self._request_exit(spec.task_id, cause)
            results = w.error_results(spec, cloudpickle.dumps(self._exit_error(cause)))
        except BaseException as e:  # user code may raise anything
            tb = e.__traceback__
            if tb is not None and tb.tb_frame.f_code is _RUN_CODE:
                e.__traceback__ = tb.tb_next
            retryable = w.retryable(spec, e)
            results = w.error_results(spec, _error_blob(e, spec, w.pid))
            del e
        finally:
            self.tasks.pop(spec.task_id, None)
            w.cancels.discard(spec.task_id)
        ck = self.checkpointer
        if counted and ck is not None and ck.interval and spec.fn_id not in _NOT_COUNTED:
            ck.call_done(self.instance)  # on the loop: no other call runs during the snapshot
        try:
            w.send([("done", spec.task_id, results, time.perf_counter() - t0, retryable)])
            value = None  # "done" is out: the node holds the refs inside the result now
            if counter.acquired or counter.released:
                w.flush_refs()
        except (ConnectionError, OSError):
            pass  # the node is gone; the main thread sees it and exits
        if not self.tasks and SPIN_S:
            with self.handoff:
                if self.lingering:
                    return
                self.lingering = True
            assert self.loop is not None
            self.loop.call_soon(self._linger, time.perf_counter() + SPIN_S)

    async def _stream(self, spec: TaskSpec, value: Any) -> None:
        w = self.worker
        i = 0
        if inspect.isasyncgen(value):
            async for v in value:
                self._send_item(spec, i, v)
                i += 1
            return
        if not hasattr(value, "__iter__"):
            raise TypeError(
                f"method {spec.name} uses num_returns='streaming' but returned "
                f"{type(value).__name__}, not a generator"
            )
        for v in value:
            self._send_item(spec, i, v)
            i += 1
            if spec.task_id in w.cancels:
                raise cancelled_error(spec.name, spec.task_id)

    def _send_item(self, spec: TaskSpec, i: int, v: Any) -> None:
        w = self.worker
        kind, payload, size, contained = encode_value(
            v,
            _ids.return_id(spec.task_id, i + 1),
            w.session,
            w.shm_dir,
            f"value yielded by {spec.name}",
        )
        w.send([("item", spec.task_id, i, kind, payload, size, contained)])


def _count_when_done(gen: Any, ck: Checkpointer, instance: Any) -> Any:
    try:
        yield from gen
    finally:
        ck.call_done(instance)


_RUN_CODE = ActorHost._run.__code__
