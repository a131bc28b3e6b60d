"""``accelerator_type=`` schedules on the custom resource ``accelerator_type:<NAME>``, as in Ray."""

from __future__ import annotations

import pytest

import rtml
from rtml import exceptions as exc
from rtml.util import accelerators


def test_accelerator_type_is_a_custom_resource():
    from rtml._runtime._actor import ActorOptions
    from rtml._runtime._options import TaskOptions

    opts = TaskOptions({"accelerator_type": accelerators.NVIDIA_TESLA_V100}, False)
    assert opts.resources == {"CPU": 1.0, "accelerator_type:V100": 0.001}
    actor = ActorOptions({"accelerator_type": accelerators.NVIDIA_A100}, False)
    assert actor.resources == {"accelerator_type:A100": 0.001}
    with pytest.raises(TypeError, match="accelerator_type"):
        TaskOptions({"accelerator_type": 100}, False)


@pytest.mark.parametrize("local_mode", [False, True])
def test_tasks_and_actors_run_where_the_accelerator_is(runtime, local_mode):
    rtml.init(num_cpus=1, resources={"accelerator_type:T4": 1}, local_mode=local_mode)

    @rtml.remote(accelerator_type=accelerators.NVIDIA_TESLA_T4)
    def on_t4():
        return "ran"

    @rtml.remote(accelerator_type=accelerators.NVIDIA_TESLA_T4)
    class OnT4:
        def ping(self):
            return "pong"

    assert rtml.get(on_t4.remote(), timeout=30) == "ran"
    assert rtml.get(OnT4.remote().ping.remote(), timeout=30) == "pong"
    with pytest.raises(exc.TaskUnschedulableError, match="accelerator_type:V100"):
        rtml.get(
            on_t4.options(accelerator_type=accelerators.NVIDIA_TESLA_V100).remote(), timeout=30
        )


def test_a_gpu_task_runs_in_a_worker_that_ran_no_cpu_task(runtime):
    # CUDA is initialised once per process with the devices it sees then, so a GPU task must
    # not land in a worker that already ran CPU tasks (it may have imported torch & co).
    import os

    rtml.init(num_cpus=2, num_gpus=2)

    @rtml.remote
    def cpu():
        return os.getpid()

    @rtml.remote(num_gpus=1)
    def gpu():
        return os.getpid(), os.environ.get("CUDA_VISIBLE_DEVICES")

    cpu_pids = set(rtml.get([cpu.remote() for _ in range(20)], timeout=60))
    pid, devices = rtml.get(gpu.remote(), timeout=60)
    assert pid not in cpu_pids
    assert devices in ("0", "1")
    # Work of both kinds goes on afterwards.
    assert len(rtml.get([gpu.remote() for _ in range(4)], timeout=60)) == 4
    assert rtml.get(cpu.remote(), timeout=60) > 0
