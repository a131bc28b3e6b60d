"""The worker pool without processes: random worker events against its invariants, and the
leases always holding exactly the resources the pool has given out."""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from rtml import exceptions as exc
from rtml._node._workers import (
    ACTOR,
    DEAD,
    IDLE,
    LEASED,
    MAX_START_FAILURES,
    START_RETRY_S,
    STARTING,
    WorkerPool,
)
from rtml._scheduler import ResourcePool, shape_key

SHAPES = [{"CPU": 1.0}, {"CPU": 2.0}, {"CPU": 0.5, "mem": 1.0}]


def test_lease_end_and_death_keep_the_counts():
    pool = WorkerPool(ResourcePool({"CPU": 2}), 2)
    a, b = pool.add(1), pool.add(2)
    assert pool.n_starting == 2
    pool.hello(a)
    pool.hello(b)
    w = pool.lease(shape_key({"CPU": 2.0}), {"CPU": 2.0})
    assert w is not None
    assert w.state == LEASED
    assert pool.lease(shape_key({"CPU": 1.0}), {"CPU": 1.0}) is None  # no CPU left
    assert pool.block(w)
    assert not pool.block(w)  # (nested: counted once)
    assert pool.resources.availability()["CPU"] == 2.0  # lent back while blocked
    pool.unblock(w)
    pool.unblock(w)
    assert pool.n_blocked == 0
    pool.died(w)
    pool.forget(w.wid)
    assert pool.resources.availability()["CPU"] == 2.0
    pool.validate()


def _fail_start(pool: WorkerPool, wid: int, now: float, stderr: str = "boom") -> bool:
    w = pool.add(wid)
    pool.died(w)
    pool.forget(wid)
    return pool.start_failed("exit code 1", stderr, now)


def test_start_failures_in_a_row_stop_the_spawning_until_a_probe_may_go():
    pool = WorkerPool(ResourcePool({"CPU": 2}), 2)
    for i in range(1, MAX_START_FAILURES):
        assert not _fail_start(pool, i, 100.0)
        assert pool.may_start(100.0)
    assert _fail_start(pool, 99, 100.0, "Traceback ...\nImportError: no module named x\n")
    err = pool.start_error
    assert isinstance(err, exc.WorkerStartError)
    assert isinstance(err, exc.RuntimeEnvSetupError)
    assert err.stderr.endswith("ImportError: no module named x")
    assert err.failures == MAX_START_FAILURES
    assert "ImportError: no module named x" in str(err)
    assert not pool.may_start(100.0 + START_RETRY_S / 2)
    assert pool.cannot_start(100.0 + START_RETRY_S / 2) is err
    later = 100.0 + START_RETRY_S
    assert pool.may_start(later)  # one probe
    assert pool.cannot_start(later) is None
    probe = pool.add(200)
    assert not pool.may_start(later)  # only one at a time
    assert pool.cannot_start(later) is None  # (work waits for the probe)
    pool.died(probe)
    pool.forget(200)
    assert pool.start_failed("exit code 1", "again", later)  # broken again, from now
    assert pool.cannot_start(later + 1) is not None
    pool.validate()


def test_a_worker_that_comes_up_clears_the_breakage():
    pool = WorkerPool(ResourcePool({"CPU": 2}), 2)
    for i in range(MAX_START_FAILURES):
        _fail_start(pool, i + 1, 0.0)
    assert pool.start_error is not None
    w = pool.add(50)
    pool.hello(w)
    assert pool.start_error is None
    assert pool.start_failures == 0
    assert pool.may_start(0.0)
    pool.validate()


def test_a_failed_start_error_pickles_with_its_stderr():
    import pickle

    err = exc.WorkerStartError(stderr="the tail", how="exit code 1", failures=3)
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is exc.WorkerStartError
    assert back.stderr == "the tail"
    assert str(back) == str(err)


class PoolMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.resources = ResourcePool({"CPU": 3, "mem": 2})
        self.pool = WorkerPool(self.resources, 2)
        self.next_wid = 1

    def _pick(self, data: st.DataObject, states: tuple[str, ...]):  # type: ignore[no-untyped-def]
        ws = sorted(
            (w for w in self.pool.workers.values() if w.state in states), key=lambda w: w.wid
        )
        return data.draw(st.sampled_from(ws)) if ws else None

    @rule(actor=st.booleans())
    def spawn(self, actor: bool) -> None:
        self.pool.add(self.next_wid, object() if actor else None)
        self.next_wid += 1

    @rule(data=st.data())
    def hello(self, data: st.DataObject) -> None:
        w = self._pick(data, (STARTING,))
        if w is not None:
            self.pool.hello(w)
            assert w.state == (ACTOR if w.actor is not None else IDLE)

    @rule(shape=st.sampled_from(SHAPES))
    def lease(self, shape: dict[str, float]) -> None:
        fits = bool(self.pool.idle) and self.resources.fits(shape)
        w = self.pool.lease(shape_key(shape), shape)
        assert (w is not None) == fits

    @rule(data=st.data())
    def end_lease(self, data: st.DataObject) -> None:
        w = self._pick(data, (LEASED,))
        if w is not None and not w.blocked:
            self.pool.end_lease(w)

    @rule(data=st.data())
    def block(self, data: st.DataObject) -> None:
        w = self._pick(data, (IDLE, LEASED, ACTOR))
        if w is not None:
            self.pool.block(w)

    @rule(data=st.data())
    def unblock(self, data: st.DataObject) -> None:
        w = self._pick(data, (IDLE, LEASED, ACTOR))
        if w is not None:
            self.pool.unblock(w)

    @rule(data=st.data())
    def die(self, data: st.DataObject) -> None:
        w = self._pick(data, (STARTING, IDLE, LEASED, ACTOR))
        if w is not None:
            self.pool.died(w)
            assert w.state == DEAD
            assert w.alloc is None
            self.pool.forget(w.wid)

    @precondition(lambda self: bool(self.pool.leased))
    @rule()
    def reap(self) -> None:
        self.pool.reap({})  # nothing queued: every lease without a task (and not blocked) ends
        for ws in self.pool.leased.values():
            assert all(w.blocked for w in ws)

    @invariant()
    def consistent(self) -> None:
        self.pool.validate()
        self.resources.validate()
        # The leases hold exactly what was given out (a blocked worker's CPU lent back).
        given: dict[str, int] = {}
        for ws in self.pool.leased.values():
            for w in ws:
                for k, v in w.alloc.amounts.items():
                    given[k] = given.get(k, 0) + v
                given["CPU"] = given.get("CPU", 0) - w.lent
        for k, total in self.resources.total.items():
            assert total - self.resources.available.get(k, 0) == given.get(k, 0), k


PoolMachine.TestCase.settings = settings(max_examples=100, stateful_step_count=40, deadline=None)
test_pool_state_machine = PoolMachine.TestCase


def test_gpu_leases_go_to_workers_that_ran_no_cpu_task():
    pool = WorkerPool(ResourcePool({"CPU": 4, "GPU": 2}), 2)
    a, b = pool.add(1), pool.add(2)
    pool.hello(a)
    pool.hello(b)
    cpu = shape_key({"CPU": 1.0})
    gpu = shape_key({"CPU": 1.0, "GPU": 1.0})
    w = pool.lease(cpu, {"CPU": 1.0})
    assert w is not None
    other = a if w is b else b
    pool.end_lease(w)
    assert pool.lease(cpu, {"CPU": 1.0}) is w  # CPU work keeps to the used worker
    g = pool.lease(gpu, {"CPU": 1.0, "GPU": 1.0})
    assert g is other  # the fresh one
    assert g.used == (0,)
    pool.end_lease(w)
    pool.end_lease(g)
    again = pool.lease(gpu, {"CPU": 1.0, "GPU": 1.0})
    assert again is g  # same devices: reused
    assert pool.lease(gpu, {"CPU": 1.0, "GPU": 1.0}) is None  # (1): w ran CPU tasks
    assert pool.resources.availability()["GPU"] == 1.0  # and the refused lease took nothing
    assert pool.retire_for_gpus() is w
    assert w.retiring
    assert pool.retire_for_gpus() is None  # (no other idle worker)
    pool.validate()
