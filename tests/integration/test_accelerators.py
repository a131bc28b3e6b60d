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
