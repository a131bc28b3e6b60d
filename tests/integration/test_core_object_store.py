"""Object store capacity: spilling to disk when shared memory is full, and store-full errors.

Each test starts its own runtime with a small ``object_store_memory``.
"""

from __future__ import annotations

import gc
import glob
import os

import pytest

import rtml
from rtml.exceptions import ObjectStoreFullError, RayError, TaskError

np = pytest.importorskip("numpy")

MB = 1024 * 1024


@rtml.remote
def array_stats(a):
    return float(a[0]), float(a[-1]), a.nbytes


@rtml.remote
def make_filled(nbytes, value):
    return np.full(nbytes // 8, value, dtype=np.float64)


@rtml.remote
def put_inside(nbytes):
    ref = rtml.put(np.zeros(nbytes, dtype=np.uint8))
    return "stored" if ref is not None else "?"


@rtml.remote
def ok():
    return "ok"


def _shm_bytes(session: str) -> int:
    total = 0
    for p in glob.glob(f"/dev/shm/rtml_{session}_*"):
        try:
            total += os.path.getsize(p)
        except FileNotFoundError:
            pass
    return total


def test_spilling_lets_more_data_than_the_store_be_put(runtime):
    session = rtml.init(num_cpus=1, object_store_memory=64 * MB)["session_name"]
    n = 30 * MB // 8
    refs = []
    for i in range(5):
        refs.append(rtml.put(np.full(n, float(i), dtype=np.float64)))
        assert _shm_bytes(session) <= 64 * MB + MB
    for i, ref in enumerate(refs):
        got = rtml.get(ref, timeout=60)
        assert got.shape == (n,)
        assert got[0] == i
        assert got[-1] == i
        assert np.all(got == i)
        del got
    # read back by tasks too (each restore may spill another object)
    stats = rtml.get([array_stats.remote(r) for r in reversed(refs)], timeout=120)
    assert stats == [(float(i), float(i), 30 * MB) for i in reversed(range(5))]


def test_array_held_by_the_driver_survives_its_object_being_spilled(runtime):
    rtml.init(num_cpus=1, object_store_memory=64 * MB)
    n = 30 * MB // 8
    first = rtml.put(np.full(n, 1.0))
    held = rtml.get(first, timeout=60)
    others = [rtml.put(np.full(n, float(i))) for i in range(2, 5)]  # forces spilling
    assert held[0] == 1.0
    assert held[-1] == 1.0
    assert np.all(held == 1.0)
    assert rtml.get(others[-1], timeout=60)[0] == 4.0
    assert np.all(rtml.get(first, timeout=60) == 1.0)


def test_task_results_spill_too(runtime):
    rtml.init(num_cpus=1, object_store_memory=64 * MB)
    refs = [make_filled.remote(30 * MB, float(i)) for i in range(4)]
    for i, ref in enumerate(refs):
        got = rtml.get(ref, timeout=120)
        assert got[0] == i
        assert got[-1] == i
        del got


def test_freed_objects_make_room_again(runtime):
    session = rtml.init(num_cpus=1, object_store_memory=64 * MB)["session_name"]
    for i in range(6):
        ref = rtml.put(np.full(30 * MB // 8, float(i)))
        assert rtml.get(ref, timeout=60)[0] == i
        del ref
        gc.collect()
    assert _shm_bytes(session) <= 64 * MB + MB


def test_put_larger_than_the_store_raises_object_store_full(runtime):
    session = rtml.init(num_cpus=1, object_store_memory=16 * MB)["session_name"]
    with pytest.raises(ObjectStoreFullError) as info:
        rtml.put(np.zeros(20 * MB, dtype=np.uint8))
    assert isinstance(info.value, RayError)
    assert "object_store_memory" in str(info.value)
    assert _shm_bytes(session) == 0, "the refused object left a segment behind"
    # the runtime is still usable, including for large objects that fit
    small = rtml.put(np.ones(4 * MB, dtype=np.uint8))
    assert rtml.get(small, timeout=30).sum() == 4 * MB
    assert rtml.get(ok.remote(), timeout=30) == "ok"


def test_task_result_larger_than_the_store_fails_on_get(runtime):
    session = rtml.init(num_cpus=1, object_store_memory=16 * MB)["session_name"]
    ref = make_filled.remote(20 * MB, 1.0)
    with pytest.raises(ObjectStoreFullError):
        rtml.get(ref, timeout=60)
    assert _shm_bytes(session) == 0
    assert rtml.get(ok.remote(), timeout=30) == "ok"


def test_put_larger_than_the_store_inside_a_task(runtime):
    rtml.init(num_cpus=1, object_store_memory=16 * MB)
    with pytest.raises(ObjectStoreFullError) as info:
        rtml.get(put_inside.remote(20 * MB), timeout=60)
    assert isinstance(info.value, TaskError)
    assert rtml.get(put_inside.remote(MB), timeout=60) == "stored"
