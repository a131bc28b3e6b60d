"""Ray compatibility: ``import rtml as ray`` runs a typical Ray core program unchanged."""

from __future__ import annotations

import os

import pytest

import rtml as ray
from conftest import wait_for

pytestmark = pytest.mark.usefixtures("shared_runtime")


@ray.remote
def square(x):
    return x * x


@ray.remote(num_returns=2)
def min_max(values):
    return min(values), max(values)


@ray.remote
def total(*parts):
    return sum(parts)


@ray.remote
def fails():
    raise KeyError("missing")


@ray.remote
def crashes():
    os._exit(3)


@ray.remote
def blocks(gate):
    wait_for(lambda: os.path.exists(gate), timeout=60, what=gate)
    return "done"


@ray.remote
def context_in_task():
    ctx = ray.get_runtime_context()
    return {
        "task_id": ctx.get_task_id(),
        "node_id": ctx.get_node_id(),
        "job_id": ctx.get_job_id(),
        "worker_id": ctx.get_worker_id(),
        "initialized": ray.is_initialized(),
    }


@ray.remote
def own_task_id_twice():
    return ray.get_runtime_context().get_task_id(), ray.get_runtime_context().task_id


def test_typical_ray_program():
    ray.init(ignore_reinit_error=True)  # already running: a no-op, as in Ray
    assert ray.is_initialized()
    data = ray.put(list(range(10)))
    lo, hi = min_max.remote(data)
    squares = [square.remote(i) for i in range(10)]
    ready, not_ready = ray.wait(squares, num_returns=len(squares), timeout=60)
    assert len(ready) == 10
    assert not not_ready
    assert ray.get(total.remote(*squares), timeout=60) == sum(i * i for i in range(10))
    assert ray.get([lo, hi], timeout=30) == [0, 9]
    fast = square.options(num_cpus=0.5, name="fast_square").remote(12)
    assert ray.get(fast, timeout=30) == 144
    assert isinstance(fast, ray.ObjectRef)
    assert ray.nodes()[0]["Alive"] is True
    assert ray.cluster_resources()["CPU"] == 2


def test_ray_exception_names():
    exc = ray.exceptions
    assert exc.RayError is exc.RtmlError
    assert exc.RayTaskError is exc.TaskError
    for name in (
        "RayTaskError",
        "GetTimeoutError",
        "WorkerCrashedError",
        "TaskCancelledError",
        "ObjectStoreFullError",
        "RayActorError",
        "ObjectLostError",
        "TaskUnschedulableError",
        "RaySystemError",
    ):
        assert issubclass(getattr(exc, name), exc.RayError), name
    assert issubclass(exc.GetTimeoutError, TimeoutError)


def test_ray_task_error_catching_styles():
    ref = fails.remote()
    with pytest.raises(ray.exceptions.RayTaskError):
        ray.get(ref, timeout=30)
    with pytest.raises(ray.exceptions.RayError):
        ray.get(ref, timeout=30)
    with pytest.raises(KeyError):
        ray.get(ref, timeout=30)


def test_ray_worker_crashed_error():
    with pytest.raises(ray.exceptions.WorkerCrashedError):
        ray.get(crashes.options(max_retries=0).remote(), timeout=60)
    with pytest.raises(ray.exceptions.RayError):
        ray.get(crashes.options(max_retries=0).remote(), timeout=60)


def test_ray_get_timeout_and_cancel(gate_path):
    ref = blocks.remote(str(gate_path))
    with pytest.raises(ray.exceptions.GetTimeoutError):
        ray.get(ref, timeout=0.1)
    ray.cancel(ref)
    with pytest.raises(ray.exceptions.TaskCancelledError):
        ray.get(ref, timeout=30)
    assert ray.get(square.remote(3), timeout=30) == 9


def test_ray_object_store_full_error_name():
    err = ray.exceptions.ObjectStoreFullError()
    assert isinstance(err, ray.exceptions.RayError)
    assert "object_store_memory" in str(err)


def test_runtime_context_in_the_driver():
    ctx = ray.get_runtime_context()
    assert ctx.get_task_id() is None
    assert isinstance(ctx.get_node_id(), str)
    assert ctx.get_node_id()
    assert isinstance(ctx.get_job_id(), str)
    assert ctx.get_job_id()
    assert ctx.node_id == ctx.get_node_id()
    assert ctx.job_id == ctx.get_job_id()
    assert ctx.namespace


def test_runtime_context_in_a_task_has_a_task_id():
    info = ray.get(context_in_task.remote(), timeout=30)
    assert info["initialized"] is True
    assert isinstance(info["task_id"], str)
    assert info["task_id"]
    other = ray.get(context_in_task.remote(), timeout=30)
    assert other["task_id"] != info["task_id"]
    first, second = ray.get(own_task_id_twice.remote(), timeout=30)
    assert first == second


def test_ref_task_id_matches_the_task_context():
    ref = context_in_task.remote()
    assert ray.get(ref, timeout=30)["task_id"] == ref.task_id()


def test_runtime_context_in_a_task_matches_the_driver_node_and_job():
    ctx = ray.get_runtime_context()
    info = ray.get(context_in_task.remote(), timeout=30)
    # one node, one job: a task sees the same ids as its driver (as in Ray)
    assert info["node_id"] == ctx.get_node_id()
    assert info["job_id"] == ctx.get_job_id()
    assert info["node_id"] == ray.nodes()[0]["NodeID"]


def test_object_ref_api():
    ref = ray.put("x")
    assert isinstance(ref.hex(), str)
    assert int(ref.hex(), 16) == ref.id
    same = [r for r in [ref] if r == ref]
    assert same == [ref]
    assert hash(same[0]) == hash(ref)
    assert ref != ray.put("x")
    assert ref.future().result(timeout=30) == "x"
    assert "ObjectRef(" in repr(ref)
