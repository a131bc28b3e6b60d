"""Remote functions: decorators, options, num_returns, generators and option validation."""

from __future__ import annotations

import os

import pytest

import rtml
from conftest import wait_for
from rtml.exceptions import TaskError

pytestmark = pytest.mark.usefixtures("shared_runtime")


@rtml.remote
def bare(x):
    return x * 10


@rtml.remote(num_cpus=0.5)
def half_cpu(x):
    return x + 0.5


@rtml.remote
def pair():
    return "a", "b"


@rtml.remote
def three(x):
    return x, x + 1, x + 2


@rtml.remote
def boom(msg):
    raise ValueError(msg)


@rtml.remote
def touch(path):
    open(path, "w").close()


@rtml.remote
def counting_gen(n):
    yield from range(n)


@rtml.remote
def gated_gen(gate):
    """Yields 1, then waits for ``gate`` to exist before yielding 2."""
    yield 1
    wait_for(lambda: os.path.exists(gate), timeout=60, what=gate)
    yield 2


@rtml.remote
def failing_gen():
    yield "first"
    yield "second"
    raise ValueError("generator broke at item 3")


# ---------------------------------------------------------------------------------- decorators


def test_bare_decorator_returns_an_object_ref():
    ref = bare.remote(4)
    assert isinstance(ref, rtml.ObjectRef)
    assert rtml.get(ref, timeout=30) == 40


def test_decorator_with_options():
    assert rtml.get(half_cpu.remote(1), timeout=30) == 1.5


def test_decorating_a_lambda_and_a_closure():
    base = 7
    f = rtml.remote(lambda y: y + base)
    assert rtml.get(f.remote(3), timeout=30) == 10


def test_calling_a_remote_function_directly_raises_type_error():
    with pytest.raises(TypeError, match=r"bare\.remote\("):
        bare(1)


def test_remote_with_positional_non_callable_raises():
    with pytest.raises(TypeError):
        rtml.remote(42)
    with pytest.raises(TypeError):
        rtml.remote(1, num_cpus=1)


def test_remote_function_keeps_metadata():
    assert bare.__name__ == "bare"
    assert bare.__wrapped__(2) == 20


# ---------------------------------------------------------------------------------- options


def test_options_override_num_returns():
    a, b = pair.options(num_returns=2).remote()
    assert rtml.get([a, b], timeout=30) == ["a", "b"]
    # the original function is unchanged
    assert rtml.get(pair.remote(), timeout=30) == ("a", "b")


def test_options_name_shows_in_errors():
    ref = boom.options(name="custom_task_name").remote("named failure")
    with pytest.raises(TaskError) as info:
        rtml.get(ref, timeout=30)
    assert "custom_task_name" in str(info.value)
    assert "named failure" in str(info.value)


def test_options_can_be_chained():
    f = three.options(num_returns=1).options(num_cpus=0.25)
    assert rtml.get(f.remote(1), timeout=30) == (1, 2, 3)


# ---------------------------------------------------------------------------------- num_returns


def test_num_returns_k_gives_k_refs():
    refs = three.options(num_returns=3).remote(5)
    assert isinstance(refs, list)
    assert len(refs) == 3
    assert all(isinstance(r, rtml.ObjectRef) for r in refs)
    assert len(set(refs)) == 3
    assert rtml.get(refs, timeout=30) == [5, 6, 7]
    # and each ref can be fetched on its own
    assert rtml.get(refs[2], timeout=30) == 7


def test_num_returns_in_decorator():
    f = rtml.remote(num_returns=2)(lambda: (1, 2))
    x, y = f.remote()
    assert rtml.get(y, timeout=30) == 2
    assert rtml.get(x, timeout=30) == 1


def test_num_returns_mismatch_is_a_task_error():
    refs = three.options(num_returns=2).remote(0)
    for ref in refs:
        with pytest.raises(ValueError, match="num_returns=2"):
            rtml.get(ref, timeout=30)


def test_num_returns_zero_returns_none_and_runs(tmp_path):
    marker = tmp_path / "ran"
    assert touch.options(num_returns=0).remote(str(marker)) is None
    wait_for(marker.exists, timeout=30, what="the num_returns=0 task to run")


# ---------------------------------------------------------------------------------- generators


