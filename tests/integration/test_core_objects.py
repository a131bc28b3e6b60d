"""Objects: put/get round trips, get/wait semantics, large zero-copy values, freeing."""

from __future__ import annotations

import collections
import dataclasses
import datetime
import decimal
import gc
import glob
import os

import pytest

import rtml
from conftest import wait_for
from rtml.exceptions import GetTimeoutError, RtmlError

np = pytest.importorskip("numpy")

pytestmark = pytest.mark.usefixtures("shared_runtime")


MB = 1024 * 1024


@dataclasses.dataclass
class Point:
    x: int
    y: float


@rtml.remote
def echo(v):
    return v


@rtml.remote
def square(x):
    return x * x


@rtml.remote
def gate(path, timeout=60):
    wait_for(lambda: os.path.exists(path), timeout=timeout, what=path)
    return "opened"


@rtml.remote
def inspect_array(a):
    return float(a.sum()), a.shape, a.flags.writeable


@rtml.remote
def make_array(n):
    return np.arange(n, dtype=np.float64)


def _segments() -> set[str]:
    return set(glob.glob("/dev/shm/rtml_*"))


def _barrier():
    """A put/get round trip: the node has applied every ref update this process made."""
    assert rtml.get(rtml.put(None), timeout=30) is None


VALUES = [
    0,
    -1,
    2**80,
    3.5,
    float("inf"),
    complex(1, 2),
    True,
    None,
    "",
    "text ünïcode",
    b"\x00bytes",
    bytearray(b"ba"),
    [1, [2, [3]]],
    (1, "a"),
    {"k": [1, 2], 3: None},
    {1, 2, 3},
    frozenset({"a"}),
    range(5),
    Point(1, 2.5),
    collections.Counter("hello"),
    collections.OrderedDict(a=1),
    datetime.datetime(2024, 1, 2, 3, 4, 5),
    decimal.Decimal("1.10"),
    ValueError("an exception as a value"),
    "x" * 200_000,
    b"y" * 300_000,
    list(range(50_000)),
]


@pytest.mark.parametrize("value", VALUES, ids=lambda v: type(v).__name__)
def test_put_get_round_trip(value):
    got = rtml.get(rtml.put(value), timeout=30)
    through_task = rtml.get(echo.remote(value), timeout=30)
    for v in (got, through_task):
        assert type(v) is type(value)
        if isinstance(value, BaseException):
            assert v.args == value.args
        else:
            assert v == value


def test_numpy_round_trip_small_and_odd_dtypes():
    values = [
        np.arange(10),
        np.array(["a", "bc"]),
        np.zeros((3, 4), dtype=np.complex64),
        np.arange(12).reshape(3, 4).T,
        np.array([1.5], dtype=">f8"),
        np.array([{"obj": 1}, None], dtype=object),
    ]
    for a in values:
        for got in (rtml.get(rtml.put(a), timeout=30), rtml.get(echo.remote(a), timeout=30)):
            assert got.dtype == a.dtype
            assert got.shape == a.shape
            assert np.array_equal(got, a) if a.dtype != object else list(got) == list(a)


def test_put_of_an_object_ref_is_refused():
    ref = rtml.put(1)
    with pytest.raises(TypeError, match="ObjectRef"):
        rtml.put(ref)


def test_get_keeps_list_order():
    refs = [square.remote(i) for i in range(30)]
    refs.reverse()
    assert rtml.get(refs, timeout=60) == [i * i for i in reversed(range(30))]
    mixed = [rtml.put("p"), square.remote(3), rtml.put("q")]
    assert rtml.get(mixed, timeout=30) == ["p", 9, "q"]
    assert rtml.get((mixed[1], mixed[0]), timeout=30) == [9, "p"]


def test_get_of_a_non_ref_is_a_type_error():
    with pytest.raises(TypeError, match="ObjectRef"):
        rtml.get(42, timeout=1)
    with pytest.raises(TypeError, match="ObjectRef"):
        rtml.get([rtml.put(1), "not a ref"], timeout=1)
    with pytest.raises(ValueError, match="timeout"):
        rtml.get(rtml.put(1), timeout=-1)


def test_get_timeout_on_a_task_that_does_not_finish(gate_path):
    path = gate_path
    ref = gate.remote(str(path))
    with pytest.raises(GetTimeoutError) as info:
        rtml.get(ref, timeout=0.1)
    assert isinstance(info.value, TimeoutError)
    assert isinstance(info.value, RtmlError)
    # the task is unaffected: it completes once the gate opens
    path.touch()
    assert rtml.get(ref, timeout=30) == "opened"


def test_wait_returns_ready_and_not_ready_in_input_order(gate_path):
    path = gate_path
    # num_cpus=0: the blocked tasks must not keep square() from running
    blocked1, blocked2 = (gate.options(num_cpus=0).remote(str(path)) for _ in range(2))
    done1, done2 = rtml.put(1), square.remote(2)
    refs = [blocked1, done1, blocked2, done2]
    ready, not_ready = rtml.wait(refs, num_returns=2, timeout=30)
    assert ready == [done1, done2]
    assert not_ready == [blocked1, blocked2]
    # timeout: returns what is ready when time runs out
    ready, not_ready = rtml.wait(refs, num_returns=4, timeout=0.2)
    assert ready == [done1, done2]
    assert not_ready == [blocked1, blocked2]
    ready, not_ready = rtml.wait([blocked1], timeout=0)
    assert (ready, not_ready) == ([], [blocked1])
    path.touch()
    ready, not_ready = rtml.wait(refs, num_returns=4, timeout=30)
    assert ready == refs
    assert not_ready == []


