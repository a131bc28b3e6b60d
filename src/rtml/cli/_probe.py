"""Measurements that need a fresh process (run by ``_process_rows.probe``).

``main([KIND, NUM_CPUS, N?], t_before_import)`` prints one JSON object on the last line of stdout.

``startup``: time from just before ``init()`` to the first task result; then a few tasks, a
short idle pause, and the memory (RSS, PSS, USS) of the driver plus every child process; then
the time ``shutdown()`` takes and how many child processes remain after it.

``tiny``: submit N tiny tasks at once, record the driver's RSS growth over the submission
(the node and its task table live in the driver), then ``get`` them all.
"""

from __future__ import annotations

import gc
import json
import sys
import time
from typing import Any

import psutil

MB = 1024 * 1024


def _tree() -> list[psutil.Process]:
    me = psutil.Process()
    return [me, *me.children(recursive=True)]


def memory() -> dict:
    """Sum of RSS (and PSS/USS where the platform reports them) over driver + children, MB."""
    out: dict[str, Any] = {
        "processes": 0,
        "rss_mb": 0.0,
        "pss_mb": 0.0,
        "uss_mb": 0.0,
        "driver_rss_mb": 0.0,
    }
    full = True
    for p in _tree():
        try:
            rss = p.memory_info().rss
            try:
                info = p.memory_full_info()
                out["pss_mb"] += getattr(info, "pss", 0) / MB
                out["uss_mb"] += info.uss / MB
                full = full and hasattr(info, "pss")
            except (psutil.AccessDenied, AttributeError):
                full = False
        except psutil.NoSuchProcess:
            continue
        out["processes"] += 1
        out["rss_mb"] += rss / MB
        if p.pid == psutil.Process().pid:
            out["driver_rss_mb"] = rss / MB
    if not full:
        out["pss_mb"] = out["uss_mb"] = None
    return out


def startup(num_cpus: int, t_import: float) -> dict:
    import rtml

    t0 = time.perf_counter()
    rtml.init(num_cpus=num_cpus)

    @rtml.remote
    def small_value() -> bytes:
        return b"ok"

    rtml.get(small_value.remote())
    t1 = time.perf_counter()
    rtml.get([small_value.remote() for _ in range(100)])  # "a few tasks"
    gc.collect()
    time.sleep(0.5)  # let every process go idle
    mem = memory()
    t2 = time.perf_counter()
    rtml.shutdown()
    t3 = time.perf_counter()
    left = [
        p
        for p in psutil.Process().children(recursive=True)
        if p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    ]
    return {
        "import_s": t0 - t_import,
        "init_to_first_s": t1 - t0,
        "shutdown_s": t3 - t2,
        "memory": mem,
        "children_after_shutdown": len(left),
    }


def tiny(num_cpus: int, n: int) -> dict:
    import rtml

    rtml.init(num_cpus=num_cpus)

    @rtml.remote
    def small_value() -> bytes:
        return b"ok"

    rtml.get([small_value.remote() for _ in range(100)])  # warm: workers up, function known
    gc.collect()
    me = psutil.Process()
    rss0 = me.memory_info().rss
    t0 = time.perf_counter()
    refs = [small_value.remote() for _ in range(n)]
    t1 = time.perf_counter()
    rss1 = me.memory_info().rss
    values = rtml.get(refs)
    t2 = time.perf_counter()
    assert len(values) == n
    assert values[-1] == b"ok"
    peak = me.memory_info().rss
    del refs, values
    rtml.shutdown()
    return {
        "n": n,
        "submit_s": t1 - t0,
        "total_s": t2 - t0,
        "driver_rss_delta_bytes": rss1 - rss0,
        "driver_rss_before_mb": rss0 / MB,
        "driver_rss_after_get_mb": peak / MB,
    }


def main(argv: list[str], t_before_import: float | None = None) -> None:
    kind, cpus = argv[0], int(argv[1])
    if kind == "startup":
        result = startup(cpus, time.perf_counter() if t_before_import is None else t_before_import)
    elif kind == "tiny":
        result = tiny(cpus, int(argv[2]))
    else:
        raise SystemExit(f"unknown probe {kind!r}")
    sys.stdout.write("\n" + json.dumps(result) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])  # import time then reads as 0: rtml was imported to get here
