"""The timeline: task events → Chrome trace event format, checked against the format's required
fields, with synthetic events (no processes).

Run as a script for the size and build time of the timeline of 100,000 tasks:
``python tests/unit/test_timeline.py [N]``.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import pytest

from rtml._control._events import EventLog, EventPage, TaskEvent
from rtml._observability._timeline import build_trace, dump_trace, executions, trace_of_source

T0 = 1_700_000_000.0


def ev(
    task: int,
    state: str,
    start: float | None = None,
    end: float | None = None,
    node: str = "n1",
    pid: int | None = 100,
    attempt: int = 1,
    func: str = "f",
    **extra: Any,
) -> dict[str, Any]:
    """A compact event (times in seconds after T0)."""
    e: dict[str, Any] = {
        "task_id": format(task, "x"),
        "attempt": attempt,
        "state": state,
        "time": T0 + (end if end is not None else 0.0),
        "node_id": node,
        "worker_id": pid,
        "name": func,
        "func": func,
        "submitted": T0,
        **extra,
    }
    if start is not None and end is not None:
        e["start"], e["end"] = T0 + start, T0 + end
    return e


def synthetic_events(n: int, nodes: int = 2, workers: int = 8) -> list[dict[str, Any]]:
    """``n`` finished tasks on ``nodes`` x ``workers`` rows; each takes its predecessor on the
    same row as an argument, every 50th fails. Ids are as long as real ones (11 hex digits)."""
    base = 0x100_0000_0000
    out = []
    per_row = 50e-6
    for i in range(n):
        row = i % (nodes * workers)
        slot = i // (nodes * workers)
        start = slot * per_row
        deps = [format(base + i - nodes * workers, "x")] if i >= nodes * workers else []
        failed = i % 50 == 49
        extra: dict[str, Any] = {"deps": deps} if deps else {}
        if failed:
            extra.update(error="ValueError: synthetic", traceback="Traceback ...\nValueError")
        out.append(
            ev(
                base + i,
                "FAILED" if failed else "FINISHED",
                start,
                start + 40e-6,
                node=f"node{row // workers}",
                pid=1000 + row,
                func=f"fn{i % 7}",
                **extra,
            )
        )
    return out


REQUIRED = {"ph", "ts", "pid", "tid", "name"}


def validate(trace: Any) -> list[dict[str, Any]]:
    """Check a trace against the Chrome trace event format's required fields; returns its
    events."""
    assert json.loads(json.dumps(trace)) == trace  # plain JSON, round-trips
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    assert isinstance(events, list)
    if isinstance(trace, dict):
        assert trace["displayTimeUnit"] in ("ms", "ns")
    flows: dict[Any, list[str]] = {}
    for e in events:
        missing = REQUIRED - e.keys()
        assert not missing, f"{e} lacks {missing}"
        assert isinstance(e["ph"], str)
        assert len(e["ph"]) == 1
        assert isinstance(e["ts"], (int, float))
        assert e["ts"] >= 0
        assert isinstance(e["pid"], int)
        assert isinstance(e["tid"], int)
        assert isinstance(e["name"], str)
        assert e["name"]
        if e["ph"] == "X":
            assert isinstance(e["dur"], (int, float))
            assert e["dur"] >= 0
        elif e["ph"] in ("s", "f"):
            assert "id" in e
            assert e["cat"]
            flows.setdefault((e["cat"], e["name"], e["id"]), []).append(e["ph"])
        elif e["ph"] == "M":
            assert e["name"] in (
                "process_name",
                "process_sort_index",
                "thread_name",
                "thread_sort_index",
            )
            assert isinstance(e["args"], dict)
        else:
            raise AssertionError(f"unexpected phase {e['ph']!r}")
    for key, phases in flows.items():
        assert sorted(phases) == ["f", "s"], f"flow {key} is {phases}"
    return events


def slices(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e["ph"] == "X"]


def enclosing(events: list[dict[str, Any]], flow: dict[str, Any]) -> dict[str, Any]:
    """The slice a flow event binds to (same row, ts inside it)."""
    found = [
        s
        for s in slices(events)
        if s["pid"] == flow["pid"]
        and s["tid"] == flow["tid"]
        and s["ts"] <= flow["ts"] <= s["ts"] + s["dur"]
    ]
    assert len(found) == 1, f"{flow} binds to {found}"
    return found[0]


def test_rows_slices_and_names():
    events = [
        ev(1, "FINISHED", 0.0, 0.010, node="a", pid=11),
        ev(2, "FINISHED", 0.002, 0.005, node="b", pid=21, func="g"),
        ev(3, "FINISHED", 0.011, 0.020, node="a", pid=12),
    ]
    nodes = [
        {"node_id": "b", "index": 1, "is_head": False},
        {"node_id": "a", "index": 0, "is_head": True},
    ]
    out = validate(build_trace(events, nodes))
    meta = {(e["name"], e["pid"], e["tid"]): e["args"] for e in out if e["ph"] == "M"}
    assert meta[("process_name", 1, 0)] == {"name": "node a (head)"}  # the head comes first
    assert meta[("process_name", 2, 0)] == {"name": "node b"}
    assert meta[("thread_name", 1, 11)] == {"name": "worker 11"}
    assert meta[("thread_name", 1, 12)] == {"name": "worker 12"}
    assert meta[("thread_name", 2, 21)] == {"name": "worker 21"}
    xs = {s["args"]["task_id"]: s for s in slices(out)}
    assert xs["1"]["ts"] == 0
    assert xs["1"]["dur"] == pytest.approx(10_000, abs=0.5)
    assert xs["2"]["ts"] == pytest.approx(2_000, abs=0.5)
    assert xs["2"]["dur"] == pytest.approx(3_000, abs=0.5)
    assert (xs["2"]["pid"], xs["2"]["tid"], xs["2"]["name"]) == (2, 21, "g")
    assert xs["3"]["args"] == {
        "task_id": "3",
        "func": "f",
        "attempt": 1,
        "state": "FINISHED",
        "queued_ms": pytest.approx(11.0),
    }


def test_dependency_arrows_go_from_producer_end_to_consumer_start():
    events = [
        ev(1, "FINISHED", 0.0, 0.010, pid=11),
        ev(2, "FINISHED", 0.0, 0.004, pid=12),
        ev(3, "FINISHED", 0.012, 0.015, pid=12, deps=["1", "2", "1"]),
        ev(4, "FINISHED", 0.016, 0.017, pid=11, deps=["99"]),
    ]  # producer not in the log
    trace = build_trace(events)
    out = validate(trace)
    starts = [e for e in out if e["ph"] == "s"]
    ends = [e for e in out if e["ph"] == "f"]
    assert len(starts) == len(ends) == 2 == trace["otherData"]["dependencies"]
    assert all(e["bp"] == "e" for e in ends)
    for s in starts:
        f = next(e for e in ends if e["id"] == s["id"])
        producer, consumer = enclosing(out, s), enclosing(out, f)
        assert consumer["args"]["task_id"] == "3"
        assert s["ts"] == pytest.approx(producer["ts"] + producer["dur"], abs=1.0)
        assert f["ts"] == pytest.approx(consumer["ts"], abs=1.0)
    assert {enclosing(out, s)["args"]["task_id"] for s in starts} == {"1", "2"}


def test_failed_retried_and_cancelled_are_marked():
    events = [
        ev(1, "RETRIED", 0.0, 0.001, error="WorkerCrashedError: died"),
        ev(
            1,
            "FAILED",
            0.002,
            0.003,
            attempt=2,
            error="ValueError: boom",
            traceback="Traceback (most recent call last):\nValueError: boom\n",
        ),
        ev(2, "CANCELLED", 0.004, 0.005),
        ev(3, "FINISHED", 0.004, 0.006, deps=["1"]),
    ]
    out = validate(build_trace(events))
    by = {(s["args"]["task_id"], s["args"]["attempt"]): s for s in slices(out)}
    failed = by[("1", 2)]
    assert failed["cname"] == "terrible"
    assert failed["name"] == "f [FAILED]"
    assert failed["args"]["error"] == "ValueError: boom"
    assert "Traceback" in failed["args"]["traceback"]
    assert by[("1", 1)]["cname"] == "bad"
    assert by[("1", 1)]["args"]["state"] == "RETRIED"
    assert by[("2", 1)]["cname"] == "grey"
    assert "cname" not in by[("3", 1)]
    # The arrow into task 3 comes from task 1's last attempt.
    s = next(e for e in out if e["ph"] == "s")
    assert enclosing(out, s) is failed


def test_running_and_end_events_pair_and_missing_keys_are_tolerated():
    events = [
        {"task_id": 7, "attempt": 1, "state": "SUBMITTED", "time": T0},
        {
            "task_id": 7,
            "attempt": 1,
            "state": "RUNNING",
            "time": T0 + 1,
            "node_id": "x",
            "worker_id": 5,
        },
        {"task_id": 7, "attempt": 1, "state": "FINISHED", "time": T0 + 3},
        {"task_id": 8, "attempt": 1, "state": "FINISHED", "time": T0 + 2},  # never ran here
        {"task_id": 9, "attempt": 1, "state": "FORWARDED", "time": T0 + 2},
        {
            "task_id": 10,
            "attempt": 1,
            "state": "FINISHED",
            "time": T0 + 4,
            "start": T0 + 3.5,
            "end": T0 + 4,
            "worker_id": "w-1",
        },  # a worker id that is not a pid, no node
        TaskEvent(
            task_id=11,
            attempt=1,
            state="FINISHED",
            time=T0 + 5,
            extra={"start": T0 + 4, "end": T0 + 5},
        ),  # no worker: the driver's row
    ]
    runs = executions(events)
    assert [(r.task_id, r.node_id, r.worker, r.start - T0, r.end - T0) for r in runs] == [
        ("7", "x", 5, 1.0, 3.0),
        ("a", "?", "w-1", 3.5, 4.0),
        ("b", "?", None, 4.0, 5.0),
    ]
    out = validate(build_trace(events))
    names = {e["args"]["name"] for e in out if e["name"] == "thread_name"}
    assert names == {"worker 5", "worker w-1", "driver"}
    assert validate(build_trace([])) == []


def test_array_form_and_file(tmp_path):
    events = synthetic_events(200)
    trace = build_trace(events, dropped=3)
    assert trace["otherData"]["tasks"] == 200
    assert trace["otherData"]["dropped_events"] == 3
    assert trace["otherData"]["origin_epoch_s"] == pytest.approx(T0)
    validate(trace["traceEvents"])  # the array form is valid on its own
    path = tmp_path / "t.json"
    size = dump_trace(trace, str(path))
    assert size == path.stat().st_size
    validate(json.loads(path.read_text()))


class PagedSource:
    """A fake StateSource holding an EventLog (pages of at most ``page`` events)."""

    def __init__(self, records: list[dict[str, Any]], capacity: int = 100_000) -> None:
        self.log = EventLog(capacity)
        self.log.append(records)  # type: ignore[arg-type]
        self.calls = 0

    def task_events(self, since: int = 0, limit: int | None = None) -> EventPage:
        self.calls += 1
        return self.log.query(since=since, limit=limit)

    def nodes(self) -> list[dict[str, Any]]:
        return [
            {"node_id": "node1", "index": 1, "is_head": False},
            {"node_id": "node0", "index": 0, "is_head": True},
        ]


def test_trace_of_source_reads_every_page_and_counts_drops(monkeypatch):
    from rtml._observability import _listing

    source = PagedSource(synthetic_events(1_000), capacity=900)
    real = _listing.read_events
    monkeypatch.setattr(_listing, "read_events", lambda s: real(s, chunk=128))
    trace = trace_of_source(source)
    assert source.calls > 7
    assert trace["otherData"]["tasks"] == 900
    assert trace["otherData"]["dropped_events"] == 100
    out = validate(trace)
    heads = [e["args"]["name"] for e in out if e["name"] == "process_name"]
    assert heads == ["node node0 (head)", "node node1"]


def test_ten_thousand_tasks_stay_valid():
    out = validate(build_trace(synthetic_events(10_000)))
    assert len(slices(out)) == 10_000
    assert sum(e["ph"] == "s" for e in out) == 10_000 - 16
    assert sum(e.get("cname") == "terrible" for e in out) == 200


def measure(n: int = 100_000) -> dict[str, float]:
    """Build and serialize the timeline of ``n`` synthetic tasks: bytes and seconds."""
    events = [TaskEvent.of(e) for e in synthetic_events(n)]
    t = time.perf_counter()
    trace = build_trace(events)
    built = time.perf_counter() - t
    text = json.dumps(trace, separators=(",", ":"))
    total = time.perf_counter() - t
    return {
        "tasks": n,
        "trace_events": len(trace["traceEvents"]),
        "bytes": len(text),
        "bytes_per_task": len(text) / n,
        "build_s": built,
        "build_and_json_s": total,
    }


if __name__ == "__main__":
    print(measure(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000))  # noqa: T201
