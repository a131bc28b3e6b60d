"""The control plane (GCS) as one pure state machine: tables + pub/sub + the task event log.

::

    request (subscriber, op, args) ──▶ ControlPlane.handle ──▶ op_<name>(subscriber, *args)
                                           │                      │ tables write through to storage
                                           │                      ▼ changes published
                                           └──────────────▶ (reply, [(subscriber, channel, msg)])
    clock tick ──▶ ControlPlane.tick ──▶ heartbeat timeouts ──▶ node deaths, lost object copies

``handle`` does no I/O but the storage's: the server (``_server.py``) is a thin shell that
turns frames into ``handle`` calls and deliveries into frames, and every behaviour here is
testable without processes or sockets. Everything the plane knows is rebuilt from the storage
on construction, except heartbeat figures (they come back with the next heartbeats), the event
log and subscriptions (clients subscribe again when they reconnect). With ``MemoryStorage``
(``durable`` False) nothing survives the process; with Redis everything else does.

Errors: a ``ValueError`` from ``handle`` is the caller's fault (unknown op or id, wrong
arguments, a taken actor name) and goes back to it as such; anything else is ours, or the
storage's (``ConnectionError`` when Redis is unreachable).
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Hashable
from typing import Any

from rtml._control._events import EventLog, EventPage, TaskEvent
from rtml._control._pubsub import (
    ACTORS,
    JOBS,
    NODES,
    Delivery,
    PubSub,
    actor_channel,
    object_channel,
)
from rtml._control._records import (
    ActorInfo,
    Ident,
    JobInfo,
    NodeInfo,
    ObjectEntry,
    TaskEntry,
)
from rtml._control._storage import Storage
from rtml._control._tables import (
    ActorTable,
    Counters,
    FunctionTable,
    JobTable,
    KvTable,
    NodeTable,
    ObjectTable,
    TaskTable,
)

DEFAULT_HEARTBEAT_TIMEOUT = 30.0
MAX_EVENTS_PER_QUERY = 10_000
# Fencing: a connection that registered (or bound itself to) a node incarnation speaks for it;
# once that incarnation is declared dead, its writes are refused with this prefix (reads stay
# allowed: a fenced node must learn what happened, and then joins again as a new node).
FENCED = "fenced:"
_FENCED_WRITES = frozenset(
    {
        "add_job",
        "finish_job",
        "put_function",
        "register_actor",
        "update_actor",
        "remove_actor",
        "add_tasks",
        "remove_tasks",
        "remove_owner_tasks",
        "add_location",
        "add_locations",
        "remove_location",
        "remove_objects",
        "add_events",
        "kv_put",
        "kv_delete",
        "node_dead",
    }
)


class ControlPlane:
    """Every control-plane table behind one ``handle(subscriber, op, args)``.

    Args:
        storage: where the tables live (``MemoryStorage``, ``RedisStorage``,
            ``ShardedStorage``); the caller closes it.
        heartbeat_timeout: seconds without a heartbeat after which ``tick`` declares a node
            dead.
        clock: monotonic seconds (replace it in tests).
        event_capacity: task events kept in memory.
    """

    def __init__(
        self,
        storage: Storage,
        *,
        heartbeat_timeout: float = DEFAULT_HEARTBEAT_TIMEOUT,
        clock: Callable[[], float] = time.monotonic,
        event_capacity: int = 100_000,
    ) -> None:
        self.storage = storage
        self.heartbeat_timeout = heartbeat_timeout
        self.clock = clock
        self.counters = Counters(storage)
        self.nodes = NodeTable(storage, self.counters)
        self.jobs = JobTable(storage, self.counters)
        self.functions = FunctionTable(storage)
        self.actors = ActorTable(storage)
        self.tasks = TaskTable(storage)
        self.objects = ObjectTable(storage)
        self.kv = KvTable(storage)
        self.events = EventLog(event_capacity)
        self.pubsub = PubSub()
        self._out: list[Delivery] = []
        self._speaks_for: dict[Hashable, int] = {}  # subscriber -> node index it registered
        self._ops: dict[str, tuple[Callable[..., Any], int, int]] = {}
        for name, fn in inspect.getmembers(self, inspect.ismethod):
            if name.startswith("op_"):
                params = list(inspect.signature(fn).parameters.values())[1:]  # after subscriber
                required = sum(p.default is inspect.Parameter.empty for p in params)
                self._ops[name[3:]] = (fn, required, len(params))

    @property
    def durable(self) -> bool:
        """Whether this plane's state survives a restart of its process."""
        return self.storage.durable

    @property
    def ops(self) -> list[str]:
        """The operation names ``handle`` accepts."""
        return sorted(self._ops)

    # ------------------------------------------------------------------ entry points
    def handle(
        self, subscriber: Hashable, op: str, args: tuple | list = ()
    ) -> tuple[Any, list[Delivery]]:
        """Run one operation for ``subscriber``; returns its reply and the publications it
        caused, as ``(subscriber, channel, message)`` deliveries.

        Raises:
            ValueError: unknown ``op``, wrong number or type of ``args``, or a request the
                tables refuse.
        """
        entry = self._ops.get(op) if isinstance(op, str) else None
        if entry is None:
            raise ValueError(f"unknown control-plane operation {op!r}")
        fn, lo, hi = entry
        if not isinstance(args, (tuple, list)) or not lo <= len(args) <= hi:
            n = len(args) if isinstance(args, (tuple, list)) else args
            want = lo if lo == hi else f"{lo} to {hi}"
            raise ValueError(f"{op} takes {want} arguments, got {n!r}")
        if op in _FENCED_WRITES:
            self._check_fence(subscriber, op, args)
        self._out = []
        try:
            reply = fn(subscriber, *args)
            return reply, self._out
        finally:
            self._out = []

    def _check_fence(self, subscriber: Hashable, op: str, args: tuple | list) -> None:
        index = self._speaks_for.get(subscriber)
        if index is None:
            return
        rec = self.nodes.by_index(index)
        if op == "node_dead" and rec is not None and args and args[0] == rec.node_id:
            return  # saying it stops: harmless, it is dead already
        if rec is not None and not rec.alive:
            raise ValueError(
                f"{FENCED} node {rec.node_id} (index {index}) was declared dead "
                f"({rec.death_cause}); its {op!r} is refused: it must stop its workers and "
                "register again as a new node"
            )

    def tick(self) -> list[Delivery]:
        """Periodic work: declare nodes dead whose heartbeats stopped; returns publications."""
        self._out = []
        try:
            for node_id in self.nodes.check_timeouts(self.clock(), self.heartbeat_timeout):
                rec = self.nodes.get(node_id)
                assert rec is not None
                self._node_died(rec)
            return self._out
        finally:
            self._out = []

    def drop_subscriber(self, subscriber: Hashable) -> None:
        """Forget a subscriber whose connection closed."""
        self.pubsub.drop(subscriber)
        self._speaks_for.pop(subscriber, None)

    def validate(self) -> None:
        """Check every table's invariants (and that memory agrees with storage)."""
        self.counters.validate()
        self.nodes.validate()
        self.jobs.validate()
        self.functions.validate()
        self.actors.validate()
        self.tasks.validate()
        self.objects.validate()
        self.kv.validate()
        self.events.validate()
        self.pubsub.validate()
        for node_id in self.objects.located_nodes():
            node = self.nodes.get(node_id)
            assert node is not None and node.alive, f"objects located on dead node {node_id}"

    # ------------------------------------------------------------------ helpers
    def _publish(self, channel: str, message: Any) -> None:
        self._out.extend(self.pubsub.publish(channel, message))

    def _node_died(self, rec: NodeInfo) -> None:
        """Publish the death and drop the node's object copies. Its actors are left to whoever
        manages them (restart or declare dead): ``actors_on_node`` lists them."""
        self._publish(NODES, ("node_dead", rec))
        for entry in self.objects.drop_node(rec.node_id):
            self._publish(object_channel(entry.oid), ("location_removed", entry))

    def _actor_changed(self, rec: ActorInfo) -> None:
        msg = ("actor_state", rec)
        self._publish(ACTORS, msg)
        self._publish(actor_channel(rec.actor_id), msg)

    # ------------------------------------------------------------------ ops: general
    def op_ping(self, sub: Hashable) -> str:
        return "pong"

    def op_info(self, sub: Hashable) -> dict[str, Any]:
        """Figures for `rtml status` and health checks."""
        return {
            "durable": self.durable,
            "heartbeat_timeout": self.heartbeat_timeout,
            "nodes_alive": len(self.nodes.records(alive_only=True)),
            "nodes": len(self.nodes.records()),
            "jobs": len(self.jobs.records()),
            "actors": len(self.actors.records()),
            "objects": len(self.objects),
            "events": len(self.events),
            "events_dropped": self.events.dropped,
            "subscribers": len(self.pubsub),
        }

    def op_subscribe(self, sub: Hashable, channel: str) -> bool:
        return self.pubsub.subscribe(sub, channel)

    def op_unsubscribe(self, sub: Hashable, channel: str) -> bool:
        return self.pubsub.unsubscribe(sub, channel)

    # ------------------------------------------------------------------ ops: nodes
    def op_register_node(self, sub: Hashable, node_id: str, info: dict[str, Any]) -> NodeInfo:
        rec, new = self.nodes.register(node_id, info, self.clock())
        self._speaks_for[sub] = rec.index
        self._publish(NODES, ("node_added" if new else "node_updated", rec))
        return rec

    def op_bind_node(self, sub: Hashable, node_id: str, index: int) -> bool:
        """A node's connection after a reconnect says which incarnation it speaks for (its
        requests are refused once that incarnation is dead). Returns whether it is alive."""
        rec = self.nodes.by_index(index) if isinstance(index, int) else None
        if rec is None or rec.node_id != node_id:
            raise ValueError(f"no node {node_id!r} with index {index!r} was registered")
        self._speaks_for[sub] = index
        return rec.alive

    def op_heartbeat(
        self, sub: Hashable, node_id: str, available: dict[str, float], load: dict[str, float]
    ) -> bool:
        """False: the node is unknown or was declared dead; it must register again."""
        return self.nodes.heartbeat(node_id, available, load, self.clock())

    def op_node_dead(
        self, sub: Hashable, node_id: str, cause: str = "reported dead"
    ) -> NodeInfo | None:
        """Declare a node dead now (it is shutting down, or someone saw it die)."""
        rec = self.nodes.mark_dead(node_id, cause)
        if rec is not None:
            self._node_died(rec)
        return rec

    def op_get_node(self, sub: Hashable, node_id: str) -> NodeInfo | None:
        return self.nodes.get(node_id)

    def op_list_nodes(self, sub: Hashable, alive_only: bool = False) -> list[NodeInfo]:
        return self.nodes.records(alive_only)

    # ------------------------------------------------------------------ ops: jobs
    def op_next_job_id(self, sub: Hashable) -> int:
        return self.jobs.next_id()

    def op_add_job(self, sub: Hashable, job_id: int, info: dict[str, Any]) -> JobInfo:
        rec = self.jobs.add(job_id, info)
        self._publish(JOBS, ("job_added", rec))
        return rec

    def op_finish_job(self, sub: Hashable, job_id: int) -> JobInfo:
        rec, changed = self.jobs.finish(job_id, time.time())
        if changed:
            self._publish(JOBS, ("job_finished", rec))
        return rec

    def op_get_job(self, sub: Hashable, job_id: int) -> JobInfo | None:
        return self.jobs.get(job_id)

    def op_list_jobs(self, sub: Hashable) -> list[JobInfo]:
        return self.jobs.records()

    # ------------------------------------------------------------------ ops: functions
    def op_put_function(self, sub: Hashable, fn_id: str, blob: bytes) -> None:
        self.functions.put(fn_id, blob)

    def op_get_function(self, sub: Hashable, fn_id: str) -> bytes | None:
        return self.functions.get(fn_id)

    # ------------------------------------------------------------------ ops: actors
    def op_register_actor(self, sub: Hashable, actor_id: Ident, info: dict[str, Any]) -> ActorInfo:
        rec = self.actors.register(actor_id, info)
        self._actor_changed(rec)
        return rec

    def op_update_actor(
        self, sub: Hashable, actor_id: Ident, state: str, fields: dict[str, Any] | None = None
    ) -> ActorInfo:
        rec = self.actors.update(actor_id, state, fields)
        self._actor_changed(rec)
        return rec

    def op_remove_actor(self, sub: Hashable, actor_id: Ident) -> bool:
        removed = self.actors.remove(actor_id)
        if removed:
            self._publish(ACTORS, ("actor_removed", actor_id))
            self._publish(actor_channel(actor_id), ("actor_removed", actor_id))
        return removed

    def op_get_actor(self, sub: Hashable, actor_id: Ident) -> ActorInfo | None:
        return self.actors.get(actor_id)

    def op_lookup_actor(self, sub: Hashable, namespace: str, name: str) -> ActorInfo | None:
        return self.actors.lookup(namespace, name)

    def op_list_actors(self, sub: Hashable, namespace: str | None = None) -> list[ActorInfo]:
        return self.actors.records(namespace)

    def op_actors_on_node(self, sub: Hashable, node_id: str) -> list[ActorInfo]:
        return self.actors.on_node(node_id)

    # ------------------------------------------------------------------ ops: lineage
    def op_add_tasks(self, sub: Hashable, items: list[tuple[Ident, bytes, Any]]) -> int:
        """Batch of ``(task_id, spec_blob, owner)``; returns how many were written."""
        return self.tasks.add_many(items)

    def op_remove_tasks(self, sub: Hashable, task_ids: list[Ident]) -> int:
        return self.tasks.remove_many(task_ids)

    def op_get_task(self, sub: Hashable, task_id: Ident) -> TaskEntry | None:
        return self.tasks.get(task_id)

    def op_remove_owner_tasks(self, sub: Hashable, owner: Any) -> int:
        return self.tasks.remove_owner(owner)

    # ------------------------------------------------------------------ ops: objects
    def _add_locations(self, items: Any) -> list[ObjectEntry]:
        """Add locations on live nodes. A report from a node already declared dead is stale
        (its copies were dropped with it) and ignored; an unknown node is an error."""
        if not isinstance(items, (list, tuple)):
            raise ValueError(
                f"locations are a list of (oid, node_id, size[, owner]), got {items!r}"
            )
        live = []
        for item in items:
            node_id = item[1] if isinstance(item, (tuple, list)) and len(item) > 1 else None
            node = self.nodes.get(node_id) if isinstance(node_id, str) else None
            if node is None:
                raise ValueError(f"an object location on unknown node {node_id!r}: {item!r}")
            if node.alive:
                live.append(item)
        entries = self.objects.add_locations(live)
        for entry in entries:
            self._publish(object_channel(entry.oid), ("location_added", entry))
        return entries

    def op_add_location(
        self, sub: Hashable, oid: Ident, node_id: str, size: int, owner: Any = None
    ) -> ObjectEntry | None:
        """``node_id`` holds a copy of ``oid``; returns the entry, or None if nothing changed
        (already known, or the node is dead)."""
        entries = self._add_locations([(oid, node_id, size, owner)])
        return entries[0] if entries else None

    def op_add_locations(self, sub: Hashable, items: list[tuple[Any, ...]]) -> int:
        """Batch of ``(oid, node_id, size[, owner])``; returns how many entries changed."""
        return len(self._add_locations(items))

    def op_remove_location(self, sub: Hashable, oid: Ident, node_id: str) -> ObjectEntry | None:
        entry = self.objects.remove_location(oid, node_id)
        if entry is not None:
            self._publish(object_channel(oid), ("location_removed", entry))
        return entry

    def op_get_locations(self, sub: Hashable, oid: Ident) -> tuple[int, tuple[str, ...]] | None:
        return self.objects.locations(oid)

    def op_get_object(self, sub: Hashable, oid: Ident) -> ObjectEntry | None:
        return self.objects.get(oid)

    def op_remove_objects(self, sub: Hashable, oids: list[Ident]) -> int:
        gone = self.objects.remove(oids)
        for oid in gone:
            self._publish(object_channel(oid), ("object_removed", oid))
        return len(gone)

    # ------------------------------------------------------------------ ops: task events
    def op_add_events(self, sub: Hashable, records: list[TaskEvent | dict[str, Any]]) -> int:
        """Append a batch; returns the sequence number of its first event."""
        return self.events.append(records)

    def op_get_events(
        self, sub: Hashable, task_id: Ident | None = None, since: int = 0, limit: int = 1000
    ) -> EventPage:
        return self.events.query(task_id, since, min(limit, MAX_EVENTS_PER_QUERY))

    # ------------------------------------------------------------------ ops: kv
    def op_kv_put(
        self, sub: Hashable, namespace: str, key: str, value: bytes, overwrite: bool = True
    ) -> bool:
        return self.kv.put(namespace, key, value, overwrite)

    def op_kv_get(self, sub: Hashable, namespace: str, key: str) -> bytes | None:
        return self.kv.get(namespace, key)

    def op_kv_delete(self, sub: Hashable, namespace: str, key: str) -> bool:
        return self.kv.delete(namespace, key)

    def op_kv_keys(self, sub: Hashable, namespace: str, prefix: str = "") -> list[str]:
        return self.kv.keys(namespace, prefix)
