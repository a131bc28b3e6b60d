"""Actors with real worker processes: creation, calls, ordering, handles, lifetime, names."""

from __future__ import annotations

import asyncio
import os

import psutil
import pytest

import rtml
from conftest import wait_for
from rtml import exceptions as exc

T = 20  # timeout of every blocking get


@pytest.fixture(scope="module", autouse=True)
def _runtime(shared_runtime):
    return


@rtml.remote
class Counter:
    def __init__(self, start: int = 0) -> None:
        self.value = start
        self.log: list = []

    def inc(self, by: int = 1) -> int:
        self.value += by
        return self.value

    def record(self, item, _dep=None) -> int:
        self.log.append(item)
        return len(self.log)

    def get_log(self) -> list:
        return list(self.log)

    def pid(self) -> int:
        return os.getpid()

    @rtml.method(num_returns=2)
    def pair(self):
        return self.value, -self.value

    def triple(self):
        return 1, 2, 3

    def count_to(self, n: int):
        yield from range(n)


@rtml.remote
class Gate:
    """An async actor whose ``wait()`` ref stays pending until ``open()``: a dependency whose
    readiness the test controls."""

    def __init__(self) -> None:
        self.event = asyncio.Event()

    async def wait(self):
        await self.event.wait()
        return "opened"

    async def open(self) -> None:
        self.event.set()


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_actor_keeps_state_between_calls():
    c = Counter.remote(10)
    assert rtml.get(c.inc.remote(), timeout=T) == 11
    assert rtml.get([c.inc.remote(2) for _ in range(3)], timeout=T) == [13, 15, 17]
    assert repr(c).startswith("Actor(Counter,")


def test_misuse_raises_errors_that_say_what_to_do():
    with pytest.raises(TypeError, match=r"Counter\.remote"):
        Counter()
    c = Counter.remote()
    with pytest.raises(TypeError, match=r"\.remote"):
        c.inc()
    with pytest.raises(AttributeError, match="nope"):
        c.nope  # noqa: B018
    with pytest.raises(ValueError, match="max_concurrency"):
        Counter.options(max_concurrency=0)
    with pytest.raises(ValueError, match="invalid option"):
        Counter.options(num_returns=2)


def test_options_and_num_returns():
    c = Counter.options(num_cpus=0, max_restarts=1).remote(5)
    a, b = c.pair.remote()
    assert rtml.get([a, b], timeout=T) == [5, -5]
    refs = c.triple.options(num_returns=3).remote()
    assert rtml.get(refs, timeout=T) == [1, 2, 3]


def test_generator_method_streams_its_values():
    c = Counter.remote()
    gen = c.count_to.remote(4)
    assert [rtml.get(r, timeout=T) for r in gen] == [0, 1, 2, 3]


def test_calls_run_in_order_even_when_an_argument_is_late():
    gate = Gate.remote()
    c = Counter.remote()
    late = gate.wait.remote()
    refs = [c.record.remote("first", late), c.record.remote("second"), c.record.remote("third")]

    @rtml.remote
    def other_caller(actor):
        actor.record.remote("other")
        return rtml.get(actor.get_log.remote(), timeout=T)

    # Another caller's calls are not held up by our first call's pending argument (ours,
    # behind it, are: a get_log() from here would wait too).
    assert rtml.get(other_caller.remote(c), timeout=T) == ["other"]
    gate.open.remote()
    assert rtml.get(refs, timeout=T) == [2, 3, 4]
    assert rtml.get(c.get_log.remote(), timeout=T) == ["other", "first", "second", "third"]


def test_handles_travel_to_tasks_and_other_actors():
    c = Counter.remote()

    @rtml.remote
    def bump(actor, n):
        return rtml.get([actor.inc.remote() for _ in range(n)], timeout=T)[-1]

    @rtml.remote
    class Forwarder:
        def __init__(self, target):
            self.target = target

        def bump(self, n):
            return rtml.get([self.target.inc.remote() for _ in range(n)], timeout=T)[-1]

        def target_pid(self):
            return rtml.get(self.target.pid.remote(), timeout=T)

    f = Forwarder.remote(c)
    rtml.get([bump.remote(c, 5), f.bump.remote(5)], timeout=T)
    assert rtml.get(c.inc.remote(0), timeout=T) == 10
    assert rtml.get(f.target_pid.remote(), timeout=T) == rtml.get(c.pid.remote(), timeout=T)
    # A handle inside a returned value works too.
    assert rtml.get(rtml.get(rtml.put([c]), timeout=T)[0].inc.remote(), timeout=T) == 11


