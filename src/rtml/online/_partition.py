"""Key-partitioned learning: one model per key (user, region, segment), keys sharded over actors.

::

    samples (key, x, y[, t]) ─ crc32(repr(key)) % n ─▶ shard actor i: {key: OnlineState}
                                                        (a clone of the model per key)
"""

from __future__ import annotations

import zlib
from collections import deque
from collections.abc import Iterable
from typing import Any

from rtml.online._core import OnlineState
from rtml.util.engine import resolve

__all__ = ["PartitionedLearner"]

_IN_FLIGHT = 4  # batches in flight per shard


def shard_of(key: Any, n: int) -> int:
    """The shard index of ``key``: stable across processes and restarts."""
    return zlib.crc32(repr(key).encode()) % n


class _Shard:
    def __init__(self, model: Any, metrics: list[Any] | None, window: int) -> None:
        self.model, self.metrics, self.window = model, metrics, window
        self.states: dict[Any, OnlineState] = {}

    def _state(self, key: Any) -> OnlineState:
        st = self.states.get(key)
        if st is None:
            st = self.states[key] = OnlineState(
                self.model.clone(), [m.clone() for m in self.metrics] if self.metrics else None,
                window=self.window)
        return st

    def learn_many(self, samples: list[tuple]) -> int:
        get = self.states.get
        for s in samples:
            st = get(s[0])
            if st is None:
                st = self._state(s[0])
            st.learn(*s[1:])
        return len(samples)

    def predict(self, key: Any, x: dict) -> Any:
        return self._state(key).predict(x)

    def stats(self) -> dict[Any, dict[str, Any]]:
        return {k: st.stats() for k, st in self.states.items()}


class PartitionedLearner:
    """One model per key, keys sharded over ``n_actors`` actors, each learning test-then-train.

    Args:
        model: the River estimator every key starts from (cloned per key).
        metrics: River metrics per key (cloned per key; default Accuracy / MAE).
        n_actors: how many shard actors.
        window: rolling-window size for the metrics (0: none).
        engine: ``"rtml"`` (default) or ``"ray"``.
    """

    def __init__(self, model: Any, metrics: list[Any] | None = None, *, n_actors: int = 2,
                 window: int = 0, engine: Any = None) -> None:
        self.engine = resolve(engine)
        self.shards = [self.engine.remote(_Shard).remote(model, metrics, window)
                       for _ in range(n_actors)]

    def learn_from(self, samples: Iterable[tuple], batch: int = 1024,
                   timeout: float = 600.0) -> int:
        """Learn from ``(key, x, y[, t])`` tuples, routed by key; returns how many were sent.

        The driver only routes: each key's shard is computed once (cached), batches go out
        with a bounded number in flight per shard, and the driver waits only on a shard
        that has too many in flight, so one slow shard does not stall the others."""
        n = len(self.shards)
        bufs: list[list[tuple]] = [[] for _ in range(n)]
        inflight: list[deque] = [deque() for _ in range(n)]
        where: dict[Any, int] = {}
        total = 0
        get, shards = self.engine.get, self.shards
        for s in samples:
            k = s[0]
            try:
                i = where[k]
            except KeyError:
                i = where[k] = shard_of(k, n)
            except TypeError:  # an unhashable key: route it without the cache
                i = shard_of(k, n)
            b = bufs[i]
            b.append(s)
            total += 1
            if len(b) >= batch:
                q = inflight[i]
                if len(q) >= _IN_FLIGHT:
                    get(q.popleft(), timeout=timeout)
                q.append(shards[i].learn_many.remote(b))
                bufs[i] = []
        for i, b in enumerate(bufs):
            if b:
                inflight[i].append(shards[i].learn_many.remote(b))
        for q in inflight:
            while q:
                get(q.popleft(), timeout=timeout)
        return total

    def predict(self, key: Any, x: dict, timeout: float = 60.0) -> Any:
        """The prediction of ``key``'s model for ``x``."""
        shard = self.shards[shard_of(key, len(self.shards))]
        return self.engine.get(shard.predict.remote(key, x), timeout=timeout)

    def stats(self, timeout: float = 60.0) -> dict[Any, dict[str, Any]]:
        """Every key's stats (position, metrics, counts, drifts)."""
        out: dict[Any, dict[str, Any]] = {}
        for part in self.engine.get([s.stats.remote() for s in self.shards], timeout=timeout):
            out.update(part)
        return out

    def kill(self) -> None:
        """Kill the shard actors."""
        for s in self.shards:
            self.engine.kill(s)
