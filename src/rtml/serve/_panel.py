"""The dashboard's "Serving" panel: one row per deployment (status, version, replicas,
requests/s, latency, errors, queues), from the controller's status at most every 2 s."""

from __future__ import annotations

import threading
import time
from typing import Any

from rtml.dashboard import register_panel
from rtml.serve import _context

__all__ = ["show"]

_REFRESH_S = 2.0
_lock = threading.Lock()
_cache: dict[str, Any] = {"t": 0.0, "rows": []}


def show() -> None:
    """Add the panel to this process's dashboard (again is harmless)."""
    register_panel("serve", "Serving (rtml.serve)", rows)


def rows() -> list[dict[str, Any]]:
    with _lock:
        if time.monotonic() - _cache["t"] < _REFRESH_S:
            return _cache["rows"]
        _cache["t"] = time.monotonic()
    ctl = _context.get_controller()
    if ctl is None:
        fresh: list[dict[str, Any]] = []
    else:
        st = _context.engine().get(ctl.status.remote(), timeout=2.0)
        fresh = []
        for app, a in st["applications"].items():
            for dep, d in a["deployments"].items():
                m = d.get("metrics", {})
                fresh.append(
                    {
                        "application": app,
                        "deployment": dep,
                        "status": d["status"],
                        "version": d["version"],
                        "replicas": len(d["replicas"]),
                        "requests_per_s": m.get("requests_per_s"),
                        "p50_ms": m.get("p50_ms"),
                        "p99_ms": m.get("p99_ms"),
                        "errors_per_s": m.get("errors_per_s"),
                        "ongoing": m.get("ongoing"),
                        "queued": m.get("queued"),
                    }
                )
    with _lock:
        _cache["rows"] = fresh
    return fresh
