"""What observability tools read: the ``StateSource`` interface and its record shapes.

::

    StateSource ── task_events(since, limit) ──▶ timeline, task listings, summaries
                ── live_tasks() / actors() / objects() / nodes() / workers() ──▶ listings
                ── logs() / read_log() ──▶ `rtml logs`, the dashboard's log view

Two implementations: the embedded runtime's node in this process, and a cluster (its control
plane plus a state request to each node). Records are plain dicts with the keys below, so that
they print, filter and serialize (JSON) as they are.

Task events (``rtml._control._events.TaskEvent``): one per state change of a task attempt;
``state`` is one of ``TASK_STATES``; ``time`` is seconds since the epoch; ``worker_id`` is the
worker's pid; ``extra`` may hold ``func`` (function or method name), ``job_id``, ``actor_id``
(hex), ``parent`` (hex task id of the task that submitted it), ``deps`` (hex task ids whose
objects it took as arguments), ``error`` ("Type: message"), ``traceback`` (remote traceback
text of a failure), ``start``/``end`` (execution interval in seconds since the epoch, on a
FINISHED or FAILED event).

Record keys (ids are hex strings, times seconds since the epoch, sizes bytes):

- live task: task_id, name, state (PENDING_ARGS | PENDING_SCHEDULING | RUNNING | FORWARDED),
  node_id, worker_pid, actor_id, job_id, attempt, submitted
- actor: actor_id, class_name, name, namespace, state (PENDING | ALIVE | RESTARTING | DEAD),
  node_id, pid, num_restarts, death_cause, job_id
- object: object_id, size, where (INLINE | SHARED_MEMORY | SPILLED | REMOTE | ERROR | PENDING),
  node_id, ref_count, holders (list of "driver pid N" / "worker pid N" / "task <id>" /
  "node <id>"), task_id (the producing task, hex; "" for put)
- node: node_id, index, address, alive, is_head, resources_total, resources_available,
  queued, tasks, death_cause
- worker: worker_id, pid, node_id, state (STARTING | IDLE | LEASED | ACTOR), actor_id,
  tasks (hex ids assigned), blocked, stack_file (where SIGUSR2 makes it dump its stacks)
- log file: node_id, pid, kind ("worker" | "node" | "driver"), path, size
"""

from __future__ import annotations

from typing import Any, Protocol

from rtml._control._events import EventPage

TASK_STATES = (
    "SUBMITTED",
    "PENDING_ARGS",
    "SCHEDULED",
    "RUNNING",
    "FINISHED",
    "FAILED",
    "RETRIED",
    "CANCELLED",
    "FORWARDED",
)


class StateSource(Protocol):
    """Read-only view of a running runtime (see the module docstring for record keys)."""

    def task_events(self, since: int = 0, limit: int | None = None) -> EventPage:
        """Task events with sequence number >= ``since``, oldest first."""

    def live_tasks(self) -> list[dict[str, Any]]:
        """Tasks submitted and not finished, on every node."""

    def actors(self) -> list[dict[str, Any]]: ...

    def objects(self) -> list[dict[str, Any]]: ...

    def nodes(self) -> list[dict[str, Any]]: ...

    def workers(self) -> list[dict[str, Any]]: ...

    def logs(self) -> list[dict[str, Any]]:
        """The log files kept per worker (and node), newest first."""

    def read_log(self, node_id: str, pid: int, tail: int | None = None) -> str:
        """Text of one worker's log (its last ``tail`` lines if given).

        Raises:
            ValueError: no such log.
        """

    def close(self) -> None: ...
