"""The dashboard's online-learning panels.

- "Online learning": one row per Learner alive in this process, from its actor's ``stats()``
  at most every 2 s (the dashboard thread never waits long).
- "Model versions served": one row per live Subscriber of a registry known in this process,
  wherever it runs (a serving replica reports its ``stats()`` to the registry every 2 s), plus
  those in this process that do not follow (they do not report).
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

from rtml.dashboard import ObjectPanel, register_panel

__all__ = ["track", "track_registry", "track_subscriber"]


def _row(ln: Any) -> dict[str, Any]:
    try:
        st = ln.engine.get(ln.handle.stats.remote(), timeout=1.0)
    except Exception as e:  # a learner that died shows why, the others stay
        return {"model": ln.model_name, "status": f"{type(e).__name__}"}
    row: dict[str, Any] = {
        "model": ln.model_name,
        "status": "learning",
        "position": st["position"],
        "event_time": st["event_time"],
        **{k: round(v, 4) for k, v in st["metrics"].items() if isinstance(v, (int, float))},
        "drifts": len(st["drifts"]),
        "pending_labels": st["pending"],
        "rejected": sum(v for k, v in st["counts"].items() if k != "learned"),
    }
    if ln.registry is not None:
        try:
            row["version"] = ln.registry.latest().number
        except KeyError:
            row["version"] = None
    return row


PANEL = ObjectPanel("online", "Online learning (rtml.online)", _row, refresh_s=2.0)
track = PANEL.track  # show a learner on the dashboard while it lives

_SERVED_COLUMNS = (
    "subscriber",
    "registry",
    "version",
    "latest",
    "pinned",
    "version_lag",
    "swaps",
    "predictions",
    "freshness_p50_s",
    "freshness_p99_s",
    "load_ms_p99",
)
_registries: weakref.WeakSet[Any] = weakref.WeakSet()
_lock = threading.Lock()


def _served_row(sub: Any) -> dict[str, Any]:
    try:
        st = sub.stats()
    except Exception as e:
        return {"subscriber": getattr(sub, "id", "?"), "status": type(e).__name__}
    return {k: st.get(k) for k in _SERVED_COLUMNS}


_subscribers: weakref.WeakSet[Any] = weakref.WeakSet()
_cached: list[Any] = [0.0, None]


def served_rows() -> list[dict[str, Any]]:
    """Rows of this process's subscribers, then those other processes reported to a registry
    known here (cached for 2 s)."""
    import time

    now = time.monotonic()
    if _cached[1] is not None and now - _cached[0] < 2.0:
        return list(_cached[1])
    with _lock:
        subs, regs = list(_subscribers), {r.describe(): r for r in list(_registries)}
    rows = [_served_row(s) for s in subs]
    seen = {r.get("subscriber") for r in rows}
    for reg in regs.values():
        try:
            reports = reg.subscribers()
        except Exception:
            continue
        for rep in reports:
            if rep.get("subscriber") not in seen:
                seen.add(rep.get("subscriber"))
                rows.append({k: rep.get(k) for k in _SERVED_COLUMNS})
    _cached[:] = [now, rows]
    return list(rows)


def expire_served() -> None:
    """Forget the cached rows (tests)."""
    _cached[:] = [0.0, None]


def _register() -> None:
    register_panel("online-served", "Model versions served (rtml.online)", served_rows)


def track_subscriber(sub: Any) -> None:
    """Show a subscriber of this process while it lives."""
    with _lock:
        first = not _subscribers and not _registries
        _subscribers.add(sub)
    if first:
        _register()


def track_registry(reg: Any) -> None:
    """Remember a registry: the subscribers reporting to it (from any process) become rows."""
    with _lock:
        first = not _subscribers and not _registries
        _registries.add(reg)
    if first:
        _register()
