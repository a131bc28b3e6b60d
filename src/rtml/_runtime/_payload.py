"""Turning values into payloads (inline bytes or a shared-memory segment) and back."""

from __future__ import annotations

import os
import pickle
from typing import Any

from rtml import exceptions as exc
from rtml._node._objects import ERR, INLINE, SHM
from rtml._object_store._segments import read_value, segment_path, write_segment
from rtml._serialization import INLINE_THRESHOLD, dumps


class DepMarker:
    """Stands for the i-th top-level ObjectRef argument; the worker swaps in its value."""

    __slots__ = ("i",)

    def __init__(self, i: int) -> None:
        self.i = i

    def __reduce__(self) -> Any:
        return (DepMarker, (self.i,))


def encode_value(value: Any, oid: int, session: str, shm_dir: str,
                 what: str = "value") -> tuple[int, Any, int, list[int]]:
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
        try:
            return read_value(payload)
        except FileNotFoundError:
            raise exc.ObjectLostError(
                "", f"the shared-memory segment {os.path.basename(payload)} is gone (the runtime "
                "was shut down, or the object was freed)") from None
    raise_error(payload)
    raise AssertionError("unreachable")


def load_error(payload: bytes) -> BaseException:
    err = pickle.loads(payload)
    if isinstance(err, exc.TaskError):
        return err.as_instanceof_cause()
    return err


def raise_error(payload: bytes) -> None:
    raise load_error(payload)


def is_error(kind: int) -> bool:
    return kind == ERR
