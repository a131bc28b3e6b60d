"""Task specs and task states: what a submitter sends, and the states the node tracks a task in.

Plain data shared by every process: a client (driver or worker) builds a ``TaskSpec``, the node
queues and forwards it, a worker runs it. States are plain ints (they are compared on the hot
path, and ``STREAMING`` travels in specs as a ``num_returns``).
"""

from __future__ import annotations

from typing import Any

WAITING, QUEUED, ASSIGNED, FINISHED = 0, 1, 2, 3
FORWARDED = 4  # cluster: sent to another node to run; its results come back from there
STREAMING = -1  # num_returns of a generator task whose values stream as they are produced


class TaskSpec:
    """Everything needed to run (and re-run) one task. Immutable once submitted."""

    __slots__ = (
        "actor_id",
        "args",
        "contained",
        "deps",
        "env_vars",
        "fn_id",
        "job",
        "max_retries",
        "name",
        "num_returns",
        "owner",
        "parent",
        "placement",
        "resources",
        "retry_exceptions",
        "seq",
        "strategy",
        "task_id",
    )

    def __init__(
        self,
        task_id: int,
        fn_id: str,
        name: str,
        args: bytes,
        deps: tuple[int, ...],
        contained: tuple[int, ...],
        num_returns: int,
        resources: dict[str, float],
        max_retries: int,
        retry_exceptions: Any,
        owner: int,
        env_vars: dict[str, str] | None,
        actor_id: int | None = None,
        seq: int = 0,
        job: tuple[str, str] | None = None,
        strategy: Any = None,
        parent: int | None = None,
        placement: Any = None,
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
        # (group id hex, bundle index, capture child tasks, bundles) when it runs in a
        # placement group (its resources are already the bundle's: _scheduler/_bundles.py)
        self.placement = placement

    def __reduce__(self) -> Any:
        return (
            TaskSpec,
            (
                self.task_id,
                self.fn_id,
                self.name,
                self.args,
                self.deps,
                self.contained,
                self.num_returns,
                self.resources,
                self.max_retries,
                self.retry_exceptions,
                self.owner,
                self.env_vars,
                self.actor_id,
                self.seq,
                self.job,
                self.strategy,
                self.parent,
                self.placement,
            ),
        )
