"""Lifecycle of the embedded runtime: init arguments, shutdown, re-init, auto-init, resources.

Every test here starts its own runtime (the ``runtime`` fixture shuts it down afterwards), and
the autouse leak check then verifies that no process, thread, descriptor or segment remains.
"""

from __future__ import annotations

import glob
import os
import subprocess
import sys
import textwrap

import psutil
import pytest

import rtml
from conftest import wait_for

MB = 1024 * 1024


@rtml.remote
def env_var(name):
    return os.environ.get(name)


@rtml.remote
def plus_one(x):
    return x + 1


@rtml.remote
def hold_until(path, timeout=60):
    wait_for(lambda: os.path.exists(path), timeout=timeout, what=path)
    return os.getpid()


@rtml.remote
def rendezvous(directory, name, expected, timeout=10):
    """Announce ``name``, then wait until ``expected`` tasks have; return how many it saw."""

    def count():
        return len([n for n in os.listdir(directory) if n.startswith("here-")])

    open(os.path.join(directory, f"here-{name}"), "w").close()
    try:
        wait_for(lambda: count() >= expected, timeout=timeout)
    except AssertionError:
        pass
    return count()


@rtml.remote
def namespace_of_task():
    return rtml.get_runtime_context().namespace


def _segments(session: str | None = None) -> set[str]:
    return set(glob.glob(f"/dev/shm/rtml_{session}_*" if session else "/dev/shm/rtml_*"))


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _worker_pids() -> set[int]:
    return {p.pid for p in psutil.Process().children(recursive=True)}


# ---------------------------------------------------------------------------------- init / state


def test_init_declares_resources_and_is_initialized(runtime):
    assert not rtml.is_initialized()
    info = rtml.init(num_cpus=3, num_gpus=1, resources={"sensor": 2}, object_store_memory=128 * MB)
    assert rtml.is_initialized()
    assert isinstance(info, dict)
    total = rtml.cluster_resources()
    assert total["CPU"] == 3
    assert total["GPU"] == 1
    assert total["sensor"] == 2
    assert total["object_store_memory"] == 128 * MB
    available = rtml.available_resources()
    assert available["CPU"] == 3
    assert available["GPU"] == 1
    assert available["sensor"] == 2
    assert rtml.get(plus_one.remote(1), timeout=30) == 2
    rtml.shutdown()
    assert not rtml.is_initialized()


def test_fractional_num_cpus_is_accepted(runtime):
    rtml.init(num_cpus=1.5)
    assert rtml.cluster_resources()["CPU"] == 1.5
    assert rtml.get(plus_one.remote(41), timeout=30) == 42


def test_init_twice_raises_runtime_error(runtime):
    rtml.init(num_cpus=1)
    with pytest.raises(RuntimeError, match="ignore_reinit_error"):
        rtml.init(num_cpus=1)
    # the first runtime is untouched
    assert rtml.get(plus_one.remote(1), timeout=30) == 2


def test_ignore_reinit_error_keeps_the_running_runtime(runtime):
    first = rtml.init(num_cpus=1)
    second = rtml.init(num_cpus=4, ignore_reinit_error=True)
    assert second["node_id"] == first["node_id"]
    assert rtml.cluster_resources()["CPU"] == 1
    assert rtml.get(plus_one.remote(1), timeout=30) == 2


def test_init_after_shutdown_starts_a_fresh_runtime(runtime):
    first = rtml.init(num_cpus=1)
    assert rtml.get(plus_one.remote(1), timeout=30) == 2
    rtml.shutdown()
    second = rtml.init(num_cpus=2)
    assert second["node_id"] != first["node_id"]
    assert rtml.cluster_resources()["CPU"] == 2
    assert rtml.get(plus_one.remote(2), timeout=30) == 3


def test_init_context_manager_shuts_down(runtime):
    with rtml.init(num_cpus=1):
        assert rtml.get(plus_one.remote(1), timeout=30) == 2
    assert not rtml.is_initialized()


