"""The worker's client: nested API calls from inside tasks, over the worker's channel.

A task worker is single-threaded: while a task waits for an answer (``get``, ``wait``, ...) the
same thread reads the channel, queues task assignments that arrive meanwhile, applies
revocations and raises TaskCancelledError if its own task is cancelled. Actor workers with
concurrency read the channel on a dedicated thread instead (``threaded = True``) and requests
wait on per-request events.
"""

from __future__ import annotations

import itertools
import os
import pickle
import threading
import time
from typing import Any

from rtml import exceptions as exc
from rtml._protocol._spec import TaskSpec
from rtml._runtime._client import CoreClient
from rtml._runtime._refs import counter

# How long a worker that just finished its tasks (or an async actor's event loop, its calls)
# polls for the next one before it sleeps (decision 0010); 0 turns polling off.
SPIN_S = int(os.environ.get("RTML_WORKER_SPIN_US", "200")) / 1e6


class WorkerClient(CoreClient):
    def __init__(self, worker: Any, wid: int, session: str, shm_dir: str) -> None:
        super().__init__(
            wid,
            session,
            shm_dir,
            node_id=os.environ.get("RTML_NODE_ID", ""),
            job_id=os.environ.get("RTML_JOB_ID", ""),
        )
        self.namespace = os.environ.get("RTML_NAMESPACE", "default")
        self.worker = worker
        self._req = itertools.count(1)
        self.replies: dict[int, Any] = {}
        self._reply_cv = threading.Condition()
        self.threaded = False
        self.callbacks: dict[int, Any] = {}  # threaded mode: request id -> on_ready callback
        self.lost: BaseException | None = None  # threaded mode: the connection is gone

    # ------------------------------------------------------------------ plumbing
    def send(self, *msgs: Any) -> None:
        self.worker.send(list(msgs))

    def request(self, msg_fn: Any, timeout: float | None = None) -> tuple[bool, Any]:
        """Send a request built by ``msg_fn(req)`` and wait for its reply.

        Returns (answered, value); on timeout the request is withdrawn with ``unget``.
        """
        req = next(self._req)
        self.send(msg_fn(req))
        deadline = None if timeout is None else time.monotonic() + timeout
        w = self.worker
        if self.threaded:
            with self._reply_cv:
                while req not in self.replies:
                    if self.lost is not None:
                        raise self.lost
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        break
                    self._reply_cv.wait(remaining)
                if req in self.replies:
                    return True, self.replies.pop(req)
            self.send(("unget", req))
            return False, None
        prev = w.in_user
        w.in_user = False
        try:
            while req not in self.replies:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    self.send(("unget", req))
                    return False, None
                for m in w.chan.receive(remaining):
                    w.handle(m)
                try:
                    w.check_cancelled()
                except BaseException:
                    # Withdraw the request, or the node keeps this worker marked blocked.
                    self.send(("unget", req))
                    raise
            return True, self.replies.pop(req)
        finally:
            w.in_user = prev

    def on_lost(self, error: BaseException) -> None:
        """Threaded mode: the connection broke; every waiting and later request raises."""
        with self._reply_cv:
            self.lost = error
            self._reply_cv.notify_all()
        callbacks, self.callbacks = self.callbacks, {}
        for cb in callbacks.values():
            cb()  # each sees the error when it asks for its value

    def on_reply(self, req: int, value: Any) -> None:
        if self.threaded:
            cb = self.callbacks.pop(req, None)
            if cb is not None:
                cb()
                return
            with self._reply_cv:
                self.replies[req] = value
                self._reply_cv.notify_all()
        else:
            self.replies[req] = value

    # ------------------------------------------------------------------ CoreClient transport
    def _submit(self, spec: TaskSpec, fn_blob: bytes | None) -> None:
        self.send(("submit", spec, fn_blob))

    def _put(self, task_id: int, kind: int, payload: Any, size: int, contained: list) -> None:
        from rtml._protocol._payload import SHM

        if kind != SHM:
            self.send(("put", None, task_id, kind, payload, size, contained))
            return
        ok, err = self.request(lambda r: ("put", r, task_id, kind, payload, size, contained))
        if err is not None:
            raise pickle.loads(err)

    def _fetch(self, ids: list[int], timeout: float | None) -> list[tuple[int, Any]]:
        self.deadline(timeout)
        ok, values = self.request(lambda r: ("get", r, ids), timeout)
        if not ok:
            raise self.timeout_error(len(ids), timeout)
        return values

    def _wait(self, ids: list[int], num_returns: int, timeout: float | None) -> list[int]:
        self.deadline(timeout)
        ok, ready = self.request(lambda r: ("wait", r, ids, num_returns, timeout != 0), timeout)
        if ok:
            return ready
        # Timed out: ask again without blocking for whatever is ready by now.
        ok, ready = self.request(lambda r: ("wait", r, ids, num_returns, False))
        return ready

    def cancel(self, oid: int, force: bool, recursive: bool) -> None:
        self.send(("cancel", oid, force, recursive))

    def stream_next(self, task_id: int, index: int, timeout: float | None) -> int | None:
        ok, oid = self.request(lambda r: ("stream_next", r, task_id, index), timeout)
        if not ok:
            raise self.timeout_error(1, timeout)
        return oid

    def on_ready(self, oid: int, callback: Any) -> None:
        """Call ``callback()`` once ``oid`` is sealed (from the reading thread in threaded mode;
        in a single-threaded task worker the caller simply waits here)."""
        if not self.threaded:
            self._fetch([oid], None)
            callback()
            return

        req = next(self._req)  # the reading thread calls back when the reply comes
        self.callbacks[req] = callback
        self.send(("wait", req, [oid], 1, True))

    def stream_drop(self, task_id: int, index: int) -> None:
        self.send(("stream_drop", task_id, index))

    def resources(self) -> tuple[dict[str, float], dict[str, float]]:
        ok, value = self.request(lambda r: ("resources", r))
        return value

    def nodes(self) -> list[dict[str, Any]]:
        ok, value = self.request(lambda r: ("nodes", r))
        return value

    def actor_op(self, op: str, args: tuple) -> tuple[str, Any]:
        """Create, look up or kill an actor: ("ok", value) or ("err", exception)."""
        ok, value = self.request(lambda r: ("actor_op", r, op, args))
        return value

    def ref_message(self) -> tuple | None:
        acq, rel = counter.take_updates()
        if acq or rel:
            return ("refs", acq, rel)
        return None


def cancelled_error(name: str, task_id: int) -> exc.TaskCancelledError:
    return exc.TaskCancelledError(f"task {name} ({task_id:x}) was cancelled")
