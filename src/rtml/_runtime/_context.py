"""Which core client this process uses (the driver's, or a worker's), and how to get one.

``client()`` is what every floor below ``rtml._api`` calls: it returns the current client, or
starts the default runtime first (as Ray's first remote call does) through the hook that the
layer owning ``init`` registers (``rtml._api`` registers it when rtml is imported). Nothing
here imports ``rtml._api``: the call goes down the floors only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

_client: Any = None
_auto_init: Callable[[], Any] | None = None


def set_client(client: Any) -> None:
    global _client
    _client = client


def get_client() -> Any:
    return _client


def set_auto_init(hook: Callable[[], Any]) -> None:
    """Register how to start the default runtime when a client is needed and none runs."""
    global _auto_init
    _auto_init = hook


def client() -> Any:
    """This process's client, starting the default runtime first if none is running."""
    c = _client
    if c is None:
        if _auto_init is None:
            raise RuntimeError("rtml is not initialized: call rtml.init() first")
        c = _auto_init()
    return c
