"""The node's ActorManager without processes: a fake io records what would be sent."""

from __future__ import annotations

import pickle

import pytest

from rtml import exceptions as exc
from rtml._node._actors import ALIVE, DEAD, PENDING_CREATION, RESTARTING, ActorManager
from rtml._node._node import Node
from rtml._protocol._ids import DRIVER_INDEX, return_id
from rtml._protocol._payload import ERR, INLINE
from rtml._protocol._spec import TaskSpec

OTHER = 7  # a second caller process


class FakeIO:
    def __init__(self) -> None:
        self.sent: list[tuple[int, tuple]] = []
        self.spawned: list[int] = []
        self.killed: list[int] = []

    def send(self, wid: int, msg: tuple) -> None:
        self.sent.append((wid, msg))

    def spawn(self, wid: int, actor: object) -> None:
        self.spawned.append(wid)

    def kill(self, wid: int) -> None:
        self.killed.append(wid)

    def interrupt(self, wid: int) -> None:
        pass

    def log(self, *args: object) -> None:
        pass

    def execs(self, wid: int) -> list[str]:
        """Names of the calls sent to worker ``wid``, in order."""
        return [m[1].name for w, m in self.sent if w == wid and m[0] == "exec"]

    def tags(self, wid: int) -> list[str]:
        return [m[0] for w, m in self.sent if w == wid]


class Env:
    def __init__(self, cpus: float = 2) -> None:
        self.io = FakeIO()
        self.node = Node(self.io, None, {"CPU": cpus}, "test")
        self.mgr = ActorManager(self.node, "ns")
        self.node.actors = self.mgr
        self.counter = {DRIVER_INDEX: 0, OTHER: 0}
        self.pid = 1000

    def tid(self, proc: int = DRIVER_INDEX) -> int:
        self.counter[proc] = self.counter.get(proc, 0) + 1
        return (proc << 40) | self.counter[proc]

    def create(
        self,
        name: str | None = None,
        max_restarts: int = 0,
        resources=None,
        get_if_exists: bool = False,
        deps: tuple = (),
    ) -> tuple[str, int]:
        tid = self.tid()
        spec = TaskSpec(
            tid,
            "cls",
            "C.__init__",
            b"",
            deps,
            (),
            1,
            resources or {},
            0,
            False,
            DRIVER_INDEX,
            None,
            actor_id=tid,
        )
        meta = {
            "class_name": "C",
            "methods": {"f": (1, False, None)},
            "max_task_retries": 0,
            "is_async": False,
        }
        info = {
            "class_name": "C",
            "name": name,
            "namespace": None,
            "get_if_exists": get_if_exists,
            "detached": False,
            "max_restarts": max_restarts,
            "max_concurrency": 1,
            "is_async": False,
            "env_vars": None,
            "meta": meta,
        }
        status, value = self.mgr.op(DRIVER_INDEX, "create", (spec, b"blob", info))
        if status == "err":
            raise value
        return value[0], value[1]

    def start(self, aid: int) -> int:
        """The actor's worker says hello and its constructor succeeds; returns its wid."""
        w = self.mgr.actors[aid].worker
        self.pid += 1
        self.node.on_hello(w.wid, self.pid)
        assert self.io.execs(w.wid)[-1] == "C.__init__"
        self.mgr.handle(w.wid, ("actor_ready", aid, None))
        self.node.on_done(
            w.wid, aid, [(return_id(aid, 1), INLINE, pickle.dumps(None), 4, [])], 0.001, False
        )
        assert self.mgr.actors[aid].state == ALIVE
        return w.wid

    def call(
        self,
        aid: int,
        name: str,
        deps: tuple = (),
        proc: int = DRIVER_INDEX,
        retries: int = 0,
        fn: str = "f",
    ) -> int:
        tid = self.tid(proc)
        spec = TaskSpec(
            tid, fn, name, b"", deps, (), 1, {}, retries, False, proc, None, actor_id=aid
        )
        self.node.submit(proc, spec)
        return tid

    def done(self, wid: int, tid: int, value: object = None) -> None:
        self.node.on_done(
            wid, tid, [(return_id(tid, 1), INLINE, pickle.dumps(value), 4, [])], 0.001, False
        )

    def pending_object(self) -> int:
        oid = return_id(self.tid(), 1)
        self.node.objects.create(oid, DRIVER_INDEX)
        self.node.held[DRIVER_INDEX].add(oid)
        return oid

    def error_of(self, tid: int) -> BaseException:
        kind, payload = self.node.payload(return_id(tid, 1))
        assert kind == ERR, "the call did not fail"
        return pickle.loads(payload)

    def validate(self) -> None:
        self.node.validate()
        self.mgr.validate()


