"""The dashboard's "Reinforcement learning" panel: one row per PPO or ES trainer alive in this
process, from its latest iteration (no actor is asked: the rows read what ``train`` recorded)."""

from __future__ import annotations

import threading
import weakref
from typing import Any

from rtml.dashboard import register_panel

__all__ = ["track"]

_lock = threading.Lock()
_trainers: weakref.WeakSet[Any] = weakref.WeakSet()
_registered = False


def track(trainer: Any) -> None:
    """Show ``trainer`` (PPO or ES) on the dashboard while it lives."""
    global _registered
    with _lock:
        _trainers.add(trainer)
        if not _registered:
            register_panel("rl", "Reinforcement learning (rtml.rl)", rows)
            _registered = True


def rows() -> list[dict[str, Any]]:
    with _lock:
        trainers = list(_trainers)
    out = []
    for t in trainers:
        last = t.history[-1] if t.history else {}
        env = t.config.env if isinstance(t.config.env, str) else getattr(
            t.config.env, "__name__", "env")
        restarts = last.get("worker_restarts")
        if restarts is None and hasattr(t, "group"):
            restarts = t.group.restarts
        out.append({"algorithm": type(t).__name__, "env": env,
                    "iteration": last.get("iteration", 0),
                    "env_steps": last.get("env_steps", 0),
                    "return_mean": last.get("return_mean"),
                    "env_steps_per_s": round(last.get("env_steps_per_s") or 0.0),
                    "learner_ms": round((last.get("learner_s") or 0.0) * 1000, 1),
                    "episodes_dropped": last.get("episodes_dropped", 0),
                    "restarts": restarts})
    return out
