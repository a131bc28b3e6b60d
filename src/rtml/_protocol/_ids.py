"""Identifiers for tasks and objects.

A task id is ``(process index << 40) | counter``: unique within a runtime without coordination,
because the node hands every process (driver or worker) its own index. In a cluster a process
index is ``(node index << 20) | local index``, so ids are unique across nodes and the node that
owns an object (where its submitter or putter lives) is known from the id too. An object id is
``(task id << 32) | (index ^ task id's low 32 bits)``: index 0 is a ``put``, 1..k are a task's
return values (or the items a streaming generator yields), so the producing task of every object is known from its id alone —
which is what lineage reconstruction needs.
"""

from __future__ import annotations

import itertools
from typing import Any

DRIVER_INDEX = 1
_TASK_SHIFT = 40
_OBJECT_SHIFT = 32
NODE_SHIFT = 20  # process index = (node index << NODE_SHIFT) | local index
_OWNER_SHIFT = _OBJECT_SHIFT + _TASK_SHIFT + NODE_SHIFT


# One counter per process for its whole life, shared by every runtime it starts: a driver that
# calls init() again gets fresh ids, so a stale ObjectRef from an earlier session can never
# name (and release) an object of the current one.
_process_counter = itertools.count(1)


class IdGenerator:
    """Hands out task ids for one process. Thread-safe (``itertools.count`` is atomic)."""

    __slots__ = ("_counter", "_prefix")

    def __init__(self, process_index: int) -> None:
        self._prefix = process_index << _TASK_SHIFT
        self._counter = _process_counter

    def next_task_id(self) -> int:
        return self._prefix | next(self._counter)


_LOW = (1 << _OBJECT_SHIFT) - 1


def return_id(task_id: int, index: int) -> int:
    """Object id of the ``index``-th (1-based) return value of ``task_id``.

    The index is stored XORed with the task id's low bits: Python hashes an int by its value,
    and hash tables index by the low bits, which would otherwise be the same (1) for every
    return of every task of a process — each lookup in a dict or set of object ids then probed
    a chain of colliding slots (``wait`` on 1,000 refs spent most of its time there).
    """
    return (task_id << _OBJECT_SHIFT) | ((index ^ task_id) & _LOW)


def put_id(task_id: int) -> int:
    return return_id(task_id, 0)


def index_of(object_id: int) -> int:
    """0 for an object made by ``put``, else the 1-based return (or stream item) index."""
    return (object_id ^ (object_id >> _OBJECT_SHIFT)) & _LOW


def is_put(object_id: int) -> bool:
    return not index_of(object_id)


def task_of(object_id: int) -> int:
    return object_id >> _OBJECT_SHIFT


def process_of_task(task_id: int) -> int:
    return task_id >> _TASK_SHIFT


def node_of_object(object_id: int) -> int:
    """Index of the node that owns ``object_id`` (0: the embedded runtime's only node)."""
    return object_id >> _OWNER_SHIFT


def node_of_process(proc: int) -> int:
    return proc >> NODE_SHIFT


def to_hex(ident: int) -> str:
    return format(ident, "x")


OBJECT_ID_BYTES = 16  # every object id fits: ObjectRef.hex()/binary() are this wide


def object_hex(oid: int) -> str:
    """An object id as ``ObjectRef.hex()`` writes it (fixed width, so it round-trips through
    ``ObjectRef(bytes.fromhex(...))``); state listings show object ids this way too."""
    return format(oid, f"0{2 * OBJECT_ID_BYTES}x")


def hex_id(ident: Any) -> str:
    """An id as the hex string the records use (task ids in events may be int or str)."""
    if type(ident) is str:  # the common case, first
        return ident
    if isinstance(ident, int) and not isinstance(ident, bool):
        return format(ident, "x")
    return str(ident)
