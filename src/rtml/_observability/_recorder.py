"""Task events: recorded cheaply on the node's hot path, built into events only when read.

::

    Node (under its lock) ── node.events.append(TaskRec)   (finished: times set on it)
                          ── node.events.append((state, TaskRec, attempt, scheduled, end,
                                                 duration, worker pid, error blob))  (others)
    flusher (every FLUSH_S, off the lock) ── compact() ──▶ flat tuples of numbers and strings
        ├─ embedded runtime: CompactEventLog in the driver (bounded; TaskEvents built on query)
        └─ cluster node: event dicts (to_dict) sent to the control plane's EventLog

Recording is one tuple append per task attempt (plus a clock read when the task is submitted,
ready and scheduled). Flattening happens in batches on the flusher's thread; formatting ids,
reading the error of a failure and building ``TaskEvent`` objects wait until someone asks (the
timeline, a listing, the dashboard), so a runtime nobody inspects pays almost nothing. An event
carries the attempt's lifecycle as timestamps: submitted, ready (inputs sealed), scheduled,
start, end.
"""

from __future__ import annotations

import itertools
import pickle
import threading
from collections import deque
from typing import Any

from rtml._control._events import EventPage, TaskEvent
from rtml._protocol._events import CANCELLED, FINISHED
from rtml._protocol._ids import task_of, to_hex

FLUSH_S = 0.25

# compact tuple: (state, task_id, attempt, end, worker pid, name, job, submitted, ready,
#                 scheduled, duration, actor_id, parent, deps, error blob, extra)


def compact(records: list[Any], default_job: str = "") -> list[tuple]:
    """Flat tuples (numbers, strings, bytes) from what the node recorded: a tuple, or for a
    task that finished normally its final TaskRec (``ended``, ``duration``, ``pid`` set)."""
    out: list[tuple] = []
    append = out.append
    for r in records:
        if type(r) is tuple:
            state, t, attempt, scheduled, end, duration, pid, blob = r[:8]
            more = r[8] if len(r) > 8 else None
        else:
            t = r
            state, attempt, scheduled, end, duration, pid, blob, more = (
                FINISHED,
                t.attempts,
                t.scheduled,
                t.ended,
                t.duration,
                t.pid,
                None,
                None,
            )
        spec = t.spec
        append(
            (
                state,
                spec.task_id,
                attempt,
                end,
                pid,
                spec.name,
                spec.job[0] if spec.job else default_job,
                t.submitted,
                t.ready,
                scheduled,
                duration,
                spec.actor_id,
                t.parent or spec.parent,
                spec.deps,
                blob,
                more,
            )
        )
    return out


def _error_of(blob: bytes | None) -> tuple[str, str, bool]:
    """(type and message, remote traceback, cancelled?) of a pickled task error."""
    if blob is None:
        return "", "", False
    try:
        err = pickle.loads(blob)
    except Exception as e:  # an error that does not unpickle here still shows
        return f"(unreadable error: {e})", "", False
    cause = getattr(err, "cause", None) or err
    tb = getattr(err, "traceback_str", "") or ""
    cancelled = type(err).__name__ == "TaskCancelledError"
    return f"{type(cause).__name__}: {cause}", tb, cancelled


def to_dict(c: tuple, node_id: str) -> dict[str, Any]:
    """The ``TaskEvent`` fields of a compact tuple (the rest goes to ``extra``)."""
    (
        state,
        task_id,
        attempt,
        end,
        pid,
        name,
        job,
        submitted,
        ready,
        scheduled,
        duration,
        actor_id,
        parent,
        deps,
        blob,
        more,
    ) = c
    error, tb, cancelled = _error_of(blob)
    if cancelled:
        state = CANCELLED
    ev: dict[str, Any] = {
        "task_id": to_hex(task_id),
        "attempt": attempt,
        "state": state,
        "time": end,
        "node_id": node_id,
        "worker_id": pid,
        "name": name,
        "func": name,
        "job_id": job,
        "submitted": submitted,
        "ready": ready or submitted,
        "scheduled": scheduled,
    }
    if duration is not None:
        ev["start"] = end - duration
        ev["end"] = end
    if actor_id is not None:
        ev["actor_id"] = to_hex(actor_id)
    if parent is not None:
        ev["parent"] = to_hex(parent)
    if deps:
        ev["deps"] = [to_hex(task_of(d)) for d in deps]
    if error:
        ev["error"] = error
        ev["traceback"] = tb
    if more:
        ev.update(more)
    return ev


class CompactEventLog:
    """A bounded log of compact events (oldest dropped and counted) with ``EventLog``'s query:
    ``TaskEvent``s are built for the events a reader asks for, not for every task."""

    def __init__(self, node_id: str, capacity: int) -> None:
        self.node_id = node_id
        self.capacity = capacity
        self.dropped = 0
        self.next_seq = 0
        self._log: deque[tuple[int, tuple]] = deque()
        self._lock = threading.Lock()

    def append(self, events: list[tuple]) -> None:
        with self._lock:
            seq = self.next_seq
            self._log.extend(zip(itertools.count(seq), events))
            self.next_seq = seq + len(events)
            over = len(self._log) - self.capacity
            for _ in range(max(0, over)):
                self._log.popleft()
            self.dropped += max(0, over)

    def query(self, task_id: Any = None, since: int = 0, limit: int | None = None) -> EventPage:
        with self._lock:
            first = self._log[0][0] if self._log else self.next_seq
            items = list(itertools.islice(self._log, max(0, since - first), None))
            next_seq, dropped = self.next_seq, self.dropped
        if task_id is not None:
            want = int(task_id, 16) if isinstance(task_id, str) else task_id
            items = [(s, c) for s, c in items if c[1] == want]
        if limit is not None and len(items) > limit:
            items = items[:limit]
            next_seq = items[-1][0] + 1 if items else since
        events = [(s, TaskEvent.of(to_dict(c, self.node_id))) for s, c in items]
        return EventPage(events, max(since, next_seq), dropped)

    def __len__(self) -> int:
        return len(self._log)
