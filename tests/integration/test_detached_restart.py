"""A detached actor with restarts outlives whoever created it (issue 19, item 5): when its node
dies after its creating driver, or its creating node, is gone, it is restarted on a live node,
found again by name, and calls through a handle taken before work after the restart."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

import rtml
from conftest import wait_for
from rtml.testing import Cluster


@pytest.fixture
def cluster():
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    try:
        c.add_node(num_cpus=1, resources={"maker": 1})
        c.add_node(num_cpus=1, resources={"host": 1})
        c.add_node(num_cpus=1, resources={"host": 1})
        c.connect()
        yield c
    finally:
        c.shutdown()


def test_detached_actor_restarts_after_its_creator_and_its_node_died(cluster, tmp_path):
    script = tmp_path / "creator.py"
    script.write_text(
        textwrap.dedent(f"""
        import sys, time
        import rtml
        rtml.init(address={cluster.address!r}, namespace="keep")

        @rtml.remote(resources={{"host": 1}})
        class Keeper:
            def __init__(self):
                self.calls = 0

            def where(self):
                self.calls += 1
                return rtml.get_runtime_context().get_node_id()

        k = Keeper.options(name="keeper", lifetime="detached", max_restarts=1).remote()
        print("HOME", rtml.get(k.where.remote(), timeout=60), flush=True)
        time.sleep(600)  # killed by the test
    """)
    )
    creator = subprocess.Popen(
        [sys.executable, str(script)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    try:
        line = creator.stdout.readline()
        assert line.startswith("HOME "), line
        home = line.split()[1]
        handle = rtml.get_actor("keeper", namespace="keep")
        assert rtml.get(handle.where.remote(), timeout=60) == home
    finally:
        creator.send_signal(signal.SIGKILL)
        creator.wait(timeout=30)
        creator.stdout.close()
    # The creating driver is gone (its node noticed: it released what the driver held).
    wait_for(lambda: not _held_by(creator.pid), timeout=30, what="the creator's refs released")
    node = next(n for n in cluster.worker_nodes if n.node_id == home)
    cluster.remove_node(node, allow_graceful=False)
    new_home = rtml.get(handle.where.remote(), timeout=120)  # the handle taken before
    assert new_home != home
    again = rtml.get_actor("keeper", namespace="keep")
    assert rtml.get(again.where.remote(), timeout=60) == new_home
    rtml.kill(again)


@rtml.remote(resources={"host": 1})
class Keeper:
    def where(self):
        return rtml.get_runtime_context().get_node_id()


@rtml.remote(resources={"maker": 1})
def make_keeper():
    """Runs on the "maker" node, which so creates (owns) the actor."""
    k = Keeper.options(name="orphan", lifetime="detached", max_restarts=1).remote()
    return rtml.get(k.where.remote(), timeout=60), rtml.get_runtime_context().get_node_id()


def test_detached_actor_restarts_after_its_creating_node_and_its_node_died(cluster):
    home, maker = rtml.get(make_keeper.remote(), timeout=120)
    handle = rtml.get_actor("orphan")
    assert rtml.get(handle.where.remote(), timeout=60) == home
    by_id = {n.node_id: n for n in cluster.worker_nodes}
    cluster.remove_node(by_id[maker], allow_graceful=False)  # the creator ...
    cluster.remove_node(by_id[home], allow_graceful=False)  # ... and the actor's node
    new_home = rtml.get(handle.where.remote(), timeout=120)  # the handle taken before
    assert new_home not in (home, maker)
    again = rtml.get_actor("orphan")
    assert rtml.get(again.where.remote(), timeout=60) == new_home
    rtml.kill(again)


def _held_by(pid: int) -> list:
    from rtml.util.state import list_objects

    who = f"driver pid {pid}"
    return [r for r in list_objects(limit=10_000, detail=True) if who in r.holders]
