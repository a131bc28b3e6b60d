"""Local mode (``rtml.init(local_mode=True)``): Ray-style programs run in the driver process.

Every test gets a fresh local runtime. Besides results and errors, the tests check what local
mode is for: tasks run in the driver's process and thread, in submission order, with the
driver's globals, and a tracer (what a debugger uses) sees them run.
"""

from __future__ import annotations

import asyncio
import gc
import io
import os
import sys
import threading
import weakref

import pytest

import rtml
from rtml import exceptions as exc
from rtml._runtime import _context

calls: list = []  # tasks append here: the driver sees it because tasks share its globals
live_counters: weakref.WeakSet = weakref.WeakSet()  # Counter instances not yet collected


@pytest.fixture(autouse=True)
def local():
    calls.clear()
    rtml.init(
        local_mode=True,
        num_cpus=4,
        resources={"sensor": 1},
        runtime_env={"env_vars": {"RTML_LOCAL_TEST": "on"}},
    )
    yield rtml
    rtml.shutdown()
    calls.clear()


def _store_size() -> int:
    return len(_context.get_client()._store)


# ---------------------------------------------------------------------------------- functions
@rtml.remote
def double(x):
    calls.append(("double", x))
    return 2 * x


@rtml.remote
def where():
    return os.getpid(), threading.get_ident(), rtml.get_runtime_context().get_task_id()


@rtml.remote
def add(*xs):
    return sum(xs)


@rtml.remote
def mutate(items):
    items.append("task")
    return len(items)


@rtml.remote
def identity(x):
    return x


@rtml.remote
def fan_out(n):
    refs = [double.remote(i) for i in range(n)]
    ready, _ = rtml.wait(refs, num_returns=n)
    return sum(rtml.get(ready))


@rtml.remote
def depth(n):
    return 0 if n == 0 else 1 + rtml.get(depth.remote(n - 1))


@rtml.remote
def fail(msg):
    raise KeyError(msg)


@rtml.remote(num_returns=3)
def three():
    return "a", "b", "c"


@rtml.remote(num_returns=2)
def wrong_count():
    return 1, 2, 3


@rtml.remote(num_returns=0)
def side_effect(x):
    calls.append(("side", x))


@rtml.remote
def count_up(n):
    yield from range(n)


@rtml.remote(num_returns="streaming")
def fails_after(n):
    yield from range(n)
    raise RuntimeError("stream broke")


@rtml.remote
async def async_task(x):
    await asyncio.sleep(0)
    return x + 1


class Flaky(Exception):
    pass


@rtml.remote(max_retries=3, retry_exceptions=[Flaky])
def flaky(fail_times):
    calls.append("attempt")
    if calls.count("attempt") <= fail_times:
        raise Flaky(f"attempt {calls.count('attempt')}")
    return calls.count("attempt")


@rtml.remote(max_retries=3, retry_exceptions=[KeyError])
def wrong_kind():
    calls.append("attempt")
    raise ValueError("not retried")


@rtml.remote
def in_task_view():
    return (
        rtml.available_resources().get("CPU"),
        os.environ.get("RTML_LOCAL_TEST"),
        os.environ.get("ONLY_HERE"),
        rtml.get_gpu_ids(),
        rtml.is_initialized(),
    )


# ---------------------------------------------------------------------------------- tasks
def test_tasks_run_in_the_driver_in_submission_order():
    refs = [double.remote(i) for i in range(5)]
    assert calls == [("double", i) for i in range(5)]  # ran when submitted, in order
    assert rtml.get(refs) == [0, 2, 4, 6, 8]
    pid, thread, task_id = rtml.get(where.remote())
    assert pid == os.getpid()
    assert thread == threading.get_ident()
    assert task_id is not None
    assert rtml.get_runtime_context().get_task_id() is None


def test_a_tracer_sees_the_task_run_in_process():
    seen = []

    def tracer(frame, event, arg):
        if event == "call" and frame.f_code is double.__wrapped__.__code__:
            seen.append(frame.f_locals["x"])
        return None

    sys.settrace(tracer)
    try:
        ref = double.remote(21)
    finally:
        sys.settrace(None)
    assert seen == [21]  # a breakpoint on double's first line would have stopped here
    assert rtml.get(ref) == 42


def test_arguments_and_results_are_copies():
    items = ["driver"]
    assert rtml.get(mutate.remote(items)) == 2
    assert items == ["driver"]  # the task changed its own copy
    ref = rtml.put(items)
    value = rtml.get(ref)
    value.append("changed")
    assert rtml.get(ref) == ["driver"]


