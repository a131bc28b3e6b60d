"""A dataflow spans the nodes of a cluster, and `rtml list streams` shows it from another
process."""

from __future__ import annotations

import json
import subprocess
import sys

import rtml
from conftest import wait_for
from rtml import stream as rs
from rtml.testing import Cluster
from rtml.util import state


def test_a_dataflow_spans_nodes_and_is_listed_by_the_cli():
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    try:
        cluster.add_node(num_cpus=1)
        cluster.connect()
        sink = rs.CollectSink()
        flow = rs.Dataflow("spread")
        (
            flow.source(rs.IterableSource(list(range(4000)), partitions=2, rate=500))
            .key_by(lambda x: x % 10)
            .stateful_map(lambda s, x: ((s or 0) + x, x))
            .sink(sink)
        )
        run = flow.run(parallelism=2)
        nodes = {
            a["node_id"]
            for a in state.list_actors()
            if (a["name"] or "").startswith("rtml.stream:spread:")
        }
        assert len(nodes) == 2, "operator actors were not spread over both nodes"
        wait_for(
            lambda: [m for m in rs.list_streams() if m["name"] == "spread"],
            timeout=20,
            what="the dataflow in the registry",
        )
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "rtml",
                "list",
                "streams",
                "--address",
                cluster.address,
                "--format",
                "json",
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 0, out.stderr
        (listed,) = [m for m in json.loads(out.stdout) if m["name"] == "spread"]
        assert listed["status"] == "running"
        assert listed["parallelism"] == 2
        table = subprocess.run(
            [sys.executable, "-m", "rtml", "list", "streams", "--address", cluster.address],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert "spread" in table.stdout and "EVENTS_IN" in table.stdout, table.stdout  # noqa: PT018
        run.wait(timeout=60)
        assert sorted(sink.items()) == list(range(4000))
    finally:
        rtml.shutdown()
        cluster.shutdown()


def test_a_dataflow_survives_losing_a_node_with_exactly_once_output():
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1}, heartbeat_timeout=2.0)
    try:
        worker = cluster.add_node(num_cpus=1)
        cluster.connect()
        n = 3000
        sink = rs.CollectSink(exactly_once=True)  # on the head node: created before the run
        flow = rs.Dataflow("node-loss")
        (
            flow.source(rs.IterableSource(list(range(n)), partitions=2, rate=600))
            .key_by(lambda x: x % 10)
            .stateful_map(lambda s, x: ((s or 0) + 1, x))
            .sink(sink)
        )
        run = flow.run(parallelism=2, checkpoint_every=0.2)
        wait_for(lambda: run.last_checkpoint >= 3, timeout=30, what="a few checkpoints")
        cluster.remove_node(worker, allow_graceful=False)
        wait_for(lambda: run.restarts >= 1, timeout=60, what="recovery on the head node")
        run.wait(timeout=120)
        assert sorted(sink.items()) == list(range(n))
    finally:
        rtml.shutdown()
        cluster.shutdown()
