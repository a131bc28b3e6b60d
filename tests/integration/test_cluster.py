"""A local multi-node cluster: placement across nodes, objects pulled between node stores,
spillback, scheduling strategies, worker output, refused peers, nodes joining and leaving."""

from __future__ import annotations

import glob
import os
import socket
import struct
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import rtml
from conftest import wait_for
from rtml import exceptions as exc
from rtml.testing import Cluster
from rtml.util.scheduling_strategies import NodeAffinitySchedulingStrategy


@pytest.fixture(scope="module")
def cluster():
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    try:
        c.add_node(num_cpus=1, resources={"side": 2})
        c.connect()
        yield c
    finally:
        c.shutdown()


def head_id(c: Cluster) -> str:
    assert c.head_node is not None
    return c.head_node.node_id


def side_id(c: Cluster) -> str:
    return c.worker_nodes[0].node_id


@rtml.remote
def where(x=None):
    return rtml.get_runtime_context().get_node_id()


@rtml.remote
def ones(n):
    return np.ones(n, dtype=np.float64)


@rtml.remote
def total(a):
    return float(a.sum()), rtml.get_runtime_context().get_node_id()


def test_nodes_and_resources(cluster):
    nodes = rtml.nodes()
    assert {n["NodeID"] for n in nodes if n["Alive"]} == {head_id(cluster), side_id(cluster)}
    res = rtml.cluster_resources()
    assert res["CPU"] == 2
    assert res["side"] == 2
    assert rtml.get_runtime_context().get_node_id() == head_id(cluster)


def test_custom_resource_places_on_the_node_that_has_it(cluster):
    assert rtml.get(where.options(resources={"side": 1}).remote(), timeout=30) == side_id(cluster)


def test_large_result_made_on_another_node_is_pulled_to_the_driver(cluster):
    ref = ones.options(resources={"side": 1}).remote(2_000_000)  # 16 MB: two chunks
    a = rtml.get(ref, timeout=30)
    assert a.shape == (2_000_000,)
    assert a.sum() == 2_000_000


def test_large_value_put_by_the_driver_is_read_on_another_node(cluster):
    ref = rtml.put(np.arange(1_000_000, dtype=np.float64))
    s, node = rtml.get(total.options(resources={"side": 1}).remote(ref), timeout=30)
    assert s == float(np.arange(1_000_000).sum())
    assert node == side_id(cluster)


def test_object_on_one_node_feeds_tasks_on_both(cluster):
    ref = ones.options(resources={"side": 1}).remote(500_000)
    here = NodeAffinitySchedulingStrategy(head_id(cluster), soft=False)
    there = NodeAffinitySchedulingStrategy(side_id(cluster), soft=False)
    a = total.options(scheduling_strategy=here).remote(ref)
    b = total.options(scheduling_strategy=there).remote(ref)
    assert rtml.get([a, b], timeout=30) == [
        (500_000.0, head_id(cluster)),
        (500_000.0, side_id(cluster)),
    ]


def _head_load(cluster) -> dict:
    from rtml._control._client import ControlClient

    with ControlClient(cluster.address, cluster.token) as gcs:
        return gcs.get_node(head_id(cluster)).load


def _settled(cluster, key: str) -> int:
    """The head's counter once two heartbeats (0.5 s apart) agree on it."""
    last = [None]

    def same():
        v = _head_load(cluster).get(key, 0)
        ok, last[0] = v == last[0], v
        if not ok:
            time.sleep(0.6)
        return ok

    wait_for(same, 15, what=f"the head's {key} to settle")
    return last[0]


def test_many_readers_of_one_remote_object_pull_it_once(cluster):
    ref = ones.options(resources={"side": 1}).remote(300_000)
    assert rtml.wait([ref], timeout=30)[0]
    before = _settled(cluster, "pulls")
    here = NodeAffinitySchedulingStrategy(head_id(cluster), soft=False)
    refs = [total.options(scheduling_strategy=here).remote(ref) for _ in range(6)]
    assert {r[0] for r in rtml.get(refs, timeout=30)} == {300_000.0}
    wait_for(
        lambda: _head_load(cluster)["pulls"] == before + 1,
        10,
        what="exactly one pull of the object to the head",
    )


