"""``rtml serve run module:app | status | shutdown``: Ray Serve's CLI on rtml.

``run`` imports an application (a ``Deployment.bind(...)`` object, or a function returning
one) and serves it until Ctrl-C. Against a cluster (``--address``), the controller outlives
the command, so ``status`` and ``shutdown`` from another shell reach it.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import sys
import threading
from typing import Any

import click


def _init(address: str | None) -> Any:
    import rtml

    if address:
        rtml.init(address=address)
    else:
        rtml.init()
    return rtml


def _load(target: str) -> Any:
    if ":" not in target:
        raise click.BadParameter(
            f"{target!r} is not module:attribute (e.g. app:graph)", param_hint="TARGET"
        )
    mod_name, attr = target.split(":", 1)
    sys.path.insert(0, os.getcwd())
    try:
        mod = importlib.import_module(mod_name)
    except ImportError as e:
        raise click.BadParameter(f"cannot import {mod_name!r}: {e}", param_hint="TARGET") from e
    obj: Any = mod
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise click.BadParameter(f"{mod_name!r} has no attribute {attr!r}", param_hint="TARGET")
        obj = getattr(obj, part)
    from rtml import serve

    if callable(obj) and not isinstance(obj, (serve.Application, serve.Deployment)):
        obj = obj()
    return obj


@click.group(name="serve")
def serve_group() -> None:
    """Serve applications with Ray Serve's API (rtml.serve)."""


@serve_group.command(name="run")
@click.argument("target")
@click.option("--name", default="default", show_default=True, help="Application name.")
@click.option("--route-prefix", default="/", show_default=True, help="HTTP route prefix.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Proxy host.")
@click.option("--port", default=8000, show_default=True, type=int, help="Proxy port.")
@click.option(
    "--address",
    default=None,
    help="Cluster address (HOST:PORT or auto); "
    "default: an embedded runtime that ends with this command.",
)
@click.option("--non-blocking", is_flag=True, help="Deploy and exit (cluster only).")
def run_cmd(
    target: str,
    name: str,
    route_prefix: str,
    host: str,
    port: int,
    address: str | None,
    non_blocking: bool,
) -> None:
    """Deploy TARGET (module:app) and serve it until interrupted."""
    from rtml import serve

    app = _load(target)
    rtml = _init(address)
    try:
        serve.start(http_options={"host": host, "port": port})
        serve.run(app, name=name, route_prefix=route_prefix)
        click.echo(
            f"application {name!r} is serving at http://{host}:{port}{route_prefix} "
            "(Ctrl-C to stop)"
        )
        if not (non_blocking and address):
            threading.Event().wait()
    except KeyboardInterrupt:
        click.echo("stopping")
    finally:
        if not (non_blocking and address):
            serve.shutdown()
            rtml.shutdown()


@serve_group.command(name="status")
@click.option("--address", default="auto", show_default=True, help="Cluster address.")
def status_cmd(address: str) -> None:
    """Print the applications, deployments, replicas and metrics as JSON."""
    from rtml import serve

    rtml = _init(address)
    try:
        click.echo(json.dumps(dataclasses.asdict(serve.status()), indent=2, default=str))
    finally:
        rtml.shutdown()


@serve_group.command(name="shutdown")
@click.option("--address", default="auto", show_default=True, help="Cluster address.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
def shutdown_cmd(address: str, yes: bool) -> None:
    """Stop every application, replica and proxy."""
    from rtml import serve

    if not yes:
        click.confirm("Stop every serve application on this cluster?", abort=True)
    rtml = _init(address)
    try:
        serve.shutdown()
        click.echo("serve is shut down")
    finally:
        rtml.shutdown()
