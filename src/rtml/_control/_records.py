"""The rows of the control-plane tables: frozen dataclasses, their states, and how they are stored.

Records are immutable: a change replaces the row (``dataclasses.replace``), so a record handed
to a reply or a publication never changes under whoever holds it. They are stored pickled
(protocol 5); the storage only ever holds rows this package wrote, so it is trusted.

Identifiers are ``int`` (tasks, objects, actors, jobs) or ``str`` (nodes, functions); ``key_of``
turns either into a storage key without collisions, and every row carries its own id, so
recovery never has to parse a key.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from typing import Any, Literal

Ident = int | str

NodeState = Literal["ALIVE", "DEAD"]
ALIVE: NodeState = "ALIVE"
DEAD: NodeState = "DEAD"

JobState = Literal["RUNNING", "FINISHED"]
RUNNING: JobState = "RUNNING"
FINISHED: JobState = "FINISHED"

ActorState = Literal["PENDING", "ALIVE", "RESTARTING", "DEAD"]
ACTOR_STATES: tuple[str, ...] = ("PENDING", "ALIVE", "RESTARTING", "DEAD")
# Which actor state may follow which: DEAD is final; anything else may be re-stated (to update
# the node/pid/address) or move on.
ACTOR_TRANSITIONS: dict[str, frozenset[str]] = {
    "PENDING": frozenset({"PENDING", "ALIVE", "RESTARTING", "DEAD"}),
    "ALIVE": frozenset({"ALIVE", "RESTARTING", "DEAD"}),
    "RESTARTING": frozenset({"RESTARTING", "ALIVE", "DEAD"}),
    "DEAD": frozenset(),
}


def key_of(ident: Ident) -> str:
    """The storage key of an id: ints in hex (digits and ``-`` only), strings behind ``s``."""
    if isinstance(ident, bool):
        raise ValueError(f"an id is an int or a str, got {ident!r}")
    if isinstance(ident, int):
        return format(ident, "x")
    if isinstance(ident, str):
        return "s" + ident
    raise ValueError(f"an id is an int or a str, got {type(ident).__name__} {ident!r}")


def dumps(record: Any) -> bytes:
    return pickle.dumps(record, protocol=5)


def loads(blob: bytes) -> Any:
    return pickle.loads(blob)  # our own rows only: the storage is trusted


@dataclass(frozen=True)
class NodeInfo:
    """One incarnation of a node. A node that comes back after being declared dead is a new
    incarnation with a new ``index``; the dead one stays listed.

    ``available``, ``load`` and ``last_heartbeat`` change with every heartbeat and are kept in
    memory only (``last_heartbeat`` is in the control plane's monotonic clock; ``None`` until
    the first heartbeat after a control-plane restart, which starts the node's grace period).
    """

    node_id: str
    index: int
    address: str
    resources: dict[str, float]
    labels: dict[str, str] = field(default_factory=dict)
    state: NodeState = ALIVE
    available: dict[str, float] = field(default_factory=dict)
    load: dict[str, Any] = field(default_factory=dict)
    last_heartbeat: float | None = None
    death_cause: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def alive(self) -> bool:
        return self.state == ALIVE


@dataclass(frozen=True)
class JobInfo:
    """A driver's session on the cluster."""

    job_id: int
    namespace: str
    driver_pid: int | None = None
    driver_address: str | None = None
    start_time: float | None = None
    end_time: float | None = None
    state: JobState = RUNNING
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ActorInfo:
    """An actor's lifecycle as the cluster sees it. ``extra`` holds what its creator registered
    beyond the named fields (e.g. the creation spec to restart it from)."""

    actor_id: Ident
    namespace: str
    name: str | None = None
    job_id: int | None = None
    class_name: str = ""
    detached: bool = False
    max_restarts: int = 0
    state: ActorState = "PENDING"
    node_id: str | None = None
    pid: int | None = None
    address: str | None = None
    num_restarts: int = 0
    death_cause: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ObjectEntry:
    """Where an object's copies are. ``nodes`` empty: every copy is lost (the entry stays so
    that "lost" differs from "never heard of"; ``remove`` forgets it once freed)."""

    oid: Ident
    size: int
    nodes: tuple[str, ...] = ()
    owner: Any = None


@dataclass(frozen=True)
class TaskEntry:
    """A task's spec as its owner submitted it (an opaque blob), kept for lineage."""

    task_id: Ident
    spec: bytes
    owner: Any = None
