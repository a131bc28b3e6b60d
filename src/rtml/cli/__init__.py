"""The ``rtml`` command line (``rtml ...`` or ``python -m rtml ...``).

Commands are defined in ``rtml.cli._commands``; importing this package stays cheap because
workers import ``rtml.cli._workloads`` to run the microbenchmark's remote functions.

Floor 9, a user of the public API (docs/architecture.md): may read any floor below.
"""

from __future__ import annotations

from typing import Any


def main(args: Any = None) -> Any:
    """Entry point of the ``rtml`` console script."""
    from rtml.cli._commands import cli

    return cli.main(args=args, prog_name="rtml")


__all__ = ["main"]
