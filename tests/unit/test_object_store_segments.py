"""Object store I/O: byte layout, segment files, zero-copy reads, and NodeObjectStore end to end."""

from __future__ import annotations

import mmap
import os
import pickle
import struct
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import numpy as np
import pytest

try:
    import rtml._object_store  # noqa: F401
except ImportError:  # running from a checkout without an installed package
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))

from rtml._object_store import (
    ALIGN,
    Location,
    NodeObjectStore,
    StoreFull,
    _segments,
    cleanup_session,
    layout_size,
    list_session_segments,
    map_segment,
    move_file,
    read_layout,
    read_value,
    remove,
    segment_path,
    write_layout,
    write_segment,
)

HEADER = struct.Struct("<4sIQQ")
PAIR = struct.Struct("<QQ")


@pytest.fixture
def spill_dir(tmp_path: Path) -> str:
    d = tmp_path / "spill"
    d.mkdir()
    return str(d)


@pytest.fixture
def session(tmp_path: Path):
    """A unique session; fails the test if any of its files remain in /dev/shm or tmp_path."""
    s = "t" + uuid.uuid4().hex[:12]
    yield s
    leaked = list_session_segments(s) + [str(p) for p in tmp_path.rglob(f"rtml_{s}_*")]
    for p in leaked:
        remove(p)
    assert not leaked, f"leaked segment files: {leaked}"


def _dumps(value: object) -> tuple[bytes, list[pickle.PickleBuffer]]:
    bufs: list[pickle.PickleBuffer] = []
    data = pickle.dumps(value, protocol=5, buffer_callback=bufs.append)
    return data, bufs


def _pairs(seg: bytes | memoryview) -> tuple[int, int, list[tuple[int, int]]]:
    magic, version, nbuf, plen = HEADER.unpack_from(seg, 0)
    assert magic == b"RTML"
    return version, plen, [PAIR.unpack_from(seg, HEADER.size + i * PAIR.size) for i in range(nbuf)]


def _reaches_mmap(obj: object) -> bool:
    """Follow numpy .base / memoryview .obj links looking for an mmap."""
    for _ in range(20):
        if isinstance(obj, mmap.mmap):
            return True
        if isinstance(obj, memoryview):
            obj = obj.obj
        elif isinstance(obj, np.ndarray):
            obj = obj.base
        else:
            return False
    return False


# ----------------------------------------------------------------------------- layout


@pytest.mark.parametrize("pickle_len", [0, 1, 17, 64])
@pytest.mark.parametrize("lens", [[], [1], [3, 0, 65, 127, 64, 1000, 7]])
def test_layout_round_trip_and_alignment(pickle_len: int, lens: list[int]) -> None:
    pickle_bytes = bytes((i * 7 + 3) % 256 for i in range(pickle_len))
    buffers = [memoryview(bytes((i + j) % 251 for j in range(n))) for i, n in enumerate(lens)]
    size = layout_size(pickle_len, lens)
    dest = bytearray(b"\xff" * (size + 10))  # dirty and oversized on purpose
    write_layout(memoryview(dest), pickle_bytes, buffers)

    pview, views = read_layout(memoryview(dest)[:size])
    assert bytes(pview) == pickle_bytes
    assert [bytes(v) for v in views] == [bytes(b) for b in buffers]
    assert all(v.format == "B" and v.ndim == 1 for v in views)

    version, plen, pairs = _pairs(dest)
    assert version == 1
    assert plen == pickle_len
    assert [n for _, n in pairs] == lens
    assert all(off % ALIGN == 0 for off, _ in pairs)
    assert all(off >= HEADER.size + PAIR.size * len(lens) + pickle_len for off, _ in pairs)
    # Buffers are packed in order, and the segment ends right after the last one.
    assert size == (pairs[-1][0] + pairs[-1][1] if pairs else HEADER.size + pickle_len)