def test_refs_as_arguments_top_level_resolved_nested_passed_through():
    a, b = double.remote(1), rtml.put(10)
    assert rtml.get(add.remote(a, b, 100)) == 112
    inner = rtml.get(identity.remote([a]))
    assert isinstance(inner[0], rtml.ObjectRef)
    assert rtml.get(inner[0]) == 2
    assert rtml.get(identity.remote(x=b)) == 10


def test_nested_tasks_get_and_wait_inside_tasks():
    assert rtml.get(fan_out.remote(4)) == 12
    assert rtml.get(depth.remote(30)) == 30  # deeper than any worker count


def test_num_returns_generators_and_streaming():
    assert rtml.get(three.remote()) == ["a", "b", "c"]
    assert side_effect.remote(7) is None
    assert calls == [("side", 7)]
    gen = count_up.remote(4)
    assert isinstance(gen, rtml.ObjectRefGenerator)
    assert [rtml.get(r) for r in gen] == [0, 1, 2, 3]
    refs = list(fails_after.remote(2))
    assert len(refs) == 3
    assert rtml.get(refs[:2]) == [0, 1]
    with pytest.raises(RuntimeError, match="stream broke"):
        rtml.get(refs[2])
    with pytest.raises(ValueError, match="num_returns=2 but returned 3"):
        rtml.get(wrong_count.remote()[0])


def test_wait_and_cancel():
    refs = [double.remote(i) for i in range(3)]
    ready, not_ready = rtml.wait(refs, num_returns=2, timeout=0)
    assert ready == refs[:2]
    assert not_ready == refs[2:]
    rtml.cancel(refs[0])  # finished already: nothing to cancel
    assert rtml.get(refs[0], timeout=0) == 0


def test_async_functions_and_awaiting_refs():
    assert rtml.get(async_task.remote(1)) == 2

    async def driver():
        return await double.remote(5), await asyncio.gather(double.remote(1), double.remote(2))

    assert asyncio.run(driver()) == (10, [2, 4])
    assert double.remote(4).future().result(timeout=10) == 8


# ---------------------------------------------------------------------------------- errors
def test_task_error_is_the_runtimes_task_error():
    ref = fail.remote("missing")
    with pytest.raises(KeyError) as info:
        rtml.get(ref)
    err = info.value
    assert isinstance(err, exc.TaskError)
    assert isinstance(err, exc.RayTaskError)
    assert err.pid == os.getpid()
    assert "fail" in err.function_name
    assert "raise KeyError(msg)" in err.traceback_str
    assert "_local.py" not in err.traceback_str  # the traceback starts at the user's code
    # A task given a failed ref fails with the same error, without running.
    with pytest.raises(KeyError, match="missing"):
        rtml.get(double.remote(ref))
    assert calls == []


def test_retry_exceptions_and_max_retries():
    assert rtml.get(flaky.remote(2)) == 3
    calls.clear()
    with pytest.raises(Flaky, match="attempt 4"):
        rtml.get(flaky.remote(10))  # 1 try + 3 retries
    assert calls.count("attempt") == 4
    calls.clear()
    with pytest.raises(ValueError):
        rtml.get(wrong_kind.remote())
    assert calls.count("attempt") == 1


def test_submission_errors_raise_at_once():
    with pytest.raises(TypeError, match="could not serialize"):
        identity.remote(threading.Lock())
    with pytest.raises(TypeError, match="cannot be called directly"):
        double(1)
    with pytest.raises(exc.TaskUnschedulableError, match="could never run"):
        rtml.get(double.options(num_gpus=1).remote(1))


# ---------------------------------------------------------------------------------- runtime
def test_resources_context_and_environment():
    assert rtml.cluster_resources()["CPU"] == 4
    assert rtml.cluster_resources()["sensor"] == 1
    assert rtml.available_resources()["CPU"] == 4
    cpus, env, only, gpus, initialized = rtml.get(
        in_task_view.options(runtime_env={"env_vars": {"ONLY_HERE": "1"}}).remote()
    )
    assert cpus == 3
    assert env == "on"
    assert only == "1"
    assert gpus == []
    assert initialized
    assert "ONLY_HERE" not in os.environ
    assert "RTML_LOCAL_TEST" not in os.environ
    assert rtml.get_gpu_ids() == []
    assert rtml.get_runtime_context().get_actor_id() is None
    assert len(rtml.nodes()) == 1


