"""State listings: tasks, actors, objects, nodes and workers as filtered rows, and summaries.

::

    open_source(address) ──▶ StateSource ── task_events (all pages) ─┐
                                          └─ live_tasks ─────────────┴▶ task_rows: one per task
                                          ── actors / objects / nodes / workers ──▶ rows
    rows ── check_filters + select(filters, limit, detail) ──▶ (rows shown, rows matched)
         ── summarize_tasks / summarize_actors / summarize_objects ──▶ counts
         ── format_table / format_records / memory_text ──▶ what the CLI prints

A task's row is its most telling event (a final state beats an intermediate one, a later
attempt an earlier one) with the timings of that attempt, unless the task is still live, in
which case its live record (pending, running) says where it is now. Each resource has a schema
(key → kind) so that a filter on an unknown key or with an operator its kind does not support is
refused before anything is read.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from rtml._protocol._ids import hex_id

if TYPE_CHECKING:
    from rtml._control._events import TaskEvent

FINAL = frozenset({"FINISHED", "FAILED", "CANCELLED"})
# Which live record of a task wins when two nodes list it (a forwarded task is on both).
_LIVE_RANK = {"FORWARDED": 0, "PENDING_ARGS": 1, "PENDING_SCHEDULING": 2, "RUNNING": 3}

# Kinds: str, enum (compared case-insensitively), int, float, bool, list, dict.
SCHEMAS: dict[str, dict[str, str]] = {
    "tasks": {
        "task_id": "str",
        "name": "str",
        "state": "enum",
        "attempt": "int",
        "node_id": "str",
        "worker_pid": "int",
        "type": "enum",
        "job_id": "str",
        "actor_id": "str",
        "parent_task_id": "str",
        "deps": "list",
        "submitted_time": "float",
        "start_time": "float",
        "end_time": "float",
        "duration_s": "float",
        "error": "str",
        "traceback": "str",
    },
    "actors": {
        "actor_id": "str",
        "class_name": "str",
        "name": "str",
        "namespace": "str",
        "state": "enum",
        "node_id": "str",
        "pid": "int",
        "num_restarts": "int",
        "death_cause": "str",
        "job_id": "str",
    },
    "objects": {
        "object_id": "str",
        "size": "int",
        "where": "enum",
        "node_id": "str",
        "ref_count": "int",
        "holders": "list",
        "task_id": "str",
    },
    "nodes": {
        "node_id": "str",
        "index": "int",
        "address": "str",
        "alive": "bool",
        "is_head": "bool",
        "resources_total": "dict",
        "resources_available": "dict",
        "queued": "int",
        "tasks": "int",
        "death_cause": "str",
    },
    "workers": {
        "worker_id": "str",
        "pid": "int",
        "node_id": "str",
        "state": "enum",
        "actor_id": "str",
        "tasks": "list",
        "blocked": "bool",
    },
}
# The columns shown without ``detail``.
COMPACT: dict[str, tuple[str, ...]] = {
    "tasks": (
        "task_id",
        "name",
        "state",
        "attempt",
        "node_id",
        "worker_pid",
        "duration_s",
        "error",
    ),
    "actors": ("actor_id", "class_name", "name", "state", "node_id", "pid", "num_restarts"),
    "objects": ("object_id", "size", "where", "node_id", "ref_count", "task_id"),
    "nodes": (
        "node_id",
        "address",
        "alive",
        "is_head",
        "resources_total",
        "resources_available",
        "tasks",
    ),
    "workers": ("worker_id", "pid", "node_id", "state", "actor_id", "blocked", "tasks"),
}
RESOURCES = tuple(SCHEMAS)
OPS = ("=", "!=", "<", ">")
_TRUE, _FALSE = {"true", "1", "yes", "y", "t"}, {"false", "0", "no", "n", "f"}
_NONE = {"", "none", "null", "-"}


class StateRecord(dict[str, Any]):
    """One row: a dict (prints and serializes as one) whose keys also read as attributes,
    as the fields of Ray's state records do (``task.state``)."""

    __slots__ = ()

    def __getattr__(self, key: str) -> Any:
        try:
            return self[key]
        except KeyError:
            raise AttributeError(key) from None


# ------------------------------------------------------------------------------ the source
@contextlib.contextmanager
def open_source(address: str | None) -> Iterator[Any]:
    """The ``StateSource`` to read, closed on exit.

    ``None``: the runtime this process runs or is connected to, else the cluster started last
    on this machine; otherwise the cluster whose control plane is at ``address`` ("auto" as
    for ``rtml.init``).

    Raises:
        ConnectionError: no cluster there, or no token for it.
        RuntimeError: this process's runtime keeps no state (local mode).
    """
    from rtml._observability._sources import connect_source, current_source, has_current_source

    if address is None and has_current_source():
        source = current_source()
    else:
        source = connect_source("auto" if address is None else address)
    try:
        yield source
    finally:
        source.close()


