"""Request counters and latency histograms: recorded by replicas and proxies, summed by the
controller, shown by ``serve.status()`` and as Prometheus text at ``/-/metrics``.

Histograms have fixed bucket bounds so that the controller adds them up without the samples.
"""

from __future__ import annotations

import bisect
import time
from collections import deque
from typing import Any

# Upper bounds in milliseconds (Prometheus "le"); the last bucket is +Inf.
BOUNDS_MS: tuple[float, ...] = (
    0.1,
    0.25,
    0.5,
    0.75,
    1,
    1.5,
    2,
    3,
    5,
    7.5,
    10,
    15,
    25,
    50,
    75,
    100,
    250,
    500,
    1000,
    2500,
    5000,
    10000,
    30000,
)


class Histogram:
    """Latency counts per bucket, plus their sum."""

    __slots__ = ("counts", "total_ms")

    def __init__(self, counts: list[int] | None = None, total_ms: float = 0.0) -> None:
        self.counts = list(counts) if counts is not None else [0] * (len(BOUNDS_MS) + 1)
        self.total_ms = total_ms

    def observe(self, ms: float) -> None:
        self.counts[bisect.bisect_left(BOUNDS_MS, ms)] += 1
        self.total_ms += ms

    def add(self, other: Histogram) -> None:
        for i, c in enumerate(other.counts):
            self.counts[i] += c
        self.total_ms += other.total_ms

    def minus(self, other: Histogram) -> Histogram:
        return Histogram(
            [a - b for a, b in zip(self.counts, other.counts, strict=True)],
            self.total_ms - other.total_ms,
        )

    @property
    def count(self) -> int:
        return sum(self.counts)

    def quantile(self, q: float) -> float | None:
        """The ``q`` quantile in ms, interpolated inside its bucket; None without samples."""
        n = self.count
        if n == 0:
            return None
        rank = q * n
        seen = 0
        for i, c in enumerate(self.counts):
            if c and seen + c >= rank:
                lo = BOUNDS_MS[i - 1] if i > 0 else 0.0
                hi = BOUNDS_MS[i] if i < len(BOUNDS_MS) else BOUNDS_MS[-1] * 2
                return lo + (hi - lo) * max(0.0, min(1.0, (rank - seen) / c))
            seen += c
        return BOUNDS_MS[-1]

    def to_wire(self) -> tuple[list[int], float]:
        return (list(self.counts), self.total_ms)

    @classmethod
    def from_wire(cls, w: tuple[list[int], float]) -> Histogram:
        return cls(w[0], w[1])


class RequestStats:
    """Cumulative counters of one deployment on one replica (or one route on one proxy)."""

    __slots__ = ("errors", "latency", "requests")

    def __init__(self) -> None:
        self.requests = 0
        self.errors = 0
        self.latency = Histogram()

    def record(self, ms: float, ok: bool) -> None:
        self.requests += 1
        if not ok:
            self.errors += 1
        self.latency.observe(ms)

    def to_wire(self) -> dict[str, Any]:
        return {"requests": self.requests, "errors": self.errors, "latency": self.latency.to_wire()}


class Window:
    """Cumulative snapshots over time, to turn counters into rates and recent quantiles."""

    def __init__(self, span_s: float = 10.0) -> None:
        self.span_s = span_s
        self.points: deque[tuple[float, int, int, Histogram]] = deque()

    def push(
        self, requests: int, errors: int, latency: Histogram, now: float | None = None
    ) -> None:
        now = time.monotonic() if now is None else now
        self.points.append((now, requests, errors, latency))
        while len(self.points) > 2 and now - self.points[1][0] > self.span_s:
            self.points.popleft()

    def summary(self) -> dict[str, Any]:
        if not self.points:
            return {
                "requests_per_s": 0.0,
                "errors_per_s": 0.0,
                "p50_ms": None,
                "p95_ms": None,
                "p99_ms": None,
            }
        t1, r1, e1, h1 = self.points[-1]
        t0, r0, e0, h0 = self.points[0]
        dt = t1 - t0
        recent = h1.minus(h0) if len(self.points) > 1 else h1
        if recent.count == 0:
            recent = h1  # nothing recent: quantiles of everything so far
        return {
            "requests_per_s": (r1 - r0) / dt if dt > 0 else 0.0,
            "errors_per_s": (e1 - e0) / dt if dt > 0 else 0.0,
            "p50_ms": _round(recent.quantile(0.5)),
            "p95_ms": _round(recent.quantile(0.95)),
            "p99_ms": _round(recent.quantile(0.99)),
        }


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 3)


def _label(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def prometheus_text(deployments: list[dict[str, Any]], proxy: dict[str, int]) -> str:
    """Prometheus exposition text of every deployment's counters and histogram.

    Args:
        deployments: dicts with ``app``, ``deployment``, ``requests``, ``errors``,
            ``latency`` (a Histogram), ``ongoing``, ``queued`` and ``replicas``
            (``{version: count}``).
        proxy: HTTP responses by status code, summed over the proxies.
    """
    out = [
        "# HELP rtml_serve_requests_total Requests a deployment's replicas finished.",
        "# TYPE rtml_serve_requests_total counter",
    ]

    def lab(d: dict[str, Any]) -> str:
        return f'application="{_label(d["app"])}",deployment="{_label(d["deployment"])}"'

    for d in deployments:
        out.append(f"rtml_serve_requests_total{{{lab(d)}}} {d['requests']}")
    out += [
        "# HELP rtml_serve_errors_total Requests whose user code raised.",
        "# TYPE rtml_serve_errors_total counter",
    ]
    for d in deployments:
        out.append(f"rtml_serve_errors_total{{{lab(d)}}} {d['errors']}")
    out += [
        "# HELP rtml_serve_latency_ms Time a replica spent on a request (ms).",
        "# TYPE rtml_serve_latency_ms histogram",
    ]
    for d in deployments:
        h: Histogram = d["latency"]
        acc = 0
        for i, c in enumerate(h.counts):
            acc += c
            le = "+Inf" if i == len(BOUNDS_MS) else repr(float(BOUNDS_MS[i]))
            out.append(f'rtml_serve_latency_ms_bucket{{{lab(d)},le="{le}"}} {acc}')
        out.append(f"rtml_serve_latency_ms_sum{{{lab(d)}}} {h.total_ms:.3f}")
        out.append(f"rtml_serve_latency_ms_count{{{lab(d)}}} {acc}")
    out += [
        "# HELP rtml_serve_ongoing_requests Requests running or queued on replicas.",
        "# TYPE rtml_serve_ongoing_requests gauge",
    ]
    for d in deployments:
        out.append(f"rtml_serve_ongoing_requests{{{lab(d)}}} {d['ongoing']}")
    out += [
        "# HELP rtml_serve_queued_requests Requests waiting in routers for a replica.",
        "# TYPE rtml_serve_queued_requests gauge",
    ]
    for d in deployments:
        out.append(f"rtml_serve_queued_requests{{{lab(d)}}} {d['queued']}")
    out += [
        "# HELP rtml_serve_replicas Running replicas by version.",
        "# TYPE rtml_serve_replicas gauge",
    ]
    for d in deployments:
        for version, n in sorted(d["replicas"].items()):
            out.append(f'rtml_serve_replicas{{{lab(d)},version="{_label(version)}"}} {n}')
    out += [
        "# HELP rtml_serve_http_responses_total HTTP responses by status code.",
        "# TYPE rtml_serve_http_responses_total counter",
    ]
    for code, n in sorted(proxy.items()):
        out.append(f'rtml_serve_http_responses_total{{code="{code}"}} {n}')
    return "\n".join(out) + "\n"
