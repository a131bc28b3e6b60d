"""The node's object table: state, payload and reference count of every live object.

::

    submit/put ──▶ PENDING (refs=1: the submitter) ── seal ──▶ READY / ERROR ──▶ waiters fire
                        │ refs→0: marked dropped                     │ refs→0
                        ▼ (freed the moment it is sealed)            ▼
                                                                  freed: payload and shared
                                                                  memory released, refs it
                                                                  contained released in turn

``refs`` counts holders: each process that holds an ObjectRef to it (one count per process,
however many refs it has), each pending task whose spec mentions it, each stored value that
contains it. Pure state: the shared-memory store is reached through ``delete_payload`` only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from rtml._protocol._payload import ERR, INLINE, SHM

PENDING, READY, ERROR = 0, 1, 2


class ObjEntry:
    __slots__ = (
        "contained",
        "dropped",
        "kind",
        "owner",
        "payload",
        "refs",
        "size",
        "state",
        "waiters",
    )

    def __init__(self, owner: int, refs: int) -> None:
        self.state = PENDING
        self.kind = INLINE
        self.payload: Any = None
        self.size = 0
        self.contained: tuple[int, ...] = ()
        self.refs = refs
        self.waiters: list[Any] | None = None
        self.dropped = False
        self.owner = owner


class Waiter:
    """Fires ``callback`` once ``needed`` of the objects it was registered on are sealed."""

    __slots__ = ("callback", "done", "needed", "ready")

    def __init__(self, needed: int, callback: Callable[[Waiter], None]) -> None:
        self.needed = needed
        self.ready: list[int] = []
        self.callback = callback
        self.done = needed <= 0

    def on_sealed(self, oid: int) -> None:
        if self.done:
            return
        self.ready.append(oid)
        if len(self.ready) >= self.needed:
            self.done = True
            self.callback(self)


class ObjectTable:
    def __init__(self, delete_payload: Callable[[int, Any], None]) -> None:
        self.entries: dict[int, ObjEntry] = {}
        self._delete_payload = delete_payload
        self.freed_total = 0

    def __contains__(self, oid: int) -> bool:
        return oid in self.entries

    def get(self, oid: int) -> ObjEntry | None:
        return self.entries.get(oid)

    def create(self, oid: int, owner: int) -> ObjEntry:
        e = self.entries.get(oid)
        if e is not None:  # a retried task re-creates its returns: keep refs and waiters
            return e
        e = self.entries[oid] = ObjEntry(owner, 1)
        return e

    def add_ref(self, oid: int) -> bool:
        e = self.entries.get(oid)
        if e is None:
            return False
        e.refs += 1
        return True

    def release(self, oid: int) -> None:
        e = self.entries.get(oid)
        if e is None:
            return
        e.refs -= 1
        if e.refs <= 0:
            self._free(oid)

    def _free(self, oid: int) -> None:
        stack = [oid]
        while stack:
            o = stack.pop()
            e = self.entries.get(o)
            if e is None or e.refs > 0:
                continue
            if e.state == PENDING:
                e.dropped = True
                continue
            del self.entries[o]
            self.freed_total += 1
            self._delete_payload(o, e)
            for c in e.contained:
                ce = self.entries.get(c)
                if ce is not None:
                    ce.refs -= 1
                    if ce.refs <= 0:
                        stack.append(c)

    def seal(
        self, oid: int, kind: int, payload: Any, size: int, contained: tuple[int, ...] | list[int]
    ) -> ObjEntry | None:
        """Store a value (or error) for ``oid``; notify waiters. Returns the entry, or None if
        the object was unknown or already sealed (a duplicate from a retried task)."""
        e = self.entries.get(oid)
        if e is None or e.state != PENDING:
            if e is None and kind == SHM:
                self._delete_payload(oid, _Orphan(kind, payload))
            return None
        e.state = ERROR if kind == ERR else READY
        e.kind = kind
        e.payload = payload
        e.size = size
        if contained:
            # Only what is here is held (and released when this is freed): in a cluster the
            # others are owned elsewhere, and whoever holds this value's source keeps them.
            held = []
            for c in contained:
                ce = self.entries.get(c)
                if ce is not None:
                    ce.refs += 1
                    held.append(c)
            e.contained = tuple(held)
        waiters = e.waiters
        e.waiters = None
        if e.dropped or e.refs <= 0:
            e.refs = 0
            self._free(oid)
        if waiters:
            for w in waiters:
                w.on_sealed(oid)
        return e

    def add_waiter(self, oid: int, waiter: Any) -> bool:
        """Register ``waiter`` on a pending object; False if it is already sealed or unknown."""
        e = self.entries.get(oid)
        if e is None or e.state != PENDING:
            return False
        if e.waiters is None:
            e.waiters = [waiter]
        else:
            e.waiters.append(waiter)
        return True

    @staticmethod
    def add_waiter_to(entries: Iterable[ObjEntry], waiter: Any) -> None:
        """Register ``waiter`` on pending ``entries`` (looked up by the caller).

        A waiter that fired stays on the other objects it watched until those are sealed (its
        ``on_sealed`` then does nothing); such waiters are pruned here whenever a list reaches
        a power of two, so an object that is waited on over and over (``wait`` in a loop on a
        shrinking list) keeps a short list.
        """
        for e in entries:
            ws = e.waiters
            if ws is None:
                e.waiters = [waiter]
                continue
            ws.append(waiter)
            n = len(ws)
            if n >= 8 and not n & (n - 1):
                ws[:] = [w for w in ws if type(w) is not Waiter or not w.done]

    def remove_waiter(self, oid: int, waiter: Any) -> None:
        e = self.entries.get(oid)
        if e is not None and e.waiters:
            try:
                e.waiters.remove(waiter)
            except ValueError:
                pass

    def is_sealed(self, oid: int) -> bool:
        e = self.entries.get(oid)
        return e is not None and e.state != PENDING

    def validate(self) -> None:
        for oid, e in self.entries.items():
            assert e.refs > 0 or (e.state == PENDING and e.dropped), f"{oid:x} refs={e.refs}"
            assert e.state in (PENDING, READY, ERROR)
            if e.state != PENDING:
                assert not e.waiters, f"{oid:x} sealed with waiters"
            if e.state == ERROR:
                assert e.kind == ERR


class _Orphan:
    """A payload for an object nobody holds any more (so its shared memory is released)."""

    __slots__ = ("kind", "payload")

    def __init__(self, kind: int, payload: Any) -> None:
        self.kind = kind
        self.payload = payload
