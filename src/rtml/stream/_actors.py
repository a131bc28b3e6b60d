"""The actors a dataflow runs in: source actors and stage actors (the I/O shell around
``StageExec``).

::

    SourceWorker.run() loop: read partitions ─▶ StageExec ─▶ Router ─▶ StageWorker.process(...)
         ▲ trigger(n, mode)  (barrier n goes out after the batch in hand, with the offsets)
    StageWorker.process(edge, up, seq, items, wm, control)
         per-channel sequence numbers restore send order; a channel that delivered barrier n
         waits (its calls block: backpressure) until every channel has; then the actor snapshots
         and forwards barrier n (aligned checkpoints)

Flow control: a Router keeps at most ``WINDOW`` calls in flight per destination actor and waits
for the oldest before sending more, so a slow consumer slows its producers down and buffers stay
bounded. A lone event is sent at once (batches are whatever accumulated meanwhile).
"""

from __future__ import annotations

import queue
import sys
import threading
import time
from collections import deque
from typing import Any

from rtml.stream._exec import StageExec
from rtml.stream._keys import owned
from rtml.stream._plan import Plan
from rtml.stream._time import POS_INF
from rtml.util.engine import resolve

__all__ = ["SourceWorker", "StageWorker"]

WINDOW = 4
TICK = 0.05


class Router:
    """Sends a stage's outputs to the actors of the next stages, with flow control."""

    def __init__(
        self, engine, plan: Plan, stage: int, index: int, downstream: dict[int, list[Any]]
    ) -> None:
        self.engine, self.index = engine, index
        self.handles = downstream  # edge id -> actor handles of its destination stage
        self.seq: dict[tuple[int, int], int] = {}
        self.inflight: dict[tuple[int, int], deque] = {}
        self.sent_wm: dict[tuple[int, int], float] = {}
        self.calls = 0
        self._wm_pushed = 0.0
        for e, hs in downstream.items():
            for d in range(len(hs)):
                self.seq[(e, d)] = 0
                self.inflight[(e, d)] = deque()
                self.sent_wm[(e, d)] = float("-inf")

    def _call(self, dest: tuple[int, int], items: list, wm: float, control: Any) -> None:
        q = self.inflight[dest]
        while q and (len(q) >= WINDOW or self._ready(q[0])):
            self._finish(q.popleft())
        seq = self.seq[dest]
        self.seq[dest] = seq + 1
        self.sent_wm[dest] = wm
        q.append(
            self.handles[dest[0]][dest[1]].process.remote(
                dest[0], self.index, seq, items, wm, control
            )
        )
        self.calls += 1

    def _ready(self, ref) -> bool:
        ready, _ = self.engine.wait([ref], timeout=0)
        return bool(ready)

    def _finish(self, ref) -> None:
        while True:
            try:
                self.engine.get(ref, timeout=5.0)
                return
            except self.engine.exceptions.GetTimeoutError:
                continue  # backpressure: the consumer is slow (its errors still surface)

    def send(self, outputs: dict[int, dict[int, list]], wm: float) -> None:
        for e, per_dst in outputs.items():
            for d, items in per_dst.items():
                self._call((e, d), items, wm, None)

    def watermark(self, wm: float, force: bool = False) -> None:
        """Tell destinations that have not heard of ``wm`` yet, at most every 20 ms (force:
        all of them, now)."""
        if not force:
            now = time.monotonic()
            if now - self._wm_pushed < 0.02:
                return
            self._wm_pushed = now
        for dest, last in self.sent_wm.items():
            if force or wm > last:
                self._call(dest, [], wm, None)

    def broadcast(self, control: Any, wm: float) -> None:
        for dest in self.sent_wm:
            self._call(dest, [], wm, control)

    def drain(self) -> None:
        for q in self.inflight.values():
            while q:
                self._finish(q.popleft())


