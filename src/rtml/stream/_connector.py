"""The interfaces every source and sink implements, built-in or written by a user.

::

    driver:  Source.partitions() ─▶ ["p0", "p1", ...]  (stable names, assigned to source actors)
    actor:   Source.open("p0", offset) ─▶ SourceReader ─ read(n, timeout) ─▶ [record, ...]
                                                         offset() ─▶ checkpointed with the state
                                                         ack(offset) ◀─ that checkpoint is durable
    actor:   Sink.open(writer_id, index, count) ─▶ SinkWriter
                 at-least-once sinks:  write(records)   as records arrive; flush() at a checkpoint
                 exactly-once sinks:   write_epoch(epoch, records) once the checkpoint that
                                       closes the epoch is durable; idempotent per writer id

A reader resumes from the offset the dataflow's checkpoint holds, never from broker-side state
(consumer-group positions are at most updated for monitoring, through ``ack``). A record a
reader cannot decode is returned as a :class:`Malformed` in its place: the dataflow sends it to
the source's dead-letter output, or fails naming it, instead of the reader raising mid-batch.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any

__all__ = ["Malformed", "Sink", "SinkWriter", "Source", "SourceReader"]


@dataclass(frozen=True)
class Malformed:
    """A record a reader could not decode, returned in its place by ``read``.

    Attributes:
        raw: the undecoded record (bytes or str), as the source holds it.
        reason: what is wrong with it, e.g. ``"invalid JSON: Expecting value at column 1"``.
        where: where it is, e.g. ``"events.jsonl:17"`` or ``"clicks[2]@1041"``.
    """

    raw: Any
    reason: str
    where: str = ""


class SourceReader(abc.ABC):
    """Reads one partition of a source, from an offset on. Runs inside a source actor."""

    @abc.abstractmethod
    def read(self, max_records: int, timeout: float) -> list[Any]:
        """The records available now, at most ``max_records``, in partition order.

        When none are available, wait up to ``timeout`` seconds for the first and return as
        soon as there is one (never wait to fill a batch: a lone event must not be held back).
        Returns ``[]`` when nothing came. A record that cannot be decoded is returned as a
        :class:`Malformed` in its place.
        """

    @abc.abstractmethod
    def offset(self) -> Any:
        """A picklable position just after the last record ``read`` returned:
        ``Source.open(partition, offset)`` continues from exactly there."""

    def done(self) -> bool:
        """True once a bounded partition has returned its last record (never for a live one)."""
        return False

    def lag(self) -> int | None:
        """How many records the partition holds beyond this reader's position, if known."""
        return None

    def ack(self, offset: Any) -> None:
        """Called once a checkpoint that holds ``offset`` is durable (e.g. XACK up to it).

        It runs on a thread of its own, possibly while ``read`` runs: use a client that is
        safe for that (redis-py's and confluent-kafka's are)."""
        return None

    def close(self) -> None:
        """Release connections and files; called once, also after an error."""
        return None


class Source(abc.ABC):
    """A partitioned, replayable input of a dataflow.

    Subclass it for your own source: ``partitions`` runs on the driver when the dataflow
    starts; ``open`` runs in the source actor that a partition is assigned to. The source object
    itself is pickled to the actors, so keep connections out of ``__init__`` (open them in
    ``open``).
    """

    @abc.abstractmethod
    def partitions(self) -> list[str]:
        """Stable names of the partitions (the same names after a restart)."""

    @abc.abstractmethod
    def open(self, partition: str, offset: Any | None) -> SourceReader:
        """A reader of ``partition`` positioned at ``offset`` (``None``: the configured start)."""

    def describe(self) -> str:
        """A short name for metrics and errors."""
        return type(self).__name__


class SinkWriter:
    """Writes one parallel share of a sink's records. Runs inside an operator actor (and, to
    finish epochs a restored checkpoint left pending, in the driver)."""

    def write(self, records: list[Any]) -> None:
        """At-least-once sinks: write ``records`` now (in order)."""
        raise NotImplementedError(f"{type(self).__name__} does not write at-least-once")

    def write_epoch(self, epoch: int, records: list[Any]) -> None:
        """Exactly-once sinks: write all of one epoch's records atomically.

        Called once the checkpoint that closes ``epoch`` is durable, with epochs increasing per
        writer. It must be idempotent per (writer id, epoch): after a crash the same epoch can
        be handed over again, and one not above the last written for this writer id is skipped.
        """
        raise NotImplementedError(f"{type(self).__name__} does not write exactly-once")

    def flush(self) -> None:
        """Make what ``write`` wrote durable; called at every checkpoint barrier."""
        return None

    def close(self) -> None:
        """Release connections and files; called once, also after an error."""
        return None


class Sink(abc.ABC):
    """An output of a dataflow.

    ``exactly_once = True`` makes the dataflow buffer each epoch's records (the records
    between two checkpoints) in its checkpointed state and hand them to ``write_epoch`` once
    the checkpoint is durable; otherwise records go to ``write`` as they arrive (at-least-once
    after a recovery).
    """

    exactly_once: bool = False

    @abc.abstractmethod
    def open(self, writer_id: str, index: int, count: int) -> SinkWriter:
        """A writer for share ``index`` of ``count``; ``writer_id`` is stable across restarts
        of the same dataflow (use it to make ``write_epoch`` idempotent)."""

    def describe(self) -> str:
        """A short name for metrics and errors."""
        return type(self).__name__
