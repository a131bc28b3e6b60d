"""Ray's microbenchmark timing method (same as rtml.cli._timeit), without importing rtml.

Kept separate so that the Ray, Dask and multiprocessing subprocesses do not load rtml (which
would add to their measured memory).
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import psutil

ROUNDS = 4
MB = 1024 * 1024


def timeit(
    fn: Callable[[], Any], duration: float, multiplier: float = 1.0, budget: float | None = None
) -> list[float]:
    """Per-round rates: warm-up min(1, duration/4) s, then 4 rounds of duration/4 s each,
    repeating ``fn`` in steps of warm-up calls // 10 + 1 (Ray's ray_microbenchmark_helpers).

    ``budget``: when one call alone outlasts a round (so each round is a single call), run
    only as many rounds as fit in ``budget`` seconds, at least 2 (keeps a 27 s-per-call
    workload from taking minutes; the sample count is visible in the JSON)."""
    warmup = min(1.0, duration / ROUNDS)
    rt = duration / ROUNDS
    start = time.perf_counter()
    count = 0
    while True:
        fn()
        count += 1
        if time.perf_counter() - start >= warmup:
            break
    step = count // 10 + 1
    rounds = ROUNDS
    per_call = (time.perf_counter() - start) / count
    if budget is not None and per_call > rt:
        rounds = max(2, min(ROUNDS, int(budget / per_call)))
    rates = []
    for _ in range(rounds):
        start = time.perf_counter()
        n = 0
        while time.perf_counter() - start < rt:
            for _ in range(step):
                fn()
            n += step
        rates.append(multiplier * n / (time.perf_counter() - start))
    return rates


def mean_std(samples: list[float]) -> tuple[float, float]:
    if len(samples) < 2:
        return (samples[0] if samples else float("nan")), 0.0
    return statistics.fmean(samples), statistics.pstdev(samples)


def tree_memory() -> dict[str, float]:
    """RSS / PSS / USS summed over this process and all its descendants, in MB."""
    me = psutil.Process(os.getpid())
    out = {"processes": 0, "rss_mb": 0.0, "pss_mb": 0.0, "uss_mb": 0.0}
    for p in [me, *me.children(recursive=True)]:
        try:
            info = p.memory_full_info()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        out["processes"] += 1
        out["rss_mb"] += info.rss / MB
        out["pss_mb"] += getattr(info, "pss", 0) / MB
        out["uss_mb"] += info.uss / MB
    return out
