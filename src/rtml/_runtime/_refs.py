"""ObjectRef, ObjectRefGenerator and the per-process reference counter.

::

    ObjectRef created ──▶ append id to a creation log ────┐   (no lock, no dict: one C call)
    ObjectRef dropped ──▶ append id to the drop log ──────┤
                                                          ▼ drained under the counter's lock by
                    take_updates() / held() ──▶ live counts per id ──▶ (acquired, released)
                                                                           │
                                  sent to the node in order with the process's next message

A process counts its own ObjectRef instances per id and tells the node only when it starts or
stops holding an id at all. Refs created by ``submit``/``put`` are counted by the node when it
records the task or object, so they start held without a message. The node pins the objects a
pending task or a stored value mentions, so a ref in flight is never freed before its receiver
has announced that it holds it (acquisitions are always sent before releases).

Creating and dropping a ref only appends its id to a log (``list.append`` is atomic), so the
hot paths take no lock; the logs are folded into the counts when updates are taken. Only the
net change between two takes is reported: an id acquired and dropped again in between (the
refs inside a value that was fetched and thrown away) costs the node nothing. See
docs/decisions/0006-refs-and-wait.md.
"""

from __future__ import annotations

import threading
from typing import Any

from rtml import exceptions as exc
from rtml._protocol import _ids
from rtml._serialization._serializer import record_contained

_NONE: list[int] = []  # an empty batch (never appended to)

# Fold the logs into the counts once this many drops are waiting, so a process that churns
# refs without ever talking to its node keeps bounded memory.
_COMPACT_AT = 1 << 16


def _take(log: list[int]) -> list[int]:
    """Remove and return what ``log`` holds now; appends racing with this stay in it."""
    n = len(log)
    if n == 1:
        return [log.pop()]  # the common case of one put or submit, and cheaper than a slice
    if not n:
        return _NONE
    out = log[:n]
    del log[:n]
    return out


