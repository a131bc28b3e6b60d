"""Dataflow between tasks: ref arguments, nested refs, dynamic task graphs, recursion, DAGs.

The shared runtime has num_cpus=2, so every test that nests blocking gets deeper than two
levels checks that a worker blocked in ``get`` lends its CPU back instead of deadlocking.
"""

from __future__ import annotations

import os

import pytest

import rtml
from conftest import in_threads, wait_for

pytestmark = pytest.mark.usefixtures("shared_runtime")


@rtml.remote
def identity(x):
    return x


@rtml.remote
def add(a, b=0):
    return a + b


@rtml.remote
def describe(*args, **kwargs):
    """Type names of what arrived, so the driver can see whether refs were resolved."""
    return ([type(a).__name__ for a in args], {k: type(v).__name__ for k, v in kwargs.items()})


@rtml.remote
def resolve_nested(container):
    refs = container["refs"]
    assert all(isinstance(r, rtml.ObjectRef) for r in refs)
    return sum(rtml.get(refs, timeout=30))


@rtml.remote
def fan_out(n):
    """Submits n tasks from inside a task and combines them with wait + get."""
    refs = [add.remote(i, i) for i in range(n)]
    ready, not_ready = rtml.wait(refs, num_returns=n, timeout=30)
    assert not not_ready
    assert ready == refs
    return sum(rtml.get(ready, timeout=30))


@rtml.remote
def depth(n):
    """Recursive: each level blocks on the next one."""
    if n == 0:
        return 0
    return 1 + rtml.get(depth.remote(n - 1), timeout=60)


@rtml.remote
def fib(n):
    if n < 2:
        return n
    a, b = fib.remote(n - 1), fib.remote(n - 2)
    return sum(rtml.get([a, b], timeout=60))


@rtml.remote
def put_inside():
    ref = rtml.put({"made": "in a task"})
    return [ref]


@rtml.remote
def submit_inside():
    return [add.remote(40, 2)]


@rtml.remote
def wait_for_file(path):
    wait_for(lambda: os.path.exists(path), timeout=60, what=path)
    return "gate opened"


@rtml.remote
def get_from_sibling(ref_list):
    return rtml.get(ref_list[0], timeout=60) + " (seen by a sibling)"


def test_top_level_ref_args_are_replaced_by_values():
    x = rtml.put(3)
    y = add.remote(4, 5)
    assert rtml.get(add.remote(x, y), timeout=30) == 12
    assert rtml.get(add.remote(x, b=y), timeout=30) == 12
    assert rtml.get(add.remote(a=y, b=x), timeout=30) == 12
    names = rtml.get(describe.remote(x, "s", k=y), timeout=30)
    assert names == (["int", "str"], {"k": "int"})


def test_refs_nested_in_containers_arrive_as_refs():
    x, y = rtml.put(1), add.remote(1, 1)
    names = rtml.get(describe.remote([x], {"y": y}, t=(x,)), timeout=30)
    assert names == (["list", "dict"], {"t": "tuple"})

    @rtml.remote
    def inner_types(lst, dct):
        return type(lst[0]).__name__, type(dct["y"]).__name__

    assert rtml.get(inner_types.remote([x], {"y": y}), timeout=30) == ("ObjectRef", "ObjectRef")
    assert rtml.get(resolve_nested.remote({"refs": [x, y]}), timeout=30) == 3


def test_same_ref_passed_twice():
    x = rtml.put(21)
    assert rtml.get(add.remote(x, x), timeout=30) == 42


def test_tasks_submit_tasks_and_use_get_and_wait():
    assert rtml.get(fan_out.remote(10), timeout=60) == sum(2 * i for i in range(10))


def test_ref_created_in_a_task_outlives_it():
    (ref,) = rtml.get(put_inside.remote(), timeout=30)
    assert isinstance(ref, rtml.ObjectRef)
    assert rtml.get(ref, timeout=30) == {"made": "in a task"}
    assert rtml.get(identity.remote(ref), timeout=30) == {"made": "in a task"}


def test_ref_of_a_nested_task_returned_to_the_driver():
    (ref,) = rtml.get(submit_inside.remote(), timeout=30)
    assert isinstance(ref, rtml.ObjectRef)
    assert rtml.get(ref, timeout=30) == 42


def test_recursion_deeper_than_cpu_count_does_not_deadlock():
    assert rtml.cluster_resources()["CPU"] == 2
    assert rtml.get(depth.remote(8), timeout=120) == 8


def test_recursive_fan_out_does_not_deadlock():
    assert rtml.get(fib.remote(7), timeout=120) == 13


def test_diamond_dag():
    #      a
    #    /   \
    #   b     c
    #    \   /
    #      d
    a = add.remote(1, 1)  # 2
    b = add.remote(a, 10)  # 12
    c = add.remote(a, 100)  # 102
    d = add.remote(b, c)  # 114
    assert rtml.get(d, timeout=30) == 114
    assert rtml.get([a, b, c], timeout=30) == [2, 12, 102]


def test_long_chain():
    ref = rtml.put(0)
    for _ in range(30):
        ref = add.remote(ref, 1)
    assert rtml.get(ref, timeout=60) == 30


def test_dependent_task_waits_for_its_argument(gate_path):
    gate = gate_path
    first = wait_for_file.remote(str(gate))
    second = identity.remote(first)
    ready, not_ready = rtml.wait([second], timeout=0.2)
    assert (ready, not_ready) == ([], [second])
    gate.touch()
    assert rtml.get(second, timeout=30) == "gate opened"


def test_task_gets_a_ref_produced_by_a_running_sibling(gate_path):
    gate = gate_path
    producer = wait_for_file.remote(str(gate))
    consumer = get_from_sibling.remote([producer])
    gate.touch()
    assert rtml.get(consumer, timeout=60) == "gate opened (seen by a sibling)"


def test_driver_threads_submit_and_get_concurrently():
    results = {}

    def run(i):
        refs = [add.remote(i * 100, j) for j in range(20)]
        results[i] = rtml.get(refs, timeout=60)

    assert not in_threads(run, 4, timeout=90)
    assert results == {i: [i * 100 + j for j in range(20)] for i in range(4)}


def test_resources_queried_inside_a_task():
    @rtml.remote
    def resources():
        return rtml.cluster_resources()["CPU"], rtml.available_resources()["CPU"]

    total, available = rtml.get(resources.remote(), timeout=30)
    assert total == 2
    assert available <= 1  # this task holds one CPU


def test_large_arguments_by_value():
    np = pytest.importorskip("numpy")
    arr = np.arange(100_000, dtype=np.float64)  # 800 KB: goes through the object store
    out = rtml.get(add.remote(arr, 1), timeout=30)
    assert np.array_equal(out, arr + 1)
    big_str = "x" * 300_000
    assert rtml.get(add.remote(big_str, b="y"), timeout=30) == big_str + "y"


def test_tasks_queued_behind_a_long_task_move_to_other_workers(gate_path):
    """Tiny tasks pipelined to a worker whose task turns out never to end are taken back and
    run elsewhere (a worker of the two CPUs is free or about to be)."""
    blocker = wait_for_file.remote(str(gate_path))
    assert rtml.get([identity.remote(i) for i in range(6)], timeout=30) == list(range(6))
    gate_path.touch()
    assert rtml.get(blocker, timeout=30) == "gate opened"
