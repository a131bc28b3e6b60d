"""Where running dataflows report themselves, so other drivers and ``rtml list streams`` see
them: one detached actor per cluster (namespace ``rtml.stream``), updated every second by each
dataflow's coordinator with its ``run.metrics()``."""

from __future__ import annotations

import time
from typing import Any

from rtml.util.engine import resolve

__all__ = ["list_streams"]

NAME, NAMESPACE = "rtml.stream.registry", "rtml.stream"
_KEEP_ENDED = 50


class _Registry:
    def __init__(self) -> None:
        self.runs: dict[str, dict[str, Any]] = {}

    def report(self, key: str, metrics: dict[str, Any]) -> None:
        self.runs[key] = {**metrics, "updated": time.time()}
        ended = [k for k, m in self.runs.items() if m.get("status") in
                 ("finished", "stopped", "failed")]
        for k in sorted(ended, key=lambda k: self.runs[k]["updated"])[:-_KEEP_ENDED]:
            del self.runs[k]

    def list(self) -> list[dict[str, Any]]:
        return sorted(self.runs.values(), key=lambda m: m["updated"], reverse=True)


def registry(engine: Any) -> Any:
    """The cluster's registry actor (created by the first dataflow that reports)."""
    return engine.remote(num_cpus=0, name=NAME, namespace=NAMESPACE, lifetime="detached",
                         get_if_exists=True)(_Registry).remote()


def list_streams(engine: Any = None, timeout: float = 10.0) -> list[dict[str, Any]]:
    """Every dataflow that ran on this cluster (newest first; the last 50 that ended are
    kept), each as its latest ``run.metrics()`` plus ``updated`` (a Unix time).

    Args:
        engine: ``"rtml"`` (default) or ``"ray"``; it must be initialized (``rtml.init``).
        timeout: seconds to wait for the registry.
    """
    eng = resolve(engine)
    try:
        handle = eng.get_actor(NAME, namespace=NAMESPACE)
    except ValueError:
        return []  # no dataflow has reported on this cluster
    return eng.get(handle.list.remote(), timeout=timeout)
