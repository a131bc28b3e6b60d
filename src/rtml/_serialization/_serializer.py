"""cloudpickle at protocol 5 with out-of-band buffers and contained-reference tracking."""

from __future__ import annotations

import io
import os
import pickle
import threading
from typing import Any

import cloudpickle

# Values whose pickle (in-band bytes plus out-of-band buffers) is smaller than this travel inline
# inside messages; larger ones go to the node's shared-memory store. See
# docs/decisions/0002-inline-threshold.md for the measurement behind the figure.
INLINE_THRESHOLD = int(os.environ.get("RTML_INLINE_THRESHOLD", 100 * 1024))

_tls = threading.local()

# The modules registered with ``cloudpickle.register_pickle_by_value``: while any is, plain
# pickle (which writes their classes and functions by name) is skipped. A private set of
# cloudpickle; a version without it is treated as having none registered.
_BY_VALUE: set = getattr(
    getattr(cloudpickle, "cloudpickle", None), "_PICKLE_BY_VALUE_MODULES", set()
)


class SerializationError(TypeError):
    """A value could not be pickled. The message names the value and the reason."""


class Serialized:
    """The pickled form of one value."""

    __slots__ = ("buffers", "contained", "data", "size")

    def __init__(self, data: bytes, buffers: list[pickle.PickleBuffer], contained: list[int]):
        self.data = data
        self.buffers = buffers
        self.contained = contained
        self.size = len(data)
        if buffers:  # (no generator for the common case of none: this runs once per value)
            self.size += sum(b.raw().nbytes for b in buffers)

    def inline_bytes(self) -> bytes:
        """The value as one in-band pickle (buffers folded in), for inline transport."""
        if not self.buffers:
            return self.data
        # Rare: a small value that had out-of-band buffers. Re-pickle in band.
        return pickle.dumps(pickle.loads(self.data, buffers=self.buffers), protocol=5)


def record_contained(object_id: int) -> None:
    """Called by ``ObjectRef.__reduce__``: note a reference inside the value being pickled."""
    stack = getattr(_tls, "stack", None)
    if stack:
        stack[-1].append(object_id)


def _describe(value: Any) -> str:
    text = repr(value)
    if len(text) > 120:
        text = text[:117] + "..."
    return f"{type(value).__name__} {text}"


def dumps(value: Any, what: str = "value") -> Serialized:
    """Pickle ``value`` with out-of-band buffers, recording contained ObjectRefs.

    Raises:
        SerializationError: the value (or something inside it) cannot be pickled.
    """
    stack = getattr(_tls, "stack", None)
    if stack is None:
        stack = _tls.stack = []
    contained: list[int] = []
    buffers: list[pickle.PickleBuffer] = []
    stack.append(contained)
    try:
        # A retry through cloudpickle must not double-count refs recorded by the first attempt.
        try:
            if _BY_VALUE:
                raise pickle.PicklingError("modules are registered to pickle by value")
            data = pickle.dumps(value, protocol=5, buffer_callback=buffers.append)
            if b"__main__" in data:
                # pickle wrote a function or class of the driver's script by name, which no
                # worker can import: cloudpickle sends those by value.
                raise pickle.PicklingError("refers to __main__")
        except Exception:
            contained.clear()
            buffers.clear()
            buf = io.BytesIO()
            cloudpickle.CloudPickler(buf, protocol=5, buffer_callback=buffers.append).dump(value)
            data = buf.getvalue()
    except Exception as exc:
        raise SerializationError(
            f"could not serialize the {what} ({_describe(value)}): {type(exc).__name__}: {exc}. "
            "Only picklable values can be passed to or returned from tasks and actors; "
            "create unpicklable resources (locks, sockets, open files) inside the task instead."
        ) from exc
    finally:
        stack.pop()
    return Serialized(data, buffers, contained)


def loads(data: Any, buffers: Any = None) -> Any:
    """Unpickle bytes (and optional out-of-band buffer views)."""
    if buffers:
        return pickle.loads(data, buffers=buffers)
    return pickle.loads(data)