def test_default_placement_runs_a_task_where_its_large_input_is(cluster):
    there = NodeAffinitySchedulingStrategy(side_id(cluster), soft=False)
    ref = ones.options(scheduling_strategy=there).remote(2_000_000)  # 16 MB on the side node
    assert rtml.wait([ref], timeout=30)[0]
    before = _settled(cluster, "pulled_bytes")
    s, node = rtml.get(total.remote(ref), timeout=30)
    assert s == 2_000_000.0
    assert node == side_id(cluster)
    assert _settled(cluster, "pulled_bytes") == before  # nothing moved


def test_spillback_when_the_local_node_is_busy(cluster):
    @rtml.remote(num_cpus=1)
    def slow():
        time.sleep(0.3)
        return rtml.get_runtime_context().get_node_id()

    nodes = rtml.get([slow.remote() for _ in range(6)], timeout=60)
    assert set(nodes) == {head_id(cluster), side_id(cluster)}


def test_spread(cluster):
    refs = [where.options(scheduling_strategy="SPREAD").remote() for _ in range(8)]
    assert set(rtml.get(refs, timeout=30)) == {head_id(cluster), side_id(cluster)}


def test_node_affinity(cluster):
    hard = NodeAffinitySchedulingStrategy(side_id(cluster), soft=False)
    assert rtml.get(where.options(scheduling_strategy=hard).remote(), timeout=30) == side_id(
        cluster
    )
    bogus = NodeAffinitySchedulingStrategy("feedfacefeedface", soft=False)
    with pytest.raises(exc.TaskUnschedulableError, match="feedfacefeedface"):
        rtml.get(where.options(scheduling_strategy=bogus).remote(), timeout=30)
    soft = NodeAffinitySchedulingStrategy("feedfacefeedface", soft=True)
    assert rtml.get(where.options(scheduling_strategy=soft).remote(), timeout=30) in {
        head_id(cluster),
        side_id(cluster),
    }
    with pytest.raises(ValueError, match="scheduling_strategy"):
        where.options(scheduling_strategy="EVERYWHERE")


def test_nested_tasks_and_refs_inside_values_cross_nodes(cluster):
    @rtml.remote(resources={"side": 1})
    def outer():
        inner = [ones.remote(200_000), rtml.put(np.full(10, 7.0))]
        return inner  # refs owned by the side node, inside a value

    a_ref, b_ref = rtml.get(outer.remote(), timeout=30)
    assert rtml.get(a_ref, timeout=30).sum() == 200_000
    assert rtml.get(b_ref, timeout=30).tolist() == [7.0] * 10
    s, _node = rtml.get(total.remote(a_ref), timeout=30)
    assert s == 200_000.0


def test_errors_cross_nodes(cluster):
    @rtml.remote(resources={"side": 1})
    def boom():
        raise KeyError("over there")

    with pytest.raises(KeyError, match="over there"):
        rtml.get(boom.remote(), timeout=30)


def test_output_of_a_task_on_another_node_reaches_the_driver(cluster, capfd):
    @rtml.remote(resources={"side": 1})
    def speak():
        print("hello from the side node")  # noqa: T201
        return 1

    assert rtml.get(speak.remote(), timeout=30) == 1
    wait_for(
        lambda: "hello from the side node" in capfd.readouterr().out, 10, what="the output line"
    )


def test_objects_are_freed_on_the_node_that_stores_them(cluster):
    from rtml._control._client import ControlClient

    with ControlClient(cluster.address, cluster.token) as gcs:
        session = gcs.get_node(side_id(cluster)).extra["session"]

    def segments():
        return glob.glob(f"/dev/shm/rtml_{session}_*")

    ref = ones.options(resources={"side": 1}).remote(400_000)
    assert rtml.wait([ref], timeout=30)[0]  # finished; wait() does not pull it here
    wait_for(lambda: segments(), 10, what="the object in the side node's store")
    del ref
    wait_for(lambda: not segments(), 10, what="the side node's store to free it")


