"""A cluster node's recovery logic without processes: a fake shell, a peer that answers by
hand, workers that report by hand. Objects lost with a node are rebuilt from lineage; the
bookkeeping stays consistent (``Node.validate``)."""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from typing import Any

import pytest

from rtml import exceptions as exc
from rtml._node._cluster import ClusterState
from rtml._node._node import Node
from rtml._protocol._ids import return_id
from rtml._protocol._payload import ERR, INLINE, REMOTE
from rtml._protocol._spec import TaskSpec


class FakeShell:
    def __init__(self) -> None:
        self.sent: list[tuple[int, tuple]] = []
        self.links: dict[int, str] = {}
        self.logs: list[tuple] = []

    def send(self, wid: int, msg: tuple) -> None:
        self.sent.append((wid, msg))

    def spawn(self, wid: int, actor: object) -> None:
        pass

    def kill(self, wid: int) -> None:
        pass

    def interrupt(self, wid: int) -> None:
        pass

    def open_link(self, node_id: str, address: str, hello: dict) -> int:
        wid = -1 - len(self.links)
        self.links[wid] = node_id
        return wid

    def close_link(self, wid: int) -> None:
        pass

    def log_remote(self, args: tuple) -> None:
        self.logs.append(args)

    def log_sink(self, *args: Any) -> None:
        self.logs.append(args)

    def execs(self) -> list[str]:
        return [m[1].name for _w, m in self.sent if m[0] == "exec"]


@dataclass
class Rec:  # what the control plane lists about a node
    node_id: str
    index: int
    address: str = "x:1"
    resources: dict = field(default_factory=lambda: {"CPU": 1.0})
    labels: dict = field(default_factory=dict)
    alive: bool = True
    available: dict = field(default_factory=lambda: {"CPU": 1.0})
    load: dict = field(default_factory=dict)
    death_cause: str | None = None


class Env:
    def __init__(self) -> None:
        self.io = FakeShell()
        self.node = Node(self.io, None, {"CPU": 1}, "test")
        self.cluster = ClusterState(self.node, "A", 1)
        self.node.cluster = self.cluster
        self.cluster.update_view([Rec("A", 1), Rec("B", 2)])
        self.driver = self.node.add_client().wid
        self.n = 0
        self.worker = 0

    def submit(self, deps: tuple = (), where: str = "B", retries: int = 3) -> int:
        self.n += 1
        tid = (self.driver << 40) | self.n
        spec = TaskSpec(
            tid,
            "f",
            f"t{self.n}",
            b"",
            deps,
            (),
            1,
            {"CPU": 1},
            retries,
            False,
            self.driver,
            None,
            strategy=("node", where, True),
        )
        self.node.register_function("f", b"blob")
        self.node.submit(self.driver, spec)
        return return_id(tid, 1)

    def reply_from_b(self, oid: int) -> None:
        """B ran the task: its result (large) stays in B's store."""
        fetches = [m for w, m in self.io.sent if w < 0 and m[0] == "fetch" and m[2] == [oid]]
        assert fetches, "the task was not forwarded to B"
        self.cluster.on_link_message(
            -1, ("reply", fetches[-1][1], [(oid, REMOTE, ("B", 1000), 1000, ())])
        )

    def run_here(self, value: object) -> None:
        """The local worker runs the task it was last given."""
        if not self.worker:
            self.worker = next(iter(self.node.workers))
            self.node.on_hello(self.worker, 4242)
        spec = [m[1] for w, m in self.io.sent if w == self.worker and m[0] == "exec"][-1]
        self.node.on_done(
            self.worker,
            spec.task_id,
            [(return_id(spec.task_id, 1), INLINE, pickle.dumps(value), 8, [])],
            0.001,
            False,
        )

    def release(self, oid: int) -> None:
        self.node.ref_updates(self.driver, [], [oid])


def test_chain_lost_with_its_node_is_rebuilt_here_from_lineage():
    env = Env()
    a = env.submit()
    env.reply_from_b(a)
    b = env.submit((a,))
    env.reply_from_b(b)
    env.release(a)  # only b is referenced now; a's lineage stays (b needs it)
    assert a not in env.node.objects
    assert len(env.cluster.lineage) == 2
    env.cluster.on_link_closed(-1)  # B died
    assert env.io.logs
    assert "node B died" in env.io.logs[-1][3]
    got = []
    assert env.node.add_get(env.driver, [b], got.append) is not None
    assert env.cluster.stats["reconstructed"] == 2
    env.run_here("A")  # a first (re-created as b's input) ...
    env.run_here("B")  # ... then b, here: B is gone
    assert env.io.execs() == ["t1", "t2"]
    assert got
    assert [m[1].task_id for _w, m in env.io.sent if m[0] == "exec"] == [a >> 32, b >> 32]
    assert env.cluster.lineage.reruns == {a >> 32: 1, b >> 32: 1}
    assert env.node.payload(b) == (INLINE, pickle.dumps("B"))
    env.node.validate()
    env.cluster.lineage.validate()
    env.release(b)
    assert len(env.cluster.lineage) == 0
    assert not env.node.objects.entries


def test_task_without_retries_cannot_be_rebuilt():
    env = Env()
    a = env.submit(retries=0)
    env.reply_from_b(a)
    env.cluster.on_link_closed(-1)
    env.node.add_get(env.driver, [a], lambda w: None)
    kind, blob = env.node.payload(a)
    assert kind == ERR
    with pytest.raises(exc.ObjectReconstructionFailedMaxAttemptsExceededError):
        raise pickle.loads(blob)
    env.node.validate()


def test_task_in_flight_on_the_dead_node_is_retried_here():
    env = Env()
    a = env.submit()
    env.cluster.on_link_closed(-1)  # before B answered
    env.run_here(1)
    assert env.node.payload(a) == (INLINE, pickle.dumps(1))
    assert env.node.stats["retried"] == 1
    env.node.validate()


def test_rerun_here_of_a_borrowed_objects_task_counts_the_submitters_reference():
    """B owns an object this node borrowed; B re-runs its task here: the entry is the proxy,
    and the submitter's hold must be a reference of its own."""
    env = Env()
    peer = env.node.add_client()
    peer.info = {"kind": "node", "node_id": "B", "index": 2}
    tid = ((2 << 20 | 2) << 40) | 9
    oid = return_id(tid, 1)
    env.node.ref_updates(env.driver, [oid], [])  # borrowed: a proxy, one ref (the driver's)
    assert env.node.objects.get(oid).kind == REMOTE
    spec = TaskSpec(tid, "f", "rebuilt", b"", (), (), 1, {"CPU": 1}, 3, False, tid >> 40, None)
    env.node.register_function("f", b"blob")
    env.node.submit(peer.wid, spec)
    assert env.node.objects.get(oid).refs == 2
    env.run_here("v")
    env.node.ref_updates(peer.wid, [], [oid])  # B read it and lets go
    assert env.node.payload(oid) == (INLINE, pickle.dumps("v"))  # the driver still has it
    env.node.validate()
