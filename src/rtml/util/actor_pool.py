"""``ActorPool``: spread calls over a fixed set of actors, one call per actor at a time.

::

    submit(fn, v) ──idle actor?──▶ fn(actor, v) ──▶ ref remembered with its submission index
                  └─no──────────▶ pending list, submitted when an actor comes back
    get_next()            ──▶ results in submission order
    get_next_unordered()  ──▶ whichever result is ready first

Same semantics as ``ray.util.ActorPool``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import rtml

__all__ = ["ActorPool"]


def _key(future: Any) -> Any:
    return tuple(future) if isinstance(future, list) else future


def _refs(future: Any) -> list[Any]:
    return list(future) if isinstance(future, list) else [future]


class ActorPool:
    """A pool of actors that run submitted work one call per actor at a time.

    Args:
        actors: the actor handles to use.

    Example::

        pool = ActorPool([Worker.remote(), Worker.remote()])
        results = list(pool.map(lambda a, v: a.double.remote(v), [1, 2, 3, 4]))
    """

    def __init__(self, actors: Iterable[Any]) -> None:
        self._idle_actors: list[Any] = list(actors)
        self._future_to_actor: dict[Any, tuple[int, Any]] = {}
        self._index_to_future: dict[int, Any] = {}
        self._next_task_index = 0
        self._next_return_index = 0
        self._pending_submits: list[tuple[Callable[[Any, Any], Any], Any]] = []

    def map(self, fn: Callable[[Any, Any], Any], values: Iterable[Any]) -> Iterator[Any]:
        """Apply ``fn(actor, value)`` to every value; yields the results in order.

        Results of earlier submissions that were never collected are dropped first.
        """
        self._drain()
        for v in values:
            self.submit(fn, v)

        def results() -> Iterator[Any]:
            while self.has_next():
                yield self.get_next()

        return results()

    def map_unordered(self, fn: Callable[[Any, Any], Any], values: Iterable[Any]) -> Iterator[Any]:
        """Like ``map``, but yields each result as soon as it is ready."""
        self._drain()
        for v in values:
            self.submit(fn, v)

        def results() -> Iterator[Any]:
            while self.has_next():
                yield self.get_next_unordered()

        return results()

    def _drain(self) -> None:
        while self.has_next():
            try:
                self.get_next(timeout=0, ignore_if_timedout=True)
            except TimeoutError:
                pass

    def submit(self, fn: Callable[[Any, Any], Any], value: Any) -> None:
        """Run ``fn(actor, value)`` on an idle actor (``fn`` must return ObjectRef(s)); if none
        is idle, it runs when one becomes free."""
        if not self._idle_actors:
            self._pending_submits.append((fn, value))
            return
        actor = self._idle_actors.pop()
        future = fn(actor, value)
        self._future_to_actor[_key(future)] = (self._next_task_index, actor)
        self._index_to_future[self._next_task_index] = future
        self._next_task_index += 1

    def has_next(self) -> bool:
        """True if some submitted result has not been collected yet."""
        return bool(self._future_to_actor)

    def get_next(self, timeout: float | None = None, ignore_if_timedout: bool = False) -> Any:
        """The next result in submission order.

        Raises:
            StopIteration: nothing is pending.
            TimeoutError: not ready within ``timeout`` seconds (with ``ignore_if_timedout``
                the result is dropped and its actor returned to the pool first).
            ValueError: get_next_unordered() was used since the last map/submit round.
        """
        if not self.has_next():
            raise StopIteration("no more results to get: submit work first")
        if self._next_return_index >= self._next_task_index:
            raise ValueError(
                "get_next() cannot be used after get_next_unordered() in the "
                "same round of submissions; keep to one of them"
            )
        future = self._index_to_future[self._next_return_index]
        timed_out = False
        if timeout is not None:
            refs = _refs(future)
            ready, _ = rtml.wait(refs, num_returns=len(refs), timeout=timeout)
            if len(ready) < len(refs):
                if not ignore_if_timedout:
                    raise TimeoutError(f"timed out after {timeout} s waiting for the next result")
                timed_out = True
        del self._index_to_future[self._next_return_index]
        self._next_return_index += 1
        _, actor = self._future_to_actor.pop(_key(future))
        self._return_actor(actor)
        if timed_out:
            raise TimeoutError(
                f"timed out after {timeout} s waiting for the next result; that result was dropped"
            )
        return rtml.get(future)

    def get_next_unordered(
        self, timeout: float | None = None, ignore_if_timedout: bool = False
    ) -> Any:
        """Whichever pending result is ready first.

        Raises:
            StopIteration: nothing is pending.
            TimeoutError: none ready within ``timeout`` seconds (with ``ignore_if_timedout``,
                None is returned instead, as in Ray).
        """
        if not self.has_next():
            raise StopIteration("no more results to get: submit work first")
        candidates = {}
        for key in self._future_to_actor:
            for r in key if isinstance(key, tuple) else (key,):
                candidates[r] = key
        ready, _ = rtml.wait(list(candidates), num_returns=1, timeout=timeout)
        if not ready:
            if ignore_if_timedout:
                return None
            raise TimeoutError(f"timed out after {timeout} s waiting for any result")
        key = candidates[ready[0]]
        index, actor = self._future_to_actor.pop(key)
        self._return_actor(actor)
        future = self._index_to_future.pop(index)
        self._next_return_index = max(self._next_return_index, index + 1)
        return rtml.get(future)

    def _return_actor(self, actor: Any) -> None:
        self._idle_actors.append(actor)
        if self._pending_submits:
            self.submit(*self._pending_submits.pop(0))

    def has_free(self) -> bool:
        """True if an actor is idle and no submission is waiting for one."""
        return bool(self._idle_actors) and not self._pending_submits

    def pop_idle(self) -> Any:
        """Remove and return an idle actor (None if none is free)."""
        return self._idle_actors.pop() if self.has_free() else None

    def push(self, actor: Any) -> None:
        """Add an actor to the pool (it may run pending submissions at once).

        Raises:
            ValueError: the actor is already in the pool.
        """
        busy = [a for _, a in self._future_to_actor.values()]
        if actor in self._idle_actors or actor in busy:
            raise ValueError("the actor already belongs to this ActorPool")
        self._return_actor(actor)
