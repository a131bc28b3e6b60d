"""The node's streams: the items a generator task (``num_returns="streaming"``) has produced.

::

    submit (streaming) ── open(task, owner) ──▶ StreamRec(produced=0)
    worker ("item", ...) ── Node.on_item ── next_oid() ── Node seals it, held by the owner
    task ends / fails ── end() ── finished: waiters woken; forgotten once read to the end
    owner ── next(i) / wait(cb) ── the i-th item's object id, or None at the end
    owner drops the generator ── drop(from) ── the items it never read: released by the Node

Owns ``streams`` and nothing else: the object table and the owner's held refs stay the
``Node``'s, which this table tells what to seal or release (it returns object ids).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from rtml._protocol._ids import return_id


class StreamRec:
    __slots__ = ("dropped_from", "finished", "owner", "produced", "waiters")

    def __init__(self, owner: int) -> None:
        self.owner = owner
        self.produced = 0
        self.finished = False
        self.waiters: list[Any] = []
        self.dropped_from: int | None = None


class StreamTable:
    """Every live stream of the node, by task id."""

    __slots__ = ("streams",)

    def __init__(self) -> None:
        self.streams: dict[int, StreamRec] = {}

    def __contains__(self, task_id: int) -> bool:
        return task_id in self.streams

    def __len__(self) -> int:
        return len(self.streams)

    def __iter__(self) -> Iterator[int]:
        return iter(self.streams)

    def get(self, task_id: int) -> StreamRec | None:
        return self.streams.get(task_id)

    def open(self, task_id: int, owner: int) -> None:
        self.streams[task_id] = StreamRec(owner)

    def produce(self, task_id: int) -> tuple[StreamRec | None, int]:
        """The stream and the object id of its next item (the item is then counted)."""
        s = self.streams.get(task_id)
        if s is None:
            return None, return_id(task_id, 1)
        s.produced += 1
        return s, return_id(task_id, s.produced)

    def end(self, task_id: int) -> None:
        """The task produced its last item (or failed): wake the readers."""
        s = self.streams.get(task_id)
        if s is None:
            return
        s.finished = True
        self.wake(s)
        if s.dropped_from is not None:
            del self.streams[task_id]

    @staticmethod
    def wake(s: StreamRec) -> None:
        if s.waiters:
            waiters, s.waiters = s.waiters, []
            for cb in waiters:
                cb()

    def next(self, task_id: int, index: int) -> tuple[bool, int | None]:
        """(available, object id or None at the end). Not available: register a waiter."""
        s = self.streams.get(task_id)
        if s is None:
            return True, None
        if index < s.produced:
            return True, return_id(task_id, index + 1)
        if s.finished:
            del self.streams[task_id]
            return True, None
        return False, None

    def wait(self, task_id: int, callback: Callable[[], Any]) -> None:
        s = self.streams.get(task_id)
        if s is None:
            callback()
        else:
            s.waiters.append(callback)

    def drop(self, task_id: int, from_index: int) -> tuple[int, list[int]]:
        """The owner stops reading at ``from_index``: (owner, the produced items it never
        read, to release). Items produced later are released as they come."""
        s = self.streams.get(task_id)
        if s is None:
            return 0, []
        s.dropped_from = from_index
        unread = [return_id(task_id, i + 1) for i in range(from_index, s.produced)]
        if s.finished:
            del self.streams[task_id]
        return s.owner, unread

    def validate(self, live_tasks: Any) -> None:
        """A stream still being produced belongs to a live task; a finished one has no
        waiters; a dropped one is forgotten as soon as it is finished."""
        for tid, s in self.streams.items():
            assert s.produced >= 0
            if s.finished:
                assert not s.waiters, f"finished stream {tid:x} has waiters"
                assert s.dropped_from is None, f"finished dropped stream {tid:x} is kept"
            else:
                assert tid in live_tasks, f"stream {tid:x} outlived its task"
            if s.dropped_from is not None:
                assert s.dropped_from >= 0
