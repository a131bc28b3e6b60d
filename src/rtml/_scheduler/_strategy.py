"""Where a task or actor runs in a cluster (Ray's ``ray.util.scheduling_strategies``).

Pass one as ``scheduling_strategy=`` in ``@remote`` or ``.options()``:

- ``"DEFAULT"``: the local node while it has room, else the node the global scheduler picks by
  resources, load and the location of the task's inputs.
- ``"SPREAD"``: spread tasks over every node that can run them, round robin.
- ``NodeAffinitySchedulingStrategy(node_id, soft)``: on that node; with ``soft=True`` elsewhere
  if that node is dead or can never fit the task, with ``soft=False`` the task fails then.
- ``PlacementGroupSchedulingStrategy(pg, bundle_index, capture_child_tasks)``: inside a
  placement group's bundle (its request is rewritten to the bundle's resources).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = [
    "DEFAULT_SCHEDULING_STRATEGY",
    "SPREAD_SCHEDULING_STRATEGY",
    "NodeAffinitySchedulingStrategy",
    "PlacementGroupSchedulingStrategy",
    "group_placement",
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


@dataclass(frozen=True)
class PlacementGroupSchedulingStrategy:
    """Run inside a placement group's reserved resources.

    Args:
        placement_group: the group (from ``rtml.util.placement_group``).
        placement_group_bundle_index: the bundle to run in; -1 (default): any bundle.
        placement_group_capture_child_tasks: tasks this one submits run in the group too.
    """

    placement_group: Any
    placement_group_bundle_index: int = -1
    placement_group_capture_child_tasks: bool | None = None


def group_placement(raw: dict[str, Any]) -> tuple[Any, int, bool] | None:
    """(group, bundle index, capture) from ``scheduling_strategy=PlacementGroupScheduling
    Strategy(...)`` or the older ``placement_group=`` options; None when neither is given.

    Raises:
        ValueError: both given, or ``placement_group`` is not a placement group.
    """
    s: Any = raw.get("scheduling_strategy")
    pg = raw.get("placement_group")
    if pg == "default":
        pg = None
    if isinstance(s, PlacementGroupSchedulingStrategy) or (
        type(s).__name__ == "PlacementGroupSchedulingStrategy" and hasattr(s, "placement_group")
    ):
        if pg is not None:
            raise ValueError(
                "placement_group= and a PlacementGroupSchedulingStrategy cannot both be given"
            )
        pg = s.placement_group
        index = s.placement_group_bundle_index
        capture = s.placement_group_capture_child_tasks
    elif pg is not None:
        index = raw.get("placement_group_bundle_index", -1)
        capture = raw.get("placement_group_capture_child_tasks")
    else:
        return None
    if pg is None:
        return None
    if not hasattr(pg, "bundle_specs") or not hasattr(pg, "id"):
        raise ValueError(
            f"placement_group must be a PlacementGroup (rtml.util.placement_group(...)), got {pg!r}"
        )
    return pg, index, bool(capture)


def normalize_strategy(value: Any) -> Any:
    """None (default placement), ``"SPREAD"`` or ``("node", node_id, soft)``.

    Raises:
        ValueError: anything else (the message lists what is accepted).
    """
    if value is None or value == DEFAULT_SCHEDULING_STRATEGY:
        return None
    if type(value).__name__ == "PlacementGroupSchedulingStrategy":
        return None  # the group is in the task's resources (see group_placement)
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
