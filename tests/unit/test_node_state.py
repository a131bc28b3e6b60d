"""The node's scheduler and object table, driven without processes through a fake io."""

from __future__ import annotations

import pickle

import pytest

from rtml import exceptions as exc
from rtml._node._node import Node
from rtml._node._objects import READY
from rtml._node._workers import IDLE, LEASED
from rtml._protocol._ids import DRIVER_INDEX, IdGenerator, put_id, return_id
from rtml._protocol._payload import ERR, INLINE
from rtml._protocol._spec import STREAMING, TaskSpec

D = DRIVER_INDEX


class FakeIO:
    def __init__(self) -> None:
        self.sent: list[tuple[int, tuple]] = []
        self.spawned: list[int] = []
        self.killed: list[int] = []
        self.interrupted: list[int] = []

    def send(self, wid, msg):
        self.sent.append((wid, msg))

    def spawn(self, wid, actor):
        self.spawned.append(wid)

    def kill(self, wid):
        self.killed.append(wid)

    def interrupt(self, wid):
        self.interrupted.append(wid)

    def log(self, *a):
        pass

    def take(self, tag=None):
        out = [(w, m) for w, m in self.sent if tag is None or m[0] == tag]
        self.sent = [(w, m) for w, m in self.sent if not (tag is None or m[0] == tag)]
        return out


class FakeStore:
    capacity = 1 << 20

    def __init__(self):
        self.deleted = []

    def delete(self, oid):
        self.deleted.append(oid)

    def create(self, oid, size):
        if size > self.capacity:
            raise RuntimeError("full")
        return f"/shm/{oid:x}"

    def seal(self, oid):
        pass

    def get_path(self, oid):
        return f"/shm/{oid:x}"

    def __contains__(self, oid):
        return True


ids = IdGenerator(D)


def spec(fn="f", deps=(), num_returns=1, resources=None, max_retries=3, retry=False, **kw):
    return TaskSpec(
        ids.next_task_id(),
        fn,
        fn,
        b"",
        tuple(deps),
        (),
        num_returns,
        {"CPU": 1.0} if resources is None else resources,
        max_retries,
        retry,
        D,
        None,
        **kw,
    )


def make_node(cpus=2.0):
    n = Node(FakeIO(), FakeStore(), {"CPU": cpus, "GPU": 1.0}, "stest")
    n.register_function("f", b"blob")
    n.register_function("g", b"blob")
    return n


@pytest.fixture
def node():
    io = FakeIO()
    n = Node(io, FakeStore(), {"CPU": 2.0, "GPU": 1.0}, "stest")
    n.register_function("f", b"blob")
    n.register_function("g", b"blob")
    yield n
    n.validate()


def boot(node, count=2):
    wids = []
    for _ in range(count):
        w = node.start_worker()
        node.on_hello(w.wid, 1000 + w.wid)
        wids.append(w.wid)
    node.io.take()
    return wids


def done(node, wid, s, value=b"v", duration=0.01, retryable=False):
    res = [
        (return_id(s.task_id, i), INLINE, pickle.dumps(value), 3, [])
        for i in range(1, s.num_returns + 1)
    ]
    node.on_done(wid, s.task_id, res, duration, retryable)


def test_submit_leases_idle_worker_and_sends_function_once(node):
    (w1, w2) = boot(node)
    a, b = spec(), spec()
    node.submit(D, a)
    node.submit(D, b)
    sent = node.io.take()
    assert [m[0] for _, m in sent].count("fn") == 2  # each worker learns f once
    execs = [(w, m[1].task_id) for w, m in sent if m[0] == "exec"]
    assert {w for w, _ in execs} == {w1, w2}
    assert node.resources.availability()["CPU"] == 0
    node.validate()
    done(node, execs[0][0], a)
    done(node, execs[1][0], b)
    assert node.resources.availability()["CPU"] == 2
    assert all(node.workers[w].state == IDLE for w in (w1, w2))
    assert node.objects.get(return_id(a.task_id, 1)).state == READY


def test_short_tasks_pipeline_long_tasks_do_not():
    node = make_node(cpus=1.0)
    (wid,) = boot(node, 1)
    node.fn_time["f"] = 0.0001  # tiny: pipelined deeply
    node.fn_time["g"] = 0.5  # long: one at a time
    for _ in range(10):
        node.submit(D, spec("f"))
    assert len(node.io.take("exec")) == 10
    for _ in range(3):
        node.submit(D, spec("g"))
    node.validate()
    w = node.workers[wid]
    # g tasks do not queue behind the pipelined f tasks
    assert len(w.assigned) == 10
    assert not node.io.take("exec")


