"""Recovery: objects whose every copy is gone are rebuilt from lineage, or asked for again.

Owns the lineage of tasks owned here (``_node/_lineage.py``) and the lineage records for the
control plane, the objects a borrower asks its owner for again (with their back-off timers),
and the queue of tasks to re-run. The owner of a lost object re-runs the task that made it
(and, first, the tasks of its inputs lost too); a borrower asks the owner again.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from rtml import exceptions as exc
from rtml._node._cluster._membership import Membership, blob
from rtml._node._cluster._ownership import Ownership
from rtml._node._lineage import Lineage, is_put
from rtml._node._objects import PENDING
from rtml._node._tasks import TaskRec
from rtml._protocol._ids import node_of_object, return_id, task_of, to_hex
from rtml._protocol._payload import ERR, INLINE, REMOTE, SHM
from rtml._protocol._spec import WAITING
from rtml._scheduler import shape_key

if TYPE_CHECKING:
    from rtml._node._cluster._remote_actors import RemoteActors

REFETCH_DELAYS = (0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0)


class Recovery:
    def __init__(self, node: Any, members: Membership, ownership: Ownership) -> None:
        self.node = node
        self.members = members
        self.ownership = ownership
        self.actors: RemoteActors  # (wired by ClusterState)
        # For the control plane, sent in batches by the node server (off the task path): the
        # lineage of tasks owned here while any of their results lives.
        self.lineage = Lineage()
        self.lineage_add: list[Any] = []
        self.refetch: dict[int, int] = {}  # oid -> times a borrower asked its owner again
        self.rebuilding: dict[int, Any] = {}  # task id -> spec, to resubmit (see ``lost``)
        self.timers: list[tuple[float, Any]] = []
        self.stats = {"reconstructed": 0}

    # ------------------------------------------------------------------ lost objects
    def is_lost(self, e: Any) -> bool:
        """Is a sealed entry's only copy on a node that is gone?"""
        return (
            e.kind == REMOTE
            and e.state != PENDING
            and (e.payload[0] is None or not self.members.alive(e.payload[0]))
        )

    def check_lost(self, oid: int) -> None:
        """Before answering a peer about an object owned here: rebuild it if it was lost."""
        e = self.node.objects.get(oid)
        if e is not None and e.kind == SHM and self.ownership.owns(oid):
            self.ownership.check_spill(oid, e)
        if e is not None and self.ownership.owns(oid) and self.is_lost(e):
            where = e.payload[0]
            e.state = PENDING
            self.lost(oid, f"object {to_hex(oid)} was on node {where}, which is gone")

    def recovered(self, oid: int) -> None:
        """A value of ``oid`` arrived: stop asking for it."""
        self.refetch.pop(oid, None)

    def lost(self, oid: int, why: str) -> None:
        """Every copy of a PENDING-marked object is gone: rebuild it if possible (the owner
        re-runs the task that made it; a borrower asks the owner again), else seal the error."""
        err = self._rebuild(oid, why)
        if err is not None:
            self.refetch.pop(oid, None)
            self.node.objects.seal(oid, ERR, blob(err), 0, ())
        # Tasks to re-run are queued rather than resubmitted recursively: a chain of lost
        # results is as long as the lineage, far deeper than Python's recursion limit.
        while self.rebuilding:
            tid = next(iter(self.rebuilding))
            self._resubmit(self.rebuilding.pop(tid))

    def _rebuild(self, oid: int, why: str) -> BaseException | None:
        """Start re-creating ``oid``; the error to seal it with if it cannot be."""
        hexid = to_hex(oid)
        owner_index = node_of_object(oid)
        if owner_index != self.members.index:
            owner = self.members.by_index.get(owner_index)
            if owner is None or not self.members.alive(owner):
                return exc.OwnerDiedError(
                    hexid,
                    f"{why}, and the node that owns it ({owner}) "
                    "died too: only its owner can rebuild an object",
                )
            n = self.refetch.get(oid, 0)
            if n >= len(REFETCH_DELAYS):
                return exc.ObjectLostError(
                    hexid, f"{why}; its owner ({owner}) could not provide it again after {n} tries"
                )
            self.refetch[oid] = n + 1
            self.timers.append(
                (time.monotonic() + REFETCH_DELAYS[n], lambda: self._refetch(oid, owner))
            )
            return None
        if is_put(oid):
            return exc.ObjectLostError(
                hexid,
                f"{why}; it was made by rtml.put(), which cannot "
                "be recomputed (a put value lives as long as its node)",
            )
        tid = task_of(oid)
        if tid in self.node.tasks or tid in self.rebuilding:
            return None  # its task runs (again) already: its result will seal it
        spec = self.lineage.specs.get(tid)
        if spec is None:
            return exc.ObjectReconstructionFailedLineageEvictedError(
                hexid,
                f"{why}; it cannot be recomputed: only results of tasks submitted on this "
                "node, and of calls to actors with max_task_retries != 0, are kept in its "
                "lineage (not streamed items, nor the actor's creation)",
            )
        if not self.lineage.spend_retry(tid):
            return exc.ObjectReconstructionFailedMaxAttemptsExceededError(
                hexid,
                f"{why}; recomputing it would re-run {spec.name}, which has no retries "
                f"left (max_retries={spec.max_retries}); raise max_retries to allow it",
            )
        self.rebuilding[tid] = spec  # resubmitted by ``lost``
        return None

    def _refetch(self, oid: int, owner: str) -> None:
        e = self.node.objects.get(oid)
        if e is None or e.state != PENDING:
            return
        if not self.members.alive(owner):
            self.lost(oid, f"object {to_hex(oid)} could not be read")
            return
        self.ownership.fetch(oid, owner)

    def reset(self, oid: int) -> bool:
        """Mark a lost entry pending again (its task is about to re-run); False if it is not
        lost."""
        e = self.node.objects.get(oid)
        if e is None or not self.is_lost(e):
            return False
        e.state = PENDING
        e.kind = INLINE
        e.payload = None
        self.ownership.forget(oid)
        return True

    def _resubmit(self, spec: Any) -> None:
        """Run a finished task again to re-create its lost results; inputs freed or lost since
        are marked pending and their own tasks queued to re-run (``lost`` drains the queue)."""
        node = self.node
        objects = node.objects
        tid = spec.task_id
        t = TaskRec(spec, node, shape_key(spec.resources))
        t.attempts = self.lineage.reruns.get(tid, 1)  # (its events show a later attempt)
        node.tasks[tid] = t
        node.stats["submitted"] += 1
        self.stats["reconstructed"] += 1
        for i in range(1, spec.num_returns + 1):
            oid = return_id(tid, i)
            e = objects.get(oid)
            if e is not None and e.state != PENDING and self.is_lost(e):
                self.reset(oid)
        temp = []
        for d in (*spec.deps, *spec.contained):
            e = objects.get(d)
            if e is None:
                if not self.ownership.owns(d):
                    self.ownership.adopt(d)  # borrowed: its owner still has it, or reading fails
                    continue
                objects.create(d, 0)  # (one ref until it is pinned below)
                temp.append(d)
                self.lineage.return_created(d)
            elif not self.reset(d):
                continue
            err = self._rebuild(d, f"object {to_hex(d)}, an input of {spec.name}, was lost")
            if err is not None:
                objects.seal(d, ERR, blob(err), 0, ())
        for c in spec.contained:
            objects.add_ref(c)
        if spec.actor_id is None:
            if node._pin_deps(t, localize=False) and t.deps_left == 0 and t.state == WAITING:
                node._ready(t)
        else:  # a call: to its actor, wherever it lives now
            home = self.actors.actor_elsewhere(spec)
            if home is not None:
                if node._pin_deps(t, localize=False):
                    self.actors.send_call(t, home)
            elif node._pin_deps(t):
                node.actors.enqueue(t)
        for d in temp:
            objects.release(d)

    # ------------------------------------------------------------------ lineage records
    def record_lineage(self, t: TaskRec) -> None:
        """Keep what rebuilds a task's results: normal tasks, and calls of actors that may
        re-run them (max_task_retries != 0; re-run on the actor, maybe restarted, after the
        calls made since, as in Ray). Streams and num_returns=0 leave nothing to rebuild."""
        spec = t.spec
        if spec.num_returns > 0 and (
            spec.actor_id is None or (spec.max_retries != 0 and spec.actor_id != spec.task_id)
        ):
            objects = self.node.objects
            for d in self.lineage.record(spec, self.ownership.owns):
                objects.add_ref(d)
            self.lineage_add.append(spec)

    def take_lineage(self) -> tuple[list[Any], list[int]]:
        out = (self.lineage_add, self.lineage.take_dropped())
        self.lineage_add = []
        return out

    def on_free(self, oid: int) -> None:
        objects = self.node.objects
        for pinned in self.lineage.return_freed(oid):
            objects.release(pinned)
        self.refetch.pop(oid, None)

    def run_timers(self) -> None:
        """Objects to ask their owner for again, when their back-off is over."""
        if self.timers:
            now = time.monotonic()
            due = [fn for at, fn in self.timers if at <= now]
            if due:
                self.timers = [(at, fn) for at, fn in self.timers if at > now]
                for fn in due:
                    fn()

    def validate(self) -> None:
        """The lineage is consistent; objects asked for again are borrowed, within the limit."""
        self.lineage.validate()
        for oid, n in self.refetch.items():
            assert not self.ownership.owns(oid), f"{to_hex(oid)} is ours but asked for again"
            assert 0 < n <= len(REFETCH_DELAYS), f"{to_hex(oid)} asked for again {n} times"
        assert not self.rebuilding, "tasks left queued for a rebuild"