class RefCounter:
    """Counts live ObjectRef instances per object id in this process.

    ``incr``/``decr`` only log; the logs are folded into ``_live`` (and the transitions into
    ``pending``) under the lock by ``_drain``. The drop log is taken before the two creation
    logs, so every drop taken has its creation taken with it or earlier: counts never go below
    zero, and an id reaches zero only when its last ref is gone.
    """

    def __init__(self) -> None:
        self._live: dict[int, int] = {}
        # Transitions not yet taken: +1 the node must hear the id is held, -1 that it is not.
        self.pending: dict[int, int] = {}
        # The logs (appended to without the lock; ``dirty`` reads them the same way):
        self.created_log: list[int] = []  # from a pickle or a copy: the node must hear of these
        self.registered_log: list[int] = []  # by submit/put: the node counts these itself
        self.dropped_log: list[int] = []
        # Reentrant: a garbage collection pass can run ObjectRef.__del__ (and so compact())
        # while this thread is already draining.
        self._lock = threading.RLock()
        self._draining = False
        self.enabled = True

    # ------------------------------------------------------------------ hot paths (no lock)
    def incr(self, object_id: int, registered: bool) -> None:
        (self.registered_log if registered else self.created_log).append(object_id)

    def decr(self, object_id: int) -> None:
        self.dropped_log.append(object_id)
        if len(self.dropped_log) > _COMPACT_AT:
            self.compact()

    # ------------------------------------------------------------------ draining
    @property
    def dirty(self) -> bool:
        """True if ``take_updates`` may have something to report (registrations alone never
        do, so a submit that follows a submit skips the drain)."""
        return bool(self.dropped_log or self.created_log or self.pending)

    # The checks other modules make before taking updates ("anything to send?").
    acquired = dirty
    released = dirty

    def compact(self) -> None:
        """Fold the logs into the counts now (bounded memory between takes)."""
        if self._draining:  # called from a __del__ run by a collection inside _drain
            return
        with self._lock:
            self._drain()

    def _drain(self) -> None:
        """Fold the logs into ``_live`` and the net transitions into ``pending`` (lock held)."""
        if self._draining:
            return
        self._draining = True
        try:
            # Take what each log holds now (appends racing with this stay for the next drain);
            # the drop log first: see the class docstring.
            decs = _take(self.dropped_log)
            regs = _take(self.registered_log)
            incs = _take(self.created_log)
            if incs:
                # Every ref created since the last drain was dropped again (a fetched value
                # thrown away): the counts end where they started, so there is nothing to do.
                # Sorting ints hashes nothing and is cheap here (creations and drops are runs).
                if not regs and len(incs) == len(decs) and sorted(incs) == sorted(decs):
                    return
                self._fold(incs, regs, decs)
                return
            # Only refs made by submit/put (held by the node already) and drops: the common
            # case of a loop of put() or f.remote() calls, kept lean.
            live = self._live
            pending = self.pending
            enabled = self.enabled
            if regs:
                if pending and enabled:
                    for o in regs:  # registered while its release waits: the node holds it
                        if pending.get(o) == -1:  # (if it is gone again, the drop below
                            del pending[o]  # puts the release back)
                for o in regs:
                    live[o] = live.get(o, 0) + 1
            for o in decs:
                c = live.get(o)
                if c is None:
                    continue  # a ref from before reset() (an earlier runtime)
                if c > 1:
                    live[o] = c - 1
                    continue
                del live[o]
                if enabled and pending.pop(o, 0) != 1:  # an acquisition not yet sent cancels
                    pending[o] = -1
        finally:
            self._draining = False

    def _fold(self, incs: list[int], regs: list[int], decs: list[int]) -> None:
        """``_drain``'s general case: some refs came from pickles or copies."""
        live = self._live
        pending = self.pending
        enabled = self.enabled
        fresh: dict[int, None] = {}  # ids this process did not hold before this batch
        for o in incs:
            c = live.get(o, 0)
            live[o] = c + 1
            if not c:
                fresh[o] = None
        for o in regs:  # the node counts these for us already
            live[o] = live.get(o, 0) + 1
            if enabled:
                fresh.pop(o, None)
                if pending.get(o) == -1:  # as in _drain
                    del pending[o]
        gone: list[int] = []
        for o in decs:  # after every creation, so an id reaches zero only at its last drop
            n = live.get(o)
            if n is None:
                continue  # a ref from before reset() (an earlier runtime)
            if n > 1:
                live[o] = n - 1
            else:
                del live[o]
                gone.append(o)
        if not enabled:
            return
        for o in gone:
            if o in fresh:  # acquired and dropped within the batch: the node never knew
                del fresh[o]
            elif pending.pop(o, 0) != 1:  # an acquisition not yet sent cancels out
                pending[o] = -1
        for o in fresh:
            if pending.pop(o, 0) != -1:  # a release not yet sent cancels out
                pending[o] = 1

    def take_updates(self) -> tuple[list[int], list[int]]:
        """Return and clear (acquired, released), acquisitions first by contract."""
        with self._lock:
            self._drain()
            pending = self.pending
            if not pending:
                return [], []
            acq: list[int] = []
            rel: list[int] = []
            for o, d in pending.items():
                (acq if d > 0 else rel).append(o)
            pending.clear()
            return acq, rel

    def held(self) -> dict[int, int]:
        with self._lock:
            self._drain()
            return dict(self._live)

    @property
    def _counts(self) -> dict[int, int]:
        """The live count per id, exact as of now (local mode reads it)."""
        with self._lock:
            self._drain()
            return self._live

    def reset(self) -> None:
        with self._lock:
            self._live.clear()
            self.pending.clear()
            self.created_log.clear()
            self.dropped_log.clear()
            self.registered_log.clear()


counter = RefCounter()
# The hot paths below append straight to the global counter's logs (reset() clears them in
# place, so these stay valid).
_log_created = counter.created_log.append
_log_registered = counter.registered_log.append
_log_dropped = counter.dropped_log.append
_dropped = counter.dropped_log


