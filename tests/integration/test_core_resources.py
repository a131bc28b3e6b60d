"""Resource scheduling: fractional CPUs, GPU ids, custom resources, unschedulable requests.

Concurrency is proven with rendezvous files, never with timing: each task announces itself
with a file and then waits (with a deadline) until all the others have announced themselves,
which can only happen if they all run at the same time.
"""

from __future__ import annotations

import os

import pytest

import rtml
from conftest import wait_for
from rtml.exceptions import TaskUnschedulableError


@pytest.fixture(scope="module")
def gpu_runtime():
    rtml.init(num_cpus=2, num_gpus=2, resources={"slot": 1})
    yield
    rtml.shutdown()


pytestmark = pytest.mark.usefixtures("gpu_runtime")


def _count(directory: str) -> int:
    return len([n for n in os.listdir(directory) if n.startswith("here-")])


@rtml.remote
def rendezvous(directory, name, expected, timeout=15):
    """Announce ``name``, then wait until ``expected`` tasks have; return how many it saw."""
    open(os.path.join(directory, f"here-{name}"), "w").close()
    try:
        wait_for(lambda: _count(directory) >= expected, timeout=timeout)
    except AssertionError:
        pass
    return _count(directory)


@rtml.remote
def gpu_rendezvous(directory, name, expected, timeout=15):
    ids = rtml.get_gpu_ids()
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    saw_all = rendezvous.__wrapped__(directory, name, expected, timeout) >= expected
    return ids, env, saw_all


@rtml.remote
def gpu_info():
    return rtml.get_gpu_ids(), os.environ.get("CUDA_VISIBLE_DEVICES")


@rtml.remote
def mark_and_wait(directory, name, gate, timeout=60):
    open(os.path.join(directory, f"started-{name}"), "w").close()
    wait_for(lambda: os.path.exists(gate), timeout=timeout, what=gate)
    return name


@rtml.remote
def nothing():
    return "ran"


def test_fractional_cpus_run_concurrently(tmp_path):
    d = str(tmp_path)
    refs = [rendezvous.options(num_cpus=0.5).remote(d, i, 4) for i in range(4)]
    seen = rtml.get(refs, timeout=60)
    # a task that saw fewer than 4 ran while some of the others could not start
    assert seen == [4] * 4


def test_fractional_cpus_are_accounted(gate_path, tmp_path):
    refs = [
        mark_and_wait.options(num_cpus=0.5).remote(str(tmp_path), i, str(gate_path))
        for i in range(3)
    ]
    wait_for(
        lambda: rtml.available_resources()["CPU"] == 0.5,
        timeout=30,
        what="3 x 0.5 CPU to be in use",
    )
    gate_path.touch()
    assert rtml.get(refs, timeout=60) == [0, 1, 2]
    wait_for(lambda: rtml.available_resources()["CPU"] == 2, timeout=30, what="CPUs to be released")


def test_gpu_task_gets_one_gpu_id_and_cuda_visible_devices():
    ids, env = rtml.get(gpu_info.options(num_gpus=1).remote(), timeout=30)
    assert len(ids) == 1
    assert ids[0] in (0, 1)
    assert env == str(ids[0])


def test_two_gpus_for_one_task():
    ids, env = rtml.get(gpu_info.options(num_gpus=2).remote(), timeout=30)
    assert sorted(ids) == [0, 1]
    assert sorted(env.split(",")) == ["0", "1"]


def test_task_without_gpus_sees_none():
    ids, env = rtml.get(gpu_info.remote(), timeout=30)
    assert ids == []
    assert env is None or env == ""
    assert rtml.get_gpu_ids() == []  # the driver holds no GPU


def test_concurrent_gpu_tasks_get_different_ids(tmp_path):
    d = str(tmp_path)
    refs = [gpu_rendezvous.options(num_gpus=1).remote(d, i, 2) for i in range(2)]
    (ids_a, env_a, saw_a), (ids_b, env_b, saw_b) = rtml.get(refs, timeout=60)
    assert saw_a and saw_b, "the two GPU tasks did not run at the same time"  # noqa: PT018
    assert len(ids_a) == len(ids_b) == 1
    assert ids_a != ids_b
    assert {env_a, env_b} == {"0", "1"}


def test_fractional_gpus_share_a_device(tmp_path):
    d = str(tmp_path)
    refs = [gpu_rendezvous.options(num_gpus=0.5, num_cpus=0.5).remote(d, i, 2) for i in range(2)]
    results = rtml.get(refs, timeout=60)
    assert all(saw for _, _, saw in results)
    assert all(len(ids) == 1 for ids, _, _ in results)


def test_custom_resource_limits_concurrency(gate_path, tmp_path):
    d = str(tmp_path)
    first = mark_and_wait.options(resources={"slot": 1}).remote(d, "a", str(gate_path))
    second = mark_and_wait.options(resources={"slot": 1}).remote(d, "b", str(gate_path))
    wait_for(
        lambda: os.path.exists(os.path.join(d, "started-a")),
        timeout=30,
        what="the first slot task to start",
    )
    assert "slot" not in rtml.available_resources()  # used up: left out, as in Ray
    assert rtml.available_resources()["CPU"] >= 1  # a CPU is free, only the slot is missing
    # the second task can't start while the only slot is held
    ready, _ = rtml.wait([second], timeout=0.5)
    assert ready == []
    assert not os.path.exists(os.path.join(d, "started-b"))
    gate_path.touch()
    assert rtml.get([first, second], timeout=60) == ["a", "b"]
    wait_for(
        lambda: rtml.available_resources()["slot"] == 1, timeout=30, what="the slot to be released"
    )


@pytest.mark.parametrize(
    "options",
    [
        {"num_gpus": 4},
        {"num_cpus": 3},
        {"resources": {"tpu": 1}},
        {"resources": {"slot": 2}},
    ],
    ids=["too-many-gpus", "too-many-cpus", "unknown-resource", "too-much-custom"],
)
def test_unsatisfiable_request_fails_fast(options):
    ref = nothing.options(**options).remote()
    with pytest.raises(TaskUnschedulableError) as info:
        rtml.get(ref, timeout=20)
    key = (
        "GPU"
        if "num_gpus" in options
        else "CPU"
        if "num_cpus" in options
        else next(iter(options["resources"]))
    )
    assert key in str(info.value)
    # the runtime keeps working
    assert rtml.get(nothing.remote(), timeout=30) == "ran"


def test_unsatisfiable_request_from_inside_a_task():
    @rtml.remote
    def submit_impossible():
        try:
            rtml.get(nothing.options(num_gpus=8).remote(), timeout=20)
        except TaskUnschedulableError as e:
            return type(e).__name__
        return "scheduled?!"

    assert rtml.get(submit_impossible.remote(), timeout=60) == "TaskUnschedulableError"


def test_zero_cpu_tasks_run_when_all_cpus_are_busy(gate_path, tmp_path):
    d = str(tmp_path)
    busy = [mark_and_wait.remote(d, i, str(gate_path)) for i in range(2)]
    wait_for(
        lambda: "CPU" not in rtml.available_resources(), timeout=30, what="both CPUs to be busy"
    )
    assert rtml.get(nothing.options(num_cpus=0).remote(), timeout=30) == "ran"
    gate_path.touch()
    assert rtml.get(busy, timeout=60) == [0, 1]
