"""The worker process: receives task assignments, runs them, sends results.

::

    node ──"fn"/"exec"/"revoke"/"cancel"/"reply"──▶ channel ──▶ handle() ──▶ queue of tasks
                                                                         │
    node ◀──"done" (+ "refs" first) ◀── encode results ◀── run the function ◀┘

One task runs at a time, in assignment order. Results go back as soon as each task ends.
Values above the inline threshold are written straight into shared memory by this process,
so only a path crosses the channel. Output printed by tasks is sent to the driver line by line.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import signal
import socket
import sys
import threading
import time
from collections import deque
from typing import Any

import cloudpickle

from rtml import exceptions as exc
from rtml._object_store._segments import cleanup_session
from rtml._protocol import _ids
from rtml._protocol._payload import ERR
from rtml._protocol._spec import STREAMING, TaskSpec
from rtml._runtime import _context
from rtml._runtime._payload import (
    PartialReturns,
    decode_value,
    encode_value,
    fill_deps,
    freeze_arrays,
    split_returns,
)
from rtml._runtime._refs import counter
from rtml._transport import BlockingChannel
from rtml._worker._client import SPIN_S, WorkerClient, cancelled_error


class _LogStream:
    """Replaces sys.stdout/sys.stderr: complete lines go to the driver with the task's name."""

    def __init__(self, worker: Worker, name: str) -> None:
        self._worker = worker
        self._name = name
        self._buf = ""
        self.encoding = "utf-8"

    def write(self, text: str) -> int:
        self._buf += text
        if "\n" in self._buf:
            lines, _, self._buf = self._buf.rpartition("\n")
            self._worker.send_log(self._name, lines)
        return len(text)

    def flush(self) -> None:
        if self._buf:
            text, self._buf = self._buf, ""
            self._worker.send_log(self._name, text)

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        return 1 if self._name == "stdout" else 2

    def writable(self) -> bool:
        return True


