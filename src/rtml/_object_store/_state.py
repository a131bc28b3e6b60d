"""The object store as a pure state machine: capacity accounting, LRU order, spill decisions.

::

    shell (NodeObjectStore)                      StoreState (this module: no I/O, no clock)
    ───────────────────────                      ──────────────────────────────────────────
    create ─── reserve(id, size) ──────────────▶ pick LRU victims ─▶ [Spill(a), Spill(b)]
    move a, b to disk ─ mark_spilled(a), (b) ──▶ used -= size(a), size(b)
    producer writes ─── seal(id) ──────────────▶ unpinned, enters LRU (most recent end)
    get ─────────────── access(id) ────────────▶ SHM: [] | DISK: [Spill(...)..., Restore(id)]
    move id back ────── mark_restored(id) ─────▶ used += size(id), most recent in LRU
    free ────────────── delete(id) ────────────▶ Location it was in (shell removes the file)

Decisions are returned, not executed: the shell moves files and then reports completion with
``mark_spilled`` / ``mark_restored`` (or ``cancel_move`` if the move failed). Between a decision
and its report the object is "moving"; its bytes are already promised to (or released from) the
capacity budget, so a second decision never double-books the same room:

    committed = used - (bytes being spilled) + (bytes being restored)  <=  capacity

``used`` is the physical figure: bytes of objects whose file is in shared memory right now
(including reserved, not yet sealed objects). It can exceed ``capacity`` only while decided
spills are outstanding.

LRU: an ``OrderedDict`` of the sealed objects in shared memory, least recently used first, so
reserve/seal/access are O(1) amortized; victim search skips pinned objects, which are rare.
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any


class Location(enum.Enum):
    SHM = "shm"
    DISK = "disk"


@dataclass(frozen=True)
class Spill:
    """Move the object's file from shared memory to the spill directory."""

    object_id: int


@dataclass(frozen=True)
class Restore:
    """Move the object's file from the spill directory back to shared memory."""

    object_id: int


Decision = Spill | Restore


