"""Ray's microbenchmark method, results, and their table / JSON forms.

``timeit`` follows ``ray._private.ray_microbenchmark_helpers.timeit``: run the workload for a
warm-up period, then for 4 timed rounds; each round repeats the workload in steps of
``count // 10 + 1`` (count: calls made during warm-up) until its time is up, and yields one
rate ``multiplier * calls / elapsed``. The row is the mean and (population) standard deviation
of the 4 rates. Ray warms up 1 s and times 4 x 2 s rounds after a 10 s sleep; here the rounds
share ``duration`` seconds, warm-up is ``min(1, duration / 4)`` s, and there is no sleep.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

ROUNDS = 4


@dataclass
class Row:
    """One line of the report. ``value`` is None for skipped or failed rows."""

    name: str
    value: float | None
    unit: str
    std: float | None = None
    status: str = "ok"  # ok | skipped | error
    note: str = ""
    samples: list[float] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def stats(samples: list[float]) -> tuple[float, float]:
    """(mean, population std) as numpy's mean/std compute them (ddof=0)."""
    if not samples:
        raise ValueError("no samples")
    return statistics.fmean(samples), statistics.pstdev(samples) if len(samples) > 1 else 0.0


def timeit(
    name: str,
    fn: Callable[[], Any],
    duration: float,
    multiplier: float = 1.0,
    unit: str = "per second",
) -> Row:
    """Rate of ``fn`` (calls/s times ``multiplier``), Ray's method scaled to ``duration``."""
    warmup = min(1.0, duration / ROUNDS)
    round_time = duration / ROUNDS
    start = time.perf_counter()
    count = 0
    while True:
        fn()
        count += 1
        if time.perf_counter() - start >= warmup:
            break
    step = count // 10 + 1
    rates = []
    for _ in range(ROUNDS):
        start = time.perf_counter()
        n = 0
        while time.perf_counter() - start < round_time:
            for _ in range(step):
                fn()
            n += step
        rates.append(multiplier * n / (time.perf_counter() - start))
    mean, sd = stats(rates)
    return Row(name, mean, unit, sd, samples=rates)


def latency_row(name: str, samples_s: list[float], unit: str = "ms") -> Row:
    """A row of durations (seconds in, ``unit`` out): mean ± std of the samples."""
    scale = {"s": 1.0, "ms": 1e3, "us": 1e6}[unit]
    vals = [s * scale for s in samples_s]
    mean, sd = stats(vals)
    return Row(name, mean, unit, sd, samples=vals)


# --------------------------------------------------------------------------- output
def _fmt_num(x: float | None) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    ax = abs(x)
    if ax >= 100:
        return f"{x:,.0f}"
    if ax >= 1:
        return f"{x:,.2f}"
    return f"{x:.3g}"


class TablePrinter:
    """Prints rows as they finish, in columns sized for the longest row name."""

    def __init__(self, names: Iterable[str], out: Any) -> None:
        self.width = max([len(n) for n in names] + [len("benchmark")])
        self.out = out
        self.header_done = False

    def header(self) -> None:
        w = self.width
        line = f"{'benchmark':<{w}}  {'mean':>14}  {'± std':>12}  {'unit':<12}  note"
        self.out.write(line + "\n" + "-" * (len(line) + 20) + "\n")
        self.out.flush()
        self.header_done = True

    def row(self, r: Row) -> None:
        if not self.header_done:
            self.header()
        w = self.width
        if r.status == "ok":
            std = "" if r.std is None else "± " + _fmt_num(r.std)
            note = r.note
            text = f"{r.name:<{w}}  {_fmt_num(r.value):>14}  {std:>12}  {r.unit:<12}  {note}"
        else:
            text = f"{r.name:<{w}}  {'-':>14}  {'':>12}  {'':<12}  {r.status}: {r.note}"
        self.out.write(text.rstrip() + "\n")
        self.out.flush()


def write_json(path: str, rows: list[Row], meta: dict[str, Any]) -> None:
    doc = {"meta": meta, "results": [r.as_json() for r in rows]}
    with open(path, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=2)
        f.write("\n")
