"""Where a task or actor runs in a cluster (Ray's ``ray.util.scheduling_strategies``).

Pass one as ``scheduling_strategy=`` in ``@remote`` or ``.options()``:

- ``"DEFAULT"``: the local node while it has room, else the node the global scheduler picks by
  resources, load and the location of the task's inputs.
- ``"SPREAD"``: spread tasks over every node that can run them, round robin.
- ``NodeAffinitySchedulingStrategy(node_id, soft)``: on that node; with ``soft=True`` elsewhere
  if that node is dead or can never fit the task, with ``soft=False`` the task fails then.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = [
    "DEFAULT_SCHEDULING_STRATEGY",
    "SPREAD_SCHEDULING_STRATEGY",
    "NodeAffinitySchedulingStrategy",
    "normalize_strategy",
]

DEFAULT_SCHEDULING_STRATEGY = "DEFAULT"
SPREAD_SCHEDULING_STRATEGY = "SPREAD"


@dataclass(frozen=True)
class NodeAffinitySchedulingStrategy:
    """Run on the node ``node_id`` (a hex id from ``rtml.nodes()`` or the runtime context).

    Args:
        node_id: the node's id.
        soft: run elsewhere if that node is dead or lacks the resources (else fail).
    """

    node_id: str
    soft: bool = False
    _spill_on_unavailable: bool = False
    _fail_on_unavailable: bool = False


def normalize_strategy(value: Any) -> Any:
    """None (default placement), ``"SPREAD"`` or ``("node", node_id, soft)``.

    Raises:
        ValueError: anything else (the message lists what is accepted).
    """
    if value is None or value == DEFAULT_SCHEDULING_STRATEGY:
        return None
    if value == SPREAD_SCHEDULING_STRATEGY:
        return SPREAD_SCHEDULING_STRATEGY
    if isinstance(value, NodeAffinitySchedulingStrategy) or (
        type(value).__name__ == "NodeAffinitySchedulingStrategy" and hasattr(value, "node_id")
    ):
        node_id = value.node_id
        if not isinstance(node_id, str) or not node_id:
            raise ValueError(
                f"NodeAffinitySchedulingStrategy needs a node id string, got {node_id!r}"
            )
        return ("node", node_id, bool(value.soft))
    raise ValueError(
        f"scheduling_strategy must be 'DEFAULT', 'SPREAD' or a NodeAffinitySchedulingStrategy, "
        f"got {value!r}"
    )