def _restore_parts(parts: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    return [p for p in (parts or []) if p]


class _Base:
    def __init__(
        self,
        plan: Plan,
        stage: int,
        index: int,
        count: int,
        downstream: dict[int, list[Any]],
        engine: Any,
    ) -> None:
        self.engine = resolve(engine)
        self.plan, self.stage, self.index = plan, stage, index
        self.ex = StageExec(plan, stage, index, count)
        self.router = Router(self.engine, plan, stage, index, downstream)
        self.cv = threading.Condition()
        self.parts: dict[int, dict[str, Any]] = {}
        self.error: BaseException | None = None
        self.started = time.time()

    def ping(self) -> bool:
        return True

    def snapshot_part(self, n: int, timeout: float) -> dict[str, Any] | None:
        """This actor's part of checkpoint ``n``, once taken (None after ``timeout``)."""
        deadline = time.monotonic() + timeout
        with self.cv:
            while n not in self.parts:
                if self.error is not None:
                    raise self.error
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.cv.wait(min(left, 0.5))
            for old in [k for k in self.parts if k < n]:
                del self.parts[old]
            return self.parts[n]

    def _metrics(self) -> dict[str, Any]:
        return {
            "ops": self.ex.metrics(),
            "watermark": self.ex.watermark,
            "dead_letters": self.ex.dead_letters,
            "calls_sent": self.router.calls,
        }


class SourceWorker(_Base):
    """Reads some partitions of one source and runs the operators fused after it."""

    def __init__(
        self,
        plan: Plan,
        stage: int,
        index: int,
        count: int,
        downstream: dict[int, list[Any]],
        engine: Any,
        partitions: list[str],
        parts: list[dict] | None,
        max_batch: int,
    ) -> None:
        super().__init__(plan, stage, index, count, downstream, engine)
        self.partitions = partitions
        self.max_batch = max_batch
        restored = _restore_parts(parts)
        self.offsets: dict[str, Any] = {}
        for p in restored:
            self.offsets.update(p.get("offsets", {}))
        self.ex.restore(restored, range(0))
        node = plan.nodes[plan.stages[stage].nodes[0]]
        self.source = node.params["source"]
        self.source_node = node.id
        self.triggers: deque = deque()
        self.acks: deque = deque()
        self.offsets_at: dict[int, dict[str, Any]] = {}
        self.exhausted = False
        self.loop_ended = False
        self.readers: dict[str, Any] = {}
        self._acks_out: queue.SimpleQueue = queue.SimpleQueue()
        self._acker = threading.Thread(target=self._ack_loop, daemon=True, name="stream-acks")
        self._acker.start()
        self.lags: dict[str, tuple[int, int | None]] = {}
        self.read = dict.fromkeys(partitions, 0)

    def trigger(self, n: int, mode: str) -> None:
        """Inject barrier ``n`` after the batch in hand; ``mode`` is "checkpoint", "stop"
        (then stop reading) or "final" (end of input: watermark +inf first, then stop)."""
        with self.cv:
            self.triggers.append((n, mode))
            self.cv.notify_all()

    def commit(self, n: int) -> None:
        """Checkpoint ``n`` is durable: ack its offsets, let exactly-once sinks write. Done by
        the read loop between batches while it runs, here once it has ended."""
        with self.cv:
            if not self.loop_ended:
                self.acks.append(n)
                self.cv.notify_all()
                return
        self._commit(n)

    def _commit(self, n: int) -> None:
        offsets = self.offsets_at.pop(n, None)
        for old in [k for k in self.offsets_at if k < n]:
            del self.offsets_at[old]
        for p, off in (offsets or {}).items():
            if p in self.readers:
                self._acks_out.put((self.readers[p], off))
        self.ex.commit(n)

    def _ack_loop(self) -> None:
        """Acks go to the broker from here, not from the read loop: an XACK of a second's
        10k entries costs ~15 ms, which events arriving meanwhile would wait for."""
        while True:
            item = self._acks_out.get()
            if item is None:
                return
            reader, off = item
            try:
                reader.ack(off)
            except Exception as e:  # a lost broker shows in the next read; acks are for tidiness
                print(f"rtml.stream: ack of {off!r} failed: {e}", file=sys.stderr)  # noqa: T201

    def status(self) -> dict[str, Any]:
        return {"exhausted": self.exhausted}

    def metrics(self) -> dict[str, Any]:
        m = self._metrics()
        m["partitions"] = {}
        for p in self.partitions:
            read, lag = self.lags.get(p, (0, None))
            m["partitions"][p] = {"offset": repr(self.offsets.get(p)), "lag": lag, "read": read}
        return m

    def run(self) -> str:
        """The read loop; returns "stopped" after a stop or final barrier."""
        try:
            return self._loop()
        except BaseException as e:
            with self.cv:
                self.error = e
                self.cv.notify_all()
            self.close()
            raise
        finally:
            with self.cv:
                self.loop_ended = True
                left = list(self.acks)
                self.acks.clear()
            if self.error is None:
                for n in left:
                    self._commit(n)

    def close(self) -> None:
        """Release readers and sink writers (the coordinator calls it before killing us)."""
        self._acks_out.put(None)
        self._acker.join(10)  # the last checkpoint's acks go out before the readers close
        for r in self.readers.values():
            try:
                r.close()
            except Exception:  # closing must not hide the error that stopped the loop
                pass
        self.readers = {}
        self.ex.close()

    def _loop(self) -> str:
        ex, router = self.ex, self.router
        for p in self.partitions:
            self.readers[p] = self.source.open(p, self.offsets.get(p))
        done: set[str] = set()
        order = deque(self.partitions)
        last_tick = last_lag = 0.0
        lag_every = TICK
        idle_rounds = 0
        while True:
            with self.cv:
                trig = self.triggers.popleft() if self.triggers else None
                acks = list(self.acks)
                self.acks.clear()
            for done_n in acks:
                self._commit(done_n)
            if trig is not None:
                n, mode = trig
                if mode == "final":
                    ex.advance(POS_INF)
                    router.send(ex.take_outputs(), POS_INF)
                ex.barrier(n)
                part = {"offsets": dict(self.offsets), **ex.snapshot()}
                self.offsets_at[n] = dict(self.offsets)
                with self.cv:
                    self.parts[n] = part
                    self.cv.notify_all()
                router.broadcast(("barrier", n, mode), ex.watermark)
                if mode in ("stop", "final"):
                    router.drain()
                    return "stopped"
                continue
            live = [p for p in order if p not in done]
            got = 0
            if live:
                p = live[0]
                order.rotate(-1)
                reader = self.readers[p]
                wait = 0.0 if idle_rounds < len(live) else TICK / len(live)
                before = self.offsets.get(p)
                recs = reader.read(self.max_batch, wait)
                self.offsets[p] = reader.offset()
                if reader.done():
                    done.add(p)
                if recs:
                    got = len(recs)
                    self.read[p] += got
                    ex.partition = p
                    ex.offset_hint = (p, before)
                    ex.push(self.source_node, 0, [(None, None, r) for r in recs])
            else:
                if not self.exhausted:
                    self.exhausted = True
                with self.cv:
                    if not self.triggers:
                        self.cv.wait(TICK)
            idle_rounds = 0 if got else idle_rounds + 1
            et = ex.event_time
            if et is not None:
                wm = et.watermark([p for p in self.partitions if p not in done])
            else:
                wm = POS_INF if not live else float("-inf")
            if wm > ex.watermark:
                ex.advance(wm)
            out = ex.take_outputs()
            if out:
                router.send(out, ex.watermark)
            now = time.monotonic()
            if now - last_tick >= TICK:
                last_tick = now
                router.watermark(ex.watermark, force=True)
            if now - last_lag >= lag_every:
                last_lag = now
                for p in self.partitions:  # records read and left, seen at the same moment
                    self.lags[p] = (self.read[p], self.readers[p].lag())
                # Asking a broker for lag costs a round trip: then once a second is enough.
                lag_every = TICK if time.monotonic() - now < 0.001 else 1.0


class StageWorker(_Base):
    """Runs a keyed stage: receives shuffled batches from every upstream actor."""

    def __init__(
        self,
        plan: Plan,
        stage: int,
        index: int,
        count: int,
        downstream: dict[int, list[Any]],
        engine: Any,
        parts: list[dict] | None,
        tables: dict[str, dict[int, Any]],
    ) -> None:
        super().__init__(plan, stage, index, count, downstream, engine)
        self.kgs = owned(index, count)
        self.ex.restore(_restore_parts(parts), self.kgs)
        self._load_tables(tables)
        self.channels = plan.channels(stage)
        self.entry = {
            e: (plan.edges[e].dst_node, plan.edges[e].side) for e in plan.stages[stage].inputs
        }
        self.inbox: dict[tuple[int, int], dict[int, tuple]] = {c: {} for c in self.channels}
        self.next_seq = dict.fromkeys(self.channels, 0)
        self.ch_wm = dict.fromkeys(self.channels, float("-inf"))
        self.blocked: set[tuple[int, int]] = set()
        self.barrier_mode: dict[int, str] = {}
        self.busy = False
        self.finished = False

    def _load_tables(self, tables: dict[str, dict[int, Any]]) -> None:
        for op in self.ex.as_of_ops():
            refs = tables.get(op.name, {})
            mine = {kg: r for kg, r in refs.items() if kg in self.kgs}
            values = self.engine.get(list(mine.values()), timeout=300) if mine else []
            op.index.replace(dict(zip(mine.keys(), values, strict=False)))

    def update_table(self, name: str, refs: dict[int, Any]) -> bool:
        """Swap in a refreshed table between batches."""
        mine = {kg: r for kg, r in refs.items() if kg in self.kgs}
        values = self.engine.get(list(mine.values()), timeout=300) if mine else []
        fresh = dict(zip(mine.keys(), values, strict=False))
        for op in self.ex.as_of_ops():
            if op.name == name:
                op.index.replace(fresh)
        return True

    def metrics(self) -> dict[str, Any]:
        m = self._metrics()
        m["blocked_channels"] = len(self.blocked)
        return m

    def process(self, edge: int, up: int, seq: int, items: list, wm: float, control: Any) -> None:
        """One message from upstream channel (edge, up); returns once it has been handled
        (so the sender's flow-control window holds it until then)."""
        ch = (edge, up)
        with self.cv:
            self.inbox[ch][seq] = (items, wm, control)
            self.cv.notify_all()
        while True:
            with self.cv:
                while True:
                    if self.error is not None:
                        raise self.error
                    if self.next_seq[ch] > seq:
                        return None
                    if not self.busy and self._runnable() is not None:
                        self.busy = True
                        break
                    self.cv.wait(1.0)
            try:
                self._drain()
            except BaseException as e:
                with self.cv:
                    self.error = e
                raise
            finally:
                with self.cv:
                    self.busy = False
                    self.cv.notify_all()

    def _runnable(self) -> tuple[int, int] | None:
        for c in self.channels:
            if c not in self.blocked and self.next_seq[c] in self.inbox[c]:
                return c
        return None

    def _drain(self) -> None:
        ex, router = self.ex, self.router
        while True:
            with self.cv:
                c = self._runnable()
                if c is None:
                    return
                items, wm, control = self.inbox[c].pop(self.next_seq[c])
            if items:
                nid, side = self.entry[c[0]]
                ex.push(nid, side, items)
            if wm > self.ch_wm[c]:
                self.ch_wm[c] = wm
            low = min(self.ch_wm.values())
            ex.advance(low)
            out = ex.take_outputs()
            if out:
                router.send(out, ex.watermark)
            if control is not None:
                self._on_barrier(c, control)
            else:
                router.watermark(ex.watermark)
            with self.cv:
                self.next_seq[c] += 1
                self.cv.notify_all()

    def _on_barrier(self, c: tuple[int, int], control: tuple) -> None:
        _, n, mode = control
        self.blocked.add(c)
        if len(self.blocked) < len(self.channels):
            return
        ex, router = self.ex, self.router
        if mode == "final":
            ex.advance(POS_INF)
            out = ex.take_outputs()
            if out:
                router.send(out, POS_INF)
        ex.barrier(n)
        part = ex.snapshot()
        with self.cv:
            self.parts[n] = part
            self.blocked.clear()
            self.finished = mode in ("stop", "final")
            self.cv.notify_all()
        router.broadcast(("barrier", n, mode), ex.watermark)
        if self.finished:
            router.drain()

    def commit(self, n: int) -> None:
        """Checkpoint ``n`` is durable: exactly-once sinks write their epochs up to it."""
        with self.cv:
            while self.busy:
                self.cv.wait(1.0)
            self.busy = True
        try:
            self.ex.commit(n)
        finally:
            with self.cv:
                self.busy = False
                self.cv.notify_all()

    def close(self) -> None:
        """Release sink writers (the coordinator calls it before killing us)."""
        self.ex.close()
