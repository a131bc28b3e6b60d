"""The driver's client for the embedded runtime: calls the node in this process.

The node lives in the driver process, so a submit is a function call under ``node.lock``
followed by one non-blocking write to the chosen worker; results arrive on the node's selector
thread, which wakes a waiting ``get`` or ``wait`` by releasing the lock it blocks on.
"""

from __future__ import annotations

import _thread
import os
import threading
from time import monotonic
from typing import Any

from rtml._node._objects import PENDING
from rtml._protocol._ids import DRIVER_INDEX
from rtml._protocol._spec import TaskSpec
from rtml._runtime._client import CoreClient
from rtml._runtime._refs import counter

PROC = DRIVER_INDEX
# How long a get of one result being computed by a local worker polls that worker's connection
# itself before it sleeps until the selector thread wakes it (decision 0010); 0: never.
SERVE_S = int(os.environ.get("RTML_DRIVER_SPIN_US", "300")) / 1e6


def _closed_gate() -> Any:
    """A lock held by nobody in particular: ``acquire`` blocks until the waiter opens it.
    Cheaper than a ``threading.Event`` (no Condition), which matters for a wait per ref."""
    gate = _thread.allocate_lock()
    gate.acquire()
    return gate


def _opener(gate: Any) -> Any:
    release = gate.release
    return lambda _waiter: release()


class DriverClient(CoreClient):
    def __init__(
        self, node: Any, shell: Any, session: str, shm_dir: str, node_id: str, job_id: str
    ) -> None:
        super().__init__(PROC, session, shm_dir, node_id, job_id)
        self.node = node
        self.shell = shell
        shell.on_idle.append(self.apply_ref_updates)

    def apply_ref_updates(self) -> None:
        """Hand this process's ref acquisitions/releases to the node (node.lock held)."""
        acq, rel = counter.take_updates()
        if acq or rel:
            self.node.ref_updates(PROC, acq, rel)

    def _submit(self, spec: TaskSpec, fn_blob: bytes | None) -> None:
        node = self.node
        with node.lock:
            if counter.dropped_log or counter.created_log or counter.pending:  # counter.dirty
                self.apply_ref_updates()
            if fn_blob is not None:
                node.register_function(spec.fn_id, fn_blob)
            node.submit(PROC, spec)
            t = node.tasks.get(spec.task_id)
            w = t.worker if t is not None else None
            if w is not None and len(w.assigned) > 2 and self.shell.batching(w.wid):
                return  # queued behind two: goes out with the next flush (the selector
                # thread flushes after every event, e.g. the running task's "done")
            self.shell.flush()

    def _put(self, task_id: int, kind: int, payload: Any, size: int, contained: list) -> None:
        node = self.node
        with node.lock:
            self.apply_ref_updates()
            node.put(PROC, task_id, kind, payload, size, contained)

    def _fetch(self, ids: list[int], timeout: float | None) -> list[tuple[int, Any]]:
        node = self.node
        deadline = self.deadline(timeout)
        with node.lock:
            if counter.dropped_log or counter.created_log or counter.pending:  # counter.dirty
                self.apply_ref_updates()
            entries = node.objects.entries
            for o in ids:
                e = entries.get(o)
                if e is not None and e.state == PENDING:
                    break
            else:  # everything is ready (the common case for get after wait): no gate needed
                return [node.payload(o) for o in ids]
            gate = _closed_gate()
            waiter = node.add_get(PROC, ids, _opener(gate))
            if waiter is None:
                return [node.payload(o) for o in ids]
            self.shell.flush()
            wid = node.running_on(ids[0]) if len(ids) == 1 and SERVE_S else None
        if wid is not None:  # read the result ourselves as it arrives (decision 0010)
            self.shell.serve_worker(
                wid,
                lambda: not gate.locked(),
                SERVE_S if timeout is None else min(SERVE_S, timeout),
            )
        if not gate.acquire(True, -1 if deadline is None else max(0.0, deadline - monotonic())):
            with node.lock:
                if not waiter.done:
                    node.remove_waiter(PROC, waiter, ids)
                    raise self.timeout_error(len(ids), timeout)
        with node.lock:
            return [node.payload(o) for o in ids]

    def _wait(self, ids: list[int], num_returns: int, timeout: float | None) -> list[int]:
        node = self.node
        gate = _closed_gate()
        with node.lock:
            if counter.dropped_log or counter.created_log or counter.pending:  # counter.dirty
                self.apply_ref_updates()
            ready, waiter = node.add_wait(PROC, ids, num_returns, _opener(gate), block=timeout != 0)
            if waiter is None:
                return ready
            self.shell.flush()
        gate.acquire(True, -1 if timeout is None else timeout)
        with node.lock:
            if not waiter.done:
                node.remove_waiter(PROC, waiter, ids)
            entries = node.objects.entries
            ready = []
            for o in ids:  # in input order; the caller keeps only the first num_returns
                e = entries.get(o)
                if e is None or e.state != PENDING:
                    ready.append(o)
                    if len(ready) >= num_returns:
                        break
            return ready

    def cancel(self, oid: int, force: bool, recursive: bool) -> None:
        with self.node.lock:
            self.node.cancel(oid, force, recursive)
            self.shell.flush()

    def stream_next(self, task_id: int, index: int, timeout: float | None) -> int | None:
        node = self.node
        deadline = self.deadline(timeout)
        while True:
            event = threading.Event()
            with node.lock:
                available, oid = node.stream_next(task_id, index)
                if available:
                    return oid
                node.stream_wait(task_id, event.set)
            import time

            remaining = None if deadline is None else deadline - time.monotonic()
            if (remaining is not None and remaining <= 0) or not event.wait(remaining):
                raise self.timeout_error(1, timeout)

    def on_ready(self, oid: int, callback: Any) -> None:
        """Call ``callback()`` (from any thread, without locks held) once ``oid`` is sealed."""
        node = self.node
        with node.lock:
            waiter = node.add_get(PROC, [oid], lambda _w: callback())
        if waiter is None:
            callback()

    def stream_drop(self, task_id: int, index: int) -> None:
        with self.node.lock:
            self.node.stream_drop(task_id, index)

    def resources(self) -> tuple[dict[str, float], dict[str, float]]:
        with self.node.lock:
            return self.node.resources.totals(), self.node.resources.availability()

    def nodes(self) -> list[dict[str, Any]]:
        from rtml._node._dispatch import nodes_of

        with self.node.lock:
            return nodes_of(self.node, self.node_id)

    def actor_op(self, op: str, args: tuple) -> tuple[str, Any]:
        """Create, look up or kill an actor: ("ok", value) or ("err", exception)."""
        node = self.node
        with node.lock:
            self.apply_ref_updates()
            result = node.actors.op(PROC, op, args)
            self.shell.flush()
        return result

    # ---- placement groups (the node's table: _node/_bundles.py)

    def pg_create(
        self, pg_id: str, bundles: list, strategy: str, name: str, lifetime: str | None
    ) -> None:
        with self.node.lock:
            self.node.groups.create(pg_id, bundles, strategy, name, lifetime)
            self.shell.flush()

    def pg_remove(self, pg_id: str) -> None:
        with self.node.lock:
            self.node.groups.remove(pg_id)
            self.shell.flush()

    def pg_table(self, pg_id: str | None) -> dict[str, dict[str, Any]]:
        with self.node.lock:
            return self.node.groups.records(pg_id)

    def pg_by_name(self, name: str) -> dict[str, Any] | None:
        with self.node.lock:
            g = self.node.groups.by_name(name)
            return None if g is None else g.record()
