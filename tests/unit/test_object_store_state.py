"""StoreState: capacity accounting, LRU spill choice, pins, restores — unit and stateful tests."""

from __future__ import annotations

import pickle
import sys
from pathlib import Path

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

try:
    import rtml._object_store  # noqa: F401
except ImportError:  # running from a checkout without an installed package
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))

from rtml._object_store import Location, Restore, Spill, StoreFull, StoreState


def _apply(s: StoreState, decisions: list) -> None:
    """Play the shell: report every decision as done, validating in between."""
    for d in decisions:
        s.validate()
        if isinstance(d, Spill):
            s.mark_spilled(d.object_id)
        else:
            s.mark_restored(d.object_id)
    s.validate()


def _put(s: StoreState, oid: int, size: int) -> list:
    spills = s.reserve(oid, size)
    s.validate()
    _apply(s, spills)
    s.seal(oid)
    s.validate()
    return spills


def test_lru_order_of_spills() -> None:
    s = StoreState(100)
    for oid in (1, 2, 3):
        assert _put(s, oid, 30) == []
    assert s.access(1) == []  # 1 becomes most recently used: order is now 2, 3, 1
    s.validate()
    spills = s.reserve(4, 50)  # need 90 + 50 - 100 = 40 bytes: two 30-byte objects
    assert spills == [Spill(2), Spill(3)]
    assert s.used == 140
    assert s.committed == 80
    s.validate()
    _apply(s, spills)
    assert (s.location(2), s.location(3), s.location(1)) == (
        Location.DISK,
        Location.DISK,
        Location.SHM,
    )
    assert s.used == 80
    s.seal(4)
    s.validate()
    assert s.stats() == {
        "capacity": 100,
        "used": 80,
        "num_objects": 4,
        "num_in_shm": 2,
        "num_on_disk": 2,
        "bytes_in_shm": 80,
        "bytes_on_disk": 60,
        "num_spilled_total": 2,
        "num_restored_total": 0,
    }


def test_pinned_and_unsealed_objects_are_never_spilled() -> None:
    s = StoreState(100)
    _put(s, 1, 30)
    _put(s, 2, 30)
    s.pin(1)
    s.pin(1)  # counted
    assert s.reserve(3, 30) == []  # unsealed, pinned by the reservation
    s.validate()
    assert s.reserve(4, 30) == [Spill(2)]  # 1 is pinned, 3 unsealed
    _apply(s, [Spill(2)])
    s.unpin(1)
    with pytest.raises(StoreFull):
        s.reserve(5, 20)  # 1 still pinned once; 3 and 4 unsealed
    s.validate()
    s.unpin(1)
    with pytest.raises(ValueError):
        s.unpin(1)
    assert s.reserve(5, 20) == [Spill(1)]
    _apply(s, [Spill(1)])
    with pytest.raises(ValueError):
        s.mark_spilled(3)  # unsealed: the shell may not spill it
    s.validate()


def test_store_full() -> None:
    s = StoreState(100)
    with pytest.raises(StoreFull) as info:
        s.reserve(1, 101)
    assert (info.value.needed, info.value.capacity, info.value.used, info.value.pinned) == (
        101,
        100,
        0,
        0,
    )
    assert len(s) == 0
    _put(s, 1, 40)
    _put(s, 2, 40)
    s.pin(1)
    s.pin(2)
    with pytest.raises(StoreFull) as info:
        s.reserve(3, 21)
    assert (info.value.used, info.value.pinned) == (80, 80)
    assert "need 21 bytes" in str(info.value)
    again = pickle.loads(pickle.dumps(info.value))
    assert (again.needed, again.pinned, str(again)) == (21, 80, str(info.value))
    assert 3 not in s
    assert s.used == 80
    assert s.committed == 80
    s.validate()
    assert s.reserve(3, 20) == []
    s.validate()


