"""click commands of the ``rtml`` CLI."""

from __future__ import annotations

import click


@click.group()
@click.version_option(package_name="rtml", prog_name="rtml")
def cli() -> None:
    """rtml: a pure-Python, Ray-compatible distributed execution engine."""


@cli.command()
@click.option(
    "--filter",
    "filters",
    multiple=True,
    metavar="SUBSTRING",
    help="Run only rows whose name contains SUBSTRING (repeatable: any matches).",
)
@click.option(
    "--duration",
    type=click.FloatRange(min=0.001),
    default=2.0,
    show_default=True,
    help="Seconds of timed rounds per row (plus up to 1 s of warm-up).",
)
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False, writable=True),
    help="Also write the results (name, value, unit, std, samples) as JSON here.",
)
@click.option(
    "--num-cpus",
    type=click.IntRange(min=1),
    default=None,
    help="CPUs given to the runtime (default: the machine's CPU count).",
)
@click.option(
    "--tiny-tasks",
    type=click.IntRange(min=1),
    default=1_000_000,
    show_default=True,
    help="How many tasks the '1M tiny tasks submitted at once' row submits.",
)
@click.option(
    "--row-timeout",
    type=click.FloatRange(min=1),
    default=900.0,
    show_default=True,
    help="Abort (with every thread's stack on stderr) if one row runs this long.",
)
@click.option("--list", "list_rows", is_flag=True, help="List the row names and exit.")
def microbenchmark(
    filters: tuple[str, ...],
    duration: float,
    json_path: str | None,
    num_cpus: int | None,
    tiny_tasks: int,
    row_timeout: float,
    list_rows: bool,
) -> None:
    """Ray's `ray microbenchmark` rows (same names and workloads), plus start-up, shutdown,
    idle memory and a million-tiny-tasks row. Prints an aligned table: mean ± std of
    per-round rates (Ray's method)."""
    from rtml.cli import _microbenchmark

    if list_rows:
        click.echo("\n".join(_microbenchmark.ALL_NAMES))
        return
    status = _microbenchmark.run(
        duration=duration,
        filters=filters,
        json_path=json_path,
        num_cpus=num_cpus,
        tiny_tasks=tiny_tasks,
        row_timeout=row_timeout,
    )
    raise SystemExit(status)


def _register() -> None:
    from rtml.cli._cluster import start, status, stop
    from rtml.cli._debug import logs, stack

    for command in (start, stop, status, logs, stack):
        cli.add_command(command)
    from rtml.cli._state import COMMANDS

    for command in COMMANDS:
        cli.add_command(command)
    from rtml.cli._serve import serve_group

    cli.add_command(serve_group)


_register()
