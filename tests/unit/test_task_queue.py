"""The node's task queue and its pipelining rules, without a node."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from rtml._node._queue import STALL_S, TaskQueue, pipeline_depth, stalled
from rtml._node._tasks import TaskRec
from rtml._protocol._spec import QUEUED, TaskSpec
from rtml._scheduler import shape_key

durations = st.one_of(st.none(), st.floats(0, 10, allow_nan=False))


@given(a=st.floats(0, 10, allow_nan=False), b=st.floats(0, 10, allow_nan=False))
def test_longer_functions_pipeline_no_deeper(a: float, b: float) -> None:
    lo, hi = sorted((a, b))
    assert pipeline_depth(hi) <= pipeline_depth(lo)
    assert pipeline_depth(hi) >= 1


def test_depth_of_an_unmeasured_function() -> None:
    assert pipeline_depth(None) == 2


@given(est=durations, ran=st.floats(0, 100, allow_nan=False))
def test_a_task_is_stalled_only_past_its_threshold(est: float | None, ran: float) -> None:
    limit = STALL_S if est is None else max(STALL_S, 4 * est)
    assert stalled(ran, est) == (ran > limit)


def _task(n: int, cpu: float) -> TaskRec:
    spec = TaskSpec(n, "f", f"t{n}", b"", (), (), 1, {"CPU": cpu}, 0, False, 1, None)
    return TaskRec(spec, None, shape_key(spec.resources))


def test_queue_is_fifo_per_shape_and_front_first() -> None:
    q = TaskQueue()
    a, b, c, d = _task(1, 1.0), _task(2, 1.0), _task(3, 2.0), _task(4, 1.0)
    for t in (a, b, c):
        q.push(t)
    q.push(d, front=True)
    assert [t.spec.task_id for t in q.ready[a.shape]] == [4, 1, 2]
    assert [t.spec.task_id for t in q.ready[c.shape]] == [3]
    assert q.shapes[c.shape] == {"CPU": 2.0}
    assert q.queued() == 4
    assert all(t.state == QUEUED for t in (a, b, c, d))
    q.validate()