def test_no_pipelining_while_more_leases_fit(node):
    (wid,) = boot(node, 1)  # 2 CPUs, one worker up: the second task waits for a new worker
    node.fn_time["f"] = 0.0001
    node.submit(D, spec("f"))
    node.submit(D, spec("f"))
    assert len(node.io.take("exec")) == 1
    assert len(node.io.spawned) == 2
    node.on_hello(node.io.spawned[-1], 4242)
    assert len(node.io.take("exec")) == 1


def test_dependencies_wait_then_run_and_errors_propagate(node):
    (w1, _w2) = boot(node)
    a = spec()
    node.submit(D, a)
    b = spec(deps=[return_id(a.task_id, 1)])
    node.submit(D, b)
    execs = node.io.take("exec")
    assert [m[1].task_id for _, m in execs] == [a.task_id]
    done(node, execs[0][0], a)
    execs = node.io.take("exec")
    assert [m[1].task_id for _, m in execs] == [b.task_id]
    kind, payload = execs[0][1][2][0]
    assert kind == INLINE
    assert pickle.loads(payload) == b"v"
    # an error result is inherited by a dependent without running it
    c = spec()
    node.submit(D, c)
    ((cw, cm),) = node.io.take("exec")
    err = pickle.dumps(exc.RtmlError("boom"))
    node.on_done(cw, c.task_id, [(return_id(c.task_id, 1), ERR, err, 0, [])], 0.01, False)
    d = spec(deps=[return_id(c.task_id, 1)])
    node.submit(D, d)
    assert node.objects.get(return_id(d.task_id, 1)).kind == ERR
    assert not node.io.take("exec")


def test_refcount_frees_results_and_pending_drop(node):
    (w1, _) = boot(node)
    a = spec()
    node.submit(D, a)
    oid = return_id(a.task_id, 1)
    node.ref_updates(D, [], [oid])  # driver dropped the ref while the task runs
    assert node.objects.get(oid).dropped
    ((w, _m),) = node.io.take("exec")
    done(node, w, a)
    assert oid not in node.objects


def test_contained_refs_are_pinned_by_their_container(node):
    inner = node.put(D, ids.next_task_id(), INLINE, b"x", 1, [])
    outer = node.put(D, ids.next_task_id(), INLINE, b"y", 1, [inner])
    node.ref_updates(D, [], [inner])
    assert inner in node.objects
    node.ref_updates(D, [], [outer])
    assert inner not in node.objects
    assert outer not in node.objects


def test_worker_death_retries_then_fails(node):
    (w1, w2) = boot(node)
    a = spec(max_retries=1)
    node.submit(D, a)
    ((w, _m),) = node.io.take("exec")
    node.on_worker_exit(w, "exit code 1")
    assert node.stats["retried"] == 1
    ((w, _m),) = node.io.take("exec")
    node.on_worker_exit(w, "killed by signal 9")
    e = node.objects.get(return_id(a.task_id, 1))
    assert e.kind == ERR
    err = pickle.loads(e.payload)
    assert isinstance(err, exc.WorkerCrashedError)
    assert "signal 9" in str(err)
    assert node.io.spawned[-1] > w2  # replacements were started


def test_blocked_worker_lends_cpu_and_revokes_pipelined_tasks():
    node = make_node(cpus=1.0)
    (w1,) = boot(node, 1)
    node.fn_time["f"] = 0.0001
    first, second = spec(), spec()
    node.submit(D, first)
    node.submit(D, second)
    node.io.take()
    w = node.workers[w1]
    assert len(w.assigned) == 2
    waiter = node.add_get(w1, [put_id(ids.next_task_id())], lambda _w: None)
    assert waiter is None  # unknown ids are answered at once (as lost)
    child = spec()
    node.submit(w1, child)
    waiter = node.add_get(w1, [return_id(child.task_id, 1)], lambda _w: None)
    assert waiter is not None
    revoked = node.io.take("revoke")
    # everything pipelined behind the blocked task is asked back (the child too), and goes
    # back to the queue once the worker says it had not started it
    assert revoked
    assert revoked[0][1][1] == [second.task_id, child.task_id]
    node.on_revoked(w1, [second.task_id, child.task_id])
    assert list(w.assigned) == [node.tasks[first.task_id]]
    assert node.n_blocked == 1
    # the CPU was lent back, so another worker is being started for the queued work
    assert len(node.io.spawned) >= 2
    node.remove_waiter(w1, waiter, [return_id(child.task_id, 1)])
    assert node.n_blocked == 0
    node.validate()


def test_infeasible_request_fails_fast(node):
    boot(node, 1)
    s = spec(resources={"CPU": 1.0, "sensor": 1.0})
    node.submit(D, s)
    err = pickle.loads(node.objects.get(return_id(s.task_id, 1)).payload)
    assert isinstance(err, exc.TaskUnschedulableError)
    assert "sensor" in str(err)


