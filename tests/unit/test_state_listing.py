"""State listings, summaries and the `rtml list|summary|memory|timeline` commands, read from a
fake StateSource (synthetic events and records; no processes)."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest
from click.testing import CliRunner

from rtml._control._events import EventLog, EventPage
from rtml._observability import _listing
from rtml.cli._commands import cli
from rtml.util import state

T0 = 1_700_000_000.0
NODE = "aaaa0001"
TB = 'Traceback (most recent call last):\n  File "x.py", line 3, in bad\nValueError: boom\n'


def event(
    task: str,
    state_: str,
    start: float | None = None,
    end: float | None = None,
    attempt: int = 1,
    func: str = "f",
    node: str = NODE,
    pid: int = 101,
    **extra: Any,
) -> dict[str, Any]:
    e: dict[str, Any] = {
        "task_id": task,
        "attempt": attempt,
        "state": state_,
        "time": T0 + (end or 0.0),
        "node_id": node,
        "worker_id": pid,
        "name": func,
        "func": func,
        "job_id": "01000000",
        "submitted": T0 + int(task[1:]) * 1e-3,
        **extra,
    }
    if start is not None and end is not None:
        e["start"], e["end"] = T0 + start, T0 + end
    return e


EVENTS = [
    event("a1", "FINISHED", 0.0, 0.5),
    event("a2", "FINISHED", 0.1, 0.2, func="g", deps=["a1"], parent="a1"),
    event("a3", "FAILED", 0.3, 0.4, func="bad", error="ValueError: boom", traceback=TB),
    event("a4", "RETRIED", 0.3, 0.35, error="WorkerCrashedError: gone"),  # attempt 2 is live
    event("a5", "FORWARDED", node=NODE),  # now running on the other node
    event("a6", "FINISHED", 0.6, 0.9, actor_id="ac1", func="Counter.incr"),
    event("a7", "CANCELLED"),
]
LIVE = [
    {
        "task_id": "a4",
        "name": "f",
        "state": "RUNNING",
        "node_id": NODE,
        "worker_pid": 102,
        "actor_id": None,
        "job_id": "01000000",
        "attempt": 2,
        "submitted": T0 + 0.004,
    },
    {
        "task_id": "a5",
        "name": "f",
        "state": "FORWARDED",
        "node_id": NODE,
        "worker_pid": None,
        "actor_id": None,
        "job_id": "01000000",
        "attempt": 1,
        "submitted": T0 + 0.005,
    },
    {
        "task_id": "a5",
        "name": "f",
        "state": "RUNNING",
        "node_id": "bbbb0002",
        "worker_pid": 201,
        "actor_id": None,
        "job_id": "01000000",
        "attempt": 1,
        "submitted": T0 + 0.005,
    },
    {
        "task_id": "a1",
        "name": "f",
        "state": "RUNNING",
        "node_id": NODE,
        "worker_pid": 101,
        "actor_id": None,
        "job_id": "01000000",
        "attempt": 1,
        "submitted": T0,
    },  # stale: finished
    {
        "task_id": "a8",
        "name": "h",
        "state": "PENDING_ARGS",
        "node_id": NODE,
        "worker_pid": None,
        "actor_id": None,
        "job_id": "01000000",
        "attempt": 1,
        "submitted": T0 + 0.008,
    },
]
OBJECTS = [
    {
        "object_id": "a100000001",
        "size": 5,
        "where": "INLINE",
        "node_id": NODE,
        "ref_count": 1,
        "holders": ["driver pid 7"],
        "task_id": "a1",
    },
    {
        "object_id": "b100000000",
        "size": 3 << 20,
        "where": "SHARED_MEMORY",
        "node_id": NODE,
        "ref_count": 2,
        "holders": ["driver pid 7", "task a8"],
        "task_id": "",
    },
    {
        "object_id": "c100000000",
        "size": 5 << 20,
        "where": "SPILLED",
        "node_id": "bbbb0002",
        "ref_count": 1,
        "holders": ["worker pid 201"],
        "task_id": "",
    },
]
ACTORS = [
    {
        "actor_id": "ac1",
        "class_name": "Counter",
        "name": "c",
        "namespace": "ns",
        "state": "ALIVE",
        "node_id": NODE,
        "pid": 103,
        "num_restarts": 0,
        "death_cause": None,
        "job_id": "01000000",
    },
    {
        "actor_id": "ac2",
        "class_name": "Counter",
        "name": None,
        "namespace": None,
        "state": "DEAD",
        "node_id": NODE,
        "pid": None,
        "num_restarts": 1,
        "death_cause": "killed by rtml.kill",
        "job_id": "01000000",
    },
]
NODES = [
    {
        "node_id": NODE,
        "index": 0,
        "address": "127.0.0.1:7001",
        "alive": True,
        "is_head": True,
        "resources_total": {"CPU": 2.0, "memory": 8e9},
        "resources_available": {"CPU": 1.0},
        "queued": 0,
        "tasks": 3,
        "death_cause": None,
    },
    {
        "node_id": "bbbb0002",
        "index": 1,
        "address": "127.0.0.1:7002",
        "alive": False,
        "is_head": False,
        "resources_total": {"CPU": 1.0},
        "resources_available": {},
        "queued": 0,
        "tasks": 0,
        "death_cause": "heartbeat timeout",
    },
]
WORKERS = [
    {
        "worker_id": "2",
        "pid": 101,
        "node_id": NODE,
        "state": "IDLE",
        "actor_id": None,
        "tasks": [],
        "blocked": False,
    },
    {
        "worker_id": "3",
        "pid": 102,
        "node_id": NODE,
        "state": "LEASED",
        "actor_id": None,
        "tasks": ["a4"],
        "blocked": True,
    },
]


class FakeSource:
    """A StateSource with fixed records and an EventLog."""

    def __init__(self, events: list[dict[str, Any]] = EVENTS, capacity: int = 1000) -> None:
        self.log = EventLog(capacity)
        self.log.append(events)  # type: ignore[arg-type]
        self.closed = False

    def task_events(self, since: int = 0, limit: int | None = None) -> EventPage:
        return self.log.query(since=since, limit=limit)

    def live_tasks(self) -> list[dict[str, Any]]:
        return [dict(r) for r in LIVE]

    def actors(self) -> list[dict[str, Any]]:
        return [dict(r) for r in ACTORS]

    def objects(self) -> list[dict[str, Any]]:
        return [dict(r) for r in OBJECTS]

    def nodes(self) -> list[dict[str, Any]]:
        return [dict(r) for r in NODES]

    def workers(self) -> list[dict[str, Any]]:
        return [dict(r) for r in WORKERS]

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def fake(monkeypatch):
    """Every reader (API and CLI) gets a FakeSource; records the addresses asked for."""
    sources: list[tuple[Any, FakeSource]] = []

    @contextlib.contextmanager
    def open_source(address):
        source = FakeSource()
        sources.append((address, source))
        try:
            yield source
        finally:
            source.close()

    monkeypatch.setattr(_listing, "open_source", open_source)
    return sources


def tasks_by_id(**kw: Any) -> dict[str, Any]:
    return {t["task_id"]: t for t in state.list_tasks(detail=True, **kw)}


# --------------------------------------------------------------------------- tasks
def test_task_rows_merge_events_and_live_records(fake):
    rows = tasks_by_id()
    assert list(rows) == ["a1", "a2", "a3", "a4", "a5", "a6", "a7", "a8"]  # submission order
    assert {k: r["state"] for k, r in rows.items()} == {
        "a1": "FINISHED",
        "a2": "FINISHED",
        "a3": "FAILED",
        "a4": "RUNNING",
        "a5": "RUNNING",
        "a6": "FINISHED",
        "a7": "CANCELLED",
        "a8": "PENDING_ARGS",
    }
    a2 = rows["a2"]
    assert a2["name"] == "g"
    assert a2["deps"] == ["a1"]
    assert a2["parent_task_id"] == "a1"
    assert a2["start_time"] == pytest.approx(T0 + 0.1)
    assert a2["duration_s"] == pytest.approx(0.1)
    assert a2["worker_pid"] == 101
    assert a2["node_id"] == NODE
    assert a2["type"] == "NORMAL_TASK"
    assert rows["a3"]["error"] == "ValueError: boom"
    assert rows["a3"]["traceback"] == TB
    # A retried task that is running again: where it runs now, not the old attempt's error.
    a4 = rows["a4"]
    assert (a4["attempt"], a4["worker_pid"], a4["error"], a4["duration_s"]) == (2, 102, None, None)
    assert rows["a5"]["node_id"] == "bbbb0002"  # the node running it, not the forwarder
    assert rows["a6"]["type"] == "ACTOR_TASK"
    assert rows["a6"]["actor_id"] == "ac1"
    assert rows["a8"]["name"] == "h"
    assert rows["a8"]["deps"] == []
    assert all(addr is None for addr, _ in fake)
    assert all(s.closed for _, s in fake)


def test_compact_columns_detail_and_attribute_access(fake):
    compact = state.list_tasks()
    assert tuple(compact[0]) == _listing.COMPACT["tasks"]
    assert compact[2].state == "FAILED"
    assert compact[2].error == "ValueError: boom"
    with pytest.raises(AttributeError):
        _ = compact[2].traceback  # detail only
    detailed = state.list_tasks(detail=True)
    assert set(detailed[0]) == set(_listing.SCHEMAS["tasks"])
    assert json.loads(json.dumps(detailed)) == [dict(r) for r in detailed]
    for lister, resource in (
        (state.list_actors, "actors"),
        (state.list_objects, "objects"),
        (state.list_nodes, "nodes"),
        (state.list_workers, "workers"),
    ):
        rows = lister()
        assert rows
        assert all(tuple(r) == _listing.COMPACT[resource] for r in rows)
        assert all(set(r) == set(_listing.SCHEMAS[resource]) for r in lister(detail=True))


def test_filters(fake):
    def ids(rows: list[Any], key: str = "task_id") -> list[str]:
        return [r[key] for r in rows]

    assert ids(state.list_tasks(filters=[("state", "=", "failed")])) == ["a3"]
    assert ids(state.list_tasks(filters=[("state", "!=", "FINISHED"), ("name", "=", "f")])) == [
        "a4",
        "a5",
        "a7",
    ]
    assert ids(state.list_tasks(filters=[("duration_s", ">", 0.25)])) == ["a1", "a6"]
    assert ids(state.list_tasks(filters=[("duration_s", "<", "0.15")])) == ["a2", "a3"]
    assert ids(state.list_tasks(filters=[("deps", "=", "a1")])) == ["a2"]
    assert ids(state.list_tasks(filters=[("worker_pid", "=", "102")])) == ["a4"]
    assert ids(state.list_tasks(filters=[("actor_id", "=", None)])) == [
        "a1",
        "a2",
        "a3",
        "a4",
        "a5",
        "a7",
        "a8",
    ]
    assert ids(state.list_tasks(filters=[("error", "!=", "none")])) == ["a3"]
    assert ids(state.list_objects(filters=[("size", ">", 1 << 20)]), "object_id") == [
        "b100000000",
        "c100000000",
    ]
    assert ids(state.list_objects(filters=[("holders", "=", "task a8")]), "object_id") == [
        "b100000000"
    ]
    assert ids(state.list_nodes(filters=[("alive", "=", "false")]), "node_id") == ["bbbb0002"]
    assert ids(state.list_nodes(filters=[("resources_total", "=", "memory")]), "node_id") == [NODE]
    assert ids(state.list_workers(filters=[("blocked", "=", True)]), "pid") == [102]
    assert ids(
        state.list_actors(filters=[("state", "=", "dead"), ("num_restarts", ">", 0)]), "actor_id"
    ) == ["ac2"]


@pytest.mark.parametrize(
    ("bad", "words"),
    [
        (("colour", "=", "red"), ["unknown filter key 'colour'", "task_id"]),
        (("state", "~", "x"), ["unknown filter operator '~'", "'state'"]),
        (("name", "<", "f"), ["'<' compares numbers", "'name'"]),
        (("duration_s", ">", "soon"), ["must be a number"]),
        (("attempt", "=", "first"), ["'attempt' is a number"]),
        (("state", "FAILED"), ["(key, op, value)"]),
    ],
)
def test_bad_filters_name_the_problem(fake, bad, words):
    with pytest.raises(ValueError) as info:
        state.list_tasks(filters=[bad])
    assert all(w in str(info.value) for w in words), str(info.value)
    assert not fake  # refused before reading anything


def test_limit(fake):
    assert len(state.list_tasks(limit=3)) == 3
    assert [r.task_id for r in state.list_tasks(limit=2, filters=[("state", "=", "RUNNING")])] == [
        "a4",
        "a5",
    ]
    with pytest.raises(ValueError, match="limit"):
        state.list_tasks(limit=0)
    rows, matched = _listing.select(_listing.read_rows(FakeSource(), "tasks"), "tasks", [], 5)
    assert (len(rows), matched) == (5, 8)


def test_unknown_resource_and_address_passed_through(fake):
    with pytest.raises(ValueError, match="unknown resource"):
        _listing.check_filters("jobs", [])
    state.list_nodes(address="127.0.0.1:1234")
    assert fake[-1][0] == "127.0.0.1:1234"


def test_event_log_that_dropped_events_still_lists_what_it_holds():
    source = FakeSource(capacity=3)
    events, dropped = _listing.read_events(source, chunk=2)
    assert dropped == 4
    assert [e.task_id for e in events] == ["a5", "a6", "a7"]


# --------------------------------------------------------------------------- summaries
def test_summarize_tasks(fake):
    s = state.summarize_tasks()
    assert s["total_tasks"] == 8
    assert s["total_actor_tasks"] == 1
    assert s["state_counts"] == {
        "FINISHED": 3,
        "FAILED": 1,
        "RUNNING": 2,
        "CANCELLED": 1,
        "PENDING_ARGS": 1,
    }
    f = s["summary"]["f"]
    assert next(iter(s["summary"])) == "f"  # the busiest function first
    assert f["state_counts"] == {"FINISHED": 1, "RUNNING": 2, "CANCELLED": 1}
    assert f["total"] == 4
    assert f["mean_duration_s"] == pytest.approx(0.5)
    assert s["summary"]["Counter.incr"]["type"] == "ACTOR_TASK"
    assert s["summary"]["h"]["mean_duration_s"] is None
    assert json.loads(json.dumps(s)) == s


def test_summarize_actors_and_objects(fake):
    a = state.summarize_actors()
    assert a == {
        "summary": {
            "Counter": {
                "class_name": "Counter",
                "total": 2,
                "state_counts": {"ALIVE": 1, "DEAD": 1},
            }
        },
        "total_actors": 2,
    }
    o = state.summarize_objects(limit=2)
    assert o["total_objects"] == 3
    assert o["total_size"] == (8 << 20) + 5
    assert [x.object_id for x in o["objects"]] == ["c100000000", "b100000000"]
    assert o["truncated"] == 1
    assert o["by_where"]["SPILLED"] == {"count": 1, "size": 5 << 20}
    assert o["by_node"][NODE] == {"count": 2, "size": (3 << 20) + 5}
    text = state.memory_summary()
    assert text.splitlines()[0] == "3 object(s), 8.0 MiB in all"
    lines = text.splitlines()
    big = next(line for line in lines if line.startswith("c100000000"))
    assert "5.0 MiB" in big
    assert "SPILLED" in big
    assert "worker pid 201" in big
    assert "driver pid 7, task a8" in next(line for line in lines if line.startswith("b100000000"))


# --------------------------------------------------------------------------- text
def test_table_is_aligned():
    rows = [
        {"task_id": "a1", "name": "f", "attempt": 1, "duration_s": 0.5, "error": None},
        {
            "task_id": "a22",
            "name": "longer_name",
            "attempt": 12,
            "duration_s": None,
            "error": "ValueError: " + "x" * 100,
        },
    ]
    lines = _listing.format_table(rows).splitlines()
    assert lines[0].split() == ["TASK_ID", "NAME", "ATTEMPT", "DURATION_S", "ERROR"]
    starts = [lines[0].index(h) for h in ("NAME", "ATTEMPT", "DURATION_S", "ERROR")]
    for line in lines[1:]:
        assert [line[s - 2 : s] for s in starts] == ["  "] * 4  # columns start at the same place
    assert lines[1].split()[2:4] == ["1", "0.5"]
    assert lines[1].endswith("-")
    assert lines[2].endswith("…")
    assert len(lines[2]) - lines[2].index("ValueError") == 48
    # numbers right-aligned under their header
    assert lines[1][: lines[0].index("ATTEMPT") + len("ATTEMPT")].endswith(" 1")
    assert _listing.format_table([]) == "(none)"


def test_records_and_cells():
    text = _listing.format_records([{"task_id": "a3", "error": "E: x", "traceback": TB}], "task_id")
    assert text.splitlines()[0] == "--- task a3 ---"
    assert "traceback:\n    Traceback (most recent call last):" in text
    assert _listing.cell("resources_total", {"CPU": 2.0, "memory": 8 * 2**30}) == (
        "CPU: 2, memory: 8.0 GiB"
    )
    assert _listing.cell("size", 1536) == "1.5 KiB"
    assert _listing.cell("holders", []) == "-"
    assert _listing.cell("alive", True) == "true"
    assert _listing.cell("start_time", T0 + 0.25).endswith(".250")


# --------------------------------------------------------------------------- CLI
def run(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_cli_list_table_json_and_detail(fake):
    out = run("list", "tasks")
    assert out.exit_code == 0, out.output
    lines = out.output.splitlines()
    assert lines[0].split()[:3] == ["TASK_ID", "NAME", "STATE"]
    assert len(lines) == 1 + 8 + 2
    assert lines[-1] == "8 task(s)"
    assert fake[-1][0] == "auto"
    out = run(
        "list",
        "tasks",
        "--filter",
        "state=FAILED",
        "--format",
        "json",
        "--detail",
        "--address",
        "10.0.0.1:6390",
    )
    rows = json.loads(out.output)
    assert [r["task_id"] for r in rows] == ["a3"]
    assert rows[0]["traceback"] == TB
    assert fake[-1][0] == "10.0.0.1:6390"
    out = run("list", "tasks", "--detail", "-f", "state=failed")
    assert "--- task a3 ---" in out.output
    assert "ValueError: boom" in out.output
    out = run("list", "tasks", "--limit", "2", "-f", "duration_s>0.01")
    assert "showing 2 of 4 tasks" in out.output
    for resource in ("actors", "objects", "nodes", "workers"):
        out = run("list", resource)
        assert out.exit_code == 0
        assert out.output.split()[0] == _listing.COMPACT[resource][0].upper()


def test_cli_errors_are_clear(fake, monkeypatch):
    out = CliRunner().invoke(cli, ["list", "tasks", "--filter", "colour=red"])
    assert out.exit_code == 2
    assert "unknown filter key 'colour'" in out.output
    assert "Traceback" not in out.output
    out = CliRunner().invoke(cli, ["list", "tasks", "--filter", "state"])
    assert out.exit_code == 2
    assert "is not KEY=VALUE" in out.output

    @contextlib.contextmanager
    def nowhere(address):
        raise ConnectionError("address='auto' found no running cluster on this machine")
        yield

    monkeypatch.setattr(_listing, "open_source", nowhere)
    for args in (["list", "nodes"], ["summary", "tasks"], ["memory"], ["timeline"]):
        out = CliRunner().invoke(cli, args)
        assert out.exit_code == 1, args
        assert "no running cluster" in out.output
        assert "Traceback" not in out.output


def test_cli_summary_memory_and_timeline(fake, tmp_path):
    out = run("summary", "tasks")
    lines = out.output.splitlines()
    assert lines[0] == "8 task(s)"
    assert lines[1].split()[:3] == ["FUNC_OR_CLASS_NAME", "TYPE", "TOTAL"]
    assert lines[2].split()[:3] == ["f", "NORMAL_TASK", "4"]
    assert json.loads(run("summary", "tasks", "--format", "json").output)["total_tasks"] == 8
    assert "Counter" in run("summary", "actors").output
    assert "3 object(s)" in run("summary", "objects").output
    out = run("memory", "--limit", "1")
    assert "c100000000" in out.output
    assert "b100000000" not in out.output
    assert "2 smaller object(s)" in out.output
    assert json.loads(run("memory", "--format", "json").output)["total_objects"] == 3
    path = tmp_path / "trace.json"
    out = run("timeline", "-o", str(path))
    assert out.exit_code == 0
    assert f"to {path}" in out.output
    trace = json.loads(path.read_text())
    assert trace["otherData"]["tasks"] == 5  # a1, a2, a3, a4's first attempt, a6
    assert sum(e["ph"] == "X" for e in trace["traceEvents"]) == 5
    assert sum(e["ph"] == "s" for e in trace["traceEvents"]) == 1  # a1 → a2
    printed = json.loads(run("timeline", "-o", "-").output)
    assert printed["otherData"]["tasks"] == 5


def test_public_names():
    import rtml

    assert state.__all__ == [
        "StateRecord",
        "list_actors",
        "list_nodes",
        "list_objects",
        "list_tasks",
        "list_workers",
        "memory_summary",
        "summarize_actors",
        "summarize_objects",
        "summarize_tasks",
    ]
    assert all(callable(getattr(state, name)) for name in state.__all__)
    assert "state" in rtml.util.__all__
    assert rtml.util.state is state
    assert "timeline" in rtml.__all__
    assert rtml.timeline.__module__ == "rtml._api"
