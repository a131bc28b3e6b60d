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

from rtml import exceptions as exc
from rtml._node._objects import ERR, INLINE, PENDING, READY, REMOTE, SHM
from rtml._node._tasks import FINISHED, FORWARDED, STREAMING, WAITING, TaskRec
from rtml._observability._recorder import FORWARDED as FORWARDED_EV
from rtml._runtime._ids import NODE_SHIFT, node_of_object, return_id, task_of, to_hex
from rtml._scheduler._placement import NodeView, place

PARKED = ""  # place(): the task waits in ``infeasible`` for a node that fits it
CHUNK = 8 << 20  # bytes per pull request
PULL_WINDOW = 4  # pull requests in flight per object


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
        self.lineage_live: dict[int, int] = {}  # task id -> its results still referenced
        self.lineage_add: list[Any] = []
        self.lineage_drop: list[int] = []
        self.locations_add: list[tuple[int, int]] = []
        self.locations_drop: list[int] = []
        self.gcs: Any = None  # the control-plane client (set by the node server)
        # Control-plane requests made for actors run here, never on the selector thread.
        self.gcs_pool = ThreadPoolExecutor(1, thread_name_prefix="rtml-node-gcs")
        self.spread_turn = 0
        self.stats = {"forwarded": 0, "pulled_bytes": 0, "pulls": 0, "served_bytes": 0}
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
                v = self.view[nid] = NodeView(nid, n.index, n.address, dict(n.resources), {},
                                              alive=alive, labels=dict(n.labels))
                self.by_index[v.index] = nid
            if nid != self.node_id:
                v.available = dict(n.available or v.totals)
                v.queued = int((n.load or {}).get("queued", 0))
            if v.alive and not alive:
                v.alive = False
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
            v = self.view[self.node_id] = NodeView(self.node_id, self.index, "",
                                                   node.resources.totals(), {})
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
            target = place(spec.resources, spec.strategy, self.node_id, self.view, inputs,
                           nodes.fn_time.get(spec.fn_id), self.spread_turn)
        except exc.TaskUnschedulableError as e:
            if isinstance(spec.strategy, tuple):
                raise  # a hard node affinity to a dead or too small node
            self.infeasible.append(t)  # as Ray: pending until a node that fits joins
            if t.attempts == 0:
                t.attempts = -1  # warned once (set back to 0 when it is placed)
                self.node.io.log_sink("stderr", "rtml", "-", f"warning: {e}; the task waits "
                                      "until such a node joins", spec.job and spec.job[0])
            return PARKED
        if t.attempts < 0:
            t.attempts = 0
        if target == self.node_id:
            return None
        if spec.num_returns == STREAMING:
            raise exc.TaskUnschedulableError(
                f"streaming task {spec.name} must run on the node of its caller; drop its "
                "scheduling_strategy or give that node the resources it needs")
        return target

    # ------------------------------------------------------------------ links
    def link(self, node_id: str) -> Link:
        ln = self.links.get(node_id)
        if ln is None:
            v = self.view.get(node_id)
            if v is None:
                raise exc.RtmlSystemError(f"unknown node {node_id}")
            wid = self.node.io.open_link(node_id, v.address,
                                         {"kind": "node", "node_id": self.node_id})
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
        self._peer_lost(ln.node_id, f"the connection to node {ln.node_id} closed", ln)

    def on_node_dead(self, node_id: str) -> None:
        ln = self.links.pop(node_id, None)
        if ln is not None:
            self.link_of_wid.pop(ln.wid, None)
            self.node.io.close_link(ln.wid)
        self._peer_lost(node_id, f"node {node_id} died", ln)

    def _peer_lost(self, node_id: str, why: str, ln: Link | None) -> None:
        """Everything we waited for from that node fails (tasks retry elsewhere); objects we
        held there are lost."""
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
                    e.payload = (None, e.payload[1])  # lost: a reader gets ObjectLostError
        for p in list(self.pulls.values()):
            if p.source == node_id:
                self._pull_failed(p, why)

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
            node.events.append((FORWARDED_EV, t, t.attempts, now, now, None, 0, None,
                                {"to_node": target}))
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
            if t.state != FORWARDED:
                return
            if t.spec.actor_id is not None:
                node._fail(t, exc.ActorDiedError(
                    f"the node running the actor ({ln.node_id}) is gone",
                    actor_id=to_hex(t.spec.actor_id)))
            elif t.retries_left != 0 and not t.cancelled:
                if t.retries_left > 0:
                    t.retries_left -= 1
                node.stats["retried"] += 1
                t.state = WAITING
                t.remote = None
                node._ready(t)
            else:
                node._fail(t, exc.NodeDiedError(
                    f"task {t.spec.name} ({to_hex(t.spec.task_id)}) was running on node "
                    f"{ln.node_id}, which is gone; it was tried {t.attempts} time(s). Raise "
                    "max_retries to retry on another node"))
            return
        if t.state != FORWARDED:  # cancelled or retried meanwhile: let the peer free them
            self._release(ln, [oid for oid, *_ in vals])
            return
        t.state = FINISHED
        node.tasks.pop(t.spec.task_id, None)
        node.stats["finished"] += 1
        self._seal_returned(ln, vals)
        node._unpin(t)

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
        if where is None or (where not in self.links and where not in self.view):
            self._seal_lost(oid, f"object {to_hex(oid)} was on a node that is gone")
            return
        if where == self.node_id:
            self._seal_lost(oid, f"object {to_hex(oid)} is not in this node's store")
            return
        self._request(self.link(where), lambda r: ("fetch", r, [oid]),
                      lambda vals: self._fetched(oid, where, vals and vals[0]))

    def _seal_lost(self, oid: int, why: str) -> None:
        self.node.objects.seal(oid, ERR, _lost(oid, why), 0, ())

    def _fetched(self, oid: int, source: str, val: tuple | None) -> None:
        e = self.node.objects.get(oid)
        if e is None or e.state != PENDING:
            return
        if val is None:
            self._seal_lost(oid, f"object {to_hex(oid)} was on node {source}, which is gone")
            return
        _oid, kind, payload, size, contained = val
        if kind in (INLINE, ERR):
            self.node.objects.seal(oid, kind, payload, size, contained)
            return
        at = payload[0]  # REMOTE/SHM over there: (node holding the bytes, size)
        if at is None:
            self._seal_lost(oid, f"object {to_hex(oid)} was on a node that is gone")
            return
        if at == self.node_id:
            self._seal_lost(oid, f"object {to_hex(oid)} should be here but is not")
            return
        self._start_pull(oid, at, payload[1], tuple(contained))

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
        ln = self.links.get(p.source)
        if ln is None:
            self._pull_failed(p, f"node {p.source} is gone")
            return
        while p.inflight < PULL_WINDOW and p.next_offset < p.size:
            off = p.next_offset
            n = min(CHUNK, p.size - off)
            p.next_offset += n
            p.inflight += 1
            self._request(ln, lambda r, off=off, n=n: ("pull", r, p.oid, off, n),
                          lambda data, off=off: self._chunk(p, off, data))

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
        self._seal_lost(p.oid, f"object {to_hex(p.oid)} could not be pulled: {why}")

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
        spec = t.spec
        n = spec.num_returns
        if n > 0:  # (streams and num_returns=0 leave nothing to rebuild)
            self.lineage_live[spec.task_id] = n
            self.lineage_add.append(spec)

    def stored(self, oid: int, size: int) -> None:
        self.locations_add.append((oid, size))

    def take_records(self) -> tuple[list[Any], list[int], list[tuple[int, int]], list[int]]:
        """What to send to the control plane since the last call (called under the lock)."""
        out = (self.lineage_add, self.lineage_drop, self.locations_add, self.locations_drop)
        self.lineage_add, self.lineage_drop = [], []
        self.locations_add, self.locations_drop = [], []
        return out

    def on_free(self, oid: int, entry: Any) -> None:
        tid = task_of(oid)
        left = self.lineage_live.get(tid)
        if left is not None and oid & 0xFFFFFFFF:
            if left <= 1:
                del self.lineage_live[tid]
                self.lineage_drop.append(tid)
            else:
                self.lineage_live[tid] = left - 1
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
            self._gcs(lambda g: g.lookup_actor(namespace or actors.namespace, name),
                      lambda rec, err: self._reply(proc, req, *self._found(rec, err, name,
                                                                          namespace)))
            return True
        if op == "kill":
            aid, no_restart, home = (*args, None)[:3]
            if aid in actors.actors or home in (None, self.node_id):
                return False
            ln = self.link(home)
            self._request(ln, lambda r: ("actor_op", r, "kill", args),
                          lambda value: self._reply(proc, req, *(value or ("ok", None))))
            return True
        return False

    def _found(self, rec: Any, err: Any, name: str, namespace: str | None) -> tuple[str, Any]:
        if err is not None:
            return "err", exc.RtmlSystemError(f"the control plane failed to look up: {err}")
        if rec is None or rec.state == "DEAD":
            return "err", ValueError(
                f"there is no live actor named {name!r} in namespace {namespace!r}; create it "
                f"with Cls.options(name={name!r}).remote(), or check the namespace")
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

    def _create_actor(self, proc: int, req: int, spec: Any, blob: bytes | None,
                      info: dict[str, Any]) -> None:
        node = self.node
        aid = spec.task_id
        ns = info.get("namespace") or node.actors.namespace
        if blob is not None:
            node.register_function(spec.fn_id, blob)
        record = {"namespace": ns, "name": info.get("name"),
                  "job_id": int(spec.job[0], 16) if spec.job else None,
                  "class_name": info.get("class_name", ""), "detached": info.get("detached"),
                  "max_restarts": info.get("max_restarts", 0), "meta": info.get("meta", {})}

        def registered(_rec: Any, err: Any) -> None:
            if err is None:
                self._place_actor(proc, req, spec, info)
            elif not isinstance(err, ValueError) or not info.get("get_if_exists"):
                self._reply(proc, req, "err", err if isinstance(err, ValueError) else
                            exc.RtmlSystemError(f"the control plane failed: {err}"))
            else:  # the name is taken and the caller wants that actor
                self._gcs(lambda g: g.lookup_actor(ns, info["name"]),
                          lambda rec, e: self._existing(proc, req, rec, e, info["name"], ns))

        self._gcs(lambda g: g.register_actor(aid, dict(record)), registered)

    def _existing(self, proc: int, req: int, rec: Any, err: Any, name: str, ns: str) -> None:
        status, value = self._found(rec, err, name, ns)
        self._reply(proc, req, status, ("existing", *value) if status == "ok" else value)

    def _place_actor(self, proc: int, req: int, spec: Any, info: dict[str, Any]) -> None:
        node = self.node
        aid = spec.task_id
        self._local_view()
        try:
            home = place(spec.resources, spec.strategy, self.node_id, self.view, {}, None,
                         self.spread_turn)
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
        ln = self.link(home)
        handle = return_id(aid, 1)
        objects = node.objects
        objects.create(handle, proc)
        node._hold(proc, handle)
        pins = [*spec.deps, *spec.contained]
        for d in pins:
            if d not in objects:
                self.adopt(d)
            objects.add_ref(d)
        blob = None
        if spec.fn_id not in ln.sent_fns:
            blob = node.functions.get(spec.fn_id)
            ln.sent_fns.add(spec.fn_id)

        def unpin() -> None:
            for d in pins:
                objects.release(d)

        def fetched(vals: list | None) -> None:
            if vals is None:
                objects.seal(handle, ERR, _lost(handle, f"node {home} died"), 0, ())
            else:
                self._seal_returned(ln, vals, keep=True)
            unpin()

        def created(value: Any) -> None:
            if value is None:
                value = ("err", exc.NodeDiedError(f"node {home} died while creating the actor"))
            status, result = value
            if status == "ok" and result[0] == "created":
                self._reply(proc, req, "ok", ("created", aid, {"node": home}))
                self._request(ln, lambda r: ("fetch", r, [handle]), fetched)
                return
            self._reply(proc, req, status, result)
            objects.seal(handle, ERR, pickle.dumps(
                result if status == "err" else exc.RtmlSystemError("actor not created")), 0, ())
            unpin()

        self._request(ln, lambda r: ("actor_op", r, "create", (spec, blob, info)), created)

    def actor_elsewhere(self, spec: Any) -> str | None:
        """The node a method call must go to, if its actor does not live here."""
        where = spec.strategy
        if (isinstance(where, tuple) and where[0] == "actor" and where[1] != self.node_id
                and spec.actor_id not in self.node.actors.actors):
            return where[1]
        return None

    def actor_died(self, actor_id: int, cause: Any) -> None:
        self._gcs(lambda g: g.update_actor(actor_id, "DEAD", death_cause=str(cause)[:2000]),
                  lambda *_: None)
