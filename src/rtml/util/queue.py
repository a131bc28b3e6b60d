"""``Queue``: a first-in first-out queue shared by tasks and actors (as ``ray.util.queue``).

::

    Queue (a small picklable object) ──handle──▶ queue actor (async): asyncio.Queue(maxsize)
        put(item, block, timeout)  ──▶ actor.put / put_nowait  (Full when it stays full)
        get(block, timeout)        ──▶ actor.get / get_nowait  (Empty when it stays empty)

Pass the Queue itself to tasks and actors: they all talk to the same queue actor. Blocking
calls wait inside the actor without occupying it, so one put can wake a blocked get.
"""

from __future__ import annotations

import asyncio
import queue as _stdqueue
from typing import Any

import rtml

__all__ = ["Empty", "Full", "Queue"]


class Empty(_stdqueue.Empty):
    """``get`` found the queue empty (or it stayed empty until the timeout)."""


class Full(_stdqueue.Full):
    """``put`` found the queue full (or it stayed full until the timeout)."""


class _QueueActor:
    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self.queue: asyncio.Queue = asyncio.Queue(maxsize)

    def qsize(self) -> int:
        return self.queue.qsize()

    def empty(self) -> bool:
        return self.queue.empty()

    def full(self) -> bool:
        return self.queue.full()

    async def put(self, item: Any, timeout: float | None = None) -> None:
        try:
            await asyncio.wait_for(self.queue.put(item), timeout)
        except asyncio.TimeoutError:
            raise Full(f"the queue stayed full for {timeout} s") from None

    async def get(self, timeout: float | None = None) -> Any:
        try:
            return await asyncio.wait_for(self.queue.get(), timeout)
        except asyncio.TimeoutError:
            raise Empty(f"the queue stayed empty for {timeout} s") from None

    def put_nowait(self, item: Any) -> None:
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            raise Full(f"the queue is full ({self.maxsize} items)") from None

    def put_nowait_batch(self, items: list[Any]) -> None:
        if self.maxsize > 0 and len(items) + self.qsize() > self.maxsize:
            raise Full(
                f"cannot add {len(items)} items to a queue holding {self.qsize()} of "
                f"at most {self.maxsize}"
            )
        for item in items:
            self.queue.put_nowait(item)

    def get_nowait(self) -> Any:
        try:
            return self.queue.get_nowait()
        except asyncio.QueueEmpty:
            raise Empty("the queue is empty") from None

    def get_nowait_batch(self, num_items: int) -> list[Any]:
        if num_items > self.qsize():
            raise Empty(f"cannot get {num_items} items from a queue holding {self.qsize()}")
        return [self.queue.get_nowait() for _ in range(num_items)]


_actor_class: Any = None


def _queue_actor() -> Any:
    global _actor_class
    if _actor_class is None:
        _actor_class = rtml.remote(_QueueActor)
    return _actor_class


def _check_timeout(timeout: float | None) -> None:
    if timeout is not None and (not isinstance(timeout, (int, float)) or timeout < 0):
        raise ValueError(f"timeout must be a non-negative number or None, got {timeout!r}")


class Queue:
    """A FIFO queue backed by an actor; picklable, so tasks and actors can share it.

    Args:
        maxsize: the most items it holds (0: unbounded).
        actor_options: options for the queue's actor, e.g. ``{"name": "q"}``.
    """

    def __init__(self, maxsize: int = 0, actor_options: dict[str, Any] | None = None) -> None:
        if not isinstance(maxsize, int) or isinstance(maxsize, bool) or maxsize < 0:
            raise ValueError(f"maxsize must be a non-negative int, got {maxsize!r}")
        self.maxsize = maxsize
        self.actor: Any = _queue_actor().options(**(actor_options or {})).remote(maxsize)

    def __len__(self) -> int:
        return self.size()

    def size(self) -> int:
        """The number of items in the queue."""
        return rtml.get(self.actor.qsize.remote())

    def qsize(self) -> int:
        """The number of items in the queue."""
        return self.size()

    def empty(self) -> bool:
        return rtml.get(self.actor.empty.remote())

    def full(self) -> bool:
        return rtml.get(self.actor.full.remote())

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        """Add an item, waiting for room if ``block`` (at most ``timeout`` seconds).

        Raises:
            Full: no room (now, or within the timeout).
        """
        if not block:
            try:
                rtml.get(self.actor.put_nowait.remote(item))
            except Full as e:
                raise Full(str(e.args[0]) if e.args else "the queue is full") from None
            return
        _check_timeout(timeout)
        try:
            rtml.get(self.actor.put.remote(item, timeout))
        except Full:
            raise Full(f"the queue stayed full for {timeout} s") from None

    async def put_async(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        """``put`` for asyncio code."""
        if not block:
            try:
                await self.actor.put_nowait.remote(item)
            except Full:
                raise Full("the queue is full") from None
            return
        _check_timeout(timeout)
        try:
            await self.actor.put.remote(item, timeout)
        except Full:
            raise Full(f"the queue stayed full for {timeout} s") from None

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        """Remove and return the oldest item, waiting for one if ``block`` (at most
        ``timeout`` seconds).

        Raises:
            Empty: no item (now, or within the timeout).
        """
        if not block:
            try:
                return rtml.get(self.actor.get_nowait.remote())
            except Empty:
                raise Empty("the queue is empty") from None
        _check_timeout(timeout)
        try:
            return rtml.get(self.actor.get.remote(timeout))
        except Empty:
            raise Empty(f"the queue stayed empty for {timeout} s") from None

    async def get_async(self, block: bool = True, timeout: float | None = None) -> Any:
        """``get`` for asyncio code."""
        if not block:
            try:
                return await self.actor.get_nowait.remote()
            except Empty:
                raise Empty("the queue is empty") from None
        _check_timeout(timeout)
        try:
            return await self.actor.get.remote(timeout)
        except Empty:
            raise Empty(f"the queue stayed empty for {timeout} s") from None

    def put_nowait(self, item: Any) -> None:
        """``put(item, block=False)``."""
        self.put(item, block=False)

    def put_nowait_batch(self, items: list[Any]) -> None:
        """Add all the items at once, or none (Full) if they do not all fit."""
        if not isinstance(items, (list, tuple)):
            raise TypeError(f"put_nowait_batch() takes a list, got {type(items).__name__}")
        try:
            rtml.get(self.actor.put_nowait_batch.remote(list(items)))
        except Full as e:
            raise Full(str(e.args[0]) if e.args else "the queue is full") from None

    def get_nowait(self) -> Any:
        """``get(block=False)``."""
        return self.get(block=False)

    def get_nowait_batch(self, num_items: int) -> list[Any]:
        """Remove ``num_items`` items at once, or none (Empty) if there are fewer."""
        if not isinstance(num_items, int) or isinstance(num_items, bool) or num_items < 0:
            raise ValueError(f"num_items must be a non-negative int, got {num_items!r}")
        try:
            return rtml.get(self.actor.get_nowait_batch.remote(num_items))
        except Empty as e:
            raise Empty(str(e.args[0]) if e.args else "the queue is empty") from None

    def shutdown(self, force: bool = False, grace_period_s: float = 5) -> None:
        """Stop the queue's actor (gracefully unless ``force``; killed after the grace
        period). The queue cannot be used afterwards."""
        if self.actor is None:
            return
        if force:
            rtml.kill(self.actor, no_restart=True)
        else:
            done = self.actor.__rtml_terminate__.remote()
            ready, _ = rtml.wait([done], timeout=grace_period_s)
            if not ready:
                rtml.kill(self.actor, no_restart=True)
        self.actor = None
