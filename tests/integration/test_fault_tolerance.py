"""Fault tolerance on a local cluster: nodes SIGKILLed while they run tasks, hold the only copy
of objects, or host actors; drivers that die. Every wait is bounded."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import rtml
from conftest import wait_for
from rtml import exceptions as exc
from rtml.testing import Cluster
from rtml.util.scheduling_strategies import NodeAffinitySchedulingStrategy

N = 200_000  # float64s: 1.6 MB, stored in the producing node's store (not inline)


@pytest.fixture
def cluster():
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1}, heartbeat_timeout=2.0)
    try:
        c.add_node(num_cpus=1)
        c.add_node(num_cpus=1)
        c.connect()
        yield c
    finally:
        c.shutdown()


def on(node, soft=True):
    return NodeAffinitySchedulingStrategy(node.node_id, soft=soft)


@rtml.remote
def produce(n, v):
    return np.full(n, float(v))


@rtml.remote
def inc(a):
    return a + 1


@rtml.remote
def node_of(_x=None):
    return rtml.get_runtime_context().get_node_id()


@rtml.remote
def start_then_sleep(path, seconds):
    """Touch ``path`` (the test waits for it: the task runs) then sleep."""
    import time

    open(path, "a").close()
    time.sleep(seconds)
    return rtml.get_runtime_context().get_node_id()


def kill(c, node):
    c.remove_node(node, allow_graceful=False)


def test_lost_chain_is_rebuilt_from_lineage(cluster):
    victim = cluster.worker_nodes[0]
    s = on(victim)
    a = produce.options(scheduling_strategy=s).remote(N, 1)
    b = inc.options(scheduling_strategy=s).remote(a)
    c = inc.options(scheduling_strategy=s).remote(b)
    ready, _ = rtml.wait([c], timeout=30)  # (wait does not pull it to the driver's node)
    assert ready
    del a, b  # only the lineage remembers how to make them now
    kill(cluster, victim)
    out = rtml.get(c, timeout=60)
    assert out.shape == (N,)
    assert float(out[0]) == 3.0
    # It is readable again, from wherever it was rebuilt.
    assert float(rtml.get(inc.remote(c), timeout=30)[-1]) == 4.0


def test_object_from_a_task_without_retries_cannot_be_rebuilt(cluster):
    victim = cluster.worker_nodes[0]
    ref = produce.options(scheduling_strategy=on(victim), max_retries=0).remote(N, 7)
    assert rtml.wait([ref], timeout=30)[0]
    kill(cluster, victim)
    with pytest.raises(exc.ObjectLostError) as info:
        rtml.get(ref, timeout=60)
    assert isinstance(info.value, exc.ObjectReconstructionFailedMaxAttemptsExceededError)
    assert "max_retries" in str(info.value)


def test_task_running_on_a_dying_node_is_retried_elsewhere(cluster, tmp_path):
    victim = cluster.worker_nodes[0]
    started = tmp_path / "started"
    ref = start_then_sleep.options(scheduling_strategy=on(victim)).remote(str(started), 2)
    wait_for(started.exists, timeout=30, what="the task to start on the victim")
    kill(cluster, victim)
    assert rtml.get(ref, timeout=60) != victim.node_id

    started.unlink()
    victim2 = cluster.worker_nodes[0]
    ref = start_then_sleep.options(scheduling_strategy=on(victim2), max_retries=0).remote(
        str(started), 2
    )
    wait_for(started.exists, timeout=30, what="the task to start on the second victim")
    kill(cluster, victim2)
    with pytest.raises(exc.NodeDiedError, match="max_retries"):
        rtml.get(ref, timeout=60)


def test_object_owned_by_a_dead_node_raises_owner_died(cluster):
    victim = cluster.worker_nodes[0]

    @rtml.remote
    def make(node_id):
        s = NodeAffinitySchedulingStrategy(node_id, soft=True)
        return [produce.options(scheduling_strategy=s).remote(N, 5)]

    [inner] = rtml.get(
        make.options(scheduling_strategy=on(victim, soft=False)).remote(victim.node_id), timeout=30
    )
    assert rtml.wait([inner], timeout=30)[0]
    kill(cluster, victim)
    with pytest.raises(exc.OwnerDiedError):
        rtml.get(inner, timeout=60)


@rtml.remote
class Counter:
    def __init__(self):
        self.n = 0

    def add(self, k=1):
        self.n += k
        return self.n

    def where(self):
        return rtml.get_runtime_context().get_node_id()


def test_actor_restarts_on_another_node(cluster):
    victim = cluster.worker_nodes[0]
    a = Counter.options(
        max_restarts=1, max_task_retries=-1, scheduling_strategy=on(victim)
    ).remote()
    assert rtml.get(a.where.remote(), timeout=30) == victim.node_id
    assert rtml.get([a.add.remote() for _ in range(5)], timeout=30)[-1] == 5
    kill(cluster, victim)
    # Calls made while it restarts wait for it; it starts again from its constructor.
    assert rtml.get(a.add.remote(), timeout=60) == 1
    assert rtml.get(a.where.remote(), timeout=30) != victim.node_id
    # Out of restarts: the next node death is final.
    home = rtml.get(a.where.remote(), timeout=30)
    others = [n for n in cluster.worker_nodes if n.node_id == home]
    if others:  # (restarted on the head, which the driver needs: nothing more to kill)
        kill(cluster, others[0])
        with pytest.raises(exc.ActorDiedError):
            rtml.get(a.add.remote(), timeout=60)


def test_actor_without_restarts_dies_with_its_node(cluster):
    victim = cluster.worker_nodes[0]
    a = Counter.options(scheduling_strategy=on(victim)).remote()
    assert rtml.get(a.add.remote(), timeout=30) == 1
    kill(cluster, victim)
    with pytest.raises(exc.ActorDiedError):
        rtml.get(a.add.remote(), timeout=60)


def test_in_flight_actor_call_without_task_retries_fails(cluster, tmp_path):
    victim = cluster.worker_nodes[0]
    started = tmp_path / "started"

    @rtml.remote(max_restarts=1)
    class Slow:
        def wait(self, path):
            open(path, "a").close()
            import time

            time.sleep(5)

        def ping(self):
            return "pong"

    a = Slow.options(scheduling_strategy=on(victim)).remote()
    ref = a.wait.remote(str(started))
    wait_for(started.exists, timeout=30, what="the call to start")
    kill(cluster, victim)
    with pytest.raises(exc.ActorDiedError, match="max_task_retries"):
        rtml.get(ref, timeout=60)
    assert rtml.get(a.ping.remote(), timeout=60) == "pong"  # restarted elsewhere


DRIVER = textwrap.dedent("""
    import sys, time
    import rtml

    rtml.init(address=sys.argv[1], namespace="ft")

    @rtml.remote
    def forever():
        time.sleep(600)

    @rtml.remote
    class Holder:
        def ping(self):
            return 1

    h = Holder.options(name="held", num_cpus=1).remote()
    rtml.get(h.ping.remote())
    refs = [forever.remote() for _ in range(3)]
    print("READY", flush=True)
    time.sleep(600)
