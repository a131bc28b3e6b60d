"""Which core client this process uses (the driver's, or a worker's)."""

from __future__ import annotations

from typing import Any

_client: Any = None


def set_client(client: Any) -> None:
    global _client
    _client = client


def get_client() -> Any:
    return _client
