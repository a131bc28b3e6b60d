"""The dataflow a user builds: streams and the operators between them (no execution here).

::

    Dataflow ── source() ──▶ Stream ── map/filter/flat_map/inspect/with_event_time ──▶ Stream
                                │ key_by(f)
                                ▼
                             KeyedStream ── stateful_map / join_as_of / join / interval_join / merge
                                │ window(spec)
                                ▼
                             WindowedStream ── fold / reduce / count / collect ──▶ KeyedStream
    any stream ── sink(Sink) ;  .late / .dead_letters are side-output streams of their operator

Every call only records a :class:`Node`; ``Dataflow.run`` plans stages from them (see
``_plan.py``). Misconfigurations are refused here, before anything runs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from rtml.stream._connector import Sink, Source
from rtml.stream._errors import StreamConfigError
from rtml.stream._join import Table
from rtml.stream._time import Session, Sliding, Tumbling

__all__ = ["Dataflow", "KeyedStream", "Stream", "WindowedStream"]

STATEFUL = {"stateful_map", "window", "join_as_of", "join", "interval_join", "merge"}


@dataclass
class Node:
    id: int
    kind: str
    name: str
    inputs: list[tuple[int, str, bool]]  # (node id, port, shuffled by key)
    params: dict[str, Any] = field(default_factory=dict)
    dead_letter: bool = False
    event_time: bool = False  # items leaving it carry an event time
    keyed: int | None = None  # id of the node whose key items carry
    partitioned: bool = False  # items sit in the actor that owns their key (no shuffle needed)


class Dataflow:
    """A named graph of operators. Build it with :meth:`source` and the stream methods, then
    :meth:`run` it.

    Args:
        name: names the dataflow's actors, checkpoints and sink writer ids (keep it stable to
            resume from a checkpoint).
    """

    def __init__(self, name: str) -> None:
        if not isinstance(name, str) or not name or "/" in name:
            raise StreamConfigError(
                f"Dataflow name must be a non-empty string without '/', got {name!r}"
            )
        self.name = name
        self.nodes: list[Node] = []
        self._names: set[str] = set()

    def _add(
        self,
        kind: str,
        inputs: list[tuple[int, str, bool]],
        name: str | None,
        params: dict[str, Any] | None = None,
        **attrs: Any,
    ) -> Node:
        nid = len(self.nodes)
        label = name or f"{kind}_{nid}"
        if label in self._names:
            raise StreamConfigError(
                f"two operators are named {label!r} in dataflow "
                f"{self.name!r}; give each a distinct name="
            )
        self._names.add(label)
        node = Node(nid, kind, label, inputs, params or {}, **attrs)
        self.nodes.append(node)
        return node

    def source(
        self, source: Source, *, name: str | None = None, dead_letter: bool = False
    ) -> Stream:
        """A stream of the records of ``source``.

        Args:
            source: a :class:`Source` (IterableSource, FileSource, RedisStreamSource,
                KafkaSource, or your own).
            name: the operator's name (default ``source_<n>``).
            dead_letter: send records the source cannot decode to ``.dead_letters`` instead of
                failing the dataflow.
        """
        if not isinstance(source, Source):
            raise StreamConfigError(
                f"Dataflow.source takes a rtml.stream Source (e.g. "
                f"IterableSource(...)), got {type(source).__name__}"
            )
        node = self._add("source", [], name, {"source": source}, dead_letter=dead_letter)
        return Stream(self, node, "out")

    def run(self, **kwargs: Any):
        """Start the dataflow; see :func:`rtml.stream.run` for the arguments."""
        from rtml.stream._run import start

        return start(self, **kwargs)


def _callable(what: str, f: Any) -> Callable:
    if not callable(f):
        raise StreamConfigError(f"{what} takes a function, got {type(f).__name__}")
    return f


class Stream:
    """A stream of events; methods add an operator and return the stream it outputs."""

    def __init__(self, flow: Dataflow, node: Node, port: str) -> None:
        self.flow, self.node, self.port = flow, node, port

    # -- stateless operators (fused into the actor of their input) ---------------------------

    def _derive(
        self, kind: str, f: Any, name: str | None, dead_letter: bool, **params: Any
    ) -> Node:
        return self.flow._add(
            kind,
            [(self.node.id, self.port, False)],
            name,
            {"f": _callable(f"{kind}()", f), **params},
            dead_letter=dead_letter,
            event_time=self._event_time,
            keyed=self._keyed,
            partitioned=self._partitioned,
        )

    @property
    def _event_time(self) -> bool:
        return self.node.event_time and self.port != "dead_letters"

    @property
    def _keyed(self) -> int | None:
        return self.node.keyed if self.port == "out" else None

    @property
    def _partitioned(self) -> bool:
        return self.node.partitioned and self.port == "out"

    def _wrap(self, node: Node) -> Stream:
        return Stream(self.flow, node, "out")

    def map(
        self, f: Callable[[Any], Any], *, name: str | None = None, dead_letter: bool = False
    ) -> Stream:
        """``f(event)`` for every event."""
        return self._wrap(self._derive("map", f, name, dead_letter))

    def filter(
        self, f: Callable[[Any], bool], *, name: str | None = None, dead_letter: bool = False
    ) -> Stream:
        """The events for which ``f(event)`` is true."""
        return self._wrap(self._derive("filter", f, name, dead_letter))

    def flat_map(
        self,
        f: Callable[[Any], Iterable[Any]],
        *,
        name: str | None = None,
        dead_letter: bool = False,
    ) -> Stream:
        """Every item of ``f(event)``, for every event."""
        return self._wrap(self._derive("flat_map", f, name, dead_letter))

    def inspect(self, f: Callable[[Any], Any], *, name: str | None = None) -> Stream:
        """Calls ``f(event)`` for its side effect (e.g. printing) and passes events on."""
        return self._wrap(self._derive("inspect", f, name, False))

    def with_event_time(
        self,
        extractor: Callable[[Any], float],
        *,
        max_out_of_order: float = 0.0,
        idle_after: float | None = None,
        name: str | None = None,
    ) -> Stream:
        """Give each event the time ``extractor(event)`` (seconds, float) and derive watermarks.

        The watermark of each source partition is the largest event time seen minus
        ``max_out_of_order``; it never moves backwards, and while the partition has had no
        input for ``idle_after`` seconds (default: max(max_out_of_order, 0.2)) it advances with
        the wall clock, so windows close without new input. Must come before ``key_by``, in the
        part of the dataflow that reads the source.
        """
        if self.node.event_time:
            raise StreamConfigError(
                "with_event_time is already set on this stream; set it once, right after the source"
            )
        if max_out_of_order < 0:
            raise StreamConfigError(f"max_out_of_order must be >= 0, got {max_out_of_order}")
        node = self._derive(
            "event_time",
            extractor,
            name,
            False,
            max_out_of_order=float(max_out_of_order),
            idle_after=idle_after,
        )
        node.event_time = True
        return self._wrap(node)

    def key_by(self, f: Callable[[Any], Any], *, name: str | None = None) -> KeyedStream:
        """Key events by ``f(event)``: keyed operators after it see each key in one actor."""
        node = self._derive("key_by", f, name, False)
        node.keyed, node.partitioned = node.id, False
        return KeyedStream(self.flow, node, "out")

    def sink(self, sink: Sink, *, name: str | None = None) -> None:
        """Write the stream's events to ``sink`` (runs in the actors of this stream)."""
        if not isinstance(sink, Sink):
            raise StreamConfigError(
                f"Stream.sink takes a rtml.stream Sink (e.g. "
                f"CallableSink(print)), got {type(sink).__name__}"
            )
        self.flow._add(
            "sink", [(self.node.id, self.port, False)], name, {"sink": sink}, keyed=self._keyed
        )

    # -- side outputs ----------------------------------------------------------------------

    @property
    def late(self) -> Stream:
        """The events that arrived after the watermark passed every window (or join range)
        they belong to, from the operator that made this stream."""
        if self.node.kind not in ("window", "join", "interval_join"):
            raise StreamConfigError(
                f".late belongs to window and join outputs; operator "
                f"{self.node.name!r} is a {self.node.kind}"
            )
        return Stream(self.flow, self.node, "late")

    @property
    def dead_letters(self) -> Stream:
        """DeadLetter records of the events this stream's operator failed on (set
        ``dead_letter=True`` on the operator)."""
        if not self.node.dead_letter:
            raise StreamConfigError(
                f"operator {self.node.name!r} has no dead-letter output: "
                "pass dead_letter=True to it"
            )
        return Stream(self.flow, self.node, "dead_letters")