def test_access_spilled_object_spills_then_restores() -> None:
    s = StoreState(100)
    _put(s, 1, 50)
    _put(s, 2, 50)
    _apply(s, [s.spill(1)])
    assert s.location(1) is Location.DISK
    assert s.used == 50
    _put(s, 3, 50)
    decisions = s.access(1)
    assert decisions == [Spill(2), Restore(1)]
    s.validate()
    with pytest.raises(ValueError):
        s.access(1)  # its restore is still outstanding
    _apply(s, decisions)
    assert s.location(1) is Location.SHM
    assert s.location(2) is Location.DISK
    assert s.stats()["num_restored_total"] == 1
    # 1 is now the most recently used, so the next victim is 3.
    assert s.access(2) == [Spill(3), Restore(2)]
    s.cancel_move(3)
    s.cancel_move(2)  # the shell failed: both stay where they are
    s.validate()
    assert s.location(2) is Location.DISK
    assert s.location(3) is Location.SHM
    s.pin(1)
    s.pin(3)
    with pytest.raises(StoreFull):
        s.access(2)
    s.validate()


def test_delete_everywhere() -> None:
    s = StoreState(100)
    _put(s, 1, 40)
    _put(s, 2, 40)
    _apply(s, [s.spill(1)])
    assert s.delete(1) is Location.DISK
    assert s.delete(2) is Location.SHM
    assert s.delete(2) is None
    assert s.delete(99) is None
    s.validate()
    assert s.used == 0
    assert len(s) == 0
    s.reserve(3, 10)
    assert s.delete(3) is Location.SHM  # unsealed: same as abort
    _put(s, 4, 60)
    _put(s, 5, 30)
    spills = s.reserve(6, 50)
    assert spills == [Spill(4)]
    assert s.delete(4) is Location.SHM  # freed while its spill was outstanding
    s.validate()
    s.seal(6)
    s.validate()
    assert s.used == 80


def test_misuse_errors() -> None:
    s = StoreState(100)
    s.reserve(1, 10)
    with pytest.raises(ValueError):
        s.reserve(1, 10)
    with pytest.raises(ValueError):
        s.reserve(2, -1)
    s.seal(1)
    with pytest.raises(ValueError):
        s.seal(1)
    with pytest.raises(ValueError):
        s.abort(1)
    with pytest.raises(ValueError):
        s.mark_restored(1)
    with pytest.raises(KeyError):
        s.access(7)
    with pytest.raises(KeyError):
        s.pin(7)
    s.abort(7)  # unknown: ignored
    s.reserve(2, 20)
    s.abort(2)
    assert 2 not in s
    assert s.used == 10
    with pytest.raises(ValueError):
        StoreState(-1)
    s.validate()
    s._used += 1  # corrupt it: validate must notice
    with pytest.raises(AssertionError, match="used"):
        s.validate()


def test_undecided_restore_must_fit() -> None:
    s = StoreState(100)
    _put(s, 1, 60)
    s.mark_spilled(1)  # allowed without a decision: sealed and unpinned
    _put(s, 2, 60)
    with pytest.raises(StoreFull):
        s.mark_restored(1)
    s.delete(2)
    s.mark_restored(1)
    s.validate()


# ----------------------------------------------------------------------------- stateful model


