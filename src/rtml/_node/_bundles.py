"""Placement groups on one node: the node's reservation table and the work it holds back.

The node decides for itself here (one machine: the table has one node, this one). A group is
reserved in one step under ``node.lock``: every bundle's amounts leave the node's free resources
and come back as the bundle's own resources (``CPU_group_0_<pg>``, ...), so work placed in the
group is scheduled by the ordinary resource logic. Work asking for a group that is not created
yet waits here (as Ray keeps it pending) and is let go when the group is committed; removing a
group kills the workers running in it and gives its resources back.
"""

from __future__ import annotations

from typing import Any

from rtml import exceptions as exc
from rtml._scheduler._bundles import (
    CREATED,
    REMOVED,
    Change,
    PlacementTable,
    commit_on,
    group_of,
    release_on,
)


class NodeGroups:
    def __init__(self, node: Any, node_id: str) -> None:
        self.node = node
        self.node_id = node_id
        self.table = PlacementTable()
        self.table.add_node(node_id, node.resources.totals())
        self.waiting = False  # some group is PENDING: look again when resources come back

    def _busy(self) -> None:
        pool = self.node.resources
        used = {
            k: (pool.total[k] - max(pool.available.get(k, 0), 0)) / 10_000
            for k in pool.total
            if "_group_" not in k
        }
        reserved = self.table.nodes[self.node_id].reserved
        busy = {k: v - reserved.get(k, 0) / 10_000 for k, v in used.items()}
        self.table.set_busy(self.node_id, {k: v for k, v in busy.items() if v > 0})

    def _apply(self, changes: list[Change], schedule: bool = True) -> None:
        pool = self.node.resources
        for c in changes:
            if c.op == "commit":
                commit_on(pool, c.pg_id, c.index, dict(c.bundle))
            else:
                release_on(pool, c.pg_id, c.index, dict(c.bundle))
        self.waiting = any(g.state not in (CREATED, REMOVED) for g in self.table.groups.values())
        if changes and schedule:
            self.node.schedule()  # queued work of a group just created can start

    # ---- calls from the node (node.lock held)

    def waits_for(self, resources: dict[str, float]) -> bool:
        """The request is for a group not created yet: it waits in the queue (as Ray keeps
        such work pending) instead of failing as infeasible."""
        pg = group_of(resources)
        if pg is None:
            return False
        g = self.table.groups.get(pg)
        return g is not None and g.state not in (CREATED, REMOVED)

    def on_schedule(self) -> None:
        """The node schedules (resources may have come back): a group waiting for resources
        held by other work may fit now. Called only while ``waiting``."""
        self._busy()
        self._apply(self.table.schedule(), schedule=False)

    # ---- calls from the driver (node.lock held)

    def create(
        self, pg_id: str, bundles: list, strategy: str, name: str, lifetime: str | None
    ) -> None:
        self._busy()
        self._apply(self.table.create(pg_id, bundles, strategy, name, lifetime))

    def remove(self, pg_id: str) -> None:
        g = self.table.groups.get(pg_id)
        if g is None:
            raise ValueError(f"no placement group {pg_id}")
        if g.state == REMOVED:
            return
        self._kill_inside(pg_id)
        self._apply(self.table.remove(pg_id))

    def _kill_inside(self, pg_id: str) -> None:
        """Ray's rule: the tasks and actors running in a removed group are killed; work still
        waiting for it fails."""
        node = self.node
        mark = f"bundle_group_{pg_id}"
        for w in list(node.workers.values()):
            alloc = getattr(w, "alloc", None)
            if alloc is not None and mark in alloc.amounts:
                node.io.kill(w.wid)
        why = f"its placement group {pg_id} was removed"
        for key, q in node.ready.items():
            if q and mark in node.shapes.get(key, {}):
                for t in list(q):
                    q.remove(t)
                    node._fail(t, exc.TaskUnschedulableError(f"task {t.spec.name}: {why}"))
        if node.actors is not None:
            for rec in [r for r in node.actors.unplaced if mark in r.spec.resources]:
                node.actors.unplaced.remove(rec)
                node.actors._die(rec, why)

    def records(self, pg_id: str | None = None) -> dict[str, dict[str, object]]:
        return self.table.records(None if pg_id is None else [pg_id])

    def by_name(self, name: str) -> Any:
        return self.table.by_name(name)
