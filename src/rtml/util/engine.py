"""Which engine a real-time ML subpackage runs on: rtml itself, or Ray.

``rtml.stream``, ``rtml.online``, ``rtml.serve`` and ``rtml.rl`` use only the core API that
rtml and Ray share (``remote``, ``get``, ``wait``, ``put``, ``kill``, ``get_actor``), so the
same code runs on either; each takes ``engine=`` and resolves it here.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

__all__ = ["optional_import", "resolve"]


def resolve(engine: str | ModuleType | None = None) -> ModuleType:
    """The engine module for ``engine``.

    Args:
        engine: ``None`` or ``"rtml"`` (rtml itself), ``"ray"``, or a module with Ray's core
            API (``remote``, ``get``, ``wait``, ``put``, ``kill``, ``get_actor``).

    Raises:
        ValueError: an unknown engine name, or a module without that API.
        ImportError: ``"ray"`` when Ray is not installed.
    """
    if engine is None or engine == "rtml":
        return importlib.import_module("rtml")
    if engine == "ray":
        try:
            return importlib.import_module("ray")
        except ImportError as e:
            raise ImportError(
                "engine='ray' needs Ray installed (pip install ray); "
                "or leave engine unset to run on rtml"
            ) from e
    if isinstance(engine, ModuleType):
        missing = [
            n
            for n in ("remote", "get", "wait", "put", "kill", "get_actor")
            if not hasattr(engine, n)
        ]
        if missing:
            raise ValueError(
                f"engine module {engine.__name__!r} lacks {', '.join(missing)}; "
                "pass 'rtml', 'ray' or a module with Ray's core API"
            )
        return engine
    raise ValueError(f"unknown engine {engine!r}: use 'rtml' (the default) or 'ray'")


def optional_import(module: str, extra: str, feature: str) -> Any:
    """Import ``module`` or raise an ImportError that names the extra which installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(
            f"{feature} needs the {module.split('.')[0]!r} package: "
            f"pip install 'rtml[{extra}]' (or 'rtml[ml]' for every ML "
            "extra)"
        ) from e