class Worker:
    def __init__(self, sock: socket.socket, wid: int, session: str, shm_dir: str) -> None:
        self.chan = BlockingChannel(sock)
        self.wid = wid
        self.pid = os.getpid()
        # OMP_NUM_THREADS follows each task's num_cpus (as in Ray) unless the user set it:
        # the value set now, or None when it is the user's.
        self.omp = os.environ["OMP_NUM_THREADS"] if os.environ.pop("RTML_OMP_MANAGED", "") else None
        self.session = session
        self.shm_dir = shm_dir
        self.send_lock = threading.Lock()
        self.deferred: list[tuple] = []  # answers made while a send was in progress
        self.queue: deque[tuple] = deque()
        self.blobs: dict[str, bytes] = {}
        self.fns: dict[str, Any] = {}
        self.current: TaskSpec | None = None
        self.cancels: set[int] = set()  # cancelled calls this worker holds (not yet raised)
        self.cancel_seen: set[int] = set()  # cancelled calls that raised TaskCancelledError
        self.in_user = False
        self.interrupt_pending = False
        self.held: list[tuple] = []  # finished results waiting to ride with the next frame
        self.held_since = 0.0
        self.fn_time: dict[str, float] = {}  # per function: moving average of run time (s)
        self.exiting = False
        self.spin_skip = 0  # idle periods to sleep through at once (see run())
        self.spin_backoff = 0
        self.client = WorkerClient(self, wid, session, shm_dir)
        self.actor_host: Any = None

    # ------------------------------------------------------------------ channel
    def send(self, msgs: list[Any]) -> None:
        with self.send_lock:
            rm = self.client.ref_message()
            if rm is not None:
                msgs.insert(0, rm)
            if self.held:  # held results (each after its own ref updates) go first, so the
                msgs[:0] = self.held  # node sees exactly the order of sending at once
                self.held = []
            self.chan.send(msgs)
            if self.deferred:
                deferred, self.deferred = self.deferred, []
                self.chan.send(deferred)

    def send_soon(self, msg: tuple) -> None:
        """Send ``msg`` now, or right after the send in progress (safe in a signal handler that
        interrupted a send: the channel lock is never waited for here)."""
        if self.send_lock.acquire(blocking=False):
            try:
                self.chan.send([msg])
            finally:
                self.send_lock.release()
        else:
            self.deferred.append(msg)

    def finish(self, msg: tuple, fn_id: str, duration: float) -> None:
        """Send a task's result, or carry it with the next frame when tiny tasks follow.

        A result is held only while the next queued task's function is known to take under
        100 µs, for at most 64 results and 1 ms: the driver then wakes and decodes once per
        batch instead of once per task. A result with nothing (or anything slower) queued
        behind it leaves at once.
        """
        old = self.fn_time.get(fn_id)
        self.fn_time[fn_id] = duration if old is None else 0.8 * old + 0.2 * duration
        if self.queue and self.actor_host is None and len(self.held) < 64:
            now = time.perf_counter()
            est = self.fn_time.get(self.queue[0][1].fn_id)
            if (
                est is not None
                and est < 0.0001
                and (not self.held or now - self.held_since < 0.001)
            ):
                if not self.held:
                    self.held_since = now
                rm = self.client.ref_message()  # updates made so far precede this result
                if rm is not None:
                    self.held.append(rm)
                self.held.append(msg)
                return
        self.send([msg])

    def flush_refs(self) -> None:
        """Send pending ref releases now (e.g. those of a result, once "done" is sent)."""
        with self.send_lock:
            rm = self.client.ref_message()
            if rm is not None:
                self.chan.send([rm])

    def send_log(self, stream: str, text: str) -> None:
        spec = self.current
        name = spec.name if spec is not None else "worker"
        job = self.client.job
        prev = self.in_user
        self.in_user = False
        try:
            self.send([("log", stream, text, name, job and job[0])])
        finally:
            self.in_user = prev

    def handle(self, m: tuple) -> None:
        tag = m[0]
        if tag == "exec":
            if self.actor_host is not None and self.actor_host.concurrent:
                self.actor_host.submit(m)  # threaded or async actor
            else:
                self.queue.append(m)
        elif tag == "reply":
            self.client.on_reply(m[1], m[2])
        elif tag == "fn":
            self.blobs[m[1]] = m[2]
        elif tag == "revoke":
            ids = set(m[1])
            dropped = [x[1].task_id for x in self.queue if x[1].task_id in ids]
            self.queue = deque(x for x in self.queue if x[1].task_id not in ids)
            if len(m) > 2:  # the node waits to hear which ones it may run elsewhere (this may
                self.send_soon(("revoked", dropped))  # run in the interrupt handler)
        elif tag == "cancel":
            self.cancels.add(m[1])
        elif tag == "exit":
            self.exiting = True
        elif self.actor_host is not None:
            self.actor_host.handle(m)
        elif tag == "actor_init":
            from rtml._worker._actor_host import ActorHost

            self.actor_host = ActorHost(self, m)
        else:
            raise exc.RtmlSystemError(f"worker got unknown message {tag!r}")

    def check_cancelled(self, safe_point: bool = False) -> None:
        """Raise TaskCancelledError if the current task was cancelled. A running actor call is
        not interrupted (as in Ray: the actor's state would be left half-changed); it is
        stopped only at a safe point (before it starts, between the items it streams) and
        otherwise sees ``get_runtime_context().is_canceled()`` become true."""
        spec = self.current
        if spec is not None and spec.task_id in self.cancels:
            if self.actor_host is not None and not safe_point:
                return
            self.cancels.discard(spec.task_id)
            self.cancel_seen.add(spec.task_id)
            raise cancelled_error(spec.name, spec.task_id)

    def is_canceled(self) -> bool:
        """``get_runtime_context().is_canceled()``: was the running task or actor call
        cancelled? A single-threaded worker reads what the node sent meanwhile first (its
        channel is not read while user code runs)."""
        host = self.actor_host
        if host is not None:
            tid = host.current_call()
        else:
            spec = self.current
            tid = None if spec is None else spec.task_id
        if tid is None:
            return False
        if (
            tid not in self.cancels
            and self.in_user
            and (host is None or not host.concurrent)
            and threading.current_thread() is threading.main_thread()
        ):
            self._drain_channel()
            if host is None:
                self.check_cancelled()  # a task is interrupted when cancelled, as by the signal
        return tid in self.cancels or tid in self.cancel_seen

    def _on_interrupt(self, signum: int, frame: Any) -> None:
        # Only drain the channel while user code runs: inside rtml code the reading loop
        # itself sees the cancel message, and re-entering it here would corrupt its state.
        # A signal that lands just before user code starts is remembered and taken there.
        if not self.in_user:
            self.interrupt_pending = True
            return
        self.take_interrupt()

    def take_interrupt(self) -> None:
        """Read what the node sent (a cancel, typically) and raise if it cancels this task."""
        self.interrupt_pending = False
        self._drain_channel()
        self.check_cancelled()

    def _drain_channel(self) -> None:
        """Handle what the node has sent, from inside user code (not re-entered meanwhile)."""
        self.in_user = False
        try:
            for m in self.chan.receive_nowait():
                self.handle(m)
        finally:
            self.in_user = True

    # ------------------------------------------------------------------ execution
    def set_omp_threads(self, spec: Any) -> None:
        if spec.env_vars and "OMP_NUM_THREADS" in spec.env_vars:
            return  # the task's runtime_env sets it
        want = str(max(1, int(spec.resources.get("CPU", 1))))
        if want != self.omp:
            os.environ["OMP_NUM_THREADS"] = self.omp = want

    def function(self, fn_id: str) -> Any:
        fn = self.fns.get(fn_id)
        if fn is None:
            blob = self.blobs.pop(fn_id)
            fn = self.fns[fn_id] = cloudpickle.loads(blob)
        return fn

    @staticmethod
    def unpack_args(spec: TaskSpec, deps: list | None) -> tuple[list, dict]:
        if not spec.args:
            return [], {}
        args, kwargs = cloudpickle.loads(spec.args)
        if deps:
            fill_deps(args, kwargs, [decode_value(k, p) for k, p in deps])
        freeze_arrays(args, kwargs)
        return args, kwargs

    def encode_returns(self, spec: TaskSpec, value: Any) -> list[tuple]:
        n = spec.num_returns
        tid = spec.task_id
        if n == 0:
            return []
        error: list[tuple] = []
        try:
            values = split_returns(value, n, spec.name)
        except PartialReturns as p:  # the values before the error stay readable, as in Ray
            values = p.values
            error = self.task_error_results(spec, p.error)[len(values) :]
        out = []
        for i, v in enumerate(values, 1):
            oid = _ids.return_id(tid, i)
            kind, payload, size, contained = encode_value(
                v, oid, self.session, self.shm_dir, f"return value of {spec.name}"
            )
            out.append((oid, kind, payload, size, contained))
        return out + error

    def stream(self, spec: TaskSpec, value: Any) -> None:
        if not inspect.isgenerator(value) and not hasattr(value, "__iter__"):
            raise TypeError(
                f"task {spec.name} uses num_returns='streaming' but returned "
                f"{type(value).__name__}, not a generator"
            )
        for i, v in enumerate(value):
            oid = _ids.return_id(spec.task_id, i + 1)
            kind, payload, size, contained = encode_value(
                v, oid, self.session, self.shm_dir, f"value yielded by {spec.name}"
            )
            self.send([("item", spec.task_id, i, kind, payload, size, contained)])
            self.check_cancelled(safe_point=True)

    def error_results(self, spec: TaskSpec, blob: bytes) -> list[tuple]:
        if spec.num_returns == STREAMING:
            return [(None, ERR, blob, 0, ())]
        return [
            (_ids.return_id(spec.task_id, i), ERR, blob, 0, ())
            for i in range(1, spec.num_returns + 1)
        ]

    def task_error_results(self, spec: TaskSpec, e: BaseException) -> list[tuple]:
        """The results of a task whose user code raised ``e``: a TaskError in each."""
        tb = e.__traceback__
        if tb is not None and tb.tb_next is not None and tb.tb_frame.f_code is _EXEC_CODE:
            e.__traceback__ = tb.tb_next  # start the remote traceback at the user's code
        err = exc.TaskError.from_exception(
            e, spec.name, pid=self.pid, task_id=_ids.to_hex(spec.task_id)
        )
        try:
            blob = cloudpickle.dumps(err)
        except Exception as pe:
            blob = cloudpickle.dumps(
                exc.TaskError(
                    spec.name,
                    err.traceback_str,
                    exc.RtmlError(f"{type(e).__name__}: {e} (not picklable: {pe})"),
                    pid=self.pid,
                )
            )
        return self.error_results(spec, blob)

    @staticmethod
    def retryable(spec: TaskSpec, error: BaseException) -> bool:
        rx = spec.retry_exceptions
        if rx is True:
            return True
        if not rx:
            return False
        classes = cloudpickle.loads(rx)
        return isinstance(error, classes)

    def execute(self, spec: TaskSpec, deps: list | None, gpu_ids: list[int] | None) -> None:
        self.current = spec
        client = self.client
        client.current_task_id = spec.task_id
        client.current_placement = spec.placement
        if spec.job is not None and spec.job != client.job:  # work of a cluster driver's job
            client.job = spec.job
            client.job_id, client.namespace = spec.job
        retryable = False
        saved_env: dict[str, str | None] = {}
        t0 = time.perf_counter()
        value = None
        try:
            if gpu_ids:
                client.gpu_ids = list(gpu_ids)
                saved_env["CUDA_VISIBLE_DEVICES"] = os.environ.get("CUDA_VISIBLE_DEVICES")
                os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, gpu_ids))
            if self.omp is not None:
                self.set_omp_threads(spec)
            if spec.env_vars:
                for k, v in spec.env_vars.items():
                    saved_env.setdefault(k, os.environ.get(k))
                    os.environ[k] = v
            fn = self.function(spec.fn_id)
            try:
                args, kwargs = self.unpack_args(spec, deps)
            except BaseException as e:
                host = self.actor_host
                if host is not None and host.instance is None and spec.fn_id == host.fn_id:
                    host.creation_failed(e, spec)  # the actor dies with this as its cause
                raise
            self.check_cancelled(safe_point=True)
            self.in_user = True
            try:
                if self.interrupt_pending:  # signalled between the check above and here
                    self.take_interrupt()
                value = fn(*args, **kwargs)
                if inspect.iscoroutine(value):
                    value = asyncio.run(value)
                del args, kwargs
                if spec.num_returns == STREAMING:
                    self.stream(spec, value)
                    results: list[tuple] = []
                else:
                    self.in_user = False
                    results = self.encode_returns(spec, value)
                # ``value`` stays alive until "done" is sent: refs inside it (e.g. an actor
                # handle) must not be released before the node has pinned them for the result.
            finally:
                self.in_user = False
        except exc.TaskCancelledError as e:
            results = self.error_results(spec, cloudpickle.dumps(e))
        except exc.ActorDiedError as e:
            if not getattr(e, "_rtml_actor_exit", False):
                retryable = self.retryable(spec, e)
                results = self.task_error_results(spec, e)
            else:  # exit_actor() or sys.exit() ended the actor: the caller sees it died
                results = self.error_results(spec, cloudpickle.dumps(e))
        except BaseException as e:  # user code may raise anything, even SystemExit
            retryable = self.retryable(spec, e)
            results = self.task_error_results(spec, e)
            del e
        finally:
            for k, old in saved_env.items():
                if old is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = old
            client.gpu_ids = []
            sys.stdout.flush()
            sys.stderr.flush()
            self.current = None
            client.current_task_id = None
            client.current_placement = None
            self.cancels.discard(spec.task_id)
            self.cancel_seen.discard(spec.task_id)
            self.interrupt_pending = False
        duration = time.perf_counter() - t0
        self.finish(("done", spec.task_id, results, duration, retryable), spec.fn_id, duration)
        # The node holds the refs inside the result now; our releases of them ride with the
        # next message, or are flushed before the worker goes idle (run()).
        del value

    # ------------------------------------------------------------------ main loop
    def run(self) -> None:
        self.send([("hello", self.pid)])
        ran = False
        while not self.exiting:
            if self.queue:
                m = self.queue.popleft()
                self.execute(m[1], m[2], m[3])
                ran = True
                continue
            if self.held:
                self.send([])  # never sit idle on held results
            if counter.acquired or counter.released:
                self.flush_refs()  # never sit idle on releases: the node would keep objects
            msgs = None
            if ran and SPIN_S and (self.actor_host is None or not self.actor_host.concurrent):
                # Just went idle: the next task of a caller that waits for each result comes
                # within a round trip. Waiting awake for it saves both sides a wake-up.
                if self.spin_skip:
                    self.spin_skip -= 1
                else:
                    msgs = self.chan.receive_spinning(SPIN_S)
                    # Polls that find nothing waste a CPU other workers may need (many
                    # workers, tasks that spawn tasks): after each miss, skip twice as many
                    # idle periods before polling again; a hit polls every time again.
                    self.spin_backoff = 0 if msgs else min(2 * self.spin_backoff or 1, 64)
                    self.spin_skip = self.spin_backoff
            ran = False
            for m in msgs or self.chan.receive():
                self.handle(m)


