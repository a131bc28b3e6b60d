"""Where a :class:`~rtml.online.ModelRegistry` keeps its versions: a directory or Redis.

::

    directory                                  Redis (prefix rtml:online:<name>:)
    ├── v00000001.pkl  (meta, blob), immutable  ├── seq           INCR: the next number
    ├── v00000002.pkl                           ├── v:<n>         hash {meta, blob}, immutable
    ├── HEAD           {"latest", "pinned"}     ├── versions      sorted set of numbers
    └── subscribers/<id>.json  (stats)          ├── head          hash {latest, pinned}
                                                └── sub:<id>      stats JSON, expires

Both publish atomically: a file is written to a temporary name, fsynced and renamed; in Redis
one Lua script allocates the number, writes the version, indexes it, moves ``latest`` and
prunes, so a reader sees a whole version or none. ``head()`` is the cheap poll: one small
file read, or one ``HMGET``.
"""

from __future__ import annotations

import json
import os
import pickle
import threading
import time
from typing import Any

from rtml.util.engine import optional_import

__all__ = ["DirStore", "RedisStore", "is_redis_location"]

_REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


def is_redis_location(location: Any) -> bool:
    return isinstance(location, str) and location.startswith(_REDIS_SCHEMES)


class DirStore:
    """Versions as files of one directory (created if missing)."""

    def __init__(self, path: str, keep: int | None) -> None:
        self.path, self.keep = path, keep
        os.makedirs(self.path, exist_ok=True)

    def describe(self) -> str:
        return self.path

    def _file(self, number: int) -> str:
        return os.path.join(self.path, f"v{number:08d}.pkl")

    def _write(self, name: str, data: bytes, directory: str | None = None) -> None:
        d = directory or self.path
        tmp = os.path.join(d, f".{name}.{os.getpid()}.{threading.get_ident()}.tmp")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, os.path.join(d, name))

    def _read_head(self) -> dict[str, Any]:
        try:
            with open(os.path.join(self.path, "HEAD"), encoding="utf-8") as f:
                return dict(json.load(f))
        except FileNotFoundError:
            return {"latest": 0, "pinned": None}

    def head(self) -> tuple[int, int | None]:
        h = self._read_head()
        return int(h["latest"]), (int(h["pinned"]) if h["pinned"] else None)

    def versions(self) -> list[int]:
        return sorted(
            int(n[1:9]) for n in os.listdir(self.path) if n.startswith("v") and n.endswith(".pkl")
        )

    def put(self, meta: dict[str, Any], blob: bytes) -> int:
        head = self._read_head()
        number = max(head["latest"], *(self.versions() or [0])) + 1
        meta = {**meta, "number": number}
        self._write(f"v{number:08d}.pkl", pickle.dumps((meta, blob), protocol=5))
        head["latest"] = number
        self._write("HEAD", json.dumps(head).encode())
        if self.keep:
            pinned = head.get("pinned")
            for old in self.versions()[: -self.keep]:
                if old != pinned:
                    try:
                        os.remove(self._file(old))
                    except FileNotFoundError:
                        pass
        return number

    def read(self, number: int) -> tuple[dict[str, Any], bytes]:
        try:
            with open(self._file(number), "rb") as f:
                meta, blob = pickle.loads(f.read())
        except FileNotFoundError:
            raise KeyError(number) from None
        return meta, blob

    def set_pin(self, number: int | None) -> None:
        if number is not None and not os.path.exists(self._file(number)):
            raise KeyError(number)
        head = self._read_head()
        head["pinned"] = number
        self._write("HEAD", json.dumps(head).encode())

    def report(self, sub_id: str, stats: dict[str, Any], ttl: float) -> None:
        d = os.path.join(self.path, "subscribers")
        os.makedirs(d, exist_ok=True)
        self._write(
            f"{sub_id}.json", json.dumps({**stats, "reported": time.time(), "ttl": ttl}).encode(), d
        )

    def reports(self) -> list[dict[str, Any]]:
        d = os.path.join(self.path, "subscribers")
        out = []
        now = time.time()
        for n in sorted(os.listdir(d)) if os.path.isdir(d) else []:
            if not n.endswith(".json"):
                continue
            try:
                with open(os.path.join(d, n), encoding="utf-8") as f:
                    r = json.load(f)
            except (OSError, ValueError):
                continue
            if now - r.get("reported", 0) <= r.get("ttl", 10):
                out.append(r)
            elif now - r.get("reported", 0) > 3600:
                try:
                    os.remove(os.path.join(d, n))  # a subscriber gone for an hour
                except OSError:
                    pass
        return out

    def forget(self, sub_id: str) -> None:
        try:
            os.remove(os.path.join(self.path, "subscribers", f"{sub_id}.json"))
        except OSError:
            pass


