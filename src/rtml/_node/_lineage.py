"""Lineage: what the owner node keeps to re-create objects whose every copy was lost.

::

    submit (normal task, owned here) ──record──▶ spec kept, live = num_returns
          + one more on each input's producer still in lineage ("a descendant needs it")
          + a pin on each input made by ``put`` (a put cannot be rebuilt, so it stays)
    a return object freed ──▶ live - 1        a return object re-created ──▶ live + 1
    live reaches 0 ──▶ dropped: spec forgotten, its producers' live - 1 (recursively), its
                       put inputs unpinned; the drop is reported to the control plane

So lineage is bounded: a spec lives exactly as long as some reference reaches one of its results
or a result of a task downstream of it. Rebuilding re-runs the spec (see ``ClusterState.lost``),
which spends one of the task's ``max_retries``: a task that may not retry cannot be rebuilt.

Pure state: the caller passes each dropped entry's pins back to the object table.
"""

from __future__ import annotations

from typing import Any

from rtml._protocol._ids import is_put, task_of

__all__ = ["Lineage", "is_put"]


class Lineage:
    def __init__(self) -> None:
        self.specs: dict[int, Any] = {}  # task id -> TaskSpec
        self.live: dict[int, int] = {}  # task id -> live returns + lineage entries needing it
        self.parents: dict[int, list[int]] = {}  # task id -> producers whose live it holds
        self.pins: dict[int, list[int]] = {}  # task id -> put inputs pinned for a re-run
        self.retries: dict[int, int] = {}  # task id -> re-runs left (-1: unbounded)
        self.reruns: dict[int, int] = {}  # task id -> times re-run to rebuild its results
        self.dropped: list[int] = []  # dropped since the last ``take_dropped``

    def __contains__(self, task_id: int) -> bool:
        return task_id in self.specs

    def __len__(self) -> int:
        return len(self.specs)

    def record(self, spec: Any, owned: Any) -> list[int]:
        """Keep ``spec`` (its returns were just created). Returns the put inputs to pin;
        ``owned(oid)`` says whether an input is owned here (others cannot be pinned here)."""
        tid = spec.task_id
        self.specs[tid] = spec
        self.live[tid] = spec.num_returns
        self.retries[tid] = spec.max_retries
        parents = []
        pins = []
        for d in (*spec.deps, *spec.contained):
            if is_put(d):
                if owned(d):
                    pins.append(d)
                continue
            p = task_of(d)
            if p in self.specs and p != tid:
                self.live[p] += 1
                parents.append(p)
        if parents:
            self.parents[tid] = parents
        if pins:
            self.pins[tid] = pins
        return pins

    def return_created(self, oid: int) -> None:
        tid = task_of(oid)
        if tid in self.live and not is_put(oid):
            self.live[tid] += 1

    def return_freed(self, oid: int) -> list[int]:
        """A return object of a recorded task was freed; the put pins to release."""
        tid = task_of(oid)
        left = self.live.get(tid)
        if left is None or is_put(oid):
            return []
        if left > 1:
            self.live[tid] = left - 1
            return []
        return self._drop(tid)

    def spend_retry(self, task_id: int) -> bool:
        """Use one re-run of ``task_id`` to rebuild its results; False if none is left."""
        left = self.retries.get(task_id, 0)
        if left == 0:
            return False
        if left > 0:
            self.retries[task_id] = left - 1
        self.reruns[task_id] = self.reruns.get(task_id, 0) + 1
        return True

    def _drop(self, task_id: int) -> list[int]:
        released: list[int] = []
        stack = [task_id]
        while stack:
            tid = stack.pop()
            del self.specs[tid]
            del self.live[tid]
            self.retries.pop(tid, None)
            self.reruns.pop(tid, None)
            self.dropped.append(tid)
            released.extend(self.pins.pop(tid, ()))
            for p in self.parents.pop(tid, ()):
                left = self.live.get(p)
                if left is None:
                    continue
                if left > 1:
                    self.live[p] = left - 1
                else:
                    self.live[p] = 0
                    stack.append(p)
        return released

    def take_dropped(self) -> list[int]:
        out, self.dropped = self.dropped, []
        return out

    def validate(self) -> None:
        assert set(self.specs) == set(self.live) == set(self.retries) >= set(self.reruns)
        needed: dict[int, int] = {}
        for tid, parents in self.parents.items():
            assert tid in self.specs
            for p in parents:
                needed[p] = needed.get(p, 0) + 1
        for tid, n in self.live.items():
            assert n >= needed.get(tid, 0) and n > 0, (tid, n, needed.get(tid))
