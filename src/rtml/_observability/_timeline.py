"""The timeline: task events drawn in the Chrome trace event format (Perfetto, chrome://tracing).

::

    StateSource.task_events() ── read_events ──▶ [TaskEvent, ...]
        ── executions() ──▶ Execution per task attempt that ran: node, worker pid, start, end
        ── build_trace() ──▶ {"traceEvents": [M names, X slices, s/f flow pairs], ...}

Layout: one process (``pid``) per node, one thread row (``tid`` = worker pid) per worker, one
complete event (``ph: "X"``) per execution, and one flow arrow (``ph: "s"`` then ``"f"`` with the
same ``id``) from the slice of each task whose result a task took as an argument to the slice
of that task. Failed attempts are coloured (``cname``) and named ``func [FAILED]`` so that they
stand out in viewers that ignore ``cname`` (Perfetto colours by name).

Timestamps are microseconds since the trace's origin, the earliest execution start, which
``otherData["origin_epoch_s"]`` gives in seconds since the epoch: relative times keep full
precision in a double and make the file smaller than epoch microseconds would.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from rtml._protocol._ids import hex_id

if TYPE_CHECKING:
    from rtml._control._events import TaskEvent

# Events that close an execution: they carry its interval (extra start/end) or pair with an
# earlier RUNNING event of the same attempt.
_ENDS = frozenset({"FINISHED", "FAILED", "RETRIED", "CANCELLED"})
# Reserved colour names of the trace viewer's colour scheme.
_CNAME = {"FAILED": "terrible", "RETRIED": "bad", "CANCELLED": "grey"}
FLOW_CAT = "dep"
FLOW_NAME = "dep"


@dataclass
class Execution:
    """One attempt of one task that ran on a worker (times in seconds since the epoch)."""

    task_id: str
    attempt: int
    func: str
    state: str
    node_id: str
    worker: Any
    start: float
    end: float
    deps: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


def executions(events: Iterable[TaskEvent | dict[str, Any]]) -> list[Execution]:
    """The executions the events describe, in the order their last event arrived.

    Compact events (a FINISHED/FAILED/RETRIED/CANCELLED event with ``extra["start"]`` and
    ``extra["end"]``) give one execution each; an end event without them pairs with the
    RUNNING event of the same task attempt, if there is one. Attempts that never ran (cancelled
    while queued, forwarded to another node) give none.
    """
    from rtml._control._events import TaskEvent  # here: importing rtml stays cheap

    running: dict[tuple[str, int], TaskEvent] = {}
    out: list[Execution] = []
    for raw in events:
        ev = TaskEvent.of(raw)
        key = (hex_id(ev.task_id), ev.attempt)
        if ev.state == "RUNNING":
            running[key] = ev
            continue
        if ev.state not in _ENDS:
            continue
        x = ev.extra
        start, end = x.get("start"), x.get("end")
        node, worker = ev.node_id, ev.worker_id
        began = running.pop(key, None)
        if start is None and began is not None:
            start, end = began.time, ev.time
            node = node or began.node_id
            worker = worker if worker is not None else began.worker_id
        if not isinstance(start, (int, float)) or not isinstance(end, (int, float)):
            continue
        out.append(
            Execution(
                task_id=key[0],
                attempt=ev.attempt,
                func=str(ev.name or x.get("func") or "task"),
                state=ev.state,
                node_id=str(node or "?"),
                worker=worker,
                start=float(start),
                end=max(float(start), float(end)),
                deps=[hex_id(d) for d in x.get("deps") or ()],
                extra=x,
            )
        )
    return out


def _us(seconds: float) -> float:
    return round(seconds * 1e6, 1)


class _Rows:
    """Numbers the viewers want for pids and tids, and the metadata events naming them."""

    def __init__(self, nodes: list[dict[str, Any]] | None) -> None:
        self.pids: dict[str, int] = {}
        self.tids: dict[tuple[int, Any], int] = {}
        self.meta: list[dict[str, Any]] = []
        self._spare_tid = 1 << 31  # for worker ids that are not pids
        ordered = sorted(
            nodes or [],
            key=lambda n: (not n.get("is_head"), n.get("index") or 0, str(n.get("node_id"))),
        )
        for n in ordered:
            self.pid(str(n.get("node_id")), bool(n.get("is_head")))

    def pid(self, node_id: str, is_head: bool = False) -> int:
        pid = self.pids.get(node_id)
        if pid is None:
            pid = self.pids[node_id] = len(self.pids) + 1
            label = f"node {node_id}" + (" (head)" if is_head else "")
            self.meta.append(
                {
                    "ph": "M",
                    "name": "process_name",
                    "pid": pid,
                    "tid": 0,
                    "ts": 0,
                    "args": {"name": label},
                }
            )
            self.meta.append(
                {
                    "ph": "M",
                    "name": "process_sort_index",
                    "pid": pid,
                    "tid": 0,
                    "ts": 0,
                    "args": {"sort_index": pid},
                }
            )
        return pid

    def tid(self, pid: int, worker: Any) -> int:
        tid = self.tids.get((pid, worker))
        if tid is None:
            if isinstance(worker, int) and not isinstance(worker, bool) and worker >= 0:
                tid, label = worker, f"worker {worker}"
            elif worker is None:
                tid, label = 0, "driver"
            else:
                self._spare_tid += 1
                tid, label = self._spare_tid, f"worker {worker}"
            self.tids[(pid, worker)] = tid
            self.meta.append(
                {
                    "ph": "M",
                    "name": "thread_name",
                    "pid": pid,
                    "tid": tid,
                    "ts": 0,
                    "args": {"name": label},
                }
            )
            self.meta.append(
                {
                    "ph": "M",
                    "name": "thread_sort_index",
                    "pid": pid,
                    "tid": tid,
                    "ts": 0,
                    "args": {"sort_index": tid},
                }
            )
        return tid


def _slice_args(e: Execution) -> dict[str, Any]:
    x = e.extra
    args: dict[str, Any] = {
        "task_id": e.task_id,
        "func": e.func,
        "attempt": e.attempt,
        "state": e.state,
    }
    submitted = x.get("submitted")
    if isinstance(submitted, (int, float)):
        args["queued_ms"] = round(max(0.0, e.start - submitted) * 1e3, 3)
    for key in ("actor_id", "parent", "error", "traceback"):
        if x.get(key):
            args[key] = x[key]
    return args


def build_trace(
    events: Iterable[TaskEvent | dict[str, Any]],
    nodes: list[dict[str, Any]] | None = None,
    dropped: int = 0,
) -> dict[str, Any]:
    """The Chrome trace (JSON object form) of the executions the events describe.

    Args:
        events: task events (``TaskEvent`` or dicts with its fields), oldest first.
        nodes: node records (``node_id``, ``index``, ``is_head``) to order and label the
            processes; nodes that ran tasks but are not listed still get a process.
        dropped: events the log dropped for capacity (reported in ``otherData``).

    Returns:
        ``{"traceEvents": [...], "displayTimeUnit": "ms", "otherData": {...}}``.
    """
    runs = executions(events)
    origin = min((e.start for e in runs), default=0.0)
    rows = _Rows(nodes)
    slices: list[dict[str, Any]] = []
    # Where each task's result came from: its last successful execution, else its last one.
    placed: list[tuple[int, int, float, float]] = []
    producer: dict[str, int] = {}
    for i, e in enumerate(runs):
        pid = rows.pid(e.node_id)
        tid = rows.tid(pid, e.worker)
        ts, dur = _us(e.start - origin), _us(e.end - e.start)
        ev: dict[str, Any] = {
            "ph": "X",
            "name": e.func,
            "cat": "task",
            "pid": pid,
            "tid": tid,
            "ts": ts,
            "dur": dur,
            "args": _slice_args(e),
        }
        if e.state in _CNAME:
            ev["cname"] = _CNAME[e.state]
            if e.state == "FAILED":
                ev["name"] = f"{e.func} [FAILED]"
        slices.append(ev)
        placed.append((pid, tid, ts, dur))
        best = producer.get(e.task_id)
        if best is None or e.state == "FINISHED" or runs[best].state != "FINISHED":
            producer[e.task_id] = i
    flows: list[dict[str, Any]] = []
    flow_id = 0
    for i, e in enumerate(runs):
        if not e.deps:
            continue
        pid, tid, ts, dur = placed[i]
        for dep in dict.fromkeys(e.deps):  # each producer once, in argument order
            j = producer.get(dep)
            if j is None or j == i:
                continue
            ppid, ptid, pts, pdur = placed[j]
            flow_id += 1
            # Both ends sit just inside their slices so that every viewer binds them there.
            flows.append(
                {
                    "ph": "s",
                    "id": flow_id,
                    "name": FLOW_NAME,
                    "cat": FLOW_CAT,
                    "pid": ppid,
                    "tid": ptid,
                    "ts": round(pts + pdur - min(pdur / 2, 1), 1),
                }
            )
            flows.append(
                {
                    "ph": "f",
                    "bp": "e",
                    "id": flow_id,
                    "name": FLOW_NAME,
                    "cat": FLOW_CAT,
                    "pid": pid,
                    "tid": tid,
                    "ts": round(ts + min(dur / 2, 1), 1),
                }
            )
    return {
        "traceEvents": rows.meta + slices + flows,
        "displayTimeUnit": "ms",
        "otherData": {
            "generator": "rtml",
            "origin_epoch_s": origin,
            "tasks": len(runs),
            "dependencies": flow_id,
            "dropped_events": dropped,
        },
    }


def trace_of_source(source: Any) -> dict[str, Any]:
    """The Chrome trace of everything ``source`` (a ``StateSource``) still holds in its log."""
    from rtml._observability._listing import read_events

    events, dropped = read_events(source)
    try:
        nodes = source.nodes()
    except (ConnectionError, OSError, TimeoutError):
        nodes = []
    return build_trace(events, nodes, dropped)


def dump_trace(trace: dict[str, Any], filename: str) -> int:
    """Write a trace as compact JSON to ``filename``; returns the bytes written."""
    text = json.dumps(trace, separators=(",", ":"))
    with open(filename, "w") as f:
        f.write(text)
    return len(text)