class KeyedStream(Stream):
    """A stream whose events carry a key; keyed operators see each key in one actor."""

    def _wrap(self, node: Node) -> KeyedStream:
        return KeyedStream(self.flow, node, "out")

    def _stateful(
        self,
        kind: str,
        name: str | None,
        params: dict[str, Any],
        extra: Sequence[Stream] = (),
        dead_letter: bool = False,
        need_time: bool = False,
    ) -> KeyedStream:
        inputs = [self, *extra]
        for s in inputs:
            if not isinstance(s, KeyedStream) or s._keyed is None:
                raise StreamConfigError(f"{kind} needs keyed inputs: call .key_by(...) first")
            if need_time and not s._event_time:
                raise StreamConfigError(
                    f"{kind} works in event time: call .with_event_time(...) on the stream "
                    "before key_by (or use processing_time=True windows)"
                )
        # One input already held by key (the output of a keyed operator, key unchanged) fuses
        # into the same actor; anything else is shuffled by key.
        fuse = len(inputs) == 1 and self._partitioned
        node = self.flow._add(
            kind,
            [(s.node.id, s.port, not fuse) for s in inputs],
            name,
            params,
            dead_letter=dead_letter,
            event_time=all(s._event_time for s in inputs),
            keyed=-1,
            partitioned=True,
        )
        node.keyed = node.id if not fuse else self._keyed
        return KeyedStream(self.flow, node, "out")

    def stateful_map(
        self,
        mapper: Callable[[Any, Any], tuple[Any, Any]],
        *,
        name: str | None = None,
        dead_letter: bool = False,
    ) -> KeyedStream:
        """Per-key state: ``mapper(state, event) -> (new_state, output)``; state starts as
        None and a new_state of None forgets the key. The state is checkpointed."""
        return self._stateful(
            "stateful_map", name, {"f": _callable("stateful_map", mapper)}, dead_letter=dead_letter
        )

    def window(
        self, spec: Tumbling | Sliding | Session, *, lateness: float = 0.0, name: str | None = None
    ) -> WindowedStream:
        """Group events per key into windows; aggregate them with ``fold``/``reduce``/
        ``count``/``collect``. Events later than ``lateness`` after a window's end go to the
        result's ``.late`` stream."""
        if not isinstance(spec, (Tumbling, Sliding, Session)):
            raise StreamConfigError(
                f"window() takes Tumbling, Sliding or Session, got {type(spec).__name__}"
            )
        if lateness < 0:
            raise StreamConfigError(f"lateness must be >= 0, got {lateness}")
        return WindowedStream(self, spec, float(lateness), name)

    def join_as_of(
        self, table: Table, *, how: str = "left", name: str | None = None
    ) -> KeyedStream:
        """``(event, row)`` with the table's row for the event's key as of the event's time
        (the newest row at or before it; None when there is none and ``how="left"``; such
        events are dropped when ``how="inner"``). Point-in-time correct: never a row from the
        event's future."""
        if not isinstance(table, Table):
            raise StreamConfigError(
                f"join_as_of takes a rtml.stream.Table, got {type(table).__name__}"
            )
        if how not in ("left", "inner"):
            raise StreamConfigError(f"join_as_of(how=) is 'left' or 'inner', got {how!r}")
        return self._stateful(
            "join_as_of", name, {"table": table, "how": how}, need_time=table.time is not None
        )

    def join(
        self,
        other: KeyedStream,
        *,
        window: Tumbling | Sliding,
        lateness: float = 0.0,
        name: str | None = None,
    ) -> KeyedStream:
        """``(left, right)`` for every pair of events of one key in the same window."""
        if isinstance(window, Session) or getattr(window, "processing_time", False):
            raise StreamConfigError("join(window=) takes event-time Tumbling or Sliding windows")
        return self._stateful(
            "join", name, {"window": window, "lateness": float(lateness)}, [other], need_time=True
        )

    def interval_join(
        self,
        other: KeyedStream,
        *,
        lower: float,
        upper: float,
        lateness: float = 0.0,
        how: str = "inner",
        name: str | None = None,
    ) -> KeyedStream:
        """``(left, right)`` for events of one key with
        ``left.time + lower <= right.time <= left.time + upper`` (e.g. a click within 30 s
        after an impression: ``lower=0, upper=30``). ``how="left"`` also gives
        ``(left, None)`` for each left that met no right, when the watermark passes
        ``left.time + upper`` (e.g. the impressions nobody clicked)."""
        from rtml.stream._join import IntervalJoinState

        IntervalJoinState(lower, upper, how=how)  # validates
        return self._stateful(
            "interval_join",
            name,
            {"lower": float(lower), "upper": float(upper), "lateness": float(lateness), "how": how},
            [other],
            need_time=True,
        )

    def merge(self, *others: KeyedStream, name: str | None = None) -> KeyedStream:
        """One keyed stream holding the events of this stream and of ``others`` (each keyed
        the same way), interleaved as they arrive: e.g. labelled samples from two branches
        going on to the same join. The watermark is the smallest of the inputs'."""
        if not others:
            raise StreamConfigError("merge() takes at least one other keyed stream")
        for o in others:
            if o.flow is not self.flow:
                raise StreamConfigError("merge() takes streams of the same dataflow")
        return self._stateful("merge", name, {}, list(others))

    def items(self, *, name: str | None = None) -> Stream:
        """An unkeyed stream of ``(key, event)`` tuples."""
        node = self.flow._add(
            "items", [(self.node.id, self.port, False)], name, event_time=self._event_time
        )
        return Stream(self.flow, node, "out")


