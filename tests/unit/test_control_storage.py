"""Control-plane storage backends: one behaviour suite over memory, Redis and sharded Redis.

The ``backend`` fixture (also used by test_control_plane.py) starts real redis-server processes
on free ports for each test and stops them after; ``make test`` installs redis-server.
"""

from __future__ import annotations

import shutil
import socket
import zlib

import pytest

from rtml._control._local_redis import LocalRedis
from rtml._control._storage import (
    MemoryStorage,
    RedisStorage,
    ShardedStorage,
    Storage,
    open_storage,
    shard_of,
)


class Backend:
    """Makes storages over the same backing data, as a restarted control plane would."""

    def __init__(self, kind: str, servers: list[LocalRedis]) -> None:
        self.kind = kind
        self.servers = servers
        self._memory = MemoryStorage()
        self._opened: list[Storage] = []

    @property
    def spec(self) -> str | None:
        return ",".join(s.address for s in self.servers) or None

    def open(self) -> Storage:
        storage = self._memory if self.kind == "memory" else open_storage(self.spec)
        self._opened.append(storage)
        return storage

    def close(self) -> None:
        for storage in self._opened:
            storage.close()


def start_redis(tmp_path, n: int) -> list[LocalRedis]:
    if shutil.which("redis-server") is None:
        pytest.fail(
            "redis-server is not installed: `make test` (or `make redis-server`) "
            "installs Debian's redis-server package"
        )
    servers: list[LocalRedis] = []
    try:
        for i in range(n):
            d = tmp_path / f"redis{i}"
            d.mkdir()
            servers.append(LocalRedis(str(d)).start())
    except BaseException:
        for s in servers:
            s.stop()
        raise
    return servers


@pytest.fixture(params=["memory", "redis", "sharded"])
def backend(request, tmp_path):
    servers = start_redis(tmp_path, {"memory": 0, "redis": 1, "sharded": 2}[request.param])
    b = Backend(request.param, servers)
    try:
        yield b
    finally:
        b.close()
        for s in servers:
            s.stop()


@pytest.fixture
def storage(backend):
    return backend.open()


# ---------------------------------------------------------------------------- behaviour suite
def test_get_put_delete(storage):
    assert storage.get("t", "a") is None
    storage.put("t", "a", b"1")
    storage.put("t", "b", b"\x00\xff binary")
    storage.put("u", "a", b"other table")
    assert storage.get("t", "a") == b"1"
    assert storage.get("t", "b") == b"\x00\xff binary"
    assert storage.get("u", "a") == b"other table"
    storage.put("t", "a", b"2")
    assert storage.get("t", "a") == b"2"
    storage.delete("t", "a")
    storage.delete("t", "never there")
    storage.delete("no such table", "a")
    assert storage.get("t", "a") is None
    assert dict(storage.scan("t")) == {"b": b"\x00\xff binary"}
    assert dict(storage.scan("empty")) == {}


def test_batches_larger_than_one_command(storage):
    items = [(f"k{i}", str(i).encode()) for i in range(10_000)]
    storage.put_many("t", iter(items))  # any iterable, consumed once
    assert dict(storage.scan("t")) == dict(items)
    storage.delete_many("t", (k for k, _ in items[:9_000]))
    assert dict(storage.scan("t")) == dict(items[9_000:])
    storage.put_many("t", [])
    storage.delete_many("t", [])
    assert len(dict(storage.scan("t"))) == 1_000


def test_unicode_keys(storage):
    storage.put("t", "ключ\0with nul", b"v")
    assert storage.get("t", "ключ\0with nul") == b"v"
    assert dict(storage.scan("t")) == {"ключ\0with nul": b"v"}


def test_scan_is_a_snapshot(storage):
    storage.put_many("t", [(str(i), b"x") for i in range(100)])
    for key, _ in storage.scan("t"):
        storage.delete("t", key)
    assert dict(storage.scan("t")) == {}


def test_a_new_storage_sees_the_same_rows(backend):
    first = backend.open()
    first.put("t", "k", b"v")
    again = backend.open()
    assert again.get("t", "k") == b"v"
    assert again.durable == (backend.kind != "memory")


# ---------------------------------------------------------------------------- backend specifics
def test_shards_are_chosen_by_a_stable_hash():
    assert shard_of("task-1", 2) == zlib.crc32(b"task-1") % 2
    a, b = MemoryStorage(), MemoryStorage()
    sharded = ShardedStorage([a, b])
    sharded.put_many("t", [(str(i), b"x") for i in range(200)])
    on_a, on_b = dict(a.scan("t")), dict(b.scan("t"))
    assert on_a
    assert on_b
    assert not on_a.keys() & on_b.keys()
    assert all(shard_of(k, 2) == 0 for k in on_a)
    assert all(shard_of(k, 2) == 1 for k in on_b)
    assert dict(sharded.scan("t")).keys() == on_a.keys() | on_b.keys()
    sharded.delete_many("t", [str(i) for i in range(200)])
    assert not dict(a.scan("t"))
    assert not dict(b.scan("t"))
    assert not sharded.durable
    with pytest.raises(ValueError):
        ShardedStorage([])


def test_open_storage_parses_addresses(tmp_path):
    assert isinstance(open_storage(None), MemoryStorage)
    assert isinstance(open_storage(""), MemoryStorage)
    with pytest.raises(ValueError, match="HOST:PORT"):
        open_storage("localhost")
    with pytest.raises(ValueError, match="HOST:PORT"):
        open_storage("localhost:x")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_redis_names_its_address():
    port = _closed_port()
    with pytest.raises(ConnectionError, match=f"127.0.0.1:{port}"):
        RedisStorage("127.0.0.1", port, timeout=1.0)
    with pytest.raises(ConnectionError, match=f"127.0.0.1:{port}"):
        open_storage(f"127.0.0.1:{port}")


def test_redis_going_away_raises_connection_error(tmp_path):
    (server,) = start_redis(tmp_path, 1)
    storage = RedisStorage("127.0.0.1", server.port, timeout=1.0)
    try:
        storage.put("t", "k", b"v")
        server.stop(kill=True)
        with pytest.raises(ConnectionError, match=server.address):
            storage.get("t", "k")
        with pytest.raises(ConnectionError, match=server.address):
            storage.put_many("t", [("a", b"b")])
    finally:
        storage.close()
        server.stop()


def test_redis_prefix_separates_clusters_and_clear(tmp_path):
    (server,) = start_redis(tmp_path, 1)
    one = RedisStorage("127.0.0.1", server.port, prefix="one")
    two = RedisStorage("127.0.0.1", server.port, prefix="two")
    try:
        one.put("t", "k", b"1")
        two.put("t", "k", b"2")
        assert one.get("t", "k") == b"1"
        assert two.get("t", "k") == b"2"
        one.clear()
        assert one.get("t", "k") is None
        assert two.get("t", "k") == b"2"
        assert "one" in repr(one)
    finally:
        one.close()
        two.close()
        server.stop()
