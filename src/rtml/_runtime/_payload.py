"""Turning values into payloads (inline bytes or a shared-memory segment) and back."""

from __future__ import annotations

import inspect
import os
import pickle
import sys
from typing import Any

from rtml import exceptions as exc
from rtml._object_store._segments import read_value, segment_path, write_segment
from rtml._protocol._payload import INLINE, SHM
from rtml._serialization import INLINE_THRESHOLD, dumps

# Where this node's store spills objects (set by the runtime in the driver, from the
# environment in workers); a reader that finds a segment moved looks there.
spill_dir: str | None = os.environ.get("RTML_SPILL_DIR")


class DepMarker:
    """Stands for the i-th top-level ObjectRef argument; the worker swaps in its value."""

    __slots__ = ("i",)

    def __init__(self, i: int) -> None:
        self.i = i

    def __reduce__(self) -> Any:
        return (DepMarker, (self.i,))


def encode_value(
    value: Any, oid: int, session: str, shm_dir: str, what: str = "value"
) -> tuple[int, Any, int, list[int]]:
    """(kind, payload, size, contained refs) for a value about to become object ``oid``."""
    s = dumps(value, what)
    if s.size < INLINE_THRESHOLD:
        return INLINE, s.inline_bytes(), s.size, s.contained
    path = segment_path(session, format(oid, "x"), shm_dir)
    size = write_segment(path, s.data, s.buffers)
    return SHM, path, size, s.contained


def decode_value(kind: int, payload: Any) -> Any:
    """The value of a payload; raises the stored error for error payloads."""
    if kind == INLINE:
        return pickle.loads(payload)
    if kind == SHM:
        # Between the node naming the segment and this read, the store may have spilled it to
        # disk (or restored it again): look in both places a few times before giving up.
        name = os.path.basename(payload)
        places = [payload] + ([os.path.join(spill_dir, name)] if spill_dir else [])
        for _ in range(3):
            for path in places:
                try:
                    return read_value(path)
                except FileNotFoundError:
                    continue
        raise exc.ObjectLostError(
            "",
            f"the shared-memory segment {name} is gone (the runtime was shut down, or "
            "the object was freed)",
        )
    raise_error(payload)
    raise AssertionError("unreachable")


def load_error(payload: bytes) -> BaseException:
    err = pickle.loads(payload)
    if isinstance(err, exc.TaskError):
        return err.as_instanceof_cause()
    return err


def raise_error(payload: bytes) -> None:
    raise load_error(payload)


def split_returns(value: Any, n: int, name: str) -> list[Any]:
    """The ``n`` return values of a task declared with ``num_returns=n`` (n >= 1).

    Raises:
        ValueError: it did not return exactly ``n`` values (the message says what to return).
    """
    if inspect.isgenerator(value):
        return _first_yielded(value, n, name)
    if n == 1:
        return [value]
    if not isinstance(value, (list, tuple)) or len(value) != n:
        got = len(value) if isinstance(value, (list, tuple)) else type(value).__name__
        raise ValueError(
            f"task {name} was declared with num_returns={n} but returned {got}; "
            f"return a tuple or list of exactly {n} values"
        )
    return list(value)


class PartialReturns(Exception):
    """A generator declared with ``num_returns=n`` raised after yielding ``values`` (fewer
    than n): those stay readable, the remaining returns hold ``error`` (as in Ray)."""

    def __init__(self, values: list[Any], error: BaseException) -> None:
        super().__init__(f"{type(error).__name__}: {error}")
        self.values, self.error = values, error


def _first_yielded(gen: Any, n: int, name: str) -> list[Any]:
    """The first ``n`` values a generator yields (it is not run further, as in Ray)."""
    values: list[Any] = []
    try:
        while len(values) < n:
            try:
                values.append(next(gen))
            except StopIteration:
                break
    except Exception as e:
        if not values:
            raise
        raise PartialReturns(values, e) from None
    finally:
        gen.close()
    if len(values) < n:
        raise ValueError(
            f"task {name} was declared with num_returns={n} but its generator yielded "
            f"{len(values)} value(s); yield at least {n}, or use num_returns='streaming'"
        )
    return values


def fill_deps(args: list, kwargs: dict, values: list) -> None:
    """Put the resolved values of a task's top-level ref arguments in place of their
    ``DepMarker``s (in ``args`` and ``kwargs``, in place)."""
    for i, v in enumerate(args):
        if type(v) is DepMarker:
            args[i] = values[v.i]
    for k, v in kwargs.items():
        if type(v) is DepMarker:
            kwargs[k] = values[v.i]


def freeze_arrays(args: list, kwargs: dict) -> None:
    """Make the numpy arrays among a task's arguments read-only, whatever their size (as in
    Ray, where every array argument is a view of the immutable object store): a task that
    writes into its input fails the same way for a small array as for a large one."""
    np = sys.modules.get("numpy")
    if np is None:
        return  # (no array can be among the arguments: unpickling one imports numpy)
    ndarray = np.ndarray
    for v in args:
        _freeze(v, ndarray, 2)
    for v in kwargs.values():
        _freeze(v, ndarray, 2)


def _freeze(v: Any, ndarray: Any, depth: int) -> None:
    if isinstance(v, ndarray):
        v.flags.writeable = False
    elif depth and isinstance(v, (list, tuple)):
        for x in v:
            _freeze(x, ndarray, depth - 1)
    elif depth and isinstance(v, dict):
        for x in v.values():
            _freeze(x, ndarray, depth - 1)
