"""The node's shared-memory object store for large values.

::

    producer (worker/driver)          node manager                       readers (any process)
    pickle5 → bytes + buffers ──▶ NodeObjectStore.create(id, size) ──▶ path
    write_segment(path, ...)  ──▶ NodeObjectStore.seal(id)
                                  NodeObjectStore.get_path(id) ──────▶ map_segment / read_value
                                   │ StoreState decides LRU spills/restores (pure)
                                   │ _segments moves files /dev/shm ⇄ spill_dir
                                  NodeObjectStore.delete(id) / shutdown()

Modules: ``_layout`` (bytes of one object), ``_segments`` (files), ``_state`` (accounting and
decisions, no I/O), ``_store`` (the locked shell). Nothing here imports the rest of rtml.

Floor 1, leaves (docs/architecture.md): imports only floor 0 and the other leaves.
"""

from rtml._object_store._layout import ALIGN, buffer_lengths, layout_size, read_layout, write_layout
from rtml._object_store._segments import (
    cleanup_session,
    list_session_segments,
    map_segment,
    move_file,
    read_value,
    remove,
    segment_path,
    write_segment,
)
from rtml._object_store._state import Location, Restore, Spill, StoreFull, StoreState
from rtml._object_store._store import NodeObjectStore

__all__ = [
    "ALIGN",
    "Location",
    "NodeObjectStore",
    "Restore",
    "Spill",
    "StoreFull",
    "StoreState",
    "buffer_lengths",
    "cleanup_session",
    "layout_size",
    "list_session_segments",
    "map_segment",
    "move_file",
    "read_layout",
    "read_value",
    "remove",
    "segment_path",
    "write_layout",
    "write_segment",
]