def test_gpu_ids_assigned_per_lease(node):
    boot(node, 2)
    s = spec(resources={"CPU": 1.0, "GPU": 1.0})
    node.submit(D, s)
    ((_w, m),) = node.io.take("exec")
    assert m[3] == [0]


def test_cancel_queued_and_running(node):
    (w1,) = boot(node, 1)
    node.fn_time["f"] = 1.0
    running, queued = spec(), spec()
    node.submit(D, running)
    node.submit(D, queued)
    node.cancel(return_id(queued.task_id, 1), force=False, recursive=True)
    assert isinstance(
        pickle.loads(node.objects.get(return_id(queued.task_id, 1)).payload), exc.TaskCancelledError
    )
    node.cancel(return_id(running.task_id, 1), force=False, recursive=True)
    assert node.io.interrupted == [w1]
    node.cancel(return_id(running.task_id, 1), force=True, recursive=True)
    assert node.io.killed == [w1]
    node.on_worker_exit(w1, "killed by signal 9")
    assert isinstance(
        pickle.loads(node.objects.get(return_id(running.task_id, 1)).payload),
        exc.TaskCancelledError,
    )


def test_streaming_items_and_drop(node):
    (w1,) = boot(node, 1)
    s = spec(num_returns=STREAMING)
    node.submit(D, s)
    node.io.take()
    node.on_item(s.task_id, 0, INLINE, b"a", 1, [])
    assert node.stream_next(s.task_id, 0) == (True, return_id(s.task_id, 1))
    assert node.stream_next(s.task_id, 1) == (False, None)
    woke = []
    node.stream_wait(s.task_id, lambda: woke.append(1))
    node.on_item(s.task_id, 1, INLINE, b"b", 1, [])
    assert woke == [1]
    node.stream_drop(s.task_id, 1)  # consumer took item 0 only
    assert return_id(s.task_id, 2) not in node.objects
    node.on_done(w1, s.task_id, [], 0.01, False)
    assert s.task_id not in node.streams


def test_lease_released_to_other_shapes(node):
    (w1,) = boot(node, 1)
    a = spec()
    node.submit(D, a)
    g = spec(resources={"CPU": 1.0, "GPU": 1.0})
    node.submit(D, g)
    ((w, _m),) = node.io.take("exec")
    assert node.workers[w].state == LEASED
    done(node, w, a)
    # The GPU task does not go to the worker that ran a CPU task (CUDA must start with the
    # right devices): a fresh worker is started for it.
    assert node.io.take("exec") == []
    fresh = node.io.spawned[-1]
    assert fresh != w
    node.on_hello(fresh, 2000)
    execs = node.io.take("exec")
    assert [(wid, m[1].task_id) for wid, m in execs] == [(fresh, g.task_id)]


def test_done_clears_a_get_the_task_abandoned():
    # A task cancelled while blocked in get ends without withdrawing the get: the worker
    # must not stay marked blocked (its CPU lent out) after "done".
    node = make_node(cpus=1.0)
    (w1,) = boot(node, 1)
    parent = spec()
    node.submit(D, parent)
    child = spec()
    node.submit(w1, child)
    node.io.take()
    w = node.workers[w1]
    waiter = node.add_get(w1, [return_id(child.task_id, 1)], lambda _w: None)
    w.requests[7] = (waiter, [return_id(child.task_id, 1)])
    assert node.n_blocked == 1
    done(node, w1, parent)
    assert node.n_blocked == 0
    assert not w.requests
    assert w.blocked == 0
    node.validate()


def test_a_revoked_task_the_worker_already_ran_is_not_run_twice():
    """The stall check asks a busy worker for its queued tasks back; one it has already run
    (its result still on the way) stays its own, finishes once, and unpins its inputs once."""
    node = make_node(cpus=1.0)
    (w1,) = boot(node, 1)
    node.fn_time["f"] = 0.0001
    dep = node.put(D, ids.next_task_id(), 0, pickle.dumps(1), 10, [])
    first, second, third = spec(), spec(deps=(dep,)), spec()
    for s in (first, second, third):
        node.submit(D, s)
    node.io.take()
    w = node.workers[w1]
    assert len(w.assigned) == 3
    refs_before = node.objects.get(dep).refs
    node._revoke_pipelined(w)
    node._revoke_pipelined(w)  # one revoke at a time per worker
    assert len(node.io.take("revoke")) == 1
    node.on_done(w1, first.task_id, [(return_id(first.task_id, 1), 0, b"x", 1, ())], 0.0, False)
    node.on_done(w1, second.task_id, [(return_id(second.task_id, 1), 0, b"y", 1, ())], 0.0, False)
    node.on_revoked(w1, [third.task_id])  # "second" had already run
    assert node.objects.get(dep).refs == refs_before - 1  # released once, by its one run
    assert second.task_id not in node.tasks
    assert third.task_id in node.tasks
    node.validate()