def read_events(source: Any, chunk: int = 50_000) -> tuple[list[TaskEvent], int]:
    """Every task event ``source`` still holds, oldest first, and how many it dropped."""
    events: list[TaskEvent] = []
    since, dropped = 0, 0
    while True:
        page = source.task_events(since=since, limit=chunk)
        events.extend(e for _, e in page.events)
        dropped = page.dropped
        if len(page.events) < chunk or page.next_seq <= since:
            return events, dropped
        since = page.next_seq


# ------------------------------------------------------------------------------ task rows
def _event_row(ev: TaskEvent) -> dict[str, Any]:
    x = ev.extra
    start, end = x.get("start"), x.get("end")
    timed: tuple[Any, Any, Any] = (None, None, None)
    if isinstance(start, (int, float)) and isinstance(end, (int, float)):
        timed = (start, end, round(end - start, 6))
    actor = x.get("actor_id") or None
    return {
        "task_id": hex_id(ev.task_id),
        "name": ev.name or x.get("func") or "",
        "state": ev.state,
        "attempt": ev.attempt,
        "node_id": ev.node_id,
        "worker_pid": ev.worker_id,
        "type": "ACTOR_TASK" if actor else "NORMAL_TASK",
        "job_id": x.get("job_id") or None,
        "actor_id": actor,
        "parent_task_id": x.get("parent") or None,
        "deps": [hex_id(d) for d in x.get("deps") or ()],
        "submitted_time": x.get("submitted"),
        "start_time": timed[0],
        "end_time": timed[1],
        "duration_s": timed[2],
        "error": x.get("error") or None,
        "traceback": x.get("traceback") or None,
    }


def _live_row(rec: dict[str, Any], base: dict[str, Any] | None) -> dict[str, Any]:
    row = (
        dict(base)
        if base is not None
        else {
            "task_id": rec.get("task_id"),
            "name": rec.get("name") or "",
            "type": "NORMAL_TASK",
            "parent_task_id": None,
            "deps": [],
            "submitted_time": rec.get("submitted"),
        }
    )
    actor = rec.get("actor_id") or row.get("actor_id")
    row.update(
        {
            "state": rec.get("state"),
            "attempt": rec.get("attempt", row.get("attempt")),
            "node_id": rec.get("node_id"),
            "worker_pid": rec.get("worker_pid"),
            "job_id": rec.get("job_id") or row.get("job_id"),
            "actor_id": actor,
            "type": "ACTOR_TASK" if actor else "NORMAL_TASK",
            "start_time": None,
            "end_time": None,
            "duration_s": None,
            "error": None,
            "traceback": None,
        }
    )
    if row.get("submitted_time") is None:
        row["submitted_time"] = rec.get("submitted")
    return row


