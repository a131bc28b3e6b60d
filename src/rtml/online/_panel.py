"""The dashboard's "Online learning" panel: one row per Learner alive in this process, from
its actor's ``stats()`` at most every 2 s (the dashboard thread never waits long)."""

from __future__ import annotations

import threading
import time
import weakref
from typing import Any

from rtml.dashboard import register_panel

__all__ = ["track"]

_REFRESH_S = 2.0
_lock = threading.Lock()
_learners: weakref.WeakSet[Any] = weakref.WeakSet()
_cache: dict[str, Any] = {"t": 0.0, "rows": []}
_registered = False


def track(learner: Any) -> None:
    """Show ``learner`` on the dashboard while it lives."""
    global _registered
    with _lock:
        _learners.add(learner)
        if not _registered:
            register_panel("online", "Online learning (rtml.online)", rows)
            _registered = True


def rows() -> list[dict[str, Any]]:
    with _lock:
        if time.monotonic() - _cache["t"] < _REFRESH_S:
            return _cache["rows"]
        _cache["t"] = time.monotonic()
        learners = list(_learners)
    out = []
    for ln in learners:
        try:
            st = ln.engine.get(ln.handle.stats.remote(), timeout=1.0)
        except Exception as e:  # a learner that died shows why, the others stay
            out.append({"model": ln.model_name, "status": f"{type(e).__name__}"})
            continue
        row: dict[str, Any] = {"model": ln.model_name, "status": "learning",
                               "position": st["position"], "event_time": st["event_time"],
                               **{k: round(v, 4) for k, v in st["metrics"].items()
                                  if isinstance(v, (int, float))},
                               "drifts": len(st["drifts"]), "pending_labels": st["pending"],
                               "rejected": sum(v for k, v in st["counts"].items()
                                               if k != "learned")}
        if ln.registry is not None:
            try:
                row["version"] = ln.registry.latest().number
            except KeyError:
                row["version"] = None
        out.append(row)
    with _lock:
        _cache["rows"] = out
    return out
