"""``rtml logs`` and ``rtml stack``: worker output kept per worker, and every worker's stack."""

from __future__ import annotations

from typing import Any

import click


def _source(address: str) -> Any:
    from rtml._observability._sources import connect_source

    try:
        return connect_source(address)
    except (ConnectionError, TimeoutError, ValueError, OSError) as e:
        raise click.ClickException(str(e))


@click.command()
@click.argument("pid", type=int, required=False)
@click.option("--address", default="auto", show_default=True, help="Control plane HOST:PORT.")
@click.option("--node", "node_id", default=None, help="Node id (when PID is on several).")
@click.option("--tail", type=click.IntRange(min=1), default=None, help="Only the last N lines.")
def logs(pid: int | None, address: str, node_id: str | None, tail: int | None) -> None:
    """List the workers' log files, or print the log of the worker with PID."""
    source = _source(address)
    try:
        files = source.logs()
        if pid is None:
            if not files:
                click.echo("no worker logs yet")
            for f in files:
                click.echo(f"{f['node_id']}  pid {f['pid']:<8} {f['size']:>9} B  {f['path']}")
            return
        matches = [f for f in files if f["pid"] == pid and node_id in (None, f["node_id"])]
        if not matches:
            raise click.ClickException(f"no log for worker pid {pid}; `rtml logs` lists them")
        click.echo(source.read_log(matches[0]["node_id"], pid, tail), nl=False)
    finally:
        source.close()


@click.command()
@click.option("--address", default="auto", show_default=True, help="Control plane HOST:PORT.")
@click.option("--no-py-spy", is_flag=True, help="Use the workers' faulthandler dump only.")
def stack(address: str, no_py_spy: bool) -> None:
    """Print the Python stack of every worker (py-spy if installed, else faulthandler)."""
    from rtml._observability._stack import dump_stacks

    source = _source(address)
    try:
        dumps = dump_stacks(source, use_py_spy=False if no_py_spy else None)
    finally:
        source.close()
    if not dumps:
        click.echo("no workers")
    for w, text in dumps:
        tasks = ", ".join(w.get("tasks") or []) or "-"
        click.echo(
            f"=== worker pid {w['pid']} on node {w['node_id']} ({w['state']}, tasks: {tasks}) ==="
        )
        click.echo(text.rstrip() + "\n")
