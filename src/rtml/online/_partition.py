"""Key-partitioned learning: one model per key (user, region, segment), keys sharded over actors.

::

    samples (key, x, y[, t]) ─ crc32(repr(key)) % n ─▶ shard actor i: {key: OnlineState}
                                                        (a clone of the model per key)
    every publish_every samples: every shard's states ─▶ one registry version (ShardedState);
    resume=True: each key's state goes back to the shard of its key (any number of actors)
"""

from __future__ import annotations

import zlib
from collections import deque
from collections.abc import Iterable
from typing import Any

from rtml.online._core import OnlineState
from rtml.stream import Sink, SinkWriter
from rtml.util.engine import resolve

__all__ = ["PartitionedLearner", "PartitionedSink", "ShardedState"]

_IN_FLIGHT = 4  # batches in flight per shard


def shard_of(key: Any, n: int) -> int:
    """The shard index of ``key``: stable across processes and restarts."""
    return zlib.crc32(repr(key).encode()) % n


class ShardedState:
    """What one version of a :class:`PartitionedLearner` holds: every key's
    :class:`OnlineState` (``states[key].model`` is that key's model).

    ``position`` is the samples learned over all keys, ``event_time`` the newest, and
    :meth:`metric_values` each metric averaged over keys weighted by their samples."""

    def __init__(self, states: dict[Any, OnlineState]) -> None:
        self.states = states
        self.position = sum(st.position for st in states.values())
        times = [st.event_time for st in states.values() if st.event_time is not None]
        self.event_time = max(times) if times else None

    def metric_values(self) -> dict[str, float]:
        sums: dict[str, float] = {}
        for st in self.states.values():
            for k, v in st.metric_values().items():
                if isinstance(v, (int, float)):
                    sums[k] = sums.get(k, 0.0) + float(v) * st.position
        out = {k: v / self.position for k, v in sums.items()} if self.position else {}
        out["keys"] = float(len(self.states))
        return out


class _Shard:
    def __init__(
        self,
        model: Any,
        metrics: list[Any] | None,
        window: int,
        states: dict[Any, OnlineState] | None = None,
    ) -> None:
        self.model, self.metrics, self.window = model, metrics, window
        self.states: dict[Any, OnlineState] = dict(states or {})

    def get_states(self) -> dict[Any, OnlineState]:
        return self.states

    def _state(self, key: Any) -> OnlineState:
        st = self.states.get(key)
        if st is None:
            st = self.states[key] = OnlineState(
                self.model.clone(),
                [m.clone() for m in self.metrics] if self.metrics else None,
                window=self.window,
            )
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
        registry: a :class:`~rtml.online.ModelRegistry`: :meth:`publish` (and
            :meth:`learn_from` every ``publish_every`` samples) writes one version holding
            every key's state, a :class:`ShardedState`.
        publish_every: samples between publishes in :meth:`learn_from`.
        resume: start every key from the registry's latest version (with any ``n_actors``).
        engine: ``"rtml"`` (default) or ``"ray"``.
    """

    def __init__(
        self,
        model: Any,
        metrics: list[Any] | None = None,
        *,
        n_actors: int = 2,
        window: int = 0,
        registry: Any = None,
        publish_every: int = 10_000,
        resume: bool = False,
        engine: Any = None,
    ) -> None:
        self.engine = resolve(engine)
        self.registry, self.publish_every = registry, publish_every
        parts: list[dict[Any, OnlineState]] = [{} for _ in range(n_actors)]
        self.resumed_from: int | None = None
        if resume and registry is not None:
            try:
                v = registry.latest()
            except KeyError:
                v = None
            if v is not None and isinstance(v.state, ShardedState):
                for k, st in v.state.states.items():
                    parts[shard_of(k, n_actors)][k] = st
                self.resumed_from = v.number
        self.shards = [
            self.engine.remote(_Shard).remote(model, metrics, window, parts[i])
            for i in range(n_actors)
        ]

    def publish(self, timeout: float = 60.0) -> int:
        """Write every key's state as one new registry version; returns its number."""
        if self.registry is None:
            raise RuntimeError("this learner has no registry: pass registry=ModelRegistry(dir)")
        states: dict[Any, OnlineState] = {}
        for part in self.engine.get([s.get_states.remote() for s in self.shards], timeout=timeout):
            states.update(part)
        return int(self.registry.publish(ShardedState(states)).number)

    def learn_from(
        self, samples: Iterable[tuple], batch: int = 1024, timeout: float = 600.0
    ) -> int:
        """Learn from ``(key, x, y[, t])`` tuples, routed by key; returns how many were sent.

        The driver only routes: each key's shard is computed once (cached), batches go out
        with a bounded number in flight per shard, and the driver waits only on a shard
        that has too many in flight, so one slow shard does not stall the others."""
        n = len(self.shards)
        bufs: list[list[tuple]] = [[] for _ in range(n)]
        inflight: list[deque] = [deque() for _ in range(n)]
        where: dict[Any, int] = {}
        total = published = 0
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
            if self.registry is not None and total - published >= self.publish_every:
                self._drain(bufs, inflight, timeout)
                self.publish(timeout)
                published = total
        for i, b in enumerate(bufs):
            if b:
                inflight[i].append(shards[i].learn_many.remote(b))
        for q in inflight:
            while q:
                get(q.popleft(), timeout=timeout)
        if self.registry is not None and total > published:
            self.publish(timeout)
        return total

    def _drain(self, bufs: list[list[tuple]], inflight: list[deque], timeout: float) -> None:
        for i, b in enumerate(bufs):
            if b:
                inflight[i].append(self.shards[i].learn_many.remote(b))
                bufs[i] = []
        for q in inflight:
            while q:
                self.engine.get(q.popleft(), timeout=timeout)

    def sink(self, sample: Any = None) -> PartitionedSink:
        """A dataflow sink feeding the shards straight from the dataflow's actors (the
        driver routes nothing); see :class:`PartitionedSink`."""
        return PartitionedSink(self, sample)

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


