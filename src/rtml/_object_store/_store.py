"""``NodeObjectStore``: the thin I/O shell around ``StoreState`` that the node manager owns.

::

    node manager threads ──▶ NodeObjectStore (one lock)
                               │ 1. ask StoreState for decisions (reserve / access / spill)
                               │ 2. execute them with _segments.move_file
                               │ 3. report back (mark_spilled / mark_restored / cancel_move)
                               ▼
         /dev/shm/rtml_{session}_{hex}  ◀── move_file ──▶  {spill_dir}/rtml_{session}_{hex}
                   ▲
                   └── producers write_segment(create(...)) ; readers map_segment(get_path(...))

Producers in other processes call ``create`` (through the node manager) to get a path, write the
segment themselves and then ``seal``; the node never copies object bytes except to spill and
restore. Moves happen under the lock so a decision is always reported before the next one is
taken; they are memory-speed copies between tmpfs and the page cache.

Readers should map the path returned by ``get_path`` promptly, or ``pin`` the object first:
once mapped, a later spill or delete cannot take the bytes away (unlinking a mapped file is safe),
but an unpinned object can be spilled between ``get_path`` and the open.

This package imports nothing from the rest of rtml so it can be tested on its own.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from typing import Any

from rtml._object_store import _segments
from rtml._object_store._layout import buffer_lengths, layout_size
from rtml._object_store._state import Decision, Location, Restore, Spill, StoreState


class NodeObjectStore:
    """One node's shared-memory object store: accounting, spilling, restoring and cleanup."""

    def __init__(
        self, session: str, capacity: int, spill_dir: str, shm_dir: str = _segments.SHM_DIR
    ) -> None:
        _segments.segment_path(session, "0", shm_dir)  # validates the session string early
        self.session = session
        self.shm_dir = shm_dir
        self.spill_dir = spill_dir
        self._lock = threading.Lock()
        self._state = StoreState(capacity)
        self._closed = False
        os.makedirs(spill_dir, exist_ok=True)

    # ------------------------------------------------------------------ paths

    def shm_path(self, object_id: int) -> str:
        return _segments.segment_path(self.session, format(object_id, "x"), self.shm_dir)

    def spill_path(self, object_id: int) -> str:
        return _segments.segment_path(self.session, format(object_id, "x"), self.spill_dir)

    def path_for(self, object_id: int) -> str:
        """Where the object's file is now (shm or spill path). KeyError if unknown."""
        with self._lock:
            loc = self._state.location(object_id)
        return self.shm_path(object_id) if loc is Location.SHM else self.spill_path(object_id)

    # -------------------------------------------------------------- lifecycle

    def create(self, object_id: int, size: int) -> str:
        """Reserve ``size`` bytes (spilling LRU objects) and return the shm path to write to.

        The caller writes the segment (``write_segment``, any process), then ``seal``s, or
        ``abort``s on failure.

        Raises:
            StoreFull: it cannot fit even after spilling every unpinned object.
            ValueError: ``object_id`` is already in the store.
        """
        with self._lock:
            self._check_open()
            spills = self._state.reserve(object_id, size)
            try:
                self._execute(spills)
            except BaseException:
                self._state.abort(object_id)
                raise
            return self.shm_path(object_id)

    def seal(self, object_id: int) -> None:
        with self._lock:
            self._state.seal(object_id)

    def abort(self, object_id: int) -> None:
        """Creation failed: free the reservation and remove any partial file."""
        with self._lock:
            self._state.abort(object_id)
            _segments.remove(self.shm_path(object_id))

    def put_local(self, object_id: int, pickle_bytes: Any, buffers: Sequence[Any]) -> int:
        """create + write_segment + seal in this process; return the size in bytes."""
        size = layout_size(buffer_lengths([pickle_bytes])[0], buffer_lengths(buffers))
        path = self.create(object_id, size)
        # Written outside the lock: the reservation is pinned, so nobody moves it meanwhile.
        try:
            written = _segments.write_segment(path, pickle_bytes, buffers)
            if written != size:
                raise RuntimeError(f"wrote {written} bytes for a {size}-byte reservation")
        except BaseException:
            self.abort(object_id)
            raise
        self.seal(object_id)
        return size

    def get_path(self, object_id: int) -> str:
        """Make sure the object is in shared memory (restoring it if spilled); return its path.

        Raises:
            KeyError: unknown object (never created, deleted, or lost).
            StoreFull: it is spilled and there is no room to restore it.
        """
        with self._lock:
            decisions = self._state.access(object_id)
            self._execute(decisions)
            return self.shm_path(object_id)

    def spill_damage(self, object_id: int) -> str | None:
        """Why the spilled copy of an object cannot be restored (its file is gone, or is not
        the object's size), or None if it is not spilled or its file looks intact."""
        with self._lock:
            state = self._state
            if object_id not in state or state.location(object_id) is not Location.DISK:
                return None
            path = self.spill_path(object_id)
            try:
                size = os.stat(path).st_size
            except FileNotFoundError:
                return f"its spill file {path} is gone"
            except OSError as e:
                return f"its spill file {path} cannot be read ({e})"
            if size != state.size(object_id):
                return f"its spill file {path} has {size} bytes, not {state.size(object_id)}"
            return None

    def delete(self, object_id: int) -> Location | None:
        """Free the object and remove its file wherever it is; return where it was."""
        with self._lock:
            loc = self._state.delete(object_id)
            # Both places: cheap, and robust to a crash between copy and unlink in a move.
            _segments.remove(self.shm_path(object_id))
            _segments.remove(self.spill_path(object_id))
            return loc

    def spill(self, object_id: int) -> None:
        """Spill one sealed, unpinned object to disk now (tests and tools)."""
        with self._lock:
            self._execute([self._state.spill(object_id)])

    def pin(self, object_id: int) -> None:
        """Keep the object in shared memory (counted) until ``unpin``."""
        with self._lock:
            self._state.pin(object_id)

    def unpin(self, object_id: int) -> None:
        with self._lock:
            self._state.unpin(object_id)

    # ---------------------------------------------------------------- queries

    @property
    def capacity(self) -> int:
        return self._state.capacity

    @property
    def used(self) -> int:
        with self._lock:
            return self._state.used

    def __contains__(self, object_id: object) -> bool:
        with self._lock:
            return object_id in self._state

    def stats(self) -> dict[str, int]:
        with self._lock:
            return self._state.stats()

    def shutdown(self) -> int:
        """Remove every file of the session in both directories; return how many. Idempotent."""
        with self._lock:
            self._closed = True
            self._state = StoreState(self._state.capacity)
            return _segments.cleanup_session(self.session, self.shm_dir, self.spill_dir)

    # ---------------------------------------------------------------- helpers

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("the object store has been shut down")

    def _execute(self, decisions: Sequence[Decision]) -> None:
        """Carry out decisions in order (lock held). On failure, cancel the rest and re-raise."""
        for i, d in enumerate(decisions):
            oid = d.object_id
            try:
                if isinstance(d, Spill):
                    self._do_spill(oid)
                elif isinstance(d, Restore):
                    _segments.move_file(self.spill_path(oid), self.shm_path(oid))
                    self._state.mark_restored(oid)
                else:  # pragma: no cover - decisions are a closed set
                    raise TypeError(f"unknown decision {d!r}")
            except BaseException:
                for rest in decisions[i:]:
                    if rest.object_id in self._state:
                        self._state.cancel_move(rest.object_id)
                raise

    def _do_spill(self, object_id: int) -> None:
        src = self.shm_path(object_id)
        try:
            _segments.move_file(src, self.spill_path(object_id))
        except FileNotFoundError:
            if os.path.exists(src):
                raise  # the spill dir is the problem, not the object
            # The sealed object's file vanished (removed outside the store): its bytes are lost
            # either way. Forget it so its room is reclaimed instead of failing every spill;
            # readers then get KeyError for it.
            self._state.delete(object_id)
            return
        self._state.mark_spilled(object_id)
