"""A running dataflow: starts its actors, takes checkpoints, recovers, stops (the coordinator).

::

    start(flow) ─▶ plan ─▶ actors (downstream first) ─▶ SourceWorker.run() for each source actor
    coordinator thread, every 50 ms:
      checkpoint n: sources.trigger(n) ─▶ barriers flow ─▶ every actor's snapshot_part(n)
                    ─▶ store.write(n) (atomic) ─▶ every actor's commit(n) (sinks write epochs)
      a source run() or a ping failed ─▶ user error: fail the run, naming the event
                                      └▶ lost actor/node: kill all, restore the last checkpoint
      all sources exhausted ─▶ final checkpoint (watermark +inf: every window fires) ─▶ finished
    run.stop() ─▶ stop checkpoint (drained, durable) ─▶ actors killed; resume=True continues it
"""

from __future__ import annotations

import dataclasses
import sys
import threading
import time
from typing import Any

from rtml.dashboard import register_panel
from rtml.stream._actors import TICK, WINDOW, SourceWorker, StageWorker
from rtml.stream._checkpoint import open_store
from rtml.stream._errors import (
    ConnectorError,
    StreamConfigError,
    StreamError,
    UserFunctionError,
)
from rtml.stream._graph import Dataflow
from rtml.stream._plan import plan as make_plan
from rtml.stream._registry import panel_rows, registry
from rtml.util.engine import resolve

__all__ = ["Run", "start"]

_FATAL = (UserFunctionError, StreamConfigError, ConnectorError)
RUNS: dict[str, Run] = {}  # name -> the latest Run started in this process


def start(
    flow: Dataflow,
    *,
    parallelism: int = 1,
    checkpoint_every: float | None = 1.0,
    checkpoint_dir: str | None = None,
    resume: bool = False,
    engine: Any = None,
    max_restarts: int = 10,
    max_batch: int = 1024,
    actor_options: dict[str, Any] | None = None,
) -> Run:
    """Start ``flow`` on the engine and return its :class:`Run`.

    Args:
        parallelism: actors per keyed stage (and at most this many per source).
        checkpoint_every: seconds between checkpoints (None: only at stop and end).
        checkpoint_dir: a directory, or ``"redis://HOST:PORT[/prefix]"``; None keeps
            checkpoints in the driver's memory (they survive actor and node failures).
        resume: continue from the newest checkpoint in ``checkpoint_dir`` (any parallelism).
        engine: ``"rtml"`` (default) or ``"ray"``.
        max_restarts: recoveries from lost actors or nodes before the run fails.
        max_batch: the most records a source reads per batch.
        actor_options: extra options for every operator actor (default ``num_cpus=0``,
            ``scheduling_strategy="SPREAD"``).

    Raises:
        StreamConfigError: the dataflow or an argument is inconsistent.
        ConnectorError: a source cannot list its partitions (e.g. broker unreachable).
    """
    if checkpoint_every is not None and not checkpoint_every > 0:
        raise StreamConfigError(
            f"checkpoint_every must be a positive number of seconds or "
            f"None, got {checkpoint_every!r}"
        )
    if not isinstance(max_batch, int) or max_batch < 1:
        raise StreamConfigError(f"max_batch must be a positive int, got {max_batch!r}")
    return Run(
        flow,
        parallelism,
        checkpoint_every,
        checkpoint_dir,
        resume,
        engine,
        max_restarts,
        max_batch,
        actor_options or {},
    )


def _causes(e: BaseException | None):
    seen = set()
    while isinstance(e, BaseException) and id(e) not in seen:
        seen.add(id(e))
        yield e
        cause = getattr(e, "cause", None)
        e = cause if isinstance(cause, BaseException) else e.__cause__


def _root(e: BaseException) -> BaseException:
    """The innermost StreamError behind ``e`` (through remote task errors), else ``e``."""
    found = None
    for c in _causes(e):
        if isinstance(c, StreamError):
            found = c
    if found is not None and type(found).__module__.startswith("rtml.stream"):
        return found
    if found is not None:  # an engine error class that is also the StreamError: rebuild it
        for c in reversed(list(_causes(found))):
            if type(c).__module__.startswith("rtml.stream"):
                return c
    return found or e


