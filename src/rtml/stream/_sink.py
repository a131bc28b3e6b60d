"""Sinks into Python: a callable, an actor's method, and a collecting actor for tests.

=================  ===============================================================
sink               delivery after a recovery
=================  ===============================================================
CallableSink       at-least-once (runs in the operator's actor, as records arrive)
ActorSink          at-least-once (one call per batch, a bounded number in flight)
CollectSink        at-least-once, or exactly-once with ``exactly_once=True``
=================  ===============================================================
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

from rtml.stream._connector import Sink, SinkWriter
from rtml.stream._errors import StreamConfigError
from rtml.util.engine import resolve

__all__ = ["ActorSink", "CallableSink", "CollectSink"]

_IN_FLIGHT = 8


class CallableSink(Sink):
    """Calls ``fn(record)`` for every record (or ``fn(records)`` per batch with
    ``batch=True``), in the operator's actor. At-least-once."""

    def __init__(self, fn: Callable[[Any], Any], *, batch: bool = False) -> None:
        if not callable(fn):
            raise StreamConfigError(f"CallableSink takes a function, got {type(fn).__name__}")
        self.fn, self.batch = fn, batch

    def open(self, writer_id: str, index: int, count: int) -> SinkWriter:
        return _CallableWriter(self.fn, self.batch)


class _CallableWriter(SinkWriter):
    def __init__(self, fn, batch: bool) -> None:
        self.fn, self.batch = fn, batch

    def write(self, records: list[Any]) -> None:
        if self.batch:
            self.fn(records)
        else:
            for r in records:
                self.fn(r)


class ActorSink(Sink):
    """Sends each batch of records to ``handle.<method>.remote(records)``. At-least-once;
    at most 8 calls per writer are in flight (a slow actor slows the dataflow down)."""

    def __init__(self, handle: Any, method: str = "write", *, engine: Any = None) -> None:
        if not hasattr(handle, method):
            raise StreamConfigError(f"ActorSink: the actor handle has no method {method!r}")
        self.handle, self.method, self.engine = handle, method, engine

    def open(self, writer_id: str, index: int, count: int) -> SinkWriter:
        return _ActorWriter(getattr(self.handle, self.method), resolve(self.engine), None)


class _ActorWriter(SinkWriter):
    def __init__(self, method, engine, writer_id: str | None) -> None:
        self.method, self.engine, self.writer_id = method, engine, writer_id
        self.inflight: deque = deque()

    def write(self, records: list[Any]) -> None:
        while len(self.inflight) >= _IN_FLIGHT:
            self.engine.get(self.inflight.popleft(), timeout=60)
        args = (records,) if self.writer_id is None else (self.writer_id, None, records)
        self.inflight.append(self.method.remote(*args))

    def write_epoch(self, epoch: int, records: list[Any]) -> None:
        self.flush()
        self.engine.get(self.method.remote(self.writer_id, epoch, records), timeout=60)

    def flush(self) -> None:
        while self.inflight:
            self.engine.get(self.inflight.popleft(), timeout=60)


class _Collector:
    def __init__(self) -> None:
        self.records: list[Any] = []
        self.epochs: dict[str, int] = {}

    def add(self, writer_id: str, epoch: int | None, records: list[Any]) -> int:
        if epoch is not None:
            if epoch <= self.epochs.get(writer_id, -1):
                return len(self.records)  # this epoch was written already
            self.epochs[writer_id] = epoch
        self.records.extend(records)
        return len(self.records)

    def items(self) -> list[Any]:
        return list(self.records)

    def count(self) -> int:
        return len(self.records)


class CollectSink(Sink):
    """Collects every record in an actor, for tests and notebooks: ``sink.items()``.

    Args:
        exactly_once: hand over records by epoch once their checkpoint is durable, written
            once per writer and epoch (else at-least-once, as they arrive).
        engine: ``"rtml"`` (default) or ``"ray"``: where the collecting actor lives.
    """

    def __init__(self, *, exactly_once: bool = False, engine: Any = None) -> None:
        self.exactly_once = exactly_once
        self.engine = engine
        eng = resolve(engine)
        self.actor = eng.remote(num_cpus=0)(_Collector).remote()

    def open(self, writer_id: str, index: int, count: int) -> SinkWriter:
        return _ActorWriter(self.actor.add, resolve(self.engine), writer_id)

    def items(self, timeout: float = 30) -> list[Any]:
        """Every record collected so far, in arrival order."""
        return resolve(self.engine).get(self.actor.items.remote(), timeout=timeout)

    def count(self, timeout: float = 30) -> int:
        return resolve(self.engine).get(self.actor.count.remote(), timeout=timeout)
