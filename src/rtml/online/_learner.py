"""Learners: an :class:`OnlineState` in an actor, fed by calls, iterables or a dataflow sink.

::

    learner.learn.remote(x, y) ─┐
    learner.learn_from(iter)  ──┼─▶ learner actor: OnlineState (test then train, drift,
    dataflow ─▶ LearnerSink ────┘     dead letters) ─ every N samples or T seconds ─▶ ModelRegistry
        (exactly once: one                 │  └─ dead letters, batched ─▶ a Sink or a callable
         learn_epoch per checkpoint        │
         epoch, skipped if learned)        └─ killed ─▶ restarted (max_restarts) from the
                                              registry's latest snapshot of this learner

Exactly once from a dataflow: the sink hands each checkpoint epoch to the learner once the
dataflow's checkpoint is durable (``write_epoch``); the learner records, in its state, which
epoch of which writer it has learned (and how far into it), publishes a snapshot at the end of
the epoch, and skips what it already has when an epoch is handed over again. So a killed learner
restarts from its last snapshot and the runtime re-sends the calls that were in flight; a killed
dataflow stage restores its checkpoint and re-hands its pending epochs; either way every record
is learned once, in order.
"""

from __future__ import annotations

import sys
import time
import uuid
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
_EPOCHS_IN_FLIGHT = 1  # per writer: a call re-sent after a restart cannot overtake another
_DEAD_EVERY = 0.1  # seconds between deliveries of dead letters (at least)
_DEAD_BUFFER = 100_000  # dead letters waiting for delivery at most (more are dropped, counted)


