"""Forwarding: where a ready task runs, tasks sent to other nodes, and their results back.

Owns the tasks forwarded to peers (``forwarded``: task id -> record, until their results are
fetched back or their node dies) and those no live node fits yet (``infeasible``, placed again
when the view changes). A forwarded task's results are sealed here by ownership
(``seal_returned``); a call whose node died waits for its actor (``park``) to come back.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from rtml import exceptions as exc
from rtml._node._cluster._membership import Link, Membership
from rtml._node._cluster._ownership import Ownership
from rtml._node._tasks import TaskRec
from rtml._protocol._events import FORWARDED as FORWARDED_EV
from rtml._protocol._ids import return_id, to_hex
from rtml._protocol._payload import REMOTE, SHM
from rtml._protocol._spec import FINISHED, FORWARDED, STREAMING, WAITING
from rtml._scheduler._placement import place

PARKED = ""  # place(): the task waits in ``infeasible`` for a node that fits it


class Forwarding:
    def __init__(self, node: Any, members: Membership, ownership: Ownership) -> None:
        self.node = node
        self.members = members
        self.ownership = ownership
        self.park: Callable[[TaskRec], None]  # a call to wait for its actor (wired by ClusterState)
        self.forwarded: dict[int, TaskRec] = {}
        self.infeasible: list[TaskRec] = []  # no live node fits them yet: wait for one
        self.stats = {"forwarded": 0}

    # ------------------------------------------------------------------ placement
    def place(self, t: TaskRec) -> str | None:
        """The node to run ``t`` on; None for this one; PARKED: no node fits it yet."""
        spec = t.spec
        if spec.num_returns == STREAMING and spec.strategy is None:
            return None  # streams are served by the node that owns them
        members = self.members
        members.local_view()
        node_id = members.node_id
        objects = self.node.objects
        inputs: dict[str, int] = {}
        for d in spec.deps:
            e = objects.get(d)
            if e is None:
                continue
            if e.kind == SHM:
                inputs[node_id] = inputs.get(node_id, 0) + e.size
            elif e.kind == REMOTE and e.payload[1]:
                inputs[e.payload[0]] = inputs.get(e.payload[0], 0) + e.payload[1]
        if spec.strategy == "SPREAD":
            members.spread()
        try:
            target = place(
                spec.resources,
                spec.strategy,
                node_id,
                members.view,
                inputs,
                self.node.fn_time.get(spec.fn_id),
                members.spread_turn,
            )
        except exc.TaskUnschedulableError as e:
            if isinstance(spec.strategy, tuple):
                raise  # a hard node affinity to a dead or too small node
            self.infeasible.append(t)  # as Ray: pending until a node that fits joins
            if t.attempts == 0:
                t.attempts = -1  # warned once (set back to 0 when it is placed)
                self.node.io.log_sink(
                    "stderr",
                    "rtml",
                    "-",
                    f"warning: {e}; the task waits until such a node joins",
                    spec.job and spec.job[0],
                )
            return PARKED
        if t.attempts < 0:
            t.attempts = 0
        if target == node_id:
            return None
        if spec.num_returns == STREAMING:
            raise exc.TaskUnschedulableError(
                f"streaming task {spec.name} must run on the node of its caller; drop its "
                "scheduling_strategy or give that node the resources it needs"
            )
        return target

    def retry_infeasible(self) -> None:
        """The view changed: a node that fits the waiting tasks may have joined."""
        if self.infeasible:
            waiting, self.infeasible = self.infeasible, []
            for t in waiting:
                if t.state == WAITING and not t.cancelled:
                    self.node._ready(t)

    # ------------------------------------------------------------------ forwarding
    def forward(self, t: TaskRec, target: str) -> None:
        node = self.node
        members = self.members
        spec = t.spec
        ln = members.link(target)
        t.state = FORWARDED
        t.remote = target
        t.attempts += 1
        if node.events is not None:
            now = time.time()
            node.events.append(
                (FORWARDED_EV, t, t.attempts, now, now, None, 0, None, {"to_node": target})
            )
        self.forwarded[spec.task_id] = t
        self.stats["forwarded"] += 1
        blob = members.function_for(ln, spec.fn_id)
        members.send(ln, ("submit", spec, blob))
        members.account(target, spec.resources, -1)
        ids = [return_id(spec.task_id, i) for i in range(1, spec.num_returns + 1)]
        members.request(ln, lambda r: ("fetch", r, ids), lambda vals: self._returned(t, ln, vals))

    def _returned(self, t: TaskRec, ln: Link, vals: list | None) -> None:
        node = self.node
        self.forwarded.pop(t.spec.task_id, None)
        self.members.account(ln.node_id, t.spec.resources, +1)
        if vals is None:  # the node running it is gone
            if t.state == FORWARDED:
                self._lost_in_flight(t, ln.node_id)
            return
        if t.state != FORWARDED:  # cancelled or retried meanwhile: let the peer free them
            self.ownership.release(ln, [oid for oid, *_ in vals])
            return
        t.state = FINISHED
        node.tasks.pop(t.spec.task_id, None)
        node.stats["finished"] += 1
        self.ownership.seal_returned(ln, vals)
        node._unpin(t)

    def _lost_in_flight(self, t: TaskRec, node_id: str) -> None:
        """The node running a forwarded task or call died: retry it (a call once its actor is
        back) or fail it, naming the option that would have retried it."""
        node = self.node
        if t.retries_left == 0 or t.cancelled:
            if t.spec.actor_id is not None:
                node._fail(
                    t,
                    exc.ActorDiedError(
                        f"the node running the actor ({node_id}) died while the call "
                        f"{t.spec.name}() was in flight; the call was not retried (pass "
                        "max_task_retries=N, or -1, to the actor to re-send in-flight calls "
                        "to its restarted instance)",
                        actor_id=to_hex(t.spec.actor_id),
                    ),
                )
            else:
                node._fail(
                    t,
                    exc.NodeDiedError(
                        f"task {t.spec.name} ({to_hex(t.spec.task_id)}) was running on node "
                        f"{node_id}, which is gone; it was tried {t.attempts} time(s). Raise "
                        "max_retries to retry on another node"
                    ),
                )
            return
        if t.retries_left > 0:
            t.retries_left -= 1
        node.stats["retried"] += 1
        t.state = WAITING
        t.remote = None
        if t.spec.actor_id is not None:
            self.park(t)  # re-sent once the actor is back
        else:
            node._ready(t)

    def cancel(self, t: TaskRec, oid: int, force: bool, recursive: bool) -> None:
        t.cancelled = True
        ln = self.members.links.get(t.remote or "")
        if ln is not None:
            self.members.send(ln, ("cancel", oid, force, recursive))

    def validate(self) -> None:
        """Every forwarded task is known to the node, filed under its id, and sent somewhere."""
        for tid, t in self.forwarded.items():
            assert t.spec.task_id == tid, f"forwarded task filed under {to_hex(tid)}"
            assert t.remote is not None or t.state != FORWARDED, f"{to_hex(tid)} sent nowhere"
