"""Learners: an :class:`OnlineState` in an actor, fed by calls, iterables or a dataflow sink.

::

    learner.learn.remote(x, y) ─┐
    learner.learn_from(iter)  ──┼─▶ learner actor: OnlineState (test then train, drift,
    dataflow ─▶ LearnerSink ────┘     dead letters) ─ every N samples or T seconds ─▶ ModelRegistry
                                                                                       │
                           resume=True: the actor starts from the registry's latest ◀──┘
                           snapshot; learner.position() is the source offset to replay from
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from rtml.online._core import Drift, OnlineState
from rtml.online._panel import track
from rtml.online._registry import ModelRegistry
from rtml.stream import Sink, SinkWriter
from rtml.util.engine import resolve

__all__ = ["Learner", "LearnerSink"]

_IN_FLIGHT = 4


class _LearnerActor:
    def __init__(self, state: OnlineState, registry: ModelRegistry | None,
                 publish_every: int, publish_interval: float, resume: bool) -> None:
        self.registry = registry
        self.state = state
        if resume and registry is not None and registry.versions():
            self.state = registry.latest().state
        self.every, self.interval = publish_every, publish_interval
        self.last_pos, self.last_t = self.state.position, time.monotonic()

    def _maybe_publish(self) -> None:
        if self.registry is None:
            return
        if (self.state.position - self.last_pos >= self.every
                or (time.monotonic() - self.last_t >= self.interval
                    and self.state.position > self.last_pos)):
            self.publish()

    def publish(self) -> int:
        if self.registry is None:
            raise RuntimeError("this learner has no registry: pass registry=ModelRegistry(dir)")
        v = self.registry.publish(self.state)
        self.last_pos, self.last_t = self.state.position, time.monotonic()
        return v.number

    def learn(self, x: Any, y: Any, t: float | None = None) -> bool:
        ok = self.state.learn(x, y, t)
        self._maybe_publish()
        return ok

    def learn_many(self, samples: list[tuple]) -> int:
        st = self.state
        for s in samples:
            st.learn(*s)
            if self.registry is not None and st.position - self.last_pos >= self.every:
                self.publish()
        self._maybe_publish()
        return st.position

    def ask(self, key: Any, x: Any) -> Any:
        return self.state.ask(key, x)

    def answer(self, key: Any, y: Any, t: float | None = None) -> bool:
        self.state.expire()
        ok = self.state.answer(key, y, t)
        self._maybe_publish()
        return ok

    def predict(self, x: Any) -> Any:
        return self.state.predict(x)

    def stats(self) -> dict[str, Any]:
        return self.state.stats()

    def dead_letters(self) -> list[dict[str, Any]]:
        return list(self.state.dead)

    def position(self) -> int:
        return self.state.position

    def get_state(self) -> OnlineState:
        return self.state


class Learner:
    """A River model learning in an actor, test-then-train, publishing versions.

    Args:
        model: a River estimator (``learn_one``, ``predict_one``/``predict_proba_one``).
        metrics: River metrics for test-then-train evaluation (default Accuracy / MAE).
        window: rolling-window size for a second copy of each metric (0: none).
        drift: a :class:`Drift` (e.g. ``Drift(action="reset")``), or ``None``.
        registry: a :class:`ModelRegistry` to publish snapshots to.
        publish_every: publish after this many samples learned ...
        publish_interval: ... or this many seconds, whichever comes first.
        resume: start from the registry's latest snapshot (then replay the source from
            :meth:`position`).
        label_timeout: seconds a delayed-label prediction waits before it is expired.
        engine: ``"rtml"`` (default) or ``"ray"``.

    Calls: ``learner.learn.remote(x, y[, t])``, ``learn_many.remote([(x, y[, t]), ...])``,
    ``ask.remote(key, x)`` then ``answer.remote(key, y)`` for delayed labels,
    ``predict.remote(x)``, ``stats.remote()``, ``dead_letters.remote()``, ``publish.remote()``.
    """

    def __init__(self, model: Any, metrics: list[Any] | None = None, *, window: int = 1000,
                 drift: Drift | None = None, registry: ModelRegistry | None = None,
                 publish_every: int = 1000, publish_interval: float = 1.0,
                 resume: bool = False, label_timeout: float = 600.0,
                 engine: Any = None) -> None:
        self.engine = resolve(engine)
        state = OnlineState(model, metrics, window=window, drift=drift,
                            label_timeout=label_timeout)
        self.handle = self.engine.remote(_LearnerActor).remote(
            state, registry, publish_every, publish_interval, resume)
        self.registry = registry
        self.model_name = type(model).__name__
        track(self)  # a row of the dashboard's Online learning panel

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name in ("handle", "engine", "registry", "model_name"):
            raise AttributeError(name)
        return getattr(self.handle, name)

    def get(self, method: str, *args: Any, timeout: float = 60.0) -> Any:
        """Call ``method`` on the actor and wait for its result (``learner.get("stats")``)."""
        return self.engine.get(getattr(self.handle, method).remote(*args), timeout=timeout)

    def learn_from(self, samples: Iterable[tuple], batch: int = 256,
                   timeout: float = 600.0) -> int:
        """Learn from an iterable of ``(x, y)`` or ``(x, y, event_time)`` in batches, with at
        most a few batches in flight. Returns the position after the last sample."""
        inflight: deque = deque()
        buf: list[tuple] = []
        pos = 0
        for s in samples:
            buf.append(tuple(s))
            if len(buf) >= batch:
                if len(inflight) >= _IN_FLIGHT:
                    pos = self.engine.get(inflight.popleft(), timeout=timeout)
                inflight.append(self.handle.learn_many.remote(buf))
                buf = []
        if buf:
            inflight.append(self.handle.learn_many.remote(buf))
        while inflight:
            pos = self.engine.get(inflight.popleft(), timeout=timeout)
        return int(pos)

    def sink(self, **kw: Any) -> LearnerSink:
        """A :class:`LearnerSink` feeding this learner (same arguments)."""
        return LearnerSink(self, **kw)

    def kill(self) -> None:
        """Kill the learner's actor (what was published stays in the registry)."""
        self.engine.kill(self.handle)


