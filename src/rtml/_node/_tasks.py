"""Task specs and task records: what a submitter sends and what the node tracks per task."""

from __future__ import annotations

import time
from typing import Any

WAITING, QUEUED, ASSIGNED, FINISHED = 0, 1, 2, 3
FORWARDED = 4  # cluster: sent to another node to run; its results come back from there
STREAMING = -1  # num_returns of a generator task whose values stream as they are produced


class TaskSpec:
    """Everything needed to run (and re-run) one task. Immutable once submitted."""

    __slots__ = (
        "actor_id", "args", "contained", "deps", "env_vars", "fn_id", "job", "max_retries",
        "name", "num_returns", "owner", "parent", "resources", "retry_exceptions", "seq",
        "strategy", "task_id",
    )

    def __init__(
        self, task_id: int, fn_id: str, name: str, args: bytes, deps: tuple[int, ...],
        contained: tuple[int, ...], num_returns: int, resources: dict[str, float],
        max_retries: int, retry_exceptions: Any, owner: int, env_vars: dict[str, str] | None,
        actor_id: int | None = None, seq: int = 0, job: tuple[str, str] | None = None,
        strategy: Any = None, parent: int | None = None,
    ) -> None:
        self.task_id = task_id
        self.fn_id = fn_id
        self.name = name
        self.args = args
        self.deps = deps
        self.contained = contained
        self.num_returns = num_returns
        self.resources = resources
        self.max_retries = max_retries
        self.retry_exceptions = retry_exceptions
        self.owner = owner
        self.env_vars = env_vars
        self.actor_id = actor_id
        self.seq = seq
        self.job = job  # (job id, namespace) of a cluster driver's work; None when embedded
        self.strategy = strategy  # None, "SPREAD" or ("node", node id, soft): see _placement
        self.parent = parent  # the task that submitted it (for the timeline and listings)

    def __reduce__(self) -> Any:
        return (TaskSpec, (
            self.task_id, self.fn_id, self.name, self.args, self.deps, self.contained,
            self.num_returns, self.resources, self.max_retries, self.retry_exceptions,
            self.owner, self.env_vars, self.actor_id, self.seq, self.job, self.strategy,
            self.parent,
        ))


class TaskRec:
    """The node's record of a submitted task until it finishes."""

    __slots__ = (
        "attempts", "cancelled", "children", "deps_left", "duration", "ended", "local_only",
        "node", "parent", "pid", "ready", "remote", "retries_left", "scheduled", "shape", "spec",
        "state", "submitted", "worker",
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

    def on_sealed(self, oid: int) -> None:
        """A dependency was sealed (as a value or an error)."""
        self.node._dep_sealed(self, oid)
