"""The remote functions and actor classes of Ray's microbenchmark (ray/_private/ray_perf.py).

They live in their own module so that workers unpickle them by reference (importing this
module, which imports only rtml) rather than by value.
"""

from __future__ import annotations

import asyncio
from typing import Any

import rtml


def big_array(nbytes: int) -> Any:
    """``np.zeros(nbytes // 8, dtype=np.int64)`` as Ray uses; a zeroed bytearray if numpy is
    missing (numpy is not an rtml dependency). Both pickle out of band at protocol 5."""
    try:
        import numpy as np
    except ImportError:
        return bytearray(nbytes)
    return np.zeros(nbytes // 8, dtype=np.int64)


@rtml.remote
def small_value() -> bytes:
    return b"ok"


@rtml.remote
def small_value_batch(n: int) -> int:
    submitted = [small_value.remote() for _ in range(n)]
    rtml.get(submitted)
    return 0


@rtml.remote
def create_object_containing_ref() -> list:
    obj_refs = []
    for _ in range(10000):
        obj_refs.append(rtml.put(1))
    return obj_refs


@rtml.remote
def do_put_small() -> None:
    for _ in range(100):
        rtml.put(0)


@rtml.remote
def do_put() -> None:
    for _ in range(10):
        rtml.put(big_array(10 * 1024 * 1024 * 8))


@rtml.remote
def actor_work(actors: list, n: int) -> None:
    """Ray's ``work`` / ``async_actor_work``: one client task calling n actors round-robin."""
    k = len(actors)
    rtml.get([actors[i % k].small_value.remote() for i in range(n)])


# Plain classes; the microbenchmark turns them into actor classes with rtml.remote(...) only
# when it runs an actor row, so importing this module never needs actor support.
class Actor:
    def small_value(self) -> bytes:
        return b"ok"

    def small_value_arg(self, x: Any) -> bytes:
        return b"ok"

    def small_value_batch(self, n: int) -> None:
        rtml.get([small_value.remote() for _ in range(n)])


class AsyncActor:
    async def small_value(self) -> bytes:
        return b"ok"

    async def small_value_with_arg(self, x: Any) -> bytes:
        return b"ok"

    async def small_value_batch(self, n: int) -> None:
        # Ray passes the refs to asyncio.wait directly; wrapping them in futures first is the
        # same thing and works on every Python version.
        await asyncio.wait([asyncio.ensure_future(small_value.remote()) for _ in range(n)])


class Client:
    def __init__(self, servers: Any) -> None:
        if not isinstance(servers, list):
            servers = [servers]
        self.servers = servers

    def small_value_batch(self, n: int) -> None:
        results = []
        for s in self.servers:
            results.extend([s.small_value.remote() for _ in range(n)])
        rtml.get(results)

    def small_value_batch_arg(self, n: int) -> None:
        x = rtml.put(0)
        results = []
        for s in self.servers:
            results.extend([s.small_value_arg.remote(x) for _ in range(n)])
        rtml.get(results)


class Probe:
    def ping(self) -> int:
        return 1
