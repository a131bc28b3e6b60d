"""The task event log: what happened to every task attempt, for the timeline and `rtml list`.

::

    nodes/workers ── add_events([TaskEvent | dict, ...]) ──▶ EventLog
                                                              │ seq 0, 1, 2, … in arrival order
                                                              ├─ _log      deque[(seq, event)]  ≤ capacity
                                                              └─ _by_task  task id → deque[(seq, event)]
    timeline / dashboard ◀── query(task_id=, since=, limit=) ─┘ EventPage(events, next_seq, dropped)

The log lives in memory only, even when the tables are on Redis: events are observability, not
state anything needs to recover, and at thousands of tasks per second writing each one through
would cost more than the tasks. It is bounded: past ``capacity`` the oldest events are dropped
and counted in ``dropped``, so a reader polling with ``since`` learns that it missed some.
"""

from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass, field, fields
from typing import Any

from rtml._control._records import Ident, key_of


@dataclass(frozen=True)
class TaskEvent:
    """One state change of one attempt of a task (e.g. SUBMITTED, RUNNING, FINISHED, FAILED).

    ``time`` is the reporter's wall clock (seconds since the epoch); ``extra`` carries anything
    else the reporter wants drawn (resources, error type, ...).
    """

    task_id: Ident
    attempt: int
    state: str
    time: float
    node_id: str | None = None
    worker_id: Any = None
    name: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, record: TaskEvent | dict[str, Any]) -> TaskEvent:
        """A TaskEvent from itself or from a dict with its fields (unknown keys go to
        ``extra``).

        Raises:
            ValueError: a required field is missing or of the wrong type.
        """
        if isinstance(record, TaskEvent):
            return record
        if not isinstance(record, dict):
            raise ValueError(f"a task event is a TaskEvent or a dict, got {record!r}")
        known = {f.name for f in fields(cls)}
        args = {k: v for k, v in record.items() if k in known}
        extra = {k: v for k, v in record.items() if k not in known}
        if extra:
            args["extra"] = {**args.get("extra", {}), **extra}
        missing = {"task_id", "attempt", "state", "time"} - args.keys()
        if missing:
            raise ValueError(f"a task event needs {sorted(missing)}, got {record!r}")
        key_of(args["task_id"])
        if not isinstance(args["state"], str) or not isinstance(args["time"], (int, float)):
            raise ValueError(f"a task event's state is a str and time a number, got {record!r}")
        return cls(**args)


@dataclass(frozen=True)
class EventPage:
    """One answer of ``EventLog.query``.

    Attributes:
        events: ``(seq, event)`` pairs, oldest first.
        next_seq: pass as ``since`` to read on from where this page stopped.
        dropped: events dropped for capacity since the log started (all tasks).
    """

    events: list[tuple[int, TaskEvent]]
    next_seq: int
    dropped: int


class EventLog:
    """A bounded, in-memory, append-only log of task events with a per-task index."""

    def __init__(self, capacity: int = 100_000) -> None:
        if capacity < 1:
            raise ValueError("the event log's capacity must be at least 1")
        self.capacity = capacity
        self.dropped = 0
        self.next_seq = 0
        self._log: deque[tuple[int, TaskEvent]] = deque()
        self._by_task: dict[Ident, deque[tuple[int, TaskEvent]]] = {}

    def append(self, records: list[TaskEvent | dict[str, Any]]) -> int:
        """Add a batch (all checked before any is added); returns the seq of the first one."""
        events = [TaskEvent.of(r) for r in records]
        first = self.next_seq
        for event in events:
            entry = (self.next_seq, event)
            self.next_seq += 1
            self._log.append(entry)
            per_task = self._by_task.get(event.task_id)
            if per_task is None:
                per_task = self._by_task[event.task_id] = deque()
            per_task.append(entry)
        while len(self._log) > self.capacity:
            _, old = self._log.popleft()
            per_task = self._by_task[old.task_id]
            per_task.popleft()  # the oldest of the log is the oldest of its task too
            if not per_task:
                del self._by_task[old.task_id]
            self.dropped += 1
        return first

    def query(
        self, task_id: Ident | None = None, since: int = 0, limit: int | None = None
    ) -> EventPage:
        """Events with ``seq >= since`` (of one task if ``task_id`` is given), oldest first, at
        most ``limit`` of them."""
        if limit is not None and limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        if task_id is None:
            first_seq = self._log[0][0] if self._log else self.next_seq
            source: Any = itertools.islice(self._log, max(0, since - first_seq), None)
        else:
            source = (e for e in self._by_task.get(task_id, ()) if e[0] >= since)
        events = list(itertools.islice(source, limit))
        if limit is not None and len(events) == limit:  # there may be more: resume after these
            next_seq = events[-1][0] + 1 if events else since
        else:
            next_seq = max(since, self.next_seq)
        return EventPage(events, next_seq, self.dropped)

    def __len__(self) -> int:
        return len(self._log)

    def validate(self) -> None:
        assert len(self._log) <= self.capacity
        seqs = [s for s, _ in self._log]
        assert seqs == list(range(self.next_seq - len(seqs), self.next_seq)), "seq gap"
        assert self.dropped == self.next_seq - len(seqs)
        assert sum(len(d) for d in self._by_task.values()) == len(self._log)
        for task_id, per_task in self._by_task.items():
            assert per_task, f"empty index entry for task {task_id!r}"
            assert all(e.task_id == task_id for _, e in per_task)
            assert [s for s, _ in per_task] == sorted(s for s, _ in per_task)
