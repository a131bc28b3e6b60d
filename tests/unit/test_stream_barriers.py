"""Aligned checkpoints in a stage actor, without processes: the actor class runs in this
process with a fake engine whose calls complete at once."""

from __future__ import annotations

import threading
import types

from conftest import wait_for
from rtml import stream as rs
from rtml.stream._actors import StageWorker
from rtml.stream._plan import plan


class _Ref:
    pass


class _Method:
    def __init__(self, calls, name):
        self.calls, self.name = calls, name

    def remote(self, *args):
        self.calls.append((self.name, args))
        return _Ref()


class _Handle:
    def __init__(self):
        self.calls = []
        self.process = _Method(self.calls, "process")


def _engine():
    eng = types.ModuleType("fake_engine")
    eng.remote = eng.put = eng.kill = eng.get_actor = lambda *a, **k: None
    eng.wait = lambda refs, num_returns=1, timeout=None: (list(refs), [])
    eng.get = lambda refs, timeout=None: [None] * len(refs) if isinstance(refs, list) else None
    eng.exceptions = types.SimpleNamespace(GetTimeoutError=TimeoutError)
    return eng


def _counting_plan():
    flow = rs.Dataflow("b")
    (
        flow.source(rs.IterableSource(list(range(10)), partitions=2))
        .key_by(lambda x: "k")
        .stateful_map(lambda n, v: ((n or 0) + 1, (n or 0) + 1))
        .key_by(lambda n: n)  # re-keyed: its output leaves through an edge to a third stage
        .stateful_map(lambda s, v: (s, v))
        .sink(rs.CallableSink(print))
    )
    return plan(flow, 2, {0: ["0", "1"]})


def test_a_channel_that_sent_its_barrier_waits_until_every_channel_has():
    p = _counting_plan()
    down = _Handle()
    other = _Handle()  # the second actor of the next stage: its keys (1..6) all go to `down`
    w = StageWorker(p, 1, 0, 2, {p.stages[1].outputs[0]: [down, other]}, _engine(), None, {})
    edge = p.stages[1].inputs[0]
    item = [("k", None, 1)]
    w.process(edge, 0, 0, item, float("-inf"), None)  # A: data
    w.process(edge, 0, 1, [], float("-inf"), ("barrier", 1, "checkpoint"))  # A: barrier 1
    after = threading.Thread(target=w.process, args=(edge, 0, 2, item * 5, float("-inf"), None))
    after.start()  # A's data after the barrier must wait for B's barrier
    wait_for(lambda: 2 in w.inbox[(edge, 0)], timeout=5, what="A's third message queued")
    assert after.is_alive()
    assert w.next_seq[(edge, 0)] == 2
    w.process(edge, 1, 0, item, float("-inf"), None)  # B: data (not blocked)
    assert 1 not in w.parts
    w.process(edge, 1, 1, [], float("-inf"), ("barrier", 1, "checkpoint"))  # B: barrier 1
    after.join(5)
    assert not after.is_alive()
    # The snapshot holds exactly the two events before the barriers.
    (state,) = w.parts[1]["ops"]["stateful_map_2"].values()
    assert state == {"k": 2}
    # Downstream got both pre-barrier outputs, then the barrier, then the five after it.
    sent = [args for name, args in down.calls if args[3] or args[5]]
    kinds = ["barrier" if a[5] else len(a[3]) for a in sent]
    assert kinds == [1, 1, "barrier", 5], kinds
    seqs = [a[2] for _, a in down.calls]
    assert seqs == list(range(len(seqs)))  # sent in sequence
    assert [a[5] for _, a in other.calls if a[5]] == [("barrier", 1, "checkpoint")]


def test_out_of_order_calls_are_handled_in_sequence():
    p = _counting_plan()
    down = _Handle()
    w = StageWorker(p, 1, 0, 2, {p.stages[1].outputs[0]: [down, _Handle()]}, _engine(), None, {})
    edge = p.stages[1].inputs[0]
    later = threading.Thread(
        target=w.process, args=(edge, 0, 1, [("k", None, 2)], float("-inf"), None)
    )
    later.start()
    wait_for(lambda: 1 in w.inbox[(edge, 0)], timeout=5, what="seq 1 queued")
    assert w.next_seq[(edge, 0)] == 0  # seq 1 waits for seq 0
    w.process(edge, 0, 0, [("k", None, 1)], float("-inf"), None)
    later.join(5)
    outs = [a[3][0][2] for _, a in down.calls if a[3]]
    assert outs == [1, 2]
