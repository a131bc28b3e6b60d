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