def task_rows(events: list[TaskEvent], live: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per task: the event log's account of it merged with the live records.

    Args:
        events: the task events, oldest first.
        live: ``StateSource.live_tasks()`` records.

    Returns:
        Rows with the keys of ``SCHEMAS["tasks"]``, in order of submission.
    """
    best: dict[str, tuple[tuple[bool, int, int], TaskEvent]] = {}
    for seq, ev in enumerate(events):
        rank = (ev.state in FINAL, ev.attempt, seq)
        key = hex_id(ev.task_id)
        held = best.get(key)
        if held is None or rank > held[0]:
            best[key] = (rank, ev)
    rows = {key: _event_row(ev) for key, (_, ev) in best.items()}
    now_live: dict[str, dict[str, Any]] = {}
    for rec in live:
        key = hex_id(rec.get("task_id"))
        held_rec = now_live.get(key)
        if held_rec is None or (
            _LIVE_RANK.get(str(rec.get("state")), 1) > _LIVE_RANK.get(str(held_rec.get("state")), 1)
        ):
            now_live[key] = rec
    for key, rec in now_live.items():
        row = rows.get(key)
        if row is None or row["state"] not in FINAL:
            rows[key] = _live_row(rec, row)
    inf = float("inf")
    return sorted(
        rows.values(),
        key=lambda r: (
            r["submitted_time"] if isinstance(r["submitted_time"], (int, float)) else inf,
            r["task_id"],
        ),
    )


def read_rows(source: Any, resource: str) -> list[dict[str, Any]]:
    """All rows of one resource (see ``RESOURCES``) from a ``StateSource``."""
    if resource == "tasks":
        events, _ = read_events(source)
        return task_rows(events, source.live_tasks())
    readers = {
        "actors": source.actors,
        "objects": source.objects,
        "nodes": source.nodes,
        "workers": source.workers,
    }
    return [dict(r) for r in readers[resource]()]


# ------------------------------------------------------------------------------ filters
def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value)
    try:
        return float(str(value))
    except ValueError:
        return None


def _boolean(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    return True if text in _TRUE else False if text in _FALSE else None


def check_filters(resource: str, filters: Any) -> list[tuple[str, str, Any]]:
    """Validated ``(key, op, value)`` filters for ``resource``.

    Raises:
        ValueError: an unknown resource, a filter that is not a triple, a key the resource's
            records do not have, an operator other than ``=``, ``!=``, ``<``, ``>``, an order
            comparison on a key that is not a number, or a value of the wrong kind.
    """
    if resource not in SCHEMAS:
        raise ValueError(f"unknown resource {resource!r}: one of {', '.join(RESOURCES)}")
    schema = SCHEMAS[resource]
    out: list[tuple[str, str, Any]] = []
    for f in filters or ():
        if not isinstance(f, (tuple, list)) or len(f) != 3:
            raise ValueError(
                f"a filter is a (key, op, value) triple, e.g. ('state', '=', 'FAILED'); got {f!r}"
            )
        key, op, value = f
        op = "=" if op == "==" else op
        if key not in schema:
            raise ValueError(
                f"unknown filter key {key!r} for {resource}: use one of {', '.join(schema)}"
            )
        if op not in OPS:
            raise ValueError(
                f"unknown filter operator {op!r} (on key {key!r}): use one of {', '.join(OPS)}"
            )
        kind = schema[key]
        if op in ("<", ">"):
            if kind not in ("int", "float"):
                raise ValueError(
                    f"filter {key} {op} {value!r}: {op!r} compares numbers and "
                    f"{resource} key {key!r} is not a number (use = or !=)"
                )
            if value is None or _number(value) is None:
                raise ValueError(f"filter {key} {op} {value!r}: the value must be a number")
        elif (
            kind in ("int", "float")
            and value is not None
            and _number(value) is None
            and str(value).strip().lower() not in _NONE
        ):
            raise ValueError(f"filter {key} {op} {value!r}: {key!r} is a number")
        elif kind == "bool" and _boolean(value) is None:
            raise ValueError(f"filter {key} {op} {value!r}: {key!r} is true or false")
        out.append((key, op, value))
    return out


def _equal(kind: str, actual: Any, wanted: Any) -> bool:
    if actual is None or (isinstance(actual, str) and actual == "" and kind != "str"):
        return wanted is None or str(wanted).strip().lower() in _NONE
    if wanted is None:
        return False
    if kind in ("int", "float"):
        a, w = _number(actual), _number(wanted)
        return a is not None and a == w
    if kind == "bool":
        return bool(actual) == _boolean(wanted)
    if kind == "list":
        return any(str(v) == str(wanted) for v in actual)
    if kind == "dict":
        return str(wanted) in actual
    if kind == "enum":
        return str(actual).upper() == str(wanted).upper()
    return str(actual) == str(wanted)


def matches(row: dict[str, Any], filters: list[tuple[str, str, Any]], resource: str) -> bool:
    """Whether ``row`` passes every (validated) filter."""
    schema = SCHEMAS[resource]
    for key, op, wanted in filters:
        actual = row.get(key)
        kind = schema[key]
        if op == "=":
            ok = _equal(kind, actual, wanted)
        elif op == "!=":
            ok = not _equal(kind, actual, wanted)
        else:
            a, w = _number(actual) if actual is not None else None, _number(wanted)
            ok = a is not None and w is not None and (a < w if op == "<" else a > w)
        if not ok:
            return False
    return True


def select(
    rows: list[dict[str, Any]],
    resource: str,
    filters: Any = None,
    limit: int = 100,
    detail: bool = False,
) -> tuple[list[StateRecord], int]:
    """The rows passing ``filters``, at most ``limit`` of them, with the compact columns unless
    ``detail``; and how many passed.

    Raises:
        ValueError: a bad filter (see ``check_filters``) or a limit below 1.
    """
    checked = check_filters(resource, filters)
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"limit must be an int >= 1, got {limit!r}")
    passed = [r for r in rows if matches(r, checked, resource)]
    columns = COMPACT[resource]
    shown = [
        StateRecord(r) if detail else StateRecord((c, r.get(c)) for c in columns)
        for r in passed[:limit]
    ]
    return shown, len(passed)


# ------------------------------------------------------------------------------ summaries
def summarize_tasks(rows: list[dict[str, Any]], dropped: int = 0) -> dict[str, Any]:
    """Task counts per function and state (as Ray's task summary), with mean run times.

    Returns:
        ``{"summary": {name: {"func_or_class_name", "type", "state_counts", "total",
        "mean_duration_s"}}, "total_tasks", "total_actor_tasks", "state_counts",
        "dropped_events"}``, functions ordered by how many tasks they had.
    """
    by_func: dict[str, dict[str, Any]] = {}
    states: dict[str, int] = {}
    durations: dict[str, list[float]] = {}
    for r in rows:
        name = r.get("name") or "?"
        entry = by_func.setdefault(
            name,
            {
                "func_or_class_name": name,
                "type": r.get("type") or "NORMAL_TASK",
                "state_counts": {},
                "total": 0,
            },
        )
        state = str(r.get("state"))
        entry["state_counts"][state] = entry["state_counts"].get(state, 0) + 1
        entry["total"] += 1
        states[state] = states.get(state, 0) + 1
        if isinstance(r.get("duration_s"), (int, float)):
            durations.setdefault(name, []).append(float(r["duration_s"]))
    for name, entry in by_func.items():
        ds = durations.get(name)
        entry["mean_duration_s"] = round(sum(ds) / len(ds), 6) if ds else None
    ordered = dict(sorted(by_func.items(), key=lambda kv: (-kv[1]["total"], kv[0])))
    return {
        "summary": ordered,
        "total_tasks": len(rows),
        "total_actor_tasks": sum(1 for r in rows if r.get("type") == "ACTOR_TASK"),
        "state_counts": states,
        "dropped_events": dropped,
    }


def summarize_actors(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Actor counts per class and state.

    Returns:
        ``{"summary": {class: {"class_name", "state_counts", "total"}}, "total_actors"}``.
    """
    by_class: dict[str, dict[str, Any]] = {}
    for r in rows:
        name = r.get("class_name") or "?"
        entry = by_class.setdefault(name, {"class_name": name, "state_counts": {}, "total": 0})
        state = str(r.get("state"))
        entry["state_counts"][state] = entry["state_counts"].get(state, 0) + 1
        entry["total"] += 1
    ordered = dict(sorted(by_class.items(), key=lambda kv: (-kv[1]["total"], kv[0])))
    return {"summary": ordered, "total_actors": len(rows)}


def summarize_objects(rows: list[dict[str, Any]], limit: int = 100) -> dict[str, Any]:
    """Objects by size with who holds them (what ``rtml memory`` prints).

    Returns:
        ``{"total_objects", "total_size", "by_where": {where: {"count", "size"}},
        "by_node": {node_id: {"count", "size"}}, "objects": [largest first, at most limit],
        "truncated": how many were left out}``.
    """
    by_where: dict[str, dict[str, int]] = {}
    by_node: dict[str, dict[str, int]] = {}
    total = 0
    for r in rows:
        size = int(r.get("size") or 0)
        total += size
        for table, key in ((by_where, str(r.get("where"))), (by_node, str(r.get("node_id")))):
            entry = table.setdefault(key, {"count": 0, "size": 0})
            entry["count"] += 1
            entry["size"] += size
    largest = sorted(rows, key=lambda r: (-int(r.get("size") or 0), str(r.get("object_id"))))
    keep = max(0, limit)
    return {
        "total_objects": len(rows),
        "total_size": total,
        "by_where": by_where,
        "by_node": by_node,
        "objects": [StateRecord(r) for r in largest[:keep]],
        "truncated": max(0, len(rows) - keep),
    }


# ------------------------------------------------------------------------------ text
def human_bytes(n: float) -> str:
    """``1536`` → ``"1.5 KiB"``."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"  # pragma: no cover - the loop always returns


def _number_text(key: str, value: float) -> str:
    if "memory" in key and value >= 1024:
        return human_bytes(value)
    return f"{value:g}"


def cell(key: str, value: Any, width: int | None = 48) -> str:
    """How one value shows in a table (``None`` as ``-``, times as clock times, ...)."""
    if value is None or value == "":
        text = "-"
    elif isinstance(value, bool):
        text = "true" if value else "false"
    elif key.endswith("_time") and isinstance(value, (int, float)):
        ms = round(value * 1000)
        text = time.strftime("%H:%M:%S", time.localtime(ms // 1000)) + f".{ms % 1000:03d}"
    elif key == "size" and isinstance(value, (int, float)):
        text = human_bytes(value)
    elif isinstance(value, float):
        text = f"{value:.6f}".rstrip("0").rstrip(".") if abs(value) < 1e6 else f"{value:g}"
    elif isinstance(value, dict):
        text = ", ".join(
            f"{k}: {_number_text(k, v)}" if isinstance(v, (int, float)) else f"{k}: {v}"
            for k, v in sorted(value.items())
        )
    elif isinstance(value, (list, tuple)):
        text = ", ".join(str(v) for v in value) or "-"
    else:
        text = str(value)
    text = text.replace("\n", " ⏎ ") if "\n" in text else text
    if width is not None and len(text) > width:
        text = text[: width - 1] + "…"
    return text


def format_table(
    rows: Sequence[Mapping[str, Any]],
    columns: tuple[str, ...] | list[str] | None = None,
    width: int | None = 48,
) -> str:
    """Rows as an aligned text table (numbers right-aligned), one line per row."""
    if not rows:
        return "(none)"
    if columns is None:
        columns = list(dict.fromkeys(k for r in rows for k in r))
    cells = [[cell(c, r.get(c), width) for c in columns] for r in rows]
    header = [c.upper() for c in columns]
    widths = [max(len(header[i]), *(len(line[i]) for line in cells)) for i in range(len(columns))]

    def numeric(c: str) -> bool:
        values = [r.get(c) for r in rows if r.get(c) is not None]
        return bool(values) and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in values
        )

    right = [numeric(c) for c in columns]

    def line(values: list[str]) -> str:
        parts = [
            v.rjust(w) if r else v.ljust(w) for v, w, r in zip(values, widths, right, strict=True)
        ]
        return "  ".join(parts).rstrip()

    return "\n".join([line(header)] + [line(c) for c in cells])


def format_records(rows: Sequence[Mapping[str, Any]], title_key: str) -> str:
    """Rows one block each, a ``key: value`` line per key (multi-line values indented)."""
    if not rows:
        return "(none)"
    blocks = []
    for r in rows:
        pad = max((len(k) for k in r), default=0)
        lines = [f"--- {title_key.split('_')[0]} {r.get(title_key, '?')} ---"]
        for k, v in r.items():
            if isinstance(v, str) and "\n" in v:
                lines.append(f"{k}:")
                lines.extend("    " + t for t in v.rstrip("\n").splitlines())
            else:
                lines.append(f"{k.ljust(pad)}  {cell(k, v, None)}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def memory_text(summary: dict[str, Any]) -> str:
    """``summarize_objects``'s result as ``rtml memory`` prints it."""
    out = [f"{summary['total_objects']} object(s), {human_bytes(summary['total_size'])} in all"]
    for title, key in (("by location", "by_where"), ("by node", "by_node")):
        table = summary[key]
        if table:
            out.append(
                f"{title}: "
                + ", ".join(
                    f"{k} {v['count']} ({human_bytes(v['size'])})"
                    for k, v in sorted(table.items(), key=lambda kv: -kv[1]["size"])
                )
            )
    out.append("")
    columns = ("object_id", "size", "where", "node_id", "ref_count", "task_id", "holders")
    out.append(format_table(summary["objects"], columns, width=60))
    if summary["truncated"]:
        out.append(f"... and {summary['truncated']} smaller object(s) (raise --limit)")
    return "\n".join(out)


def summary_text(summary: dict[str, Any], kind: str) -> str:
    """``summarize_tasks`` or ``summarize_actors``'s result as a table."""
    states: list[str] = []
    for entry in summary["summary"].values():
        states.extend(s for s in entry["state_counts"] if s not in states)
    name_key = "func_or_class_name" if kind == "tasks" else "class_name"
    rows = []
    for entry in summary["summary"].values():
        row: dict[str, Any] = {name_key: entry[name_key]}
        if kind == "tasks":
            row["type"] = entry["type"]
        row["total"] = entry["total"]
        for s in states:
            row[s] = entry["state_counts"].get(s, 0)
        if kind == "tasks":
            row["mean_duration_s"] = entry["mean_duration_s"]
        rows.append(row)
    total = summary["total_tasks"] if kind == "tasks" else summary["total_actors"]
    head = f"{total} {kind[:-1]}(s)"
    if kind == "tasks" and summary.get("dropped_events"):
        head += f" ({summary['dropped_events']} older event(s) dropped from the log)"
    return head + "\n" + format_table(rows, width=60)
