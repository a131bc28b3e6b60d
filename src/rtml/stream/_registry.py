"""Where running dataflows report themselves, so other drivers and ``rtml list streams`` see
them: one detached actor per cluster (namespace ``rtml.stream``), updated every second by each
dataflow's coordinator with its ``run.metrics()``."""

from __future__ import annotations

import time
from typing import Any

from rtml.util.engine import resolve

__all__ = ["list_streams", "panel_rows", "summary_row"]

NAME, NAMESPACE = "rtml.stream.registry", "rtml.stream"
_KEEP_ENDED = 50


class _Registry:
    def __init__(self) -> None:
        self.runs: dict[str, dict[str, Any]] = {}

    def report(self, key: str, metrics: dict[str, Any]) -> None:
        self.runs[key] = {**metrics, "updated": time.time()}
        ended = [
            k for k, m in self.runs.items() if m.get("status") in ("finished", "stopped", "failed")
        ]
        for k in sorted(ended, key=lambda k: self.runs[k]["updated"])[:-_KEEP_ENDED]:
            del self.runs[k]

    def list(self) -> list[dict[str, Any]]:
        return sorted(self.runs.values(), key=lambda m: m["updated"], reverse=True)


def registry(engine: Any) -> Any:
    """The cluster's registry actor (created by the first dataflow that reports)."""
    return engine.remote(
        num_cpus=0, name=NAME, namespace=NAMESPACE, lifetime="detached", get_if_exists=True
    )(_Registry).remote()


def list_streams(
    engine: Any = None, timeout: float = 10.0, *, summary: bool = False
) -> list[dict[str, Any]]:
    """Every dataflow that ran on this cluster (newest first; the last 50 that ended are
    kept), each as its latest ``run.metrics()`` plus ``updated`` (a Unix time).

    Args:
        engine: ``"rtml"`` (default) or ``"ray"``; it must be initialized (``rtml.init``).
        timeout: seconds to wait for the registry.
        summary: one flat row per dataflow instead (name, status, events in, rate,
            watermark, checkpoint, restarts), as ``rtml list streams`` prints.
    """
    eng = resolve(engine)
    try:
        handle = eng.get_actor(NAME, namespace=NAMESPACE)
    except ValueError:
        return []  # no dataflow has reported on this cluster
    runs = eng.get(handle.list.remote(), timeout=timeout)
    return [summary_row(m) for m in runs] if summary else runs


def summary_row(m: dict[str, Any]) -> dict[str, Any]:
    """One flat row of a dataflow's metrics (for tables: the CLI, the dashboard panel)."""
    ops = m.get("operators", {})
    sources = m.get("sources", {})
    marks = [
        w
        for w in m.get("watermarks", {}).values()
        if isinstance(w, (int, float)) and abs(w) != float("inf")
    ]
    ckpt = m.get("checkpoint", {})
    rates = [c.get("rate") for c in ops.values() if c.get("rate") is not None]
    lags = [p.get("lag") for p in sources.values() if p.get("lag") is not None]
    return {
        "name": m.get("name"),
        "status": m.get("status"),
        "parallelism": m.get("parallelism"),
        "events_in": sum(p.get("read", 0) for p in sources.values()),
        "rate": round(max(rates), 1) if rates else None,
        "lag": sum(lags) if lags else None,
        "watermark": round(min(marks), 3) if marks else None,
        "checkpoint": ckpt.get("last_id"),
        "checkpoint_age_s": round(ckpt.get("age_s", 0.0), 1),
        "restarts": m.get("restarts"),
        "dead_letters": m.get("dead_letters"),
    }


def panel_rows() -> list[dict[str, Any]]:
    """The dashboard's Streams panel: this process's runs, from their last report."""
    from rtml.stream._run import RUNS

    return [summary_row(r.last_report) for r in list(RUNS.values()) if r.last_report]
