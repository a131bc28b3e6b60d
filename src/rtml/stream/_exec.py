"""Running one stage's operators on batches, inside one actor (pure: no actor calls here).

::

    batch of (key, ts, value) ──▶ push(node) ──▶ op.process ──▶ emit(node, port)
                                                                 ├─▶ next op in this stage
                                                                 └─▶ out[edge][owner actor]
    watermark ──▶ advance(wm): each op in order may emit (windows firing, buffers purged)
    barrier   ──▶ snapshot(): state per operator per key group; sinks close their epoch

Each operator runs a batch with one list comprehension; only when a user function raises does
it go item by item, to name the failing event (or route it to the dead-letter output).
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass
from typing import Any

from rtml.stream._connector import Malformed
from rtml.stream._errors import StreamError, UserFunctionError
from rtml.stream._join import AsOfIndex, IntervalJoinState, WindowJoinState
from rtml.stream._keys import key_group
from rtml.stream._plan import Plan
from rtml.stream._time import NEG_INF, WatermarkGenerator
from rtml.stream._window import WindowState

__all__ = ["DeadLetter", "StageExec"]

Item = tuple[Any, Any, Any]  # (key, event time, value)


@dataclass(frozen=True)
class DeadLetter:
    """An event an operator failed on (or a record a source could not decode)."""

    operator: str
    key: Any
    event: Any
    error: str
    traceback: str = ""


def _short(v: Any) -> str:
    r = repr(v)
    return r if len(r) <= 500 else r[:497] + "..."


class _Op:
    stateful = False

    def __init__(self, ex: StageExec, node) -> None:
        self.ex, self.node, self.name = ex, node, node.name
        self.n_in = self.n_out = 0

    def process(self, items: list[Item], side: int) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def advance(self, wm: float) -> None:
        return None

    def snapshot(self) -> Any:
        return None

    def restore(self, state: Any) -> None:
        return None

    def emit(self, items: list[Item], port: str = "out") -> None:
        if items:
            if port == "out":
                self.n_out += len(items)
            self.ex.emit(self.node.id, port, items)

    def fail(self, item: Item, err: BaseException) -> None:
        """One event raised in user code: dead-letter it, or fail the dataflow naming it."""
        tb = "".join(traceback.format_exception(type(err), err, err.__traceback__))
        if self.node.dead_letter:
            self.ex.emit(
                self.node.id,
                "dead_letters",
                [
                    (
                        None,
                        item[1],
                        DeadLetter(self.name, item[0], item[2], f"{type(err).__name__}: {err}", tb),
                    )
                ],
            )
            self.ex.dead_letters += 1
            return
        raise UserFunctionError(self.name, item[0], self.ex.offset_hint, _short(item[2]), tb)

    def each(self, items: list[Item], step) -> list[Item]:
        """The slow path: ``step(item) -> list of items`` one by one, failing per event."""
        out: list[Item] = []
        for it in items:
            try:
                out.extend(step(it))
            except Exception as e:
                self.fail(it, e)
        return out


class _Map(_Op):
    def process(self, items, side):
        f = self.node.params["f"]
        self.n_in += len(items)
        try:
            out = [(k, t, f(v)) for k, t, v in items]
        except Exception:
            out = self.each(items, lambda it: [(it[0], it[1], f(it[2]))])
        self.emit(out)


class _Filter(_Op):
    def process(self, items, side):
        f = self.node.params["f"]
        self.n_in += len(items)
        try:
            out = [it for it in items if f(it[2])]
        except Exception:
            out = self.each(items, lambda it: [it] if f(it[2]) else [])
        self.emit(out)


class _FlatMap(_Op):
    def process(self, items, side):
        f = self.node.params["f"]
        self.n_in += len(items)
        try:
            out = [(k, t, x) for k, t, v in items for x in f(v)]
        except Exception:
            out = self.each(items, lambda it: [(it[0], it[1], x) for x in f(it[2])])
        self.emit(out)


class _Inspect(_Op):
    def process(self, items, side):
        f = self.node.params["f"]
        self.n_in += len(items)
        for it in items:
            try:
                f(it[2])
            except Exception as e:
                self.fail(it, e)
        self.emit(items)


class _KeyBy(_Op):
    def process(self, items, side):
        f = self.node.params["f"]
        self.n_in += len(items)
        try:
            out = [(f(v), t, v) for _, t, v in items]
        except Exception:
            out = self.each(items, lambda it: [(f(it[2]), it[1], it[2])])
        self.emit(out)


class _Items(_Op):
    def process(self, items, side):
        self.n_in += len(items)
        self.emit([(None, t, (k, v)) for k, t, v in items])


class _EventTime(_Op):
    """Assigns event times and keeps one watermark generator per source partition."""

    def __init__(self, ex, node):
        super().__init__(ex, node)
        self.gens: dict[str, WatermarkGenerator] = {}

    def gen(self, partition: str) -> WatermarkGenerator:
        g = self.gens.get(partition)
        if g is None:
            g = self.gens[partition] = WatermarkGenerator(
                self.node.params["max_out_of_order"], self.node.params["idle_after"]
            )
        return g

    def process(self, items, side):
        f = self.node.params["f"]
        self.n_in += len(items)

        def stamp(it):
            t = f(it[2])
            if type(t) is not float:
                t = _as_seconds(t)
            return [(it[0], t, it[2])]

        try:
            out = [(k, float(f(v)), v) for k, _, v in items]
        except Exception:
            out = self.each(items, stamp)
        if out:
            self.gen(self.ex.partition).observe(max(t for _, t, _ in out))
        self.emit(out)

    def watermark(self, live: list[str]) -> float:
        if not live:
            return float("inf")
        return min(self.gen(p).current() for p in live)

    def snapshot(self):
        return {p: g.snapshot() for p, g in self.gens.items()}

    def restore(self, state):
        for p, s in (state or {}).items():
            self.gen(p).restore(s)


def _as_seconds(t: Any) -> float:
    if hasattr(t, "timestamp"):
        return float(t.timestamp())
    return float(t)


class _Keyed(_Op):
    stateful = True


class _StatefulMap(_Keyed):
    def __init__(self, ex, node):
        super().__init__(ex, node)
        self.groups: dict[int, dict[Any, Any]] = {}

    def process(self, items, side):
        f = self.node.params["f"]
        self.n_in += len(items)
        out = []
        groups = self.groups
        for it in items:
            k = it[0]
            kg = key_group(k)
            states = groups.get(kg)
            if states is None:
                states = groups[kg] = {}
            try:
                new, res = f(states.get(k), it[2])
            except Exception as e:
                self.fail(it, e)
                continue
            if new is None:
                states.pop(k, None)
            else:
                states[k] = new
            out.append((k, it[1], res))
        self.emit(out)

    def snapshot(self):
        return {kg: dict(s) for kg, s in self.groups.items() if s}

    def restore(self, state):
        self.groups = {kg: dict(s) for kg, s in state.items()}


class _Window(_Keyed):
    def __init__(self, ex, node):
        super().__init__(ex, node)
        p = node.params
        self.state = WindowState(p["spec"], p["init"], p["fold"], p["lateness"])
        self.proc = p["spec"].processing_time

    def process(self, items, side):
        self.n_in += len(items)
        out: list = []
        late: list = []
        wm = time.time() if self.proc else self.ex.watermark
        if self.proc:
            items = [(k, wm, v) for k, _, v in items]
        self.state.add_batch(items, wm, out, late, self.fail)
        self._out(out)
        self.emit([(k, t, v) for k, t, v in late], "late")

    def _out(self, results: list) -> None:
        self.emit([(r.key, r.end, r) for r in results])

    def advance(self, wm):
        out: list = []
        try:
            # Processing time follows the clock, except at the end of input (wm = +inf),
            # when every window fires.
            now = time.time() if self.proc and wm != float("inf") else wm
            self.state.advance(now, out)
        except Exception as e:  # a user fold/init raised while firing
            self.fail((None, wm, "<window firing>"), e)
        self._out(out)

    def snapshot(self):
        return self.state.snapshot()

    def restore(self, state):
        self.state.restore(state)


class _AsOf(_Keyed):
    def __init__(self, ex, node):
        super().__init__(ex, node)
        table = node.params["table"]
        self.index = AsOfIndex(table.time is not None)
        self.inner = node.params["how"] == "inner"

    def process(self, items, side):
        self.n_in += len(items)
        look = self.index.lookup
        out = [(k, t, (v, look(k, t))) for k, t, v in items]
        if self.inner:
            out = [it for it in out if it[2][1] is not None]
        self.emit(out)


class _TwoSided(_Keyed):
    def __init__(self, ex, node):
        super().__init__(ex, node)
        p = node.params
        self.state = (
            WindowJoinState(p["window"], p["lateness"])
            if node.kind == "join"
            else IntervalJoinState(p["lower"], p["upper"], p["lateness"], p.get("how", "inner"))
        )
        self._purged = float("-inf")

    def process(self, items, side):
        self.n_in += len(items)
        out: list = []
        late: list = []
        wm = self.ex.watermark
        add = self.state.add
        for k, t, v in items:
            before = len(out)
            add(side, key_group(k), k, t, v, wm, out, late)
            if len(out) > before:
                out[before:] = [(k, ts, pair) for ts, pair in out[before:]]
        self.emit(out)
        self.emit([(k, t, (side, v)) for side, k, t, v in late], "late")

    def advance(self, wm):
        # Purging walks every key: do it when event time moved on by a tenth of a second.
        if wm >= self._purged + 0.1:
            self._purged = wm
            closed = self.state.advance(wm)
            if closed:  # interval_join(how="left"): lefts whose interval closed unmatched
                self.emit(closed)

    def snapshot(self):
        return self.state.snapshot()

    def restore(self, state):
        self.state.restore(state)


class _Merge(_Keyed):
    stateful = False  # holds nothing: events pass through with their key and time

    def process(self, items, side):
        self.n_in += len(items)
        self.emit(items)


class _SinkOp(_Op):
    """Writes at once (at-least-once) or buffers each epoch until its checkpoint is durable."""

    def __init__(self, ex, node):
        super().__init__(ex, node)
        self.sink = node.params["sink"]
        self.writer_id = f"{ex.plan.name}/{node.name}/{ex.index}"
        self.writer = self.sink.open(self.writer_id, ex.index, ex.count)
        self.exactly_once = bool(self.sink.exactly_once)
        self.buffer: list = []
        self.pending: dict[int, list] = {}

    def process(self, items, side):
        self.n_in += len(items)
        values = [v for _, _, v in items]
        if self.exactly_once:
            self.buffer.extend(values)
        else:
            self._guard(self.writer.write, values)
        self.n_out += len(values)

    def _guard(self, write, *args) -> None:
        """A sink that raises fails the run naming the sink (a connector's own errors are
        already StreamErrors that say what to do)."""
        try:
            write(*args)
        except StreamError:
            raise
        except Exception as e:
            tb = "".join(traceback.format_exception(type(e), e, e.__traceback__))
            records = args[-1]
            raise UserFunctionError(
                self.name, None, self.ex.offset_hint, _short(records[0]) if records else "[]", tb
            ) from e

    def barrier(self, epoch: int) -> None:
        if self.exactly_once:
            if self.buffer:
                self.pending[epoch] = self.buffer
            self.buffer = []
        # Also for exactly-once sinks (as SinkWriter.flush documents): one that hands epochs
        # over asynchronously waits here until they are durable, before this checkpoint drops
        # them from its pending state.
        self.writer.flush()

    def commit(self, epoch: int) -> None:
        for e in sorted(x for x in self.pending if x <= epoch):
            self._guard(self.writer.write_epoch, e, self.pending.pop(e))

    def snapshot(self):
        return {"writer_id": self.writer_id, "pending": dict(self.pending)}

    def close(self) -> None:
        self.writer.close()


class _SourceOp(_Op):
    def process(self, items, side):
        self.n_in += len(items)
        bad = [it for it in items if type(it[2]) is Malformed]
        if bad:
            for _, _, m in bad:
                if not self.node.dead_letter:
                    raise UserFunctionError(
                        self.name,
                        None,
                        self.ex.offset_hint,
                        _short(m.raw),
                        f"the source could not decode this record ({m.where}): {m.reason}\n"
                        "(pass dead_letter=True to flow.source(...) to route such records "
                        "to its .dead_letters stream)",
                    )
                self.ex.emit(
                    self.node.id,
                    "dead_letters",
                    [(None, None, DeadLetter(self.name, None, m.raw, f"{m.reason} ({m.where})"))],
                )
                self.ex.dead_letters += 1
            items = [it for it in items if type(it[2]) is not Malformed]
        self.emit(items)


_OPS = {
    "source": _SourceOp,
    "map": _Map,
    "filter": _Filter,
    "flat_map": _FlatMap,
    "inspect": _Inspect,
    "key_by": _KeyBy,
    "items": _Items,
    "event_time": _EventTime,
    "stateful_map": _StatefulMap,
    "window": _Window,
    "join_as_of": _AsOf,
    "join": _TwoSided,
    "interval_join": _TwoSided,
    "merge": _Merge,
    "sink": _SinkOp,
}


class StageExec:
    """The operators of one stage in one actor: actor ``index`` of ``count``."""

    def __init__(self, plan: Plan, stage: int, index: int, count: int) -> None:
        self.plan, self.stage, self.index, self.count = plan, stage, index, count
        self.watermark = NEG_INF
        self.partition = ""
        self.offset_hint: Any = None
        self.dead_letters = 0
        self.ops: dict[int, _Op] = {}
        for nid in plan.stages[stage].nodes:
            node = plan.nodes[nid]
            self.ops[nid] = _OPS[node.kind](self, node)
        # edge id -> destination actor index -> items waiting to be sent
        self.out: dict[int, dict[int, list[Item]]] = {e: {} for e in plan.stages[stage].outputs}
        self._dst_count = {
            e: plan.stages[plan.edges[e].dst_stage].parallelism for e in plan.stages[stage].outputs
        }
        self.event_time = next((op for op in self.ops.values() if isinstance(op, _EventTime)), None)
        self.sinks = [op for op in self.ops.values() if isinstance(op, _SinkOp)]

    def push(self, nid: int, side: int, items: list[Item]) -> None:
        self.ops[nid].process(items, side)

    def emit(self, nid: int, port: str, items: list[Item]) -> None:
        for kind, target, side in self.plan.consumers.get((nid, port), ()):
            if kind == "node":
                self.ops[target].process(items, side)
                continue
            n = self._dst_count[target]
            dst = self.out[target]
            if n == 1:
                dst.setdefault(0, []).extend(items)
                continue
            for it in items:
                d = key_group(it[0]) * n >> 8  # owner(); KEY_GROUPS is 256
                b = dst.get(d)
                if b is None:
                    dst[d] = [it]
                else:
                    b.append(it)

    def take_outputs(self) -> dict[int, dict[int, list[Item]]]:
        out = {e: d for e, d in self.out.items() if d}
        if out:
            self.out = {e: {} for e in self.out}
        return out

    def advance(self, wm: float) -> None:
        """Event time moved to ``wm`` (also called on clock ticks for processing time)."""
        if wm > self.watermark:
            self.watermark = wm
        for op in self.ops.values():  # creation order is topological
            op.advance(self.watermark)

    def barrier(self, epoch: int) -> None:
        for s in self.sinks:
            s.barrier(epoch)

    def commit(self, epoch: int) -> None:
        for s in self.sinks:
            s.commit(epoch)

    def snapshot(self) -> dict[str, Any]:
        """``{"ops": {node name: state}, "sinks": {...}}``; keyed state is per key group."""
        ops = {}
        for op in self.ops.values():
            if isinstance(op, _SinkOp):
                continue
            st = op.snapshot()
            if st is not None:
                ops[op.name] = st
        return {"ops": ops, "sinks": {s.name: s.snapshot() for s in self.sinks}}

    def restore(self, parts: list[dict[str, Any]], kgs: range) -> None:
        """Take this actor's share of the state in ``parts`` (one per old actor)."""
        for op in self.ops.values():
            if isinstance(op, (_SinkOp, _AsOf)):
                continue
            states = [p["ops"][op.name] for p in parts if op.name in p["ops"]]
            if not states:
                continue
            if op.stateful:
                mine: dict[int, Any] = {}
                for st in states:
                    mine.update({kg: v for kg, v in st.items() if kg in kgs})
                op.restore(mine)
            else:
                merged: dict = {}
                for st in states:
                    merged.update(st)
                op.restore(merged)

    def as_of_ops(self) -> list[_AsOf]:
        return [op for op in self.ops.values() if isinstance(op, _AsOf)]

    def metrics(self) -> dict[str, dict[str, int]]:
        out = {}
        for op in self.ops.values():
            m = {"in": op.n_in, "out": op.n_out}
            if isinstance(op, _Window):
                m["open_windows"] = op.state.open_windows()
            out[op.name] = m
        return out

    def close(self) -> None:
        for s in self.sinks:
            try:
                s.close()
            except Exception:  # closing a sink must not hide the error that stopped us
                pass
