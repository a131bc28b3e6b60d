"""Worker output kept per worker (`rtml logs`), every worker's stack (`rtml stack`), and what a
failed task tells: remote traceback, the task that submitted it, node and pid."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import rtml
from conftest import wait_for
from rtml.testing import Cluster


@pytest.fixture(scope="module")
def cluster():
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    try:
        c.add_node(num_cpus=1, resources={"side": 1})
        c.connect()
        yield c
    finally:
        c.shutdown()


def _rtml(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.run(
        [sys.executable, "-m", "rtml", *args], capture_output=True, text=True, timeout=120, env=env
    )


def test_rtml_logs_lists_and_prints_worker_output(cluster):
    @rtml.remote(resources={"side": 1})
    def chatty():
        print("a line for the log")  # noqa: T201
        print("an error line", file=sys.stderr)  # noqa: T201
        return os.getpid()

    pid = rtml.get(chatty.remote(), timeout=30)
    listing = _rtml("logs", "--address", cluster.address)
    assert listing.returncode == 0, listing.stderr
    assert f"pid {pid}" in listing.stdout
    text = _rtml("logs", str(pid), "--address", cluster.address)
    assert text.returncode == 0, text.stderr
    assert "chatty) a line for the log" in text.stdout
    assert "chatty) an error line" in text.stdout
    assert "[stderr] (" in text.stdout
    tail = _rtml("logs", str(pid), "--tail", "1", "--address", cluster.address)
    assert tail.stdout.count("\n") == 1
    missing = _rtml("logs", "999999999", "--address", cluster.address)
    assert missing.returncode != 0
    assert "no log for worker pid" in missing.stderr


def test_rtml_stack_shows_what_each_worker_is_doing(cluster, gate_path):
    @rtml.remote(resources={"side": 1})
    def stuck_in_here(path):
        import time

        while not os.path.exists(path):
            time.sleep(0.01)
        return 1

    ref = stuck_in_here.remote(str(gate_path))
    try:
        out = _rtml("stack", "--no-py-spy", "--address", cluster.address)
        assert out.returncode == 0, out.stderr
        assert "=== worker pid" in out.stdout
        assert "stuck_in_here" in out.stdout  # the frame the hung task is in
    finally:
        gate_path.touch()
    assert rtml.get(ref, timeout=30) == 1


def test_a_failed_task_names_its_traceback_parent_node_and_pid(cluster):
    from rtml.util.state import list_tasks

    @rtml.remote(resources={"side": 1})
    def inner():
        raise ArithmeticError("deep down")

    @rtml.remote
    def outer():
        return rtml.get(inner.remote())

    with pytest.raises(ArithmeticError) as info:
        rtml.get(outer.remote(), timeout=30)
    text = str(info.value)
    assert "deep down" in text
    assert "inner" in text
    assert "pid=" in text

    def failed_inner():
        rows = list_tasks(filters=[("state", "=", "FAILED")], detail=True, limit=1000)
        return [r for r in rows if r["name"].endswith(".inner")]

    row = wait_for(failed_inner, 10, what="the failed task in the listing")[0]
    assert "ArithmeticError: deep down" in row["error"]
    assert "deep down" in row["traceback"]
    assert row["node_id"] == cluster.worker_nodes[0].node_id
    assert row["worker_pid"]
    parents = wait_for(
        lambda: list_tasks(filters=[("task_id", "=", row["parent_task_id"])], detail=True),
        10,
        what="the parent task",
    )
    assert parents[0]["name"].endswith(".outer")
    assert parents[0]["state"] == "FAILED"