def test_dropping_every_handle_terminates_the_actor():
    c = Counter.remote()
    pid = rtml.get(c.pid.remote(), timeout=T)
    ref = c.inc.remote()
    del c
    assert rtml.get(ref, timeout=T) == 1  # queued calls still run
    wait_for(lambda: _gone(pid), timeout=T, what="the actor's process to exit")


def test_handle_held_by_an_actor_keeps_the_target_alive():
    @rtml.remote
    class Holder:
        def __init__(self, target):
            self.target = target

        def drop(self):
            self.target = None

    c = Counter.remote()
    pid = rtml.get(c.pid.remote(), timeout=T)
    h = Holder.remote(c)
    assert rtml.get(h.__ray_ready__.remote(), timeout=T)  # the holder is constructed
    del c
    assert not _gone(pid)
    rtml.get(h.drop.remote(), timeout=T)
    wait_for(lambda: _gone(pid), timeout=T, what="the actor's process to exit")


def test_named_actor_lookup_duplicates_and_get_if_exists():
    a = Counter.options(name="counter-a").remote(1)
    assert rtml.get(rtml.get_actor("counter-a").inc.remote(), timeout=T) == 2
    with pytest.raises(ValueError, match="counter-a"):
        Counter.options(name="counter-a").remote()
    same = Counter.options(name="counter-a", get_if_exists=True).remote(100)
    assert same == a
    assert rtml.get(same.inc.remote(), timeout=T) == 3
    with pytest.raises(ValueError, match="no-such-actor"):
        rtml.get_actor("no-such-actor")
    Counter.options(name="counter-a", namespace="other").remote(50)
    assert rtml.get(rtml.get_actor("counter-a", namespace="other").inc.remote(), timeout=T) == 51
    rtml.kill(a)
    with pytest.raises(ValueError, match="counter-a"):
        rtml.get_actor("counter-a")
    rtml.kill(rtml.get_actor("counter-a", namespace="other"))


def test_named_and_detached_actors_outlive_their_handles():
    Counter.options(name="kept").remote(7)
    d = Counter.options(lifetime="detached").remote(8)
    pid = rtml.get(d.pid.remote(), timeout=T)
    d_again = rtml.get(rtml.put([d]), timeout=T)[0]
    del d
    assert rtml.get(rtml.get_actor("kept").inc.remote(), timeout=T) == 8
    assert rtml.get(d_again.inc.remote(), timeout=T) == 9
    del d_again
    assert not _gone(pid)
    rtml.kill(rtml.get_actor("kept"))


def test_actor_created_inside_a_task_and_returned():
    @rtml.remote
    def make():
        c = Counter.remote(40)
        rtml.get(c.inc.remote(), timeout=T)
        return c

    c = rtml.get(make.remote(), timeout=T)
    assert rtml.get(c.inc.remote(), timeout=T) == 42


def test_explicit_num_cpus_are_held_for_the_actor_lifetime():
    before = rtml.available_resources()["CPU"]
    free = Counter.remote()
    rtml.get(free.inc.remote(), timeout=T)
    assert rtml.available_resources()["CPU"] == before  # default actors hold no CPU
    holder = Counter.options(num_cpus=1).remote()
    rtml.get(holder.inc.remote(), timeout=T)
    assert rtml.available_resources()["CPU"] == before - 1
    rtml.kill(holder)
    wait_for(
        lambda: rtml.available_resources()["CPU"] == before, timeout=T, what="the CPU to come back"
    )
    with pytest.raises(exc.ActorDiedError, match="could never be placed"):
        rtml.get(Counter.options(num_cpus=64).remote().inc.remote(), timeout=T)


def test_runtime_env_and_runtime_context_inside_an_actor():
    @rtml.remote(runtime_env={"env_vars": {"RTML_ACTOR_TEST": "yes"}})
    class Env:
        def env(self):
            return os.environ.get("RTML_ACTOR_TEST")

        def actor_id(self):
            return rtml.get_runtime_context().get_actor_id()

    e = Env.remote()
    assert rtml.get([e.env.remote(), e.env.remote()], timeout=T) == ["yes", "yes"]
    assert rtml.get(e.actor_id.remote(), timeout=T) == e._actor_id.hex()


def test_cancel_a_queued_call_lets_the_next_ones_run():
    gate = Gate.remote()
    c = Counter.remote()
    stuck = c.record.remote("stuck", gate.wait.remote())
    after = c.record.remote("after")
    rtml.cancel(stuck)
    with pytest.raises(exc.TaskCancelledError):
        rtml.get(stuck, timeout=T)
    assert rtml.get(after, timeout=T) == 1
    assert rtml.get(c.get_log.remote(), timeout=T) == ["after"]
    gate.open.remote()
