"""The read-only web dashboard: nodes, tasks, actors, objects, a live timeline, logs, failures,
and panels that libraries register (``register_panel``: streams, serving, learners), and\n``GET /metrics``: the Prometheus text of sources registered with ``register_metrics``.

``start_dashboard(source_factory)`` serves it (the head node and ``rtml.init()`` call it);
importing this package costs only the standard library: Starlette and uvicorn are imported by
the server's thread.

Floor 6 (docs/architecture.md): reads observability; started by the process floor
(``rtml._api``, ``python -m rtml._node``), which hands it its source.
"""

from rtml.dashboard._panels import ObjectPanel, register_metrics, register_panel, unregister_panel
from rtml.dashboard._server import DashboardHandle, start_dashboard

__all__ = [
    "DashboardHandle",
    "ObjectPanel",
    "register_metrics",
    "register_panel",
    "start_dashboard",
    "unregister_panel",
]
