"""What the dashboard shows, folded from a ``StateSource``: pure bookkeeping, no web code.

::

    StateSource.task_events(since) ──▶ DashboardModel.ingest() ── TaskBook: latest state per task,
                                                                   counts by state and function,
                                                                   recent slices, failures
    StateSource.nodes/live_tasks/actors/objects/workers/logs ──▶ DashboardModel.snapshot()
                                              (each re-read after max_age s, or later if slow)
    snapshot() ──▶ one JSON-ready dict: everything the page draws

Not thread-safe: the server calls it from one thread only (sources may not be thread-safe
either). Memory is bounded: per-task state for the last ``max_tasks`` tasks, the last
``max_slices`` execution intervals, the last ``max_failures`` failures; the counts by state and
by function cover every event read since the dashboard started.
"""

from __future__ import annotations

import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from rtml._observability._listing import FINAL
from rtml._observability._timeline import executions
from rtml._protocol._ids import hex_id
from rtml.dashboard._panels import panels_view

if TYPE_CHECKING:
    from rtml._control._events import TaskEvent

LIVE_STATES = ("PENDING_ARGS", "PENDING_SCHEDULING", "RUNNING")
_PAGE = 5000  # events read per source call
_MAX_PAGES = 40  # per ingest: a huge backlog is read over several polls
_TOP_OBJECTS = 25
_MAX_ACTORS = 300
_MAX_ROWS = 500  # task and worker rows sent to the page
DUTY = 0.05  # at most this share of the time is spent reading any one listing


def _rank(state: str, attempt: int) -> tuple[bool, int]:
    """Which event of a task tells its state (as ``rtml list tasks`` picks it): a final state
    beats an intermediate one, a later attempt an earlier one, a later event ties."""
    return (state in FINAL, attempt)


class TaskBook:
    """Task events folded into per-task latest state and running totals."""

    def __init__(
        self,
        max_tasks: int = 20_000,
        max_slices: int = 5_000,
        max_failures: int = 100,
        max_recent: int = 100,
    ) -> None:
        self.max_tasks = max_tasks
        self.tasks: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.by_state: Counter[str] = Counter()
        self.by_func: dict[str, Counter[str]] = {}
        self.func_time: dict[str, list[float]] = {}  # func -> [total seconds, count, max]
        self.retries = 0
        self.events_read = 0
        self.slices: deque[dict[str, Any]] = deque(maxlen=max_slices)
        self.failures: deque[dict[str, Any]] = deque(maxlen=max_failures)
        self.recent: deque[dict[str, Any]] = deque(maxlen=max_recent)

    def add(self, events: Iterable[TaskEvent | dict[str, Any]]) -> None:
        """Fold a batch of events (oldest first) in."""
        from rtml._control._events import TaskEvent

        batch = [TaskEvent.of(e) for e in events]
        for x in executions(batch):
            self.slices.append(
                {
                    "task_id": x.task_id,
                    "func": x.func,
                    "state": x.state,
                    "node_id": x.node_id,
                    "worker_pid": x.worker,
                    "start": x.start,
                    "end": x.end,
                }
            )
        for ev in batch:
            self._add(ev)

    def _add(self, ev: TaskEvent) -> None:
        self.events_read += 1
        x = ev.extra
        task_id = hex_id(ev.task_id)
        state = ev.state
        start, end = x.get("start"), x.get("end")
        rec = {
            "task_id": task_id,
            "func": str(ev.name or x.get("func") or "?"),
            "state": state,
            "attempt": ev.attempt,
            "node_id": ev.node_id,
            "worker_pid": ev.worker_id,
            "time": ev.time,
            "start": start,
            "end": end,
            "actor_id": x.get("actor_id"),
            "parent": x.get("parent"),
        }
        if state == "RETRIED":
            self.retries += 1
        old = self.tasks.get(task_id)
        if old is not None and _rank(old["state"], old["attempt"]) > _rank(state, ev.attempt):
            return  # an earlier attempt's or an intermediate state's event, arriving late
        if old is not None:
            self._count(old, -1)
        self.tasks[task_id] = rec
        self._count(rec, +1)
        if old is None and len(self.tasks) > self.max_tasks:
            self.tasks.popitem(last=False)  # its counts stay: they are totals
        if state in FINAL:
            self.recent.append(rec)
        if state == "FAILED":
            parent = self.tasks.get(hex_id(rec["parent"])) if rec["parent"] else None
            self.failures.append(
                {
                    **rec,
                    "error": x.get("error") or "",
                    "traceback": x.get("traceback") or "",
                    "parent_func": parent["func"] if parent else None,
                }
            )

    def _count(self, rec: dict[str, Any], sign: int) -> None:
        state = rec["state"]
        if state not in FINAL:
            return  # live tasks are counted from the source's live listing
        self.by_state[state] += sign
        self.by_func.setdefault(rec["func"], Counter())[state] += sign
        start, end = rec["start"], rec["end"]
        if (
            state == "FINISHED"
            and isinstance(start, (int, float))
            and isinstance(end, (int, float))
        ):
            d = max(0.0, float(end) - float(start))
            t = self.func_time.setdefault(rec["func"], [0.0, 0, 0.0])
            t[0] += sign * d
            t[1] += sign
            if sign > 0:
                t[2] = max(t[2], d)

    def state_of(self, task_id: str) -> str | None:
        rec = self.tasks.get(task_id)
        return rec["state"] if rec is not None else None

    def validate(self) -> None:
        assert len(self.tasks) <= self.max_tasks
        assert all(v >= 0 for v in self.by_state.values()), self.by_state
        for func, c in self.by_func.items():
            assert all(v >= 0 for v in c.values()), (func, c)
        assert sum(sum(c.values()) for c in self.by_func.values()) == sum(self.by_state.values())
        assert all(t[1] >= 0 for t in self.func_time.values())