_EXEC_CODE = Worker.execute.__code__


def _register_stack_dump() -> None:
    """SIGUSR2 writes every thread's Python stack to ``stack-<pid>.txt`` in the node's log
    directory (what ``rtml stack`` reads when py-spy is not available)."""
    import faulthandler

    log_dir = os.environ.get("RTML_LOG_DIR")
    if not log_dir:
        return
    try:
        f = open(os.path.join(log_dir, f"stack-{os.getpid()}.txt"), "w")  # noqa: SIM115
    except OSError:
        return
    faulthandler.register(signal.SIGUSR2, file=f, all_threads=True)
    _STACK_FILE.append(f)  # kept open for the life of the process


_STACK_FILE: list[Any] = []


def run_worker(fd: int, wid: int, session: str, shm_dir: str) -> None:
    sock = socket.socket(fileno=fd)
    worker = Worker(sock, wid, session, shm_dir)
    _context.set_client(worker.client)
    signal.signal(signal.SIGUSR1, worker._on_interrupt)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C in the terminal is for the driver
    _register_stack_dump()
    sys.stdout = _LogStream(worker, "stdout")  # type: ignore[assignment]
    sys.stderr = _LogStream(worker, "stderr")  # type: ignore[assignment]
    try:
        worker.run()
        if worker.actor_host is not None:
            worker.actor_host.on_exit()  # an actor exiting on purpose runs atexit handlers
    except (ConnectionError, OSError):
        # The node is gone (the driver died without shutting down): remove what the session
        # left in shared memory, since nobody else will.
        cleanup_session(session, shm_dir)
        os._exit(0)
    finally:
        try:
            worker.chan.close()
        except Exception:
            pass
    os._exit(0)