def _default_sample(r: Any) -> tuple:
    if isinstance(r, dict):
        return (r["x"], r["y"], r.get("t"))
    return tuple(r)


class LearnerSink(Sink):
    """A dataflow sink whose records are samples for a :class:`Learner` (at-least-once).

    Args:
        learner: the :class:`Learner` (or its actor handle).
        sample: maps a record to ``(x, y)`` or ``(x, y, event_time)``; default takes a tuple
            as is and a dict's ``"x"``, ``"y"``, ``"t"``.
    """

    def __init__(self, learner: Any, sample: Callable[[Any], tuple] | None = None,
                 engine: Any = None) -> None:
        self.handle = learner.handle if isinstance(learner, Learner) else learner
        self.engine = learner.engine if isinstance(learner, Learner) else engine
        self.sample = sample or _default_sample

    def __getstate__(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        if not isinstance(d["engine"], (str, type(None))):
            d["engine"] = d["engine"].__name__
        return d

    def open(self, writer_id: str, index: int, count: int) -> SinkWriter:
        return _LearnerWriter(self.handle, resolve(self.engine), self.sample)


class _LearnerWriter(SinkWriter):
    def __init__(self, handle: Any, engine: Any, sample: Callable[[Any], tuple]) -> None:
        self.handle, self.engine, self.sample = handle, engine, sample
        self.inflight: deque = deque()

    def write(self, records: list[Any]) -> None:
        while len(self.inflight) >= _IN_FLIGHT:
            self.engine.get(self.inflight.popleft(), timeout=60)
        self.inflight.append(self.handle.learn_many.remote([self.sample(r) for r in records]))

    def flush(self) -> None:
        while self.inflight:
            self.engine.get(self.inflight.popleft(), timeout=60)

    def close(self) -> None:
        self.flush()
