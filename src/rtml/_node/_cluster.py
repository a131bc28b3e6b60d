"""A node's part in a cluster: placement, forwarded tasks, objects owned or stored elsewhere.

::

    task ready ──place()──▶ here: local queue
                       └──▶ node B: "submit" + "fetch" its returns over the link to B
                            B runs it as if a local process had submitted it, holding the
                            returns for us; the "fetch" reply seals them here: small values
                            inline, large ones as REMOTE (they stay in B's store, B keeps them
                            for us until we release them)
    get / task input of a REMOTE object ──localize()──▶ "fetch" where it lives, then "pull"
                            it in chunks into this node's store (one transfer however many
                            readers wait); the entry turns into a local SHM object
    ref to an object another node owns ──adopt()──▶ a REMOTE proxy entry "ask its owner",
                            and a ref acquired at the owner (released when the proxy is freed)

A link to node B is this node acting as a client process of B (``client_hello`` with kind
"node"): B counts our references like any process's and drops them all if the link breaks.
All methods run under ``node.lock``; I/O goes through ``node.io`` (the shell), so the state can
be driven by tests with a fake shell.
"""

from __future__ import annotations

import os
import pickle
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from rtml import _checkpoint
from rtml import exceptions as exc
from rtml._node._lineage import Lineage, is_put
from rtml._node._objects import PENDING, READY
from rtml._node._tasks import TaskRec
from rtml._protocol._events import FORWARDED as FORWARDED_EV
from rtml._protocol._ids import NODE_SHIFT, node_of_object, return_id, task_of, to_hex
from rtml._protocol._payload import ERR, INLINE, REMOTE, SHM
from rtml._protocol._spec import FINISHED, FORWARDED, STREAMING, WAITING
from rtml._scheduler import shape_key
from rtml._scheduler._placement import NodeView, place

PARKED = ""  # place(): the task waits in ``infeasible`` for a node that fits it
CHUNK = 8 << 20  # bytes per pull request
PULL_WINDOW = 4  # pull requests in flight per object
REFETCH_DELAYS = (0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0)
ACTOR_POLL_S = 0.2  # how often calls waiting for a restarting actor ask where it is
ACTOR_RESTART_WAIT_S = 60.0  # ... and for how long before they fail


def _blob(error: BaseException) -> bytes:
    return pickle.dumps(error, protocol=5)


def _lost(oid: int, why: str) -> bytes:
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


@dataclass
class Pull:
    oid: int
    source: str
    size: int
    path: str
    fd: int
    next_offset: int = 0
    received: int = 0
    inflight: int = 0
    contained: tuple[int, ...] = ()


@dataclass
class OwnedActor:
    """An actor created from this node that lives on another one: restarted from here (on a
    live node) if that node dies and it has restarts left."""

    spec: Any
    info: dict[str, Any]
    proc: int
    home: str
    pins: list[int]
    restarting: bool = False


