"""ObjectRef, ObjectRefGenerator and the per-process reference counter.

::

    ObjectRef created ──▶ RefCounter.incr ── 0→1 (deserialized ref) ──▶ "acquired" ─┐
    ObjectRef dropped ──▶ RefCounter.decr ── 1→0 ─────────────────────▶ "released" ─┤
                                                                                  ▼
                                  sent to the node in order with the process's next message

A process counts its own ObjectRef instances per id and tells the node only when it starts or
stops holding an id at all. Refs created by ``submit``/``put`` are counted by the node when it
records the task or object, so they start held without a message. The node pins the objects a
pending task or a stored value mentions, so a ref in flight is never freed before its receiver
has announced that it holds it (acquisitions are always sent before releases).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from rtml._runtime import _ids
from rtml._serialization._serializer import record_contained


class RefCounter:
    """Counts live ObjectRef instances per object id in this process."""

    def __init__(self) -> None:
        self._counts: dict[int, int] = {}
        # Reentrant: a garbage collection pass can run ObjectRef.__del__ while this thread is
        # already inside incr/decr.
        self._lock = threading.RLock()
        self.acquired: list[int] = []
        self.released: list[int] = []
        self.on_release: Callable[[], None] | None = None
        self.enabled = True

    def incr(self, object_id: int, registered: bool) -> None:
        with self._lock:
            c = self._counts.get(object_id, 0)
            self._counts[object_id] = c + 1
            if c == 0 and not registered and self.enabled:
                self.acquired.append(object_id)

    def decr(self, object_id: int) -> None:
        with self._lock:
            c = self._counts.get(object_id, 0) - 1
            if c > 0:
                self._counts[object_id] = c
                return
            self._counts.pop(object_id, None)
            if c == 0 and self.enabled:
                self.released.append(object_id)
                hook = self.on_release
        if c == 0 and self.enabled and hook is not None:
            hook()

    def take_updates(self) -> tuple[list[int], list[int]]:
        """Return and clear (acquired, released), acquisitions first by contract."""
        with self._lock:
            acq, rel = self.acquired, self.released
            if not acq and not rel:
                return acq, rel
            self.acquired, self.released = [], []
            return acq, rel

    def held(self) -> dict[int, int]:
        with self._lock:
            return dict(self._counts)

    def reset(self) -> None:
        with self._lock:
            self._counts.clear()
            self.acquired.clear()
            self.released.clear()


counter = RefCounter()


class ObjectRef:
    """A future for a value in the object store, returned by ``f.remote()`` and ``put``.

    Pass it to other tasks (as an argument it is replaced by its value), ``get`` it, ``wait``
    on it, ``await`` it in asyncio code, or turn it into a ``concurrent.futures.Future``.
    """

    __slots__ = ("__weakref__", "_id")

    def __init__(self, object_id: int, _registered: bool = True) -> None:
        self._id = object_id
        counter.incr(object_id, _registered)

    def __del__(self) -> None:
        try:
            counter.decr(self._id)
        except Exception:  # interpreter shutdown
            pass

    def __reduce__(self) -> Any:
        record_contained(self._id)
        return (_rebuild_ref, (self._id,))

    @property
    def id(self) -> int:
        return self._id

    def hex(self) -> str:
        return _ids.to_hex(self._id)

    def binary(self) -> bytes:
        return self._id.to_bytes((self._id.bit_length() + 7) // 8 or 1, "big")

    def task_id(self) -> str:
        return _ids.to_hex(_ids.task_of(self._id))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ObjectRef) and other._id == self._id

    def __hash__(self) -> int:
        return hash(self._id)

    def __repr__(self) -> str:
        return f"ObjectRef({self.hex()})"

    def __await__(self) -> Any:
        from rtml._runtime import _async

        return _async.await_ref(self).__await__()

    def future(self) -> Any:
        """A ``concurrent.futures.Future`` that completes with the value (or its error)."""
        from rtml._runtime import _async

        return _async.ref_future(self)

    def __copy__(self) -> ObjectRef:
        return ObjectRef(self._id, _registered=False)

    def __deepcopy__(self, memo: Any) -> ObjectRef:
        return ObjectRef(self._id, _registered=False)


def _rebuild_ref(object_id: int) -> ObjectRef:
    return ObjectRef(object_id, _registered=False)


class ObjectRefGenerator:
    """An iterable of refs for a streaming task; each ref is yielded as soon as it exists.

    Iterating blocks until the worker has produced the next value (or the task ended). If the
    task raised, the ref at that position holds the error, and iteration stops after it.
    """

    def __init__(self, task_id: int, client: Any) -> None:
        self._task_id = task_id
        self._client = client
        self._index = 0
        self._done = False

    def __iter__(self) -> ObjectRefGenerator:
        return self

    def __next__(self) -> ObjectRef:
        return self._next_sync(None)

    def _next_sync(self, timeout_s: float | None = None) -> ObjectRef:
        """Next ref, waiting at most ``timeout_s`` (raises GetTimeoutError on timeout)."""
        if self._done:
            raise StopIteration
        oid = self._client.stream_next(self._task_id, self._index, timeout_s)
        if oid is None:
            self._done = True
            raise StopIteration
        self._index += 1
        return ObjectRef(oid, _registered=True)

    def __aiter__(self) -> ObjectRefGenerator:
        return self

    async def __anext__(self) -> ObjectRef:
        import asyncio

        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(None, self._next_sync, None)
        except StopIteration:
            raise StopAsyncIteration from None

    def is_finished(self) -> bool:
        return self._done

    def __del__(self) -> None:
        try:
            if not self._done:
                self._client.stream_drop(self._task_id, self._index)
        except Exception:
            pass

    def __repr__(self) -> str:
        return f"ObjectRefGenerator(task={_ids.to_hex(self._task_id)})"

    def __reduce__(self) -> Any:
        raise TypeError(
            "an ObjectRefGenerator cannot be passed to another task or actor; iterate it "
            "where it was created and pass the ObjectRefs it yields instead"
        )
