"""Rows Ray's microbenchmark lacks; each sample comes from a fresh ``_probe`` subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from rtml.cli._timeit import Row, latency_row, stats

_NAMES = {
    "init": "init() to first result",
    "shutdown": "shutdown()",
    "memory": "idle runtime memory (all processes, MB)",
    "tiny": "1M tiny tasks submitted at once",
}


def probe(kind: str, num_cpus: int, *extra: str, timeout: float = 300.0) -> dict:
    """Run ``python -m rtml.cli._probe`` and return its JSON result."""
    # -c rather than -m: `python -m rtml.cli._probe` would import rtml before the timer starts.
    code = (
        "import sys, time; t = time.perf_counter(); import rtml; "
        "from rtml.cli._probe import main; main(sys.argv[1:], t)"
    )
    cmd = [sys.executable, "-c", code, kind, str(num_cpus), *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"probe {kind} exited {proc.returncode}: {proc.stderr.strip()[-500:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _repeats(duration: float) -> int:
    """Fresh-process samples per row: 2..10, about 2.5 per second of --duration."""
    return max(2, min(10, round(duration * 2.5)))


def _startup_samples(ctx: Any) -> list[dict]:
    key = "startup_samples"
    if key not in ctx.cache:
        ctx.cache[key] = [probe("startup", ctx.num_cpus) for _ in range(_repeats(ctx.duration))]
    return ctx.cache[key]


def init_row(ctx: Any) -> list[Row]:
    samples = _startup_samples(ctx)
    row = latency_row(_NAMES["init"], [s["init_to_first_s"] for s in samples])
    imp = [s["import_s"] * 1e3 for s in samples]
    row.note = f"fresh process x{len(samples)}; `import rtml` {stats(imp)[0]:.0f} ms excluded"
    row.extra = {"import_ms": imp}
    return [row]


def shutdown_row(ctx: Any) -> list[Row]:
    samples = _startup_samples(ctx)
    row = latency_row(_NAMES["shutdown"], [s["shutdown_s"] for s in samples])
    left = max(s["children_after_shutdown"] for s in samples)
    row.note = f"fresh process x{len(samples)}; children left after: {left}"
    return [row]


def memory_rows(ctx: Any) -> list[Row]:
    samples = _startup_samples(ctx)
    mems = [s["memory"] for s in samples]
    procs = mems[0]["processes"]
    name = _NAMES["memory"]
    rss = [m["rss_mb"] for m in mems]
    mean, sd = stats(rss)
    drv = stats([m["driver_rss_mb"] for m in mems])[0]
    rows = [
        Row(
            name,
            mean,
            "MB",
            sd,
            samples=rss,
            note=f"RSS sum, {procs} processes (driver {drv:.0f} MB); num_cpus={ctx.num_cpus}",
            extra={"per_sample": mems},
        )
    ]
    for kind in ("pss", "uss"):
        vals = [m[f"{kind}_mb"] for m in mems]
        if all(v is not None for v in vals):
            mean, sd = stats(vals)
            rows.append(
                Row(
                    name.replace(" (", f" {kind.upper()} ("),
                    mean,
                    "MB",
                    sd,
                    samples=vals,
                    note=f"{kind.upper()} sum over the same processes",
                )
            )
    return rows


def tiny_rows(ctx: Any) -> list[Row]:
    n = ctx.tiny_tasks
    r = probe("tiny", ctx.num_cpus, str(n), timeout=300.0 + n / 500)
    name = _NAMES["tiny"]
    note = f"n={n:,}; one fresh process, one sample"
    return [
        Row(name, n / r["total_s"], "tasks/s", None, note=note + "; submit + get all", extra=r),
        Row(f"{name}: submit rate", n / r["submit_s"], "tasks/s", None, note=note),
        Row(
            f"{name}: driver memory per pending task",
            r["driver_rss_delta_bytes"] / n,
            "bytes",
            None,
            note=f"driver RSS delta after submit, before get; "
            f"{r['driver_rss_delta_bytes'] / 2**20:.0f} MB total",
        ),
    ]


# Names of the rows the functions above add beside their own (for the table's width).
EXTRA_NAMES = [
    _NAMES["memory"].replace(" (", " PSS ("),
    _NAMES["memory"].replace(" (", " USS ("),
    f"{_NAMES['tiny']}: submit rate",
    f"{_NAMES['tiny']}: driver memory per pending task",
]

ROWS = [
    (_NAMES["init"], init_row),
    (_NAMES["shutdown"], shutdown_row),
    (_NAMES["memory"], memory_rows),
    (_NAMES["tiny"], tiny_rows),
]
