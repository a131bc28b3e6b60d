"""The core client: what the public API calls in every process (driver or worker).

::

    rtml.get / put / wait / f.remote / cancel
                  │
             CoreClient  ── packs arguments, builds TaskSpecs, decodes payloads
               ├── DriverClient: calls the node in this process (embedded runtime)
               └── WorkerClient: sends requests over the worker's channel to the node

Subclasses implement the transport half: ``_submit``, ``_put``, ``_fetch``, ``_wait``,
``cancel``, ``stream_next``, ``stream_drop`` and the resource queries.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import cloudpickle

from rtml import exceptions as exc
from rtml._protocol import _ids
from rtml._protocol._spec import STREAMING, TaskSpec
from rtml._runtime._payload import DepMarker, decode_value, encode_value
from rtml._runtime._refs import ObjectRef, ObjectRefGenerator
from rtml._scheduler._bundles import task_resources
from rtml._serialization import INLINE_THRESHOLD, dumps

_SIMPLE = (int, float, bool, type(None))


class CoreClient:
    """Common half of the per-process client (see module docstring)."""

    def __init__(self, proc: int, session: str, shm_dir: str, node_id: str, job_id: str) -> None:
        self.proc = proc
        self.session = session
        self.shm_dir = shm_dir
        self.node_id = node_id
        self.job_id = job_id
        self.ids = _ids.IdGenerator(proc)
        self.registered_fns: set[str] = set()
        self._fn_lock = threading.Lock()
        self.current_task_id: int | None = None
        self.current_placement: Any = None  # the running task's placement group (TaskSpec)
        self.current_actor_id: int | None = None
        self.gpu_ids: list[int] = []
        self.namespace = "default"
        self.job: tuple[str, str] | None = None  # (job id, namespace) when in a cluster
        self.job_env: dict[str, str] | None = None  # a cluster driver's runtime_env env_vars

    # ------------------------------------------------------------------ tasks
    def pack_args(self, name: str, args: tuple, kwargs: dict) -> tuple[bytes, tuple, tuple, list]:
        """(blob, deps, contained, keepalive): top-level refs become deps, large values puts."""
        if not args and not kwargs:
            return b"", (), (), []
        deps: list[int] = []
        keep: list[Any] = []
        a = list(args)
        for i, v in enumerate(a):
            if type(v) is ObjectRef:
                a[i] = DepMarker(len(deps))
                deps.append(v._id)
        kw = dict(kwargs)
        for k, v in kw.items():
            if type(v) is ObjectRef:
                kw[k] = DepMarker(len(deps))
                deps.append(v._id)
        s = dumps((a, kw), f"arguments of {name}")
        if s.size >= INLINE_THRESHOLD:
            # Large arguments go to the object store once and travel as references.
            for i, v in enumerate(a):
                if not isinstance(v, (DepMarker, *_SIMPLE)):
                    ref = self.put(v)
                    keep.append(ref)
                    a[i] = DepMarker(len(deps))
                    deps.append(ref._id)
            for k, v in kw.items():
                if not isinstance(v, (DepMarker, *_SIMPLE)):
                    ref = self.put(v)
                    keep.append(ref)
                    kw[k] = DepMarker(len(deps))
                    deps.append(ref._id)
            s = dumps((a, kw), f"arguments of {name}")
        return s.inline_bytes(), tuple(deps), tuple(s.contained), keep

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
        where = self.current_placement
        if placement is None and strategy is None and where is not None and where[2]:
            # The running task captures its children (placement_group_capture_child_tasks):
            # this one runs in the same group, in any bundle (ValueError if none fits it).
            pg_hex, bundles = where[0], where[3]
            resources = task_resources(pg_hex, -1, resources, bundles)
            placement = (pg_hex, -1, True, bundles)
        blob, deps, contained, keep = self.pack_args(name, args, kwargs)
        task_id = self.ids.next_task_id()
        if self.job_env:  # workers are shared by the jobs of a cluster: env rides with tasks
            env_vars = {**self.job_env, **(env_vars or {})}
        if retry_exceptions not in (True, False):
            retry_exceptions = cloudpickle.dumps(tuple(retry_exceptions))
        spec = TaskSpec(
            task_id,
            fn_id,
            name,
            blob,
            deps,
            contained,
            num_returns,
            resources,
            max_retries,
            retry_exceptions,
            self.proc,
            env_vars,
            actor_id,
            job=self.job,
            strategy=strategy,
            parent=self.current_task_id,
            placement=placement,
        )
        if fn_id not in self.registered_fns and blob_fn is not None:
            # The first submission carries the function. Threads of one process (a threaded
            # actor, a driver's threads) must not send a later call before it: marking the
            # function sent only after sending it, under a lock, keeps that order.
            with self._fn_lock:
                if fn_id not in self.registered_fns:
                    self._submit(spec, blob_fn())
                    self.registered_fns.add(fn_id)
                    del keep
                    return self.refs_for(task_id, num_returns)
        self._submit(spec, None)
        del keep
        return self.refs_for(task_id, num_returns)

    def refs_for(self, task_id: int, num_returns: int) -> Any:
        if num_returns == 1:
            return ObjectRef(_ids.return_id(task_id, 1))
        if num_returns == STREAMING:
            return ObjectRefGenerator(task_id, self)
        if num_returns == 0:
            return None
        return [ObjectRef(_ids.return_id(task_id, i)) for i in range(1, num_returns + 1)]

    # ------------------------------------------------------------------ objects
    def put(self, value: Any) -> ObjectRef:
        if isinstance(value, ObjectRef):
            raise TypeError(
                "put() of an ObjectRef is not allowed: the ref already names a stored object; "
                "pass the ref itself, or wrap it in a list to store a reference to it"
            )
        task_id = self.ids.next_task_id()
        oid = _ids.put_id(task_id)
        kind, payload, size, contained = encode_value(
            value, oid, self.session, self.shm_dir, "value passed to put()"
        )
        self._put(task_id, kind, payload, size, contained)
        return ObjectRef(oid)

    def get(self, refs: list[ObjectRef], timeout: float | None) -> list[Any]:
        ids = [r._id for r in refs]
        payloads = self._fetch(ids, timeout)
        out = []
        for kind, payload in payloads:
            out.append(decode_value(kind, payload))
        return out

    def get_payloads(self, refs: list[ObjectRef], timeout: float | None) -> list[tuple]:
        return self._fetch([r._id for r in refs], timeout)

    def wait(
        self, refs: list[ObjectRef], num_returns: int, timeout: float | None, ids: list[int]
    ) -> tuple[list[ObjectRef], list[ObjectRef], list[int]]:
        """(ready, not_ready, not_ready's ids) in input order; ``ready`` holds at most
        ``num_returns`` refs. ``ids`` are the refs' ids (left unchanged)."""
        chosen = set(self._wait(ids, num_returns, timeout)[:num_returns])
        if not chosen:
            return [], list(refs), list(ids)
        positions = []
        for i, o in enumerate(ids):  # ready ids come first-in-input-order: stop early
            if o in chosen:
                positions.append(i)
                if len(positions) == len(chosen):
                    break
        not_ready = list(refs)
        not_ready_ids = list(ids)
        for i in reversed(positions):
            del not_ready[i]
            del not_ready_ids[i]
        return [refs[i] for i in positions], not_ready, not_ready_ids

    @staticmethod
    def timeout_error(n: int, timeout: float | None) -> exc.GetTimeoutError:
        return exc.GetTimeoutError(
            f"get() timed out after {timeout} s waiting for {n} object(s); the tasks producing "
            "them are still queued or running. Raise the timeout, or use rtml.wait() to act on "
            "whatever is ready"
        )

    @staticmethod
    def deadline(timeout: float | None) -> float | None:
        if timeout is None:
            return None
        if timeout < 0:
            raise ValueError(f"timeout must be non-negative or None, got {timeout}")
        return time.monotonic() + timeout

    # ------------------------------------------------------------------ for subclasses
    def _submit(self, spec: TaskSpec, fn_blob: bytes | None) -> None:
        raise NotImplementedError

    def _put(self, task_id: int, kind: int, payload: Any, size: int, contained: list) -> None:
        raise NotImplementedError

    def _fetch(self, ids: list[int], timeout: float | None) -> list[tuple[int, Any]]:
        raise NotImplementedError

    def _wait(self, ids: list[int], num_returns: int, timeout: float | None) -> list[int]:
        raise NotImplementedError
