"""Placement groups: the reservation state machine, pure (no I/O, no clock).

A placement group is a list of bundles (resource dicts) reserved together on the nodes of a
cluster: all of its bundles or none of them. One table, held by whoever decides for the
cluster (the control plane; the embedded node for one machine), makes every decision in one
step, so there is no prepare/commit round between nodes to go wrong: a decision is a full
assignment bundle → node that fits, or no change at all. The node then turns each committed
bundle into resources of its own (see :func:`bundle_resources`), so tasks placed in a bundle
are scheduled by the ordinary resource logic.

::

    create ──▶ PENDING ──(every bundle fits, one decision)──▶ CREATED
                  ▲                                           │ a node holding bundles dies
                  │ (nothing placed yet)                      ▼
                  │                                     RESCHEDULING ──(lost bundles fit)──▶ CREATED
    remove: PENDING / CREATED / RESCHEDULING ──▶ REMOVED (its reservations returned)

Invariants (:meth:`PlacementTable.validate`):

- a node's reserved amounts are the sum of the bundles placed on it, and never exceed its
  totals;
- PENDING and REMOVED groups hold no node; CREATED groups hold a live node for every bundle;
  RESCHEDULING groups hold at least one unplaced bundle;
- a CREATED STRICT_PACK group sits on one node; a STRICT_SPREAD group never puts two bundles
  on one node;
- names are unique among groups not removed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from rtml._scheduler._resources import ResourcePool, _fx

PENDING = "PENDING"
CREATED = "CREATED"
REMOVED = "REMOVED"
RESCHEDULING = "RESCHEDULING"
STRATEGIES = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")
BUNDLE_MARK = "bundle"  # every bundle holds this resource, so zero-resource tasks stay in it
BUNDLE_MARK_UNITS = 1000.0
TASK_MARK = 0.001  # what a task takes of its bundle's mark


Fixed = dict[str, int]


def _fixed(bundle: Mapping[str, float]) -> Fixed:
    return {k: _fx(v) for k, v in bundle.items() if v > 0}


def _fits(need: Fixed, free: Fixed) -> bool:
    return all(free.get(k, 0) >= v for k, v in need.items())


def _add(into: Fixed, amounts: Fixed, sign: int = 1) -> None:
    for k, v in amounts.items():
        into[k] = into.get(k, 0) + sign * v
        if into[k] == 0:
            del into[k]


def validate_bundles(bundles: object, strategy: object) -> list[dict[str, float]]:
    """Ray's checks of ``placement_group(bundles, strategy)``.

    Raises:
        ValueError: no bundles, a bundle that is not a dict of non-negative numbers, a bundle
            with no resources at all, or an unknown strategy.
    """
    if strategy not in STRATEGIES:
        raise ValueError(
            f"invalid placement group strategy {strategy!r}; use one of {', '.join(STRATEGIES)}"
        )
    if not isinstance(bundles, (list, tuple)) or not bundles:
        raise ValueError(
            "the placement group `bundles` argument must be a non-empty list of resource "
            f"dicts, got {bundles!r}"
        )
    out = []
    for i, b in enumerate(bundles):
        if not isinstance(b, dict):
            raise ValueError(f"bundle {i} must be a dict of resource name to amount, got {b!r}")
        for k, v in b.items():
            if not isinstance(k, str) or not k:
                raise ValueError(f"bundle {i}: resource names must be strings, got {k!r}")
            if not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0:
                raise ValueError(f"bundle {i}: {k} must be a non-negative number, got {v!r}")
        if not any(v > 0 for v in b.values()):
            raise ValueError(
                f"bundle {i} ({b}) has no resources: every bundle of a placement group must "
                "ask for a positive amount of at least one resource, e.g. {'CPU': 1}"
            )
        out.append({k: float(v) for k, v in b.items() if v > 0})
    return out


def bundle_resources(pg_hex: str, index: int, bundle: Mapping[str, float]) -> dict[str, float]:
    """The resources a node gains while it holds bundle ``index`` of group ``pg_hex`` (Ray's
    naming): ``CPU_group_<i>_<pg>`` for the bundle, ``CPU_group_<pg>`` for any bundle of the
    group, and the bundle mark that zero-resource tasks take."""
    out: dict[str, float] = {}
    for k, v in {**bundle, BUNDLE_MARK: BUNDLE_MARK_UNITS}.items():
        out[f"{k}_group_{index}_{pg_hex}"] = v
        out[f"{k}_group_{pg_hex}"] = v
    return out


def task_resources(
    pg_hex: str, index: int, request: Mapping[str, float], bundles: list[dict[str, float]]
) -> dict[str, float]:
    """A task's request rewritten to run inside the group (index -1: any bundle).

    Raises:
        ValueError: the index is out of range, or the request can never fit the bundle(s).
    """
    n = len(bundles)
    if not isinstance(index, int) or isinstance(index, bool) or not -1 <= index < n:
        raise ValueError(
            f"placement_group_bundle_index {index!r} is out of range: the placement group has "
            f"{n} bundle(s), so use 0..{n - 1}, or -1 for any bundle"
        )
    candidates = bundles if index == -1 else [bundles[index]]
    need = _fixed(request)
    if not any(_fits(need, _fixed(b)) for b in candidates):
        where = "any bundle" if index == -1 else f"bundle {index} ({bundles[index]})"
        raise ValueError(
            f"the task or actor asks for {dict(request)}, more than {where} of its placement "
            f"group has (bundles: {bundles}); ask for less or reserve larger bundles"
        )
    out: dict[str, float] = {}
    for k, v in {**request, BUNDLE_MARK: TASK_MARK}.items():
        out[f"{k}_group_{pg_hex}"] = v
        if index >= 0:
            out[f"{k}_group_{index}_{pg_hex}"] = v
    return out


@dataclass
class Group:
    pg_id: str
    bundles: list[dict[str, float]]
    strategy: str
    name: str = ""
    lifetime: str | None = None
    owner: str = ""  # the job (or driver) that made it; detached groups outlive it
    state: str = PENDING
    nodes: list[str | None] = field(default_factory=list)  # bundle index → node, None: unplaced

    def __post_init__(self) -> None:
        if not self.nodes:
            self.nodes = [None] * len(self.bundles)

    def record(self) -> dict[str, object]:
        """This group as ``placement_group_table()`` shows it (Ray's fields)."""
        return {
            "placement_group_id": self.pg_id,
            "name": self.name,
            "bundles": {i: dict(b) for i, b in enumerate(self.bundles)},
            "bundles_to_node_id": {i: n for i, n in enumerate(self.nodes) if n is not None},
            "strategy": self.strategy,
            "state": self.state,
            "stats": {"scheduling_state": self.state},
        }


@dataclass
class NodeRoom:
    totals: Fixed
    reserved: Fixed = field(default_factory=dict)
    busy: Fixed = field(default_factory=dict)  # used outside any group (reported by the node)
    order: int = 0

    def free(self) -> Fixed:
        out = dict(self.totals)
        _add(out, self.reserved, -1)
        _add(out, self.busy, -1)
        return out


@dataclass(frozen=True)
class Change:
    """One step the nodes must apply: ``commit`` or ``release`` bundle ``index`` of ``pg_id``
    on ``node``."""

    op: str
    pg_id: str
    index: int
    node: str
    bundle: tuple[tuple[str, float], ...]


class PlacementTable:
    """Every placement group of a cluster and the node reservations they hold."""

    def __init__(self) -> None:
        self.groups: dict[str, Group] = {}
        self.nodes: dict[str, NodeRoom] = {}
        self._joined = 0

    # ---- nodes

    def add_node(self, node_id: str, totals: Mapping[str, float]) -> list[Change]:
        """A node joined (or reported new totals): pending groups may fit now."""
        room = self.nodes.get(node_id)
        if room is None:
            self._joined += 1
            self.nodes[node_id] = NodeRoom(_fixed(totals), order=self._joined)
        else:
            room.totals = _fixed(totals)
        return self.schedule()

    def set_busy(self, node_id: str, busy: Mapping[str, float]) -> None:
        """What the node's work outside groups holds now (a group only takes what is free)."""
        room = self.nodes.get(node_id)
        if room is not None:
            room.busy = _fixed(busy)

    def remove_node(self, node_id: str) -> list[Change]:
        """A node died: its bundles are lost, their groups go RESCHEDULING, and whatever fits
        elsewhere is placed again at once (the changes returned are only commits on live
        nodes; the dead node's reservations went with it)."""
        if self.nodes.pop(node_id, None) is None:
            return []
        for g in self.groups.values():
            if g.state == REMOVED or node_id not in g.nodes:
                continue
            g.nodes = [None if n == node_id else n for n in g.nodes]
            g.state = RESCHEDULING
        return self.schedule()

    # ---- groups

    def create(
        self,
        pg_id: str,
        bundles: list[dict[str, float]],
        strategy: str,
        name: str = "",
        lifetime: str | None = None,
        owner: str = "",
    ) -> list[Change]:
        """Add a group (PENDING) and place it if it fits now.

        Raises:
            ValueError: bad bundles or strategy, a name already taken, a known id.
        """
        bundles = validate_bundles(bundles, strategy)
        if lifetime not in (None, "detached"):
            raise ValueError(f"lifetime must be None or 'detached', got {lifetime!r}")
        if pg_id in self.groups:
            raise ValueError(f"placement group {pg_id} exists already")
        if name and self.by_name(name) is not None:
            raise ValueError(f"a placement group named {name!r} exists already")
        self.groups[pg_id] = Group(pg_id, bundles, strategy, name, lifetime, owner)
        return self.schedule()

    def remove(self, pg_id: str) -> list[Change]:
        """Remove a group: its reservations are released (idempotent).

        Raises:
            KeyError: no such group.
        """
        g = self.groups[pg_id]
        if g.state == REMOVED:
            return []
        out = []
        for i, n in enumerate(g.nodes):
            if n is not None:
                self._unreserve(n, g.bundles[i])
                out.append(Change("release", pg_id, i, n, tuple(sorted(g.bundles[i].items()))))
        g.nodes = [None] * len(g.bundles)
        g.state = REMOVED
        return out + self.schedule()

    def remove_owned_by(self, owner: str) -> list[Change]:
        """The owner (a job) ended: its groups that are not detached go."""
        out: list[Change] = []
        for g in list(self.groups.values()):
            if g.owner == owner and g.lifetime != "detached" and g.state != REMOVED:
                out += self.remove(g.pg_id)
        return out

    def by_name(self, name: str) -> Group | None:
        for g in self.groups.values():
            if g.name == name and g.state != REMOVED:
                return g
        return None

    # ---- decisions

    def schedule(self) -> list[Change]:
        """Place every group waiting for room, oldest first; each group entirely or not at
        all. Returns the commits to apply."""
        out: list[Change] = []
        for g in self.groups.values():
            if g.state not in (PENDING, RESCHEDULING):
                continue
            plan = self._plan(g)
            if plan is None:
                continue
            for i, n in plan.items():
                g.nodes[i] = n
                _add(self.nodes[n].reserved, _fixed(g.bundles[i]))
                out.append(Change("commit", g.pg_id, i, n, tuple(sorted(g.bundles[i].items()))))
            g.state = CREATED
        return out

    def _unreserve(self, node: str, bundle: Mapping[str, float]) -> None:
        room = self.nodes.get(node)
        if room is not None:
            _add(room.reserved, _fixed(bundle), -1)

    def _plan(self, g: Group) -> dict[int, str] | None:
        todo = [i for i, n in enumerate(g.nodes) if n is None]
        free = {nid: r.free() for nid, r in self.nodes.items()}
        order = sorted(self.nodes, key=lambda nid: self.nodes[nid].order)
        placed = [n for n in g.nodes if n is not None]
        need = {i: _fixed(g.bundles[i]) for i in todo}
        if g.strategy in ("STRICT_PACK", "PACK"):  # PACK: one node when one fits them all
            total: Fixed = {}
            for i in todo:
                _add(total, need[i])
            targets = placed[:1] if g.strategy == "STRICT_PACK" and placed else placed + order
            for nid in targets:
                if nid in free and _fits(total, free[nid]):
                    return {i: nid for i in todo}
            if g.strategy == "STRICT_PACK":
                return None
        if g.strategy == "STRICT_SPREAD":
            return _match(todo, need, [n for n in order if n not in placed], free)
        plan: dict[int, str] = {}
        used: dict[str, int] = {}
        for n in placed:
            used[n] = used.get(n, 0) + 1
        # Largest bundles first: they are the hardest to fit.
        for i in sorted(todo, key=lambda i: -sum(need[i].values())):
            fits = [n for n in order if _fits(need[i], free[n])]
            if not fits:
                return None
            if g.strategy == "PACK":  # onto the nodes the group uses already, then in order
                best = max(fits, key=lambda n: (used.get(n, 0), -self.nodes[n].order))
            else:  # SPREAD: the node holding fewest of the group's bundles
                best = min(fits, key=lambda n: (used.get(n, 0), self.nodes[n].order))
            plan[i] = best
            used[best] = used.get(best, 0) + 1
            _add(free[best], need[i], -1)
        return plan

    # ---- checks

    def validate(self) -> None:
        reserved: dict[str, Fixed] = {nid: {} for nid in self.nodes}
        names: set[str] = set()
        for g in self.groups.values():
            assert len(g.nodes) == len(g.bundles), g
            placed = [n for n in g.nodes if n is not None]
            if g.state in (PENDING, REMOVED):
                assert not placed, f"{g.pg_id} is {g.state} but holds nodes {placed}"
            elif g.state == CREATED:
                assert len(placed) == len(g.bundles), f"{g.pg_id} CREATED with unplaced bundles"
            elif g.state == RESCHEDULING:
                assert len(placed) < len(g.bundles), f"{g.pg_id} RESCHEDULING with all placed"
            else:
                raise AssertionError(f"{g.pg_id}: unknown state {g.state}")
            if g.state != REMOVED and g.name:
                assert g.name not in names, f"two groups named {g.name!r}"
                names.add(g.name)
            if g.strategy == "STRICT_PACK" and g.state == CREATED:
                assert len(set(placed)) == 1, f"STRICT_PACK {g.pg_id} on {set(placed)}"
            if g.strategy == "STRICT_SPREAD":
                assert len(set(placed)) == len(placed), f"STRICT_SPREAD {g.pg_id} doubled up"
            for i, n in enumerate(g.nodes):
                if n is not None:
                    assert n in self.nodes, f"{g.pg_id} bundle {i} on unknown node {n}"
                    _add(reserved[n], _fixed(g.bundles[i]))
        for nid, room in self.nodes.items():
            assert room.reserved == reserved[nid], f"{nid}: {room.reserved} != {reserved[nid]}"
            for k, v in room.reserved.items():
                assert v <= room.totals.get(k, 0), f"{nid}: {k} reserved {v} > total"

    def records(self, ids: Iterable[str] | None = None) -> dict[str, dict[str, object]]:
        pick = self.groups if ids is None else {i: self.groups[i] for i in ids}
        return {pid: g.record() for pid, g in pick.items()}


def _match(
    todo: list[int], need: dict[int, Fixed], nodes: list[str], free: dict[str, Fixed]
) -> dict[int, str] | None:
    """One distinct node per bundle (a bipartite matching, by augmenting paths)."""
    owner: dict[str, int] = {}

    def assign(i: int, seen: set[str]) -> bool:
        for n in nodes:
            if n in seen or not _fits(need[i], free[n]):
                continue
            seen.add(n)
            if n not in owner or assign(owner[n], seen):
                owner[n] = i
                return True
        return False

    for i in todo:
        if not assign(i, set()):
            return None
    return {i: n for n, i in owner.items()}


def commit_on(pool: ResourcePool, pg_hex: str, index: int, bundle: Mapping[str, float]) -> None:
    """A node takes a committed bundle: its amounts leave the node's free resources (running
    work outside the group may hold them a little longer: the pool is briefly oversubscribed
    then, and new work outside waits) and come back as the bundle's own resources."""
    for k, v in _fixed(bundle).items():
        pool.available[k] = pool.available.get(k, 0) - v
    for k, v in _fixed(bundle_resources(pg_hex, index, bundle)).items():
        pool.total[k] = pool.total.get(k, 0) + v
        pool.available[k] = pool.available.get(k, 0) + v


def release_on(pool: ResourcePool, pg_hex: str, index: int, bundle: Mapping[str, float]) -> None:
    """A node gives a bundle back. Work still holding the bundle's resources (being killed)
    leaves them below zero until it ends; the names go once nothing holds them."""
    for k, v in _fixed(bundle_resources(pg_hex, index, bundle)).items():
        pool.total[k] = pool.total.get(k, 0) - v
        pool.available[k] = pool.available.get(k, 0) - v
        if pool.total[k] <= 0:
            del pool.total[k]
        if pool.available[k] == 0:
            del pool.available[k]
    for k, v in _fixed(bundle).items():
        pool.available[k] = pool.available.get(k, 0) + v


def group_of(resources: Mapping[str, float]) -> str | None:
    """The group a task's rewritten request runs in (None: none)."""
    for k in resources:
        if k.startswith(BUNDLE_MARK + "_group_"):
            return k.rsplit("_", 1)[1]
    return None


__all__ = [
    "CREATED",
    "PENDING",
    "REMOVED",
    "RESCHEDULING",
    "STRATEGIES",
    "Change",
    "Group",
    "PlacementTable",
    "bundle_resources",
    "commit_on",
    "group_of",
    "release_on",
    "task_resources",
    "validate_bundles",
]
