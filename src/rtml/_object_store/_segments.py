"""Segment files: one object per file in /dev/shm (or in the spill directory when spilled).

::

    producer process                 node manager (NodeObjectStore)        reader processes
    ────────────────                 ──────────────────────────────        ────────────────
    write_segment(shm path) ──▶ /dev/shm/rtml_{session}_{hex} ◀── map_segment / read_value
                                        │   ▲                       (PROT_READ, zero-copy)
                         move_file      │   │  move_file
                         (spill)        ▼   │  (restore)
                                {spill_dir}/rtml_{session}_{hex}

    remove(path), cleanup_session(session) ──▶ unlink

Why plain files and not ``multiprocessing.shared_memory``: that module starts a resource-tracker
process and warns about "leaked" segments owned by another process. A file on tmpfs is the same
memory, can be named, listed and removed by any process of the session, and unlinking it while
readers still map it is safe on Linux (pages live until the last mapping goes), so spilling and
deleting never wait for readers.
"""

from __future__ import annotations

import contextlib
import errno
import mmap
import os
import pickle
import re
import shutil
from collections.abc import Sequence
from typing import Any

from rtml._object_store._layout import (
    layout_pieces,
    read_layout,
)

SHM_DIR = "/dev/shm"
PREFIX = "rtml_"

# The session is followed by "_" in file names, so it must not contain "_" itself (otherwise
# session "a" would match the files of session "a_b" in cleanup) nor path separators.
_SESSION_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*")
_HEX_RE = re.compile(r"[0-9a-fA-F]+")


def _check_session(session: str) -> None:
    if not isinstance(session, str) or not _SESSION_RE.fullmatch(session):
        raise ValueError(f"invalid session {session!r}: use letters, digits and '-' only")


def segment_path(session: str, object_hex: str, shm_dir: str = SHM_DIR) -> str:
    """``{shm_dir}/rtml_{session}_{object_hex}``. Also used for the spill path (pass spill_dir)."""
    _check_session(session)
    if not isinstance(object_hex, str) or not _HEX_RE.fullmatch(object_hex):
        raise ValueError(f"invalid object id hex {object_hex!r}")
    return os.path.join(shm_dir, f"{PREFIX}{session}_{object_hex}")


def write_segment(path: str, pickle_bytes: Any, buffers: Sequence[Any]) -> int:
    """Create ``path`` exclusively and write one object into it; return its size in bytes.

    Written with ``pwrite`` rather than through a mapping: the kernel then allocates the
    file's pages in bulk instead of taking one page fault per 4 KiB, which is 3x faster for
    large objects (docs/decisions/0003-segment-writes.md), and a full /dev/shm surfaces as
    ENOSPC here instead of as SIGBUS. On any error the partial file is removed (unless it
    existed before: O_EXCL failed).
    """
    size, pieces = layout_pieces(pickle_bytes, buffers)
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
    try:
        os.ftruncate(fd, size)  # the gaps between pieces read as zeros
        for offset, view in pieces:
            done = 0
            n = view.nbytes
            while done < n:
                done += os.pwrite(fd, view[done : done + _WRITE_CHUNK], offset + done)
    except BaseException:
        remove(path)
        raise
    finally:
        os.close(fd)
    return size


_WRITE_CHUNK = 256 << 20  # bounded single writes (Linux caps one write near 2 GiB anyway)


def map_segment(path: str) -> tuple[memoryview, list[memoryview]]:
    """Map ``path`` read-only; return views of the pickle bytes and buffers.

    The views own the mapping: it is unmapped when the last view (or any numpy array built on
    one) is garbage collected. Never close the mmap explicitly.

    Raises:
        FileNotFoundError: no such segment (never created, deleted, or currently spilled).
        ValueError: the file is empty or not a valid segment.
    """
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        if size == 0:
            raise ValueError(f"object segment {path} is empty")
        mm = mmap.mmap(fd, size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ)
    finally:
        # The mapping stays valid after the descriptor is closed.
        os.close(fd)
    try:
        return read_layout(memoryview(mm))
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


def read_value(path: str) -> Any:
    """Map the segment and unpickle it; numpy arrays come back as read-only zero-copy views."""
    pickle_view, buffers = map_segment(path)
    return pickle.loads(pickle_view, buffers=buffers)


def _copy_fd(src_fd: int, dst_fd: int, size: int) -> None:
    offset = 0
    try:
        while offset < size:
            sent = os.sendfile(dst_fd, src_fd, offset, size - offset)
            if sent == 0:
                raise OSError(errno.EIO, f"source shrank while copying ({offset} of {size} bytes)")
            offset += sent
    except OSError as exc:
        if offset or exc.errno not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
            raise
        # sendfile between these files is unsupported here: plain buffered copy.
        with open(src_fd, "rb", closefd=False) as fsrc, open(dst_fd, "wb", closefd=False) as fdst:
            shutil.copyfileobj(fsrc, fdst, 1 << 20)


def move_file(src: str, dst: str) -> None:
    """Move ``src`` to ``dst`` across filesystems: copy to a temp name next to ``dst``, rename
    into place, then unlink ``src``. Used for spill (shm → disk) and restore (disk → shm).

    Readers never observe a half-written ``dst``; if anything fails, ``src`` is untouched and the
    temp file is removed. Readers that still map ``src`` keep their (unchanged) pages.
    """
    dst_dir = os.path.dirname(dst) or "."
    # The temp name keeps the rtml_{session}_ prefix so cleanup_session also catches the
    # leftovers of a crash mid-move.
    tmp = os.path.join(dst_dir, f"{os.path.basename(dst)}.tmp{os.getpid()}")
    src_fd = os.open(src, os.O_RDONLY)
    try:
        size = os.fstat(src_fd).st_size
        dst_fd = os.open(tmp, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o600)
        try:
            _copy_fd(src_fd, dst_fd, size)
        except BaseException:
            os.close(dst_fd)
            remove(tmp)
            raise
        os.close(dst_fd)
    finally:
        os.close(src_fd)
    try:
        os.replace(tmp, dst)
    except BaseException:
        remove(tmp)
        raise
    # No fsync: spilled data only needs to outlive the session's processes, not a power cut.
    remove(src)


def remove(path: str) -> None:
    """Unlink ``path``; a missing file is not an error."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _session_files(prefix: str, directory: str) -> list[str]:
    try:
        entries = os.scandir(directory)
    except FileNotFoundError:
        return []
    with entries:
        return sorted(e.path for e in entries if e.name.startswith(prefix) and not e.is_dir())


def cleanup_session(session: str, shm_dir: str = SHM_DIR, spill_dir: str | None = None) -> int:
    """Remove every ``rtml_{session}_*`` file in ``shm_dir`` and ``spill_dir``; return how many."""
    _check_session(session)
    prefix = f"{PREFIX}{session}_"
    removed = 0
    dirs = [shm_dir] if spill_dir is None else [shm_dir, spill_dir]
    for directory in dict.fromkeys(dirs):  # same dir twice: scan once
        for path in _session_files(prefix, directory):
            try:
                os.unlink(path)
                removed += 1
            except FileNotFoundError:
                pass  # raced with another remover; it is gone either way
    return removed


def list_session_segments(session: str | None = None, shm_dir: str = SHM_DIR) -> list[str]:
    """Full paths of the ``rtml_{session}_*`` files (every ``rtml_*`` file if session is None)."""
    if session is None:
        return _session_files(PREFIX, shm_dir)
    _check_session(session)
    return _session_files(f"{PREFIX}{session}_", shm_dir)
