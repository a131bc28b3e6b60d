"""Data-parallel learning for mergeable models: replicas learn on shares, then average.

::

    samples ─ round robin by batch ─▶ replica 0 .. n-1 (each an OnlineState, test then train)
    every sync_every samples: driver gets every replica's model ─▶ average ─▶ set on every replica
                              └─▶ registry (optional): one version, the average + every replica

Mergeable here means River's linear models (``LinearRegression``, ``LogisticRegression``:
weights and intercept averaged) optionally behind a ``StandardScaler`` (counts, means and
variances pooled exactly). Anything else is refused when the learner is built.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from rtml.online._core import OnlineState, _river
from rtml.util.engine import resolve

__all__ = ["AveragedState", "DataParallelLearner", "average"]


def _parts(model: Any) -> list[Any]:
    steps = getattr(model, "steps", None)
    return list(steps.values()) if steps is not None else [model]


def _check(model: Any) -> None:
    river = _river()
    ok = (
        river.linear_model.LinearRegression,
        river.linear_model.LogisticRegression,
        river.preprocessing.StandardScaler,
    )
    bad = [type(p).__name__ for p in _parts(model) if not isinstance(p, ok)]
    if bad:
        raise TypeError(
            f"data-parallel learning cannot merge {', '.join(bad)}: use "
            "LinearRegression/LogisticRegression (optionally after a StandardScaler), "
            "or PartitionedLearner for models that cannot be averaged"
        )


def _sums(s: Any) -> tuple[dict, dict, dict]:
    n = dict(s.counts)
    s1 = {k: c * s.means.get(k, 0.0) for k, c in n.items()}
    s2 = {k: c * (s.vars.get(k, 0.0) + s.means.get(k, 0.0) ** 2) for k, c in n.items()}
    return n, s1, s2


def average(models: list[Any], base: Any = None) -> Any:
    """A model whose state is the average of ``models`` (same structure, see module doc).

    Args:
        models: replicas of one model.
        base: the model every replica started from at the last average (``None``: they share
            no history); a scaler's statistics are pooled from what each replica added to it.

    Raises:
        TypeError: a step that cannot be merged.
    """
    _check(models[0])
    out = models[0].clone(include_attributes=True)
    for i, part in enumerate(_parts(out)):
        src = [_parts(m)[i] for m in models]
        if hasattr(part, "means"):  # StandardScaler: pooled count, mean and variance
            n0, a0, b0 = _sums(_parts(base)[i]) if base is not None else ({}, {}, {})
            n, s1, s2 = dict(n0), dict(a0), dict(b0)
            for s in src:
                ni, ai, bi = _sums(s)
                for k in ni:
                    n[k] = n.get(k, 0) + ni[k] - n0.get(k, 0)
                    s1[k] = s1.get(k, 0.0) + ai[k] - a0.get(k, 0.0)
                    s2[k] = s2.get(k, 0.0) + bi[k] - b0.get(k, 0.0)
            means: dict = defaultdict(float)
            vars_: dict = defaultdict(float)
            for k, c in n.items():
                if c:
                    means[k] = s1[k] / c
                    vars_[k] = max(0.0, s2[k] / c - means[k] ** 2)
            part.counts.clear()
            part.counts.update(n)
            part.means, part.vars = means, vars_
        else:  # linear model: mean weights and intercept
            keys = set().union(*(dict(s._weights).keys() for s in src))
            for k in keys:
                part._weights[k] = sum(dict(s._weights).get(k, 0.0) for s in src) / len(src)
            part.intercept = sum(s.intercept for s in src) / len(src)
    return out


class AveragedState:
    """What one version of a :class:`DataParallelLearner` holds: the averaged ``model`` (what a
    subscriber serves) and every replica's :class:`OnlineState` (to resume from)."""

    def __init__(self, model: Any, replicas: list[OnlineState], base: Any) -> None:
        self.model, self.replicas, self.base = model, replicas, base
        self.position = sum(st.position for st in replicas)
        times = [st.event_time for st in replicas if st.event_time is not None]
        self.event_time = max(times) if times else None

    def metric_values(self) -> dict[str, float]:
        sums: dict[str, float] = {}
        for st in self.replicas:
            for k, v in st.metric_values().items():
                if isinstance(v, (int, float)):
                    sums[k] = sums.get(k, 0.0) + float(v) * st.position
        return {k: v / self.position for k, v in sums.items()} if self.position else {}


