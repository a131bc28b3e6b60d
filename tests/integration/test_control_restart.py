"""The control-plane process killed (SIGKILL) and restarted under a running cluster.

On Redis: a workload of tasks and actor calls keeps running through the restart with correct
results; nodes stay the same incarnations; a node killed while the control plane was away is
declared dead once its grace period ends; named actors, lineage, object locations and jobs are
still there; records made during the outage arrive; a new driver joins. In memory: the nodes
register again (with their indices) and say the state is lost; drivers keep working and a new
one joins. The restarted server process itself: every table back, a fresh grace period. And a
control plane that stays away: drivers and nodes still stop promptly.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

import rtml
from conftest import wait_for
from rtml._control._client import ControlClient
from rtml._control._local_redis import LocalRedis
from rtml._launch import start_control_plane, stop_process
from rtml._protocol._ids import task_of
from rtml._transport._auth import new_token
from rtml.testing import Cluster
from rtml.util import state

HEARTBEAT_TIMEOUT = 2.0


@pytest.fixture
def redis(tmp_path):
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed: `make test` installs it")
    with LocalRedis(str(tmp_path)) as r:
        yield r


@rtml.remote
def square(x):
    return x * x


@rtml.remote(resources={"side": 1})
def big(n):
    return np.ones(n)


@rtml.remote
class Counter:
    def __init__(self) -> None:
        self.n = 0

    def add(self, k):
        self.n += k
        return self.n


class Workload:
    """A thread that keeps tasks (spread over the nodes) and actor calls going, checking every
    result; ``done`` counts rounds, ``errors`` collects what went wrong."""

    def __init__(self, counter) -> None:
        self.counter = counter
        self.done = 0
        self.expected = 0
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="test-workload")
        self.thread.start()

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            try:
                refs = [
                    square.options(scheduling_strategy="SPREAD").remote(i + k) for k in range(4)
                ]
                self.expected += 1
                total = self.counter.add.remote(1)
                assert rtml.get(refs, timeout=30) == [(i + k) ** 2 for k in range(4)]
                assert rtml.get(total, timeout=30) == self.expected
            except BaseException as e:  # reported by the test
                self.errors.append(e)
                return
            i += 4
            self.done += 1

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(60)


def run_driver(address: str, body: str, tmp_path) -> str:
    script = tmp_path / f"driver-{time.monotonic_ns()}.py"
    script.write_text(
        textwrap.dedent(f"""
        import rtml
        rtml.init(address={address!r}, namespace="restart")
    """)
        + textwrap.dedent(body)
        + "\nrtml.shutdown()\n"
    )
    out = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_a_workload_runs_through_a_restart_on_redis(redis, tmp_path):
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1},
        redis=redis.address,
        heartbeat_timeout=HEARTBEAT_TIMEOUT,
    )
    work = None
    try:
        side = cluster.add_node(num_cpus=1, resources={"side": 4})
        victim = cluster.add_node(num_cpus=1)
        cluster.connect(namespace="restart")
        gcs = ControlClient(cluster.address, cluster.token)
        try:
            before = {n.node_id: n.index for n in gcs.list_nodes(alive_only=True)}
            keeper = Counter.options(name="keeper", resources={"side": 1}).remote()
            kept = big.remote(200_000)  # stored on the side node, lineage owned by the head
            rtml.wait([kept], timeout=30)
            wait_for(
                lambda: gcs.get_locations(kept.id) and gcs.get_task(task_of(kept.id)),
                what="the object's location and lineage in the control plane",
            )
            work = Workload(keeper)
            wait_for(lambda: work.done >= 3 or work.errors, 30, what="the workload to run")

            cp = cluster.control_plane
            cp.proc.kill()  # the control plane dies...
            cp.proc.wait()
            cluster.remove_node(victim, allow_graceful=False)  # ...a node dies meanwhile...
            t0 = time.monotonic()
            with pytest.raises(ConnectionError, match="no control plane answers at"):
                state.list_nodes()
            assert time.monotonic() - t0 < 5, "an error, not a hang"
            done = work.done
            wait_for(
                lambda: work.done >= done + 3 or work.errors,
                30,
                what="the workload to go on without the control plane",
            )
            during = big.remote(300_000)  # ...and records are made meanwhile
            rtml.wait([during], timeout=30)
            made: list = []  # an actor created meanwhile waits for the control plane
            create = threading.Thread(
                target=lambda: made.append(
                    Counter.options(name="during", resources={"side": 1}).remote()
                ),
                name="test-create",
            )
            create.start()
            done = work.done
            cluster.restart_control_plane()  # (the old process is already dead)

            assert gcs.get_node(victim.node_id).alive, "a grace period, not declared dead at once"
            create.join(30)
            assert rtml.get(made[0].add.remote(2), timeout=30) == 2
            assert gcs.lookup_actor("restart", "during").state == "ALIVE"
            wait_for(
                lambda: work.done >= done + 5 or work.errors,
                30,
                what="the workload to go on after the restart",
            )
            wait_for(
                lambda: not gcs.get_node(victim.node_id).alive,
                HEARTBEAT_TIMEOUT + 5,
                what="the node that died during the outage to be declared dead",
            )
            assert "no heartbeat" in gcs.get_node(victim.node_id).death_cause
            alive = {n.node_id: n.index for n in gcs.list_nodes(alive_only=True)}
            del before[victim.node_id]
            assert alive == before, "the same nodes, the same incarnations"
            assert gcs.get_locations(kept.id)[1] == (side.node_id,)
            assert gcs.get_task(task_of(kept.id)) is not None, "lineage kept"
            wait_for(lambda: gcs.get_locations(during.id), what="a location made in the outage")
            assert rtml.get(kept, timeout=30).sum() == 200_000
            assert [j.state for j in gcs.list_jobs()] == ["RUNNING"]
            Counter.options(name="after", resources={"side": 1}).remote()  # registered anew
        finally:
            gcs.close()
        work.stop()
        assert not work.errors, work.errors
        assert rtml.get(rtml.get_actor("keeper").add.remote(0), timeout=30) == work.expected
        out = run_driver(
            cluster.address,
            """
            keeper, after = rtml.get_actor("keeper"), rtml.get_actor("after")
            print("FOUND", rtml.get(keeper.add.remote(0), timeout=30) > 0,
                  rtml.get(after.add.remote(5), timeout=30))
            f = rtml.remote(lambda x: x * x)
            print("RESULT", sum(rtml.get([f.remote(i) for i in range(10)], timeout=30)))
        """,
            tmp_path,
        )
        assert "FOUND True 5" in out
        assert "RESULT 285" in out
    finally:
        if work is not None:
            work.stop()
        cluster.shutdown()


def test_in_memory_the_nodes_register_again_and_say_the_state_is_lost(tmp_path, capfd):
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    try:
        cluster.add_node(num_cpus=1, resources={"side": 1})
        cluster.connect()
        with ControlClient(cluster.address, cluster.token) as gcs:
            before = {n.node_id: n.index for n in gcs.list_nodes()}
            cluster.restart_control_plane()
            wait_for(
                lambda: {n.node_id: n.index for n in gcs.list_nodes(alive_only=True)} == before,
                20,
                what="both nodes to register again, with their indices",
            )
            assert gcs.list_jobs() == [], "the jobs table was lost"
        refs = [square.options(scheduling_strategy="SPREAD").remote(i) for i in range(8)]
        assert rtml.get(refs, timeout=30) == [i * i for i in range(8)]
        assert rtml.get(big.remote(10), timeout=30).sum() == 10
        out = run_driver(
            cluster.address,
            """
            f = rtml.remote(lambda x: (x, rtml.get_runtime_context().get_node_id()))
            got = rtml.get([f.options(scheduling_strategy="SPREAD").remote(i)
                            for i in range(8)], timeout=30)
            print("RESULT", sum(x for x, _ in got), len({n for _, n in got}))
        """,
            tmp_path,
        )
        assert "RESULT 28 2" in out
    finally:
        cluster.shutdown()
    err = capfd.readouterr().err
    assert "NOT DURABLE" in err
    assert err.count("restarted without its state") == 2, err


def test_the_restarted_server_recovers_every_table_and_gives_a_grace_period(redis):
    token = new_token()
    cp = start_control_plane(token, redis=redis.address, heartbeat_timeout=1.0)
    address = f"127.0.0.1:{cp.port}"
    node = ControlClient(address, token)  # heartbeats through the restart
    silent = ControlClient(address, token)  # registers, then never heartbeats again
    stop = threading.Event()

    def heartbeats() -> None:
        while not stop.wait(0.2):
            node.heartbeat("n1", {}, {})

    beats = threading.Thread(target=heartbeats, name="test-heartbeats")
    try:
        assert node.register_node("n1", {"address": "127.0.0.1:1", "resources": {}}).index == 1
        assert silent.register_node("n2", {"address": "127.0.0.1:2", "resources": {}}).index == 2
        job = silent.next_job_id()
        silent.add_job(job, {"namespace": "ns"})
        silent.register_actor(9, {"namespace": "ns", "name": "keeper"})
        silent.update_actor(9, "ALIVE", node_id="n2")
        silent.put_function("f", b"fn")
        silent.add_tasks([(1, b"spec", "owner")])
        silent.add_locations([(77, "n1", 1234, "n1")])
        silent.kv_put("ns", "k", b"v")
        beats.start()
        cp.proc.kill()
        cp.proc.wait()
        cp = start_control_plane(token, port=cp.port, redis=redis.address, heartbeat_timeout=1.0)
        t0 = time.monotonic()
        assert [n.state for n in silent.list_nodes()] == ["ALIVE", "ALIVE"]
        assert silent.lookup_actor("ns", "keeper").node_id == "n2"
        assert [j.job_id for j in silent.list_jobs()] == [job]
        assert silent.next_job_id() == job + 1, "the job id counter"
        assert silent.get_function("f") == b"fn"
        assert silent.get_task(1).owner == "owner"
        assert silent.get_locations(77) == (1234, ("n1",))
        assert silent.kv_get("ns", "k") == b"v"
        wait_for(lambda: not silent.get_node("n2").alive, 5, what="n2 to be declared dead")
        assert time.monotonic() - t0 > 0.8, "not before its grace period ended"
        assert node.get_node("n1").alive, "the node that heartbeats stays"
        assert silent.register_node("n3", {"address": "x:3", "resources": {}}).index == 3, (
            "the node index counter"
        )
        assert silent.reconnects == node.reconnects == 1
    finally:
        stop.set()
        if beats.is_alive():
            beats.join()
        node.close()
        silent.close()
        assert stop_process(cp.proc) == 0


def test_drivers_and_nodes_stop_promptly_while_the_control_plane_is_away():
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    try:
        cluster.connect()
        assert rtml.get(square.remote(3), timeout=30) == 9
        cluster.control_plane.proc.kill()
        cluster.control_plane.proc.wait()
        assert rtml.get(square.remote(4), timeout=30) == 16, "tasks do not need it"
        t0 = time.monotonic()
        rtml.shutdown()  # finish_job cannot reach it: waits a second at most, no error
        assert time.monotonic() - t0 < 3
        t0 = time.monotonic()
        node = cluster.head_node
        cluster.remove_node(node)
        assert node.process.returncode == 0
        assert time.monotonic() - t0 < 5
    finally:
        cluster.shutdown()
