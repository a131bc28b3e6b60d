"""The node manager's core: local scheduler and object table; the worker records and their
leases are a ``WorkerPool`` of their own (``_workers.py``), the streams of generator tasks a
``StreamTable`` (``_streams.py``).

::

     submit ──▶ WAITING ──deps sealed──▶ QUEUED (per resource shape, FIFO)
                                          │ lease: idle worker + resources
                                          ▼
                                       ASSIGNED ── "exec" ──▶ worker ── "done" ──▶ FINISHED
                                          │ worker died: retry (QUEUED) or WorkerCrashedError
                                          │ blocked in get: CPU lent back, pipelined tasks revoked

A lease binds an idle worker to one resource shape; tasks of that shape are pipelined to it (up
to a depth that shrinks as the function's measured duration grows, so tiny tasks batch and long
ones never queue behind each other) and the lease ends when the shape's queue is empty.

This class is state and decisions only. Everything it does to the outside world goes through
``io`` (send a message to a worker, spawn, signal, log) and ``store`` (shared-memory segments),
so it runs in unit tests with fakes. It is not thread-safe by itself: the shell holds
``node.lock`` around every call.
"""

from __future__ import annotations

import pickle
import threading
import time
from collections import deque
from typing import Any

from rtml import exceptions as exc
from rtml._node._objects import PENDING, ObjectTable, Waiter
from rtml._node._queue import TaskQueue, pipeline_depth, stalled
from rtml._node._streams import StreamTable
from rtml._node._tasks import TaskRec
from rtml._node._workers import (
    ACTOR,
    DEAD,
    LEASED,
    STARTING,
    ClientRec,
    WorkerPool,
    WorkerRec,
)
from rtml._protocol._events import FAILED, RETRIED
from rtml._protocol._ids import DRIVER_INDEX, node_of_process, put_id, return_id, task_of, to_hex
from rtml._protocol._payload import ERR, REMOTE, SHM
from rtml._protocol._spec import ASSIGNED, FINISHED, FORWARDED, QUEUED, STREAMING, WAITING, TaskSpec
from rtml._scheduler import ResourcePool, shape_key

OOM_BACKOFF_S = 1.0  # a task the memory monitor killed waits this long, doubling per kill
OOM_BACKOFF_MAX_S = 30.0


def _error_blob(e: BaseException) -> bytes:
    return pickle.dumps(e, protocol=5)


