"""Objects across nodes: who owns an object, what we borrow or keep on other nodes, and pulls.

Borrowing (Ray's ownership protocol, reduced to what this engine needs). A ref ``x`` owned by
node B may travel inside a value ``y`` (its ``contained``) to node C, from a node A that held
``y``. States of ``x`` as C sees it::

    (no entry) ──y sealed here──▶ REGISTERING: proxy entry, "borrow" sent to B, y pinned here
                                      │ B answers (x held for C's link; or missing: lost)
                                      ▼
                                  BORROWED: proxy held by C's processes and values
                                      │ last holder here lets go
                                      ▼
                                  released: "refs" release sent to B

Invariant: while a value is sealed on a node, every ref it contains is held by that node or,
for a ref it learns of there, by the node it came from until the owner has acknowledged the
borrow. C keeps its copy of ``y`` (and so its hold on ``y`` at its source A, whose ``y`` holds
``x``) until B answered C's "borrow", so A can only release ``x`` at B after B counts C.
Without the pin the two messages, C's registration (C→B) and A's release (A→B), travel on
different connections, and B could free ``x`` between them (``tests/unit/test_borrowing.py``
plays that order). A registration to the node the value came from itself is ordered before
the release on the same link, but it goes the same way (one rule, one round trip).

Owns ``remote_held`` (object -> the node holding it, or lending it, for us), the pulls in
flight (chunks of a large object copied into this node's store), and the location records for
the control plane (large objects stored here, and freed). An object whose every copy is gone
is handed to recovery (``recovery.lost``); one that arrives intact tells it
(``recovery.recovered``).
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rtml._node._cluster._membership import Link, Membership, lost_blob
from rtml._node._objects import PENDING, READY
from rtml._protocol._ids import node_of_object, to_hex
from rtml._protocol._payload import ERR, INLINE, REMOTE, SHM

if TYPE_CHECKING:
    from rtml._node._cluster._recovery import Recovery

CHUNK = 8 << 20  # bytes per pull request
PULL_WINDOW = 4  # pull requests in flight per object
# A test hook: with this variable naming a file, borrow registrations sent to other nodes
# (and whatever follows them on the same link) wait until that file exists, so a test can
# make a registration arrive late at the owner, deterministically.
HOLD_ENV = "RTML_TEST_HOLD_BORROWS"


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


class Ownership:
    def __init__(self, node: Any, members: Membership) -> None:
        self.node = node
        self.members = members
        self.recovery: Recovery  # (wired by ClusterState)
        self.remote_held: dict[int, str] = {}  # oid -> node holding it (or borrowed from) for us
        self.pulls: dict[int, Pull] = {}
        self.locations_add: list[tuple[int, int]] = []
        self.locations_drop: list[int] = []
        self.stats = {"pulled_bytes": 0, "pulls": 0, "served_bytes": 0}
        self.hold_path = os.environ.get(HOLD_ENV) or None
        self.held_msgs: dict[str, list[tuple]] = {}  # (the hook) node -> messages held back
        self.registering: dict[int, int] = {}  # value -> borrows of refs in it not acked yet

    # ------------------------------------------------------------------ ownership
    def owns(self, oid: int) -> bool:
        return node_of_object(oid) == self.members.index

    def owner_of(self, oid: int) -> str | None:
        return self.members.by_index.get(node_of_object(oid))

    def adopt(self, oid: int, unpickled: bool = False) -> None:
        """A ref to an object owned elsewhere reached this node: a proxy entry that borrows it
        (``unpickled``: a process here found it inside a value; the test hook holds those)."""
        owner_index = node_of_object(oid)
        if owner_index == self.members.index or owner_index == 0:
            return  # ours (or not a cluster id): unknown means freed
        owner = self.members.by_index.get(owner_index)
        objects = self.node.objects
        e = objects.create(oid, 0)
        e.refs = 0
        e.state = READY  # the value is "at its owner" until someone needs it here
        e.kind = REMOTE
        e.payload = (owner, None)
        if owner is None:
            return  # the owner is unknown (dead): reading it raises ObjectLostError
        ln = self.members.link(owner)
        self.remote_held[oid] = owner
        self._send(ln, ("refs", [oid], []), registration=unpickled)

    def register_contained(self, oid: int, contained: tuple | list) -> None:
        """A value ``oid`` that came from a peer is about to be sealed here: borrow the refs
        inside it that no entry here stands for, from their owners, before anything here lets
        go of the value (see the module docstring). Call ``pin_registering`` after sealing."""
        objects = self.node.objects
        by_owner: dict[str, list[int]] = {}
        for c in contained:
            if c in objects or self.owns(c):
                continue  # held here already (or ours and freed: nothing to borrow)
            owner = self.owner_of(c)
            if owner is None:
                continue  # its owner is dead: reading it raises ObjectLostError
            e = objects.create(c, 0)
            e.refs = 0  # (the sealed value's hold comes next)
            e.state = READY
            e.kind = REMOTE
            e.payload = (owner, None)
            self.remote_held[c] = owner
            by_owner.setdefault(owner, []).append(c)
        if not by_owner:
            return
        self.registering[oid] = self.registering.get(oid, 0) + len(by_owner)
        for owner, ids in by_owner.items():
            ln = self.members.link(owner)
            self._request(
                ln,
                lambda r, ids=ids: ("borrow", r, ids),
                lambda missing, oid=oid, owner=owner: self._borrowed(oid, owner, missing),
            )

    def pin_registering(self, oid: int) -> None:
        """Hold the sealed value ``oid`` until its borrows are acknowledged."""
        if oid in self.registering and not self.node.objects.add_ref(oid):
            self.registering.pop(oid, None)  # freed as it was sealed: nothing to hold

    def _borrowed(self, oid: int, owner: str, missing: list[int] | None) -> None:
        """The owner counts our borrow now (``missing``: what it no longer had; None: the link
        broke, and the owner's death marks our proxies lost)."""
        for c in missing or ():
            self.remote_held.pop(c, None)
            e = self.node.objects.get(c)
            if e is not None and e.kind == REMOTE and e.state != PENDING:
                e.payload = (None, e.payload[1])  # freed at its owner: reading it fails
        n = self.registering.get(oid, 0) - 1
        if n > 0:
            self.registering[oid] = n
            return
        if self.registering.pop(oid, None) is not None:
            self.node.objects.release(oid)

    def forget(self, oid: int) -> None:
        """We hold ``oid`` nowhere else any more (it is about to be re-created here)."""
        self.remote_held.pop(oid, None)

    def seal_returned(self, ln: Link, vals: list, keep: bool = False) -> None:
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
                self.register_contained(oid, contained)
                seal(oid, kind, payload, size, contained)
                self.pin_registering(oid)
            else:
                seal(oid, REMOTE, payload, size, ())
        self.release(ln, done)

    def release(self, ln: Link, oids: list[int]) -> None:
        if oids:
            self._send(ln, ("refs", [], oids))

    def _send(self, ln: Link, msg: tuple, registration: bool = False) -> None:
        held = self.held_msgs.get(ln.node_id)
        if held is None and registration and self.hold_path and not os.path.exists(self.hold_path):
            held = self.held_msgs[ln.node_id] = []
        if held is not None:
            held.append(msg)
            return
        self.members.send(ln, msg)

    def _request(self, ln: Link, msg_fn: Any, callback: Any) -> None:
        """``Membership.request`` through the test hook (a borrow registration)."""
        req = ln.next_req
        ln.next_req += 1
        ln.callbacks[req] = callback
        self._send(ln, msg_fn(req), registration=True)

    def flush_held(self) -> None:
        """(The test hook) send what was held back, in order, once the file exists."""
        if not self.held_msgs or not os.path.exists(self.hold_path or ""):
            return
        held, self.held_msgs = self.held_msgs, {}
        for node_id, msgs in held.items():
            if self.members.alive(node_id):
                ln = self.members.link(node_id)
                for msg in msgs:
                    self.members.send(ln, msg)

    # ------------------------------------------------------------------ reading it here
    def localize(self, oid: int) -> None:
        """Make a REMOTE object local before a process here reads it (no-op otherwise)."""
        e = self.node.objects.get(oid)
        if e is not None and e.kind == SHM:
            self.check_spill(oid, e)
        if e is None or e.kind != REMOTE or e.state == PENDING:
            return
        where = e.payload[0]
        e.state = PENDING
        if where == self.members.node_id or not self.members.alive(where):
            self.recovery.lost(oid, f"object {to_hex(oid)} was on node {where}, which is gone")
            return
        self.fetch(oid, where)

    def check_spill(self, oid: int, e: Any) -> bool:
        """A spilled object whose spill file is gone or damaged is lost like a copy on a dead
        node: the entry becomes a REMOTE one held nowhere (so reading it rebuilds it from
        lineage at its owner, or asks the owner again). True if it was lost."""
        store = self.node.store
        why = store.spill_damage(oid) if store is not None else None
        if why is None:
            return False
        store.delete(oid)
        self.locations_drop.append(oid)
        e.kind = REMOTE
        e.payload = (None, e.size)
        self.node.io.log_remote(
            ("stderr", "rtml", "-", f"object {to_hex(oid)} is lost: {why}", None)
        )
        return True

    def fetch(self, oid: int, source: str) -> None:
        """Ask ``source`` for a PENDING-marked object: its value, or where its bytes are."""
        self.members.request(
            self.members.link(source),
            lambda r: ("fetch", r, [oid]),
            lambda vals: self._fetched(oid, source, vals and vals[0]),
        )

    def _fetched(self, oid: int, source: str, val: tuple | None) -> None:
        e = self.node.objects.get(oid)
        if e is None or e.state != PENDING:
            return
        lost = self.recovery.lost
        if val is None:
            lost(oid, f"object {to_hex(oid)} was on node {source}, which is gone")
            return
        _oid, kind, payload, size, contained = val
        if payload is None:  # (an answer made of a pending entry: no value yet) ask again
            lost(oid, f"object {to_hex(oid)} was not ready on node {source}")
            return
        if kind in (INLINE, ERR):
            self.recovery.recovered(oid)
            self.register_contained(oid, contained)
            self.node.objects.seal(oid, kind, payload, size, contained)
            self.pin_registering(oid)
            return
        at = payload[0]  # REMOTE/SHM over there: (node holding the bytes, size)
        if at is None or at == self.members.node_id or not self.members.alive(at):
            lost(oid, f"object {to_hex(oid)} was on node {at}, which is gone")
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
        if not self.members.alive(p.source):
            self._pull_failed(p, f"node {p.source} is gone")
            return
        ln = self.members.link(p.source)  # (the bytes may be on a node we never talked to)
        while p.inflight < PULL_WINDOW and p.next_offset < p.size:
            off = p.next_offset
            n = min(CHUNK, p.size - off)
            p.next_offset += n
            p.inflight += 1
            self.members.request(
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
            self.register_contained(p.oid, p.contained)
            node.objects.seal(p.oid, SHM, p.path, p.size, p.contained)
            self.pin_registering(p.oid)
            self.recovery.recovered(p.oid)
            self.stored(p.oid, p.size)
            src = self.remote_held.pop(p.oid, None)  # we have our own copy now
            if src is not None and src != self.owner_of(p.oid):
                ln = self.members.links.get(src)
                if ln is not None:
                    self.release(ln, [p.oid])
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
            self.recovery.lost(p.oid, f"object {to_hex(p.oid)} could not be pulled: {why}")

    # ------------------------------------------------------------------ serving peers
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
        e = self.node.objects.get(oid)
        if e is None:
            return (oid, ERR, lost_blob(oid, f"object {to_hex(oid)} was freed"), 0, ())
        if e.kind == SHM and not self.check_spill(oid, e):
            return (oid, REMOTE, (self.members.node_id, e.size), e.size, e.contained)
        if e.kind == REMOTE:
            return (oid, REMOTE, e.payload, e.size, ())
        return (oid, e.kind, e.payload, e.size, e.contained)

    # ------------------------------------------------------------------ records, frees, deaths
    def stored(self, oid: int, size: int) -> None:
        self.locations_add.append((oid, size))

    def take_locations(self) -> tuple[list[tuple[int, int]], list[int]]:
        out = (self.locations_add, self.locations_drop)
        self.locations_add, self.locations_drop = [], []
        return out

    def on_free(self, oid: int, entry: Any) -> None:
        if entry.kind == SHM:
            self.locations_drop.append(oid)
        src = self.remote_held.pop(oid, None)
        if src is not None:
            ln = self.members.links.get(src)
            if ln is not None:
                self.release(ln, [oid])
        p = self.pulls.pop(oid, None)
        if p is not None:
            try:
                os.close(p.fd)
            except OSError:
                pass
            self.node.store.abort(oid)

    def peer_lost(self, node_id: str, why: str) -> None:
        """Objects we held on that node are lost (rebuilt when read); pulls from it fail."""
        objects = self.node.objects
        for oid, src in list(self.remote_held.items()):
            if src == node_id:
                del self.remote_held[oid]
                e = objects.get(oid)
                if e is not None and e.kind == REMOTE and e.state != PENDING:
                    e.payload = (None, e.payload[1])  # lost: a reader rebuilds it or fails
        for p in list(self.pulls.values()):
            if p.source == node_id:
                self._pull_failed(p, why)

    def validate(self) -> None:
        """Every pull fills an entry; nothing is held on this node for ourselves."""
        objects = self.node.objects
        me = self.members.node_id
        for oid, p in self.pulls.items():
            assert p.oid == oid, f"pull of {to_hex(p.oid)} filed under {to_hex(oid)}"
            assert oid in objects, f"pull of {to_hex(oid)}, which has no entry"
            assert 0 <= p.received <= p.size and p.inflight >= 0, f"pull of {to_hex(oid)}: counts"
        for oid, src in self.remote_held.items():
            assert src != me, f"{to_hex(oid)} held remotely on this node itself"
        for oid, n in self.registering.items():
            assert n > 0 and oid in objects, f"{to_hex(oid)} pinned for {n} registrations"
