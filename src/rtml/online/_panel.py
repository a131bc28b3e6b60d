"""The dashboard's "Online learning" panel: one row per Learner alive in this process, from
its actor's ``stats()`` at most every 2 s (the dashboard thread never waits long)."""

from __future__ import annotations

from typing import Any

from rtml.dashboard import ObjectPanel

__all__ = ["track"]


def _row(ln: Any) -> dict[str, Any]:
    try:
        st = ln.engine.get(ln.handle.stats.remote(), timeout=1.0)
    except Exception as e:  # a learner that died shows why, the others stay
        return {"model": ln.model_name, "status": f"{type(e).__name__}"}
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
    return row


PANEL = ObjectPanel("online", "Online learning (rtml.online)", _row, refresh_s=2.0)
track = PANEL.track  # show a learner on the dashboard while it lives
