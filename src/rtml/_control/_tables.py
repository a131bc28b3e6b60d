"""The control-plane tables: small state machines that write every change through to storage.

::

    ControlPlane ──▶ NodeTable, JobTable,      rows cached in memory,  ──▶ storage tables
                     ActorTable, ObjectTable   rebuilt by scan at start    nodes   index → NodeInfo
                                                                           jobs    id → JobInfo
                                                                           actors  id → ActorInfo
                                                                           objects oid → ObjectEntry
                 ──▶ TaskTable, FunctionTable, storage only (big,      ──▶ tasks   id → TaskEntry
                     KvTable                   rarely read)                functions id → blob
                                                                           kv      "ns\\0key" → bytes
                 ──▶ Counters                  node index, job id      ──▶ meta    name → decimal

Tables read the rows they serve often (nodes, jobs, actors, object locations) from memory and
write each change through to storage; the big, rarely-read ones (lineage, function blobs, kv)
live in storage only. Nothing but heartbeat figures is kept only in memory, so a control plane
rebuilt on the same durable storage sees the same cluster.

Tables raise ``ValueError`` for requests that are wrong (unknown ids, a taken actor name, bad
argument types): the caller's fault, reported back to it. They do no I/O but the storage's.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from typing import Any

from rtml._control._records import (
    ACTOR_STATES,
    ACTOR_TRANSITIONS,
    ALIVE,
    DEAD,
    FINISHED,
    ActorInfo,
    Ident,
    JobInfo,
    NodeInfo,
    ObjectEntry,
    TaskEntry,
    dumps,
    key_of,
    loads,
)
from rtml._control._storage import Storage


def _check_str(value: Any, what: str, *, empty: bool = False) -> str:
    if not isinstance(value, str) or (not empty and not value):
        raise ValueError(f"{what} must be a non-empty str, got {value!r}")
    return value


def _check_amounts(value: Any, what: str) -> dict[str, float]:
    if not isinstance(value, dict):
        raise ValueError(f"{what} must be a dict of name -> amount, got {value!r}")
    out: dict[str, float] = {}
    for k, v in value.items():
        if not isinstance(k, str) or isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ValueError(f"{what} must map str to numbers, got {k!r}: {v!r}")
        out[k] = float(v)
    return out


def _check_bytes(value: Any, what: str) -> bytes:
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise ValueError(f"{what} must be bytes, got {type(value).__name__}")
    return bytes(value)


def _check_dict(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"{what} must be a dict, got {value!r}")
    return dict(value)


def _same_rows(table: str, storage: Storage, cached: dict[str, Any]) -> None:
    """Invariant: what the table serves from memory is exactly what storage holds."""
    stored = {k: loads(v) for k, v in storage.scan(table)}
    assert stored.keys() == cached.keys(), (
        f"{table}: storage and memory disagree on keys: "
        f"only stored {sorted(stored.keys() - cached.keys())[:5]}, "
        f"only cached {sorted(cached.keys() - stored.keys())[:5]}"
    )
    for k, rec in cached.items():
        assert stored[k] == rec, f"{table}[{k}]: stored {stored[k]!r} != cached {rec!r}"


# ---------------------------------------------------------------------------- counters
class Counters:
    """Named counters that only go up, persisted so a restart never hands out a number twice."""

    TABLE = "meta"

    def __init__(self, storage: Storage) -> None:
        self._storage = storage
        self._values = {k: int(v) for k, v in storage.scan(self.TABLE)}

    def peek(self, name: str) -> int:
        return self._values.get(name, 0)

    def next(self, name: str) -> int:
        return self.raise_to(name, self._values.get(name, 0) + 1)

    def raise_to(self, name: str, n: int) -> int:
        """Make ``name`` at least ``n`` (a number handed out elsewhere); returns it."""
        n = max(n, self._values.get(name, 0))
        self._storage.put(self.TABLE, name, str(n).encode())  # persisted before it is used
        self._values[name] = n
        return n

    def validate(self) -> None:
        stored = {k: int(v) for k, v in self._storage.scan(self.TABLE)}
        assert stored == self._values, f"counters: stored {stored} != cached {self._values}"


# ---------------------------------------------------------------------------- nodes
def _durable_node(rec: NodeInfo) -> NodeInfo:
    """A node row as stored: without the figures each heartbeat replaces."""
    return replace(rec, available={}, load={}, last_heartbeat=None)


class NodeTable:
    """Nodes by incarnation: ``register`` → ALIVE, heartbeats, timeouts or ``mark_dead`` → DEAD.

    A node id names a machine's node manager; its incarnations are told apart by ``index``, a
    small int unique for the life of this control plane (a dead node that registers again joins
    as a new node with a new index). After a restart every node recovered as ALIVE has
    ``last_heartbeat=None`` and no ``available`` figures: the first ``check_timeouts`` starts
    its grace period, so nodes get a full timeout to reconnect.
    """

    TABLE = "nodes"

    def __init__(self, storage: Storage, counters: Counters) -> None:
        self._storage = storage
        self._counters = counters
        self._rows: dict[int, NodeInfo] = {}
        self._current: dict[str, int] = {}  # node id -> index of its latest incarnation
        for _, blob in storage.scan(self.TABLE):
            rec = loads(blob)
            self._rows[rec.index] = rec
        for index in sorted(self._rows):
            self._current[self._rows[index].node_id] = index

    def _store(self, rec: NodeInfo) -> None:
        self._storage.put(self.TABLE, key_of(rec.index), dumps(_durable_node(rec)))
        self._rows[rec.index] = rec

    def register(self, node_id: str, info: dict[str, Any], now: float) -> tuple[NodeInfo, bool]:
        """Add a node, or refresh the registration of a live one (a reconnect).

        Args:
            info: ``address`` (str), ``resources`` (name -> amount), optional ``labels``
                (str -> str), optional ``index``: the index a node had before this control
                plane lost its state (memory backend restarted), kept for a new incarnation
                if no other incarnation has it (the node's ids embed it); other keys are kept
                in ``extra``.
        Returns:
            The record and whether it is a new incarnation.
        """
        _check_str(node_id, "node_id")
        info = _check_dict(info, "node info")
        address = _check_str(info.pop("address", None), "node address")
        resources = _check_amounts(info.pop("resources", {}), "node resources")
        labels = _check_dict(info.pop("labels", None) or {}, "node labels")
        was = info.pop("index", None)
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in labels.items()):
            raise ValueError(f"node labels must map str to str, got {labels!r}")
        cur = self.get(node_id)
        if cur is not None and cur.alive:
            rec = replace(
                cur,
                address=address,
                resources=resources,
                labels=labels,
                extra=info,
                last_heartbeat=now,
            )
            self._store(rec)
            return rec, False
        if (
            isinstance(was, int)
            and not isinstance(was, bool)
            and was > 0
            and (was not in self._rows)
        ):
            index = was
            self._counters.raise_to("node_index", was)
        else:
            index = self._counters.next("node_index")
        rec = NodeInfo(
            node_id,
            index,
            address,
            resources,
            labels,
            ALIVE,
            available=dict(resources),
            last_heartbeat=now,
            extra=info,
        )
        self._store(rec)
        self._current[node_id] = index
        return rec, True

    def heartbeat(
        self, node_id: str, available: dict[str, Any], load: dict[str, Any], now: float
    ) -> bool:
        """Record a live node's figures. False: unknown or declared dead (re-register)."""
        index = self._current.get(node_id)
        if index is None or not self._rows[index].alive:
            return False
        load = _check_dict(load, "load")
        if not all(isinstance(k, str) for k in load):
            raise ValueError(f"load must be a dict with str keys, got {load!r}")
        self._rows[index] = replace(
            self._rows[index],
            last_heartbeat=now,
            load=load,
            available=_check_amounts(available, "available"),
        )
        return True

    def mark_dead(self, node_id: str, cause: str) -> NodeInfo | None:
        """Declare the live incarnation of ``node_id`` dead; None if it was not alive."""
        rec = self.get(node_id)
        if rec is None or not rec.alive:
            return None
        rec = replace(rec, state=DEAD, death_cause=str(cause), available={}, load={})
        self._store(rec)
        return rec

    def check_timeouts(self, now: float, timeout: float) -> list[str]:
        """Mark dead every live node silent for more than ``timeout``; returns their ids."""
        dead: list[str] = []
        for node_id, index in list(self._current.items()):
            rec = self._rows[index]
            if not rec.alive:
                continue
            if rec.last_heartbeat is None:  # recovered after a restart: its grace starts now
                self._rows[index] = replace(rec, last_heartbeat=now)
            elif now - rec.last_heartbeat > timeout:
                self.mark_dead(node_id, f"no heartbeat for {timeout:g} s")
                dead.append(node_id)
        return dead

    def get(self, node_id: str) -> NodeInfo | None:
        """The latest incarnation of ``node_id`` (alive or dead), or None."""
        index = self._current.get(node_id)
        return None if index is None else self._rows[index]

    def by_index(self, index: int) -> NodeInfo | None:
        return self._rows.get(index)

    def records(self, alive_only: bool = False) -> list[NodeInfo]:
        return [r for _, r in sorted(self._rows.items()) if r.alive or not alive_only]

    def validate(self) -> None:
        alive_ids = [r.node_id for r in self._rows.values() if r.alive]
        assert len(alive_ids) == len(set(alive_ids)), "a node id has two live incarnations"
        for node_id, index in self._current.items():
            rec = self._rows[index]
            assert rec.node_id == node_id
            assert rec.index == index
            assert all(r.index <= index for r in self._rows.values() if r.node_id == node_id), (
                f"{node_id}: the current incarnation is not the latest"
            )
        assert set(self._current) == {r.node_id for r in self._rows.values()}
        assert all(i <= self._counters.peek("node_index") for i in self._rows), (
            "a node index beyond the counter could be handed out again"
        )
        _same_rows(
            self.TABLE, self._storage, {key_of(i): _durable_node(r) for i, r in self._rows.items()}
        )


# ---------------------------------------------------------------------------- jobs
class JobTable:
    """Drivers' jobs: ids from a persisted counter, RUNNING until ``finish``."""

    TABLE = "jobs"

    def __init__(self, storage: Storage, counters: Counters) -> None:
        self._storage = storage
        self._counters = counters
        self._rows: dict[int, JobInfo] = {}
        for _, blob in storage.scan(self.TABLE):
            rec = loads(blob)
            self._rows[rec.job_id] = rec

    def _store(self, rec: JobInfo) -> None:
        self._storage.put(self.TABLE, key_of(rec.job_id), dumps(rec))
        self._rows[rec.job_id] = rec

    def next_id(self) -> int:
        return self._counters.next("job_id")

    def add(self, job_id: int, info: dict[str, Any]) -> JobInfo:
        """Record a job. ``info``: ``namespace``, ``driver_pid``, ``driver_address``,
        ``start_time``; other keys are kept in ``extra``."""
        if isinstance(job_id, bool) or not isinstance(job_id, int):
            raise ValueError(f"a job id is an int (from next_job_id), got {job_id!r}")
        if not 1 <= job_id <= self._counters.peek("job_id"):
            raise ValueError(f"job id {job_id} was not handed out by next_job_id")
        if job_id in self._rows:
            raise ValueError(f"job {job_id} is already registered")
        info = _check_dict(info, "job info")
        rec = JobInfo(
            job_id,
            _check_str(info.pop("namespace", None), "job namespace"),
            driver_pid=info.pop("driver_pid", None),
            driver_address=info.pop("driver_address", None),
            start_time=info.pop("start_time", None),
            extra=info,
        )
        self._store(rec)
        return rec

    def finish(self, job_id: int, end_time: float) -> tuple[JobInfo, bool]:
        """Mark a job finished; returns the record and whether it changed (finishing twice is
        harmless)."""
        rec = self._rows.get(job_id)
        if rec is None:
            raise ValueError(f"no job {job_id!r}")
        if rec.state == FINISHED:
            return rec, False
        rec = replace(rec, state=FINISHED, end_time=end_time)
        self._store(rec)
        return rec, True

    def get(self, job_id: int) -> JobInfo | None:
        return self._rows.get(job_id)

    def records(self) -> list[JobInfo]:
        return [r for _, r in sorted(self._rows.items())]

    def validate(self) -> None:
        assert all(1 <= j <= self._counters.peek("job_id") for j in self._rows), (
            "a job id beyond the counter could be handed out again"
        )
        _same_rows(self.TABLE, self._storage, {key_of(j): r for j, r in self._rows.items()})


# ---------------------------------------------------------------------------- actors
class ActorTable:
    """Actors through PENDING → ALIVE ⇄ RESTARTING → DEAD, with unique (namespace, name)."""

    TABLE = "actors"

    def __init__(self, storage: Storage) -> None:
        self._storage = storage
        self._rows: dict[Ident, ActorInfo] = {}
        self._names: dict[tuple[str, str], Ident] = {}  # names held by actors not yet DEAD
        for _, blob in storage.scan(self.TABLE):
            rec = loads(blob)
            self._rows[rec.actor_id] = rec
            if rec.name is not None and rec.state != DEAD:
                self._names[(rec.namespace, rec.name)] = rec.actor_id

    def _store(self, rec: ActorInfo) -> None:
        self._storage.put(self.TABLE, key_of(rec.actor_id), dumps(rec))
        self._rows[rec.actor_id] = rec

    def register(self, actor_id: Ident, info: dict[str, Any]) -> ActorInfo:
        """Record a new actor (PENDING).

        Args:
            info: ``namespace`` (str), optional ``name``, ``job_id``, ``class_name``,
                ``detached``, ``max_restarts``; other keys are kept in ``extra``.
        Raises:
            ValueError: the id is taken, or a live actor holds the name in that namespace.
        """
        key_of(actor_id)  # type check
        if actor_id in self._rows:
            raise ValueError(f"actor {actor_id!r} is already registered")
        info = _check_dict(info, "actor info")
        namespace = _check_str(info.pop("namespace", None), "actor namespace", empty=True)
        name = info.pop("name", None)
        if name is not None:
            _check_str(name, "actor name")
            holder = self._names.get((namespace, name))
            if holder is not None:
                raise ValueError(
                    f"an actor named {name!r} already exists in namespace {namespace!r} "
                    f"(actor {holder!r}); pick another name or get the existing one"
                )
        rec = ActorInfo(
            actor_id,
            namespace,
            name,
            job_id=info.pop("job_id", None),
            class_name=str(info.pop("class_name", "")),
            detached=bool(info.pop("detached", False)),
            max_restarts=int(info.pop("max_restarts", 0)),
            extra=info,
        )
        self._store(rec)
        if name is not None:
            self._names[(namespace, name)] = actor_id
        return rec

    _FIELDS = ("node_id", "pid", "address", "death_cause")

    def update(
        self, actor_id: Ident, state: str, fields: dict[str, Any] | None = None
    ) -> ActorInfo:
        """Move an actor to ``state``, setting any of ``node_id``, ``pid``, ``address``,
        ``death_cause`` (and ``owner``, kept in ``extra``). Entering RESTARTING counts a restart; DEAD frees its name and is final.
        """
        rec = self._rows.get(actor_id)
        if rec is None:
            raise ValueError(f"no actor {actor_id!r}")
        if state not in ACTOR_STATES:
            raise ValueError(f"an actor state is one of {ACTOR_STATES}, got {state!r}")
        if state not in ACTOR_TRANSITIONS[rec.state]:
            raise ValueError(f"actor {actor_id!r} cannot go from {rec.state} to {state}")
        changes = _check_dict(fields or {}, "actor fields")
        unknown = set(changes) - {*self._FIELDS, "owner"}
        if unknown:
            raise ValueError(f"actor fields are {self._FIELDS} and owner, got {sorted(unknown)}")
        if "owner" in changes:  # the node that restarts it (another one if its creator died)
            changes["extra"] = {**rec.extra, "owner": changes.pop("owner")}
        restarts = rec.num_restarts + (state == "RESTARTING" and rec.state != "RESTARTING")
        rec = replace(rec, state=state, num_restarts=restarts, **changes)  # type: ignore[arg-type]
        self._store(rec)
        if state == DEAD and rec.name is not None:
            self._names.pop((rec.namespace, rec.name), None)
        return rec

    def remove(self, actor_id: Ident) -> bool:
        rec = self._rows.pop(actor_id, None)
        if rec is None:
            return False
        if rec.name is not None and self._names.get((rec.namespace, rec.name)) == actor_id:
            del self._names[(rec.namespace, rec.name)]
        self._storage.delete(self.TABLE, key_of(actor_id))
        return True

    def get(self, actor_id: Ident) -> ActorInfo | None:
        return self._rows.get(actor_id)

    def lookup(self, namespace: str, name: str) -> ActorInfo | None:
        """The live (not DEAD) actor holding ``name`` in ``namespace``."""
        actor_id = self._names.get((namespace, name))
        return None if actor_id is None else self._rows[actor_id]

    def records(self, namespace: str | None = None) -> list[ActorInfo]:
        return [r for r in self._rows.values() if namespace is None or r.namespace == namespace]

    def on_node(self, node_id: str) -> list[ActorInfo]:
        """Actors not yet DEAD placed on ``node_id`` (what a node's death concerns)."""
        return [r for r in self._rows.values() if r.node_id == node_id and r.state != DEAD]

    def validate(self) -> None:
        names = {
            (r.namespace, r.name): r.actor_id
            for r in self._rows.values()
            if r.name is not None and r.state != DEAD
        }
        assert names == self._names, f"actor name index {self._names} != rows {names}"
        assert all(r.state in ACTOR_STATES for r in self._rows.values())
        _same_rows(self.TABLE, self._storage, {key_of(a): r for a, r in self._rows.items()})


# ---------------------------------------------------------------------------- objects
class ObjectTable:
    """The object directory: which nodes hold a copy of each object, and its size.

    Each change is computed first, written to storage, and only then applied in memory, so a
    storage failure leaves memory and storage agreeing.
    """

    TABLE = "objects"

    def __init__(self, storage: Storage) -> None:
        self._storage = storage
        self._rows: dict[Ident, ObjectEntry] = {}
        self._by_node: dict[str, set[Ident]] = {}
        for _, blob in storage.scan(self.TABLE):
            self._apply(loads(blob))

    def _apply(self, rec: ObjectEntry) -> None:
        old = self._rows.get(rec.oid)
        self._rows[rec.oid] = rec
        for node_id in rec.nodes:
            self._by_node.setdefault(node_id, set()).add(rec.oid)
        for node_id in old.nodes if old is not None else ():
            if node_id not in rec.nodes:
                self._discard(node_id, rec.oid)

    def _discard(self, node_id: str, oid: Ident) -> None:
        held = self._by_node.get(node_id)
        if held is not None:
            held.discard(oid)
            if not held:
                del self._by_node[node_id]

    def _commit(self, recs: list[ObjectEntry]) -> list[ObjectEntry]:
        if len(recs) == 1:
            self._storage.put(self.TABLE, key_of(recs[0].oid), dumps(recs[0]))
        elif recs:
            self._storage.put_many(self.TABLE, [(key_of(r.oid), dumps(r)) for r in recs])
        for rec in recs:
            self._apply(rec)
        return recs

    @staticmethod
    def _check(item: Any) -> tuple[Ident, str, int, Any]:
        if not isinstance(item, (tuple, list)) or len(item) not in (3, 4):
            raise ValueError(f"a location is (oid, node_id, size[, owner]), got {item!r}")
        oid, node_id, size = item[0], item[1], item[2]
        key_of(oid)
        _check_str(node_id, "node_id")
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise ValueError(f"an object size is an int >= 0, got {size!r}")
        return oid, node_id, size, item[3] if len(item) == 4 else None

    def add_locations(self, items: Iterable[Any]) -> list[ObjectEntry]:
        """Batch of ``(oid, node_id, size[, owner])`` (all checked before any is applied),
        written in one storage batch; returns the entries that changed."""
        checked = [self._check(item) for item in items]
        changed: dict[Ident, ObjectEntry] = {}
        for oid, node_id, size, owner in checked:
            rec = changed.get(oid) or self._rows.get(oid)
            if rec is None:
                rec = ObjectEntry(oid, size, (node_id,), owner)
            elif node_id in rec.nodes:
                continue
            else:  # the first size reported stands: every copy of an immutable object is equal
                rec = replace(
                    rec, nodes=(*rec.nodes, node_id), owner=rec.owner if owner is None else owner
                )
            changed[oid] = rec
        return self._commit(list(changed.values()))

    def add_location(
        self, oid: Ident, node_id: str, size: int, owner: Any = None
    ) -> ObjectEntry | None:
        """``node_id`` holds a copy of ``oid``; returns the entry, or None if already known."""
        recs = self.add_locations([(oid, node_id, size, owner)])
        return recs[0] if recs else None

    def remove_location(self, oid: Ident, node_id: str) -> ObjectEntry | None:
        """``node_id`` no longer holds ``oid`` (evicted, not spilled); None if it did not."""
        rec = self._rows.get(oid)
        if rec is None or node_id not in rec.nodes:
            return None
        return self._commit([replace(rec, nodes=tuple(n for n in rec.nodes if n != node_id))])[0]

    def drop_node(self, node_id: str) -> list[ObjectEntry]:
        """Forget every copy on ``node_id`` (it died); returns the entries that changed."""
        recs = []
        for oid in sorted(self._by_node.get(node_id, ()), key=key_of):
            rec = self._rows[oid]
            recs.append(replace(rec, nodes=tuple(n for n in rec.nodes if n != node_id)))
        return self._commit(recs)

    def remove(self, oids: Iterable[Ident]) -> list[Ident]:
        """Forget objects entirely (freed); returns those that were known."""
        gone = list(dict.fromkeys(o for o in oids if o in self._rows))
        if gone:
            self._storage.delete_many(self.TABLE, [key_of(o) for o in gone])
        for oid in gone:
            for node_id in self._rows.pop(oid).nodes:
                self._discard(node_id, oid)
        return gone

    def get(self, oid: Ident) -> ObjectEntry | None:
        return self._rows.get(oid)

    def locations(self, oid: Ident) -> tuple[int, tuple[str, ...]] | None:
        """``(size, node ids)``; empty node ids: every copy is lost; None: unknown object."""
        rec = self._rows.get(oid)
        return None if rec is None else (rec.size, rec.nodes)

    def on_node(self, node_id: str) -> set[Ident]:
        return set(self._by_node.get(node_id, ()))

    def located_nodes(self) -> list[str]:
        """Nodes holding at least one copy."""
        return list(self._by_node)

    def __len__(self) -> int:
        return len(self._rows)

    def validate(self) -> None:
        by_node: dict[str, set[Ident]] = {}
        for oid, rec in self._rows.items():
            assert rec.oid == oid
            assert len(rec.nodes) == len(set(rec.nodes)), f"{rec.oid!r}: duplicate locations"
            assert rec.size >= 0
            for node_id in rec.nodes:
                by_node.setdefault(node_id, set()).add(rec.oid)
        assert by_node == self._by_node, "object directory: node index disagrees with rows"
        _same_rows(self.TABLE, self._storage, {key_of(o): r for o, r in self._rows.items()})


# ---------------------------------------------------------------------------- storage-only tables
class TaskTable:
    """Lineage: task specs as submitted (opaque blobs), by task id, until released."""

    TABLE = "tasks"

    def __init__(self, storage: Storage) -> None:
        self._storage = storage

    def add_many(self, items: Iterable[tuple[Any, ...]]) -> int:
        """Batch of ``(task_id, spec_blob, owner)``, written in one storage batch."""
        rows = []
        for item in items:
            if not isinstance(item, (tuple, list)) or len(item) != 3:
                raise ValueError(f"a task is (task_id, spec, owner), got {item!r}")
            task_id, spec, owner = item
            rows.append(
                (
                    key_of(task_id),
                    dumps(TaskEntry(task_id, _check_bytes(spec, "a task spec"), owner)),
                )
            )
        self._storage.put_many(self.TABLE, rows)
        return len(rows)

    def remove_many(self, task_ids: Iterable[Ident]) -> int:
        keys = [key_of(t) for t in task_ids]
        self._storage.delete_many(self.TABLE, keys)
        return len(keys)

    def get(self, task_id: Ident) -> TaskEntry | None:
        blob = self._storage.get(self.TABLE, key_of(task_id))
        return None if blob is None else loads(blob)

    def remove_owner(self, owner: Any) -> int:
        """Release the lineage of every task ``owner`` submitted (the owner died). Scans."""
        keys = [k for k, blob in self._storage.scan(self.TABLE) if loads(blob).owner == owner]
        self._storage.delete_many(self.TABLE, keys)
        return len(keys)

    def validate(self) -> None:
        for key, blob in self._storage.scan(self.TABLE):
            rec = loads(blob)
            assert isinstance(rec, TaskEntry) and key_of(rec.task_id) == key, key
            assert isinstance(rec.spec, bytes)


class FunctionTable:
    """Pickled functions and classes by function id, for workers on every node."""

    TABLE = "functions"

    def __init__(self, storage: Storage) -> None:
        self._storage = storage

    def put(self, fn_id: str, blob: bytes) -> None:
        self._storage.put(
            self.TABLE, key_of(_check_str(fn_id, "fn_id")), _check_bytes(blob, "a function blob")
        )

    def get(self, fn_id: str) -> bytes | None:
        return self._storage.get(self.TABLE, key_of(_check_str(fn_id, "fn_id")))

    def validate(self) -> None:
        for key, blob in self._storage.scan(self.TABLE):
            assert key.startswith("s") and isinstance(blob, bytes), key


class KvTable:
    """A small key-value store for users and libraries, one key space per namespace."""

    TABLE = "kv"

    def __init__(self, storage: Storage) -> None:
        self._storage = storage

    @staticmethod
    def _namespace(namespace: str) -> str:
        _check_str(namespace, "kv namespace", empty=True)
        if "\0" in namespace:
            raise ValueError("a kv namespace cannot contain NUL")
        return namespace

    def _key(self, namespace: str, key: str) -> str:
        return f"{self._namespace(namespace)}\0{_check_str(key, 'kv key')}"

    def put(self, namespace: str, key: str, value: bytes, overwrite: bool = True) -> bool:
        """Store ``value``; returns True if the key is new. With ``overwrite=False`` an
        existing value is kept."""
        skey = self._key(namespace, key)
        value = _check_bytes(value, "a kv value")
        existed = self._storage.get(self.TABLE, skey) is not None
        if overwrite or not existed:
            self._storage.put(self.TABLE, skey, value)
        return not existed

    def get(self, namespace: str, key: str) -> bytes | None:
        return self._storage.get(self.TABLE, self._key(namespace, key))

    def delete(self, namespace: str, key: str) -> bool:
        skey = self._key(namespace, key)
        existed = self._storage.get(self.TABLE, skey) is not None
        if existed:
            self._storage.delete(self.TABLE, skey)
        return existed

    def keys(self, namespace: str, prefix: str = "") -> list[str]:
        """Keys of ``namespace`` starting with ``prefix``, sorted. Scans the table."""
        start = f"{self._namespace(namespace)}\0{_check_str(prefix, 'kv prefix', empty=True)}"
        return sorted(
            k[len(namespace) + 1 :]
            for k, _ in self._storage.scan(self.TABLE)
            if k.startswith(start)
        )

    def validate(self) -> None:
        for key, value in self._storage.scan(self.TABLE):
            assert "\0" in key and isinstance(value, bytes), key
