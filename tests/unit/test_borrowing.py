"""Borrowed references across three nodes without processes: every message between the nodes
goes through a queue the test delivers by hand, so the race between a borrower's registration
and the release of the value that contained the ref is played in its worst order every time.

The race (issue 19, item 3): node A holds ``y = [x]``, ``x`` owned by node B. Node C reads
``y``; a process on C unpickles it, so C borrows ``x`` from B ("refs" to B). C and A then let
go of ``y``: A frees it and releases its hold on ``x`` at B. That release and C's registration
travel on different connections; when the release arrives first, B frees ``x`` and C's ref to
it is dangling. See ``_cluster/_ownership.py`` for the protocol that closes it.
"""

from __future__ import annotations

import pickle
from typing import Any

import pytest
from test_cluster_state import FakeShell, Rec

from rtml._node._cluster import ClusterState
from rtml._node._dispatch import dispatch
from rtml._node._node import Node
from rtml._protocol._payload import INLINE


class Net:
    """Messages between the nodes, held until ``deliver`` is called."""

    def __init__(self) -> None:
        self.nodes: dict[str, Peer] = {}
        self.queue: list[tuple[str, str, str, int, tuple]] = []  # src, dst, way, wid, message

    def deliver(self, skip: set[tuple[str, str]] = frozenset()) -> int:
        """Deliver queued messages (and those they cause) except on the ``(src, dst)`` pairs
        in ``skip``, until none is left to deliver; the number delivered."""
        n = 0
        while True:
            for i, m in enumerate(self.queue):
                if (m[0], m[1]) not in skip:
                    _src, dst, way, wid, msg = self.queue.pop(i)
                    break
            else:
                return n
            n += 1
            peer = self.nodes[dst]
            if way == "request":
                dispatch(peer.node, peer.io, wid, msg)
            else:
                peer.cluster.on_link_message(wid, msg)


class NetShell(FakeShell):
    def __init__(self, net: Net, name: str) -> None:
        super().__init__()
        self.net = net
        self.name = name
        self.node_info: dict[str, Any] = {"node_id": name}
        self.to_peer: dict[int, tuple[str, int]] = {}  # our link -> (peer, its client id)
        self.from_peer: dict[int, tuple[str, int]] = {}  # a peer's client id -> (peer, link)

    def open_link(self, node_id: str, address: str, hello: dict) -> int:
        wid = super().open_link(node_id, address, hello)
        peer = self.net.nodes[node_id]
        c = peer.node.add_client()
        c.info = dict(hello)
        self.to_peer[wid] = (node_id, c.wid)
        peer.io.from_peer[c.wid] = (self.name, wid)
        return wid

    def send(self, wid: int, msg: tuple) -> None:
        if wid in self.to_peer:
            dst, cwid = self.to_peer[wid]
            self.net.queue.append((self.name, dst, "request", cwid, msg))
        elif wid in self.from_peer:
            dst, lwid = self.from_peer[wid]
            self.net.queue.append((self.name, dst, "reply", lwid, msg))
        else:
            super().send(wid, msg)


class Peer:
    def __init__(self, net: Net, name: str, index: int) -> None:
        self.io = NetShell(net, name)
        self.node = Node(self.io, None, {"CPU": 1}, "test")
        self.cluster = ClusterState(self.node, name, index)
        self.node.cluster = self.cluster
        self.cluster.update_view([Rec("A", 1), Rec("B", 2), Rec("C", 3)])
        self.driver = self.node.add_client().wid
        self.n = 0
        net.nodes[name] = self

    def put(self, value: object, contained: list[int] = ()) -> int:
        self.n += 1
        blob = pickle.dumps(value)
        return self.node.put(
            self.driver, (self.driver << 40) | self.n, INLINE, blob, len(blob), list(contained)
        )

    def acquire(self, oid: int) -> None:
        self.node.ref_updates(self.driver, [oid], [])

    def release(self, oid: int) -> None:
        self.node.ref_updates(self.driver, [], [oid])

    def get(self, net: Net, oid: int) -> tuple[int, Any]:
        fired: list[Any] = []
        if self.node.add_get(self.driver, [oid], fired.append) is not None:
            net.deliver()
            assert fired, "the get was never answered"
        return self.node.payload(oid)


@pytest.fixture
def net():
    n = Net()
    yield n
    for p in n.nodes.values():
        p.cluster.members.gcs_pool.shutdown(wait=True)


def _three(net: Net) -> tuple[Peer, Peer, Peer]:
    return Peer(net, "A", 1), Peer(net, "B", 2), Peer(net, "C", 3)


def _outer_at_a_inner_at_b(net: Net, a: Peer, b: Peer) -> tuple[int, int]:
    """B's driver puts x; A's driver puts y = [x]; both let go of x (y holds it)."""
    x = b.put("inner")
    a.acquire(x)  # A's driver got the ref (A borrows x from B)
    net.deliver()
    b.release(x)
    y = a.put(["ref to x"], [x])
    a.release(x)
    net.deliver()
    return x, y


def test_a_late_registration_does_not_lose_the_borrowed_ref(net):
    a, b, c = _three(net)
    x, y = _outer_at_a_inner_at_b(net, a, b)
    assert b.node.objects.get(x).refs == 1  # only A's link holds it now
    c.acquire(y)  # C's driver got a ref to y ...
    assert c.get(net, y) == (INLINE, pickle.dumps(["ref to x"]))
    c.acquire(x)  # ... unpickled it: C borrows x
    c.release(y)  # and lets go of y, as does A's driver
    a.release(y)
    # The worst order: everything else first, C's messages to B (its registration) last.
    net.deliver(skip={("C", "B")})
    net.deliver()
    kind, payload = c.get(net, x)
    assert kind == INLINE, pickle.loads(payload)
    assert pickle.loads(payload) == "inner"
    for p in (a, b, c):
        p.node.validate()
    # Nothing leaks either: once C lets go of x, every node is empty.
    c.release(x)
    net.deliver()
    for p in (a, b, c):
        assert not p.node.objects.entries, (p.io.name, p.node.objects.entries)
        p.node.validate()