class ClusterState:
    def __init__(self, node: Any, node_id: str, index: int) -> None:
        self.node = node
        self.node_id = node_id
        self.index = index
        self.view: dict[str, NodeView] = {}
        self.by_index: dict[int, str] = {}
        self.links: dict[str, Link] = {}
        self.link_of_wid: dict[int, Link] = {}
        self.forwarded: dict[int, TaskRec] = {}
        self.remote_held: dict[int, str] = {}  # oid -> node holding it (or borrowed from) for us
        self.pulls: dict[int, Pull] = {}
        self.infeasible: list[TaskRec] = []  # no live node fits them yet: wait for one
        # For the control plane, sent in batches by the node server (off the task path): the
        # lineage of tasks owned here while any of their results lives, and where large
        # objects are stored.
        self.lineage = Lineage()
        self.lineage_add: list[Any] = []
        self.locations_add: list[tuple[int, int]] = []
        self.locations_drop: list[int] = []
        self.gcs: Any = None  # the control-plane client (set by the node server)
        # Control-plane requests made for actors run here, never on the selector thread.
        self.gcs_pool = ThreadPoolExecutor(1, thread_name_prefix="rtml-node-gcs")
        self.spread_turn = 0
        # Fault tolerance: objects a borrower asks its owner for again (the owner may be
        # rebuilding them), callbacks due later (run by ``tick``), actors created from here on
        # other nodes, where actors live now, and calls waiting for an actor to come back.
        self.refetch: dict[int, int] = {}
        self.rebuilding: dict[int, Any] = {}  # task id -> spec, to resubmit (see ``lost``)
        self.timers: list[tuple[float, Any]] = []
        self.owned_actors: dict[int, OwnedActor] = {}
        self.actor_home: dict[int, str] = {}
        self.parked: dict[int, list[TaskRec]] = {}
        self.parked_at: dict[int, float] = {}
        self.polled_at: dict[int, float] = {}
        self.polling: set[int] = set()
        self.stats = {
            "forwarded": 0,
            "pulled_bytes": 0,
            "pulls": 0,
            "served_bytes": 0,
            "reconstructed": 0,
            "actors_restarted": 0,
        }
        node.next_wid = max(node.next_wid, (index << NODE_SHIFT) | 2)

    # ------------------------------------------------------------------ membership
    def update_view(self, nodes: list[Any]) -> None:
        """Nodes as the control plane lists them (``NodeInfo``: heartbeat figures, alive or
        dead)."""
        for n in nodes:
            nid = n.node_id
            alive = n.alive
            v = self.view.get(nid)
            if v is None or v.index != n.index:
                if v is not None and v.alive:  # a new incarnation: the old one is gone
                    v.alive = False
                    self.on_node_dead(nid)
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
                self._announce_death(nid, n.death_cause or "no heartbeat")
                self.on_node_dead(nid)
        if self.infeasible:  # a node that fits them may have joined
            waiting, self.infeasible = self.infeasible, []
            for t in waiting:
                if t.state == WAITING and not t.cancelled:
                    self.node._ready(t)

    def is_peer(self, proc: int) -> bool:
        c = self.node.clients.get(proc)
        return c is not None and c.info.get("kind") == "node"

    def _local_view(self) -> NodeView:
        v = self.view.get(self.node_id)
        node = self.node
        if v is None:
            v = self.view[self.node_id] = NodeView(
                self.node_id, self.index, "", node.resources.totals(), {}
            )
        v.available = node.resources.availability()
        v.queued = sum(len(q) for q in node.ready.values())
        return v

    # ------------------------------------------------------------------ placement
    def place(self, t: TaskRec) -> str | None:
        """The node to run ``t`` on; None for this one; PARKED: no node fits it yet."""
        spec = t.spec
        if spec.num_returns == STREAMING and spec.strategy is None:
            return None  # streams are served by the node that owns them
        self._local_view()
        nodes = self.node
        inputs: dict[str, int] = {}
        for d in spec.deps:
            e = nodes.objects.get(d)
            if e is None:
                continue
            if e.kind == SHM:
                inputs[self.node_id] = inputs.get(self.node_id, 0) + e.size
            elif e.kind == REMOTE and e.payload[1]:
                inputs[e.payload[0]] = inputs.get(e.payload[0], 0) + e.payload[1]
        if spec.strategy == "SPREAD":
            self.spread_turn += 1
        try:
            target = place(
                spec.resources,
                spec.strategy,
                self.node_id,
                self.view,
                inputs,
                nodes.fn_time.get(spec.fn_id),
                self.spread_turn,
            )
        except exc.TaskUnschedulableError as e:
            if isinstance(spec.strategy, tuple):
                raise  # a hard node affinity to a dead or too small node
            self.infeasible.append(t)  # as Ray: pending until a node that fits joins
            if t.attempts == 0:
                t.attempts = -1  # warned once (set back to 0 when it is placed)
                self.node.io.log_sink(
                    "stderr",
                    "rtml",
                    "-",
                    f"warning: {e}; the task waits until such a node joins",
                    spec.job and spec.job[0],
                )
            return PARKED
        if t.attempts < 0:
            t.attempts = 0
        if target == self.node_id:
            return None
        if spec.num_returns == STREAMING:
            raise exc.TaskUnschedulableError(
                f"streaming task {spec.name} must run on the node of its caller; drop its "
                "scheduling_strategy or give that node the resources it needs"
            )
        return target

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

    def _request(self, ln: Link, msg_fn: Any, callback: Any) -> None:
        req = ln.next_req
        ln.next_req += 1
        ln.callbacks[req] = callback
        self.node.io.send(ln.wid, msg_fn(req))

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

    def on_link_closed(self, wid: int) -> None:
        ln = self.link_of_wid.pop(wid, None)
        if ln is None:
            return
        self.links.pop(ln.node_id, None)
        # A node's connection breaks when its process dies: treat it as dead now rather than
        # when the control plane misses its heartbeats (nothing more is placed there).
        v = self.view.get(ln.node_id)
        if v is not None and v.alive:
            v.alive = False
            self._announce_death(ln.node_id, "its connection closed")
        self._peer_lost(ln.node_id, f"the connection to node {ln.node_id} closed", ln)

    def on_node_dead(self, node_id: str) -> None:
        ln = self.links.pop(node_id, None)
        if ln is not None:
            self.link_of_wid.pop(ln.wid, None)
            self.node.io.close_link(ln.wid)
        # Fencing: a node declared dead may only be paused; what it sends from now on over
        # its links to this node (results, releases, new tasks) is refused: close them.
        for wid, c in list(self.node.clients.items()):
            if c.info.get("kind") == "node" and c.info.get("node_id") == node_id:
                self.node.io.close_link(wid)
        self._peer_lost(node_id, f"node {node_id} died", ln)

    def is_fenced(self, hello: dict[str, Any]) -> bool:
        """Does a peer's ``client_hello`` come from a node incarnation declared dead?"""
        v = self.view.get(hello.get("node_id", ""))
        return v is not None and (not v.alive or v.index != hello.get("index"))

    def _announce_death(self, node_id: str, why: str) -> None:
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

    def _alive(self, node_id: str | None) -> bool:
        if node_id is None:
            return False
        if node_id == self.node_id:
            return True
        v = self.view.get(node_id)
        return v is not None and v.alive

    def _peer_lost(self, node_id: str, why: str, ln: Link | None) -> None:
        """Everything we waited for from that node fails (tasks retry elsewhere); objects we
        held there are lost (rebuilt when read, see ``lost``); actors created from here that
        lived there restart elsewhere."""
        if ln is not None:
            callbacks, ln.callbacks = ln.callbacks, {}
            for cb in callbacks.values():
                cb(None)
        node = self.node
        for oid, src in list(self.remote_held.items()):
            if src == node_id:
                del self.remote_held[oid]
                e = node.objects.get(oid)
                if e is not None and e.kind == REMOTE and e.state != PENDING:
                    e.payload = (None, e.payload[1])  # lost: a reader rebuilds it or fails
        for p in list(self.pulls.values()):
            if p.source == node_id:
                self._pull_failed(p, why)
        for oa in list(self.owned_actors.values()):
            if oa.home == node_id and not oa.restarting:
                self._restart_actor(oa, why)

    # ------------------------------------------------------------------ forwarding
    def forward(self, t: TaskRec, target: str) -> None:
        node = self.node
        spec = t.spec
        ln = self.link(target)
        t.state = FORWARDED
        t.remote = target
        t.attempts += 1
        if node.events is not None:
            now = time.time()
            node.events.append(
                (FORWARDED_EV, t, t.attempts, now, now, None, 0, None, {"to_node": target})
            )
        self.forwarded[spec.task_id] = t
        self.stats["forwarded"] += 1
        blob = None
        if spec.fn_id not in ln.sent_fns:
            blob = node.functions.get(spec.fn_id)
            ln.sent_fns.add(spec.fn_id)
        node.io.send(ln.wid, ("submit", spec, blob))
        self._account(target, spec.resources, -1)
        ids = [return_id(spec.task_id, i) for i in range(1, spec.num_returns + 1)]
        self._request(ln, lambda r: ("fetch", r, ids), lambda vals: self._returned(t, ln, vals))

    def _account(self, node_id: str, resources: dict[str, float], sign: int) -> None:
        """Our own forwards, reflected in the view until the next heartbeat says better."""
        v = self.view.get(node_id)
        if v is not None:
            v.queued = max(0, v.queued - sign)
            for k, amount in resources.items():  # (a heartbeat may have counted it already)
                v.available[k] = min(v.totals.get(k, 0.0), v.available.get(k, 0.0) + sign * amount)

    def _returned(self, t: TaskRec, ln: Link, vals: list | None) -> None:
        node = self.node
        self.forwarded.pop(t.spec.task_id, None)
        self._account(ln.node_id, t.spec.resources, +1)
        if vals is None:  # the node running it is gone
            if t.state == FORWARDED:
                self._lost_in_flight(t, ln.node_id)
            return
        if t.state != FORWARDED:  # cancelled or retried meanwhile: let the peer free them
            self._release(ln, [oid for oid, *_ in vals])
            return
        t.state = FINISHED
        node.tasks.pop(t.spec.task_id, None)
        node.stats["finished"] += 1
        self._seal_returned(ln, vals)
        node._unpin(t)

    def _lost_in_flight(self, t: TaskRec, node_id: str) -> None:
        """The node running a forwarded task or call died: retry it (a call once its actor is
        back) or fail it, naming the option that would have retried it."""
        node = self.node
        if t.retries_left == 0 or t.cancelled:
            if t.spec.actor_id is not None:
                node._fail(
                    t,
                    exc.ActorDiedError(
                        f"the node running the actor ({node_id}) died while the call "
                        f"{t.spec.name}() was in flight; the call was not retried (pass "
                        "max_task_retries=N, or -1, to the actor to re-send in-flight calls "
                        "to its restarted instance)",
                        actor_id=to_hex(t.spec.actor_id),
                    ),
                )
            else:
                node._fail(
                    t,
                    exc.NodeDiedError(
                        f"task {t.spec.name} ({to_hex(t.spec.task_id)}) was running on node "
                        f"{node_id}, which is gone; it was tried {t.attempts} time(s). Raise "
                        "max_retries to retry on another node"
                    ),
                )
            return
        if t.retries_left > 0:
            t.retries_left -= 1
        node.stats["retried"] += 1
        t.state = WAITING
        t.remote = None
        if t.spec.actor_id is not None:
            self._park(t)  # re-sent once the actor is back
        else:
            node._ready(t)

    def _seal_returned(self, ln: Link, vals: list, keep: bool = False) -> None:
        """Seal what a peer computed for us: small values here (the peer's copy released at
        once, unless refs inside it must stay alive there, or ``keep``: an actor's handle
        object, whose entry there keeps the actor alive), large ones as REMOTE (kept there
        for us until our entry is freed)."""
        seal = self.node.objects.seal
        done = []
        for oid, kind, payload, size, contained in vals:
            if kind in (INLINE, ERR) and not contained and not keep:
                seal(oid, kind, payload, size, ())
                done.append(oid)
                continue
            self.remote_held[oid] = ln.node_id  # before sealing: a dropped entry frees at once
            if kind in (INLINE, ERR):
                seal(oid, kind, payload, size, contained)
            else:
                seal(oid, REMOTE, payload, size, ())
        self._release(ln, done)

    def _release(self, ln: Link, oids: list[int]) -> None:
        if oids:
            self.node.io.send(ln.wid, ("refs", [], oids))

    def cancel(self, t: TaskRec, oid: int, force: bool, recursive: bool) -> None:
        t.cancelled = True
        ln = self.links.get(t.remote or "")
        if ln is not None:
            self.node.io.send(ln.wid, ("cancel", oid, force, recursive))

    # ------------------------------------------------------------------ objects
    def owns(self, oid: int) -> bool:
        return node_of_object(oid) == self.index

    def owner_of(self, oid: int) -> str | None:
        return self.by_index.get(node_of_object(oid))

    def adopt(self, oid: int) -> None:
        """A ref to an object owned elsewhere reached this node: a proxy entry that borrows it."""
        owner_index = node_of_object(oid)
        if owner_index == self.index or owner_index == 0:
            return  # ours (or not a cluster id): unknown means freed
        owner = self.by_index.get(owner_index)
        objects = self.node.objects
        e = objects.create(oid, 0)
        e.refs = 0
        e.state = READY  # the value is "at its owner" until someone needs it here
        e.kind = REMOTE
        e.payload = (owner, None)
        if owner is None:
            return  # the owner is unknown (dead): reading it raises ObjectLostError
        ln = self.link(owner)
        self.remote_held[oid] = owner
        self.node.io.send(ln.wid, ("refs", [oid], []))

    def localize(self, oid: int) -> None:
        """Make a REMOTE object local before a process here reads it (no-op otherwise)."""
        e = self.node.objects.get(oid)
        if e is None or e.kind != REMOTE or e.state == PENDING:
            return
        where = e.payload[0]
        e.state = PENDING
        if where == self.node_id or not self._alive(where):
            self.lost(oid, f"object {to_hex(oid)} was on node {where}, which is gone")
            return
        self._request(
            self.link(where),
            lambda r: ("fetch", r, [oid]),
            lambda vals: self._fetched(oid, where, vals and vals[0]),
        )

    def _fetched(self, oid: int, source: str, val: tuple | None) -> None:
        e = self.node.objects.get(oid)
        if e is None or e.state != PENDING:
            return
        if val is None:
            self.lost(oid, f"object {to_hex(oid)} was on node {source}, which is gone")
            return
        _oid, kind, payload, size, contained = val
        if payload is None:  # (an answer made of a pending entry: no value yet) ask again
            self.lost(oid, f"object {to_hex(oid)} was not ready on node {source}")
            return
        if kind in (INLINE, ERR):
            self.refetch.pop(oid, None)
            self.node.objects.seal(oid, kind, payload, size, contained)
            return
        at = payload[0]  # REMOTE/SHM over there: (node holding the bytes, size)
        if at is None or at == self.node_id or not self._alive(at):
            self.lost(oid, f"object {to_hex(oid)} was on node {at}, which is gone")
            return
        self._start_pull(oid, at, payload[1], tuple(contained))

    # ------------------------------------------------------------------ lost objects
    def is_lost(self, e: Any) -> bool:
        """Is a sealed entry's only copy on a node that is gone?"""
        return (
            e.kind == REMOTE
            and e.state != PENDING
            and (e.payload[0] is None or not self._alive(e.payload[0]))
        )

    def check_lost(self, oid: int) -> None:
        """Before answering a peer about an object owned here: rebuild it if it was lost."""
        e = self.node.objects.get(oid)
        if e is not None and self.owns(oid) and self.is_lost(e):
            where = e.payload[0]
            e.state = PENDING
            self.lost(oid, f"object {to_hex(oid)} was on node {where}, which is gone")

    def lost(self, oid: int, why: str) -> None:
        """Every copy of a PENDING-marked object is gone: rebuild it if possible (the owner
        re-runs the task that made it; a borrower asks the owner again), else seal the error."""
        err = self._rebuild(oid, why)
        if err is not None:
            self.refetch.pop(oid, None)
            self.node.objects.seal(oid, ERR, _blob(err), 0, ())
        # Tasks to re-run are queued rather than resubmitted recursively: a chain of lost
        # results is as long as the lineage, far deeper than Python's recursion limit.
        while self.rebuilding:
            tid = next(iter(self.rebuilding))
            self._resubmit(self.rebuilding.pop(tid))

    def _rebuild(self, oid: int, why: str) -> BaseException | None:
        """Start re-creating ``oid``; the error to seal it with if it cannot be."""
        hexid = to_hex(oid)
        owner_index = node_of_object(oid)
        if owner_index != self.index:
            owner = self.by_index.get(owner_index)
            if owner is None or not self._alive(owner):
                return exc.OwnerDiedError(
                    hexid,
                    f"{why}, and the node that owns it ({owner}) "
                    "died too: only its owner can rebuild an object",
                )
            n = self.refetch.get(oid, 0)
            if n >= len(REFETCH_DELAYS):
                return exc.ObjectLostError(
                    hexid, f"{why}; its owner ({owner}) could not provide it again after {n} tries"
                )
            self.refetch[oid] = n + 1
            self.timers.append(
                (time.monotonic() + REFETCH_DELAYS[n], lambda: self._refetch(oid, owner))
            )
            return None
        if is_put(oid):
            return exc.ObjectLostError(
                hexid,
                f"{why}; it was made by rtml.put(), which cannot "
                "be recomputed (a put value lives as long as its node)",
            )
        tid = task_of(oid)
        if tid in self.node.tasks or tid in self.rebuilding:
            return None  # its task runs (again) already: its result will seal it
        spec = self.lineage.specs.get(tid)
        if spec is None:
            return exc.ObjectReconstructionFailedLineageEvictedError(
                hexid,
                f"{why}; it cannot be recomputed: only results of tasks submitted on this "
                "node, and of calls to actors with max_task_retries != 0, are kept in its "
                "lineage (not streamed items, nor the actor's creation)",
            )
        if not self.lineage.spend_retry(tid):
            return exc.ObjectReconstructionFailedMaxAttemptsExceededError(
                hexid,
                f"{why}; recomputing it would re-run {spec.name}, which has no retries "
                f"left (max_retries={spec.max_retries}); raise max_retries to allow it",
            )
        self.rebuilding[tid] = spec  # resubmitted by ``lost``
        return None

    def _refetch(self, oid: int, owner: str) -> None:
        e = self.node.objects.get(oid)
        if e is None or e.state != PENDING:
            return
        if not self._alive(owner):
            self.lost(oid, f"object {to_hex(oid)} could not be read")
            return
        self._request(
            self.link(owner),
            lambda r: ("fetch", r, [oid]),
            lambda vals: self._fetched(oid, owner, vals and vals[0]),
        )

    def _reset(self, oid: int) -> bool:
        """Mark a lost entry pending again (its task is about to re-run); False if it is not
        lost."""
        e = self.node.objects.get(oid)
        if e is None or not self.is_lost(e):
            return False
        e.state = PENDING
        e.kind = INLINE
        e.payload = None
        self.remote_held.pop(oid, None)
        return True

    def _resubmit(self, spec: Any) -> None:
        """Run a finished task again to re-create its lost results; inputs freed or lost since
        are marked pending and their own tasks queued to re-run (``lost`` drains the queue)."""
        node = self.node
        objects = node.objects
        tid = spec.task_id
        t = TaskRec(spec, node, shape_key(spec.resources))
        t.attempts = self.lineage.reruns.get(tid, 1)  # (its events show a later attempt)
        node.tasks[tid] = t
        node.stats["submitted"] += 1
        self.stats["reconstructed"] += 1
        for i in range(1, spec.num_returns + 1):
            oid = return_id(tid, i)
            e = objects.get(oid)
            if e is not None and e.state != PENDING and self.is_lost(e):
                self._reset(oid)
        temp = []
        for d in (*spec.deps, *spec.contained):
            e = objects.get(d)
            if e is None:
                if not self.owns(d):
                    self.adopt(d)  # borrowed: its owner still has it, or reading it fails
                    continue
                objects.create(d, 0)  # (one ref until it is pinned below)
                temp.append(d)
                self.lineage.return_created(d)
            elif not self._reset(d):
                continue
            err = self._rebuild(d, f"object {to_hex(d)}, an input of {spec.name}, was lost")
            if err is not None:
                objects.seal(d, ERR, _blob(err), 0, ())
        for c in spec.contained:
            objects.add_ref(c)
        if spec.actor_id is None:
            if node._pin_deps(t, localize=False) and t.deps_left == 0 and t.state == WAITING:
                node._ready(t)
        else:  # a call: to its actor, wherever it lives now
            home = self.actor_elsewhere(spec)
            if home is not None:
                if node._pin_deps(t, localize=False):
                    self.send_call(t, home)
            elif node._pin_deps(t):
                node.actors.enqueue(t)
        for d in temp:
            objects.release(d)

    # ------------------------------------------------------------------ pulls
    def _start_pull(self, oid: int, source: str, size: int, contained: tuple) -> None:
        store = self.node.store
        try:
            path = store.create(oid, size)
        except Exception as err:
            self.node.objects.seal(oid, ERR, pickle.dumps(self.node._full_error(size)), 0, ())
            del err
            return
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        os.ftruncate(fd, size)
        p = self.pulls[oid] = Pull(oid, source, size, path, fd, contained=contained)
        self.stats["pulls"] += 1
        self._pump(p)

    def _pump(self, p: Pull) -> None:
        if not self._alive(p.source):
            self._pull_failed(p, f"node {p.source} is gone")
            return
        ln = self.link(p.source)  # (the bytes may be on a node we never talked to)
        while p.inflight < PULL_WINDOW and p.next_offset < p.size:
            off = p.next_offset
            n = min(CHUNK, p.size - off)
            p.next_offset += n
            p.inflight += 1
            self._request(
                ln,
                lambda r, off=off, n=n: ("pull", r, p.oid, off, n),
                lambda data, off=off: self._chunk(p, off, data),
            )

    def _chunk(self, p: Pull, offset: int, data: Any) -> None:
        if self.pulls.get(p.oid) is not p:
            return
        p.inflight -= 1
        if data is None:
            self._pull_failed(p, f"node {p.source} no longer has it")
            return
        os.pwrite(p.fd, data, offset)
        p.received += len(data)
        self.stats["pulled_bytes"] += len(data)
        if p.received >= p.size:
            del self.pulls[p.oid]
            os.close(p.fd)
            node = self.node
            node.store.seal(p.oid)
            e = node.objects.get(p.oid)
            if e is None or e.state != PENDING:
                node.store.delete(p.oid)
                return
            node.objects.seal(p.oid, SHM, p.path, p.size, p.contained)
            self.refetch.pop(p.oid, None)
            self.stored(p.oid, p.size)
            src = self.remote_held.pop(p.oid, None)  # we have our own copy now
            if src is not None and src != self.owner_of(p.oid):
                ln = self.links.get(src)
                if ln is not None:
                    self._release(ln, [p.oid])
            elif src is not None:
                self.remote_held[p.oid] = src  # keep borrowing from the owner
            return
        self._pump(p)

    def _pull_failed(self, p: Pull, why: str) -> None:
        self.pulls.pop(p.oid, None)
        try:
            os.close(p.fd)
        except OSError:
            pass
        self.node.store.abort(p.oid)
        e = self.node.objects.get(p.oid)
        if e is not None and e.state == PENDING:
            self.lost(p.oid, f"object {to_hex(p.oid)} could not be pulled: {why}")

    def serve_pull(self, oid: int, offset: int, length: int) -> bytes | None:
        """Bytes of a local object for a peer's pull (None: not here)."""
        e = self.node.objects.get(oid)
        if e is None or e.kind != SHM:
            return None
        try:
            path = self.node.store.get_path(oid)
            fd = os.open(path, os.O_RDONLY)
        except Exception:
            return None
        try:
            data = os.pread(fd, length, offset)
        finally:
            os.close(fd)
        self.stats["served_bytes"] += len(data)
        return data

    def fetch_value(self, oid: int) -> tuple:
        """What a peer learns of a sealed object: inline bytes, or where the bytes are."""
        node = self.node
        e = node.objects.get(oid)
        if e is None:
            return (oid, ERR, _lost(oid, f"object {to_hex(oid)} was freed"), 0, ())
        if e.kind == SHM:
            return (oid, REMOTE, (self.node_id, e.size), e.size, e.contained)
        if e.kind == REMOTE:
            return (oid, REMOTE, e.payload, e.size, ())
        return (oid, e.kind, e.payload, e.size, e.contained)

    # ------------------------------------------------------------------ control-plane records
    def record_lineage(self, t: TaskRec) -> None:
        """Keep what rebuilds a task's results: normal tasks, and calls of actors that may
        re-run them (max_task_retries != 0; re-run on the actor, maybe restarted, after the
        calls made since, as in Ray). Streams and num_returns=0 leave nothing to rebuild."""
        spec = t.spec
        if spec.num_returns > 0 and (
            spec.actor_id is None or (spec.max_retries != 0 and spec.actor_id != spec.task_id)
        ):
            objects = self.node.objects
            for d in self.lineage.record(spec, self.owns):
                objects.add_ref(d)
            self.lineage_add.append(spec)

    def stored(self, oid: int, size: int) -> None:
        self.locations_add.append((oid, size))

    def take_records(self) -> tuple[list[Any], list[int], list[tuple[int, int]], list[int]]:
        """What to send to the control plane since the last call (called under the lock)."""
        out = (
            self.lineage_add,
            self.lineage.take_dropped(),
            self.locations_add,
            self.locations_drop,
        )
        self.lineage_add = []
        self.locations_add, self.locations_drop = [], []
        return out

    def on_free(self, oid: int, entry: Any) -> None:
        objects = self.node.objects
        for pinned in self.lineage.return_freed(oid):
            objects.release(pinned)
        self.refetch.pop(oid, None)
        oa = self.owned_actors.get(task_of(oid))
        if oa is not None and oid == return_id(oa.spec.task_id, 1):  # every handle is gone
            self._drop_owned(oa.spec.task_id)
        if entry.kind == SHM:
            self.locations_drop.append(oid)
        src = self.remote_held.pop(oid, None)
        if src is not None:
            ln = self.links.get(src)
            if ln is not None:
                self._release(ln, [oid])
        p = self.pulls.pop(oid, None)
        if p is not None:
            try:
                os.close(p.fd)
            except OSError:
                pass
            self.node.store.abort(oid)

    # ------------------------------------------------------------------ actors
    def actor_op(self, proc: int, req: int, op: str, args: tuple) -> bool:
        """An actor operation from a local process, if it concerns other nodes (True: handled,
        the reply is sent here, maybe later); False: the local manager answers it."""
        actors = self.node.actors
        if op == "create":
            self._create_actor(proc, req, *args)
            return True
        if op == "get":
            name, namespace = args
            if (namespace or actors.namespace, name) in actors.names:
                return False
            self._gcs(
                lambda g: g.lookup_actor(namespace or actors.namespace, name),
                lambda rec, err: self._reply(proc, req, *self._found(rec, err, name, namespace)),
            )
            return True
        if op == "kill":
            aid, no_restart, home = (*args, None)[:3]
            home = self.actor_home.get(aid, home)
            if aid in actors.actors or home in (None, self.node_id):
                return False
            ln = self.link(home)
            self._request(
                ln,
                lambda r: ("actor_op", r, "kill", args),
                lambda value: self._reply(proc, req, *(value or ("ok", None))),
            )
            return True
        return False

    def _found(self, rec: Any, err: Any, name: str, namespace: str | None) -> tuple[str, Any]:
        if err is not None:
            return "err", exc.RtmlSystemError(f"the control plane failed to look up: {err}")
        if rec is None or rec.state == "DEAD":
            return "err", ValueError(
                f"there is no live actor named {name!r} in namespace {namespace!r}; create it "
                f"with Cls.options(name={name!r}).remote(), or check the namespace"
            )
        return "ok", (rec.actor_id, {**rec.extra.get("meta", {}), "node": rec.node_id})

    def _reply(self, proc: int, req: int, status: str, value: Any) -> None:
        self.node.io.send(proc, ("reply", req, (status, value)))

    def _gcs(self, call: Any, then: Any) -> None:
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

    def _create_actor(
        self, proc: int, req: int, spec: Any, blob: bytes | None, info: dict[str, Any]
    ) -> None:
        node = self.node
        aid = spec.task_id
        ns = info.get("namespace") or node.actors.namespace
        if blob is not None:
            node.register_function(spec.fn_id, blob)
        record = {
            "namespace": ns,
            "name": info.get("name"),
            "job_id": int(spec.job[0], 16) if spec.job else None,
            "class_name": info.get("class_name", ""),
            "detached": info.get("detached"),
            "max_restarts": info.get("max_restarts", 0),
            "meta": info.get("meta", {}),
            "owner": self.node_id,
        }

        def registered(_rec: Any, err: Any) -> None:
            if err is None:
                self._place_actor(proc, req, spec, info)
            elif not isinstance(err, ValueError) or not info.get("get_if_exists"):
                self._reply(
                    proc,
                    req,
                    "err",
                    err
                    if isinstance(err, ValueError)
                    else exc.RtmlSystemError(f"the control plane failed: {err}"),
                )
            else:  # the name is taken and the caller wants that actor
                self._gcs(
                    lambda g: g.lookup_actor(ns, info["name"]),
                    lambda rec, e: self._existing(proc, req, rec, e, info["name"], ns),
                )

        self._gcs(lambda g: g.register_actor(aid, dict(record)), registered)

    def _existing(self, proc: int, req: int, rec: Any, err: Any, name: str, ns: str) -> None:
        status, value = self._found(rec, err, name, ns)
        self._reply(proc, req, status, ("existing", *value) if status == "ok" else value)

    def _place_actor(self, proc: int, req: int, spec: Any, info: dict[str, Any]) -> None:
        node = self.node
        aid = spec.task_id
        self._local_view()
        try:
            home = place(
                spec.resources, spec.strategy, self.node_id, self.view, {}, None, self.spread_turn
            )
        except exc.TaskUnschedulableError as e:
            why = str(e)
            self._gcs(lambda g: g.update_actor(aid, "DEAD", death_cause=why), lambda *_: None)
            self._reply(proc, req, "err", e)
            return
        if spec.strategy == "SPREAD":
            self.spread_turn += 1
        self._gcs(lambda g: g.update_actor(aid, "ALIVE", node_id=home), lambda *_: None)
        if home == self.node_id:
            status, value = node.actors.op(proc, "create", (spec, None, info))
            if status == "ok" and value[0] == "created":
                value = ("created", aid, {"node": self.node_id})
            self._reply(proc, req, status, value)
            return
        # Runs on ``home``: it holds the handle object for us, as for a forwarded task.
        handle = return_id(aid, 1)
        objects = node.objects
        objects.create(handle, proc)
        node._hold(proc, handle)
        pins = [*spec.deps, *spec.contained]
        for d in pins:
            if d not in objects:
                self.adopt(d)
            objects.add_ref(d)
        oa = OwnedActor(spec, info, proc, home, pins)

        def created(status: str, result: Any) -> None:
            if status == "ok":
                self._reply(proc, req, "ok", ("created", aid, {"node": home}))
            else:
                self._reply(proc, req, status, result)

        self._create_remote(oa, info, created)

    def _create_remote(self, oa: OwnedActor, info: dict[str, Any], then: Any) -> None:
        """Create ``oa``'s actor on ``oa.home`` and fetch its handle object from there (kept
        there for us, which keeps the actor alive). The actor stays in ``owned_actors`` (a
        restartable one with its constructor's arguments pinned) to be restarted, or declared
        dead, if that node dies; ``then(status, value)`` gets the creation's answer."""
        node = self.node
        objects = node.objects
        spec = oa.spec
        aid = spec.task_id
        home = oa.home
        handle = return_id(aid, 1)
        restartable = info.get("max_restarts", 0) != 0
        ln = self.link(home)
        blob = None
        if spec.fn_id not in ln.sent_fns:
            blob = node.functions.get(spec.fn_id)
            ln.sent_fns.add(spec.fn_id)
        self.actor_home[aid] = home

        def fetched(vals: list | None) -> None:
            if vals is not None:
                self._seal_returned(ln, vals, keep=True)
            elif aid not in self.owned_actors:  # (else restarted: fetched from the new home)
                objects.seal(handle, ERR, _lost(handle, f"node {home} died"), 0, ())
            if not restartable:
                self._unpin(oa)

        def created(value: Any) -> None:
            if value is None:
                value = ("err", exc.NodeDiedError(f"node {home} died while creating the actor"))
            status, result = value
            if status == "ok" and result[0] == "created":
                self.owned_actors[aid] = oa
                self._request(ln, lambda r: ("fetch", r, [handle]), fetched)
                then("ok", result)
                return
            then(status, result)
            objects.seal(
                handle,
                ERR,
                pickle.dumps(
                    result if status == "err" else exc.RtmlSystemError("actor not created")
                ),
                0,
                (),
            )
            self._drop_owned(aid)
            self._unpin(oa)

        self._request(ln, lambda r: ("actor_op", r, "create", (spec, blob, info)), created)

    def _unpin(self, oa: OwnedActor) -> None:
        pins, oa.pins = oa.pins, []
        for d in pins:
            self.node.objects.release(d)

    def _drop_owned(self, aid: int, dead: bool = False) -> None:
        oa = self.owned_actors.pop(aid, None)
        if oa is not None:
            self._unpin(oa)
            if dead:  # for good, and maybe with no node's actor manager to see it
                _checkpoint.remove(oa.info)
            handle = return_id(aid, 1)
            e = self.node.objects.get(handle)
            if e is not None and e.state == PENDING:
                self.node.objects.seal(handle, ERR, _lost(handle, "the actor died"), 0, ())

    # ------------------------------------------------------------------ actor restarts
    def _restart_actor(self, oa: OwnedActor, why: str) -> None:
        """The node of an actor created from here died: re-create it on a live node if it has
        restarts left (counted in the control plane, with those its node made itself)."""
        aid = oa.spec.task_id
        oa.restarting = True
        limit = oa.info.get("max_restarts", 0)

        def dead(cause: str) -> None:
            self._drop_owned(aid, dead=True)
            self._gcs(
                lambda g: g.update_actor(aid, "DEAD", death_cause=cause[:2000]),
                lambda *_: self._fail_parked(aid, cause),
            )

        def counted(rec: Any, err: Any) -> None:
            if self.owned_actors.get(aid) is not oa:
                return
            if err is not None or rec is None:
                dead(
                    f"its node {oa.home} died and the control plane could not restart it "
                    f"({err or 'no record'})"
                )
                return
            if rec.state == "DEAD":
                self._drop_owned(aid, dead=True)
                self._fail_parked(aid, rec.death_cause or "it died")
                return
            if limit != -1 and rec.num_restarts >= limit:
                dead(
                    f"its node {oa.home} died ({why}) and it had no restarts left "
                    f"(max_restarts={limit}, restarted {rec.num_restarts} time(s))"
                )
                return
            self._gcs(
                lambda g: g.update_actor(aid, "RESTARTING"),
                lambda rec2, err2: self._replace_actor(oa, rec2, err2, why),
            )

        self._gcs(lambda g: g.get_actor(aid), counted)

    def _replace_actor(self, oa: OwnedActor, rec: Any, err: Any, why: str) -> None:
        node = self.node
        spec = oa.spec
        aid = spec.task_id
        if self.owned_actors.get(aid) is not oa:
            return
        handle = return_id(aid, 1)
        e = node.objects.get(handle)
        if err is not None or rec is None or e is None:
            self._drop_owned(aid, dead=True)
            cause = f"its node {oa.home} died ({why}) and it could not be restarted"
            self._gcs(
                lambda g: g.update_actor(aid, "DEAD", death_cause=cause),
                lambda *_: self._fail_parked(aid, cause),
            )
            return
        limit = oa.info.get("max_restarts", 0)
        info = {
            **oa.info,
            "max_restarts": -1 if limit == -1 else max(0, limit - rec.num_restarts),
            "get_if_exists": False,
        }
        strategy = spec.strategy
        if isinstance(strategy, tuple) and not self._alive(strategy[1]):
            strategy = None  # (a hard affinity to the dead node would never place it again)
        self._local_view()
        try:
            home = place(
                spec.resources, strategy, self.node_id, self.view, {}, None, self.spread_turn
            )
        except exc.TaskUnschedulableError as u:
            self._drop_owned(aid, dead=True)
            cause = f"its node {oa.home} died and no live node can host it: {u}"
            self._gcs(
                lambda g: g.update_actor(aid, "DEAD", death_cause=cause),
                lambda *_: self._fail_parked(aid, cause),
            )
            return
        self.stats["actors_restarted"] += 1
        self._reset(handle)
        if e.state != PENDING:  # (sealed as an error meanwhile: nothing to fetch it into)
            e.state, e.kind, e.payload = PENDING, INLINE, None
        self._gcs(lambda g: g.update_actor(aid, "ALIVE", node_id=home), lambda *_: None)
        if home == self.node_id:  # here: the local actor manager runs and restarts it now
            self._drop_owned(aid)
            self.actor_home[aid] = home
            status, value = node.actors.op(0, "create", (spec, None, info))
            if status != "ok":
                node.objects.seal(handle, ERR, _blob(value), 0, ())
                self._fail_parked(aid, str(value))
                return
            self._release_parked(aid, home)
            return
        oa.home = home
        oa.restarting = False

        def created(status: str, value: Any) -> None:
            if status == "ok":
                self._release_parked(aid, home)
            else:
                self._fail_parked(aid, f"its restart on node {home} failed: {value}")

        self._create_remote(oa, info, created)

    # ------------------------------------------------------------------ calls to actors elsewhere
    def actor_elsewhere(self, spec: Any) -> str | None:
        """The node a method call must go to, if its actor does not live here."""
        where = spec.strategy
        if not (isinstance(where, tuple) and where[0] == "actor"):
            return None
        aid = spec.actor_id
        rec = self.node.actors.actors.get(aid)
        if rec is not None and (rec.state != "DEAD" or aid not in self.actor_home):
            return None
        home = self.actor_home.get(aid, where[1])
        return None if home == self.node_id else home

    def send_call(self, t: TaskRec, home: str) -> None:
        """Forward a method call to its actor's node, or hold it while the actor restarts."""
        if t.spec.actor_id in self.parked or not self._alive(home):
            self._park(t)
        else:
            self.forward(t, home)

    def _park(self, t: TaskRec) -> None:
        aid: int = t.spec.actor_id or 0
        t.state = WAITING
        if aid not in self.parked:
            self.parked[aid] = []
            self.parked_at[aid] = time.monotonic()
        self.parked[aid].append(t)

    def unpark(self, t: TaskRec) -> bool:
        calls = self.parked.get(t.spec.actor_id or 0)
        if calls is not None and t in calls:
            calls.remove(t)
            return True
        return False

    def _release_parked(self, aid: int, home: str) -> None:
        calls = self.parked.pop(aid, [])
        self.parked_at.pop(aid, None)
        self.polled_at.pop(aid, None)
        self.actor_home[aid] = home
        for t in calls:
            if t.state != WAITING or t.cancelled:
                continue
            if home == self.node_id:
                self.node.actors.enqueue(t)
            else:
                self.forward(t, home)

    def _fail_parked(self, aid: int, cause: str) -> None:
        calls = self.parked.pop(aid, [])
        self.parked_at.pop(aid, None)
        self.polled_at.pop(aid, None)
        if not calls:
            return
        err = exc.ActorDiedError(f"the actor died: {cause}", actor_id=to_hex(aid))
        for t in calls:
            if t.state == WAITING:
                self.node._fail(t, err)

    def _poll_parked(self, now: float) -> None:
        """Ask the control plane where actors with waiting calls live now."""
        for aid in list(self.parked):
            if aid in self.polling or now - self.polled_at.get(aid, 0.0) < ACTOR_POLL_S:
                continue
            self.polling.add(aid)
            self.polled_at[aid] = now
            self._gcs(
                lambda g, aid=aid: g.get_actor(aid),
                lambda rec, err, aid=aid: self._polled(aid, rec, err),
            )

    def _polled(self, aid: int, rec: Any, err: Any) -> None:
        self.polling.discard(aid)
        if aid not in self.parked:
            return
        if err is None:
            if rec is None:
                self._fail_parked(aid, "the control plane has no record of it")
                return
            if rec.state == "DEAD":
                self._fail_parked(aid, rec.death_cause or "it was killed")
                return
            if rec.state == "ALIVE" and self._alive(rec.node_id):
                self._release_parked(aid, rec.node_id)
                return
            owner = rec.extra.get("owner")
            if not self._alive(rec.node_id) and owner is not None and not self._alive(owner):
                self._fail_parked(
                    aid,
                    f"its node {rec.node_id} died, and so did the node "
                    f"{owner} that created it, which restarts it",
                )
                return
        if time.monotonic() - self.parked_at.get(aid, 0.0) > ACTOR_RESTART_WAIT_S:
            self._fail_parked(
                aid, f"it did not come back within {ACTOR_RESTART_WAIT_S:.0f} s after its node died"
            )

    def tick(self) -> None:
        """Timers: objects to ask their owner for again, calls waiting for an actor."""
        if self.timers:
            now = time.monotonic()
            due = [fn for at, fn in self.timers if at <= now]
            if due:
                self.timers = [(at, fn) for at, fn in self.timers if at > now]
                for fn in due:
                    fn()
        if self.parked:
            self._poll_parked(time.monotonic())

    def actor_state(self, actor_id: int, state: str) -> None:
        """A local restart of an actor living here (counted by the control plane)."""
        node_id = self.node_id
        self._gcs(lambda g: g.update_actor(actor_id, state, node_id=node_id), lambda *_: None)

    def actor_died(self, actor_id: int, cause: Any) -> None:
        self._gcs(
            lambda g: g.update_actor(actor_id, "DEAD", death_cause=str(cause)[:2000]),
            lambda *_: None,
        )
