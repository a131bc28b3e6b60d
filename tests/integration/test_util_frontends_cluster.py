"""Metrics recorded on two nodes of a real cluster add up in one place, and a Dask graph runs
across the nodes."""

from __future__ import annotations

import pytest

import rtml
from conftest import wait_for
from rtml.testing import Cluster
from rtml.util import metrics

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster():
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    try:
        c.add_node(num_cpus=1, resources={"side": 2})
        c.connect()
        yield c
    finally:
        c.shutdown()


@rtml.remote
def record(where):
    from rtml.util.metrics import Counter

    Counter("cluster_hits", tag_keys=("node",)).inc(tags={"node": where})
    return rtml.get_runtime_context().get_node_id()


def test_metrics_from_both_nodes_are_summed(cluster):
    on_side = [record.options(resources={"side": 1}).remote("side") for _ in range(3)]
    on_head = [record.remote("head") for _ in range(2)]
    nodes = set(rtml.get(on_side + on_head, timeout=120))
    assert cluster.worker_nodes[0].node_id in nodes
    want = {("side",): 3.0, ("head",): 2.0}
    wait_for(
        lambda: metrics.snapshot().get("cluster_hits", {}).get("series") == want,
        timeout=60,
        what="counts from both nodes",
    )


def test_a_dask_graph_runs_on_the_cluster(cluster):
    da = pytest.importorskip("dask.array")
    from rtml.util.dask import ray_dask_get

    x = da.ones((200, 200), chunks=(50, 50))
    assert (x + x.T).sum().compute(scheduler=ray_dask_get, timeout=120) == 80000
