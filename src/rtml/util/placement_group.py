"""Placement groups (as Ray's ``ray.util.placement_group``): reserve resources as bundles,
all of them or none, then run tasks and actors inside them.

::

    pg = placement_group([{"CPU": 1}, {"CPU": 1}], strategy="STRICT_SPREAD")
    rtml.get(pg.ready())  # or pg.wait(timeout_seconds=10)
    f.options(scheduling_strategy=PlacementGroupSchedulingStrategy(pg, 0)).remote()
    remove_placement_group(pg)

Strategies: ``PACK`` (one node if it fits, else as few as can), ``SPREAD`` (as many nodes as
can), ``STRICT_PACK`` (one node or wait), ``STRICT_SPREAD`` (one node per bundle or wait). A
group that does not fit stays ``PENDING`` until it does.
"""

from __future__ import annotations

import secrets
from typing import Any

import rtml
from rtml._runtime import _context

__all__ = [
    "PlacementGroup",
    "PlacementGroupID",
    "get_current_placement_group",
    "get_placement_group",
    "placement_group",
    "placement_group_table",
    "remove_placement_group",
]


class PlacementGroupID:
    """A placement group's id (``.hex()`` as Ray's)."""

    __slots__ = ("_hex",)

    def __init__(self, hex_id: str) -> None:
        self._hex = hex_id

    def hex(self) -> str:
        return self._hex

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PlacementGroupID) and other._hex == self._hex

    def __hash__(self) -> int:
        return hash(self._hex)

    def __repr__(self) -> str:
        return f"PlacementGroupID({self._hex})"


def _is_ready() -> bool:
    return True


_ready_fn: list[Any] = []  # the remote function behind ready(), made on first use


def _bundle_ready() -> Any:
    if not _ready_fn:
        _ready_fn.append(rtml.remote(num_cpus=0, max_retries=0)(_is_ready))
    return _ready_fn[0]


def _client() -> Any:
    c = _context.client()
    if not hasattr(c, "pg_create"):
        raise NotImplementedError(
            "placement groups run on the embedded runtime (rtml.init()) for now: not in local "
            "mode, a cluster or inside a task"
        )
    return c


class PlacementGroup:
    """A handle on a placement group; pickles by id, so tasks can be handed one."""

    def __init__(self, id: PlacementGroupID, bundle_specs: list[dict[str, float]]) -> None:
        self.id = id
        self._bundles = [dict(b) for b in bundle_specs]

    @property
    def bundle_specs(self) -> list[dict[str, float]]:
        """The bundles, as given (zero entries dropped)."""
        return [dict(b) for b in self._bundles]

    @property
    def bundle_count(self) -> int:
        return len(self._bundles)

    def ready(self) -> rtml.ObjectRef:
        """An ObjectRef that resolves (to True) once every bundle is reserved: use it with
        ``rtml.get`` or ``rtml.wait``."""
        return (
            _bundle_ready().options(placement_group=self, placement_group_bundle_index=0).remote()
        )

    def wait(self, timeout_seconds: float | int = 30) -> bool:
        """Block until the group is created or ``timeout_seconds`` pass; True if created."""
        done, _ = rtml.wait([self.ready()], timeout=timeout_seconds)
        return bool(done)

    def __reduce__(self) -> Any:
        return (PlacementGroup, (self.id, self._bundles))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PlacementGroup) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    def __repr__(self) -> str:
        return f"PlacementGroup({self.id.hex()}, {self._bundles})"


def placement_group(
    bundles: list[dict[str, float]],
    strategy: str = "PACK",
    name: str = "",
    lifetime: str | None = None,
    _max_cpu_fraction_per_node: float | None = None,
) -> PlacementGroup:
    """Reserve ``bundles`` (a list of resource dicts) together; returns at once (the group
    may be PENDING: see ``ready()``).

    Raises:
        ValueError: no bundles, a bundle with no resources, an unknown strategy or lifetime,
            or a name already taken.
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a string, got {type(name).__name__}")
    c = _client()
    pg_id = secrets.token_hex(14)
    c.pg_create(pg_id, bundles, strategy, name, lifetime)
    rec = c.pg_table(pg_id)[pg_id]
    return PlacementGroup(PlacementGroupID(pg_id), list(rec["bundles"].values()))


def remove_placement_group(placement_group: PlacementGroup) -> None:
    """Give the group's resources back; tasks and actors running in it are killed."""
    if not isinstance(placement_group, PlacementGroup):
        raise TypeError(f"expected a PlacementGroup, got {placement_group!r}")
    _client().pg_remove(placement_group.id.hex())


def get_placement_group(placement_group_name: str) -> PlacementGroup:
    """The live group of that name.

    Raises:
        ValueError: no group has that name.
    """
    rec = _client().pg_by_name(placement_group_name)
    if rec is None:
        raise ValueError(f"failed to look up placement group with name {placement_group_name!r}")
    return PlacementGroup(
        PlacementGroupID(rec["placement_group_id"]), list(rec["bundles"].values())
    )


def placement_group_table(placement_group: PlacementGroup | None = None) -> dict[str, Any]:
    """Every group's record (id → fields as Ray's), or one group's record."""
    c = _client()
    if placement_group is None:
        return c.pg_table(None)
    pg_id = placement_group.id.hex()
    return c.pg_table(pg_id)[pg_id]


def get_current_placement_group() -> PlacementGroup | None:
    """The group the calling task runs in; None in the driver or outside a group."""
    c = _context.get_client()
    where = getattr(c, "current_placement", None) if c is not None else None
    if where is None:
        return None
    return PlacementGroup(PlacementGroupID(where[0]), where[3])
