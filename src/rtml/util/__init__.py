"""Utilities (as ``ray.util``): ``ActorPool``, ``queue.Queue``, ``progress`` /
``progress_get`` to watch many refs finish, ``state`` to list tasks, actors and objects, and
placement groups (``placement_group`` and friends, as ``ray.util`` exports them). Imported by
name, as in Ray: ``rtml.util.dask`` (a Dask scheduler; needs ``rtml[frontends]``) and
``rtml.util.metrics`` (Counter, Gauge, Histogram).

Floor 9, a user of the public API (docs/architecture.md): imports public rtml only, but for
``state``, ``scheduling_strategies`` and ``placement_group``, faces of private modules (see tests/unit/test_layers.py).
"""

from typing import Any

from rtml.util import queue
from rtml.util.actor_pool import ActorPool
from rtml.util.placement_group import (
    get_current_placement_group,
    get_placement_group,
    placement_group,
    placement_group_table,
    remove_placement_group,
)
from rtml.util.progress import progress, progress_get

__all__ = [
    "ActorPool",
    "get_current_placement_group",
    "get_placement_group",
    "placement_group",
    "placement_group_table",
    "progress",
    "progress_get",
    "queue",
    "remove_placement_group",
    "state",
]


def __getattr__(name: str) -> Any:
    # ``state`` loads the listing code only when used: every worker imports rtml at start.
    if name == "state":
        import rtml.util.state as state

        return state
    raise AttributeError(f"module 'rtml.util' has no attribute {name!r}")
