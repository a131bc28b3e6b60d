"""Where the control plane's tables keep their rows: a small key-value interface, three backends.

::

    table code ── get/put/delete/scan, put_many/delete_many ──▶ Storage, one of:
        MemoryStorage    {table: {key: bytes}} in this process
        RedisStorage     one Redis hash per table ("<prefix>:<table>"), batches pipelined
        ShardedStorage   crc32(key) % n picks one backend per key (e.g. one Redis per shard)

Keys are ``str``, values ``bytes``; a table is just a name. The tables above keep whatever they
need to answer quickly in memory and write every change through, so a control plane built on a
durable backend (Redis) rebuilds itself from ``scan`` after a restart. The memory backend is the
embedded default and does not survive its process.

A Redis that cannot be reached raises the builtin ``ConnectionError`` naming its address, so the
layers above need not know redis-py's exception tree.
"""

from __future__ import annotations

import contextlib
import itertools
import zlib
from collections.abc import Iterable, Iterator
from typing import Any

_BATCH = 4096  # fields per HSET/HDEL command in a batch: bounded command size, few round trips


class Storage:
    """The interface every backend implements. ``durable``: whether rows outlive the process."""

    durable: bool = False

    def get(self, table: str, key: str) -> bytes | None:
        raise NotImplementedError

    def put(self, table: str, key: str, value: bytes) -> None:
        raise NotImplementedError

    def delete(self, table: str, key: str) -> None:
        raise NotImplementedError

    def scan(self, table: str) -> Iterator[tuple[str, bytes]]:
        """Every ``(key, value)`` of ``table``, in no particular order."""
        raise NotImplementedError

    def put_many(self, table: str, items: Iterable[tuple[str, bytes]]) -> None:
        for key, value in items:
            self.put(table, key, value)

    def delete_many(self, table: str, keys: Iterable[str]) -> None:
        for key in keys:
            self.delete(table, key)

    def close(self) -> None:
        """Release connections; the storage is unusable afterwards."""


class MemoryStorage(Storage):
    """Dicts in this process: the embedded default. Nothing survives the process."""

    durable = False

    def __init__(self) -> None:
        self._tables: dict[str, dict[str, bytes]] = {}

    def get(self, table: str, key: str) -> bytes | None:
        rows = self._tables.get(table)
        return None if rows is None else rows.get(key)

    def put(self, table: str, key: str, value: bytes) -> None:
        self._tables.setdefault(table, {})[key] = bytes(value)

    def delete(self, table: str, key: str) -> None:
        rows = self._tables.get(table)
        if rows is not None:
            rows.pop(key, None)

    def scan(self, table: str) -> Iterator[tuple[str, bytes]]:
        # A snapshot: callers may write to the table while they iterate.
        return iter(list(self._tables.get(table, {}).items()))

    def put_many(self, table: str, items: Iterable[tuple[str, bytes]]) -> None:
        rows = self._tables.setdefault(table, {})
        for key, value in items:
            rows[key] = bytes(value)

    def delete_many(self, table: str, keys: Iterable[str]) -> None:
        rows = self._tables.get(table)
        if rows is not None:
            for key in keys:
                rows.pop(key, None)

    def __repr__(self) -> str:
        return "MemoryStorage()"


