"""Entry point of a cluster node process (started by ``rtml start`` and ``rtml.testing``)::

    python -m rtml._node --gcs HOST:PORT [--token-file F] [--host H] [--port P]
        [--num-cpus N] [--num-gpus N] [--resources JSON] [--object-store-memory B]
        [--labels JSON] [--head] [--ready-fd FD] [--tls-cert F --tls-key F --tls-ca F]

The token comes from ``--token-file``, else ``$RTML_TOKEN``, else this user's token file for the
control plane's address.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m rtml._node")
    p.add_argument("--gcs", required=True, help="the control plane's HOST:PORT")
    p.add_argument("--token-file")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--num-cpus", type=float, default=None)
    p.add_argument("--num-gpus", type=float, default=0.0)
    p.add_argument("--resources", default="{}")
    p.add_argument("--labels", default="{}")
    p.add_argument("--object-store-memory", type=int, default=None)
    p.add_argument("--head", action="store_true")
    p.add_argument(
        "--dashboard-port",
        type=int,
        default=0,
        help="head only: 0 = 8265 if free else any free port; -1 = no dashboard",
    )
    p.add_argument("--ready-fd", type=int, default=None)
    from rtml._transport import _tls

    _tls.add_arguments(p)
    a = p.parse_args()
    try:
        _tls.configure(a.tls_cert, a.tls_key, a.tls_ca)
    except _tls.TLSConfigError as e:
        p.error(str(e))
    from rtml._launch import end_with_parent

    end_with_parent()

    from rtml._control._client import ControlClient
    from rtml._node._build import default_object_store_memory, node_resources
    from rtml._node._server import NodeServer, serve
    from rtml._transport._auth import find_token

    given = None
    if a.token_file:
        with open(a.token_file) as f:
            given = f.read()
    token = find_token(a.gcs, given)
    cpus = float(os.cpu_count() or 1) if a.num_cpus is None else a.num_cpus
    store = a.object_store_memory or default_object_store_memory()
    resources = node_resources(cpus, a.num_gpus, json.loads(a.resources), store)
    gcs = ControlClient(a.gcs, token)
    server = NodeServer(
        resources,
        store,
        token,
        gcs,
        host=a.host,
        port=a.port,
        is_head=a.head,
        labels=json.loads(a.labels),
        gcs_address=a.gcs,
        dashboard_port=a.dashboard_port,
    )
    server.start_dashboard = _dashboard_starter(a.gcs, token)
    server.start_events = _start_events
    try:
        serve(server, a.ready_fd)
    finally:
        gcs.close()


def _dashboard_starter(gcs_address: str, token: Any) -> Any:
    """The head node's dashboard, reading the cluster through its control plane."""

    def start(host: str, port: int | None, remote_token: Any) -> Any:
        from rtml._observability._sources import ClusterSource
        from rtml.dashboard import start_dashboard

        return start_dashboard(
            lambda: ClusterSource(gcs_address, token), host, port, token=remote_token
        )

    return start


def _start_events(node: Any, node_id: str, sink: Any) -> Any:
    """The node's task events, flushed as dicts to ``sink`` (None if events are off)."""
    from rtml._observability._flusher import EventFlusher, events_enabled

    if not events_enabled():
        return None
    return EventFlusher(node, node_id, sink, as_dicts=True).start()


if __name__ == "__main__":
    main()
