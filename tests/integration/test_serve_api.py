"""rtml.serve through handles (no HTTP): real controller and replica processes."""

from __future__ import annotations

import asyncio
import os

import pytest

import rtml
from rtml import serve
from rtml.serve.exceptions import RayServeException


@pytest.fixture(scope="module")
def serving():
    rtml.init(num_cpus=2, include_dashboard=False)
    serve.start(proxy_location="Disabled")
    yield serve
    serve.shutdown()
    rtml.shutdown()


@pytest.fixture
def app(serving):
    yield serving
    for name in list(serve.status().applications):
        serve.delete(name)


@serve.deployment
def double(x):
    return 2 * x


@serve.deployment(num_replicas=2)
class Adder:
    def __init__(self, inc):
        self.inc = inc

    def __call__(self, x):
        return x + self.inc

    async def pid(self):
        await asyncio.sleep(0.05)  # overlap so both replicas get work
        return os.getpid()

    def boom(self):
        raise KeyError("no such key")


def test_function_and_class_deployments_and_method_calls(app):
    h = serve.run(double.bind(), name="f", route_prefix=None)
    r = h.remote(21)
    assert r.result(timeout_s=10) == 42
    assert r.version == "1"
    h2 = serve.run(Adder.bind(10), name="c", route_prefix=None)
    assert h2.remote(1).result(timeout_s=10) == 11
    assert h2.options(method_name="__call__").remote(2).result(timeout_s=10) == 12
    pids = {h2.pid.remote() for _ in range(20)}
    assert len({p.result(timeout_s=10) for p in pids}) == 2  # both replicas served
    st = serve.status()
    assert st.applications["c"].status == "RUNNING"
    dep = st.applications["c"].deployments["Adder"]
    assert dep.status == "HEALTHY"
    assert dep.replica_states == {"RUNNING": 2}


def test_user_exception_propagates_and_replica_keeps_serving(app):
    h = serve.run(Adder.bind(1), name="e", route_prefix=None)
    with pytest.raises(KeyError, match="no such key"):
        h.boom.remote().result(timeout_s=10)
    assert h.remote(1).result(timeout_s=10) == 2


@serve.deployment
class Pipeline:
    def __init__(self, first, second):
        self.first, self.second = first, second

    async def __call__(self, x):
        # A response passed straight into another handle call is resolved first.
        return await self.second.remote(self.first.remote(x))


def test_composition_with_bound_handles_and_response_passing(app):
    h = serve.run(
        Pipeline.bind(double.bind(), Adder.options(name="Add5", num_replicas=1).bind(5)),
        name="p",
        route_prefix=None,
    )
    assert h.remote(4).result(timeout_s=10) == 13
    st = serve.status().applications["p"]
    assert set(st.deployments) == {"Pipeline", "double", "Add5"}
    # Handles by name, from the driver.
    assert serve.get_deployment_handle("double", "p").remote(3).result(timeout_s=10) == 6
    assert serve.get_app_handle("p").remote(1).result(timeout_s=10) == 7
    # A response passed from the driver into another call.
    d = serve.get_deployment_handle("double", "p")
    assert d.remote(d.remote(1)).result(timeout_s=10) == 4


def test_async_driver_awaits_responses(app):
    h = serve.run(double.bind(), name="aw", route_prefix=None)

    async def main():
        return await asyncio.wait_for(asyncio.gather(*[h.remote(i) for i in range(10)]), 30)

    assert asyncio.run(main()) == [2 * i for i in range(10)]


def test_options_validation_and_errors():
    with pytest.raises(ValueError, match="invalid option 'num_replica'"):
        serve.deployment(num_replica=2)(double.func_or_class)
    with pytest.raises(ValueError, match="max_ongoing_requests"):
        double.options(max_ongoing_requests=0)
    with pytest.raises(ValueError, match="no reconfigure"):
        Adder.options(user_config={"a": 1})
    with pytest.raises(RayServeException, match="cannot be called directly"):
        double(1)
    assert double.options(num_replicas=3).num_replicas == 3
    assert double.num_replicas == 1


def test_lookups_fail_with_names(app):
    with pytest.raises(RayServeException, match="no application named 'nope'"):
        serve.get_app_handle("nope")


@serve.deployment(max_ongoing_requests=20)
class Batcher:
    def __init__(self):
        self.sizes = []

    @serve.batch(max_batch_size=4, batch_wait_timeout_s=0.5)
    async def score(self, xs):
        self.sizes.append(len(xs))
        return [x * 10 for x in xs]

    @serve.batch(max_batch_size=3, batch_wait_timeout_s=0.5)
    def score_sync(self, xs):
        self.sizes.append(len(xs))
        return [x + 1 for x in xs]

    def sizes_seen(self):
        return self.sizes


