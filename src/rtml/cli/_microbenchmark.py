"""``rtml microbenchmark``: Ray's ``ray microbenchmark`` rows, plus rows Ray lacks.

Rows keep Ray's names and workloads (python/ray/_private/ray_perf.py) so the two outputs compare
line by line; see ``_timeit`` for the measuring method. Ray-row workloads run on one runtime
started with ``init(num_cpus=...)``; the rows Ray lacks (start-up, shutdown, idle memory, a
million tiny tasks) each run in fresh subprocesses (``_probe``), so the numbers are not
skewed by what ran before.
"""

from __future__ import annotations

import faulthandler
import gc
import os
import platform
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import rtml
from rtml.cli import _actor_rows, _process_rows
from rtml.cli import _workloads as w
from rtml.cli._timeit import Row, TablePrinter, timeit, write_json


@dataclass
class Ctx:
    duration: float
    num_cpus: int
    tiny_tasks: int
    cache: dict[str, Any] = field(default_factory=dict)

    @property
    def n_cpu(self) -> int:
        """Ray's ``multiprocessing.cpu_count() // 2``, of the CPUs given to the runtime."""
        return max(1, self.num_cpus // 2)


RowFn = Callable[[Ctx], "Row | list[Row]"]


# --------------------------------------------------------------------------- task/object rows
def _value(ctx: Ctx) -> Any:
    if "value" not in ctx.cache:
        ctx.cache["value"] = rtml.put(0)
    return ctx.cache["value"]


def get_calls(ctx: Ctx) -> Row:
    value = _value(ctx)
    return timeit("", lambda: rtml.get(value), ctx.duration)


def put_calls(ctx: Ctx) -> Row:
    return timeit("", lambda: rtml.put(0), ctx.duration)


def multi_put_calls(ctx: Ctx) -> Row:
    def put_multi_small() -> None:
        rtml.get([w.do_put_small.remote() for _ in range(10)])

    return timeit("", put_multi_small, ctx.duration, 1000)


def put_gigabytes(ctx: Ctx) -> Row:
    arr = w.big_array(100 * 1024 * 1024 * 8)  # 800 MiB: np.zeros(100 Mi, int64)

    def put_large() -> None:
        rtml.put(arr)

    return timeit("", put_large, ctx.duration, 8 * 0.1, unit="GB/s")


def tasks_and_get_batch(ctx: Ctx) -> Row:
    def batch() -> int:
        submitted = [w.small_value.remote() for _ in range(1000)]
        rtml.get(submitted)
        return 0

    # Ray reports this row per batch of 1000 (multiplier 1), so it stays that way here.
    return timeit("", batch, ctx.duration)


def multi_put_gigabytes(ctx: Ctx) -> Row:
    def put_multi() -> None:
        rtml.get([w.do_put.remote() for _ in range(10)])

    return timeit("", put_multi, ctx.duration, 10 * 8 * 0.1, unit="GB/s")


def get_10k_refs(ctx: Ctx) -> Row:
    obj_containing_ref = w.create_object_containing_ref.remote()
    rtml.get(obj_containing_ref)  # created outside the timed part, as in Ray
    return timeit("", lambda: rtml.get(obj_containing_ref), ctx.duration)


def wait_1k_refs(ctx: Ctx) -> Row:
    def wait_multiple_refs() -> None:
        num_objs = 1000
        not_ready = [w.small_value.remote() for _ in range(num_objs)]
        fetch_local = True
        for _ in range(num_objs):
            _ready, not_ready = rtml.wait(not_ready, fetch_local=fetch_local)
            if fetch_local:
                fetch_local = False

    return timeit("", wait_multiple_refs, ctx.duration)


def tasks_sync(ctx: Ctx) -> Row:
    return timeit("", lambda: rtml.get(w.small_value.remote()), ctx.duration)


def tasks_async(ctx: Ctx) -> Row:
    def small_task_async() -> None:
        rtml.get([w.small_value.remote() for _ in range(1000)])

    return timeit("", small_task_async, ctx.duration, 1000)


def multi_tasks_async(ctx: Ctx) -> Row:
    n, m = 10000, 4
    actor_cls = _actor_rows.actor_class(w.Actor, num_cpus=0)
    if actor_cls is not None:  # Ray's workload: m client actors, each submitting n tasks
        clients = [actor_cls.remote() for _ in range(m)]
        note = ""

        def multi_task() -> None:
            rtml.get([a.small_value_batch.remote(n) for a in clients])
    else:
        # Adapted: actors are not available, so the m clients are tasks holding no CPU
        # (Ray's client actors take num_cpus=0 too); each submits n tasks and gets them.
        clients = []
        note = "clients are num_cpus=0 tasks (actors not available)"
        client_task = w.small_value_batch.options(num_cpus=0)

        def multi_task() -> None:
            rtml.get([client_task.remote(n) for _ in range(m)])

    try:
        row = timeit("", multi_task, ctx.duration, n * m)
    finally:
        _actor_rows.release(clients)
    row.note = note
    return row


# --------------------------------------------------------------------------- the row list
RAY_ROWS: list[tuple[str, RowFn]] = [
    ("single client get calls (Plasma Store)", get_calls),
    ("single client put calls (Plasma Store)", put_calls),
    ("multi client put calls (Plasma Store)", multi_put_calls),
    ("single client put gigabytes", put_gigabytes),
    ("single client tasks and get batch", tasks_and_get_batch),
    ("multi client put gigabytes", multi_put_gigabytes),
    ("single client get object containing 10k refs", get_10k_refs),
    ("single client wait 1k refs", wait_1k_refs),
    ("single client tasks sync", tasks_sync),
    ("single client tasks async", tasks_async),
    ("multi client tasks async", multi_tasks_async),
    *_actor_rows.ROWS,
]
EXTRA_ROWS: list[Any] = list(_process_rows.ROWS)
ALL_NAMES = [n for n, _ in RAY_ROWS] + [n for n, _ in EXTRA_ROWS]


def _git_commit() -> str | None:
    """The checkout's commit, if rtml runs from a git work tree (read-only query)."""
    import subprocess

    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
            cwd=os.path.dirname(os.path.abspath(rtml.__file__)),
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def selected(name: str, filters: tuple[str, ...]) -> bool:
    """Ray's TESTS_TO_RUN semantics: a substring of the row name; several filters: any."""
    return not filters or any(f in name for f in filters)


def _run_row(name: str, fn: Callable[[Ctx], Any], ctx: Ctx, row_timeout: float) -> list[Row]:
    # A hang in the runtime must not hang the benchmark forever: dump every thread's stack and
    # exit (workers exit when their channel to the node closes).
    faulthandler.dump_traceback_later(row_timeout, exit=True)
    try:
        out = fn(ctx)
    except _actor_rows.ActorsUnavailable as e:
        out = Row(name, None, "", status="skipped", note=str(e))
    except Exception as e:
        traceback.print_exc(file=sys.stderr)
        out = Row(name, None, "", status="error", note=f"{type(e).__name__}: {e}"[:200])
    finally:
        faulthandler.cancel_dump_traceback_later()
        gc.collect()
    rows = out if isinstance(out, list) else [out]
    if rows and not rows[0].name:
        rows[0].name = name
    return rows


def run(
    duration: float = 2.0,
    filters: tuple[str, ...] = (),
    json_path: str | None = None,
    num_cpus: int | None = None,
    tiny_tasks: int = 1_000_000,
    row_timeout: float = 600.0,
    out: Any = None,
) -> int:
    """Run the selected rows; print the table; return the exit status (1 if a row failed)."""
    out = out or sys.stdout
    cpus = int(num_cpus or os.cpu_count() or 1)
    ctx = Ctx(duration=duration, num_cpus=cpus, tiny_tasks=tiny_tasks)
    names = [n for n in ALL_NAMES if selected(n, filters)]
    if not names:
        out.write(
            f"no benchmark row matches {list(filters)}; rows are:\n  "
            + "\n  ".join(ALL_NAMES)
            + "\n"
        )
        return 2
    printer = TablePrinter(names + _process_rows.EXTRA_NAMES, out)
    started = time.time()
    load = os.getloadavg()
    rows: list[Row] = []
    ray_rows = [(n, f) for n, f in RAY_ROWS if selected(n, filters)]
    if ray_rows:
        rtml.init(num_cpus=cpus)
        try:
            for name, fn in ray_rows:
                for r in _run_row(name, fn, ctx, row_timeout):
                    rows.append(r)
                    printer.row(r)
        finally:
            ctx.cache.clear()
            rtml.shutdown()
    for name, fn in EXTRA_ROWS:
        if selected(name, filters):
            for r in _run_row(name, fn, ctx, row_timeout):
                rows.append(r)
                printer.row(r)
    if json_path:
        meta = {
            "tool": "rtml microbenchmark",
            "rtml_version": rtml.__version__,
            "git_commit": _git_commit(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "num_cpus": cpus,
            "duration_per_row_s": duration,
            "tiny_tasks": tiny_tasks,
            "filters": list(filters),
            "started_unix": started,
            "wall_s": round(time.time() - started, 3),
            "loadavg_at_start": load,
            "method": "Ray timeit: warm-up, then 4 rounds; mean and population std of the "
            "per-round rates",
        }
        write_json(json_path, rows, meta)
    return 1 if any(r.status == "error" for r in rows) else 0