class DashboardModel:
    """Reads a StateSource (made by ``source_factory`` on first use) into page snapshots.

    Args:
        source_factory: returns the ``StateSource`` to read; called lazily, and again after a
            failure to make one (e.g. before the runtime is up).
        max_age: seconds a listing (nodes, actors, objects, ...) may be reused between calls;
            one that took t seconds to read is reused for at least t / DUTY.
        clock: wall clock (seconds since the epoch); monotonic: for listing ages. Both
            replaceable in tests.
    """

    LISTINGS = ("nodes", "live_tasks", "actors", "objects", "workers", "logs")

    def __init__(
        self,
        source_factory: Callable[[], Any],
        *,
        max_age: float = 0.5,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        book: TaskBook | None = None,
    ) -> None:
        self.source_factory = source_factory
        self.max_age = max_age
        self.clock = clock
        self.monotonic = monotonic
        self.book = book or TaskBook()
        self.source: Any = None
        self.source_error: str | None = None
        self.cursor = 0
        self.dropped = 0
        self._listings: dict[str, list[dict[str, Any]]] = {k: [] for k in self.LISTINGS}
        self._errors: dict[str, str] = {}
        self._due = dict.fromkeys(self.LISTINGS, float("-inf"))

    # ------------------------------------------------------------------ reading the source
    def _source(self) -> Any:
        if self.source is None:
            try:
                self.source = self.source_factory()
                self.source_error = None
            except Exception as e:
                self.source_error = f"{type(e).__name__}: {e}"
                raise
        return self.source

    def ingest(self) -> int:
        """Read the events that arrived since the last call; returns the event cursor.

        Raises:
            Exception: what the source factory or source raised.
        """
        src = self._source()
        for _ in range(_MAX_PAGES):
            page = src.task_events(since=self.cursor, limit=_PAGE)
            self.book.add(ev for _seq, ev in page.events)
            self.cursor = max(self.cursor, int(page.next_seq))
            self.dropped = int(page.dropped)
            if len(page.events) < _PAGE:
                break
        return self.cursor

    def _refresh(self) -> None:
        """Re-read each listing older than max_age, or than 1/DUTY times its last read took:
        listing a node's objects holds its lock, so a big one is read less often."""
        src = None
        for kind in self.LISTINGS:
            if self.monotonic() < self._due[kind]:
                continue
            src = src or self._source()
            began = self.monotonic()
            try:
                self._listings[kind] = list(getattr(src, kind)())
                self._errors.pop(kind, None)
            except Exception as e:  # keep the last answer; show what went wrong
                self._errors[kind] = f"{type(e).__name__}: {e}"
            ended = self.monotonic()
            self._due[kind] = ended + max(self.max_age, (ended - began) / DUTY)

    def trace(self) -> dict[str, Any]:
        """The Chrome trace (Perfetto, chrome://tracing) of every event the source holds."""
        from rtml._observability._timeline import trace_of_source

        return trace_of_source(self._source())

    def read_log(self, node_id: str, pid: int, tail: int | None) -> str:
        return str(self._source().read_log(node_id, pid, tail))

    def close(self) -> None:
        if self.source is not None:
            src, self.source = self.source, None
            src.close()

    # ------------------------------------------------------------------------ page data
    def snapshot(self, window: float = 30.0) -> dict[str, Any]:
        """Everything the page shows; ``window``: seconds of timeline."""
        steps = (
            ("source", self._source),
            ("task_events", self.ingest),
            ("listings", self._refresh),
        )
        for key, step in steps:
            try:
                step()
            except Exception as e:  # shown on the page; the last answers stay
                self._errors[key] = f"{type(e).__name__}: {e}"
                if key == "source":
                    break
            else:
                self._errors.pop(key, None)
        now = self.clock()
        live = self._live_tasks()
        return {
            "now": now,
            "events": {
                "next_seq": self.cursor,
                "read": self.book.events_read,
                "dropped": self.dropped,
            },
            "nodes": self.nodes_view(live),
            "tasks": self.tasks_view(live),
            "actors": self.actors_view(),
            "objects": self.objects_view(),
            "workers": self.workers_view(),
            "timeline": self.timeline_view(now, window, live),
            "failures": self.failures_view(),
            "logs": self._listings["logs"][:_MAX_ROWS],
            "panels": panels_view(),
            "errors": dict(self._errors),
        }

    def _live_tasks(self) -> list[dict[str, Any]]:
        """Live tasks, once each (a forwarded task shows where it runs), not yet finished."""
        out: dict[str, dict[str, Any]] = {}
        for t in self._listings["live_tasks"]:
            tid = hex_id(t.get("task_id"))
            if self.book.state_of(tid) in FINAL:
                continue  # finished since the listing was read
            if tid in out and t.get("state") == "FORWARDED":
                continue
            out[tid] = t
        return [t for t in out.values() if t.get("state") != "FORWARDED"]

    def tasks_view(self, live: list[dict[str, Any]]) -> dict[str, Any]:
        book = self.book
        by_state: Counter[str] = Counter({k: v for k, v in book.by_state.items() if v})
        funcs: dict[str, Counter[str]] = {f: Counter(c) for f, c in book.by_func.items()}
        for t in live:
            state = "RUNNING" if t.get("state") == "RUNNING" else "PENDING"
            by_state[state] += 1
            funcs.setdefault(t.get("name") or "?", Counter())[state] += 1
        rows: list[dict[str, Any]] = []
        for func, c in funcs.items():
            total_s, n, max_s = book.func_time.get(func, (0.0, 0, 0.0))
            rows.append(
                {
                    "func": func,
                    "finished": c["FINISHED"],
                    "failed": c["FAILED"],
                    "cancelled": c["CANCELLED"],
                    "running": c["RUNNING"],
                    "pending": c["PENDING"],
                    "total": sum(c.values()),
                    "mean_s": total_s / n if n > 0 else None,
                    "max_s": max_s if n else None,
                }
            )
        rows.sort(key=lambda r: (-r["total"], r["func"]))
        running = sorted(live, key=lambda t: t.get("submitted") or 0)[:_MAX_ROWS]
        return {
            "by_state": dict(by_state),
            "retries": book.retries,
            "by_func": rows[:_MAX_ROWS],
            "recent": list(reversed(book.recent))[:50],
            "live": [
                {
                    "task_id": hex_id(t.get("task_id")),
                    "func": t.get("name"),
                    "state": t.get("state"),
                    "node_id": t.get("node_id"),
                    "worker_pid": t.get("worker_pid"),
                    "submitted": t.get("submitted"),
                    "attempt": t.get("attempt"),
                }
                for t in running
            ],
        }

    def nodes_view(self, live: list[dict[str, Any]]) -> list[dict[str, Any]]:
        workers = Counter(str(w.get("node_id")) for w in self._listings["workers"])
        running = Counter(str(t.get("node_id")) for t in live if t.get("state") == "RUNNING")
        out = []
        for n in self._listings["nodes"]:
            total = n.get("resources_total") or {}
            avail = n.get("resources_available") or {}
            out.append(
                {
                    **n,
                    "workers": workers[str(n.get("node_id"))],
                    "running": running[str(n.get("node_id"))],
                    "resources": [
                        {
                            "name": k,
                            "total": v,
                            "used": max(0.0, v - avail.get(k, 0.0)) if n.get("alive") else 0.0,
                        }
                        for k, v in sorted(total.items())
                    ],
                }
            )
        out.sort(key=lambda n: (not n.get("is_head"), n.get("index") or 0))
        return out

    def actors_view(self) -> dict[str, Any]:
        actors = self._listings["actors"]
        order = {"ALIVE": 0, "PENDING": 1, "RESTARTING": 2, "DEAD": 3}
        rows = sorted(
            actors,
            key=lambda a: (
                order.get(str(a.get("state")), 4),
                str(a.get("class_name")),
                str(a.get("actor_id")),
            ),
        )
        return {
            "by_state": dict(Counter(a.get("state") for a in actors)),
            "rows": rows[:_MAX_ACTORS],
            "total": len(actors),
        }

    def objects_view(self) -> dict[str, Any]:
        objs = self._listings["objects"]
        by_where: dict[str, dict[str, int]] = {}
        for o in objs:
            w = by_where.setdefault(str(o.get("where")), {"count": 0, "bytes": 0})
            w["count"] += 1
            w["bytes"] += int(o.get("size") or 0)
        capacity = sum(
            float((n.get("resources_total") or {}).get("object_store_memory", 0))
            for n in self._listings["nodes"]
            if n.get("alive")
        )
        top = sorted(objs, key=lambda o: -int(o.get("size") or 0))[:_TOP_OBJECTS]
        rows = []
        for o in top:
            producer = self.book.tasks.get(hex_id(o.get("task_id")))
            rows.append({**o, "func": producer["func"] if producer else None})
        return {
            "count": len(objs),
            "by_where": by_where,
            "store": {
                "used": by_where.get("SHARED_MEMORY", {}).get("bytes", 0),
                "spilled": by_where.get("SPILLED", {}).get("bytes", 0),
                "capacity": capacity,
            },
            "top": rows,
        }

    def workers_view(self) -> list[dict[str, Any]]:
        return sorted(
            self._listings["workers"], key=lambda w: (str(w.get("node_id")), w.get("pid") or 0)
        )[:_MAX_ROWS]

    def timeline_view(
        self, now: float, window: float, live: list[dict[str, Any]]
    ) -> dict[str, Any]:
        """Slices that ended in the last ``window`` seconds, and running tasks, per worker."""
        start = now - window
        slices = [s for s in self.book.slices if (s["end"] or 0) >= start]
        last_end: dict[tuple[Any, Any], float] = {}
        for s in slices:
            key = (s["node_id"], s["worker_pid"])
            last_end[key] = max(last_end.get(key, 0.0), float(s["end"]))
        running = []
        for t in live:
            if t.get("state") != "RUNNING" or t.get("worker_pid") is None:
                continue
            key = (t.get("node_id"), t.get("worker_pid"))
            # The listing knows when it was submitted, not when it started: it started after
            # both that and the end of the worker's previous task.
            began = max(float(t.get("submitted") or start), last_end.get(key, 0.0))
            running.append(
                {
                    "task_id": hex_id(t.get("task_id")),
                    "func": t.get("name"),
                    "state": "RUNNING",
                    "node_id": t.get("node_id"),
                    "worker_pid": t.get("worker_pid"),
                    "start": began,
                    "end": None,
                }
            )
        actor_of = {
            (w.get("node_id"), w.get("pid")): w.get("actor_id") for w in self._listings["workers"]
        }
        classes = {a.get("actor_id"): a.get("class_name") for a in self._listings["actors"]}
        rows = sorted(
            {(s["node_id"], s["worker_pid"]) for s in slices + running},
            key=lambda k: (str(k[0]), k[1] or 0),
        )
        return {
            "start": start,
            "end": now,
            "slices": slices[-3000:],
            "running": running,
            "rows": [
                {"node_id": n, "worker_pid": p, "actor": classes.get(actor_of.get((n, p)))}
                for n, p in rows
            ],
        }

    def failures_view(self) -> list[dict[str, Any]]:
        return list(reversed(self.book.failures))[:50]