def test_calls_wait_for_constructor_then_run_in_order():
    env = Env()
    _, aid = env.create()
    w = env.mgr.actors[aid].worker
    c1, c2 = env.call(aid, "c1"), env.call(aid, "c2")
    env.validate()
    wid = env.start(aid)
    assert wid == w.wid
    assert env.io.execs(wid) == ["C.__init__", "c1", "c2"]
    assert env.io.tags(wid)[:2] == ["fn", "actor_init"]
    env.done(wid, c1, 1)
    env.done(wid, c2, 2)
    assert env.node.payload(return_id(c2, 1)) == (INLINE, pickle.dumps(2))
    env.validate()


def test_slow_argument_delays_only_its_own_callers_later_calls():
    env = Env()
    _, aid = env.create()
    wid = env.start(aid)
    slow = env.pending_object()
    env.call(aid, "a1", deps=(slow,))
    env.call(aid, "a2")
    env.call(aid, "a3")
    env.call(aid, "b1", proc=OTHER)  # another caller is not held up
    assert env.io.execs(wid) == ["C.__init__", "b1"]
    env.validate()
    env.node.objects.seal(slow, INLINE, pickle.dumps(5), 4, ())
    assert env.io.execs(wid) == ["C.__init__", "b1", "a1", "a2", "a3"]
    env.validate()


def test_failed_argument_fails_its_call_and_releases_the_next():
    env = Env()
    _, aid = env.create()
    wid = env.start(aid)
    bad = env.pending_object()
    c1 = env.call(aid, "c1", deps=(bad,))
    env.call(aid, "c2")
    assert env.io.execs(wid) == ["C.__init__"]
    env.node.objects.seal(bad, ERR, pickle.dumps(ValueError("boom")), 0, ())
    assert isinstance(env.error_of(c1), ValueError)
    assert env.io.execs(wid) == ["C.__init__", "c2"]
    env.validate()


def test_worker_death_restarts_and_resends_in_flight_calls_in_order():
    env = Env()
    _, aid = env.create(max_restarts=1)
    wid = env.start(aid)
    c1 = env.call(aid, "c1", retries=1)
    c2 = env.call(aid, "c2", retries=1)
    c3 = env.call(aid, "c3", retries=0)
    env.node.on_worker_exit(wid, "killed by signal 9")
    rec = env.mgr.actors[aid]
    assert rec.state == RESTARTING
    assert rec.num_restarts == 1
    assert "max_task_retries" in str(env.error_of(c3))  # not retried: says how to retry
    env.validate()
    wid2 = env.start(aid)
    assert wid2 != wid
    assert env.io.execs(wid2) == ["C.__init__", "c1", "c2"]
    c4 = env.call(aid, "c4")
    env.done(wid2, c1)
    # No restarts left: the next death is final, and every call fails with the cause.
    env.node.on_worker_exit(wid2, "exit code 1")
    assert rec.state == DEAD
    for t in (c2, c4):
        err = env.error_of(t)
        assert isinstance(err, exc.ActorDiedError)
        assert "exit code 1" in str(err)
    c5 = env.call(aid, "c5")
    assert isinstance(env.error_of(c5), exc.ActorDiedError)
    assert len(env.io.spawned) == 2
    env.validate()


