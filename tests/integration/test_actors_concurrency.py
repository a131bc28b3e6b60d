"""Threaded and async actors, and asyncio/futures integration for callers of actors."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading

import pytest

import rtml
from rtml import exceptions as exc

T = 20


@pytest.fixture(scope="module", autouse=True)
def _runtime(shared_runtime):
    return


@rtml.remote
def square(x: int) -> int:
    return x * x


@rtml.remote
class Threaded:
    def __init__(self, parties: int) -> None:
        self.barrier = threading.Barrier(parties, timeout=10)

    def meet(self, i: int) -> int:
        self.barrier.wait()  # returns only if `parties` calls run at the same time
        return i

    def nested(self, x: int) -> int:
        return rtml.get(square.remote(x), timeout=T)


@rtml.remote
class AsyncActor:
    def __init__(self) -> None:
        self.running = 0
        self.peak = 0
        self.arrived = 0
        self.events: dict[int, asyncio.Event] = {}

    async def rendezvous(self, group: int) -> int:
        """Waits until ``group`` calls are inside at once (fails after 10 s otherwise)."""
        self.running += 1
        self.peak = max(self.peak, self.running)
        self.arrived += 1
        gen = (self.arrived - 1) // group
        ev = self.events.setdefault(gen, asyncio.Event())
        if self.arrived % group == 0:
            ev.set()
        try:
            await asyncio.wait_for(ev.wait(), 10)
        finally:
            self.running -= 1
        return gen

    async def get_peak(self) -> int:
        return self.peak

    async def await_task(self, x: int) -> int:
        return await square.remote(x)

    async def await_actor(self, other, x: int) -> int:
        a, b = await asyncio.gather(other.await_task.remote(x), square.remote(x + 1))
        return a + b

    def sync_method(self) -> str:
        return "sync in an async actor"

    async def stream(self, n: int):
        for i in range(n):
            await asyncio.sleep(0)
            yield i

    async def leave(self):
        rtml.actor.exit_actor()


def test_threaded_actor_runs_calls_concurrently():
    a = Threaded.options(max_concurrency=2).remote(2)
    assert sorted(rtml.get([a.meet.remote(i) for i in range(2)], timeout=T)) == [0, 1]
    # Nested gets from several threads at once are answered to the right thread.
    refs = [a.nested.remote(i) for i in range(8)]
    assert rtml.get(refs, timeout=T) == [i * i for i in range(8)]


def test_async_actor_limits_concurrency_to_max_concurrency():
    a = AsyncActor.options(max_concurrency=2).remote()
    assert sorted(rtml.get([a.rendezvous.remote(2) for _ in range(4)], timeout=T)) == [0, 0, 1, 1]
    assert rtml.get(a.get_peak.remote(), timeout=T) == 2


def test_async_actor_default_concurrency_is_large():
    a = AsyncActor.remote()
    assert rtml.get([a.rendezvous.remote(50) for _ in range(50)], timeout=T) == [0] * 50


def test_async_actor_awaits_refs_of_tasks_and_actors():
    a, b = AsyncActor.remote(), AsyncActor.remote()
    assert rtml.get(a.await_task.remote(7), timeout=T) == 49
    assert rtml.get(a.await_actor.remote(b, 3), timeout=T) == 9 + 16
    assert rtml.get(a.sync_method.remote(), timeout=T) == "sync in an async actor"
    assert [rtml.get(r, timeout=T) for r in a.stream.remote(3)] == [0, 1, 2]


def test_async_actor_exit_actor():
    a = AsyncActor.remote()
    with pytest.raises(exc.ActorDiedError, match="exit_actor"):  # its own call, as in Ray
        rtml.get(a.leave.remote(), timeout=T)
    with pytest.raises(exc.ActorDiedError, match="exit_actor"):
        rtml.get(a.get_peak.remote(), timeout=T)


def test_async_actor_cancel_running_call():
    a = AsyncActor.remote()
    ref = a.rendezvous.remote(2)  # waits for a partner that never comes
    rtml.cancel(ref)
    with pytest.raises(exc.TaskCancelledError):
        rtml.get(ref, timeout=T)
    assert rtml.get(a.sync_method.remote(), timeout=T) == "sync in an async actor"


def test_callers_can_await_actor_results():
    a = AsyncActor.remote()
    t = Threaded.remote(1)

    async def main():
        one = await a.await_task.remote(3)
        many = await asyncio.gather(*[t.nested.remote(i) for i in range(5)])
        tasks = [asyncio.ensure_future(t.nested.remote(i)) for i in range(3)]
        done, pending = await asyncio.wait(tasks, timeout=T)
        return one, many, sorted(x.result() for x in done), pending

    one, many, waited, pending = asyncio.run(main())
    assert one == 9
    assert many == [0, 1, 4, 9, 16]
    assert waited == [0, 1, 4]
    assert not pending


def test_ref_future_of_actor_result():
    t = Threaded.remote(1)
    futs = [t.nested.remote(i).future() for i in range(4)]
    done, _ = concurrent.futures.wait(futs, timeout=T)
    assert len(done) == 4
    assert [f.result(timeout=T) for f in futs] == [0, 1, 4, 9]


def test_async_actor_takes_calls_arriving_while_its_loop_lingers_or_after():
    """After its last call the loop polls for the next one for a while (decision 0010): calls
    that arrive during that time, at its end, or after it must all run, alone or in bursts."""
    import time

    a = AsyncActor.remote()
    expected = []
    got = []
    for i, gap in enumerate([0, 0.00005, 0.0001, 0.00015, 0.0002, 0.00025, 0.0005, 0.002] * 5):
        time.sleep(gap)
        got.append(rtml.get(a.await_task.remote(i), timeout=T))
        expected.append(i * i)
        if i % 7 == 0:
            burst = [a.await_task.remote(j) for j in range(i, i + 5)]
            got.extend(rtml.get(burst, timeout=T))
            expected.extend(j * j for j in range(i, i + 5))
    assert got == expected
