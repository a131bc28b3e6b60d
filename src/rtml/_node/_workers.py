"""The node's worker pool: its worker processes, which are idle, and the leases they hold.

A lease binds an idle worker to one resource shape and an allocation of the node's resources;
tasks of that shape are pipelined to it (``Node.schedule``) and the lease ends when the
shape's queue is empty. A worker blocked in ``get``/``wait`` lends its CPU back until it
resumes. This module owns the records and the counts; what runs on the workers is the node's.

Start failures. Every worker of a node is spawned the same way (the node's environment), so a
worker that dies before its hello is likely to be followed by others: after
``MAX_START_FAILURES`` such deaths in a row the pool is *broken* (``start_error`` set) and
``may_start`` refuses spawns, so the node stops a respawn loop and fails the work that waits
for a worker. After ``START_RETRY_S`` one probe spawn is allowed again (the environment may
have been fixed); a hello from any worker clears the state::

    ok --(start fails) x N--> broken --(START_RETRY_S, no spawn in flight)--> probing
     ^                            ^                                              |
     +------- hello --------------+----------- probe dies: broken again ---------+
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

from rtml import exceptions as exc
from rtml._node._tasks import TaskRec
from rtml._scheduler import ResourcePool

MAX_START_FAILURES = 3  # worker deaths before hello, in a row, that stop the spawning
START_RETRY_S = 10.0  # then one probe spawn after this long
STDERR_TAIL = 4000  # characters of a failed worker's stderr kept in the error

STARTING, IDLE, LEASED, ACTOR, DEAD = "starting", "idle", "leased", "actor", "dead"
CPU_ONLY = "cpu"


class WorkerRec:
    __slots__ = (
        "actor",
        "alloc",
        "assigned",
        "blocked",
        "fns",
        "lent",
        "oom",
        "pid",
        "requests",
        "retiring",
        "revoking",
        "shape",
        "started",
        "state",
        "used",
        "wid",
    )

    def __init__(self, wid: int) -> None:
        self.wid = wid
        self.pid = 0
        self.state = STARTING
        self.alloc: Any = None
        self.shape: Any = None
        self.assigned: deque[TaskRec] = deque()
        self.fns: set[str] = set()
        self.blocked = 0
        self.lent = 0
        self.requests: dict[int, Any] = {}
        self.actor: Any = None
        self.started = time.monotonic()
        self.revoking = False  # a "revoke" is out; its answer says which tasks came back
        self.oom: Any = None  # the OutOfMemoryError of its task, once the monitor killed it
        # What it has run: None (nothing yet), CPU_ONLY, or the GPU ids of its GPU tasks. A
        # GPU task only goes to a worker that ran nothing or GPU tasks on the same devices
        # (CUDA is initialised once per process, with the devices it saw first).
        self.used: Any = None
        self.retiring = False  # killed to make room for a fresh worker


class ClientRec:
    """A process served over a network connection rather than spawned here: a cluster driver.
    It holds refs and waits on objects like a worker, but is never leased nor lends CPU."""

    __slots__ = ("info", "requests", "wid")

    def __init__(self, wid: int) -> None:
        self.wid = wid
        self.requests: dict[int, Any] = {}
        self.info: dict[str, Any] = {}


class WorkerPool:
    def __init__(self, resources: ResourcePool, base_workers: int) -> None:
        self.resources = resources
        self.base_workers = base_workers  # task workers kept warm
        self.workers: dict[int, WorkerRec] = {}
        self.idle: list[WorkerRec] = []
        self.leased: dict[tuple, list[WorkerRec]] = {}
        self.n_starting = 0
        self.n_blocked = 0
        self.start_failures = 0  # workers in a row that died before their hello
        self.start_error: exc.WorkerStartError | None = None  # set while broken
        self.last_stderr = ""  # what the last worker that failed to start printed
        self.broken_at = 0.0

    def add(self, wid: int, actor: Any = None) -> WorkerRec:
        """A worker process about to be spawned (STARTING until it says hello)."""
        w = WorkerRec(wid)
        w.actor = actor
        self.workers[wid] = w
        self.n_starting += 1
        return w

    def hello(self, w: WorkerRec) -> None:
        """The worker is up: an actor's worker is its actor's, a task worker is idle."""
        self.n_starting -= 1
        self.start_failures = 0
        self.start_error = None
        if w.actor is not None:
            w.state = ACTOR
        else:
            w.state = IDLE
            self.idle.append(w)

    def task_worker_count(self) -> int:
        return sum(1 for w in self.workers.values() if w.state != DEAD and w.actor is None)

    # ------------------------------------------------------------------ leases
    def lease(self, key: tuple, req: dict[str, float]) -> WorkerRec | None:
        """An idle worker leased for shape ``key`` with its resources, or None (no idle
        worker, or the resources are taken)."""
        if not self.idle:
            return None
        alloc = self.resources.acquire(req)
        if alloc is None:
            return None
        gpus = tuple(alloc.gpu_ids)
        w = self._pick_idle(gpus)
        if w is None:
            self.resources.release(alloc)
            return None
        self.idle.remove(w)
        w.used = gpus or w.used or CPU_ONLY
        w.state = LEASED
        w.alloc = alloc
        w.shape = key
        self.leased.setdefault(key, []).append(w)
        return w

    def _pick_idle(self, gpus: tuple) -> WorkerRec | None:
        """The idle worker for a lease on GPUs ``gpus`` (none: a CPU lease): for GPUs one that
        ran nothing or only those GPUs; for CPUs preferably one that ran something already,
        keeping fresh workers for GPU work."""
        fresh = None
        for w in reversed(self.idle):
            if w.retiring:
                continue
            if gpus:
                if w.used is None or w.used == gpus:
                    return w
            elif w.used is not None:
                return w
            elif fresh is None:
                fresh = w
        return None if gpus else fresh

    def retire_for_gpus(self) -> WorkerRec | None:
        """An idle worker to end so that a fresh one can start for a GPU lease that no idle
        worker fits (None if a fresh one is idle or on its way, or none is idle)."""
        if self.n_starting or any(not w.retiring and w.used is None for w in self.idle):
            return None
        ws = [w for w in self.idle if not w.retiring]
        if not ws:
            return None
        w = next((w for w in ws if w.used == CPU_ONLY), ws[0])
        w.retiring = True
        return w

    def release_lease(self, w: WorkerRec) -> None:
        if w.alloc is not None:
            if w.lent:
                self.resources.reacquire_cpu(w.lent)
                w.lent = 0
            self.resources.release(w.alloc)
            w.alloc = None
        ws = self.leased.get(w.shape)
        if ws is not None and w in ws:
            ws.remove(w)
        w.shape = None

    def end_lease(self, w: WorkerRec) -> None:
        """The lease is over: the worker is idle again."""
        self.release_lease(w)
        w.state = IDLE
        self.idle.append(w)

    def reap(self, ready: dict[tuple, Any]) -> None:
        """End leases that hold no task while their shape has nothing queued (a task may have
        been cancelled, revoked or taken by another worker since the lease was made)."""
        for key, ws in self.leased.items():
            if not ws or ready.get(key):
                continue
            for w in [w for w in ws if not w.assigned and not w.blocked]:
                self.end_lease(w)

    # ------------------------------------------------------------------ blocked in get/wait
    def block(self, w: WorkerRec) -> bool:
        """``w`` waits in get/wait; True if it was not blocked already (a leased worker lends
        its CPU back meanwhile)."""
        w.blocked += 1
        if w.blocked > 1:
            return False
        self.n_blocked += 1
        if w.state == LEASED and w.alloc is not None:
            w.lent = self.resources.release_cpu(w.alloc)
        return True

    def unblock(self, w: WorkerRec) -> None:
        if w.blocked == 0:
            return
        w.blocked -= 1
        if w.blocked == 0:
            self.n_blocked -= 1
            if w.lent:
                self.resources.reacquire_cpu(w.lent)
                w.lent = 0

    # ------------------------------------------------------------------ deaths
    def died(self, w: WorkerRec) -> None:
        """``w``'s process is gone: DEAD, out of the idle list and the counts, its lease
        ended (its record stays until ``forget``)."""
        was = w.state
        w.state = DEAD
        if was == STARTING:
            self.n_starting -= 1
        if w in self.idle:
            self.idle.remove(w)
        if w.blocked:
            self.n_blocked -= 1
            w.blocked = 0
        self.release_lease(w)

    def start_failed(self, how: str, stderr: str, now: float) -> bool:
        """A worker died before its hello (after ``died``); True if that breaks the pool now
        (or again, after a failed probe)."""
        self.start_failures += 1
        tail = self.last_stderr = stderr[-STDERR_TAIL:].strip()
        if self.start_failures < MAX_START_FAILURES:
            return False
        self.start_error = exc.WorkerStartError(stderr=tail, how=how, failures=self.start_failures)
        self.broken_at = now
        return True

    def may_start(self, now: float) -> bool:
        """May a worker be spawned? Not while broken, except one probe at a time once
        ``START_RETRY_S`` has passed."""
        if self.start_error is None:
            return True
        return self.n_starting == 0 and now - self.broken_at >= START_RETRY_S

    def cannot_start(self, now: float) -> exc.WorkerStartError | None:
        """The error for work that needs a new worker, while the pool is broken and no probe
        is allowed or in flight (None: a worker may still come)."""
        if self.start_error is None or self.n_starting or self.may_start(now):
            return None
        return self.start_error

    def forget(self, wid: int) -> None:
        del self.workers[wid]

    def validate(self) -> None:
        """Idle workers hold nothing, leased ones a lease filed under their shape, and the
        counts are what the records say."""
        for w in self.workers.values():
            assert w.state != DEAD
            if w.state == IDLE:
                assert not w.assigned
                assert w.alloc is None
                assert w in self.idle
            if w.state == LEASED:
                assert w.alloc is not None
                assert w in self.leased.get(w.shape, [])
        for w in self.idle:
            assert w.state == IDLE and self.workers.get(w.wid) is w, f"idle worker {w.wid}"
        for key, ws in self.leased.items():
            for w in ws:
                assert w.state == LEASED and w.shape == key, f"lease of worker {w.wid}"
        assert self.n_blocked == sum(1 for w in self.workers.values() if w.blocked)
        assert self.n_starting == sum(1 for w in self.workers.values() if w.state == STARTING)
        assert (self.start_error is None) or self.start_failures >= MAX_START_FAILURES
