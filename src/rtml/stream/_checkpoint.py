"""Where a dataflow's checkpoints go: memory (the default), a directory, or Redis.

A checkpoint is written whole or not at all: a directory store writes it to a temporary
directory, fsyncs, renames it into place and then moves ``LATEST`` (also by rename); the Redis
store sets the checkpoint's key and ``latest`` in one MULTI/EXEC. Readers only ever follow
``LATEST``, so a crash mid-write leaves the previous checkpoint in force.
"""

from __future__ import annotations

import os
import shutil
from typing import Any

import cloudpickle

from rtml.stream._errors import ConnectorError, StreamConfigError

__all__ = ["CheckpointStore", "open_store"]

KEEP = 3


class CheckpointStore:
    """Checkpoints in this process's memory: they survive actor and node failures, not the
    driver."""

    def __init__(self) -> None:
        self._ckpts: dict[int, bytes] = {}

    def write(self, ckpt_id: int, data: dict[str, Any]) -> None:
        self._ckpts[ckpt_id] = cloudpickle.dumps(data)
        for old in sorted(self._ckpts)[:-KEEP]:
            del self._ckpts[old]

    def latest(self) -> tuple[int, dict[str, Any]] | None:
        if not self._ckpts:
            return None
        n = max(self._ckpts)
        return n, cloudpickle.loads(self._ckpts[n])

    def describe(self) -> str:
        return "memory"


class DirectoryStore(CheckpointStore):
    def __init__(self, path: str) -> None:
        self.path = os.path.abspath(path)
        try:
            os.makedirs(self.path, exist_ok=True)
        except OSError as e:
            raise StreamConfigError(f"checkpoint_dir {path!r} cannot be created: {e}")

    def _dir(self, n: int) -> str:
        return os.path.join(self.path, f"ckpt-{n:09d}")

    def write(self, ckpt_id: int, data: dict[str, Any]) -> None:
        final = self._dir(ckpt_id)
        tmp = final + ".tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
        with open(os.path.join(tmp, "state.pkl"), "wb") as f:
            f.write(cloudpickle.dumps(data))
            f.flush()
            os.fsync(f.fileno())
        shutil.rmtree(final, ignore_errors=True)
        os.rename(tmp, final)
        latest_tmp = os.path.join(self.path, "LATEST.tmp")
        with open(latest_tmp, "w") as f:
            f.write(str(ckpt_id))
            f.flush()
            os.fsync(f.fileno())
        os.rename(latest_tmp, os.path.join(self.path, "LATEST"))
        dfd = os.open(self.path, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
        kept = sorted(
            int(d[5:])
            for d in os.listdir(self.path)
            if d.startswith("ckpt-") and not d.endswith(".tmp")
        )
        for old in kept[:-KEEP]:
            shutil.rmtree(self._dir(old), ignore_errors=True)

    def latest(self) -> tuple[int, dict[str, Any]] | None:
        try:
            with open(os.path.join(self.path, "LATEST")) as f:
                n = int(f.read().strip())
        except FileNotFoundError:
            return None
        with open(os.path.join(self._dir(n), "state.pkl"), "rb") as f:
            return n, cloudpickle.loads(f.read())

    def describe(self) -> str:
        return self.path


class RedisStore(CheckpointStore):
    def __init__(self, address: str, prefix: str) -> None:
        from rtml.util.engine import optional_import

        redis = optional_import("redis", "stream", "checkpoints in Redis")
        host, _, port = address.partition(":")
        self.prefix = prefix
        self._r = redis.Redis(
            host=host or "127.0.0.1",
            port=int(port or 6379),
            socket_connect_timeout=5,
            socket_timeout=30,
        )
        try:
            self._r.ping()
        except redis.RedisError as e:
            raise ConnectorError(
                f"checkpoint store redis://{address} is unreachable ({e}); "
                "start redis-server there or use a checkpoint_dir path"
            )
        self.address = address

    def write(self, ckpt_id: int, data: dict[str, Any]) -> None:
        pipe = self._r.pipeline(transaction=True)
        pipe.set(f"{self.prefix}:ckpt:{ckpt_id}", cloudpickle.dumps(data))
        pipe.set(f"{self.prefix}:latest", ckpt_id)
        pipe.delete(f"{self.prefix}:ckpt:{ckpt_id - KEEP}")
        pipe.execute()

    def latest(self) -> tuple[int, dict[str, Any]] | None:
        n = self._r.get(f"{self.prefix}:latest")
        if n is None:
            return None
        blob = self._r.get(f"{self.prefix}:ckpt:{int(n)}")
        return int(n), cloudpickle.loads(blob)

    def close(self) -> None:
        self._r.close()

    def describe(self) -> str:
        return f"redis://{self.address}/{self.prefix}"


def open_store(where: str | None, flow_name: str) -> CheckpointStore:
    """``None``: memory; ``"redis://HOST:PORT[/prefix]"``: Redis; else a directory path."""
    if where is None:
        return CheckpointStore()
    if not isinstance(where, (str, os.PathLike)):
        raise StreamConfigError(
            f"checkpoint_dir must be a path or 'redis://HOST:PORT', got {where!r}"
        )
    where = os.fspath(where)
    if where.startswith("redis://"):
        rest = where[len("redis://") :]
        address, _, prefix = rest.partition("/")
        return RedisStore(address, prefix or f"rtml-stream:{flow_name}")
    return DirectoryStore(where)