def test_runtime_env_vars_are_visible_in_tasks(runtime):
    assert "RTML_TEST_VAR" not in os.environ
    rtml.init(num_cpus=1, runtime_env={"env_vars": {"RTML_TEST_VAR": "hello-env"}})
    assert rtml.get(env_var.remote("RTML_TEST_VAR"), timeout=30) == "hello-env"
    # the driver's own environment is not changed
    assert "RTML_TEST_VAR" not in os.environ


def test_task_runtime_env_overrides_per_call(runtime):
    rtml.init(num_cpus=1)
    ref = env_var.options(runtime_env={"env_vars": {"RTML_PER_TASK": "x1"}}).remote("RTML_PER_TASK")
    assert rtml.get(ref, timeout=30) == "x1"
    # set only for that task, not for the next one on the same worker
    assert rtml.get(env_var.remote("RTML_PER_TASK"), timeout=30) is None


def test_namespace(runtime):
    rtml.init(num_cpus=1, namespace="team-a")
    assert rtml.get_runtime_context().namespace == "team-a"


def test_namespace_is_visible_in_tasks(runtime):
    rtml.init(num_cpus=1, namespace="team-b")
    assert rtml.get(namespace_of_task.remote(), timeout=30) == "team-b"


def test_ignored_ray_init_kwargs_are_accepted(runtime):
    rtml.init(num_cpus=1, include_dashboard=False, logging_level="info", _system_config={})
    assert rtml.get(plus_one.remote(1), timeout=30) == 2


# ---------------------------------------------------------------------------------- bad args


def test_unknown_init_kwarg_raises_type_error(runtime):
    with pytest.raises(TypeError, match="not_an_option"):
        rtml.init(num_cpus=1, not_an_option=True)
    assert not rtml.is_initialized()


@pytest.mark.parametrize(
    ("kwargs", "error", "word"),
    [
        ({"num_cpus": -1}, ValueError, "num_cpus"),
        ({"num_cpus": "two"}, ValueError, "num_cpus"),
        ({"num_gpus": -1}, ValueError, "num_gpus"),
        ({"num_gpus": 1.5}, ValueError, "num_gpus"),
        ({"resources": {"CPU": 2}}, ValueError, "num_cpus"),
        ({"resources": {"sensor": -1}}, ValueError, "sensor"),
        ({"object_store_memory": 0}, ValueError, "object_store_memory"),
        ({"object_store_memory": "1GB"}, ValueError, "object_store_memory"),
        ({"runtime_env": "not-a-dict"}, TypeError, "runtime_env"),
        ({"runtime_env": {"env_vars": {"A": 1}}}, TypeError, "env_vars"),
    ],
)
def test_invalid_init_args_raise_clear_errors(runtime, kwargs, error, word):
    with pytest.raises(error, match=word):
        rtml.init(**kwargs)
    assert not rtml.is_initialized()


def test_init_with_cluster_address_is_refused(runtime):
    with pytest.raises(ConnectionError, match="ray://somewhere:10001"):
        rtml.init(address="ray://somewhere:10001")
    assert not rtml.is_initialized()


# ---------------------------------------------------------------------------------- auto-init


def test_auto_init_on_first_remote(runtime):
    assert not rtml.is_initialized()
    ref = plus_one.remote(1)
    assert rtml.is_initialized()
    assert rtml.get(ref, timeout=30) == 2


def test_auto_init_on_first_put(runtime):
    assert not rtml.is_initialized()
    ref = rtml.put("value")
    assert rtml.is_initialized()
    assert rtml.get(ref, timeout=30) == "value"


def test_auto_init_on_first_get(runtime):
    assert not rtml.is_initialized()
    assert rtml.get([], timeout=30) == []
    assert rtml.is_initialized()
    assert rtml.cluster_resources()["CPU"] == float(os.cpu_count() or 1)


# ---------------------------------------------------------------------------------- resources


