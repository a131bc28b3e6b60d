"""The node core driven by random events (Hypothesis state machine), no processes: tasks
submitted with inputs from earlier ones, workers that start, run, or die, refs released; after
every step ``Node.validate`` holds (leases, queues, counts, refs against holders)."""

from __future__ import annotations

import pickle
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from rtml._node._node import Node
from rtml._node._workers import STARTING
from rtml._protocol._ids import return_id
from rtml._protocol._payload import INLINE
from rtml._protocol._spec import TaskSpec


class FakeShell:
    def __init__(self) -> None:
        self.sent: list[tuple[int, tuple]] = []

    def send(self, wid: int, msg: tuple) -> None:
        self.sent.append((wid, msg))

    def spawn(self, wid: int, actor: object) -> None:
        pass

    def kill(self, wid: int) -> None:
        pass

    def interrupt(self, wid: int) -> None:
        pass

    def log_sink(self, *args: Any) -> None:
        pass


class NodeMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.io = FakeShell()
        self.node = Node(self.io, None, {"CPU": 2}, "test")
        self.node.register_function("f", b"blob")
        self.driver = self.node.add_client().wid
        self.n = 0
        self.refs: list[int] = []  # results the driver still holds

    def _workers(self, data: st.DataObject, pred: Any) -> Any:
        ws = sorted((w for w in self.node.workers.values() if pred(w)), key=lambda w: w.wid)
        return data.draw(st.sampled_from(ws)) if ws else None

    @rule()
    def start_worker(self) -> None:
        if self.node.pool.task_worker_count() < 4:
            self.node.start_worker()

    @rule(data=st.data())
    def hello(self, data: st.DataObject) -> None:
        w = self._workers(data, lambda w: w.state == STARTING)
        if w is not None:
            self.node.on_hello(w.wid, 1000 + w.wid)

    @rule(data=st.data(), cpu=st.sampled_from([1.0, 2.0]), retries=st.integers(0, 1))
    def submit(self, data: st.DataObject, cpu: float, retries: int) -> None:
        self.n += 1
        tid = (self.driver << 40) | self.n
        deps: tuple[int, ...] = ()
        if self.refs and data.draw(st.booleans()):
            deps = (data.draw(st.sampled_from(self.refs)),)
        spec = TaskSpec(
            tid,
            "f",
            f"t{self.n}",
            b"",
            deps,
            (),
            1,
            {"CPU": cpu},
            retries,
            False,
            self.driver,
            None,
        )
        self.node.submit(self.driver, spec)
        self.refs.append(return_id(tid, 1))

    @rule(data=st.data())
    def finish(self, data: st.DataObject) -> None:
        w = self._workers(data, lambda w: bool(w.assigned))
        if w is not None:
            tid = w.assigned[0].spec.task_id
            result = [(return_id(tid, 1), INLINE, pickle.dumps(tid), 8, [])]
            self.node.on_done(w.wid, tid, result, 0.001, False)

    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        if self.refs:
            oid = data.draw(st.sampled_from(self.refs))
            self.refs.remove(oid)
            self.node.ref_updates(self.driver, [], [oid])

    @rule(data=st.data())
    def worker_dies(self, data: st.DataObject) -> None:
        w = self._workers(data, lambda w: True)
        if w is not None:
            self.node.on_worker_exit(w.wid, "killed")

    @invariant()
    def consistent(self) -> None:
        self.node.validate()


NodeMachine.TestCase.settings = settings(max_examples=80, stateful_step_count=40, deadline=None)
test_node_state_machine = NodeMachine.TestCase
