"""Fencing: a node declared dead while it was only paused (SIGSTOP past the heartbeat timeout)
must not go on when it wakes. Its tasks were retried and its actors restarted elsewhere; when
SIGCONT resumes it, it learns it was declared dead, stops its workers and actors (the old
actor does not run twice), its peers and the control plane refuse what it sends, and the
process joins again as a new node. Every wait is bounded."""

from __future__ import annotations

import os
import signal

import pytest

import rtml
from conftest import wait_for
from rtml.testing import Cluster
from rtml.util.scheduling_strategies import NodeAffinitySchedulingStrategy


@pytest.fixture
def cluster():
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1}, heartbeat_timeout=2.0)
    try:
        c.add_node(num_cpus=1)
        c.connect()
        yield c
    finally:
        for n in c.list_all_nodes():  # never leave a stopped process behind
            if n.alive():
                os.kill(n.pid, signal.SIGCONT)
        c.shutdown()


@rtml.remote(max_retries=3)
def square(i):
    import time

    time.sleep(0.05)
    return i * i


@rtml.remote
class Where:
    def pid(self):
        return os.getpid()

    def node(self):
        return rtml.get_runtime_context().get_node_id()


def alive_ids():
    return {n["NodeID"] for n in rtml.nodes() if n["Alive"]}


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_paused_node_is_fenced_and_joins_again(cluster):
    victim = cluster.worker_nodes[0]
    a = Where.options(
        max_restarts=1,
        max_task_retries=-1,
        scheduling_strategy=NodeAffinitySchedulingStrategy(victim.node_id, soft=True),
    ).remote()
    assert rtml.get(a.node.remote(), timeout=30) == victim.node_id
    old_pid = rtml.get(a.pid.remote(), timeout=30)
    refs = [square.options(scheduling_strategy="SPREAD").remote(i) for i in range(40)]

    os.kill(victim.pid, signal.SIGSTOP)
    wait_for(lambda: victim.node_id not in alive_ids(), 30, what="the paused node declared dead")
    # The cluster goes on without it: every result once, the actor restarted elsewhere.
    assert rtml.get(refs, timeout=60) == [i * i for i in range(40)]
    assert rtml.get(a.node.remote(), timeout=60) != victim.node_id
    new_pid = rtml.get(a.pid.remote(), timeout=30)
    assert new_pid != old_pid

    os.kill(victim.pid, signal.SIGCONT)
    # It learns it was declared dead: its workers stop (the old actor does not run twice)...
    wait_for(lambda: not pid_alive(old_pid), 30, what="the fenced node to stop its old actor")
    # ...and the same process joins again as a new node, which takes work.
    wait_for(lambda: len(alive_ids()) == 2, 30, what="the process to join again as a new node")
    assert victim.alive()
    assert victim.node_id not in alive_ids()
    (rejoined,) = alive_ids() - {cluster.head_node.node_id}
    on_new = square.options(
        scheduling_strategy=NodeAffinitySchedulingStrategy(rejoined, soft=False)
    ).remote(7)
    assert rtml.get(on_new, timeout=60) == 49
    # The restarted actor is the only one, and it still answers.
    assert rtml.get(a.pid.remote(), timeout=30) == new_pid
    assert rtml.get([square.remote(i) for i in range(10)], timeout=60) == [i * i for i in range(10)]
