"""How fast can one 800 MB object be written into /dev/shm? (docs/decisions/0003).

Compares writing a segment through a mapping with writing it with pwrite, and shows memcpy
into fresh and warm memory for scale. Run: python bench/segment_writes.py
"""

from __future__ import annotations

import mmap
import os
import pickle
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))

from rtml._object_store._layout import layout_size, write_layout
from rtml._object_store._segments import write_segment

GB = 1 << 30


def mapped_write(path: str, data: bytes, bufs: list) -> None:
    size = layout_size(len(data), [b.raw().nbytes for b in bufs])
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
    try:
        os.ftruncate(fd, size)
        with mmap.mmap(fd, size) as mm:
            view = memoryview(mm)
            write_layout(view, data, bufs)
            view.release()
    finally:
        os.close(fd)


def rate(fn, path: str, data: bytes, bufs: list, nbytes: int) -> float:
    t = time.perf_counter()
    fn(path, data, bufs)
    elapsed = time.perf_counter() - t
    os.unlink(path)
    return nbytes / GB / elapsed


def main() -> None:
    arr = np.zeros(100 * 1024 * 1024, dtype=np.int64)
    bufs: list = []
    data = pickle.dumps(arr, protocol=5, buffer_callback=bufs.append)
    path = f"/dev/shm/rtml_bench{os.getpid():x}_1"
    for name, fn in (("mmap + copy", mapped_write), ("pwrite (write_segment)", write_segment)):
        rates = [rate(fn, path, data, bufs, arr.nbytes) for _ in range(3)]
        print(f"{name:24s} " + "  ".join(f"{r:.2f}" for r in rates) + " GB/s")
    t = time.perf_counter()
    fresh = arr.copy()
    print(f"{'memcpy, fresh memory':24s} {arr.nbytes / GB / (time.perf_counter() - t):.2f} GB/s")
    t = time.perf_counter()
    fresh[:] = arr
    print(f"{'memcpy, warm memory':24s} {arr.nbytes / GB / (time.perf_counter() - t):.2f} GB/s")


if __name__ == "__main__":
    main()