def test_wait_respects_num_returns():
    refs = [square.remote(i) for i in range(6)]
    rtml.get(refs, timeout=30)
    ready, not_ready = rtml.wait(refs, num_returns=2, timeout=30)
    assert ready == refs[:2]
    assert not_ready == refs[2:]
    ready, not_ready = rtml.wait(refs, timeout=30)
    assert len(ready) == 1
    assert len(not_ready) == 5


def test_wait_in_a_loop_on_what_it_returned_and_on_a_changed_list():
    import pickle

    refs = [square.remote(i) for i in range(20)]
    not_ready, seen = refs, []
    while not_ready:
        ready, not_ready = rtml.wait(not_ready, timeout=30)
        seen.extend(ready)
        assert isinstance(not_ready, list)
    assert sorted(rtml.get(seen)) == sorted(i * i for i in range(20))
    _ready, rest = rtml.wait(refs, num_returns=1, timeout=30)
    assert type(pickle.loads(pickle.dumps(rest))) is list
    rest.append(rest[0])  # changed: checked again, as any list
    with pytest.raises(ValueError, match="duplicate"):
        rtml.wait(rest)
    _ready, rest = rtml.wait(refs, num_returns=1, timeout=30)
    rest[0] = 3
    with pytest.raises(TypeError, match="ObjectRef"):
        rtml.wait(rest)


def test_wait_on_an_empty_list_returns_two_empty_lists():
    # as ray.wait([]): the empty case returns before num_returns is checked against len
    assert rtml.wait([], timeout=1) == ([], [])


def test_wait_rejects_bad_arguments():
    a, b = rtml.put(1), rtml.put(2)
    with pytest.raises(ValueError, match="duplicate"):
        rtml.wait([a, a])
    with pytest.raises(TypeError, match="list"):
        rtml.wait(a)
    with pytest.raises(TypeError, match="ObjectRef"):
        rtml.wait([a, 3])
    with pytest.raises(ValueError, match="num_returns"):
        rtml.wait([a, b], num_returns=3)
    with pytest.raises(ValueError, match="num_returns"):
        rtml.wait([a, b], num_returns=0)
    with pytest.raises(ValueError, match="timeout"):
        rtml.wait([a, b], timeout=-1)


def test_large_array_put_in_driver_is_read_zero_copy_and_read_only():
    a = np.random.default_rng(0).random(20 * MB // 8)  # 20 MB
    ref = rtml.put(a)
    total, shape, writeable = rtml.get(inspect_array.remote(ref), timeout=60)
    assert shape == a.shape
    assert total == pytest.approx(float(a.sum()))
    assert writeable is False
    got = rtml.get(ref, timeout=60)
    assert np.array_equal(got, a)
    assert got.flags.writeable is False
    with pytest.raises(ValueError):
        got[0] = 1.0
    del got


def test_large_task_result_is_equal_and_read_only():
    n = 3_000_000  # 24 MB
    got = rtml.get(make_array.remote(n), timeout=60)
    assert np.array_equal(got, np.arange(n, dtype=np.float64))
    assert got.flags.writeable is False
    # and a large result can be passed on to another task
    total, _, _ = rtml.get(inspect_array.remote(make_array.remote(n)), timeout=60)
    assert total == float(n * (n - 1) // 2)


def test_object_is_freed_when_last_reference_goes():
    before = _segments()
    ref = rtml.put(np.ones(4 * MB, dtype=np.uint8))
    new = _segments() - before
    assert len(new) == 1, new
    copy = ref  # a second reference in the same process
    del ref
    gc.collect()
    _barrier()
    assert new <= _segments(), "freed while a reference was still alive"
    del copy
    gc.collect()
    wait_for(lambda: not (new & _segments()), timeout=10, what="the segment to be removed")


def test_large_task_result_is_freed_when_last_reference_goes():
    before = _segments()
    ref = make_array.remote(1_000_000)
    rtml.get(ref, timeout=60)  # the value's mapping is dropped right away
    new = _segments() - before
    assert len(new) == 1, new
    del ref
    gc.collect()
    wait_for(lambda: not (new & _segments()), timeout=10, what="the segment to be removed")


def test_ref_inside_a_put_list_keeps_the_inner_object_alive():
    before = _segments()
    inner = rtml.put(np.full(2 * MB, 7, dtype=np.uint8))
    seg = _segments() - before
    assert len(seg) == 1
    outer = rtml.put([inner])
    del inner
    gc.collect()
    _barrier()
    assert seg <= _segments(), "the inner object was freed while the outer list held its ref"
    (inner_again,) = rtml.get(outer, timeout=30)
    arr = rtml.get(inner_again, timeout=30)
    assert arr.shape == (2 * MB,)
    assert arr[0] == 7
    # and inside a task
    assert rtml.get(echo.remote(outer), timeout=30)[0] == inner_again
    del inner_again, arr, outer
    gc.collect()
    wait_for(
        lambda: not (seg & _segments()),
        timeout=10,
        what="the inner object to be freed with the outer one",
    )


def test_ref_passed_to_a_pending_task_stays_alive(gate_path):
    path = gate_path
    before = _segments()
    ref = rtml.put(np.ones(MB, dtype=np.uint8))
    seg = _segments() - before

    @rtml.remote
    def total_after_gate(g, a):
        return int(a.sum())

    out = total_after_gate.remote(gate.remote(str(path)), ref)
    del ref
    gc.collect()
    _barrier()
    assert seg <= _segments()
    path.touch()
    assert rtml.get(out, timeout=30) == MB
    del out
    gc.collect()
    wait_for(lambda: not (seg & _segments()), timeout=10, what="the argument to be freed")


def test_many_small_objects():
    refs = [rtml.put(i) for i in range(2000)]
    assert sum(rtml.get(refs, timeout=60)) == sum(range(2000))