def test_cancel_a_task_running_on_another_node(cluster, tmp_path):
    started = tmp_path / "started"

    @rtml.remote(resources={"side": 1})
    def forever(path):
        open(path, "w").close()
        while True:
            time.sleep(0.01)

    ref = forever.remote(str(started))
    wait_for(started.exists, 30, what="the task to run on the side node")
    rtml.cancel(ref)
    with pytest.raises(exc.TaskCancelledError):
        rtml.get(ref, timeout=30)


def test_cancel_an_actor_call_running_on_another_node(cluster, tmp_path):
    started = tmp_path / "started"

    @rtml.remote(resources={"side": 1})
    class Looper:
        def loop(self, path):
            open(path, "w").close()
            for _ in range(3000):  # 30 s at most
                if rtml.get_runtime_context().is_canceled():
                    return "noticed"
                time.sleep(0.01)
            return "ran to the end"

        def ping(self):
            return "pong"

    a = Looper.remote()
    ref = a.loop.remote(str(started))
    wait_for(started.exists, 30, what="the call to run on the side node")
    rtml.cancel(ref)
    with pytest.raises(exc.TaskCancelledError):
        rtml.get(ref, timeout=30)
    assert rtml.get(a.ping.remote(), timeout=30) == "pong"  # the actor lives on
    rtml.kill(a)


def test_infeasible_task_waits_for_a_node_that_fits(cluster):
    ref = where.options(resources={"late": 1}).remote()
    ready, _ = rtml.wait([ref], timeout=0.5)
    assert not ready
    node = cluster.add_node(num_cpus=1, resources={"late": 1})
    try:
        assert rtml.get(ref, timeout=30) == node.node_id
    finally:
        cluster.remove_node(node)
    wait_for(
        lambda: not [n for n in rtml.nodes() if n["NodeID"] == node.node_id and n["Alive"]],
        15,
        what="the removed node to be marked dead",
    )


def test_a_second_driver_joins_the_running_cluster(cluster, tmp_path):
    script = tmp_path / "driver2.py"
    script.write_text(
        textwrap.dedent(f"""
        import rtml
        rtml.init(address={cluster.address!r}, namespace="second")

        @rtml.remote
        def double(x):
            return 2 * x

        print("RESULT", sum(rtml.get([double.remote(i) for i in range(50)], timeout=30)))
        print("NODES", len([n for n in rtml.nodes() if n["Alive"]]))
        rtml.shutdown()
    """)
    )
    out = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert out.returncode == 0, out.stderr
    assert "RESULT 2450" in out.stdout
    assert "NODES 2" in out.stdout
    assert rtml.get(where.remote(), timeout=30)  # this driver is unaffected


def test_a_peer_without_the_token_is_refused(cluster):
    from rtml._transport._auth import AuthError, connect

    with pytest.raises(AuthError):
        connect(cluster.address, b"x" * 32, timeout=5)
    node_address = cluster.head_node.address
    with pytest.raises(AuthError):
        connect(node_address, b"y" * 32, timeout=5)
    host, port = node_address.rsplit(":", 1)
    raw = socket.create_connection((host, int(port)), timeout=5)
    raw.sendall(b"GET / HTTP/1.1\r\n\r\n" * 10)  # garbage instead of a handshake
    raw.close()
    assert rtml.get(where.remote(), timeout=30) == head_id(cluster)


def test_a_garbage_frame_after_authenticating_closes_only_that_connection(cluster):
    from rtml._transport._auth import connect

    sock = connect(cluster.head_node.address, cluster.token)
    sock.sendall(struct.pack("<I", 12) + b"not a pickle")
    sock.settimeout(10)
    assert sock.recv(1) == b""  # the node hung up on us
    sock.close()
    sock = connect(cluster.head_node.address, cluster.token)
    sock.sendall(struct.pack("<I", 1 << 30 | 5))  # an oversized frame header
    assert sock.recv(1) == b""
    sock.close()
    assert rtml.get(where.remote(), timeout=30) == head_id(cluster)


@rtml.remote
class Counter:
    def __init__(self, start=0):
        self.n = start

    def add(self, k=1):
        self.n += k
        return self.n

    def node(self):
        return rtml.get_runtime_context().get_node_id()

    def pid(self):
        return os.getpid()


