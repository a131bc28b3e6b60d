"""The node's task queue: ready tasks per resource shape, FIFO, and the pure rules that decide
how they are pipelined to leased workers.

A lease binds a worker to one shape; tasks of that shape are pipelined to it up to a depth that
shrinks as the function's measured duration grows (``pipeline_depth``: tiny tasks batch, long
ones never queue behind each other), and tasks pipelined behind one that runs far longer than
its function usually does are taken back (``stalled``).
"""

from __future__ import annotations

from collections import deque

from rtml._node._tasks import TaskRec
from rtml._protocol._spec import QUEUED

STALL_S = 0.05  # a task of unknown length running this long takes back what queued behind it


def pipeline_depth(est: float | None) -> int:
    """How many tasks of a function whose runs take ``est`` seconds (None: not measured yet)
    a worker may hold at once."""
    if est is None:
        return 2
    if est < 0.0005:
        return 32
    if est < 0.002:
        return 4
    return 1


def stalled(ran_for: float, est: float | None) -> bool:
    """Has a task run so much longer than expected (``est``) that tasks queued behind it
    should go elsewhere (it may never end)?"""
    return ran_for > (STALL_S if est is None else max(STALL_S, 4 * est))


class TaskQueue:
    def __init__(self) -> None:
        self.ready: dict[tuple, deque[TaskRec]] = {}
        self.shapes: dict[tuple, dict[str, float]] = {}  # shape key -> its resource request

    def push(self, t: TaskRec, front: bool = False) -> None:
        t.state = QUEUED
        q = self.ready.get(t.shape)
        if q is None:
            q = self.ready[t.shape] = deque()
            self.shapes[t.shape] = t.spec.resources
        if front:
            q.appendleft(t)
        else:
            q.append(t)

    def queued(self) -> int:
        return sum(len(q) for q in self.ready.values())

    def validate(self) -> None:
        """Every queued task is QUEUED, under its own shape, once."""
        seen: set[int] = set()
        for key, q in self.ready.items():
            assert key in self.shapes, f"queue of an unknown shape {key}"
            for t in q:
                assert t.state == QUEUED, f"{t.spec.name} in the queue is {t.state}"
                assert t.shape == key, f"{t.spec.name} queued under another shape"
                assert id(t) not in seen, f"{t.spec.name} queued twice"
                seen.add(id(t))