def _default_keyed(r: Any) -> tuple:
    if isinstance(r, dict):
        return (r["key"], r["x"], r["y"], r.get("t"))
    return tuple(r)


class PartitionedSink(Sink):
    """A dataflow sink whose records are ``(key, x, y[, t])`` samples (or dicts with
    ``"key"``, ``"x"``, ``"y"``, ``"t"``) for a :class:`PartitionedLearner`. Each writer, in
    the dataflow's own actors, routes its records by key to the shard actors, a few batches in
    flight per shard. At-least-once (records go as they arrive; flushed at checkpoints).

    Args:
        learner: the :class:`PartitionedLearner`.
        sample: maps a record to ``(key, x, y[, t])``.
    """

    def __init__(self, learner: PartitionedLearner, sample: Any = None) -> None:
        self.shards = list(learner.shards)
        self.engine = learner.engine.__name__
        self.sample = sample or _default_keyed

    def open(self, writer_id: str, index: int, count: int) -> SinkWriter:
        return _PartitionedWriter(self.shards, resolve(self.engine), self.sample)


class _PartitionedWriter(SinkWriter):
    def __init__(self, shards: list[Any], engine: Any, sample: Any) -> None:
        self.shards, self.engine, self.sample = shards, engine, sample
        self.inflight: list[deque] = [deque() for _ in shards]
        self.where: dict[Any, int] = {}

    def write(self, records: list[Any]) -> None:
        n = len(self.shards)
        bufs: list[list[tuple]] = [[] for _ in range(n)]
        where, sample = self.where, self.sample
        for r in records:
            s = sample(r)
            k = s[0]
            try:
                i = where[k]
            except KeyError:
                i = where[k] = shard_of(k, n)
            except TypeError:
                i = shard_of(k, n)
            bufs[i].append(s)
        for i, b in enumerate(bufs):
            if b:
                q = self.inflight[i]
                while len(q) >= _IN_FLIGHT:
                    self.engine.get(q.popleft(), timeout=600)
                q.append(self.shards[i].learn_many.remote(b))

    def flush(self) -> None:
        for q in self.inflight:
            while q:
                self.engine.get(q.popleft(), timeout=600)

    def close(self) -> None:
        self.flush()