class Node:
    """Scheduling and object state of one node (see the module docstring)."""

    def __init__(self, io: Any, store: Any, resources: dict[str, float], session: str) -> None:
        self.lock = threading.Lock()
        self.io = io
        self.store = store
        self.session = session
        self.resources = ResourcePool(resources)
        self.objects = ObjectTable(self._delete_payload)
        self.tasks: dict[int, TaskRec] = {}
        cpus = resources.get("CPU", 1)
        self.pool = WorkerPool(self.resources, max(1, int(cpus)))
        # (the pool's own containers, never rebound: read here as the node's)
        self.workers: dict[int, WorkerRec] = self.pool.workers
        self.idle: list[WorkerRec] = self.pool.idle
        self.leased: dict[tuple, list[WorkerRec]] = self.pool.leased
        self.clients: dict[int, ClientRec] = {}
        self.queue = TaskQueue()
        # (the queue's own containers, never rebound)
        self.ready: dict[tuple, deque[TaskRec]] = self.queue.ready
        self.shapes: dict[tuple, dict[str, float]] = self.queue.shapes
        self.functions: dict[str, bytes] = {}
        self.fn_time: dict[str, float] = {}
        self.streams = StreamTable()
        self.held: dict[int, set[int]] = {DRIVER_INDEX: set()}
        self.next_wid = DRIVER_INDEX + 1
        self.actors: Any = None  # set by the actor manager
        self.cluster: Any = None  # a cluster node's ClusterState (_cluster/); None embedded
        self.groups: Any = None  # placement groups (_bundles.NodeGroups), set by build_node
        # Task events (_observability/_recorder.py): a list the runtime's flusher drains, or
        # None when nothing collects them.
        self.events: list[Any] | None = None
        self.closed = False
        self.stats = {
            "submitted": 0,
            "finished": 0,
            "retried": 0,
            "workers_started": 0,
            "workers_died": 0,
            "oom_kills": 0,
        }
        self.backoff: list[tuple[float, TaskRec]] = []  # OOM-killed tasks waiting to retry

    @property
    def base_workers(self) -> int:
        return self.pool.base_workers

    @property
    def n_starting(self) -> int:
        return self.pool.n_starting

    @property
    def n_blocked(self) -> int:
        return self.pool.n_blocked

    # ------------------------------------------------------------------ objects and refs
    def _delete_payload(self, oid: int, entry: Any) -> None:
        if entry.kind == SHM and self.store is not None:
            self.store.delete(oid)
        if self.cluster is not None:
            self.cluster.on_free(oid, entry)
        actors = self.actors
        if actors is not None and oid in actors.handles:  # the last handle to an actor is gone
            actors.out_of_scope(oid)

    def _hold(self, proc: int, oid: int) -> None:
        h = self.held.get(proc)
        if h is not None:
            h.add(oid)

    def ref_updates(self, proc: int, acquired: list[int], released: list[int]) -> None:
        h = self.held.get(proc)
        objects = self.objects
        cluster = self.cluster
        for oid in acquired:
            if cluster is not None and oid not in objects:
                cluster.adopt(oid, True)  # owned by another node: borrow it from there
            if h is not None and oid not in h and objects.add_ref(oid):
                h.add(oid)
        for oid in released:
            if h is None:
                objects.release(oid)
            elif oid in h:
                h.discard(oid)
                objects.release(oid)

    def register_function(self, fn_id: str, blob: bytes) -> None:
        self.functions.setdefault(fn_id, blob)

    def put(
        self, proc: int, task_id: int, kind: int, payload: Any, size: int, contained: list[int]
    ) -> int:
        oid = put_id(task_id)
        self.objects.create(oid, proc)
        self._hold(proc, oid)
        if kind == SHM:
            payload = self._adopt_shm(oid, size, payload)
            if payload is None:
                self.objects.entries.pop(oid, None)
                self.held[proc].discard(oid)
                raise self._full_error(size)
        self.objects.seal(oid, kind, payload, size, contained)
        return oid

    def _full_error(self, size: int) -> exc.ObjectStoreFullError:
        cap = getattr(self.store, "capacity", 0) if self.store is not None else 0
        return exc.ObjectStoreFullError(
            f"the object store ({cap} bytes) cannot hold an object of {size} bytes even after "
            "spilling every unpinned object to disk; raise object_store_memory in rtml.init(), "
            "or drop references to objects you no longer need"
        )

    def _adopt_shm(self, oid: int, size: int, path: str) -> str | None:
        """Account for a segment a producer has written; None if the store cannot hold it."""
        try:
            real = self.store.create(oid, size)
            self.store.seal(oid)
            if self.cluster is not None:
                self.cluster.stored(oid, size)
            return real
        except Exception:
            try:
                import os

                os.unlink(path)
            except OSError:
                pass
            return None

    def payload(self, oid: int) -> tuple[int, Any]:
        """(kind, payload) of a sealed object, restoring spilled shared memory if needed."""
        e = self.objects.get(oid)
        if e is None:
            return ERR, _error_blob(
                exc.ObjectLostError(
                    to_hex(oid),
                    f"object {to_hex(oid)} was freed or never existed: no reference to it remained "
                    "(keep an ObjectRef alive for as long as you need its value)",
                )
            )
        if e.kind == REMOTE:
            return REMOTE, e.payload
        if e.kind == SHM:
            try:
                return SHM, self.store.get_path(oid)
            except Exception as err:
                return ERR, _error_blob(
                    exc.ObjectLostError(
                        to_hex(oid), f"object {to_hex(oid)} could not be restored from spill: {err}"
                    )
                )
        return e.kind, e.payload

    # ------------------------------------------------------------------ submission
    def submit(self, proc: int, spec: TaskSpec) -> None:
        t = TaskRec(spec, self, shape_key(spec.resources))
        tid = spec.task_id
        self.tasks[tid] = t
        self.stats["submitted"] += 1
        objects = self.objects
        if spec.num_returns == STREAMING:
            self.streams.open(tid, proc)
        else:
            entries = objects.entries
            for i in range(1, spec.num_returns + 1):
                oid = return_id(tid, i)
                e = entries.get(oid)
                if e is None:
                    objects.create(oid, proc)
                    self._hold(proc, oid)
                else:
                    self._rerun_here(proc, oid, e)
        w = self.workers.get(proc)
        if w is not None and w.assigned:
            parent = w.assigned[0]
            t.parent = parent.spec.task_id
            if parent.children is None:
                parent.children = []
            parent.children.append(tid)
        cluster = self.cluster
        if cluster is not None:
            t.local_only = cluster.is_peer(proc)
            if not t.local_only:
                cluster.record_lineage(t)
            for c in spec.contained:
                if c not in objects:
                    cluster.adopt(c)
        for c in spec.contained:
            objects.add_ref(c)
        if spec.actor_id is not None:
            home = cluster.actor_elsewhere(spec) if cluster is not None else None
            if home is not None:  # the actor lives on another node: its calls go there
                if self._pin_deps(t, localize=False):  # the actor's node pulls them
                    cluster.send_call(t, home)
                return
            self.actors.submit(t)
            return
        # Inputs on other nodes are not pulled yet: placement may send the task to them.
        if not self._pin_deps(t, localize=False):
            return
        if cluster is not None:  # placement (or, forwarded here, feasibility) and input pulls
            if t.deps_left == 0 and t.state == WAITING:
                self._ready(t)
            return
        if not self.resources.feasible(spec.resources) and not self._group_waits(spec.resources):
            self._fail(
                t,
                exc.TaskUnschedulableError(
                    f"task {spec.name} asks for {spec.resources}, but this node only has "
                    f"{self.resources.totals()} in total, so it could never run; lower the request "
                    "or start rtml with more resources (rtml.init(num_cpus=, num_gpus=, resources=))"
                ),
            )
            return
        if t.deps_left == 0 and t.state == WAITING:
            self.queue.push(t)
            self.schedule()

    def _rerun_here(self, proc: int, oid: int, e: Any) -> None:
        """A task is submitted here whose return object already has an entry: a proxy of it,
        because this node borrowed the object and its owner now re-runs the task here (to
        rebuild it). The local run seals it; the submitter's hold is one more reference."""
        if e.kind == REMOTE and e.state != PENDING:
            e.state = PENDING
        h = self.held.get(proc)
        if h is not None and oid not in h:
            e.refs += 1
            h.add(oid)

    def _pin_deps(self, t: TaskRec, localize: bool = True) -> bool:
        """Pin the arguments and wait for the pending ones. False if the task already failed
        (an argument was freed, or is an error that the task inherits). In a cluster, inputs
        held by other nodes are pulled here first when ``localize`` (the task runs here)."""
        objects = self.objects
        cluster = self.cluster
        if cluster is not None:
            for d in t.spec.deps:
                if d not in objects:
                    cluster.adopt(d)
                if localize:
                    cluster.localize(d)
        for d in t.spec.deps:
            if d not in objects:
                self._fail(
                    t,
                    exc.ObjectLostError(
                        to_hex(d),
                        f"argument {to_hex(d)} of task {t.spec.name} was freed before the task ran",
                    ),
                    unpin=False,
                )
                return False
        for d in t.spec.deps:
            objects.add_ref(d)
        for d in t.spec.deps:
            e = objects.get(d)
            if e is not None and e.kind == ERR:
                self._fail_with_blob(t, e.payload)
                return False
            if objects.add_waiter(d, t):
                t.deps_left += 1
        return True

    def _dep_sealed(self, t: TaskRec, oid: int) -> None:
        if t.state != WAITING:
            return
        e = self.objects.get(oid)
        if e is not None and e.kind == ERR:
            self._fail_with_blob(t, e.payload)
            if t.spec.actor_id is not None:  # the caller's later calls may go now
                self.actors.deps_ready(t)
            return
        t.deps_left -= 1
        if t.deps_left == 0:
            t.ready = time.time()
            if t.spec.actor_id is not None:
                if (
                    self.cluster is not None
                    and t.spec.actor_id in self.actors.actors
                    and self._fetch_deps(t)
                ):
                    return  # an input was sealed on another node: pulled here first
                self.actors.deps_ready(t)
            else:
                self._ready(t)

    def _fetch_deps(self, t: TaskRec) -> bool:
        """Cluster: inputs that were sealed on another node are pulled here before the task
        runs here (True: it waits for them again)."""
        objects = self.objects
        for d in t.spec.deps:
            e = objects.get(d)
            if e is not None and e.kind == REMOTE:  # (PENDING: already being pulled)
                self.cluster.localize(d)
                if objects.add_waiter(d, t):
                    t.deps_left += 1
        return t.deps_left > 0

    def _group_waits(self, req: dict[str, float]) -> bool:
        """The request is for a placement group not created yet (_bundles.py): it waits."""
        return self.groups is not None and self.groups.waits_for(req)

    def _ready(self, t: TaskRec) -> None:
        """A task's inputs are all sealed: run it here, or (cluster) where placement says."""
        cluster = self.cluster
        if cluster is not None and not t.local_only:
            try:
                target = cluster.place(t)
            except exc.TaskUnschedulableError as e:
                self._fail(t, e)
                return
            if target is not None:
                if target:  # else parked until a node that fits it joins
                    cluster.forward(t, target)
                return
        elif cluster is not None and not self.resources.feasible(t.spec.resources):
            self._fail(
                t,
                exc.TaskUnschedulableError(
                    f"task {t.spec.name} asks for {t.spec.resources}, but the node it was sent to "
                    f"only has {self.resources.totals()}"
                ),
            )
            return
        if cluster is not None and self._fetch_deps(t):
            return
        self.queue.push(t)
        self.schedule()

    # ------------------------------------------------------------------ scheduling
    def schedule(self) -> None:
        if self.closed:
            return
        pool = self.pool
        pool.reap(self.ready)
        if self.groups is not None and self.groups.waiting:
            self.groups.on_schedule()
        if self.actors is not None and self.actors.unplaced:
            self.actors.place_waiting()
        now = time.monotonic()
        doomed: list[TaskRec] = []
        for key, q in self.ready.items():
            if not q:
                continue
            req = self.shapes[key]
            while q:
                w = pool.lease(key, req)
                if w is None:
                    break
                self._assign(w, q.popleft())
            if not q:
                continue
            if (
                pool.start_error is not None
                and pool.task_worker_count() == 0
                and pool.cannot_start(now) is not None
            ):
                doomed.extend(q)  # no worker is up and none can be started
                continue
            # More leases fit: start workers for them rather than queue behind busy ones.
            room = self.resources.room_for(req)
            cap = 2 * pool.base_workers + pool.n_blocked
            want = min(len(q), room) - pool.n_starting
            if want > 0 and req.get("GPU") and pool.task_worker_count() >= cap:
                old = pool.retire_for_gpus()  # (its exit makes room for a fresh worker)
                if old is not None:
                    self.io.kill(old.wid)
            while want > 0 and pool.task_worker_count() < cap and pool.may_start(now):
                self.start_worker()
                want -= 1
            if room > 0 and pool.n_starting > 0:
                continue  # workers are on their way; pipelining now would serialize the work
            ws = self.leased.get(key)
            if ws:
                self._pipeline(ws, q)
        if doomed:
            err = pool.start_error
            assert err is not None
            for t in doomed:
                if t.state == QUEUED:
                    self._fail(t, err)
            self.schedule()  # (what those failures made ready)

    def _pipeline(self, ws: list[WorkerRec], q: deque[TaskRec]) -> None:
        now = time.time()
        fn_time = self.fn_time
        while q:
            depth = pipeline_depth(fn_time.get(q[0].spec.fn_id))
            best = None
            for w in ws:
                if w.blocked:
                    continue
                n = len(w.assigned)
                if (
                    n < depth
                    and (best is None or n < len(best.assigned))
                    and not (n and self._stalled(w.assigned[0], now))
                ):
                    best = w
            if best is None:
                return
            self._assign(best, q.popleft())

    def _stalled(self, head: TaskRec, now: float) -> bool:
        return stalled(now - head.scheduled, self.fn_time.get(head.spec.fn_id))

    def check_stalls(self) -> None:
        """Take back tasks pipelined behind a task that has run far longer than its function
        usually does, and queue again the OOM-killed tasks whose back-off is over (called by
        the shell a few times a second)."""
        if self.cluster is not None:
            self.cluster.tick()
        now = time.time()
        moved = False
        if self.backoff:
            due = [t for at, t in self.backoff if at <= now]
            if due:
                self.backoff = [(at, t) for at, t in self.backoff if at > now]
                for t in due:
                    if t.state == WAITING and not t.cancelled:
                        self.queue.push(t)
                moved = True
        for ws in self.leased.values():
            for w in ws:
                if len(w.assigned) > 1 and not w.blocked and self._stalled(w.assigned[0], now):
                    self._revoke_pipelined(w)
                    moved = True
        if moved:
            self.schedule()

    def _assign(self, w: WorkerRec, t: TaskRec) -> None:
        t.state = ASSIGNED
        t.scheduled = time.time()
        t.worker = w
        t.attempts += 1
        w.assigned.append(t)
        spec = t.spec
        io = self.io
        if spec.fn_id not in w.fns:
            io.send(w.wid, ("fn", spec.fn_id, self.functions[spec.fn_id]))
            w.fns.add(spec.fn_id)
        deps = [self.payload(d) for d in spec.deps] if spec.deps else None
        io.send(w.wid, ("exec", spec, deps, w.alloc.gpu_ids if w.alloc else None))

    def start_worker(self, actor: Any = None) -> WorkerRec:
        wid = self.next_wid
        self.next_wid += 1
        w = self.pool.add(wid, actor)
        self.held[wid] = set()
        self.stats["workers_started"] += 1
        self.io.spawn(wid, actor)
        return w

    def add_client(self) -> ClientRec:
        c = ClientRec(self.next_wid)
        self.next_wid += 1
        self.clients[c.wid] = c
        self.held[c.wid] = set()
        return c

    def remove_client(self, wid: int) -> None:
        """A client disconnected: drop its waits and release every ref it held (its actors end
        with their last handle, as when a driver exits)."""
        c = self.clients.pop(wid, None)
        if c is None:
            return
        for waiter, ids in c.requests.values():
            waiter.done = True
            for o in set(ids):
                self.objects.remove_waiter(o, waiter)
        c.requests.clear()
        self._reap_orphans(c)
        for oid in self.held.pop(wid, ()):
            self.objects.release(oid)
        self.schedule()

    def _reap_orphans(self, c: ClientRec) -> None:
        """A driver (or a peer node) is gone: nobody can read the results of the tasks it
        submitted here, so they are cancelled (running ones killed, with the tasks they
        submitted), and its actors that are not detached are killed, freeing their resources."""
        if c.info.get("kind") == "node":
            index = c.info.get("index")
            if index is None:
                return
            orphan = [
                t
                for t in self.tasks.values()
                if node_of_process(t.spec.owner) == index and t.state != FINISHED
            ]
        else:
            orphan = [
                t for t in self.tasks.values() if t.spec.owner == c.wid and t.state != FINISHED
            ]
            actors = self.actors
            if actors is not None:
                for rec in list(actors.actors.values()):
                    if rec.spec.owner == c.wid and not rec.info.get("detached"):
                        actors.op_kill(c.wid, rec.actor_id, True)
        for t in orphan:
            if t.state != FINISHED and t.spec.actor_id is None:
                self.cancel(return_id(t.spec.task_id, 1), True, True)

    # ------------------------------------------------------------------ messages from workers
    def on_hello(self, wid: int, pid: int) -> None:
        w = self.workers.get(wid)
        if w is None or w.state != STARTING:
            return
        w.pid = pid
        self.pool.hello(w)
        if w.actor is not None:
            self.actors.worker_ready(w)
            return
        self.schedule()

    def on_done(
        self, wid: int, task_id: int, results: list, duration: float, retryable: bool
    ) -> None:
        w = self.workers.get(wid)
        t = self.tasks.get(task_id)
        if w is not None and t is not None and t in w.assigned:
            w.assigned.remove(t)
        if t is None or t.state == FINISHED:
            self._discard_results(results)
        else:
            spec = t.spec
            old = self.fn_time.get(spec.fn_id)
            self.fn_time[spec.fn_id] = duration if old is None else 0.8 * old + 0.2 * duration
            retry = retryable and t.retries_left != 0 and not t.cancelled
            if t.cancelled and spec.actor_id is not None and spec.task_id != spec.actor_id:
                results = self._cancelled_results(t, results)
            ev = self.events
            if ev is not None:
                blob = None
                for r in results:
                    if r[1] == ERR:
                        blob = r[2]
                        break
                if retry or blob is not None:
                    ev.append(
                        (
                            RETRIED if retry else FAILED,
                            t,
                            t.attempts,
                            t.scheduled,
                            time.time(),
                            duration,
                            w.pid if w is not None else 0,
                            blob,
                        )
                    )
                else:  # the common case: the record is its final TaskRec (no tuple)
                    t.ended = time.time()
                    t.duration = duration
                    t.pid = w.pid if w is not None else 0
                    ev.append(t)
            if retry:
                self._discard_results(results)
                if t.retries_left > 0:
                    t.retries_left -= 1
                self.stats["retried"] += 1
                if spec.actor_id is not None:
                    self.actors.retry(t)
                else:
                    self.queue.push(t, front=True)
            else:
                self._finish(t, results)
        if w is not None and w.requests and w.actor is None:
            # A task worker runs one task at a time: whatever it still waited for is moot.
            for waiter, ids in w.requests.values():
                self.remove_waiter(wid, waiter, ids)
            w.requests.clear()
        if w is not None and w.state == LEASED and not w.assigned:
            q = self.ready.get(w.shape)
            if not q:
                self.pool.end_lease(w)
        if w is not None and w.state == ACTOR:
            self.actors.call_done(w, t)
        self.schedule()

    def _cancelled_results(self, t: TaskRec, results: list) -> list:
        """A cancelled actor call ran to its end (running actor calls are not interrupted, as
        in Ray): its caller gets TaskCancelledError instead of what it returned."""
        spec = t.spec
        self._discard_results(results)
        blob = _error_blob(
            exc.TaskCancelledError(f"task {spec.name} ({to_hex(spec.task_id)}) was cancelled")
        )
        if spec.num_returns == STREAMING:
            return [(None, ERR, blob, 0, ())]
        return [
            (return_id(spec.task_id, i), ERR, blob, 0, ()) for i in range(1, spec.num_returns + 1)
        ]

    def _discard_results(self, results: list) -> None:
        for _oid, kind, payload, _size, _contained in results:
            if kind == SHM:
                _unlink(payload)

    def _finish(self, t: TaskRec, results: list) -> None:
        t.state = FINISHED
        self.tasks.pop(t.spec.task_id, None)
        self.stats["finished"] += 1
        if t.spec.num_returns == STREAMING:  # only an error can come with the final message
            for _oid, kind, payload, size, contained in results:
                self._stream_item(t.spec.task_id, kind, payload, size, contained)
            self._stream_end(t.spec.task_id)
            self._unpin(t)
            return
        seal = self.objects.seal
        for oid, kind, payload, size, contained in results:
            if kind == SHM:
                adopted = self._adopt_shm(oid, size, payload)
                if adopted is None:
                    kind, payload, contained = ERR, _error_blob(self._full_error(size)), ()
                else:
                    payload = adopted
            seal(oid, kind, payload, size, contained)
        self._unpin(t)

    def _unpin(self, t: TaskRec) -> None:
        release = self.objects.release
        for d in t.spec.deps:
            release(d)
        for c in t.spec.contained:
            release(c)

    def _fail_with_blob(self, t: TaskRec, blob: bytes, unpin: bool = True) -> None:
        spec = t.spec
        if t.state == QUEUED:
            q = self.ready.get(t.shape)
            if q is not None and t in q:
                q.remove(t)
        if t.state == ASSIGNED and t.worker is not None and t in t.worker.assigned:
            t.worker.assigned.remove(t)
        if self.events is not None:
            w = t.worker
            self.events.append(
                (
                    FAILED,
                    t,
                    t.attempts,
                    t.scheduled,
                    time.time(),
                    None,
                    w.pid if w is not None else 0,
                    blob,
                )
            )
        t.state = FINISHED
        self.tasks.pop(spec.task_id, None)
        if spec.num_returns == STREAMING:
            self._stream_item(spec.task_id, ERR, blob, 0, ())
            self._stream_end(spec.task_id)
        else:
            for i in range(1, spec.num_returns + 1):
                self.objects.seal(return_id(spec.task_id, i), ERR, blob, 0, ())
        if unpin:
            self._unpin(t)
        else:
            for c in spec.contained:
                self.objects.release(c)

    def _fail(self, t: TaskRec, error: BaseException, unpin: bool = True) -> None:
        self._fail_with_blob(t, _error_blob(error), unpin)

    def on_item(
        self, task_id: int, index: int, kind: int, payload: Any, size: int, contained: list[int]
    ) -> None:
        if kind == SHM:
            adopted = self._adopt_shm(return_id(task_id, index + 1), size, payload)
            if adopted is None:
                kind, payload, contained = ERR, _error_blob(self._full_error(size)), []
            else:
                payload = adopted
        self._stream_item(task_id, kind, payload, size, contained)

    def _stream_item(
        self, task_id: int, kind: int, payload: Any, size: int, contained: Any
    ) -> None:
        s, oid = self.streams.produce(task_id)
        if s is None:
            if kind == SHM:
                _unlink(payload)
            return
        t = self.tasks.get(task_id)
        if t is not None:
            t.retries_left = 0  # values already streamed out cannot be taken back
        self.objects.create(oid, s.owner)
        self._hold(s.owner, oid)
        self.objects.seal(oid, kind, payload, size, contained)
        if s.dropped_from is not None:
            self._drop_held(s.owner, oid)
        self.streams.wake(s)

    def _stream_end(self, task_id: int) -> None:
        self.streams.end(task_id)

    def _drop_held(self, proc: int, oid: int) -> None:
        h = self.held.get(proc)
        if h is not None and oid in h:
            h.discard(oid)
            self.objects.release(oid)

    def stream_next(self, task_id: int, index: int) -> tuple[bool, int | None]:
        """(available, object id or None at the end). Not available: register a waiter."""
        return self.streams.next(task_id, index)

    def stream_wait(self, task_id: int, callback: Any) -> None:
        self.streams.wait(task_id, callback)

    def stream_drop(self, task_id: int, from_index: int) -> None:
        owner, unread = self.streams.drop(task_id, from_index)
        for oid in unread:
            self._drop_held(owner, oid)

    # ------------------------------------------------------------------ get / wait
    def running_on(self, oid: int) -> int | None:
        """The local worker computing the task that returns ``oid``, if it is assigned one."""
        t = self.tasks.get(task_of(oid))
        if t is None or t.state != ASSIGNED or t.worker is None:
            return None
        return t.worker.wid

    def add_get(self, proc: int, ids: list[int], callback: Any) -> Waiter | None:
        """Register interest in ``ids``; None if all are sealed already (call ``payload``)."""
        objects = self.objects
        cluster = self.cluster
        if cluster is not None:
            for o in ids:
                cluster.localize(o)
        entries = objects.entries
        pending = {}  # one per object, however often ``ids`` names it
        for o in ids:
            e = entries.get(o)
            if e is not None and e.state == PENDING:
                pending[o] = e
        if not pending:
            return None
        waiter = Waiter(len(pending), callback)
        objects.add_waiter_to(pending.values(), waiter)
        self._block(proc)
        return waiter

    def add_wait(
        self, proc: int, ids: list[int], num_returns: int, callback: Any, block: bool = True
    ) -> tuple[list[int], Waiter | None]:
        entries = self.objects.entries
        ready = []
        pending = []
        for o in ids:  # in input order, stopping as soon as enough are ready
            e = entries.get(o)
            if e is None or e.state != PENDING:
                ready.append(o)
                if len(ready) >= num_returns:
                    return ready, None
            else:
                pending.append(e)
        if not block:
            return ready, None
        waiter = Waiter(num_returns - len(ready), callback)
        self.objects.add_waiter_to(pending, waiter)
        self._block(proc)
        return ready, waiter

    def remove_waiter(self, proc: int, waiter: Waiter, ids: list[int]) -> None:
        """A get/wait timed out or was answered: forget it and take back the lent CPU."""
        if not waiter.done:
            waiter.done = True
            for o in set(ids):
                self.objects.remove_waiter(o, waiter)
        self._unblock(proc)

    def _block(self, proc: int) -> None:
        w = self.workers.get(proc)
        if w is None or w.state == DEAD:
            return
        if not self.pool.block(w):
            return
        if w.state == LEASED and w.alloc is not None and len(w.assigned) > 1:
            self._revoke_pipelined(w)
        self.schedule()

    def _revoke_pipelined(self, w: WorkerRec) -> None:
        """Ask a worker to give back the tasks queued behind its current one (to run them
        elsewhere). Only those it answers it had not started come back (``on_revoked``): one
        it already ran, with its result still on the way, must not run twice."""
        if not w.revoking:
            w.revoking = True
            self.io.send(w.wid, ("revoke", [t.spec.task_id for t in list(w.assigned)[1:]], True))
            self.io.interrupt(w.wid)  # a worker deep in a long task answers from its handler

    def on_revoked(self, wid: int, dropped: list[int]) -> None:
        w = self.workers.get(wid)
        if w is None:
            return
        w.revoking = False
        ids = set(dropped)
        back = [t for t in w.assigned if t.spec.task_id in ids and t is not w.assigned[0]]
        for t in back:
            w.assigned.remove(t)
        for t in reversed(back):
            t.attempts -= 1
            self.queue.push(t, front=True)
        if back:
            self.schedule()

    def _unblock(self, proc: int) -> None:
        w = self.workers.get(proc)
        if w is not None:
            self.pool.unblock(w)

    # ------------------------------------------------------------------ cancellation
    def cancel(self, oid: int, force: bool, recursive: bool) -> None:
        tid = task_of(oid)
        t = self.tasks.get(tid)
        if t is None or t.state == FINISHED:
            return
        if recursive and t.children:
            for child in list(t.children):
                self.cancel(return_id(child, 1), force, recursive)
        err = exc.TaskCancelledError(f"task {t.spec.name} ({to_hex(tid)}) was cancelled")
        if t.spec.actor_id is not None:
            if self.cluster is not None and self.cluster.unpark(t):  # waiting for a restart
                self._fail(t, err)
                return
            if t.state == FORWARDED:  # the actor lives on another node: cancelled there
                self.cluster.cancel(t, oid, False, recursive)
                return
            self.actors.cancel(t, err, force)
            return
        if t.state in (WAITING, QUEUED):
            self._fail(t, err)
            return
        if t.state == FORWARDED:
            self.cluster.cancel(t, oid, force, recursive)
            return
        w = t.worker
        t.cancelled = True
        if w.assigned and w.assigned[0] is not t:
            w.assigned.remove(t)
            self.io.send(w.wid, ("revoke", [tid]))
            self._fail(t, err)
        elif force:
            self.io.kill(w.wid)
        else:
            self.io.send(w.wid, ("cancel", tid))
            self.io.interrupt(w.wid)

    # ------------------------------------------------------------------ memory monitor
    def oom_candidates(self) -> list[tuple[float, bool, WorkerRec]]:
        """Workers running a task, as (started, retriable, worker), for ``_memory``."""
        out = []
        for ws in self.leased.values():
            for w in ws:
                if w.assigned and w.oom is None and w.pid:
                    t = w.assigned[0]
                    out.append((t.scheduled, t.retries_left != 0 and not t.cancelled, w))
        return out

    def oom_kill(self, w: WorkerRec, rss: int, used: int, total: int, threshold: float) -> None:
        t = w.assigned[0]
        w.oom = exc.OutOfMemoryError(
            task_name=f"{t.spec.name} ({to_hex(t.spec.task_id)})",
            rss=rss,
            used=used,
            total=total,
            threshold=threshold,
        )
        self.stats["oom_kills"] += 1
        self.io.kill(w.wid)

    # ------------------------------------------------------------------ failures
    def on_worker_exit(self, wid: int, how: str, start_output: str | None = None) -> None:
        """Worker ``wid``'s process ended (``how``: exit code or signal). ``start_output`` is
        what it wrote to stderr before it was up, when it failed (exit code not 0, a signal
        other than a kill); a worker that fails so before its hello counts as a failed start."""
        if wid in self.clients:
            self.remove_client(wid)
            return
        w = self.workers.get(wid)
        if w is None or w.state == DEAD:
            return
        never_up = w.state == STARTING
        self.pool.died(w)
        if never_up and start_output is not None and not self.closed:
            self.pool.start_failed(how, start_output, time.monotonic())
        self.stats["workers_died"] += 1
        for req in list(w.requests.values()):
            waiter, ids = req
            waiter.done = True
            for o in set(ids):
                self.objects.remove_waiter(o, waiter)
        w.requests.clear()
        for oid in self.held.pop(wid, ()):
            self.objects.release(oid)
        tasks = list(w.assigned)
        w.assigned.clear()
        self.pool.forget(wid)
        if self.actors is not None and not self.closed:
            self.actors.owner_died(wid, w.pid, w.actor)
        if w.actor is not None:
            self.actors.worker_died(w, tasks, how)
            self.schedule()
            return
        if (
            not self.closed
            and self.pool.task_worker_count() < self.pool.base_workers
            and self.pool.may_start(time.monotonic())
        ):
            self.start_worker()  # keep the pool warm: the next task should not wait for a spawn
        for i, t in enumerate(tasks):
            if t.state == FINISHED:
                continue
            if i > 0:  # never started: run again without using a retry
                t.attempts -= 1
                self.queue.push(t, front=True)
            elif t.cancelled:
                self._fail(
                    t,
                    exc.TaskCancelledError(
                        f"task {t.spec.name} ({to_hex(t.spec.task_id)}) was cancelled"
                    ),
                )
            elif w.oom is not None and t.retries_left == 0:
                self._fail(t, w.oom)
            elif w.oom is not None:  # retried later, with back-off, as Ray does
                if t.retries_left > 0:
                    t.retries_left -= 1
                t.oom_kills += 1
                self.stats["retried"] += 1
                t.state = WAITING
                t.worker = None
                delay = min(OOM_BACKOFF_S * 2 ** (t.oom_kills - 1), OOM_BACKOFF_MAX_S)
                self.backoff.append((time.time() + delay, t))
            elif t.retries_left != 0:
                if t.retries_left > 0:
                    t.retries_left -= 1
                self.stats["retried"] += 1
                if self.events is not None:
                    self.events.append(
                        (
                            RETRIED,
                            t,
                            t.attempts,
                            t.scheduled,
                            time.time(),
                            None,
                            w.pid,
                            _error_blob(
                                exc.WorkerCrashedError(f"the worker (pid {w.pid}) died ({how})")
                            ),
                        )
                    )
                self.queue.push(t, front=True)
            else:
                self._fail(
                    t,
                    exc.WorkerCrashedError(
                        f"the worker process (pid {w.pid}) running task {t.spec.name} died "
                        f"unexpectedly ({how}); the task was tried {t.attempts} time(s). Raise "
                        "max_retries to retry more, and check the task for crashes (segfaults, "
                        "os._exit, out-of-memory kills)"
                    ),
                )
        self.schedule()

    def shutdown(self) -> None:
        self.closed = True
        for w in list(self.workers.values()):
            self.io.kill(w.wid)

    # ------------------------------------------------------------------ introspection
    def validate(self) -> None:
        self.objects.validate()
        self.resources.validate()
        self.pool.validate()
        self.queue.validate()
        # Each process's refs are counted in the object table (besides the pins of tasks,
        # lineage and containing objects): an entry has at least as many refs as holders.
        holders: dict[int, int] = {}
        for h in self.held.values():
            for oid in h:
                holders[oid] = holders.get(oid, 0) + 1
        entries = self.objects.entries
        for oid, n in holders.items():
            e = entries.get(oid)
            assert e is not None, f"{to_hex(oid)} is held but has no entry"
            assert e.refs >= n, f"{to_hex(oid)}: {e.refs} refs for {n} holders"
        assert set(self.held) <= {DRIVER_INDEX, *self.workers, *self.clients}, "stale holders"
        self.streams.validate(self.tasks)
        if self.cluster is not None:
            self.cluster.validate()


def _unlink(path: Any) -> None:
    import os

    try:
        os.unlink(path)
    except (OSError, TypeError):
        pass
