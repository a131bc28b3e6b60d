"""The control plane (GCS): tables, pub/sub and the task event log, its server and client.

``ControlPlane`` is the pure state machine; ``python -m rtml._control`` serves one over
authenticated connections (``_server.py``); ``ControlClient`` talks to it. Storage is pluggable:
``MemoryStorage`` (the embedded default, lost with its process) or Redis (durable; sharded with
``ShardedStorage``).

Floor 1, leaves (docs/architecture.md): imports only floor 0 and the other leaves.
"""

from rtml._control._client import ControlClient
from rtml._control._events import EventLog, EventPage, TaskEvent
from rtml._control._plane import ControlPlane
from rtml._control._pubsub import ACTORS, JOBS, NODES, PubSub, actor_channel, object_channel
from rtml._control._records import ActorInfo, JobInfo, NodeInfo, ObjectEntry, TaskEntry
from rtml._control._storage import (
    MemoryStorage,
    RedisStorage,
    ShardedStorage,
    Storage,
    open_storage,
)

__all__ = [
    "ACTORS",
    "JOBS",
    "NODES",
    "ActorInfo",
    "ControlClient",
    "ControlPlane",
    "EventLog",
    "EventPage",
    "JobInfo",
    "MemoryStorage",
    "NodeInfo",
    "ObjectEntry",
    "PubSub",
    "RedisStorage",
    "ShardedStorage",
    "Storage",
    "TaskEntry",
    "TaskEvent",
    "actor_channel",
    "object_channel",
    "open_storage",
]