def test_layout_accepts_picklebuffers_and_typed_views() -> None:
    f_order = np.asfortranarray(np.arange(12, dtype=np.int32).reshape(3, 4))
    typed = memoryview(np.arange(5, dtype=np.float64))  # format "d", not "B"
    buffers = [pickle.PickleBuffer(f_order), typed, pickle.PickleBuffer(b"abc")]
    size = layout_size(3, [48, 40, 3])
    dest = bytearray(size)
    write_layout(memoryview(dest), b"xyz", buffers)
    pview, views = read_layout(memoryview(dest))
    assert bytes(pview) == b"xyz"
    assert bytes(views[0]) == f_order.tobytes(order="F")
    assert bytes(views[1]) == typed.tobytes()
    assert bytes(views[2]) == b"abc"


def test_layout_errors() -> None:
    good = bytearray(layout_size(5, [10, 20]))
    write_layout(memoryview(good), b"hello", [b"a" * 10, b"b" * 20])

    bad = bytearray(good)
    bad[:4] = b"NOPE"
    with pytest.raises(ValueError, match="magic"):
        read_layout(memoryview(bad))
    bad = bytearray(good)
    struct.pack_into("<I", bad, 4, 99)
    with pytest.raises(ValueError, match="version"):
        read_layout(memoryview(bad))
    for cut in (0, 3, HEADER.size - 1, HEADER.size + 5, len(good) - 21, len(good) - 1):
        with pytest.raises(ValueError, match="truncated"):
            read_layout(memoryview(good)[:cut])
    with pytest.raises(ValueError, match="needs"):
        write_layout(memoryview(bytearray(len(good) - 1)), b"hello", [b"a" * 10, b"b" * 20])
    with pytest.raises(ValueError, match="writable"):
        write_layout(memoryview(bytes(len(good))), b"hello", [b"a" * 10, b"b" * 20])
    with pytest.raises(BufferError):
        write_layout(memoryview(good), b"", [np.arange(10)[::2]])  # non-contiguous


# ----------------------------------------------------------------------------- segments


def test_segment_path_validation(tmp_path: Path) -> None:
    assert segment_path("s1a2b3c", format(255, "x")) == "/dev/shm/rtml_s1a2b3c_ff"
    assert segment_path("s1", "ab", str(tmp_path)) == str(tmp_path / "rtml_s1_ab")
    for bad_session in ("", "a_b", "../x", "a/b"):
        with pytest.raises(ValueError):
            segment_path(bad_session, "ab")
    for bad_hex in ("", "xyz", "../ab", "1_2"):
        with pytest.raises(ValueError):
            segment_path("s1", bad_hex)


@pytest.mark.parametrize(
    "value",
    [
        np.arange(100_003, dtype=np.float64),
        np.asfortranarray(np.arange(3 * 1001, dtype=np.int16).reshape(3, 1001)),
        {"a": np.ones((7, 9), dtype=np.complex128), "b": np.zeros(0, np.uint8), "c": "text"},
    ],
    ids=["f64", "fortran-i16", "dict"],
)
def test_numpy_zero_copy_round_trip(session: str, value: object) -> None:
    data, bufs = _dumps(value)
    assert bufs, "numpy data should go out of band"
    path = segment_path(session, "1")
    size = write_segment(path, data, bufs)
    assert size == os.path.getsize(path) == layout_size(len(data), [b.raw().nbytes for b in bufs])
    assert os.stat(path).st_mode & 0o777 == 0o600

    pview, views = map_segment(path)
    out = pickle.loads(pview, buffers=views)
    arrays = list(out.values()) if isinstance(out, dict) else [out]
    expected = list(value.values()) if isinstance(value, dict) else [value]
    for got, want in zip(arrays, expected, strict=True):
        if not isinstance(want, np.ndarray):
            assert got == want
            continue
        np.testing.assert_array_equal(got, want)
        assert got.flags.writeable is False
        if got.nbytes:
            assert _reaches_mmap(got), "array should be a view of the mapping"
            assert got.ctypes.data % ALIGN == 0
            assert any(np.shares_memory(got, np.frombuffer(v, np.uint8)) for v in views)
            with pytest.raises(ValueError):
                got.flat[0] = 0
    remove(path)
    # Unlinking a mapped file is fine: the pages live until the views are gone.
    np.testing.assert_array_equal(arrays[0], expected[0])