def test_objects_are_freed_with_their_last_ref():
    probe = rtml.put(0)
    base = _store_size()
    ref = double.remote(1)
    holder = rtml.put([ref])  # a stored value keeps the ref's object alive
    assert _store_size() == base + 2
    del ref
    rtml.get(holder)
    assert _store_size() == base + 2
    del holder
    rtml.wait([probe])  # any API call takes the releases into account
    assert _store_size() == base
    gen = count_up.remote(3)
    first = next(gen)
    del gen  # the values not yet handed out go with the generator
    gc.collect()
    rtml.wait([first])
    assert rtml.get(first) == 0
    assert _store_size() == base + 1


def test_numpy_arrays_round_trip_read_only():
    np = pytest.importorskip("numpy")
    big = np.arange(100_000, dtype=np.float64)
    out = rtml.get(identity.remote(big))
    assert np.array_equal(out, big)
    assert not out.flags.writeable
    big[0] = -1  # the stored value is a copy
    assert rtml.get(rtml.put(big))[0] == -1
    assert out[0] == 0


# ---------------------------------------------------------------------------------- actors
@rtml.remote
class Counter:
    def __init__(self, start=0):
        self.value = start
        self.pid = os.getpid()
        live_counters.add(self)

    def inc(self, by=1):
        self.value += by
        calls.append(("inc", by))
        return self.value

    def where(self):
        return self.pid, rtml.get_runtime_context().get_actor_id()

    @rtml.method(num_returns=2)
    def pair(self):
        return self.value, -self.value

    def boom(self):
        raise ZeroDivisionError("actor method failed")

    def stop(self):
        rtml.actor.exit_actor()

    def spawn(self, x):
        return rtml.get(double.remote(x)) + self.value

    def is_original(self):
        return type(self) is Counter.__wrapped__  # not an unpickled copy of the class


@rtml.remote
class Broken:
    def __init__(self):
        raise OSError("constructor failed")

    def ping(self):
        return "pong"


@rtml.remote
class AsyncActor:
    def __init__(self):
        self.events = []

    async def add(self, x):
        await asyncio.sleep(0)
        self.events.append(x)
        return list(self.events)

    async def via_ref(self, ref_list):
        return await ref_list[0] + 1

    async def stream(self, n):
        for i in range(n):
            yield i

    async def relay(self, other, origin):  # origin calls back into this actor
        return await other.call_back.remote(origin)

    async def call_back(self, origin):
        return await origin.add.remote("back")


@rtml.remote
def use_counter(counter, by):
    return rtml.get(counter.inc.remote(by))


def test_actor_calls_run_at_once_in_order_in_process():
    c = Counter.remote(10)
    refs = [c.inc.remote(i) for i in range(1, 4)]
    assert calls == [("inc", 1), ("inc", 2), ("inc", 3)]
    assert rtml.get(refs) == [11, 13, 16]
    pid, actor_id = rtml.get(c.where.remote())
    assert pid == os.getpid()
    assert actor_id == c._actor_id.hex()
    assert rtml.get(c.pair.remote()) == [16, -16]
    assert rtml.get(use_counter.remote(c, 4)) == 20  # a handle passed to a task
    assert rtml.get(c.spawn.remote(1)) == 22  # an actor method submitting a task
    with pytest.raises(ZeroDivisionError):
        rtml.get(c.boom.remote())
    assert rtml.get(c.inc.remote()) == 21  # a failed call does not kill the actor


def test_actor_instances_are_the_users_class():
    c = Counter.remote()
    assert rtml.get(c.is_original.remote())


def test_named_actors_get_actor_get_if_exists_and_kill():
    a = Counter.options(name="counter").remote(1)
    assert rtml.get(rtml.get_actor("counter").inc.remote()) == 2
    same = Counter.options(name="counter", get_if_exists=True).remote(100)
    assert rtml.get(same.inc.remote()) == 3
    with pytest.raises(ValueError, match="already exists"):
        Counter.options(name="counter").remote()
    rtml.kill(a)
    with pytest.raises(exc.ActorDiedError, match="killed"):
        rtml.get(a.inc.remote())
    with pytest.raises(ValueError, match="no live actor"):
        rtml.get_actor("counter")
    Counter.options(name="counter").remote()  # the name is free again


def test_constructor_error_makes_every_call_raise():
    b = Broken.remote()
    for _ in range(2):
        with pytest.raises(exc.ActorDiedError) as info:
            rtml.get(b.ping.remote())
        assert isinstance(info.value.cause, exc.TaskError)
        assert "constructor failed" in str(info.value)