class _DeadLetters:
    """Delivers the state's dead letters in batches: to ``fn(records)`` or to a rtml.stream
    Sink's writer, at the end of the actor call that produced them (at most every
    ``_DEAD_EVERY`` s, else with a later call), never from inside the learning loop. Not from
    a thread of its own: a single-threaded actor must not wait on the runtime from another
    thread (a sink writer does)."""

    def __init__(self, out: Any, state: OnlineState, learner_id: str) -> None:
        self.out, self.state = out, state
        self.writer: SinkWriter | None = None
        self.writer_id = f"online:{learner_id}/dead_letters"
        self.sent = self.failed = 0
        self.error: str | None = None
        self.last = 0.0
        state.outbox = deque(maxlen=_DEAD_BUFFER)

    def maybe_drain(self) -> None:
        out = self.state.outbox
        if out and (time.monotonic() - self.last >= _DEAD_EVERY or len(out) >= 1000):
            self.drain()

    def drain(self) -> int:
        self.last = time.monotonic()
        out = self.state.outbox
        batch: list[dict[str, Any]] = []
        while out:
            batch.append(out.popleft())
        if not batch:
            return 0
        try:
            self._deliver(batch)
            self.sent += len(batch)
        except Exception as e:  # the output's trouble must not stop the learner
            self.failed += len(batch)
            self.error = f"{type(e).__name__}: {e}"
            print(  # noqa: T201
                f"rtml.online: {len(batch)} dead letters could not be delivered: {self.error}",
                file=sys.stderr,
            )
        return len(batch)

    def _deliver(self, batch: list[dict[str, Any]]) -> None:
        if not isinstance(self.out, Sink):
            self.out(batch)
            return
        if self.writer is None:
            self.writer = self.out.open(self.writer_id, 0, 1)
        if self.out.exactly_once:  # an increasing epoch per batch, also across restarts
            self.writer.write_epoch(time.time_ns() // 1000, batch)
        else:
            self.writer.write(batch)
            self.writer.flush()

    def stats(self) -> dict[str, Any]:
        return {
            "sent": self.sent,
            "failed": self.failed,
            "dropped": self.state.outbox_dropped,
            "waiting": len(self.state.outbox or ()),
            "error": self.error,
        }


class _LearnerActor:
    def __init__(
        self,
        state: OnlineState,
        registry: ModelRegistry | None,
        publish_every: int,
        publish_interval: float,
        resume: bool,
        learner_id: str | None = None,
        dead_letters: Any = None,
    ) -> None:
        self.registry = registry
        self.learner_id = learner_id or uuid.uuid4().hex
        state.learner_id = self.learner_id
        self.state = state
        self.restored_from: int | None = None
        if registry is not None:
            # A restart (same learner id) always resumes; a new learner only with resume=True.
            try:
                latest = registry.latest()
            except KeyError:
                latest = None
            got = getattr(latest, "state", None)
            if isinstance(got, OnlineState) and (resume or got.learner_id == self.learner_id):
                got.learner_id = self.learner_id
                self.state = got
                self.restored_from = latest.number  # type: ignore[union-attr]
        self.every, self.interval = publish_every, publish_interval
        self.last_pos, self.last_t = self.state.position, time.monotonic()
        self.learn_s = 0.0
        self.dead_out = (
            _DeadLetters(dead_letters, self.state, self.learner_id)
            if dead_letters is not None
            else None
        )

    def _maybe_publish(self) -> None:
        if self.registry is None:
            return
        if self.state.position - self.last_pos >= self.every or (
            time.monotonic() - self.last_t >= self.interval and self.state.position > self.last_pos
        ):
            self.publish()

    def publish(self) -> int:
        if self.registry is None:
            raise RuntimeError("this learner has no registry: pass registry=ModelRegistry(dir)")
        v = self.registry.publish(self.state)
        self.last_pos, self.last_t = self.state.position, time.monotonic()
        return v.number

    def _after(self) -> None:
        if self.dead_out is not None:
            self.dead_out.maybe_drain()

    def learn(self, x: Any, y: Any, t: float | None = None) -> bool:
        ok = self.state.learn(x, y, t)
        self._maybe_publish()
        self._after()
        return ok

    def learn_many(self, samples: list[tuple]) -> int:
        st = self.state
        t0 = time.perf_counter()
        if self.registry is None:
            st.learn_many(samples)
        else:
            i, n = 0, len(samples)
            while i < n:  # up to each publish point, so a version is taken where it is due
                j = min(n, i + max(1, self.every - (st.position - self.last_pos)))
                st.learn_many(samples[i:j] if i or j < n else samples)
                i = j
                if st.position - self.last_pos >= self.every:
                    self.publish()
            self._maybe_publish()
        self.learn_s += time.perf_counter() - t0
        self._after()
        return st.position

    def learn_epoch(self, feed: str, epoch: int, samples: list[tuple]) -> int:
        """Exactly-once delivery: epoch ``epoch`` of ``feed`` (a sink writer), learned once.

        What the state records as learned of this feed is skipped (a whole older epoch, or the
        first samples of this one if a snapshot was taken inside it). With a registry, a
        snapshot is published at the end of the epoch, before the call returns: an epoch
        acknowledged is durable."""
        st = self.state
        done = st.feeds.get(feed)
        i = 0
        if done is not None:
            last, k = done
            if epoch < last or (epoch == last and k >= len(samples)):
                return st.position
            if epoch == last:
                i = k
        t0 = time.perf_counter()
        n = len(samples)
        if self.registry is None:
            st.learn_many(samples[i:] if i else samples)
            st.feeds[feed] = (epoch, n)
        else:
            while i < n:
                j = min(n, i + max(1, self.every - (st.position - self.last_pos)))
                st.learn_many(samples[i:j] if i or j < n else samples)
                i = j
                st.feeds[feed] = (epoch, i)
                if st.position - self.last_pos >= self.every and i < n:
                    self.publish()
            st.feeds[feed] = (epoch, n)
            self.publish()  # the epoch is durable once this call returns
        self.learn_s += time.perf_counter() - t0
        self._after()
        return st.position

    def ask(self, key: Any, x: Any) -> Any:
        out = self.state.ask(key, x)
        self._after()
        return out

    def answer(self, key: Any, y: Any, t: float | None = None) -> bool:
        self.state.expire()
        ok = self.state.answer(key, y, t)
        self._maybe_publish()
        self._after()
        return ok

    def predict(self, x: Any) -> Any:
        return self.state.predict(x)

    def stats(self) -> dict[str, Any]:
        self._after()
        out = self.state.stats()
        out["learn_s"] = self.learn_s
        out["restored_from"] = self.restored_from
        if self.dead_out is not None:
            out["dead_letter_output"] = self.dead_out.stats()
        return out

    def dead_letters(self) -> list[dict[str, Any]]:
        return list(self.state.dead)

    def flush_dead_letters(self) -> int:
        """Deliver the dead letters waiting now (else they go with a later call); how many."""
        return self.dead_out.drain() if self.dead_out is not None else 0

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
            :meth:`position`). A restarted actor always starts from the latest snapshot of
            this learner, whatever ``resume`` says.
        label_timeout: seconds a delayed-label prediction waits before it is expired.
        max_restarts: how often a killed actor is restarted (from the registry's latest
            snapshot of this learner); default: without limit with a registry, never without
            one (nothing to restart from). Calls in flight at the kill are re-sent to it.
        dead_letters: where bad samples go, in batches: a rtml.stream
            :class:`~rtml.stream.Sink` or a callable taking a list of records
            ``{"kind", "item", "reason", "position"}``, called in the actor at the end of the
            call that found them (at most every 0.1 s; those left wait for the next call, or
            ``flush_dead_letters.remote()``). ``dead_letters.remote()`` keeps the last 1000.
        mini_batch: learn each batch of ``learn_many``/``learn_from``/a sink with the model's
            ``learn_many`` where it has one (River, with pandas): batch-prequential, see
            :class:`OnlineState`. Default one by one (exact test-then-train).
        engine: ``"rtml"`` (default) or ``"ray"``.

    Calls: ``learner.learn.remote(x, y[, t])``, ``learn_many.remote([(x, y[, t]), ...])``,
    ``ask.remote(key, x)`` then ``answer.remote(key, y)`` for delayed labels,
    ``predict.remote(x)``, ``stats.remote()``, ``dead_letters.remote()``, ``publish.remote()``.
    """

    def __init__(
        self,
        model: Any,
        metrics: list[Any] | None = None,
        *,
        window: int = 1000,
        drift: Drift | None = None,
        registry: ModelRegistry | None = None,
        publish_every: int = 1000,
        publish_interval: float = 1.0,
        resume: bool = False,
        label_timeout: float = 600.0,
        max_restarts: int | None = None,
        dead_letters: Any = None,
        mini_batch: bool = False,
        engine: Any = None,
    ) -> None:
        if dead_letters is not None and not (
            isinstance(dead_letters, Sink) or callable(dead_letters)
        ):
            raise TypeError(
                f"dead_letters takes a rtml.stream Sink or a callable, got "
                f"{type(dead_letters).__name__}"
            )
        self.engine = resolve(engine)
        state = OnlineState(
            model,
            metrics,
            window=window,
            drift=drift,
            label_timeout=label_timeout,
            mini_batch=mini_batch,
        )
        if max_restarts is None:
            max_restarts = -1 if registry is not None else 0
        opts: dict[str, Any] = {"max_restarts": max_restarts}
        if max_restarts:
            opts["max_task_retries"] = -1  # calls in flight at a kill go to the restarted actor
        self.learner_id = uuid.uuid4().hex
        self.handle = self.engine.remote(**opts)(_LearnerActor).remote(
            state, registry, publish_every, publish_interval, resume, self.learner_id, dead_letters
        )
        self.registry = registry
        self.model_name = type(model).__name__
        track(self)  # a row of the dashboard's Online learning panel

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name in (
            "handle",
            "engine",
            "registry",
            "model_name",
            "learner_id",
        ):
            raise AttributeError(name)
        return getattr(self.handle, name)

    def get(self, method: str, *args: Any, timeout: float = 60.0) -> Any:
        """Call ``method`` on the actor and wait for its result (``learner.get("stats")``)."""
        return self.engine.get(getattr(self.handle, method).remote(*args), timeout=timeout)

    def learn_from(self, samples: Iterable[tuple], batch: int = 256, timeout: float = 600.0) -> int:
        """Learn from an iterable of ``(x, y)`` or ``(x, y, event_time)`` in batches, with at
        most a few batches in flight. Returns the position after the last sample.

        If the actor is killed meanwhile, it restarts from its last snapshot and the batches
        in flight are re-sent to it; the samples it learned after that snapshot are lost
        (for exactly once, feed it from a dataflow through :meth:`sink`)."""
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

    def kill(self, restart: bool = False) -> None:
        """Kill the learner's actor (what was published stays in the registry). With
        ``restart=True`` it is killed as by a crash: restarted from its last snapshot (if
        ``max_restarts`` allows), which is what a chaos test wants."""
        self.engine.kill(self.handle, no_restart=not restart)


def _default_sample(r: Any) -> tuple:
    if isinstance(r, dict):
        return (r["x"], r["y"], r.get("t"))
    return tuple(r)


class LearnerSink(Sink):
    """A dataflow sink whose records are samples for a :class:`Learner`.

    Args:
        learner: the :class:`Learner` (or its actor handle).
        sample: maps a record to ``(x, y)`` or ``(x, y, event_time)``; default takes a tuple
            as is and a dict's ``"x"``, ``"y"``, ``"t"``.
        exactly_once: (default) the learner gets each checkpoint epoch's records once that
            checkpoint is durable, and learns every record exactly once through a killed
            learner actor or a recovered dataflow (with a registry, it publishes a snapshot
            at the end of every epoch). Records are then learned up to one checkpoint interval
            later. ``False``: records go to the learner as they arrive (at-least-once after a
            recovery; lowest latency).
        name: identifies this sink's feed in the learner's state; give a stable one to resume
            a dataflow with ``resume=True`` from another driver (default: unique per sink).
        order: ``"arrival"`` (default): samples are learned in the order they reach the sink;
            ``"time"``: each batch handed to the learner (an epoch when exactly once) is
            learned in event-time order (stable; samples without a time go last). Use it when
            branches of the dataflow deliver samples in clumps, e.g. positives from a join and
            negatives from a window: a model learning clumps of one label scores itself too
            well and drifts detectors see false alarms.

    Raises:
        ValueError: an unknown ``order``.
    """

    def __init__(
        self,
        learner: Any,
        sample: Callable[[Any], tuple] | None = None,
        engine: Any = None,
        *,
        exactly_once: bool = True,
        name: str | None = None,
        order: str = "arrival",
    ) -> None:
        if order not in ("arrival", "time"):
            raise ValueError(f"LearnerSink(order={order!r}) is unknown: use 'arrival' or 'time'")
        self.order = order
        self.handle = learner.handle if isinstance(learner, Learner) else learner
        self.engine = learner.engine if isinstance(learner, Learner) else engine
        self.sample = sample or _default_sample
        self.exactly_once = bool(exactly_once)
        self.name = name or uuid.uuid4().hex

    def __getstate__(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        if not isinstance(d["engine"], (str, type(None))):
            d["engine"] = d["engine"].__name__
        return d

    def open(self, writer_id: str, index: int, count: int) -> SinkWriter:
        return _LearnerWriter(
            self.handle,
            resolve(self.engine),
            self.sample,
            f"{self.name}/{writer_id}",
            self.order == "time",
        )

    def describe(self) -> str:
        return f"LearnerSink({'exactly once' if self.exactly_once else 'at least once'})"


def _time_key(s: tuple) -> float:
    t = s[2] if len(s) > 2 else None
    return float("inf") if t is None else float(t)


class _LearnerWriter(SinkWriter):
    def __init__(
        self,
        handle: Any,
        engine: Any,
        sample: Callable[[Any], tuple],
        feed: str,
        by_time: bool = False,
    ) -> None:
        self.handle, self.engine, self.sample, self.feed = handle, engine, sample, feed
        self.by_time = by_time
        self.inflight: deque = deque()

    def _samples(self, records: list[Any]) -> list[tuple]:
        out = [self.sample(r) for r in records]
        if self.by_time:
            out.sort(key=_time_key)
        return out

    def write(self, records: list[Any]) -> None:
        while len(self.inflight) >= _IN_FLIGHT:
            self.engine.get(self.inflight.popleft(), timeout=600)
        self.inflight.append(self.handle.learn_many.remote(self._samples(records)))

    def write_epoch(self, epoch: int, records: list[Any]) -> None:
        # Handed over without waiting for it to be learned: the next checkpoint barrier
        # (flush) waits for it, so no checkpoint forgets an epoch the learner has not made
        # durable; meanwhile the dataflow goes on reading. One epoch in flight at most: two
        # could be re-sent out of order after a restart, and an older epoch arriving after a
        # newer one would be skipped.
        while len(self.inflight) >= _EPOCHS_IN_FLIGHT:
            self.engine.get(self.inflight.popleft(), timeout=600)
        self.inflight.append(
            self.handle.learn_epoch.remote(self.feed, epoch, self._samples(records))
        )

    def flush(self) -> None:
        while self.inflight:
            self.engine.get(self.inflight.popleft(), timeout=600)

    def close(self) -> None:
        self.flush()