""")


def test_dead_driver_takes_its_tasks_and_actors(cluster):
    from rtml._control._client import ControlClient

    proc = subprocess.Popen(
        [sys.executable, "-c", DRIVER, cluster.address],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ},
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "READY"
        with ControlClient(cluster.address, cluster.token) as gcs:

            def busy():
                return sum(
                    n.resources.get("CPU", 0) - (n.available or {}).get("CPU", 0)
                    for n in gcs.list_nodes()
                    if n.alive
                )

            wait_for(lambda: busy() >= 2, timeout=30, what="the driver's work to run")
            proc.kill()
            proc.wait(10)
            wait_for(lambda: busy() == 0, timeout=30, what="the cluster to reclaim the CPUs")
            wait_for(
                lambda: gcs.lookup_actor("ft", "held") is None,
                timeout=10,
                what="the actor to be gone",
            )
        with pytest.raises(ValueError):
            rtml.get_actor("held", namespace="ft")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()


def test_workers_and_segments_of_a_killed_node_go_with_it(cluster, tmp_path):
    import glob

    import psutil

    from rtml._control._client import ControlClient

    victim = cluster.worker_nodes[0]
    started = tmp_path / "started"
    ref = produce.options(scheduling_strategy=on(victim, soft=False)).remote(N, 1)
    assert rtml.wait([ref], timeout=30)[0]
    start_then_sleep.options(scheduling_strategy=on(victim, soft=False), max_retries=0).remote(
        str(started), 600
    )
    wait_for(started.exists, timeout=30, what="the task to start")
    with ControlClient(cluster.address, cluster.token) as gcs:
        session = next(n.extra["session"] for n in gcs.list_nodes() if n.node_id == victim.node_id)
    segments = f"/dev/shm/rtml_{session}_*"
    assert glob.glob(segments)
    workers = psutil.Process(victim.pid).children()
    assert workers
    kill(cluster, victim)
    wait_for(
        lambda: not any(w.is_running() and w.status() != psutil.STATUS_ZOMBIE for w in workers),
        timeout=10,
        what="the node's workers to exit",
    )
    wait_for(lambda: not glob.glob(segments), timeout=10, what="the node's segments to go")


def test_drivers_are_told_when_a_node_dies(cluster, capfd):
    victim = cluster.worker_nodes[0]
    assert rtml.get(node_of.options(scheduling_strategy=on(victim)).remote(), timeout=30)
    kill(cluster, victim)
    seen = []

    def told():
        seen.append(capfd.readouterr().err)
        return f"node {victim.node_id} died" in "".join(seen)

    wait_for(told, timeout=15, what="the driver to be told of the node's death")
    assert "".join(seen).count(f"node {victim.node_id} died") == 1  # (once, not per node)
