"""The global scheduler's placement decision: a pure function over the cluster's view.

::

    task ready (inputs sealed) on node L ──▶ place(request, strategy, view, input bytes)
        │  L can run it now, or its queue drains sooner than anywhere else: L (no hop)
        └─ else the node with the earliest estimated start: queue wait + input transfer
           + one forwarding hop; L on ties

The view comes from the control plane (heartbeats: totals, available, queued per node) and is
corrected locally after each forward, so a burst does not land on one node. Every node runs
this same function on the same logically centralized state: the decision needs no extra round
trip, and any node (or a restarted one) can make it from what the control plane holds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rtml import exceptions as exc

FORWARD_S = 0.001  # cost of one hop to another node, in seconds of delay
BANDWIDTH = 1e9  # bytes/s assumed between nodes for inputs not already there
DEFAULT_TASK_S = 0.01  # run time assumed for a function never seen


@dataclass
class NodeView:
    node_id: str
    index: int
    address: str
    totals: dict[str, float]
    available: dict[str, float]
    queued: int = 0
    alive: bool = True
    labels: dict[str, Any] = field(default_factory=dict)

    def fits_total(self, request: dict[str, float]) -> bool:
        return all(self.totals.get(k, 0.0) + 1e-9 >= v for k, v in request.items() if v > 0)

    def fits_now(self, request: dict[str, float]) -> bool:
        return all(self.available.get(k, 0.0) + 1e-9 >= v for k, v in request.items() if v > 0)

    def slots(self, request: dict[str, float]) -> float:
        """How many tasks of this shape the node runs at once (at least 1)."""
        n = min(
            (self.totals.get(k, 0.0) / v for k, v in request.items() if v > 0),
            default=self.totals.get("CPU", 1.0),
        )
        return max(1.0, n)


def place(
    request: dict[str, float],
    strategy: Any,
    local: str,
    view: dict[str, NodeView],
    input_bytes: dict[str, int],
    task_s: float | None,
    spread_turn: int = 0,
) -> str:
    """The node that should run a ready task (``local`` when there is no better place).

    Args:
        request: the task's resources.
        strategy: None, "SPREAD" or ("node", node_id, soft).
        local: this node's id (it must be in ``view``, with live figures).
        view: every known node.
        input_bytes: bytes of the task's inputs already held by each node.
        task_s: the function's measured run time, if known.
        spread_turn: a counter the caller advances per SPREAD task.

    Raises:
        TaskUnschedulableError: no live node could ever fit the request, or a hard node
            affinity names a dead or too small node.
    """
    if isinstance(strategy, tuple) and strategy[0] == "node":
        _tag, target, soft = strategy
        n = view.get(target)
        if n is not None and n.alive and n.fits_total(request):
            return str(target)
        if not soft:
            why = "is not alive" if n is None or not n.alive else f"has only {n.totals}"
            raise exc.TaskUnschedulableError(
                f"the task must run on node {target} (NodeAffinitySchedulingStrategy, "
                f"soft=False), which {why}; use soft=True to allow other nodes"
            )
    feasible = [n for n in view.values() if n.alive and n.fits_total(request)]
    if not feasible:
        totals = {n.node_id[:8]: n.totals for n in view.values() if n.alive}
        raise exc.TaskUnschedulableError(
            f"no node of the cluster can ever run a task asking for {request} (nodes: "
            f"{totals}); lower the request or add a node with the resources "
            "(rtml start --address ... --resources ...)"
        )
    if strategy == "SPREAD":
        feasible.sort(key=lambda n: n.index)
        return feasible[spread_turn % len(feasible)].node_id
    est = DEFAULT_TASK_S if task_s is None else task_s
    total_in = sum(input_bytes.values())
    best, best_cost = local, None
    for n in feasible:
        # Free room now does not mean no wait: tasks already queued there start first (the
        # view's free room can also be stale while its queue is not).
        wait = (n.queued + (0 if n.fits_now(request) else 1)) * est / n.slots(request)
        cost = wait + (total_in - input_bytes.get(n.node_id, 0)) / BANDWIDTH
        if n.node_id != local:
            cost += FORWARD_S
        if (
            best_cost is None
            or cost < best_cost - 1e-12
            or (cost <= best_cost + 1e-12 and n.node_id == local)
        ):
            best, best_cost = n.node_id, cost
    return best