def test_generator_function_returns_object_ref_generator():
    gen = counting_gen.remote(5)
    assert isinstance(gen, rtml.ObjectRefGenerator)
    refs = list(gen)
    assert all(isinstance(r, rtml.ObjectRef) for r in refs)
    assert rtml.get(refs, timeout=30) == [0, 1, 2, 3, 4]
    assert gen.is_finished()


def test_generator_items_arrive_while_it_is_still_running(gate_path):
    gate = gate_path
    gen = gated_gen.remote(str(gate))
    first = next(gen)
    # the generator is now blocked until the gate exists: the first value is already usable
    assert rtml.get(first, timeout=30) == 1
    assert not gen.is_finished()
    gate.touch()
    second = next(gen)
    assert rtml.get(second, timeout=30) == 2
    with pytest.raises(StopIteration):
        next(gen)


def test_num_returns_streaming_option():
    gen = counting_gen.options(num_returns="streaming").remote(3)
    assert isinstance(gen, rtml.ObjectRefGenerator)
    assert [rtml.get(r, timeout=30) for r in gen] == [0, 1, 2]


def test_generator_with_large_items():
    np = pytest.importorskip("numpy")

    @rtml.remote
    def big_items():
        for i in range(3):
            yield np.full(100_000, i, dtype=np.float64)  # 800 KB each: shared memory

    arrays = [rtml.get(r, timeout=30) for r in big_items.remote()]
    assert [a.shape for a in arrays] == [(100_000,)] * 3
    assert [float(a[0]) for a in arrays] == [0.0, 1.0, 2.0]


def test_generator_consumed_inside_a_task():
    @rtml.remote
    def consume(n):
        return [rtml.get(r, timeout=30) for r in counting_gen.remote(n)]

    assert rtml.get(consume.remote(4), timeout=60) == [0, 1, 2, 3]


def test_empty_generator():
    assert list(counting_gen.remote(0)) == []


def test_generator_that_raises_midway():
    gen = failing_gen.remote()
    refs = list(gen)
    assert len(refs) == 3
    assert rtml.get(refs[:2], timeout=30) == ["first", "second"]
    with pytest.raises(ValueError, match="generator broke at item 3") as info:
        rtml.get(refs[2], timeout=30)
    assert isinstance(info.value, TaskError)


def test_generator_cannot_be_passed_to_get_or_a_task():
    gen = counting_gen.remote(2)
    with pytest.raises(TypeError, match="ObjectRefGenerator"):
        rtml.get(gen, timeout=30)
    with pytest.raises(TypeError, match="ObjectRefGenerator"):
        bare.remote(gen)
    assert rtml.get(list(gen), timeout=30) == [0, 1]


def test_dropping_an_unconsumed_generator_keeps_runtime_healthy():
    gen = counting_gen.remote(50)
    first = next(gen)
    del gen
    assert rtml.get(first, timeout=30) == 0
    assert rtml.get(bare.remote(1), timeout=30) == 10


# ---------------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("options", "word"),
    [
        ({"not_an_option": 1}, "not_an_option"),
        ({"num_cpus": -1}, "num_cpus"),
        ({"num_cpus": "1"}, "num_cpus"),
        ({"num_gpus": -0.5}, "num_gpus"),
        ({"num_returns": -2}, "num_returns"),
        ({"max_retries": -5}, "max_retries"),
        ({"retry_exceptions": "yes"}, "retry_exceptions"),
        ({"retry_exceptions": [42]}, "retry_exceptions"),
        ({"resources": {"GPU": 1}}, "num_gpus"),
        ({"resources": {"sensor": -1}}, "sensor"),
    ],
)
def test_invalid_options_raise_value_error_naming_the_option(options, word):
    with pytest.raises(ValueError, match=word):
        bare.options(**options)
    with pytest.raises(ValueError, match=word):
        rtml.remote(**options)(lambda: None)


@pytest.mark.parametrize(
    ("options", "word"),
    [({"num_returns": "many"}, "num_returns"), ({"max_retries": 1.5}, "max_retries")],
)
def test_options_of_the_wrong_type_raise_type_error_as_in_ray(options, word):
    with pytest.raises(TypeError, match=word):
        bare.options(**options)


def test_ignored_ray_options_are_accepted():
    f = bare.options(memory=100 * 1024 * 1024, scheduling_strategy="SPREAD")
    assert rtml.get(f.remote(2), timeout=30) == 20