def test_constructor_failure_fails_every_call_with_its_traceback():
    env = Env()
    _, aid = env.create(max_restarts=3)
    c1 = env.call(aid, "c1")
    w = env.mgr.actors[aid].worker
    env.node.on_hello(w.wid, 99)
    init_err = exc.TaskError(
        "C.__init__", "Traceback ...\nValueError: bad config", ValueError("bad config")
    )
    env.mgr.handle(w.wid, ("actor_ready", aid, pickle.dumps(init_err)))
    assert env.mgr.actors[aid].state == DEAD
    assert env.io.tags(w.wid)[-1] == "exit"
    for t in (c1, env.call(aid, "c2")):
        err = env.error_of(t)
        assert isinstance(err, exc.ActorDiedError)
        assert "bad config" in str(err)
    env.node.on_worker_exit(w.wid, "exit code 0")
    assert len(env.io.spawned) == 1  # a constructor error is not retried by restarts
    env.validate()


def test_names_duplicates_get_if_exists_and_kill_frees_the_name():
    env = Env()
    kind, aid = env.create(name="svc")
    assert kind == "created"
    with pytest.raises(ValueError, match="svc"):
        env.create(name="svc")
    kind2, aid2 = env.create(name="svc", get_if_exists=True)
    assert (kind2, aid2) == ("existing", aid)
    assert env.mgr.op(DRIVER_INDEX, "get", ("svc", None))[1][0] == aid
    status, err = env.mgr.op(DRIVER_INDEX, "get", ("nope", None))
    assert status == "err"
    assert "nope" in str(err)
    wid = env.start(aid)
    listed = {a["name"]: a for a in env.mgr.list_actors()}
    assert listed["svc"]["state"] == ALIVE
    assert listed["svc"]["namespace"] == "ns"
    env.mgr.op(DRIVER_INDEX, "kill", (aid, True))
    assert wid in env.io.killed
    assert env.mgr.op(DRIVER_INDEX, "get", ("svc", None))[0] == "err"
    env.node.on_worker_exit(wid, "killed by signal 9")
    assert env.create(name="svc")[0] == "created"
    env.validate()


def test_dropping_the_last_handle_exits_after_queued_calls():
    env = Env()
    _, aid = env.create()
    wid = env.start(aid)
    c1 = env.call(aid, "c1")
    env.node.ref_updates(DRIVER_INDEX, [], [return_id(aid, 1)])  # the last handle is gone
    assert "exit" not in env.io.tags(wid)
    env.done(wid, c1)
    assert env.io.tags(wid)[-1] == "exit"
    env.node.on_worker_exit(wid, "exit code 0")
    rec = env.mgr.actors[aid]
    assert rec.state == DEAD
    assert "handle" in str(rec.cause)
    assert len(env.io.spawned) == 1
    env.validate()


def test_exit_actor_stops_dispatch_and_fails_later_calls():
    env = Env()
    _, aid = env.create(max_restarts=2)
    wid = env.start(aid)
    c1 = env.call(aid, "c1")
    env.mgr.handle(wid, ("actor_exiting", aid, c1, "exit_actor() was called in f()"))
    c2 = env.call(aid, "c2")
    assert env.io.execs(wid) == ["C.__init__", "c1"]
    env.done(wid, c1)
    assert env.io.tags(wid)[-1] == "exit"
    env.node.on_worker_exit(wid, "exit code 0")
    assert "exit_actor" in str(env.error_of(c2))
    assert len(env.io.spawned) == 1  # an intentional exit is not restarted
    env.validate()


