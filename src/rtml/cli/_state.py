"""``rtml list | summary | memory | timeline``: the state of a running cluster from the shell.

Each command connects to the cluster (``--address``, "auto" by default: the one started last on
this machine), reads through ``rtml._observability._listing``, prints an aligned table (or JSON
with ``--format json``) and disconnects. Connection problems and bad filters are click errors.
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click

_ADDRESS = click.option(
    "--address",
    default="auto",
    show_default=True,
    help="Control plane HOST:PORT (auto: the cluster started here last).",
)
_FORMAT = click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json"]),
    default="table",
    show_default=True,
    help="Aligned table, or JSON.",
)
_FILTER = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(!=|==|=|<|>)\s*(.*?)\s*$")


@contextmanager
def _source(address: str) -> Iterator[Any]:
    """The cluster's state source; failures to reach or read it become click errors."""
    from rtml._observability._listing import open_source

    try:
        with open_source(address) as source:
            yield source
    except (ConnectionError, TimeoutError, OSError, RuntimeError) as e:
        raise click.ClickException(f"cannot read the cluster's state: {e}")


def _echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, default=str))


def parse_filters(resource: str, texts: tuple[str, ...]) -> list[tuple[str, str, str]]:
    """``key=value`` / ``key!=value`` / ``key<value`` / ``key>value`` strings, validated.

    Raises:
        click.BadParameter: a malformed or invalid filter.
    """
    from rtml._observability._listing import check_filters

    out = []
    for text in texts:
        m = _FILTER.match(text)
        if m is None:
            raise click.BadParameter(
                f"{text!r} is not KEY=VALUE (or KEY!=VALUE, KEY<NUMBER, KEY>NUMBER)",
                param_hint="--filter",
            )
        out.append((m.group(1), m.group(2), m.group(3)))
    try:
        check_filters(resource, out)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--filter")
    return out


@click.command("list")
@click.argument(
    "resource", type=click.Choice(["tasks", "actors", "objects", "nodes", "workers", "streams"])
)
@click.option(
    "--filter",
    "-f",
    "filters",
    multiple=True,
    metavar="KEY=VALUE",
    help="Keep rows where KEY=VALUE (also !=, and < or > for numbers); repeatable, all must hold.",
)
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=100,
    show_default=True,
    help="At most this many rows.",
)
@click.option("--detail", is_flag=True, help="Every key of each row (errors, tracebacks...).")
@_FORMAT
@_ADDRESS
def list_(
    resource: str, filters: tuple[str, ...], limit: int, detail: bool, fmt: str, address: str
) -> None:
    """List the cluster's tasks, actors, objects, nodes, workers or streams (dataflows)."""
    from rtml._observability import _listing

    if resource == "streams":
        _list_streams(address, fmt, limit)
        return
    checked = parse_filters(resource, filters)
    with _source(address) as source:
        rows = _listing.read_rows(source, resource)
    shown, matched = _listing.select(rows, resource, checked, limit, detail)
    if fmt == "json":
        _echo_json(shown)
        return
    if detail:
        click.echo(_listing.format_records(shown, _listing.COMPACT[resource][0]))
    else:
        click.echo(_listing.format_table(shown, _listing.COMPACT[resource]))
    if matched > len(shown):
        click.echo(
            f"\n(showing {len(shown)} of {matched} {resource}; raise --limit or add --filter)"
        )
    else:
        click.echo(f"\n{matched} {resource[:-1]}(s)")


@click.command()
@click.argument("resource", type=click.Choice(["tasks", "actors", "objects"]))
@_FORMAT
@_ADDRESS
def summary(resource: str, fmt: str, address: str) -> None:
    """Counts per function (tasks) or class (actors) and state, or objects by location."""
    from rtml._observability import _listing

    with _source(address) as source:
        if resource == "tasks":
            events, dropped = _listing.read_events(source)
            result = _listing.summarize_tasks(
                _listing.task_rows(events, source.live_tasks()), dropped
            )
        elif resource == "actors":
            result = _listing.summarize_actors(_listing.read_rows(source, "actors"))
        else:
            result = _listing.summarize_objects(_listing.read_rows(source, "objects"), 0)
    if fmt == "json":
        _echo_json(result)
    elif resource == "objects":
        click.echo(_listing.memory_text(result).split("\n\n")[0])
    else:
        click.echo(_listing.summary_text(result, resource))


@click.command()
@click.option(
    "--limit",
    type=click.IntRange(min=0),
    default=100,
    show_default=True,
    help="List at most this many objects (the largest).",
)
@_FORMAT
@_ADDRESS
def memory(limit: int, fmt: str, address: str) -> None:
    """Objects by size, where they are, and who holds a reference to each."""
    from rtml._observability import _listing

    with _source(address) as source:
        result = _listing.summarize_objects(_listing.read_rows(source, "objects"), limit)
    if fmt == "json":
        _echo_json(result)
    else:
        click.echo(_listing.memory_text(result))


@click.command()
@click.option(
    "--output",
    "-o",
    "output",
    default=None,
    metavar="FILE",
    help="Where to write the trace ('-' for stdout; default: a new file in the "
    "temporary directory).",
)
@_ADDRESS
def timeline(output: str | None, address: str) -> None:
    """Write the task timeline as a Chrome trace (open it in https://ui.perfetto.dev or
    chrome://tracing): a row per worker, a slice per task, arrows for dependencies."""
    from rtml._observability._timeline import dump_trace, trace_of_source

    started = time.perf_counter()
    with _source(address) as source:
        trace = trace_of_source(source)
    if output == "-":
        json.dump(trace, sys.stdout, separators=(",", ":"))
        sys.stdout.write("\n")
        return
    path = output or os.path.join(
        tempfile.gettempdir(), f"rtml-timeline-{time.strftime('%Y-%m-%d_%H-%M-%S')}.json"
    )
    try:
        size = dump_trace(trace, path)
    except OSError as e:
        raise click.ClickException(f"cannot write the timeline to {path}: {e}")
    info = trace["otherData"]
    dropped = (
        f"; {info['dropped_events']} older event(s) had been dropped"
        if info["dropped_events"]
        else ""
    )
    click.echo(
        f"wrote {info['tasks']} task execution(s), {info['dependencies']} "
        f"dependency arrow(s) to {path} ({size:,} bytes, "
        f"{time.perf_counter() - started:.2f} s){dropped}"
    )
    click.echo("open it in https://ui.perfetto.dev or chrome://tracing")


COMMANDS = (list_, summary, memory, timeline)


def _list_streams(address: str, fmt: str, limit: int) -> None:
    """Dataflows (rtml.stream) known to the cluster's registry: joins as a driver to ask."""
    import rtml
    from rtml._observability import _listing
    from rtml.stream import list_streams

    try:
        rtml.init(address=address, log_to_driver=False, include_dashboard=False)
    except (ConnectionError, TimeoutError, OSError, RuntimeError) as e:
        raise click.ClickException(f"cannot reach the cluster: {e}")
    try:
        runs = list_streams(summary=fmt != "json")[:limit]
    finally:
        rtml.shutdown()
    if fmt == "json":
        _echo_json(runs)
        return
    click.echo(_listing.format_table(runs, None))
    click.echo(f"\n{len(runs)} stream(s)")
