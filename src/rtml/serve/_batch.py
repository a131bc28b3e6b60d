"""``@serve.batch``: calls that arrive together run as one call on a list.

::

    call(x) ──▶ queue of (x, future) ──▶ one flusher task per instance ──▶ fn(self, [x1..xn])
                                          (flushes at max_batch_size or  ──▶ results[i] sets
                                           batch_wait_timeout_s after the       future i
                                           batch's first item)

The decorated method is a coroutine function whatever the original (Ray Serve's contract:
callers ``await`` it); a sync original runs on the event loop, an async one is awaited.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Callable
from typing import Any

__all__ = ["batch"]


class _BatchQueue:
    def __init__(
        self, fn: Callable[..., Any], owner: Any, max_batch_size: int, timeout_s: float
    ) -> None:
        self.fn = fn
        self.owner = owner  # the instance the queue belongs to (None for a function)
        self.max_batch_size = max_batch_size
        self.timeout_s = timeout_s
        self.items: list[tuple[Any, asyncio.Future]] = []
        self.loop = asyncio.get_running_loop()
        self.wake = asyncio.Event()
        self.task = self.loop.create_task(self._flusher())

    def put(self, item: Any) -> asyncio.Future:
        fut = self.loop.create_future()
        self.items.append((item, fut))
        self.wake.set()
        return fut

    async def _flusher(self) -> None:
        while True:
            await self.wake.wait()
            self.wake.clear()
            if not self.items:
                continue
            deadline = self.loop.time() + self.timeout_s
            while len(self.items) < self.max_batch_size:
                left = deadline - self.loop.time()
                if left <= 0:
                    break
                try:
                    await asyncio.wait_for(self.wake.wait(), left)
                except asyncio.TimeoutError:
                    break
                self.wake.clear()
            chunk, self.items = (
                self.items[: self.max_batch_size],
                self.items[self.max_batch_size :],
            )
            if self.items:
                self.wake.set()
            await self._run(chunk)

    async def _run(self, chunk: list[tuple[Any, asyncio.Future]]) -> None:
        args = [item for item, _ in chunk]
        try:
            out = self.fn(self.owner, args) if self.owner is not None else self.fn(args)
            if inspect.isawaitable(out):
                out = await out
            out = list(out)
            if len(out) != len(chunk):
                raise TypeError(
                    f"@serve.batch function {self.fn.__name__} returned {len(out)} results "
                    f"for a batch of {len(chunk)}: return one result per input, in order"
                )
        except Exception as e:
            for _, fut in chunk:
                if not fut.done():
                    fut.set_exception(e)
            return
        for (_, fut), value in zip(chunk, out, strict=True):
            if not fut.done():
                fut.set_result(value)


def batch(
    _fn: Callable[..., Any] | None = None,
    *,
    max_batch_size: int = 10,
    batch_wait_timeout_s: float = 0.01,
) -> Any:
    """Run concurrent calls of a method (or function) as one call on a list of inputs.

    Args:
        max_batch_size: the most inputs in one call.
        batch_wait_timeout_s: how long a batch waits for more inputs after its first.

    Returns:
        A coroutine function taking one input; the original receives a list of inputs and
        returns a list of results, one per input in order (sync or async).

    Raises:
        ValueError: a bad ``max_batch_size`` or ``batch_wait_timeout_s``.
    """
    if (
        not isinstance(max_batch_size, int)
        or isinstance(max_batch_size, bool)
        or max_batch_size < 1
    ):
        raise ValueError(f"max_batch_size must be an int >= 1, got {max_batch_size!r}")
    if not isinstance(batch_wait_timeout_s, (int, float)) or batch_wait_timeout_s < 0:
        raise ValueError(
            f"batch_wait_timeout_s must be a number >= 0, got {batch_wait_timeout_s!r}"
        )

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        params = list(inspect.signature(fn).parameters)
        is_method = bool(params) and params[0] == "self"
        key = f"__serve_batch_{fn.__name__}_{id(fn)}"
        free: dict[int, _BatchQueue] = {}  # a plain function's queue, per event loop

        def queue_for(owner: Any) -> _BatchQueue:
            if owner is not None:
                # Keyed by the instance itself: a shallow copy made for a hot swap gets its own.
                q = owner.__dict__.get(key)
                if q is None or q.owner is not owner:
                    q = _BatchQueue(fn, owner, max_batch_size, batch_wait_timeout_s)
                    owner.__dict__[key] = q
                return q
            loop_id = id(asyncio.get_running_loop())
            q = free.get(loop_id)
            if q is None:
                q = free[loop_id] = _BatchQueue(fn, None, max_batch_size, batch_wait_timeout_s)
            return q

        if is_method:

            @functools.wraps(fn)
            async def method(self: Any, item: Any) -> Any:
                return await queue_for(self).put(item)

            method._serve_batch = True  # type: ignore[attr-defined]
            return method

        @functools.wraps(fn)
        async def function(item: Any) -> Any:
            return await queue_for(None).put(item)

        function._serve_batch = True  # type: ignore[attr-defined]
        return function

    return decorate(_fn) if _fn is not None else decorate