class StoreFull(Exception):
    """An object does not fit even after spilling every object that may be spilled.

    ``pinned`` is the number of bytes in shared memory that could not be spilled (pinned,
    still being written, or already being moved).
    """

    def __init__(self, needed: int, capacity: int, used: int, pinned: int) -> None:
        self.needed = needed
        self.capacity = capacity
        self.used = used
        self.pinned = pinned
        super().__init__(
            f"object store full: need {needed} bytes, capacity {capacity}, used {used}, "
            f"of which {pinned} cannot be spilled (pinned or in use)"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        # Default exception pickling would call __init__ with the message only.
        return (type(self), (self.needed, self.capacity, self.used, self.pinned))


# Values of _Entry.moving: a decision handed to the shell and not yet reported back.
_SPILLING = "spilling"
_RESTORING = "restoring"


class _Entry:
    __slots__ = ("loc", "moving", "pins", "sealed", "size")

    def __init__(self, size: int) -> None:
        self.size = size
        self.loc = Location.SHM
        self.pins = 0  # explicit pin() calls; an unsealed object is pinned regardless
        self.sealed = False
        self.moving: str | None = None

    @property
    def pinned(self) -> bool:
        return self.pins > 0 or not self.sealed


class StoreState:
    """Capacity, locations and LRU order of one node's objects. Not thread-safe (the shell locks)."""

    def __init__(self, capacity: int) -> None:
        if capacity < 0:
            raise ValueError(f"capacity must be >= 0, got {capacity}")
        self._capacity = capacity
        self._objects: dict[int, _Entry] = {}
        self._lru: OrderedDict[int, None] = OrderedDict()  # sealed SHM objects, oldest first
        self._used = 0
        self._pending_out = 0  # bytes of SHM objects with an outstanding Spill
        self._pending_in = 0  # bytes of DISK objects with an outstanding Restore
        self._disk_count = 0
        self._disk_bytes = 0
        self._spilled_total = 0
        self._restored_total = 0

    # ----------------------------------------------------------------- queries

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def used(self) -> int:
        """Bytes in shared memory now (reserved objects included)."""
        return self._used

    @property
    def committed(self) -> int:
        """``used`` once every outstanding spill and restore has completed."""
        return self._used - self._pending_out + self._pending_in

    def __contains__(self, object_id: object) -> bool:
        return object_id in self._objects

    def __len__(self) -> int:
        return len(self._objects)

    def location(self, object_id: int) -> Location:
        return self._entry(object_id).loc

    def size(self, object_id: int) -> int:
        return self._entry(object_id).size

    def is_pinned(self, object_id: int) -> bool:
        return self._entry(object_id).pinned

    def is_sealed(self, object_id: int) -> bool:
        return self._entry(object_id).sealed

    def stats(self) -> dict[str, int]:
        return {
            "capacity": self._capacity,
            "used": self._used,
            "num_objects": len(self._objects),
            "num_in_shm": len(self._objects) - self._disk_count,
            "num_on_disk": self._disk_count,
            "bytes_in_shm": self._used,
            "bytes_on_disk": self._disk_bytes,
            "num_spilled_total": self._spilled_total,
            "num_restored_total": self._restored_total,
        }

    # --------------------------------------------------------------- lifecycle

    def reserve(self, object_id: int, size: int) -> list[Spill]:
        """Make room for a new object of ``size`` bytes; return the spills that free the room.

        The object counts as used and stays pinned until ``seal`` (or ``abort``).

        Raises:
            ValueError: ``object_id`` is already known, or ``size`` is negative.
            StoreFull: it cannot fit even after spilling every unpinned object.
        """
        if object_id in self._objects:
            raise ValueError(f"object {object_id:x} is already in the store")
        if size < 0:
            raise ValueError(f"object size must be >= 0, got {size}")
        if size > self._capacity:
            raise StoreFull(size, self._capacity, self._used, self._unspillable_bytes())
        spills = self._start_spills(self._plan_room(size))
        self._objects[object_id] = _Entry(size)
        self._used += size
        return spills

    def seal(self, object_id: int) -> None:
        """Creation finished: the object is unpinned and becomes the most recently used."""
        e = self._entry(object_id)
        if e.sealed:
            raise ValueError(f"object {object_id:x} is already sealed")
        e.sealed = True
        self._lru[object_id] = None

    def abort(self, object_id: int) -> None:
        """Creation failed: free the reservation. Unknown ids are ignored (abort is cleanup)."""
        e = self._objects.get(object_id)
        if e is None:
            return
        if e.sealed:
            raise ValueError(f"object {object_id:x} is sealed; use delete() to free it")
        del self._objects[object_id]
        self._used -= e.size

    def access(self, object_id: int) -> list[Decision]:
        """A reader wants the object in shared memory; mark it most recently used.

        Returns [] if it is in shared memory, else the spills that make room followed by
        ``Restore(object_id)``.

        Raises:
            KeyError: unknown object.
            ValueError: a spill or restore of this object is still outstanding.
            StoreFull: a spilled object cannot be restored because nothing can be spilled.
        """
        e = self._entry(object_id)
        if e.moving is not None:
            raise ValueError(f"object {object_id:x} is {e.moving}; report that move first")
        if e.loc is Location.SHM:
            if e.sealed:
                self._lru.move_to_end(object_id)
            return []
        decisions: list[Decision] = list(self._start_spills(self._plan_room(e.size)))
        e.moving = _RESTORING
        self._pending_in += e.size
        decisions.append(Restore(object_id))
        return decisions

    def spill(self, object_id: int) -> Spill:
        """Decide an explicit spill of one sealed, unpinned object in shared memory."""
        e = self._entry(object_id)
        if e.loc is not Location.SHM or e.pinned or e.moving is not None:
            raise ValueError(
                f"object {object_id:x} cannot be spilled (location {e.loc.value}, "
                f"sealed {e.sealed}, pins {e.pins}, moving {e.moving})"
            )
        return self._start_spills([object_id])[0]

    def mark_spilled(self, object_id: int) -> None:
        """The shell moved the object's file to disk."""
        e = self._entry(object_id)
        if e.loc is not Location.SHM:
            raise ValueError(f"object {object_id:x} is not in shared memory")
        if e.moving == _SPILLING:
            self._pending_out -= e.size
        elif e.pinned:
            raise ValueError(f"object {object_id:x} is pinned and may not be spilled")
        e.moving = None
        e.loc = Location.DISK
        self._used -= e.size
        del self._lru[object_id]
        self._disk_count += 1
        self._disk_bytes += e.size
        self._spilled_total += 1

    def mark_restored(self, object_id: int) -> None:
        """The shell moved the object's file back to shared memory."""
        e = self._entry(object_id)
        if e.loc is not Location.DISK:
            raise ValueError(f"object {object_id:x} is not on disk")
        if e.moving == _RESTORING:
            self._pending_in -= e.size
        elif self.committed + e.size > self._capacity:
            # A restore nobody decided: only accept it if it fits.
            raise StoreFull(e.size, self._capacity, self._used, self._unspillable_bytes())
        e.moving = None
        e.loc = Location.SHM
        self._used += e.size
        self._lru[object_id] = None  # most recently used: it was restored for a reader
        self._disk_count -= 1
        self._disk_bytes -= e.size
        self._restored_total += 1

    def cancel_move(self, object_id: int) -> None:
        """The shell could not carry out a Spill/Restore decision; the object stays where it is.

        After cancelling the spills made for ``reserve``, the shell must ``abort`` that
        reservation (their room was promised to it). No-op if no move is outstanding.
        """
        e = self._entry(object_id)
        if e.moving == _SPILLING:
            self._pending_out -= e.size
        elif e.moving == _RESTORING:
            self._pending_in -= e.size
        e.moving = None

    def pin(self, object_id: int) -> None:
        """Counted pin: a pinned object is never chosen for spilling."""
        self._entry(object_id).pins += 1

    def unpin(self, object_id: int) -> None:
        e = self._entry(object_id)
        if e.pins <= 0:
            raise ValueError(f"object {object_id:x} is not pinned")
        e.pins -= 1

    def delete(self, object_id: int) -> Location | None:
        """The object is freed; return where its file is (None if the id is unknown)."""
        e = self._objects.pop(object_id, None)
        if e is None:
            return None
        if e.moving == _SPILLING:
            self._pending_out -= e.size
        elif e.moving == _RESTORING:
            self._pending_in -= e.size
        if e.loc is Location.SHM:
            self._used -= e.size
            self._lru.pop(object_id, None)
        else:
            self._disk_count -= 1
            self._disk_bytes -= e.size
        return e.loc

    # ----------------------------------------------------------------- helpers

    def _entry(self, object_id: int) -> _Entry:
        try:
            return self._objects[object_id]
        except KeyError:
            raise KeyError(f"object {object_id!r} is not in the store") from None

    def _plan_room(self, size: int) -> list[int]:
        """LRU victims (oldest first, spillable only) freeing enough room for ``size`` bytes."""
        need = self.committed + size - self._capacity
        if need <= 0:
            return []
        victims: list[int] = []
        freed = 0
        for oid in self._lru:
            e = self._objects[oid]
            if e.pinned or e.moving is not None:
                continue
            victims.append(oid)
            freed += e.size
            if freed >= need:
                return victims
        raise StoreFull(size, self._capacity, self._used, self._unspillable_bytes())

    def _start_spills(self, victims: list[int]) -> list[Spill]:
        for oid in victims:
            e = self._objects[oid]
            e.moving = _SPILLING
            self._pending_out += e.size
        return [Spill(oid) for oid in victims]

    def _unspillable_bytes(self) -> int:
        # O(n), only on the StoreFull path.
        return sum(
            e.size
            for e in self._objects.values()
            if e.loc is Location.SHM and (e.pinned or e.moving is not None)
        )

    def validate(self) -> None:
        """Check every invariant; raise AssertionError on the first broken one (works under -O)."""

        def check(cond: bool, what: str) -> None:
            if not cond:
                raise AssertionError(f"StoreState invariant broken: {what}")

        shm = {oid: e for oid, e in self._objects.items() if e.loc is Location.SHM}
        disk = [e for e in self._objects.values() if e.loc is Location.DISK]
        check(self._used == sum(e.size for e in shm.values()), "used == bytes of SHM objects")
        check(self._disk_count == len(disk), "disk count")
        check(self._disk_bytes == sum(e.size for e in disk), "disk bytes")
        spilling = [e for e in self._objects.values() if e.moving == _SPILLING]
        restoring = [e for e in self._objects.values() if e.moving == _RESTORING]
        check(all(e.loc is Location.SHM and e.sealed for e in spilling), "spilling ⇒ sealed SHM")
        check(all(e.loc is Location.DISK for e in restoring), "restoring ⇒ DISK")
        check(self._pending_out == sum(e.size for e in spilling), "pending spill bytes")
        check(self._pending_in == sum(e.size for e in restoring), "pending restore bytes")
        check(self.committed <= self._capacity, "committed <= capacity")
        if not spilling and not restoring:
            check(self._used <= self._capacity, "used <= capacity")
        check(all(e.pins >= 0 for e in self._objects.values()), "pin counts >= 0")
        for e in self._objects.values():
            if not e.sealed:
                check(e.pinned and e.loc is Location.SHM and e.moving is None, "unsealed ⇒ pinned")
        sealed_shm = [oid for oid, e in shm.items() if e.sealed]
        check(
            len(self._lru) == len(sealed_shm) and set(self._lru) == set(sealed_shm),
            "LRU holds exactly the sealed SHM objects",
        )