def test_available_resources_drop_while_a_task_holds_cpus(runtime, tmp_path):
    rtml.init(num_cpus=2)
    gate = str(tmp_path / "gate")
    ref = hold_until.options(num_cpus=1.5).remote(gate)
    wait_for(
        lambda: rtml.available_resources()["CPU"] == 0.5,
        timeout=30,
        what="CPU availability to drop to 0.5",
    )
    assert rtml.cluster_resources()["CPU"] == 2
    open(gate, "w").close()
    rtml.get(ref, timeout=30)
    wait_for(
        lambda: rtml.available_resources()["CPU"] == 2,
        timeout=30,
        what="CPU availability to come back to 2",
    )


def test_tasks_submitted_right_after_init_run_in_parallel(runtime, tmp_path):
    # submitted while the prestarted workers are still starting: once both are up, the two
    # tasks must run at the same time (2 CPUs free), not queue on the first worker
    rtml.init(num_cpus=2)
    refs = [rendezvous.remote(str(tmp_path), i, 2) for i in range(2)]
    assert rtml.get(refs, timeout=60) == [2, 2]


# ---------------------------------------------------------------------------------- shutdown


def test_shutdown_removes_processes_and_segments(runtime):
    np = pytest.importorskip("numpy")
    info = rtml.init(num_cpus=2)
    session = info["session_name"]
    assert rtml.get([plus_one.remote(i) for i in range(4)], timeout=30) == [1, 2, 3, 4]
    big = rtml.put(np.ones(2 * MB, dtype=np.uint8))
    result = plus_one.remote(np.zeros(1 * MB, dtype=np.uint8))  # large arg, large result
    rtml.get(result, timeout=30)
    workers = _worker_pids()
    assert workers, "the runtime should have started worker processes"
    assert _segments(session), "large objects should live in /dev/shm segments"
    rtml.shutdown()
    assert not rtml.is_initialized()
    assert not _segments(session)
    wait_for(lambda: not any(_alive(p) for p in workers), timeout=10, what="workers to exit")
    del big, result
    rtml.shutdown()  # idempotent


def test_shutdown_while_a_task_is_running(runtime, tmp_path):
    rtml.init(num_cpus=1)
    started = tmp_path / "started"

    @rtml.remote
    def forever(path):
        open(path, "w").close()
        wait_for(lambda: False, timeout=120, what="never")

    ref = forever.remote(str(started))
    wait_for(started.exists, timeout=30, what="the task to start")
    workers = _worker_pids()
    rtml.shutdown()
    wait_for(lambda: not any(_alive(p) for p in workers), timeout=10, what="workers to exit")
    del ref


_DRIVER = textwrap.dedent("""
    import sys
    import numpy as np
    import rtml

    info = rtml.init(num_cpus=2)

    @rtml.remote
    def double(x):
        return x * 2

    assert rtml.get(double.remote(np.ones(300_000)), timeout=60).sum() == 600_000
    ref = rtml.put(np.arange(4_000_000, dtype=np.float64))  # 32 MB: a /dev/shm segment
    print("ready", info["session_name"], flush=True)
    sys.stdin.read()  # block until killed
""")


def test_sigkilled_driver_leaves_no_workers_or_segments(tmp_path):
    pytest.importorskip("numpy")
    script = tmp_path / "driver.py"
    script.write_text(_DRIVER)
    with subprocess.Popen(
        [sys.executable, str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as proc:
        try:
            line = proc.stdout.readline().split()
            assert line and line[0] == "ready", f"driver did not start: {line!r}"  # noqa: PT018
            session = line[1]
            workers = [p.pid for p in psutil.Process(proc.pid).children(recursive=True)]
            assert workers, "the driver should have worker processes"
            assert _segments(session), "the driver's put should have created a segment"
            proc.kill()
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    wait_for(
        lambda: not any(_alive(p) for p in workers), timeout=20, what="orphaned workers to exit"
    )
    wait_for(
        lambda: not _segments(session),
        timeout=20,
        what=f"segments of session {session} to be removed",
    )