class StoreMachine(RuleBasedStateMachine):
    """Drive StoreState with random operations and compare it with a naive list-based model."""

    CAPACITY = 100

    def __init__(self) -> None:
        super().__init__()
        self.s = StoreState(self.CAPACITY)
        self.next_id = 1
        # model: id -> [size, location, sealed, pins]; lru: sealed SHM ids, oldest first
        self.objs: dict[int, list] = {}
        self.lru: list[int] = []

    # ---- model helpers

    def used(self) -> int:
        return sum(o[0] for o in self.objs.values() if o[1] is Location.SHM)

    def victims(self, size: int) -> list[int] | None:
        need = self.used() + size - self.CAPACITY
        chosen, freed = [], 0
        for oid in self.lru:
            if need <= freed:
                break
            if self.objs[oid][3] == 0:
                chosen.append(oid)
                freed += self.objs[oid][0]
        return chosen if freed >= need else None

    def spill_in_model(self, oid: int) -> None:
        self.objs[oid][1] = Location.DISK
        self.lru.remove(oid)

    def ids(self, pred) -> list[int]:
        return sorted(oid for oid, o in self.objs.items() if pred(o))

    # ---- rules

    @rule(size=st.integers(0, 60), fail=st.booleans())
    def reserve(self, size: int, fail: bool) -> None:
        oid = self.next_id
        self.next_id += 1
        expected = None if size > self.CAPACITY else self.victims(size)
        if expected is None:
            with pytest.raises(StoreFull):
                self.s.reserve(oid, size)
            return
        spills = self.s.reserve(oid, size)
        assert spills == [Spill(v) for v in expected]
        self.s.validate()
        if fail and spills:  # the shell could not move the first victim: roll back
            for d in spills:
                self.s.cancel_move(d.object_id)
            self.s.abort(oid)
            return
        for d in spills:
            self.s.mark_spilled(d.object_id)
            self.spill_in_model(d.object_id)
        self.objs[oid] = [size, Location.SHM, False, 0]

    @precondition(lambda self: any(not o[2] for o in self.objs.values()))
    @rule(data=st.data(), abort=st.booleans())
    def finish(self, data: st.DataObject, abort: bool) -> None:
        oid = data.draw(st.sampled_from(self.ids(lambda o: not o[2])))
        if abort:
            self.s.abort(oid)
            del self.objs[oid]
        else:
            self.s.seal(oid)
            self.objs[oid][2] = True
            self.lru.append(oid)

    @precondition(lambda self: self.objs)
    @rule(data=st.data())
    def access(self, data: st.DataObject) -> None:
        oid = data.draw(st.sampled_from(sorted(self.objs)))
        size, loc, sealed, _ = self.objs[oid]
        if loc is Location.SHM:
            assert self.s.access(oid) == []
            if sealed:
                self.lru.remove(oid)
                self.lru.append(oid)
            return
        expected = self.victims(size)
        if expected is None:
            with pytest.raises(StoreFull):
                self.s.access(oid)
            return
        decisions = self.s.access(oid)
        assert decisions == [*(Spill(v) for v in expected), Restore(oid)]
        self.s.validate()
        for v in expected:
            self.s.mark_spilled(v)
            self.spill_in_model(v)
        self.s.mark_restored(oid)
        self.objs[oid][1] = Location.SHM
        self.lru.append(oid)

    @precondition(lambda self: self.objs)
    @rule(data=st.data())
    def delete(self, data: st.DataObject) -> None:
        oid = data.draw(st.sampled_from([*sorted(self.objs), 10_000]))
        o = self.objs.pop(oid, None)
        assert self.s.delete(oid) == (o[1] if o else None)
        if oid in self.lru:
            self.lru.remove(oid)

    @precondition(lambda self: any(o[2] for o in self.objs.values()))
    @rule(data=st.data(), up=st.booleans())
    def pin(self, data: st.DataObject, up: bool) -> None:
        oid = data.draw(st.sampled_from(self.ids(lambda o: o[2])))
        if up:
            self.s.pin(oid)
            self.objs[oid][3] += 1
        elif self.objs[oid][3]:
            self.s.unpin(oid)
            self.objs[oid][3] -= 1
        else:
            with pytest.raises(ValueError):
                self.s.unpin(oid)

    @precondition(lambda self: any(o[2] and o[1] is Location.SHM for o in self.objs.values()))
    @rule(data=st.data())
    def explicit_spill(self, data: st.DataObject) -> None:
        oid = data.draw(st.sampled_from(self.ids(lambda o: o[2] and o[1] is Location.SHM)))
        if self.objs[oid][3]:
            with pytest.raises(ValueError):
                self.s.spill(oid)
            return
        assert self.s.spill(oid) == Spill(oid)
        self.s.mark_spilled(oid)
        self.spill_in_model(oid)

    @invariant()
    def matches_model(self) -> None:
        self.s.validate()
        assert self.s.used == self.used() <= self.CAPACITY
        assert len(self.s) == len(self.objs)
        assert list(self.s._lru) == self.lru
        for oid, (size, loc, sealed, _) in self.objs.items():
            assert self.s.location(oid) is loc
            assert self.s.size(oid) == size
            assert self.s.is_sealed(oid) is sealed
        st_ = self.s.stats()
        assert st_["num_on_disk"] == len(self.ids(lambda o: o[1] is Location.DISK))


StoreMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
test_store_state_machine = StoreMachine.TestCase