class _TableInfo:
    """What an as-of join operator needs of its table in an actor (the rows travel apart,
    sharded by key group)."""

    def __init__(self, table: Any) -> None:
        self.time, self.name = table.time, table.name


def _shippable(plan: Any) -> Any:
    """The plan as actors get it: tables replaced by their description."""
    nodes = {}
    for nid, node in plan.nodes.items():
        if node.kind == "join_as_of":
            node = dataclasses.replace(
                node, params={**node.params, "table": _TableInfo(node.params["table"])}
            )
        nodes[nid] = node
    return dataclasses.replace(plan, nodes=nodes)


class Run:
    """A running dataflow. Made by ``flow.run(...)``; see :func:`start`."""

    def __init__(
        self,
        flow: Dataflow,
        parallelism: int,
        checkpoint_every: float | None,
        checkpoint_dir: str | None,
        resume: bool,
        engine: Any,
        max_restarts: int,
        max_batch: int,
        actor_options: dict[str, Any],
    ) -> None:
        self.name = flow.name
        self.engine = resolve(engine)
        self._engine_arg = engine if isinstance(engine, str) or engine is None else engine.__name__
        self.checkpoint_every, self.max_restarts, self.max_batch = (
            checkpoint_every,
            max_restarts,
            max_batch,
        )
        self._actor_options = {"num_cpus": 0, "scheduling_strategy": "SPREAD", **actor_options}
        self._start_timeout = 120.0
        partitions = {}
        for n in flow.nodes:
            if n.kind == "source":
                partitions[n.id] = list(n.params["source"].partitions())
        self.plan = make_plan(flow, parallelism, partitions)
        self.parallelism = parallelism
        self._sinks = {n.name: n.params["sink"] for n in flow.nodes if n.kind == "sink"}
        self._tables = {n.name: n.params["table"] for n in flow.nodes if n.kind == "join_as_of"}
        self.store = open_store(checkpoint_dir, flow.name)
        latest = self.store.latest()
        self.last_checkpoint = latest[0] if latest else 0
        self._next_id = self.last_checkpoint + 1
        self.status = "starting"
        self.error: BaseException | None = None
        self.restarts = 0
        self._generation = 0
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._wake = threading.Event()
        self._stop_requested = False
        self._ckpt: tuple[int, str, dict[tuple[int, int], Any]] | None = None
        self._last_ckpt_time = time.monotonic()
        self._prev_metrics: tuple[float, dict[str, int]] | None = None
        self._final: dict[str, Any] | None = None
        self._plan_ref = self.engine.put(_shippable(self.plan))
        self._table_refs = {name: self._put_table(t) for name, t in self._tables.items()}
        self._launch(latest[1] if (resume and latest) else None)
        RUNS[self.name] = self
        self._key = f"{self.name}@{time.time():.3f}"
        self._registry: Any = None
        self._last_report = 0.0
        self.last_report: dict[str, Any] | None = None
        register_panel("streams", "Streams (rtml.stream)", panel_rows)
        self._thread = threading.Thread(
            target=self._coordinate, daemon=True, name=f"rtml-stream-{self.name}"
        )
        self._thread.start()

    # -- public ----------------------------------------------------------------------------

    def wait(
        self, timeout: float | None = None, *, progress: bool = False, file: Any = None
    ) -> None:
        """Block until the run ends: its bounded sources are exhausted and everything is
        written (or it was stopped).

        Args:
            timeout: seconds to wait at most (None: no limit).
            progress: draw a progress line on stderr (or ``file``): records read, of how many
                when the sources know their size, rate and elapsed time.

        Raises:
            TimeoutError: still running after ``timeout`` seconds.
            UserFunctionError / StreamError: the run failed (the remote traceback included).
        """
        if progress:
            self._draw_until_done(timeout, file or sys.stderr)
        if not self._done.wait(timeout):
            raise TimeoutError(
                f"dataflow {self.name!r} still running after {timeout} s "
                f"(status {self.status}); call run.stop() to end it"
            )
        if self.error is not None:
            raise self.error

    def _draw_until_done(self, timeout: float | None, file: Any) -> None:
        from rtml.util.progress import format_line

        t0 = time.monotonic()
        line = ""
        while not self._done.wait(0.5):
            m = self._gather(2.0)
            read = sum(p.get("read", 0) for p in m["sources"].values())
            lags = [p.get("lag") for p in m["sources"].values()]
            total = read + sum(lags) if lags and None not in lags else None
            line = format_line(self.name, read, total, time.monotonic() - t0)
            file.write("\r" + line)
            file.flush()
            if timeout is not None and time.monotonic() - t0 > timeout:
                break
        if line:
            file.write("\n")

    def stop(self, timeout: float = 60.0) -> None:
        """Drain: stop reading, take a final checkpoint (so ``resume=True`` continues exactly
        here), let exactly-once sinks write, then stop the actors.

        Raises:
            TimeoutError: the final checkpoint did not complete in ``timeout`` seconds (the
                actors are stopped anyway; a resume starts from the previous checkpoint).
        """
        if not self._done.is_set():
            self._stop_requested = True
            self._wake.set()
            if not self._done.wait(timeout):
                self._teardown(graceful=False)
                self._finish("stopped", None)
                raise TimeoutError(
                    f"dataflow {self.name!r} did not drain in {timeout} s; its "
                    f"actors were killed (resume continues from checkpoint "
                    f"{self.last_checkpoint})"
                )
        if self.error is not None and self.status == "failed":
            raise self.error

    def refresh(self, table: Any = None, timeout: float = 300.0) -> None:
        """Reload a ``join_as_of`` table (all of them by default) while the dataflow runs;
        events see the new rows from the next batch on."""
        names = [n for n, t in self._tables.items() if table is None or t is table]
        if not names:
            raise StreamConfigError("refresh(table): that table is not joined in this dataflow")
        refs = []
        for name in names:
            self._table_refs[name] = self._put_table(self._tables[name])
            for st in self.plan.stages:
                if any(self.plan.nodes[n].name == name for n in st.nodes):
                    refs += [
                        a.update_table.remote(name, self._table_refs[name])
                        for a in self._actors[st.id]
                    ]
        self.engine.get(refs, timeout=timeout)

    def metrics(self, timeout: float = 10.0) -> dict[str, Any]:
        """Per operator: events in and out and the output rate since the last call; per source
        partition: offset and lag; per stage: watermark; checkpoints: last id and age."""
        if self._done.is_set() and self._final is not None:
            return self._final
        return self._gather(timeout)

    def _gather(self, timeout: float) -> dict[str, Any]:
        actors = [(sid, i, a) for sid, hs in self._actors.items() for i, a in enumerate(hs)]
        try:
            ms = self.engine.get([a.metrics.remote() for _, _, a in actors], timeout=timeout)
        except Exception:  # an actor is gone (recovering): report what the run knows
            ms = []
        ops: dict[str, dict[str, Any]] = {}
        sources: dict[str, Any] = {}
        marks: dict[str, float] = {}
        dead = 0
        for (sid, _, _), m in zip(actors, ms, strict=False):
            for name, c in m["ops"].items():
                agg = ops.setdefault(name, {"in": 0, "out": 0})
                for k, v in c.items():
                    agg[k] = agg.get(k, 0) + v
            sources.update(m.get("partitions", {}))
            st = self.plan.stages[sid].name
            marks[st] = min(marks.get(st, float("inf")), m["watermark"])
            dead += m["dead_letters"]
        now = time.monotonic()
        if self._prev_metrics is not None:
            t0, prev = self._prev_metrics
            for name, agg in ops.items():
                agg["rate"] = (agg["out"] - prev.get(name, 0)) / max(now - t0, 1e-9)
        self._prev_metrics = (now, {n: a["out"] for n, a in ops.items()})
        return {
            "name": self.name,
            "status": self.status,
            "restarts": self.restarts,
            "parallelism": self.parallelism,
            "operators": ops,
            "sources": sources,
            "watermarks": marks,
            "dead_letters": dead,
            "checkpoint": {
                "last_id": self.last_checkpoint,
                "store": self.store.describe(),
                "age_s": now - self._last_ckpt_time,
            },
        }

    def __repr__(self) -> str:
        return f"<rtml.stream Run {self.name!r} {self.status}>"

    # -- actors ----------------------------------------------------------------------------

    def _put_table(self, table: Any) -> dict[int, Any]:
        return {kg: self.engine.put(rows) for kg, rows in table.load().items()}

    def _launch(self, restored: dict[str, Any] | None) -> None:
        plan, eng = self.plan, self.engine
        self._generation += 1
        if restored is not None:
            self._finish_restored_epochs(restored)
        parts_by_stage = (restored or {}).get("parts", {})
        self._actors: dict[int, list[Any]] = {}
        for st in reversed(plan.stages):
            downstream = {e: self._actors[plan.edges[e].dst_stage] for e in st.outputs}
            parts = parts_by_stage.get(st.name)
            parts_ref = eng.put(parts) if parts else None
            handles = []
            for i in range(st.parallelism):
                opts = dict(self._actor_options)
                opts["name"] = f"rtml.stream:{plan.actor_name(st.id, i)}#{self._generation}"
                if st.kind == "source":
                    opts["max_concurrency"] = 8
                    cls = eng.remote(**opts)(SourceWorker)
                    h = cls.remote(
                        self._plan_ref,
                        st.id,
                        i,
                        st.parallelism,
                        downstream,
                        self._engine_arg,
                        st.partitions[i :: st.parallelism],
                        parts_ref,
                        self.max_batch,
                    )
                else:
                    opts["max_concurrency"] = WINDOW * len(plan.channels(st.id)) + 8
                    cls = eng.remote(**opts)(StageWorker)
                    h = cls.remote(
                        self._plan_ref,
                        st.id,
                        i,
                        st.parallelism,
                        downstream,
                        self._engine_arg,
                        parts_ref,
                        self._table_refs,
                    )
                handles.append(h)
            self._actors[st.id] = handles
        self._sources = [
            h for st in plan.stages if st.kind == "source" for h in self._actors[st.id]
        ]
        # Every actor up before any source reads: a constructor that fails (a table that
        # does not unpickle, a sink that cannot open) fails the start, not the first batch.
        eng.get([a.ping.remote() for a in self._all_actors()], timeout=self._start_timeout)
        self._run_refs = {s.run.remote(): s for s in self._sources}
        self._pings: list[Any] = []
        self._last_ping = time.monotonic()
        self._exhausted_check: list[Any] | None = None
        self._ckpt = None
        self._last_ckpt_time = time.monotonic()
        self.status = "running"

    def _finish_restored_epochs(self, restored: dict[str, Any]) -> None:
        """Exactly-once sinks: write the epochs a checkpoint holds but that may not have been
        written before the failure (writers skip epochs already written)."""
        for parts in restored.get("parts", {}).values():
            for i, part in enumerate(parts):
                for name, st in (part or {}).get("sinks", {}).items():
                    sink = self._sinks.get(name)
                    if sink is None or not st["pending"]:
                        continue
                    w = sink.open(st["writer_id"], i, len(parts))
                    try:
                        for e in sorted(st["pending"]):
                            w.write_epoch(e, st["pending"][e])
                    finally:
                        w.close()

    def _all_actors(self) -> list[Any]:
        return [a for hs in self._actors.values() for a in hs]

    def _teardown(self, graceful: bool) -> None:
        actors = self._all_actors()
        if graceful:
            self._final = self._gather(10.0)
            try:
                self.engine.get([a.close.remote() for a in actors], timeout=10)
            except Exception:  # an actor already gone: kill below regardless
                pass
        for a in actors:
            try:
                self.engine.kill(a)
            except Exception:  # already dead
                pass

    # -- the coordinator -------------------------------------------------------------------

    def _coordinate(self) -> None:
        while not self._done.is_set():
            try:
                if not self.engine.is_initialized():
                    self.error = StreamError(
                        f"dataflow {self.name!r}: the runtime was shut down while it ran"
                    )
                    self._finish("failed", self.error)
                    return
                self._step()
                self._report()
            except Exception as e:
                if self._done.is_set():
                    return
                try:
                    self._on_failure(e)
                except Exception as again:  # never leave the run without a coordinator
                    self._finish("failed", again)
            self._wake.wait(TICK)
            self._wake.clear()

    def _step(self) -> None:
        eng = self.engine
        refs = list(self._run_refs)
        ready, _ = eng.wait(refs, num_returns=len(refs), timeout=0) if refs else ([], [])
        for r in ready:
            self._run_refs.pop(r)
            eng.get(r, timeout=10)  # raises what stopped the loop, if it failed
        now = time.monotonic()
        if now - self._last_ping > 0.5:
            done, _ = (
                eng.wait(self._pings, num_returns=len(self._pings), timeout=0)
                if self._pings
                else ([], [])
            )
            for r in done:
                eng.get(r, timeout=10)
            self._pings = [a.ping.remote() for a in self._all_actors()]
            self._last_ping = now
        if self._ckpt is not None:
            self._progress_checkpoint()
            return
        if self._stop_requested:
            self._trigger("stop")
        elif self._sources_exhausted():
            self._trigger("final")
        elif (
            self.checkpoint_every is not None
            and now - self._last_ckpt_time >= self.checkpoint_every
        ):
            self._trigger("checkpoint")

    def _report(self, force: bool = False) -> None:
        """Tell the cluster's registry how the run is doing (every second)."""
        now = time.monotonic()
        if not force and now - self._last_report < 1.0:
            return
        self._last_report = now
        try:
            if self._registry is None:
                self._registry = registry(self.engine)
            m = self._final if self._final is not None else self._gather(2.0)
            m = {**m, "status": self.status, "key": self._key}
            self.last_report = m
            self._registry.report.remote(self._key, m)
        except Exception:  # the registry is for watching; the run goes on without it
            self._registry = None

    def _sources_exhausted(self) -> bool:
        if self._exhausted_check is None:
            self._exhausted_check = [s.status.remote() for s in self._sources]
            return False
        ready, _ = self.engine.wait(
            self._exhausted_check, num_returns=len(self._exhausted_check), timeout=0
        )
        if len(ready) < len(self._exhausted_check):
            return False
        states = self.engine.get(self._exhausted_check, timeout=10)
        self._exhausted_check = None
        return all(s["exhausted"] for s in states)

    def _trigger(self, mode: str) -> None:
        n = self._next_id
        self._next_id += 1
        for s in self._sources:
            s.trigger.remote(n, mode)
        parts = {
            (sid, i): a.snapshot_part.remote(n, 30.0)
            for sid, hs in self._actors.items()
            for i, a in enumerate(hs)
        }
        self._ckpt = (n, mode, parts)

    def _progress_checkpoint(self) -> None:
        assert self._ckpt is not None
        n, mode, parts = self._ckpt
        refs = list(parts.values())
        ready, _ = self.engine.wait(refs, num_returns=len(refs), timeout=0)
        if len(ready) < len(refs):
            return
        got = dict(zip(parts, self.engine.get(refs, timeout=30), strict=False))
        missing = [k for k, v in got.items() if v is None]
        if missing:  # not there within 30 s (backpressure): ask again
            for sid, i in missing:
                parts[(sid, i)] = self._actors[sid][i].snapshot_part.remote(n, 30.0)
            return
        data = {
            "plan": {st.name: st.parallelism for st in self.plan.stages},
            "parts": {
                st.name: [got[(st.id, i)] for i in range(st.parallelism)] for st in self.plan.stages
            },
        }
        self.store.write(n, data)
        self.last_checkpoint = n
        self._last_ckpt_time = time.monotonic()
        self.engine.get([a.commit.remote(n) for a in self._all_actors()], timeout=120)
        self._ckpt = None
        if mode in ("stop", "final"):
            self._teardown(graceful=True)
            self._finish("stopped" if mode == "stop" else "finished", None)

    def _on_failure(self, e: BaseException) -> None:
        err = _root(e)
        if isinstance(err, _FATAL) or self.restarts >= self.max_restarts:
            self._teardown(graceful=False)
            self._finish("failed", err)
            return
        self.restarts += 1
        self.status = "recovering"
        self._teardown(graceful=False)
        latest = self.store.latest()
        try:
            self._launch(latest[1] if latest else None)
        except Exception as again:
            self._teardown(graceful=False)
            self._finish("failed", _root(again))

    def _finish(self, status: str, error: BaseException | None) -> None:
        with self._lock:
            if self._done.is_set():
                return
            self.status = status
            self.error = error
            if self._final is not None:
                self._final["status"] = status
            if self.engine.is_initialized():
                self._report(force=True)
            close = getattr(self.store, "close", None)
            if close is not None:
                close()
            self._done.set()
