"""The byte layout of one object inside a segment (pure: no files, no mmaps).

::

    pickle_bytes, [buf0, buf1, ...]
            │ write_layout(dest)                       read_layout(src) │
            ▼                                                           ▼
    ┌────────────────────────── one segment ─────────────────────────────────┐
    │ header: "RTML" | version u32 | nbuf u64 | pickle_len u64               │
    │         (offset u64, length u64) for each buf                          │
    │ pickle bytes                                                           │
    │ pad to 64 │ buf0 │ pad to 64 │ buf1 │ ...                              │
    └────────────────────────────────────────────────────────────────────────┘
            ▲                                                           │
            └──── pickle.loads(pickle_view, buffers=[views]) ◀──────────┘

Every buffer starts at a 64-byte-aligned offset (from the start of the segment, and mmaps are
page aligned) so numpy arrays read back zero-copy are aligned for any dtype and for SIMD loads.
All integers are little-endian. Offsets are absolute so a reader never has to recompute padding.
"""

from __future__ import annotations

import pickle
import struct
from collections.abc import Sequence
from typing import Any

ALIGN = 64
MAGIC = b"RTML"
VERSION = 1

# magic, version, number of buffers, pickle length. 24 bytes, so the u64 pairs that follow are
# 8-byte aligned (not required by struct, but keeps the header friendly to other readers).
_HEADER = struct.Struct("<4sIQQ")
_PAIR = struct.Struct("<QQ")


def _align(n: int) -> int:
    return (n + ALIGN - 1) & ~(ALIGN - 1)


def _header_len(num_buffers: int) -> int:
    return _HEADER.size + _PAIR.size * num_buffers


def _as_bytes_view(obj: Any) -> memoryview:
    """A flat unsigned-byte view of any contiguous buffer, without copying.

    ``PickleBuffer.raw()`` handles C- and Fortran-contiguous exporters alike (``memoryview.cast``
    only accepts C-contiguous ones), so wrapping plain memoryviews/bytes in a PickleBuffer gives
    one code path. Non-contiguous buffers raise ``BufferError``: pickle never produces them
    out-of-band, and copying here silently would hide a caller bug.
    """
    if isinstance(obj, pickle.PickleBuffer):
        return obj.raw()
    return pickle.PickleBuffer(obj).raw()


def _offsets(pickle_len: int, buffer_lens: Sequence[int]) -> tuple[list[int], int]:
    """Absolute buffer offsets and the total size for the given lengths."""
    pos = _header_len(len(buffer_lens)) + pickle_len
    offsets = []
    for n in buffer_lens:
        if n < 0:
            raise ValueError(f"negative buffer length {n}")
        pos = _align(pos)
        offsets.append(pos)
        pos += n
    return offsets, pos


def layout_size(pickle_len: int, buffer_lens: Sequence[int]) -> int:
    """Total bytes needed to store a pickle of ``pickle_len`` bytes and buffers of these lengths."""
    if pickle_len < 0:
        raise ValueError(f"negative pickle length {pickle_len}")
    return _offsets(pickle_len, buffer_lens)[1]


def buffer_lengths(buffers: Sequence[Any]) -> list[int]:
    """Byte lengths of out-of-band buffers (PickleBuffer, memoryview or any bytes-like)."""
    return [_as_bytes_view(b).nbytes for b in buffers]


def write_layout(dest: memoryview, pickle_bytes: Any, buffers: Sequence[Any]) -> None:
    """Write header, pickle bytes and buffers into ``dest`` (writable, >= layout_size bytes)."""
    dest = dest.cast("B") if dest.format != "B" or dest.ndim != 1 else dest
    if dest.readonly:
        raise ValueError("write_layout needs a writable destination")
    pview = _as_bytes_view(pickle_bytes)
    bviews = [_as_bytes_view(b) for b in buffers]
    offsets, total = _offsets(pview.nbytes, [b.nbytes for b in bviews])
    if dest.nbytes < total:
        raise ValueError(f"destination holds {dest.nbytes} bytes, layout needs {total}")

    _HEADER.pack_into(dest, 0, MAGIC, VERSION, len(bviews), pview.nbytes)
    pos = _HEADER.size
    for off, b in zip(offsets, bviews, strict=True):
        _PAIR.pack_into(dest, pos, off, b.nbytes)
        pos += _PAIR.size
    dest[pos : pos + pview.nbytes] = pview
    pos += pview.nbytes
    for off, b in zip(offsets, bviews, strict=True):
        # Zero the padding so segments are deterministic byte for byte (tmpfs pages start
        # zeroed, but the destination may be any reused buffer).
        if off > pos:
            dest[pos:off] = bytes(off - pos)
        dest[off : off + b.nbytes] = b
        pos = off + b.nbytes


def layout_pieces(
    pickle_bytes: Any, buffers: Sequence[Any]
) -> tuple[int, list[tuple[int, memoryview]]]:
    """The same layout as ``write_layout``, as (total size, [(offset, bytes view), ...]).

    For writers that use ``pwrite`` on a file of ``total`` bytes (the gaps read as zeros).
    """
    pview = _as_bytes_view(pickle_bytes)
    bviews = [_as_bytes_view(b) for b in buffers]
    offsets, total = _offsets(pview.nbytes, [b.nbytes for b in bviews])
    head = bytearray(_header_len(len(bviews)))
    _HEADER.pack_into(head, 0, MAGIC, VERSION, len(bviews), pview.nbytes)
    pos = _HEADER.size
    for off, b in zip(offsets, bviews, strict=True):
        _PAIR.pack_into(head, pos, off, b.nbytes)
        pos += _PAIR.size
    pieces = [(0, memoryview(bytes(head))), (len(head), pview)]
    pieces.extend((off, b) for off, b in zip(offsets, bviews, strict=True) if b.nbytes)
    return total, pieces


def read_layout(src: memoryview) -> tuple[memoryview, list[memoryview]]:
    """Zero-copy views of the pickle bytes and each buffer in ``src``.

    The views are slices of ``src``, so they keep whatever backs it (e.g. an mmap) alive.

    Raises:
        ValueError: ``src`` is not an rtml segment, has an unknown version, or is truncated.
    """
    src = src.cast("B") if src.format != "B" or src.ndim != 1 else src
    size = src.nbytes
    if size < _HEADER.size:
        raise ValueError(
            f"truncated object segment: {size} bytes, shorter than the {_HEADER.size}-byte header"
        )
    magic, version, nbuf, pickle_len = _HEADER.unpack_from(src, 0)
    if magic != MAGIC:
        raise ValueError(f"not an rtml object segment: bad magic {bytes(magic)!r}, want {MAGIC!r}")
    if version != VERSION:
        raise ValueError(
            f"unsupported object segment version {version} (this build reads {VERSION})"
        )
    hlen = _header_len(nbuf)
    if hlen > size or hlen + pickle_len > size:
        raise ValueError(
            f"truncated object segment: header declares {nbuf} buffers and a {pickle_len}-byte "
            f"pickle but the segment is only {size} bytes"
        )
    pickle_view = src[hlen : hlen + pickle_len]
    views = []
    pos = _HEADER.size
    for i in range(nbuf):
        off, n = _PAIR.unpack_from(src, pos)
        pos += _PAIR.size
        if off < hlen + pickle_len or off + n > size:
            raise ValueError(
                f"corrupt or truncated object segment: buffer {i} at [{off}, {off + n}) lies "
                f"outside the data area [{hlen + pickle_len}, {size})"
            )
        views.append(src[off : off + n])
    return pickle_view, views
