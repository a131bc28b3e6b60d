"""`rtml.util.state`, `rtml.timeline` and `rtml list|summary|memory|timeline` against real runs:
the embedded runtime, and a two-node cluster read from this driver and from the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest

import rtml
from conftest import wait_for
from rtml.testing import Cluster
from rtml.util import state


@rtml.remote
def inc(x):
    return x + 1


@rtml.remote
def double(x):
    return 2 * x


@rtml.remote
def boom(x):
    raise ValueError(f"boom {x}")


@rtml.remote
def after_gate(path, value):
    wait_for(lambda: os.path.exists(path), timeout=60, what=path)
    return value


@rtml.remote
class Counter:
    def __init__(self):
        self.n = 0

    def incr(self):
        self.n += 1
        return self.n


def check_trace(trace: Any) -> list[dict[str, Any]]:
    """The Chrome trace event format's required fields, on every event."""
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    for e in events:
        assert {"ph", "ts", "pid", "tid", "name"} <= e.keys(), e
        if e["ph"] == "X":
            assert e["dur"] >= 0
        if e["ph"] in ("s", "f"):
            assert "id" in e
    return events


def by_task(events: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {e["args"]["task_id"]: e for e in events if e["ph"] == "X"}


def settled(ids: set[str]) -> list[Any] | None:
    """The task rows once every task in ``ids`` is in a final state."""
    rows = [r for r in state.list_tasks(limit=10_000, detail=True) if r.task_id in ids]
    done = len(rows) == len(ids) and all(r.state in ("FINISHED", "FAILED") for r in rows)
    return rows if done else None


# --------------------------------------------------------------------------- embedded
@pytest.fixture(scope="class")
def embedded():
    """One embedded runtime for the tests of ``TestEmbedded`` (shut down before the cluster
    test starts its own)."""
    rtml.init(num_cpus=2)
    yield
    rtml.shutdown()


@pytest.mark.usefixtures("embedded")
class TestEmbedded:
    def test_listings_follow_tasks_live_and_finished(self, gate_path):
        gated = after_gate.remote(str(gate_path), 5)
        waiting = inc.remote(gated)
        gated_id, waiting_id = gated.task_id(), waiting.task_id()
        wait_for(
            lambda: (
                {r.task_id: r.state for r in state.list_tasks(limit=10_000)}.get(gated_id)
                == "RUNNING"
            ),
            30,
            what="the gated task to be listed RUNNING",
        )
        live = {
            r.task_id: r
            for r in state.list_tasks(filters=[("state", "!=", "FINISHED")], limit=10_000)
        }
        assert live[waiting_id].state == "PENDING_ARGS"
        running = live[gated_id]
        assert running.name == "after_gate"
        assert running.worker_pid in {w.pid for w in state.list_workers()}
        busy = state.list_workers(filters=[("state", "!=", "IDLE")], detail=True)
        assert any(gated_id in w.tasks for w in busy)
        gate_path.touch()
        assert rtml.get(waiting, timeout=30) == 6
        rows = {
            r.task_id: r
            for r in wait_for(
                lambda: settled({gated_id, waiting_id}), 30, what="both tasks to be listed FINISHED"
            )
        }
        assert rows[waiting_id].deps == [gated_id]
        assert rows[waiting_id].start_time >= rows[gated_id].end_time
        assert rows[gated_id].duration_s > 0

    def test_failures_actors_objects_nodes_and_summaries(self):
        failed = boom.remote(7)
        with pytest.raises(ValueError):
            rtml.get(failed, timeout=30)
        counter = Counter.remote()
        assert rtml.get([counter.incr.remote() for _ in range(3)], timeout=30) == [1, 2, 3]
        big = rtml.put(b"x" * 300_000)
        fid = failed.task_id()
        wait_for(lambda: settled({fid}), 30, what="the failed task to be listed")

        (row,) = state.list_tasks(filters=[("task_id", "=", fid)], detail=True)
        assert row.state == "FAILED"
        assert row.error == "ValueError: boom 7"
        assert "raise ValueError" in row.traceback
        assert row.node_id
        assert row.worker_pid
        assert state.list_tasks(filters=[("task_id", "=", fid)])[0].error == "ValueError: boom 7"

        (actor,) = state.list_actors(filters=[("class_name", "=", "Counter")])
        assert actor.state == "ALIVE"
        assert actor.pid in {w.pid for w in state.list_workers()}

        def incr_calls() -> list[Any] | None:
            rows = state.list_tasks(
                filters=[("type", "=", "ACTOR_TASK"), ("state", "=", "FINISHED")], detail=True
            )
            calls = [r for r in rows if "incr" in r.name]
            return calls if len(calls) >= 3 else None

        calls = wait_for(incr_calls, 30, what="the actor's calls to be listed")
        assert {t.actor_id for t in calls} == {actor.actor_id}

        objects = {
            o.object_id: o
            for o in state.list_objects(filters=[("size", ">", 100_000)], detail=True)
        }
        put_id = big.hex()
        assert objects[put_id].where in ("SHARED_MEMORY", "SPILLED")
        assert any(h.startswith("driver") for h in objects[put_id].holders)
        summary = state.summarize_objects()
        assert summary["objects"][0].object_id == put_id  # the largest first
        assert put_id in state.memory_summary()

        (node,) = state.list_nodes()
        assert node.alive
        assert node.is_head
        assert node.resources_total["CPU"] == 2
        assert len(state.list_workers()) >= 2

        tasks = state.summarize_tasks()
        assert tasks["summary"]["boom"]["state_counts"].get("FAILED", 0) >= 1
        assert tasks["total_tasks"] == len(state.list_tasks(limit=100_000))
        assert tasks["total_actor_tasks"] >= 3
        actors = state.summarize_actors()
        assert actors["summary"]["Counter"]["state_counts"] == {"ALIVE": 1}

    def test_timeline_of_a_real_run(self, tmp_path):
        a = inc.remote(1)
        b = double.remote(a)
        c = inc.remote(b)
        assert rtml.get(c, timeout=30) == 5
        ids = {r.task_id() for r in (a, b, c)}
        wait_for(lambda: settled(ids), 30, what="the chain to be listed")

        path = tmp_path / "timeline.json"
        assert rtml.timeline(str(path)) is None
        trace = json.loads(path.read_text())
        assert trace["displayTimeUnit"] == "ms"
        events = check_trace(trace)
        slices = by_task(events)
        assert ids <= slices.keys()
        xa, xb, xc = (slices[r.task_id()] for r in (a, b, c))
        assert (xa["name"], xb["name"], xc["name"]) == ("inc", "double", "inc")
        assert xb["ts"] >= xa["ts"] + xa["dur"] - 1  # b ran after a (1 µs of rounding)
        rows = {
            (e["pid"], e["tid"]): e["args"]["name"] for e in events if e["name"] == "thread_name"
        }
        worker_pids = {w.pid for w in state.list_workers()}
        for x in (xa, xb, xc):
            assert x["tid"] in worker_pids
            assert rows[(x["pid"], x["tid"])] == f"worker {x['tid']}"
        node_names = [e["args"]["name"] for e in events if e["name"] == "process_name"]
        assert node_names == [f"node {state.list_nodes()[0].node_id} (head)"]

        def arrow(src: dict[str, Any], dst: dict[str, Any]) -> bool:
            for s in (
                e
                for e in events
                if e["ph"] == "s"
                and e["tid"] == src["tid"]
                and src["ts"] <= e["ts"] <= src["ts"] + src["dur"]
            ):
                f = next(e for e in events if e["ph"] == "f" and e["id"] == s["id"])
                if f["tid"] == dst["tid"] and dst["ts"] <= f["ts"] <= dst["ts"] + dst["dur"]:
                    return True
            return False

        assert arrow(xa, xb)
        assert arrow(xb, xc)
        assert not arrow(xa, xc)
        listed = rtml.timeline()
        assert isinstance(listed, list)
        assert ids <= by_task(check_trace(listed)).keys()


# --------------------------------------------------------------------------- cluster
def _rtml(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.run(
        [sys.executable, "-m", "rtml", *args], capture_output=True, text=True, timeout=120, env=env
    )


@pytest.mark.slow
def test_cluster_state_from_the_driver_and_the_cli(tmp_path, monkeypatch):
    monkeypatch.setenv("RTML_STATE_DIR", str(tmp_path / "state"))  # the token goes there
    (tmp_path / "state").mkdir(mode=0o700)
    monkeypatch.delenv("RTML_ADDRESS", raising=False)
    monkeypatch.delenv("RTML_TOKEN", raising=False)
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    try:
        side = c.add_node(num_cpus=1, resources={"side": 1})
        c.connect()
        head = c.head_node
        assert head is not None
        first = inc.remote(1)
        second = double.options(resources={"side": 1}).remote(first)
        failed = boom.remote(0)
        assert rtml.get(second, timeout=60) == 4
        with pytest.raises(ValueError):
            rtml.get(failed, timeout=60)
        ids = {r.task_id() for r in (first, second, failed)}
        rows = {
            r.task_id: r
            for r in wait_for(lambda: settled(ids), 30, what="the cluster's tasks to be listed")
        }
        assert rows[second.task_id()].node_id == side.node_id
        assert rows[first.task_id()].node_id == head.node_id
        assert rows[failed.task_id()].error == "ValueError: boom 0"
        assert {n.node_id for n in state.list_nodes(filters=[("alive", "=", True)])} == {
            head.node_id,
            side.node_id,
        }
        assert {w.node_id for w in state.list_workers()} == {head.node_id, side.node_id}
        events = check_trace(rtml.timeline())
        assert len({e["pid"] for e in events if e["ph"] == "X"}) == 2  # a process per node

        listed = _rtml(
            "list",
            "tasks",
            "--address",
            c.address,
            "--format",
            "json",
            "--detail",
            "--limit",
            "1000",
        )
        assert listed.returncode == 0, listed.stderr
        by_id = {r["task_id"]: r for r in json.loads(listed.stdout)}
        assert ids <= by_id.keys()
        assert by_id[failed.task_id()]["traceback"].rstrip().endswith("boom 0")
        table = _rtml("list", "nodes", "--address", c.address)
        assert table.returncode == 0
        assert table.stdout.splitlines()[0].startswith("NODE_ID")
        assert head.node_id in table.stdout
        assert side.node_id in table.stdout
        summary = _rtml("summary", "tasks", "--address", c.address)
        assert summary.returncode == 0
        assert "boom" in summary.stdout
        memory = _rtml("memory", "--address", c.address)
        assert memory.returncode == 0
        assert "object(s)" in memory.stdout
        path = tmp_path / "cluster-trace.json"
        written = _rtml("timeline", "--address", c.address, "-o", str(path))
        assert written.returncode == 0, written.stderr
        assert by_task(check_trace(json.loads(path.read_text()))).keys() >= ids
        bad = _rtml("list", "tasks", "--address", c.address, "--filter", "colour=red")
        assert bad.returncode == 2
        assert "unknown filter key 'colour'" in bad.stderr
    finally:
        c.shutdown()
    gone = _rtml("list", "tasks", "--address", c.address)
    assert gone.returncode == 1
    assert "Error:" in gone.stderr
    assert "Traceback" not in gone.stderr
    with pytest.raises(RuntimeError, match="init"):
        rtml.timeline()
