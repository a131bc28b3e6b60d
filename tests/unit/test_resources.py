"""Resource accounting: fixed-point fractions, GPU ids, feasibility, lending CPUs back."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rtml._scheduler import ResourcePool, normalize_request, shape_key


def test_fractional_cpus_add_up_exactly():
    pool = ResourcePool({"CPU": 2.0})
    allocs = [pool.acquire({"CPU": 0.1}) for _ in range(20)]
    assert all(allocs)
    assert pool.acquire({"CPU": 0.1}) is None
    assert pool.availability()["CPU"] == 0
    for a in allocs:
        pool.release(a)
    assert pool.availability()["CPU"] == 2.0
    pool.validate()


def test_gpu_ids_whole_and_fractional():
    pool = ResourcePool({"CPU": 4.0, "GPU": 2.0})
    a = pool.acquire({"GPU": 1.0})
    b = pool.acquire({"GPU": 0.5})
    c = pool.acquire({"GPU": 0.5})
    assert a.gpu_ids != b.gpu_ids
    assert b.gpu_ids == c.gpu_ids
    assert pool.acquire({"GPU": 1.0}) is None  # no whole device is free
    pool.release(b)
    pool.release(c)
    assert pool.acquire({"GPU": 1.0}).gpu_ids != a.gpu_ids
    pool.validate()


def test_feasible_and_room():
    pool = ResourcePool({"CPU": 2.0, "sensor": 1.0})
    assert pool.feasible({"CPU": 1.0, "sensor": 1.0})
    assert not pool.feasible({"CPU": 3.0})
    assert not pool.feasible({"CPU": 1.0, "camera": 1.0})
    assert pool.room_for({"CPU": 0.5}) == 4
    assert pool.room_for({}) > 1000


def test_blocked_worker_lends_and_takes_back_its_cpu():
    pool = ResourcePool({"CPU": 1.0})
    a = pool.acquire({"CPU": 1.0})
    lent = pool.release_cpu(a)
    b = pool.acquire({"CPU": 1.0})  # another task runs while the first is blocked
    pool.reacquire_cpu(lent)  # oversubscribed for a moment, as in Ray
    assert pool.acquire({"CPU": 0.5}) is None
    pool.release(b)
    pool.release(a)
    assert pool.availability()["CPU"] == 1.0
    pool.validate()


def test_normalize_request_errors_name_the_problem():
    assert normalize_request(None, None, None) == {"CPU": 1.0}
    assert normalize_request(0, 1, {"x": 2}) == {"GPU": 1.0, "x": 2.0}
    with pytest.raises(ValueError, match="num_cpus"):
        normalize_request(-1, None, None)
    with pytest.raises(ValueError, match="whole number"):
        normalize_request(1, 1.5, None)
    with pytest.raises(ValueError, match="num_gpus"):
        normalize_request(1, None, {"GPU": 1})
    assert shape_key({"b": 1.0, "a": 2.0}) == (("a", 2.0), ("b", 1.0))


@given(st.lists(st.sampled_from([0.1, 0.25, 0.5, 1.0, 2.0]), max_size=40))
def test_random_acquire_release_keeps_the_books(requests):
    pool = ResourcePool({"CPU": 4.0, "GPU": 2.0})
    held = []
    for i, q in enumerate(requests):
        req = {"CPU": q} if i % 2 else {"CPU": min(q, 1.0), "GPU": min(q, 1.0)}
        a = pool.acquire(req)
        if a is not None:
            held.append(a)
        elif held:
            pool.release(held.pop(0))
        pool.validate()
    for a in held:
        pool.release(a)
    assert pool.availability() == {"CPU": 4.0, "GPU": 2.0}
    pool.validate()