def test_actor_placed_on_another_node_by_resources(cluster):
    a = Counter.options(resources={"side": 1}).remote(10)
    assert rtml.get(a.node.remote(), timeout=30) == side_id(cluster)
    assert [rtml.get(a.add.remote(), timeout=30) for _ in range(3)] == [11, 12, 13]
    refs = [a.add.remote(2) for _ in range(20)]  # ordered, pipelined across the link
    assert rtml.get(refs, timeout=30) == list(range(15, 55, 2))


def test_actor_handles_work_from_every_node(cluster):
    a = Counter.options(resources={"side": 1}).remote()
    b = Counter.remote(100)  # on the head, where this driver is
    assert rtml.get(b.node.remote(), timeout=30) == head_id(cluster)

    @rtml.remote
    def use(x, y):
        return rtml.get(x.add.remote(5)), rtml.get(y.add.remote(1))

    there = NodeAffinitySchedulingStrategy(side_id(cluster), soft=False)
    here = NodeAffinitySchedulingStrategy(head_id(cluster), soft=False)
    assert rtml.get(use.options(scheduling_strategy=there).remote(a, b), timeout=30) == (5, 101)
    assert rtml.get(use.options(scheduling_strategy=here).remote(a, b), timeout=30) == (10, 102)


def test_named_actor_is_found_from_another_node_and_unique_in_the_cluster(cluster):
    there = NodeAffinitySchedulingStrategy(side_id(cluster), soft=False)
    c = Counter.options(name="cluster-wide", scheduling_strategy=there).remote(7)
    assert rtml.get(c.node.remote(), timeout=30) == side_id(cluster)

    @rtml.remote
    def bump(ns):
        return rtml.get(rtml.get_actor("cluster-wide", namespace=ns).add.remote())

    ns = rtml.get_runtime_context().namespace
    assert rtml.get(bump.remote(ns), timeout=30) == 8
    assert rtml.get(rtml.get_actor("cluster-wide").add.remote(), timeout=30) == 9
    with pytest.raises(ValueError, match="already exists"):
        Counter.options(name="cluster-wide").remote()
    same = Counter.options(name="cluster-wide", get_if_exists=True).remote()
    assert rtml.get(same.add.remote(), timeout=30) == 10
    rtml.kill(c)
    with pytest.raises(exc.ActorDiedError):
        rtml.get(c.add.remote(), timeout=30)
    wait_for(lambda: _no_actor_named("cluster-wide"), 10, what="the name to be freed")
    again = Counter.options(name="cluster-wide").remote(1)  # the name is free again
    assert rtml.get(again.add.remote(), timeout=30) == 2
    rtml.kill(again)


def _no_actor_named(name: str) -> bool:
    try:
        rtml.get_actor(name)
    except ValueError:
        return True
    return False


def test_remote_actor_ends_with_its_last_handle(cluster):
    import psutil

    a = Counter.options(resources={"side": 1}).remote()
    pid = rtml.get(a.pid.remote(), timeout=30)
    assert psutil.pid_exists(pid)
    del a
    wait_for(lambda: not psutil.pid_exists(pid), 15, what="the actor's process to exit")


def test_lineage_and_locations_reach_the_control_plane_and_are_released(cluster):
    from rtml._control._client import ControlClient

    there = NodeAffinitySchedulingStrategy(side_id(cluster), soft=False)
    ref = ones.options(scheduling_strategy=there).remote(300_000)
    assert rtml.wait([ref], timeout=30)[0]
    oid, tid = ref._id, ref._id >> 32
    with ControlClient(cluster.address, cluster.token) as gcs:
        task = wait_for(lambda: gcs.get_task(tid), 10, what="the task's lineage")
        assert task is not None
        locs = wait_for(lambda: gcs.get_locations(oid), 10, what="the object's location")
        assert side_id(cluster) in locs[1]
        del ref
        wait_for(lambda: gcs.get_task(tid) is None, 10, what="the lineage to be released")
        wait_for(
            lambda: not (gcs.get_locations(oid) or (0, ()))[1],
            10,
            what="the location to be removed",
        )
