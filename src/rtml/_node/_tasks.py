"""Task records: what the node tracks per task (the spec and the states are in ``_protocol``)."""

from __future__ import annotations

import time
from typing import Any

from rtml._protocol._spec import WAITING, TaskSpec


class TaskRec:
    """The node's record of a submitted task until it finishes."""

    __slots__ = (
        "attempts",
        "cancelled",
        "children",
        "deps_left",
        "duration",
        "ended",
        "local_only",
        "node",
        "oom_kills",
        "parent",
        "pid",
        "ready",
        "remote",
        "retries_left",
        "scheduled",
        "shape",
        "spec",
        "state",
        "submitted",
        "worker",
    )

    # Set when the task finishes normally, for its task event (see _observability/_recorder).
    ended: float
    duration: float
    pid: int

    def __init__(self, spec: TaskSpec, node: Any, shape: tuple) -> None:
        self.spec = spec
        self.node = node
        self.shape = shape
        self.state = WAITING
        self.deps_left = 0
        self.worker: Any = None
        self.retries_left = spec.max_retries
        self.cancelled = False
        self.attempts = 0
        self.children: list[int] | None = None
        self.parent: int | None = None
        self.remote: str | None = None  # FORWARDED: the node running it
        self.local_only = False  # forwarded here by another node: never forwarded again
        self.submitted = time.time()  # lifecycle timestamps, for task events
        self.ready = 0.0
        self.scheduled = 0.0
        self.oom_kills = 0  # times the memory monitor killed its worker

    def on_sealed(self, oid: int) -> None:
        """A dependency was sealed (as a value or an error)."""
        self.node._dep_sealed(self, oid)
