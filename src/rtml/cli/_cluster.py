"""``rtml start | stop | status``: run a cluster from the shell.

``rtml start --head`` starts the control plane and the head node as detached processes (their
output goes to log files in this user's state directory), stores the cluster token there with
owner-only permissions and prints how to connect. ``rtml start --address`` joins a node.
``rtml stop`` stops every process this machine's user started that way.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import time
from typing import Any

import click

from rtml._transport import _auth

_STARTED = "started.json"
_CURRENT = "current_cluster"
DEFAULT_PORT = 6390


def _state_file(name: str) -> str:
    return os.path.join(_auth.state_dir(), name)


def _load_started() -> list[dict[str, Any]]:
    try:
        with open(_state_file(_STARTED)) as f:
            return list(json.load(f))
    except (FileNotFoundError, ValueError):
        return []


def _save_started(entries: list[dict[str, Any]]) -> None:
    path = _state_file(_STARTED)
    with open(path + ".tmp", "w") as f:
        json.dump(entries, f)
    os.replace(path + ".tmp", path)


def _log_path(kind: str) -> str:
    logs = os.path.join(_auth.state_dir(), "logs")
    os.makedirs(logs, mode=0o700, exist_ok=True)
    return os.path.join(logs, f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log")


def _json_option(text: str | None, what: str) -> dict[str, Any]:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError as e:
        raise click.BadParameter(f"{what} must be JSON, e.g. '{{\"sensor\": 2}}': {e}")
    if not isinstance(value, dict):
        raise click.BadParameter(f"{what} must be a JSON object, got {text!r}")
    return value


@click.command()
@click.option("--head", is_flag=True, help="Start a new cluster: control plane and head node.")
@click.option("--address", help="Join the cluster whose control plane is at HOST:PORT.")
@click.option(
    "--port",
    type=int,
    default=DEFAULT_PORT,
    show_default=True,
    help="Control-plane port of a new head (0 picks a free one).",
)
@click.option(
    "--node-ip-address",
    "host",
    default="127.0.0.1",
    show_default=True,
    help="Address this machine's servers bind to (127.0.0.1 keeps them local).",
)
@click.option("--num-cpus", type=float, default=None, help="CPUs of this node.")
@click.option("--num-gpus", type=float, default=0, help="GPUs of this node.")
@click.option("--resources", default=None, help="Custom resources as JSON.")
@click.option("--labels", default=None, help="Node labels as JSON.")
@click.option("--object-store-memory", type=int, default=None, help="Bytes of shared memory.")
@click.option(
    "--redis",
    default=None,
    metavar="HOST:PORT[,...]",
    help="Keep the control plane's tables in these redis-servers (durable).",
)
@click.option("--token", default=None, help="The cluster token (hex); new for a new head.")
@click.option(
    "--dashboard-port",
    type=int,
    default=0,
    show_default=True,
    help="Head only: the dashboard's port (0: 8265 if free, else any; -1: none).",
)
@click.option(
    "--heartbeat-timeout",
    type=click.FloatRange(min=0.1),
    default=None,
    help="Head only: seconds without a heartbeat before a node is declared dead "
    "[default: 30; a node whose process dies is noticed at once by its peers].",
)
@click.option("--tls-cert", default=None, help="TLS: this machine's certificate (PEM).")
@click.option("--tls-key", default=None, help="TLS: the certificate's private key (PEM).")
@click.option("--tls-ca", default=None, help="TLS: the CA that signed every member (PEM).")
def start(
    head: bool,
    address: str | None,
    port: int,
    host: str,
    num_cpus: float | None,
    num_gpus: float,
    resources: str | None,
    labels: str | None,
    object_store_memory: int | None,
    redis: str | None,
    token: str | None,
    dashboard_port: int,
    heartbeat_timeout: float | None,
    tls_cert: str | None,
    tls_key: str | None,
    tls_ca: str | None,
) -> None:
    """Start a head (--head) or join a node to a cluster (--address HOST:PORT).

    With --tls-cert/--tls-key/--tls-ca every connection of the cluster is mutual TLS (the
    processes started here inherit them as RTML_TLS_CERT/RTML_TLS_KEY/RTML_TLS_CA)."""
    from rtml._launch import start_control_plane, start_node
    from rtml._transport import _tls

    if head == bool(address):
        raise click.UsageError("give exactly one of --head or --address HOST:PORT")
    try:
        _tls.configure(tls_cert, tls_key, tls_ca)
    except _tls.TLSConfigError as e:
        raise click.UsageError(str(e)) from None
    node_args: dict[str, Any] = {
        "num_cpus": num_cpus,
        "num_gpus": num_gpus,
        "resources": _json_option(resources, "--resources"),
        "labels": _json_option(labels, "--labels"),
        "object_store_memory": object_store_memory,
    }
    started = _load_started()
    if head:
        secret = _auth.parse_token(token) if token else _auth.new_token()
        cp = start_control_plane(
            secret,
            host=host,
            port=port,
            redis=redis,
            heartbeat_timeout=heartbeat_timeout,
            log_path=_log_path("control"),
            detach=True,
        )
        gcs = f"{host}:{cp.port}"
        _auth.write_token(gcs, secret)
        started.append({"kind": "control", "pid": cp.proc.pid, "address": gcs})
        _save_started(started)
        node = start_node(
            gcs,
            secret,
            head=True,
            host=host,
            log_path=_log_path("node"),
            detach=True,
            dashboard_port=dashboard_port,
            **node_args,
        )
        started.append({"kind": "node", "pid": node.proc.pid, "address": gcs})
        _save_started(started)
        with open(_state_file(_CURRENT), "w") as f:
            f.write(gcs)
        dash = _dashboard_of(gcs, secret)
        click.echo(
            f"rtml cluster started; control plane at {gcs}, head node {node.node_id}.\n"
            f"{'  Dashboard: ' + dash + chr(10) if dash else ''}"
            f'\n  Connect a driver on this machine:  rtml.init(address="{gcs}")'
            f'  (or address="auto")\n'
            f"  Join a node:                       rtml start --address {gcs}\n"
            f"  From another machine add the token: --token {secret.hex()}\n"
            f"                                     (or {_auth.TOKEN_ENV}={secret.hex()})\n"
            f"  Status: rtml status    Stop everything started here: rtml stop"
        )
        if not redis:
            click.echo(
                "  Note: the control plane keeps its tables in memory, so the cluster does "
                "not survive a restart of it; start with --redis HOST:PORT for one that "
                "does."
            )
        return
    assert address is not None
    try:
        secret = _auth.find_token(address, token)
    except (_auth.AuthError, ValueError) as e:
        raise click.ClickException(str(e))
    node = start_node(
        address, secret, host=host, log_path=_log_path("node"), detach=True, **node_args
    )
    started.append({"kind": "node", "pid": node.proc.pid, "address": address})
    _save_started(started)
    click.echo(f"rtml node {node.node_id} joined the cluster at {address}.")


def _dashboard_of(gcs: str, token: bytes) -> str | None:
    from rtml._control._client import ControlClient

    try:
        with ControlClient(gcs, token) as c:
            return next(
                (
                    n.extra.get("dashboard_url")
                    for n in c.list_nodes()
                    if n.alive and n.extra.get("is_head")
                ),
                None,
            )
    except (ConnectionError, TimeoutError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@click.command()
@click.option(
    "--timeout",
    type=float,
    default=10.0,
    show_default=True,
    help="Seconds to wait for a graceful stop before killing.",
)
def stop(timeout: float) -> None:
    """Stop every rtml process `rtml start` started on this machine (nodes first)."""
    entries = _load_started()
    order = [e for e in entries if e["kind"] == "node"] + [
        e for e in entries if e["kind"] != "node"
    ]
    stopped = 0
    for e in order:
        pid = e["pid"]
        if not _alive(pid):
            continue
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
        stopped += 1
        if e["kind"] == "control":
            _auth.remove_token(e["address"])
    _save_started([])
    try:
        os.unlink(_state_file(_CURRENT))
    except FileNotFoundError:
        pass
    click.echo(f"stopped {stopped} rtml process(es)")


@click.command()
@click.option(
    "--address",
    default="auto",
    show_default=True,
    help="Control plane HOST:PORT (auto: the cluster started here last).",
)
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
def status(address: str, fmt: str) -> None:
    """Nodes, resources used/total and pending work of a cluster."""
    from rtml._control._client import ControlClient
    from rtml._runtime._remote import resolve_address

    try:
        addr = resolve_address(address)
        secret = _auth.find_token(addr)
        with ControlClient(addr, secret) as gcs:
            nodes = gcs.list_nodes()
    except (ConnectionError, TimeoutError, ValueError) as e:
        raise click.ClickException(str(e))
    if fmt == "json":
        click.echo(json.dumps([dataclasses.asdict(n) for n in nodes], indent=2, default=str))
        return
    click.echo(f"cluster at {addr}: {sum(n.alive for n in nodes)} node(s) alive")
    for n in nodes:
        total = n.resources
        avail = n.available if n.alive else total
        used = ", ".join(
            f"{k} {total[k] - avail.get(k, total[k]):g}/{total[k]:g}"
            for k in sorted(total)
            if k not in ("memory", "object_store_memory")
        )
        load = n.load or {}
        click.echo(
            f"  {n.node_id}  {n.state:<5} {n.address:<21} "
            f"{'head ' if n.extra.get('is_head') else ''}{used}  "
            f"queued {load.get('queued', 0)}, tasks {load.get('tasks', 0)}"
        )
        if load.get("worker_start_error"):
            why = load["worker_start_error"].replace("\n", "\n      ")
            click.echo(f"    workers cannot start: {why}")
