"""Where a task or actor runs in a cluster (as Ray's ``ray.util.scheduling_strategies``).

Pass one as ``scheduling_strategy=`` in ``@remote`` or ``.options()``: ``"DEFAULT"``,
``"SPREAD"``, ``NodeAffinitySchedulingStrategy(node_id, soft)`` or
``PlacementGroupSchedulingStrategy(placement_group, placement_group_bundle_index=-1,
placement_group_capture_child_tasks=None)``.
"""

from rtml._scheduler._strategy import (
    DEFAULT_SCHEDULING_STRATEGY,
    SPREAD_SCHEDULING_STRATEGY,
    NodeAffinitySchedulingStrategy,
    PlacementGroupSchedulingStrategy,
)

__all__ = [
    "DEFAULT_SCHEDULING_STRATEGY",
    "SPREAD_SCHEDULING_STRATEGY",
    "NodeAffinitySchedulingStrategy",
    "PlacementGroupSchedulingStrategy",
]
