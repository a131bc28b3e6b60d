"""rtml.util.ActorPool and rtml.util.queue.Queue on real actors."""

from __future__ import annotations

import asyncio
import queue as stdqueue

import pytest

import rtml
from rtml.util import ActorPool
from rtml.util.queue import Empty, Full, Queue

T = 20


@pytest.fixture(scope="module", autouse=True)
def _runtime(shared_runtime):
    return


@rtml.remote
class Doubler:
    def double(self, x: int) -> int:
        return 2 * x

    def wait_for(self, ref_holder: list) -> str:
        return rtml.get(ref_holder[0], timeout=T)


@rtml.remote
class Gate:
    def __init__(self) -> None:
        self.event = asyncio.Event()

    async def wait(self) -> str:
        await self.event.wait()
        return "opened"

    async def open(self) -> None:
        self.event.set()


def test_actor_pool():
    actors = [Doubler.remote(), Doubler.remote()]
    pool = ActorPool(actors)
    assert list(pool.map(lambda a, v: a.double.remote(v), range(6))) == [0, 2, 4, 6, 8, 10]
    assert sorted(pool.map_unordered(lambda a, v: a.double.remote(v), range(5))) == [0, 2, 4, 6, 8]
    assert not pool.has_next()
    assert pool.has_free()
    for v in (1, 2, 3):  # three submissions, two actors: one waits for a free actor
        pool.submit(lambda a, v: a.double.remote(v), v)
    assert not pool.has_free()
    assert [pool.get_next(timeout=T) for _ in range(3)] == [2, 4, 6]
    with pytest.raises(StopIteration):
        pool.get_next()
    pool.submit(lambda a, v: a.double.remote(v), 10)
    assert pool.get_next_unordered(timeout=T) == 20
    idle = pool.pop_idle()
    assert idle is not None
    assert pool.pop_idle() is not None
    assert pool.pop_idle() is None
    pool.push(idle)
    with pytest.raises(ValueError, match="already"):
        pool.push(idle)

    gate = Gate.remote()
    pool.submit(lambda a, v: a.wait_for.remote([v]), gate.wait.remote())
    with pytest.raises(TimeoutError):
        pool.get_next(timeout=0.05)
    with pytest.raises(TimeoutError):
        pool.get_next_unordered(timeout=0.05)
    gate.open.remote()
    assert pool.get_next(timeout=T) == "opened"


def test_queue_basics():
    q = Queue(maxsize=2)
    assert q.empty()
    assert not q.full()
    assert q.qsize() == 0
    q.put(1)
    q.put_nowait(2)
    assert q.full()
    assert len(q) == 2
    with pytest.raises(Full):
        q.put_nowait(3)
    with pytest.raises(Full):
        q.put(3, timeout=0.05)
    assert [q.get(), q.get_nowait()] == [1, 2]
    with pytest.raises(Empty):
        q.get_nowait()
    with pytest.raises(Empty):
        q.get(timeout=0.05)
    with pytest.raises(stdqueue.Empty):  # the stdlib classes catch them too
        q.get(block=False)
    assert issubclass(Full, stdqueue.Full)
    with pytest.raises(ValueError):
        q.get(timeout=-1)
    q.put_nowait_batch([5, 6])
    with pytest.raises(Full):
        q.put_nowait_batch([7])
    assert q.get_nowait_batch(2) == [5, 6]
    q.shutdown()


def test_queue_shared_with_tasks_and_async():
    q = Queue()

    @rtml.remote
    def producer(queue, n):
        for i in range(n):
            queue.put(i)
        return n

    @rtml.remote
    def consumer(queue, n):
        return [queue.get(timeout=T) for _ in range(n)]

    c = consumer.remote(q, 5)  # blocks in get until the producer puts
    assert rtml.get(producer.remote(q, 5), timeout=T) == 5
    assert rtml.get(c, timeout=T) == [0, 1, 2, 3, 4]

    async def main():
        await q.put_async("a")
        await q.put_async("b", block=False)
        return [await q.get_async(), await q.get_async(timeout=T)]

    assert asyncio.run(main()) == ["a", "b"]
    q.shutdown(force=True)