class RedisStorage(Storage):
    """One Redis hash per table (``<prefix>:<table>``), through redis-py.

    Args:
        host, port: the redis-server.
        prefix: namespaces the hashes, so several clusters can share one Redis.
        timeout: seconds for connecting and for each command.

    Raises:
        ConnectionError: Redis is not reachable at ``host:port`` (now or on any later call).
        ImportError: redis-py is missing (``pip install 'rtml[redis]'``).
    """

    durable = True

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 6379,
        *,
        prefix: str = "rtml",
        timeout: float = 5.0,
    ) -> None:
        try:
            import redis
            import redis.backoff
            import redis.retry
        except ImportError:
            raise ImportError(
                "the Redis backend of the control plane needs redis-py: pip install 'rtml[redis]'"
            ) from None
        self.address = f"{host}:{port}"
        self._prefix = prefix
        self._errors_caught = (
            redis.exceptions.ConnectionError,
            redis.exceptions.TimeoutError,
            redis.exceptions.BusyLoadingError,
        )
        # A blip is retried briefly; a Redis that is gone must fail fast (the control plane
        # serves everyone from one thread), not after redis-py's default seconds of backoff.
        retry = redis.retry.Retry(redis.backoff.ExponentialBackoff(cap=0.2, base=0.02), 2)
        self._redis: Any = redis.Redis(
            host=host,
            port=port,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=retry,
        )
        try:
            with self._errors():
                self._redis.ping()
        except BaseException:
            self._redis.close()
            raise

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except self._errors_caught as e:
            raise ConnectionError(f"cannot reach Redis at {self.address}: {e}") from None

    def _hash(self, table: str) -> str:
        return f"{self._prefix}:{table}"

    def get(self, table: str, key: str) -> bytes | None:
        with self._errors():
            return self._redis.hget(self._hash(table), key)

    def put(self, table: str, key: str, value: bytes) -> None:
        with self._errors():
            self._redis.hset(self._hash(table), key, value)

    def delete(self, table: str, key: str) -> None:
        with self._errors():
            self._redis.hdel(self._hash(table), key)

    def scan(self, table: str) -> Iterator[tuple[str, bytes]]:
        # Read it all before yielding: HSCAN's cursor may repeat rows if writes interleave.
        with self._errors():
            rows = list(self._redis.hscan_iter(self._hash(table), count=1000))
        return ((k.decode(), v) for k, v in rows)

    def put_many(self, table: str, items: Iterable[tuple[str, bytes]]) -> None:
        name = self._hash(table)
        with self._errors():
            pipe = self._redis.pipeline(transaction=False)
            it = iter(items)
            while chunk := dict(itertools.islice(it, _BATCH)):
                pipe.hset(name, mapping=chunk)
            pipe.execute()

    def delete_many(self, table: str, keys: Iterable[str]) -> None:
        name = self._hash(table)
        with self._errors():
            pipe = self._redis.pipeline(transaction=False)
            it = iter(keys)
            while chunk := list(itertools.islice(it, _BATCH)):
                pipe.hdel(name, *chunk)
            pipe.execute()

    def clear(self) -> None:
        """Delete every hash under this prefix (a fresh cluster on a reused Redis; tests)."""
        with self._errors():
            names = list(self._redis.scan_iter(match=f"{self._prefix}:*", count=1000))
            if names:
                self._redis.delete(*names)

    def close(self) -> None:
        self._redis.close()

    def __repr__(self) -> str:
        return f"RedisStorage({self.address!r}, prefix={self._prefix!r})"


def shard_of(key: str, n: int) -> int:
    """The shard of ``key`` among ``n``: crc32, stable across processes (unlike ``hash``)."""
    return zlib.crc32(key.encode()) % n


class ShardedStorage(Storage):
    """Spreads keys over several backends (e.g. one redis-server per shard) by ``shard_of``.

    The number and order of backends must stay the same across restarts, or keys are looked for
    on the wrong shard.
    """

    def __init__(self, backends: list[Storage]) -> None:
        if not backends:
            raise ValueError("ShardedStorage needs at least one backend")
        self.backends = list(backends)
        self.durable = all(b.durable for b in self.backends)

    def _pick(self, key: str) -> Storage:
        return self.backends[shard_of(key, len(self.backends))]

    def get(self, table: str, key: str) -> bytes | None:
        return self._pick(key).get(table, key)

    def put(self, table: str, key: str, value: bytes) -> None:
        self._pick(key).put(table, key, value)

    def delete(self, table: str, key: str) -> None:
        self._pick(key).delete(table, key)

    def scan(self, table: str) -> Iterator[tuple[str, bytes]]:
        return itertools.chain.from_iterable(b.scan(table) for b in self.backends)

    def put_many(self, table: str, items: Iterable[tuple[str, bytes]]) -> None:
        n = len(self.backends)
        groups: dict[int, list[tuple[str, bytes]]] = {}
        for key, value in items:
            groups.setdefault(shard_of(key, n), []).append((key, value))
        for i, group in groups.items():
            self.backends[i].put_many(table, group)

    def delete_many(self, table: str, keys: Iterable[str]) -> None:
        n = len(self.backends)
        groups: dict[int, list[str]] = {}
        for key in keys:
            groups.setdefault(shard_of(key, n), []).append(key)
        for i, group in groups.items():
            self.backends[i].delete_many(table, group)

    def close(self) -> None:
        for b in self.backends:
            b.close()

    def __repr__(self) -> str:
        return f"ShardedStorage({self.backends!r})"


def open_storage(redis: str | None = None, *, prefix: str = "rtml") -> Storage:
    """The storage a ``--redis`` option names: ``None`` is memory, ``HOST:PORT`` one Redis,
    ``HOST:PORT,HOST:PORT,...`` one Redis per shard.

    Raises:
        ValueError: a malformed address. ConnectionError: a Redis is not reachable.
    """
    if not redis:
        return MemoryStorage()
    backends: list[Storage] = []
    try:
        for part in redis.split(","):
            host, sep, port = part.strip().rpartition(":")
            if not sep or not host or not port.isdigit():
                raise ValueError(f"a Redis address is HOST:PORT, got {part!r}")
            backends.append(RedisStorage(host, int(port), prefix=prefix))
    except BaseException:
        for b in backends:
            b.close()
        raise
    return backends[0] if len(backends) == 1 else ShardedStorage(backends)