class WindowedStream:
    """A keyed stream grouped into windows; one of its methods aggregates them."""

    def __init__(self, up: KeyedStream, spec: Any, lateness: float, name: str | None) -> None:
        self._up, self._spec, self._lateness, self._name = up, spec, lateness, name

    def fold(self, init: Callable[[], Any], folder: Callable[[Any, Any], Any]) -> KeyedStream:
        """``WindowResult(key, start, end, value)`` per key and window, where value is
        ``folder(...folder(init(), e1)..., en)`` over the window's events."""
        return self._up._stateful(
            "window",
            self._name,
            {
                "spec": self._spec,
                "lateness": self._lateness,
                "init": _callable("fold(init)", init),
                "fold": _callable("fold(folder)", folder),
            },
            need_time=not self._spec.processing_time,
        )

    def reduce(self, f: Callable[[Any, Any], Any]) -> KeyedStream:
        """``f(f(e1, e2), e3)...`` over each window's events."""
        _callable("reduce", f)
        return self.fold(_Empty, lambda acc, v: v if acc is _EMPTY else f(acc, v))

    def count(self) -> KeyedStream:
        """The number of events per key and window."""
        return self.fold(int, _count)

    def collect(self) -> KeyedStream:
        """The list of events per key and window, in arrival order."""
        return self.fold(list, _append)


class _EmptyType:
    def __repr__(self) -> str:
        return "<empty>"

    def __reduce__(self):
        return (_Empty, ())


_EMPTY = _EmptyType()


def _Empty() -> _EmptyType:
    return _EMPTY


def _count(acc: int, _: Any) -> int:
    return acc + 1


def _append(acc: list, v: Any) -> list:
    acc.append(v)
    return acc