class _Replica:
    def __init__(
        self, model: Any, metrics: list[Any] | None, state: OnlineState | None = None
    ) -> None:
        self.state = state if state is not None else OnlineState(model, metrics, window=0)

    def get_state(self) -> OnlineState:
        return self.state

    def learn_many(self, samples: list[tuple]) -> int:
        for s in samples:
            self.state.learn(*s)
        return self.state.position

    def get_model(self) -> Any:
        return self.state.model

    def set_model(self, model: Any) -> None:
        self.state.model = model

    def stats(self) -> dict[str, Any]:
        return self.state.stats()


class DataParallelLearner:
    """``n_actors`` replicas of a mergeable model, averaged every ``sync_every`` samples.

    Args:
        model: a River linear model, optionally ``StandardScaler() | ...`` in front.
        metrics: River metrics each replica scores test-then-train on its share.
        n_actors: how many replicas.
        sync_every: average after this many samples in total.
        registry: a :class:`~rtml.online.ModelRegistry`: every average is published as one
            version, an :class:`AveragedState` (its ``model`` is the average).
        resume: start from the registry's latest version (the replicas' states and the
            average; with the same ``n_actors``, else the average alone).
        engine: ``"rtml"`` (default) or ``"ray"``.

    Raises:
        TypeError: the model cannot be averaged (the message names the step).
    """

    def __init__(
        self,
        model: Any,
        metrics: list[Any] | None = None,
        *,
        n_actors: int = 2,
        sync_every: int = 1000,
        registry: Any = None,
        resume: bool = False,
        engine: Any = None,
    ) -> None:
        _check(model)
        self.engine = resolve(engine)
        self.sync_every = sync_every
        self.registry = registry
        self.base: Any = None
        states: list[OnlineState | None] = [None] * n_actors
        self.resumed_from: int | None = None
        if resume and registry is not None:
            try:
                v = registry.latest()
            except KeyError:
                v = None
            if v is not None and isinstance(v.state, AveragedState):
                self.base = v.state.model
                model = v.state.model
                if len(v.state.replicas) == n_actors:
                    states = list(v.state.replicas)
                self.resumed_from = v.number
        self.replicas = [
            self.engine.remote(_Replica).remote(
                model.clone(include_attributes=True), metrics, states[i]
            )
            for i in range(n_actors)
        ]
        self.syncs = 0

    def sync(self, timeout: float = 60.0) -> Any:
        """Average the replicas' models now and give every replica the average; returns it
        (and publishes it, with a registry)."""
        models = self.engine.get([r.get_model.remote() for r in self.replicas], timeout=timeout)
        avg = average(models, self.base)
        self.base = avg
        self.engine.get([r.set_model.remote(avg) for r in self.replicas], timeout=timeout)
        self.syncs += 1
        if self.registry is not None:
            reps = self.engine.get([r.get_state.remote() for r in self.replicas], timeout=timeout)
            self.registry.publish(AveragedState(avg, reps, avg))
        return avg

    def learn_from(self, samples: Iterable[tuple], batch: int = 100, timeout: float = 600.0) -> Any:
        """Learn from ``(x, y[, t])`` samples; returns the final averaged model."""
        buf: list[tuple] = []
        refs: list[Any] = []
        since = i = 0
        for s in samples:
            buf.append(tuple(s))
            if len(buf) >= batch:
                refs.append(self.replicas[i % len(self.replicas)].learn_many.remote(buf))
                since += len(buf)
                buf, i = [], i + 1
                if since >= self.sync_every:
                    self.engine.get(refs, timeout=timeout)
                    refs, since = [], 0
                    self.sync(timeout)
        if buf:
            refs.append(self.replicas[i % len(self.replicas)].learn_many.remote(buf))
        self.engine.get(refs, timeout=timeout)
        return self.sync(timeout)

    def stats(self, timeout: float = 60.0) -> list[dict[str, Any]]:
        """Each replica's stats (its share's test-then-train metrics)."""
        return list(self.engine.get([r.stats.remote() for r in self.replicas], timeout=timeout))

    def kill(self) -> None:
        """Kill the replicas."""
        for r in self.replicas:
            self.engine.kill(r)