# KEYS: seq, versions, head. ARGV: prefix, meta JSON, blob, keep (0: all).
_PUBLISH = """
local n = redis.call('INCR', KEYS[1])
local latest = tonumber(redis.call('HGET', KEYS[3], 'latest') or '0')
if n <= latest then
  n = latest + 1
  redis.call('SET', KEYS[1], n)
end
redis.call('HSET', ARGV[1] .. 'v:' .. n, 'meta', ARGV[2], 'blob', ARGV[3])
redis.call('ZADD', KEYS[2], n, n)
redis.call('HSET', KEYS[3], 'latest', n)
local keep = tonumber(ARGV[4])
if keep > 0 then
  local pinned = tonumber(redis.call('HGET', KEYS[3], 'pinned') or '0')
  local old = redis.call('ZRANGE', KEYS[2], 0, -(keep + 1))
  for _, v in ipairs(old) do
    if tonumber(v) ~= pinned then
      redis.call('DEL', ARGV[1] .. 'v:' .. v)
      redis.call('ZREM', KEYS[2], v)
    end
  end
end
return n
"""

# KEYS: head, versions. ARGV: number (0: unpin).
_PIN = """
local n = tonumber(ARGV[1])
if n == 0 then
  redis.call('HDEL', KEYS[1], 'pinned')
  return 1
end
if not redis.call('ZSCORE', KEYS[2], n) then
  return 0
end
redis.call('HSET', KEYS[1], 'pinned', n)
return 1
"""


class RedisStore:
    """Versions in Redis under ``rtml:online:<name>:``; the client is made lazily in each
    process (the store travels pickled as its URL)."""

    def __init__(self, url: str, name: str, keep: int | None) -> None:
        self.url, self.name, self.keep = url, name, keep
        self.prefix = f"rtml:online:{name}:"
        self._client: Any = None
        self._pid = 0
        self._scripts: dict[str, Any] = {}
        self.redis = optional_import("redis", "stream", "rtml.online's Redis ModelRegistry")
        self._r()  # fail now, naming the address, if the server is not there

    def describe(self) -> str:
        return f"{self.url} ({self.prefix}*)"

    def _r(self) -> Any:
        if self._client is None or self._pid != os.getpid():
            client = self.redis.Redis.from_url(
                self.url, socket_connect_timeout=5, socket_timeout=30
            )
            try:
                client.ping()
            except self.redis.RedisError as e:
                client.close()
                raise ConnectionError(
                    f"the model registry cannot reach Redis at {self.url}: "
                    f"{e}; check that redis-server runs there"
                ) from e
            self._client, self._pid = client, os.getpid()
            self._scripts = {
                "publish": client.register_script(_PUBLISH),
                "pin": client.register_script(_PIN),
            }
        return self._client

    def _k(self, key: str) -> str:
        return self.prefix + key

    def head(self) -> tuple[int, int | None]:
        latest, pinned = self._r().hmget(self._k("head"), "latest", "pinned")
        return int(latest or 0), (int(pinned) if pinned else None)

    def versions(self) -> list[int]:
        return [int(v) for v in self._r().zrange(self._k("versions"), 0, -1)]

    def put(self, meta: dict[str, Any], blob: bytes) -> int:
        self._r()
        return int(
            self._scripts["publish"](
                keys=[self._k("seq"), self._k("versions"), self._k("head")],
                args=[self.prefix, json.dumps(meta), blob, int(self.keep or 0)],
            )
        )

    def read(self, number: int) -> tuple[dict[str, Any], bytes]:
        meta, blob = self._r().hmget(self._k(f"v:{number}"), "meta", "blob")
        if meta is None or blob is None:
            raise KeyError(number)
        return {**json.loads(meta), "number": number}, blob

    def set_pin(self, number: int | None) -> None:
        self._r()
        ok = self._scripts["pin"](
            keys=[self._k("head"), self._k("versions")], args=[int(number or 0)]
        )
        if not ok:
            raise KeyError(number)

    def report(self, sub_id: str, stats: dict[str, Any], ttl: float) -> None:
        self._r().set(
            self._k(f"sub:{sub_id}"),
            json.dumps({**stats, "reported": time.time(), "ttl": ttl}),
            px=max(1, int(ttl * 1000)),
        )

    def reports(self) -> list[dict[str, Any]]:
        r = self._r()
        keys = sorted(r.scan_iter(match=self._k("sub:*"), count=100))
        out = []
        for raw in r.mget(keys) if keys else []:
            if raw is not None:
                out.append(json.loads(raw))
        return out

    def forget(self, sub_id: str) -> None:
        self._r().delete(self._k(f"sub:{sub_id}"))
