"""Membership and links: the nodes of the cluster as this node sees them, and our connections
to them.

Owns the view (``NodeView`` per node, alive or dead, as the control plane lists it and as our
own forwards change it), the links (this node acting as a client of another one), the requests
in flight on each link with their callbacks, the control-plane client and the thread that
calls it. Everything else in the package reaches other nodes through here.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from rtml import exceptions as exc
from rtml._protocol._ids import to_hex
from rtml._scheduler._placement import NodeView


def blob(error: BaseException) -> bytes:
    return pickle.dumps(error, protocol=5)


def lost_blob(oid: int, why: str) -> bytes:
    return pickle.dumps(exc.ObjectLostError(to_hex(oid), why), protocol=5)


@dataclass
class Link:
    """Our connection to another node (as its client)."""

    node_id: str
    address: str
    wid: int  # the shell's channel id for it (negative)
    next_req: int = 1
    callbacks: dict[int, Any] = field(default_factory=dict)
    sent_fns: set[str] = field(default_factory=set)


class Membership:
    def __init__(self, node: Any, node_id: str, index: int) -> None:
        self.node = node
        self.node_id = node_id
        self.index = index
        self.view: dict[str, NodeView] = {}
        self.by_index: dict[int, str] = {}
        self.links: dict[str, Link] = {}
        self.link_of_wid: dict[int, Link] = {}
        self.spread_turn = 0
        self.gcs: Any = None  # the control-plane client (set by the node server)
        # Control-plane requests made for actors run here, never on the selector thread.
        self.gcs_pool = ThreadPoolExecutor(1, thread_name_prefix="rtml-node-gcs")

    # ------------------------------------------------------------------ the view
    def update_view(self, nodes: list[Any], on_dead: Callable[[str], None]) -> None:
        """Nodes as the control plane lists them (``NodeInfo``: heartbeat figures, alive or
        dead); ``on_dead(node_id)`` for each node found gone."""
        for n in nodes:
            nid = n.node_id
            alive = n.alive
            v = self.view.get(nid)
            if v is None or v.index != n.index:
                if v is not None and v.alive:  # a new incarnation: the old one is gone
                    v.alive = False
                    on_dead(nid)
                v = self.view[nid] = NodeView(
                    nid,
                    n.index,
                    n.address,
                    dict(n.resources),
                    {},
                    alive=alive,
                    labels=dict(n.labels),
                )
                self.by_index[v.index] = nid
            if nid != self.node_id:
                v.available = dict(n.available or v.totals)
                v.queued = int((n.load or {}).get("queued", 0))
            if v.alive and not alive:
                v.alive = False
                self.announce_death(nid, n.death_cause or "no heartbeat")
                on_dead(nid)

    def local_view(self) -> NodeView:
        """This node's entry of the view, with its current availability and queue."""
        v = self.view.get(self.node_id)
        node = self.node
        if v is None:
            v = self.view[self.node_id] = NodeView(
                self.node_id, self.index, "", node.resources.totals(), {}
            )
        v.available = node.resources.availability()
        v.queued = sum(len(q) for q in node.ready.values())
        return v

    def spread(self) -> None:
        """One more SPREAD placement: the next one starts from the following node."""
        self.spread_turn += 1

    def alive(self, node_id: str | None) -> bool:
        if node_id is None:
            return False
        if node_id == self.node_id:
            return True
        v = self.view.get(node_id)
        return v is not None and v.alive

    def account(self, node_id: str, resources: dict[str, float], sign: int) -> None:
        """Our own forwards, reflected in the view until the next heartbeat says better."""
        v = self.view.get(node_id)
        if v is not None:
            v.queued = max(0, v.queued - sign)
            for k, amount in resources.items():  # (a heartbeat may have counted it already)
                v.available[k] = min(v.totals.get(k, 0.0), v.available.get(k, 0.0) + sign * amount)

    def is_peer(self, proc: int) -> bool:
        c = self.node.clients.get(proc)
        return c is not None and c.info.get("kind") == "node"

    def announce_death(self, node_id: str, why: str) -> None:
        """Tell the drivers connected here (each node tells its own, once per dead node)."""
        self.node.io.log_remote(
            (
                "stderr",
                "rtml",
                "-",
                f"node {node_id} died ({why}): its tasks are retried and "
                "its objects rebuilt from lineage where possible, its actors restarted if they "
                "have max_restarts",
                None,
            )
        )

    # ------------------------------------------------------------------ links
    def link(self, node_id: str) -> Link:
        ln = self.links.get(node_id)
        if ln is None:
            v = self.view.get(node_id)
            if v is None:
                raise exc.RtmlSystemError(f"unknown node {node_id}")
            wid = self.node.io.open_link(
                node_id, v.address, {"kind": "node", "node_id": self.node_id, "index": self.index}
            )
            ln = self.links[node_id] = Link(node_id, v.address, wid)
            self.link_of_wid[wid] = ln
        return ln

    def request(self, ln: Link, msg_fn: Any, callback: Any) -> None:
        """Send ``msg_fn(req)`` over ``ln``; ``callback(reply)`` gets the answer (None if the
        link breaks first)."""
        req = ln.next_req
        ln.next_req += 1
        ln.callbacks[req] = callback
        self.node.io.send(ln.wid, msg_fn(req))

    def send(self, ln: Link, msg: tuple) -> None:
        self.node.io.send(ln.wid, msg)

    def function_for(self, ln: Link, fn_id: str) -> bytes | None:
        """The function's pickle if the peer has not been sent it yet (then it has)."""
        if fn_id in ln.sent_fns:
            return None
        ln.sent_fns.add(fn_id)
        blob: bytes | None = self.node.functions.get(fn_id)
        return blob

    def on_link_message(self, wid: int, m: tuple) -> None:
        ln = self.link_of_wid.get(wid)
        if ln is None:
            return
        tag = m[0]
        if tag == "reply" or tag == "raw":
            cb = ln.callbacks.pop(m[1], None)
            if cb is not None:
                cb(m[2])
        elif tag == "log":
            self.node.io.log_remote(m[1:])

    def link_closed(self, wid: int) -> Link | None:
        """The connection ``wid`` broke: forget the link, and count its node as dead now
        rather than when the control plane misses its heartbeats (nothing more is placed
        there). The link, or None if ``wid`` was none of ours."""
        ln = self.link_of_wid.pop(wid, None)
        if ln is None:
            return None
        self.links.pop(ln.node_id, None)
        v = self.view.get(ln.node_id)
        if v is not None and v.alive:
            v.alive = False
            self.announce_death(ln.node_id, "its connection closed")
        return ln

    def drop_link(self, node_id: str) -> Link | None:
        """The node died: close our link to it (returned, None if there was none)."""
        ln = self.links.pop(node_id, None)
        if ln is not None:
            self.link_of_wid.pop(ln.wid, None)
            self.node.io.close_link(ln.wid)
        # Fencing: a node declared dead may only be paused; what it sends from now on over
        # its links to this node (results, releases, new tasks) is refused: close them.
        for wid, c in list(self.node.clients.items()):
            if c.info.get("kind") == "node" and c.info.get("node_id") == node_id:
                self.node.io.close_link(wid)
        return ln

    def is_fenced(self, hello: dict[str, Any]) -> bool:
        """Does a peer's ``client_hello`` come from a node incarnation declared dead?"""
        v = self.view.get(hello.get("node_id", ""))
        return v is not None and (not v.alive or v.index != hello.get("index"))

    @staticmethod
    def fail_requests(ln: Link | None) -> None:
        """Every request in flight on a broken link gets None."""
        if ln is not None:
            callbacks, ln.callbacks = ln.callbacks, {}
            for cb in callbacks.values():
                cb(None)

    # ------------------------------------------------------------------ the control plane
    def gcs_call(self, call: Any, then: Any) -> None:
        """Run ``call(gcs)`` off this thread; ``then(value, error)`` runs back under the lock."""
        io = self.node.io

        def done(fut: Any) -> None:
            try:
                value, err = fut.result(), None
            except Exception as e:
                value, err = None, e
            io.call_soon(lambda: then(value, err))

        fut = self.gcs_pool.submit(call, self.gcs)
        fut.add_done_callback(done)

    def reply(self, proc: int, req: int, status: str, value: Any) -> None:
        self.node.io.send(proc, ("reply", req, (status, value)))

    def validate(self) -> None:
        """Links are indexed both ways; the index map names the view's nodes."""
        assert {ln.wid: ln for ln in self.links.values()} == self.link_of_wid, "link index"
        for nid, ln in self.links.items():
            assert ln.node_id == nid, f"link {ln.wid} filed under {nid}"
        for idx, nid in self.by_index.items():
            assert nid in self.view, f"index {idx} names {nid}, not in the view"
