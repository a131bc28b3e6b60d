"""Placement, a pure function: local first, inputs where they are, queues, strategies."""

from __future__ import annotations

import pytest

from rtml import exceptions as exc
from rtml._scheduler._placement import NodeView, place

CPU = {"CPU": 1.0}
MB = 1 << 20


def view(**queues: tuple[float, int]) -> dict[str, NodeView]:
    """name=(free CPUs, queued tasks); every node has 1 CPU."""
    return {
        name: NodeView(name, i, "", {"CPU": 1.0}, {"CPU": free}, queued=q)
        for i, (name, (free, q)) in enumerate(queues.items(), 1)
    }


def test_local_node_with_room_wins_ties():
    assert place(CPU, None, "a", view(a=(1, 0), b=(1, 0)), {}, 0.01) == "a"


def test_busy_local_node_sends_the_task_where_it_starts_sooner():
    assert place(CPU, None, "a", view(a=(0, 3), b=(1, 0)), {}, 0.01) == "b"


def test_inputs_pull_the_task_to_their_node_when_it_has_room():
    assert place(CPU, None, "a", view(a=(1, 0), b=(1, 0)), {"b": 100 * MB}, 0.01) == "b"


def test_a_queue_on_the_inputs_node_outweighs_moving_small_inputs():
    """1 MiB moves in ~1 ms; five 100 ms tasks queued there take 500 ms, even if the view
    (stale) shows a free CPU there."""
    v = view(a=(1, 0), b=(1, 5))
    assert place(CPU, None, "a", v, {"b": MB}, 0.1) == "a"


def test_strategies():
    v = view(a=(1, 0), b=(1, 0), c=(1, 0))
    assert [place(CPU, "SPREAD", "a", v, {}, None, t) for t in range(3)] == ["a", "b", "c"]
    assert place(CPU, ("node", "c", False), "a", v, {}, None) == "c"
    v["c"].alive = False
    assert place(CPU, ("node", "c", True), "a", v, {}, None) == "a"
    with pytest.raises(exc.TaskUnschedulableError, match="soft=True"):
        place(CPU, ("node", "c", False), "a", v, {}, None)
    with pytest.raises(exc.TaskUnschedulableError, match="no node"):
        place({"GPU": 1}, None, "a", v, {}, None)