class ObjectRef:
    """A future for a value in the object store, returned by ``f.remote()`` and ``put``.

    Pass it to other tasks (as an argument it is replaced by its value), ``get`` it, ``wait``
    on it, ``await`` it in asyncio code, or turn it into a ``concurrent.futures.Future``.
    """

    __slots__ = ("__weakref__", "_id")

    def __init__(self, object_id: int | bytes, _registered: bool = True) -> None:
        if object_id.__class__ is not int:  # ObjectRef(bytes.fromhex(ref.hex())), as in Ray
            object_id, _registered = _id_of(object_id), False
        self._id = object_id
        if _registered:  # counter.incr, inlined: this runs once per ref
            _log_registered(object_id)
        else:
            _log_created(object_id)

    def __del__(self) -> None:
        try:
            _log_dropped(self._id)  # counter.decr, inlined
            if len(_dropped) > _COMPACT_AT:
                counter.compact()
        except Exception:  # interpreter shutdown
            pass

    def __reduce__(self) -> Any:
        record_contained(self._id)
        return (ObjectRef, (self._id, False))

    @property
    def id(self) -> int:
        return self._id

    def hex(self) -> str:
        """The id as fixed-width hex: ``ObjectRef(bytes.fromhex(ref.hex()))`` is ``ref``."""
        return format(self._id, _HEX_FORMAT)

    def binary(self) -> bytes:
        return self._id.to_bytes(ID_BYTES, "big")

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

    def as_future(self) -> Any:
        """An ``asyncio.Future`` of the value, on the running event loop (as Ray's):
        ``add_done_callback`` and ``await`` work on it."""
        import asyncio

        return asyncio.wrap_future(self.future())

    def __copy__(self) -> ObjectRef:
        return ObjectRef(self._id, _registered=False)

    def __deepcopy__(self, memo: Any) -> ObjectRef:
        return ObjectRef(self._id, _registered=False)


ID_BYTES = 16  # every object id fits (see _protocol._ids): hex() and binary() are fixed-width
_HEX_FORMAT = f"0{2 * ID_BYTES}x"


def _id_of(value: Any) -> int:
    if isinstance(value, (bytes, bytearray)) and 0 < len(value) <= ID_BYTES:
        return int.from_bytes(value, "big")
    if isinstance(value, int) and not isinstance(value, bool):
        return int(value)
    raise TypeError(
        f"ObjectRef() takes an object id (the bytes of ref.binary() or "
        f"bytes.fromhex(ref.hex())), got {type(value).__name__} {value!r:.60}"
    )


class DynamicObjectRefGenerator:
    """The value of a task run with ``num_returns="dynamic"``: the refs of the values its
    generator yielded, in order (iterate it, or take ``len()``), as Ray's."""

    __slots__ = ("_refs",)

    def __init__(self, refs: list[ObjectRef]) -> None:
        self._refs = list(refs)

    def __iter__(self) -> Any:
        return iter(self._refs)

    def __len__(self) -> int:
        return len(self._refs)

    def __repr__(self) -> str:
        return f"DynamicObjectRefGenerator({len(self._refs)} refs)"


def _rebuild_ref(object_id: int) -> ObjectRef:
    """Kept so pickles written by earlier versions (``__reduce__`` named it) still load."""
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
        self._ahead: ObjectRef | None = None  # fetched by _ready() (wait), not yet yielded

    def __iter__(self) -> ObjectRefGenerator:
        return self

    def __next__(self) -> ObjectRef:
        return self._next_sync(None)

    def _next_sync(self, timeout_s: float | None = None) -> ObjectRef:
        """Next ref, waiting at most ``timeout_s`` (raises GetTimeoutError on timeout)."""
        ahead = self._ahead
        if ahead is not None:
            self._ahead = None
            return ahead
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
        # (StopIteration cannot cross into an asyncio future: the end comes back as None)
        ref = await loop.run_in_executor(None, self._next_or_none)
        if ref is None:
            raise StopAsyncIteration
        return ref

    def _next_or_none(self) -> ObjectRef | None:
        try:
            return self._next_sync(None)
        except StopIteration:
            return None

    def _ready(self, timeout_s: float) -> bool:
        """Whether the next ref exists or the task has ended, waiting at most ``timeout_s``
        (what ``wait`` asks of a generator, as in Ray)."""
        if self._ahead is not None or self._done:
            return True
        try:
            self._ahead = self._next_sync(timeout_s)
        except StopIteration:
            pass
        except exc.GetTimeoutError:
            return False
        return True

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