def test_terminate_call_runs_after_earlier_calls_and_ends_the_actor():
    env = Env()
    _, aid = env.create()
    wid = env.start(aid)
    c1 = env.call(aid, "c1")
    t = env.call(aid, "C.__rtml_terminate__", fn="__rtml_terminate__")
    c3 = env.call(aid, "c3")
    assert env.io.execs(wid) == ["C.__init__", "c1", "C.__rtml_terminate__"]
    env.done(wid, c1)
    env.done(wid, t)
    assert env.io.tags(wid)[-1] == "exit"
    env.node.on_worker_exit(wid, "exit code 0")
    assert "__rtml_terminate__" in str(env.error_of(c3))
    env.validate()


def test_actor_holds_explicit_resources_and_waits_for_them():
    env = Env(cpus=2)
    _, a = env.create(resources={"CPU": 2.0})
    _, b = env.create(resources={"CPU": 1.0})
    assert env.node.resources.availability()["CPU"] == 0
    assert env.mgr.actors[b].state == PENDING_CREATION
    assert len(env.io.spawned) == 1
    env.validate()
    wid = env.start(a)
    env.mgr.op(DRIVER_INDEX, "kill", (a, True))
    env.node.on_worker_exit(wid, "killed by signal 9")
    assert len(env.io.spawned) == 2  # b placed once a's CPUs came back
    assert env.node.resources.availability()["CPU"] == 1
    _, c = env.create(resources={"CPU": 4.0})  # can never fit on this node
    err = env.error_of(c)  # the handle object holds the reason
    assert isinstance(err, exc.ActorDiedError)
    assert "could never be placed" in str(err)
    env.validate()


def test_cancel_queued_call_releases_the_ones_behind_it():
    env = Env()
    _, aid = env.create()
    wid = env.start(aid)
    slow = env.pending_object()
    c1 = env.call(aid, "c1", deps=(slow,))
    env.call(aid, "c2")
    env.node.cancel(return_id(c1, 1), False, True)
    assert isinstance(env.error_of(c1), exc.TaskCancelledError)
    assert env.io.execs(wid) == ["C.__init__", "c2"]
    env.validate()


def test_kill_with_restart_queues_later_calls_for_the_new_worker():
    env = Env()
    _, aid = env.create(max_restarts=1)
    wid = env.start(aid)
    c1 = env.call(aid, "c1")
    env.mgr.op(DRIVER_INDEX, "kill", (aid, False))
    assert wid in env.io.killed
    assert env.mgr.actors[aid].state == RESTARTING
    assert isinstance(env.error_of(c1), exc.ActorDiedError)  # in flight, not retried
    c2 = env.call(aid, "c2")
    assert env.io.execs(wid) == ["C.__init__", "c1"]  # nothing more to the dying worker
    env.node.on_worker_exit(wid, "killed by signal 9")  # the old process goes away later
    wid2 = env.start(aid)
    assert env.io.execs(wid2) == ["C.__init__", "c2"]
    env.done(wid2, c2)
    env.validate()


def test_call_rerun_to_rebuild_its_result_goes_before_later_queued_calls():
    """A call re-submitted with its original (older) id, to rebuild a lost result, is queued
    in its place: behind later calls, one of them waiting for that very result would block
    the caller's queue forever."""
    env = Env()
    _, aid = env.create()
    wid = env.start(aid)
    old = env.tid()  # an earlier call, whose result was lost
    lost = return_id(old, 1)
    env.node.objects.create(lost, DRIVER_INDEX)
    env.node.held[DRIVER_INDEX].add(lost)
    env.call(aid, "needs_it", deps=(lost,))
    env.call(aid, "later")
    assert env.io.execs(wid) == ["C.__init__"]
    rerun = TaskSpec(
        old, "f", "rerun", b"", (), (), 1, {}, 0, False, DRIVER_INDEX, None, actor_id=aid
    )
    env.node.submit(DRIVER_INDEX, rerun)
    assert env.io.execs(wid) == ["C.__init__", "rerun"]
    env.done(wid, old, 7)
    assert env.io.execs(wid) == ["C.__init__", "rerun", "needs_it", "later"]
    env.validate()
