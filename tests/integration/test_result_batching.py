"""Workers carry finished results of tiny pipelined tasks in one frame; nothing is lost.

The dangerous case: a held result contains a ref its task created (the worker's own ref to
it is released right after the result), so the order of ref updates and results matters.
"""

from __future__ import annotations

import pytest

import rtml

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
