"""serve across engine sessions: a runtime shut down under serve leaves no stale state."""

from __future__ import annotations

import rtml
from rtml import serve


@serve.deployment
def double(x):
    return 2 * x


def test_serve_restarts_after_the_engine_was_shut_down_under_it():
    rtml.init(num_cpus=1, include_dashboard=False)
    try:
        serve.start(proxy_location="Disabled")
        assert serve.run(double.bind(), route_prefix=None).remote(2).result(timeout_s=10) == 4
    finally:
        rtml.shutdown()  # no serve.shutdown(): the next session must not use stale handles
    rtml.init(num_cpus=1, include_dashboard=False)
    try:
        serve.start(proxy_location="Disabled")
        assert serve.run(double.bind(), route_prefix=None).remote(3).result(timeout_s=10) == 6
    finally:
        serve.shutdown()
        rtml.shutdown()


def test_the_dashboard_panel_lists_each_deployment():
    from rtml.dashboard._panels import panels_view
    from rtml.serve import _panel

    @serve.deployment(num_replicas=2)
    def echo(request):
        return "hi"

    rtml.init(num_cpus=2)
    try:
        serve.run(echo.bind(), name="panel-app", route_prefix=None).remote(None).result(
            timeout_s=30
        )
        _panel._cache["t"] = 0.0  # no cached rows from an earlier test
        (panel,) = [p for p in panels_view() if p["name"] == "serve"]
        (row,) = [r for r in panel["rows"] if r["application"] == "panel-app"]
        assert row["deployment"] == "echo"
        assert row["replicas"] == 2
        assert row["status"] == "HEALTHY"
    finally:
        serve.shutdown()
        rtml.shutdown()