def test_exit_actor_terminate_and_restart():
    c = Counter.remote()
    with pytest.raises(exc.ActorDiedError, match="exit_actor"):  # its own call, as in Ray
        rtml.get(c.stop.remote())
    with pytest.raises(exc.ActorDiedError, match="exit_actor"):
        rtml.get(c.inc.remote())
    d = Counter.remote()
    rtml.get(d.__rtml_terminate__.remote())
    with pytest.raises(exc.ActorDiedError, match="terminated"):
        rtml.get(d.inc.remote())
    r = Counter.options(max_restarts=1).remote(5)
    assert rtml.get(r.inc.remote()) == 6
    rtml.kill(r, no_restart=False)  # restarted: the constructor runs again
    assert rtml.get(r.inc.remote()) == 6
    rtml.kill(r, no_restart=False)  # no restarts left
    with pytest.raises(exc.ActorDiedError):
        rtml.get(r.inc.remote())


def test_actor_ends_with_its_last_handle():
    gc.collect()
    before = len(live_counters)
    c = Counter.remote()
    copy = rtml.get(rtml.put([c]))[0]  # another handle to the same actor
    assert len(live_counters) == before + 1
    del c
    rtml.get(copy.inc.remote())
    assert len(live_counters) == before + 1
    del copy
    gc.collect()
    rtml.put(None)  # any API call takes the releases into account
    assert len(live_counters) == before


def test_async_actor_methods_run_to_completion():
    a = AsyncActor.remote()
    assert rtml.get(a.add.remote(1)) == [1]
    assert rtml.get(a.add.remote(2)) == [1, 2]
    assert rtml.get(a.via_ref.remote([double.remote(3)])) == 7
    assert [rtml.get(r) for r in a.stream.remote(3)] == [0, 1, 2]

    async def from_async_driver():  # an event loop already runs in this thread
        return await a.add.remote(3)

    assert asyncio.run(from_async_driver()) == [1, 2, 3]
    b = AsyncActor.remote()
    assert rtml.get(a.relay.remote(b, a)) == [1, 2, 3, "back"]  # A -> B -> A: no deadlock


def test_util_pool_and_queue_work_in_local_mode():
    from rtml.util import ActorPool
    from rtml.util.queue import Empty, Queue

    pool = ActorPool([Counter.remote(), Counter.remote()])
    assert list(pool.map(lambda actor, v: actor.inc.remote(v), [1, 2, 3, 4])) == [1, 2, 4, 6]
    q = Queue()
    q.put(1)
    q.put(2)
    assert [q.get(), q.get()] == [1, 2]
    with pytest.raises(Empty):
        q.get(timeout=0)


# ---------------------------------------------------------------------------------- lifecycle
def test_progress_in_local_mode():
    buf = io.StringIO()
    refs = [double.remote(i) for i in range(5)]
    assert rtml.util.progress_get(refs, file=buf, desc="local") == [0, 2, 4, 6, 8]
    assert buf.getvalue().splitlines()[-1].startswith("local: 5/5 (100%)")
    assert sorted(rtml.util.progress(refs, values=True, disable=True)) == [0, 2, 4, 6, 8]


def test_readme_program_runs_in_local_mode():
    @rtml.remote
    def simulate(seed, steps):
        return sum((seed * 7919 + i) % 13 for i in range(steps))

    @rtml.remote(num_cpus=0.5, resources={"sensor": 1})
    def fuse(*frames):
        return max(frames)

    refs = [simulate.remote(s, 100) for s in range(20)]
    ready, _pending = rtml.wait(refs, num_returns=10, timeout=1.0)
    expected = max(sum((s * 7919 + i) % 13 for i in range(100)) for s in range(10))
    assert rtml.get(fuse.remote(*ready), timeout=5) == expected


def test_shutdown_clears_and_modes_switch():
    Counter.options(name="kept").remote()
    with pytest.raises(RuntimeError, match="twice"):
        rtml.init(local_mode=True)
    rtml.shutdown()
    assert not rtml.is_initialized()
    rtml.init(local_mode=True)
    with pytest.raises(ValueError):
        rtml.get_actor("kept")  # everything went with the first session
    rtml.shutdown()
    rtml.init(num_cpus=1)  # the embedded runtime: tasks run in a worker again
    try:
        pid, _thread, _task = rtml.get(where.remote(), timeout=30)
        assert pid != os.getpid()
    finally:
        rtml.shutdown()
    rtml.init(local_mode=True)  # the fixture's shutdown ends this one
    assert rtml.get(where.remote())[0] == os.getpid()


def test_local_mode_cannot_join_a_cluster():
    rtml.shutdown()
    with pytest.raises(ValueError, match="local_mode"):
        rtml.init(address="127.0.0.1:1", local_mode=True)
