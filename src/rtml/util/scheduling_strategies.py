"""Where a task or actor runs in a cluster (as Ray's ``ray.util.scheduling_strategies``).

Pass one as ``scheduling_strategy=`` in ``@remote`` or ``.options()``: ``"DEFAULT"``,
``"SPREAD"`` or ``NodeAffinitySchedulingStrategy(node_id, soft)``.
"""

from rtml._scheduler._strategy import (
    DEFAULT_SCHEDULING_STRATEGY,
    SPREAD_SCHEDULING_STRATEGY,
    NodeAffinitySchedulingStrategy,
)

__all__ = [
    "DEFAULT_SCHEDULING_STRATEGY",
    "SPREAD_SCHEDULING_STRATEGY",
    "NodeAffinitySchedulingStrategy",
]
