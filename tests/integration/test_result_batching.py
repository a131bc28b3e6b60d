"""Workers carry finished results of tiny pipelined tasks in one frame; nothing is lost.

The dangerous case: a held result contains a ref its task created (the worker's own ref to
it is released right after the result), so the order of ref updates and results matters.
"""

from __future__ import annotations

import pytest

import rtml
from conftest import wait_for

pytestmark = pytest.mark.usefixtures("shared_runtime")


@rtml.remote
def tiny(i):
    return i


@rtml.remote
def wrap(i):
    return [rtml.put(i * 10)]


def test_many_tiny_tasks_returning_refs_keep_every_inner_object():
    rtml.get([tiny.remote(i) for i in range(2000)], timeout=60)  # measured as tiny: batched
    outer = rtml.get([wrap.remote(i) for i in range(2000)], timeout=60)
    inner = [o[0] for o in outer]
    del outer
    assert rtml.get(rtml.put(None), timeout=30) is None  # the node has applied our releases
    assert rtml.get(inner, timeout=60) == [i * 10 for i in range(2000)]


def test_results_arrive_in_full_and_a_lone_result_is_not_held():
    refs = [tiny.remote(i) for i in range(5000)]
    assert rtml.get(refs, timeout=60) == list(range(5000))
    assert rtml.get(tiny.remote(-1), timeout=10) == -1


@rtml.remote
def keep(lst, gate, started=""):
    import os
    import sys
    import time

    if started:
        open(started, "w").close()
    deadline = time.monotonic() + 30
    while gate and not os.path.exists(gate) and time.monotonic() < deadline:
        time.sleep(0.001)
    if not hasattr(sys, "_rtml_test_kept"):
        sys._rtml_test_kept = []  # process-wide: these functions travel by value
    sys._rtml_test_kept.append(lst[0])  # this worker now holds the ref
    return 0


@rtml.remote
def read_kept():
    import sys

    return rtml.get(sys._rtml_test_kept[-1], timeout=10)


def test_a_held_result_does_not_overtake_the_ref_its_task_acquired(tmp_path):
    # One worker, so every task below runs in the same process, in submission order.
    rtml.shutdown()
    rtml.init(num_cpus=1)
    try:
        for i in range(300):  # both functions measured as tiny, so results get held
            rtml.get([tiny.remote(i), keep.remote([rtml.put(i)], "")], timeout=30)
        gate1, gate2, started = tmp_path / "g1", tmp_path / "g2", tmp_path / "started"
        blocker = keep.remote([rtml.put(0)], str(gate1))
        inner = rtml.put(123)
        kept = keep.remote([inner], str(gate2), str(started))
        after = tiny.remote(0)  # read with keep's exec in one go once the blocker ends
        del inner
        assert rtml.get(rtml.put(None), timeout=30) is None  # only keep's spec pins it now
        gate1.touch()
        wait_for(started.exists, timeout=30, what="keep to start")
        gate2.touch()  # keep ends with tiny in the worker's queue: its result is held
        assert rtml.get([blocker, kept, after], timeout=30) == [0, 0, 0]
        assert rtml.get(read_kept.remote(), timeout=30) == 123
    finally:
        rtml.shutdown()
        rtml.init(num_cpus=2)  # the module's shared runtime, as the fixture left it