def test_read_value_sees_writes_through_another_mapping(session: str) -> None:
    """In-process proof of zero copy: bytes written through a second mapping show up."""
    path = segment_path(session, "2")
    write_segment(path, *_dumps(np.zeros(4096, np.uint8)))
    arr = read_value(path)
    fd = os.open(path, os.O_RDWR)
    try:
        with mmap.mmap(fd, os.fstat(fd).st_size) as mm:
            whole = memoryview(mm)
            pview, (buf,) = read_layout(whole)
            buf[:4] = b"\x01\x02\x03\x04"
            for v in (pview, buf, whole):
                v.release()
    finally:
        os.close(fd)
    assert arr[:5].tolist() == [1, 2, 3, 4, 0]
    remove(path)


def test_write_segment_errors_leave_no_partial_file(
    session: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = segment_path(session, "3")
    write_segment(path, b"first", [])
    with pytest.raises(FileExistsError):
        write_segment(path, b"second", [])
    assert bytes(map_segment(path)[0]) == b"first"  # the existing file is untouched
    remove(path)

    def boom(*args: object) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(_segments.os, "pwrite", boom)
    with pytest.raises(RuntimeError, match="disk on fire"):
        write_segment(path, b"x" * 100, [b"y" * 1000])
    assert not os.path.exists(path)


def test_pwrite_segments_match_the_mapped_layout_byte_for_byte(session: str) -> None:
    from rtml._object_store._layout import write_layout

    pickle_bytes, bufs = b"p" * 77, [b"a" * 5, b"", b"b" * 130, b"c"]
    path = segment_path(session, "9")
    size = write_segment(path, pickle_bytes, bufs)
    expected = bytearray(size)
    write_layout(memoryview(expected), pickle_bytes, bufs)
    with open(path, "rb") as f:
        assert f.read() == bytes(expected)
    remove(path)


def test_map_segment_errors(session: str, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        map_segment(segment_path(session, "4"))
    empty = tmp_path / f"rtml_{session}_5"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="empty"):
        map_segment(str(empty))
    empty.write_bytes(b"garbage" * 10)
    with pytest.raises(ValueError, match="magic"):
        read_value(str(empty))
    remove(str(empty))
    remove(str(empty))  # missing: no error


def test_move_file(session: str, spill_dir: str) -> None:
    src = segment_path(session, "6")
    dst = segment_path(session, "6", spill_dir)
    value = np.arange(50_000, dtype=np.int64)
    write_segment(src, *_dumps(value))
    before = Path(src).read_bytes()
    move_file(src, dst)
    assert not os.path.exists(src)
    assert Path(dst).read_bytes() == before
    assert os.stat(dst).st_mode & 0o777 == 0o600
    assert os.listdir(spill_dir) == [os.path.basename(dst)]  # no temp file left
    np.testing.assert_array_equal(read_value(dst), value)

    # A failed move leaves the source intact.
    with pytest.raises(FileNotFoundError):
        move_file(dst, os.path.join(spill_dir, "missing-dir", "x"))
    assert Path(dst).read_bytes() == before
    with pytest.raises(FileNotFoundError):
        move_file(src, dst)
    move_file(dst, src)
    np.testing.assert_array_equal(read_value(src), value)
    remove(src)


def test_cleanup_and_listing(session: str, spill_dir: str) -> None:
    other = session + "-x"  # shares a prefix, must not be touched
    paths = [segment_path(session, format(i, "x")) for i in range(3)]
    paths += [segment_path(session, "a", spill_dir), segment_path(other, "1")]
    for p in paths:
        write_segment(p, b"v", [])
    Path(paths[0] + ".tmp123").write_bytes(b"half-moved")  # crash leftover of a move
    listed = list_session_segments(session)
    assert listed == sorted([*paths[:3], paths[0] + ".tmp123"])
    assert set(listed) | {paths[4]} <= set(list_session_segments())
    assert cleanup_session(session, spill_dir=spill_dir) == 5
    assert list_session_segments(session) == []
    assert os.listdir(spill_dir) == []
    assert os.path.exists(paths[4])
    assert cleanup_session(session, spill_dir=os.path.join(spill_dir, "nope")) == 0
    assert cleanup_session(other) == 1


_CHILD = """
import sys
import numpy as np
from rtml._object_store._segments import map_segment
pview, (buf,) = map_segment(sys.argv[1])
arr = np.frombuffer(buf, np.uint8)
print(bytes(pview[:2]).hex(), bytes(arr[:8]).hex(), bool(arr.flags.writeable), flush=True)
sys.stdin.readline()
print(bytes(arr[:8]).hex(), flush=True)
"""


def test_second_process_reads_same_pages(session: str) -> None:
    # A plain subprocess (not multiprocessing, whose resource tracker outlives the test).
    path = segment_path(session, "7")
    write_segment(path, *_dumps(np.zeros(1 << 16, np.uint8)))
    src = os.path.join(os.path.dirname(__file__), "..", "..", "src")
    env = dict(os.environ, PYTHONPATH=os.path.abspath(src))
    proc = subprocess.Popen(
        [sys.executable, "-c", _CHILD, path],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        head, first, writeable = proc.stdout.readline().split()
        assert head == "8005"
        assert first == bytes(8).hex()
        assert writeable == "False"
        fd = os.open(path, os.O_RDWR)  # the parent writes through its own mapping...
        try:
            with mmap.mmap(fd, os.fstat(fd).st_size) as mm:
                whole = memoryview(mm)
                pview, (buf,) = read_layout(whole)
                buf[:8] = b"ABCDEFGH"
                for v in (pview, buf, whole):
                    v.release()
        finally:
            os.close(fd)
        proc.stdin.write("go\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == b"ABCDEFGH".hex()  # ...the child sees it
    finally:
        proc.stdin.close()
        proc.wait(30)
        proc.stdout.close()
    assert proc.returncode == 0
    remove(path)


# ----------------------------------------------------------------------------- NodeObjectStore

MB = 1 << 20


def _array(i: int, n: int = 300_000) -> np.ndarray:
    return np.full(n, i, dtype=np.uint8)


def _put(store: NodeObjectStore, oid: int, value: object) -> int:
    return store.put_local(oid, *_dumps(value))


def test_store_spills_lru_and_restores(session: str, spill_dir: str) -> None:
    store = NodeObjectStore(session, MB, spill_dir)
    for oid in (1, 2, 3):
        _put(store, oid, _array(oid))
    assert store.stats()["num_on_disk"] == 0
    assert store.used <= MB

    _put(store, 4, _array(4))  # over capacity: the oldest (1) moves to disk
    assert store.path_for(1) == segment_path(session, "1", spill_dir)
    assert os.path.exists(store.path_for(1))
    assert not os.path.exists(segment_path(session, "1"))
    assert [store.path_for(i) for i in (2, 3, 4)] == [
        segment_path(session, str(i)) for i in (2, 3, 4)
    ]
    assert store.stats()["num_spilled_total"] == 1

    path = store.get_path(1)  # restore 1, which spills 2 (now the oldest)
    assert path == segment_path(session, "1")
    assert os.path.exists(path)
    assert not os.path.exists(segment_path(session, "1", spill_dir))
    assert os.path.exists(segment_path(session, "2", spill_dir))
    st = store.stats()
    assert (st["num_in_shm"], st["num_on_disk"], st["num_restored_total"]) == (3, 1, 1)
    assert st["used"] <= MB
    assert st["bytes_on_disk"] == store._state.size(2)
    store._state.validate()

    for oid in (1, 2, 3, 4):
        np.testing.assert_array_equal(read_value(store.get_path(oid)), _array(oid))
        store._state.validate()

    store.spill(4)
    assert store.delete(4) is Location.DISK  # deletes in either place remove the file
    assert store.delete(3) is Location.SHM
    assert store.delete(3) is None
    for oid in (3, 4):
        assert not os.path.exists(segment_path(session, format(oid, "x")))
        assert not os.path.exists(segment_path(session, format(oid, "x"), spill_dir))
        assert oid not in store
    with pytest.raises(KeyError):
        store.get_path(4)

    assert store.shutdown() == 2
    assert store.shutdown() == 0
    assert list_session_segments(session) == []
    assert os.listdir(spill_dir) == []
    with pytest.raises(RuntimeError):
        store.create(9, 10)


def test_store_external_producer_abort_and_full(session: str, spill_dir: str) -> None:
    store = NodeObjectStore(session, MB, spill_dir)
    data, bufs = _dumps(_array(5, 600_000))
    size = layout_size(len(data), [b.raw().nbytes for b in bufs])
    path = store.create(5, size)  # a producer in another process would do the next line
    assert write_segment(path, data, bufs) == size
    with pytest.raises(StoreFull) as info:
        store.create(6, size)  # 5 is not sealed yet, so it cannot be spilled
    assert (info.value.needed, info.value.capacity, info.value.pinned) == (size, MB, size)
    store.seal(5)

    with pytest.raises(StoreFull):
        store.create(7, MB + 1)
    store.pin(5)
    with pytest.raises(StoreFull):
        store.create(6, size)
    store.unpin(5)
    path6 = store.create(6, size)  # now 5 spills
    assert store.path_for(5) == segment_path(session, "5", spill_dir)
    Path(path6).write_bytes(b"partial")
    store.abort(6)
    assert not os.path.exists(path6)
    assert 6 not in store
    with pytest.raises(ValueError):
        store.create(5, 10)  # already known
    np.testing.assert_array_equal(read_value(store.get_path(5)), _array(5, 600_000))
    store._state.validate()
    assert store.shutdown() == 1


def test_store_failures_roll_back(
    session: str, spill_dir: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = NodeObjectStore(session, MB, spill_dir)
    _put(store, 1, _array(1, 600_000))

    def no_space(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(_segments, "move_file", no_space)
    with pytest.raises(OSError, match="No space"):
        _put(store, 2, _array(2, 600_000))
    assert 2 not in store
    assert store.path_for(1) == segment_path(session, "1")
    store._state.validate()
    monkeypatch.undo()

    def half_write(path: str, pickle_bytes: object, buffers: object) -> int:
        Path(path).write_bytes(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(_segments, "write_segment", half_write)
    with pytest.raises(OSError):  # write fails after create: reservation and file are dropped
        _put(store, 3, _array(3))
    assert 3 not in store
    assert not os.path.exists(segment_path(session, "3"))
    monkeypatch.undo()
    store._state.validate()

    # A sealed object whose file vanished is forgotten when it is picked for spilling.
    remove(segment_path(session, "1"))
    _put(store, 2, _array(2, 600_000))
    assert 1 not in store
    assert store.stats()["num_objects"] == 1
    store._state.validate()
    assert store.shutdown() == 1


def test_store_threads(session: str, spill_dir: str) -> None:
    store = NodeObjectStore(session, MB, spill_dir)
    errors: list[BaseException] = []

    def worker(base: int) -> None:
        try:
            for i in range(8):
                oid = base + i
                _put(store, oid, _array(oid % 256, 100_000))
                # Pin while mapping so another thread's create cannot spill it in between.
                store.pin(oid)
                try:
                    assert read_value(store.get_path(oid))[0] == oid % 256
                finally:
                    store.unpin(oid)
                if i % 2:
                    store.delete(oid - 1)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(100 * t,)) for t in range(1, 5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors
    store._state.validate()
    assert store.stats()["num_objects"] == 16
    assert store.shutdown() == 16