def test_batching_sync_and_async(app):
    h = serve.run(Batcher.bind(), name="b", route_prefix=None)
    out = [h.score.remote(i) for i in range(8)]
    assert [r.result(timeout_s=10) for r in out] == [i * 10 for i in range(8)]
    out = [h.score_sync.remote(i) for i in range(3)]
    assert [r.result(timeout_s=10) for r in out] == [1, 2, 3]
    sizes = h.sizes_seen.remote().result(timeout_s=10)
    assert max(sizes[:-1]) == 4
    assert sum(sizes) == 11
    assert sizes[-1] == 3


@serve.deployment(user_config={"threshold": 1})
class Thresholded:
    def __init__(self):
        self.threshold = None

    def reconfigure(self, config):
        if config.get("fail"):
            raise ValueError("bad config")
        self.threshold = config["threshold"]

    def __call__(self, x):
        return x > self.threshold


def test_user_config_reconfigure_swaps_version(app):
    h = serve.run(Thresholded.bind(), name="u", route_prefix=None)
    r = h.remote(2)
    assert r.result(timeout_s=10) is True
    assert r.version == "1"
    h = serve.run(
        Thresholded.options(user_config={"threshold": 5}).bind(), name="u", route_prefix=None
    )
    r = h.remote(2)
    assert r.result(timeout_s=10) is False
    assert r.version == "2"
    assert serve.reconfigure({"threshold": 0}, app_name="u") == "3"
    assert h.remote(1).result(timeout_s=10) is True
    with pytest.raises(RuntimeError, match="bad config"):
        serve.reconfigure({"fail": True, "threshold": 9}, app_name="u")
    r = h.remote(1)
    assert r.result(timeout_s=10) is True
    assert r.version == "3"


@serve.deployment(num_replicas=2)
class Multi:
    def __init__(self):
        self.loads = 0

    @serve.multiplexed(max_num_models_per_replica=2)
    async def get_model(self, model_id):
        self.loads += 1
        return f"model-{model_id}"

    async def __call__(self):
        model = await self.get_model(serve.get_multiplexed_model_id())
        return model, os.getpid(), self.loads


def test_multiplexed_models_cached_and_routed_by_id(app):
    h = serve.run(Multi.bind(), name="m", route_prefix=None)
    ha = h.options(multiplexed_model_id="a")
    outs = [ha.remote().result(timeout_s=10) for _ in range(5)]
    assert {o[0] for o in outs} == {"model-a"}
    assert len({o[1] for o in outs}) == 1  # one replica keeps serving model a
    assert outs[-1][2] == 1  # loaded once
    names = [h.options(multiplexed_model_id=m).remote().result(timeout_s=10)[0] for m in "bcd"]
    assert names == ["model-b", "model-c", "model-d"]


def test_delete_removes_app(app):
    serve.run(double.bind(), name="gone", route_prefix=None)
    serve.delete("gone")
    assert "gone" not in serve.status().applications
    with pytest.raises(RayServeException):
        serve.get_app_handle("gone")


def test_failing_constructor_fails_the_deploy(app):
    @serve.deployment
    class Broken:
        def __init__(self):
            raise RuntimeError("cannot load weights")

    with pytest.raises(RayServeException, match="cannot load weights"):
        serve.run(Broken.bind(), name="broken", route_prefix=None, timeout_s=30)


def test_handles_work_inside_tasks_and_actors(app):
    h = serve.run(double.bind(), name="t", route_prefix=None)

    @rtml.remote
    def call(handle, x):
        return handle.remote(x).result(timeout_s=10)

    @rtml.remote
    class Caller:
        def __init__(self, handle):
            self.handle = handle

        def go(self, x):
            return self.handle.remote(x).result(timeout_s=10)

    assert rtml.get(call.remote(h, 5), timeout=30) == 10
    caller = Caller.remote(h)
    assert rtml.get([caller.go.remote(i) for i in range(3)], timeout=30) == [0, 2, 4]


def test_an_app_deleted_and_deployed_again_is_reachable_from_old_handles(app):
    h = serve.run(double.bind(), name="again", route_prefix=None)
    assert h.remote(1).result(timeout_s=10) == 2
    serve.delete("again")
    h = serve.run(
        Adder.options(name="double", num_replicas=1).bind(100), name="again", route_prefix=None
    )
    assert h.remote(1).result(timeout_s=10) == 101
