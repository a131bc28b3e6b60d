"""The dashboard's "Reinforcement learning" panel: one row per PPO or ES trainer alive in this
process, from its latest iteration (no actor is asked: the rows read what ``train`` recorded)."""

from __future__ import annotations

from typing import Any

from rtml.dashboard import ObjectPanel

__all__ = ["track"]


def _row(t: Any) -> dict[str, Any]:
    last = t.history[-1] if t.history else {}
    env = (
        t.config.env if isinstance(t.config.env, str) else getattr(t.config.env, "__name__", "env")
    )
    restarts = last.get("worker_restarts")
    if restarts is None and hasattr(t, "group"):
        restarts = t.group.restarts
    return {
        "algorithm": type(t).__name__,
        "env": env,
        "iteration": last.get("iteration", 0),
        "env_steps": last.get("env_steps", 0),
        "return_mean": last.get("return_mean"),
        "env_steps_per_s": round(last.get("env_steps_per_s") or 0.0),
        "learner_ms": round((last.get("learner_s") or 0.0) * 1000, 1),
        "episodes_dropped": last.get("episodes_dropped", 0),
        "restarts": restarts,
    }


PANEL = ObjectPanel("rl", "Reinforcement learning (rtml.rl)", _row)
track = PANEL.track  # show a trainer (PPO or ES) on the dashboard while it lives
