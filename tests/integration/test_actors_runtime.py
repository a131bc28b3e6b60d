"""Actor behaviour that depends on how the runtime was started: GPUs, the init namespace.
Each test starts its own runtime."""

from __future__ import annotations

import pytest

import rtml

T = 20


@rtml.remote
class Doubler:
    def double(self, x: int) -> int:
        return 2 * x


def test_gpu_actors_get_their_own_devices():
    rtml.init(num_cpus=2, num_gpus=2)
    try:

        @rtml.remote(num_gpus=1)
        class G:
            def ids(self):
                return rtml.get_gpu_ids()

        a, b = G.remote(), G.remote()
        ids = rtml.get([a.ids.remote(), b.ids.remote()], timeout=T)
        assert sorted(i for x in ids for i in x) == [0, 1]
        assert rtml.available_resources().get("GPU", 0) == 0
        c = G.remote()  # waits for a device
        ready, _ = rtml.wait([c.ids.remote()], timeout=0.2)
        assert not ready
        rtml.kill(a)
        assert rtml.get(c.ids.remote(), timeout=T) == ids[0]
    finally:
        rtml.shutdown()


def test_default_namespace_comes_from_init():
    rtml.init(num_cpus=1, namespace="team")
    try:
        Doubler.options(name="d").remote()
        assert rtml.get(rtml.get_actor("d", namespace="team").double.remote(2), timeout=T) == 4

        @rtml.remote
        def lookup():
            return rtml.get(rtml.get_actor("d").double.remote(3), timeout=T)

        assert rtml.get(lookup.remote(), timeout=T) == 6  # workers use the job's namespace
        with pytest.raises(ValueError, match="default"):
            rtml.get_actor("d", namespace="default")
        assert rtml.get_runtime_context().namespace == "team"
    finally:
        rtml.shutdown()
