"""Panels that libraries add to the dashboard: a title and rows (dicts) from a function.

::

    rtml.stream ── register_panel("streams", "Streams", rows_fn) ──▶ PANELS
    dashboard snapshot ──▶ panels_view() ──▶ [{"name", "title", "rows" | "error"}] ──▶ page

The dashboard stays below the libraries: it calls what was registered in its own process and
knows nothing of streams, serving or learners. A panel's function runs on the dashboard's
source thread; it must be quick (report cached figures, not ask actors).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

__all__ = [
    "ObjectPanel",
    "metrics_text",
    "panels_view",
    "register_metrics",
    "register_panel",
    "unregister_panel",
]

_MAX_ROWS = 200
_lock = threading.Lock()
_PANELS: dict[str, tuple[str, Callable[[], list[dict[str, Any]]]]] = {}


def register_panel(name: str, title: str, rows: Callable[[], list[dict[str, Any]]]) -> None:
    """Show ``rows()`` (a list of flat dicts: one table row each) as a dashboard panel.

    Args:
        name: a stable id (registering it again replaces the panel).
        title: the panel's heading.
        rows: called at every refresh of the page, on the dashboard's thread.

    Raises:
        ValueError: ``rows`` is not callable or ``name`` is empty.
    """
    if not name or not callable(rows):
        raise ValueError("register_panel(name, title, rows) needs a name and a callable")
    with _lock:
        _PANELS[name] = (title, rows)


def unregister_panel(name: str) -> None:
    with _lock:
        _PANELS.pop(name, None)
        _METRICS.pop(name, None)


_METRICS: dict[str, Callable[[], str]] = {}


def register_metrics(name: str, text: Callable[[], str]) -> None:
    """Add ``text()`` (Prometheus exposition text) to what ``GET /metrics`` answers.

    Raises:
        ValueError: ``text`` is not callable or ``name`` is empty.
    """
    if not name or not callable(text):
        raise ValueError("register_metrics(name, text) needs a name and a callable")
    with _lock:
        _METRICS[name] = text


def metrics_text() -> str:
    """Every registered source's text, one after another; a failing source is a comment."""
    with _lock:
        items = sorted(_METRICS.items())
    out = []
    for name, text in items:
        try:
            body = text()
        except Exception as e:
            body = f"# {name} failed: {type(e).__name__}: {e}".replace("\n", " ") + "\n"
        if body and not body.endswith("\n"):
            body += "\n"
        out.append(body)
    return "".join(out)


def panels_view() -> list[dict[str, Any]]:
    with _lock:
        items = list(_PANELS.items())
    out = []
    for name, (title, rows) in items:
        try:
            data = list(rows())[:_MAX_ROWS]
            out.append({"name": name, "title": title, "rows": data})
        except Exception as e:  # a broken panel shows its error, the page goes on
            out.append(
                {"name": name, "title": title, "rows": [], "error": f"{type(e).__name__}: {e}"}
            )
    return out


class ObjectPanel:
    """A panel with one row per live object of a library (held weakly: an object that is
    garbage-collected leaves the panel), registered on the first ``track``.

    Args:
        name, title: as for :func:`register_panel`.
        row: ``row(obj) -> dict``, the object's row.
        refresh_s: reuse the last rows for this long (for rows that ask an actor).
    """

    def __init__(
        self, name: str, title: str, row: Callable[[Any], dict[str, Any]], refresh_s: float = 0.0
    ) -> None:
        import weakref

        self.name, self.title, self.row, self.refresh_s = name, title, row, refresh_s
        self._objects: weakref.WeakSet[Any] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._cached: tuple[float, list[dict[str, Any]]] | None = None

    def track(self, obj: Any) -> None:
        with self._lock:
            first = not self._objects
            self._objects.add(obj)
        if first:
            register_panel(self.name, self.title, self.rows)

    def expire(self) -> None:
        """Forget the cached rows: the next refresh builds them again."""
        self._cached = None

    def rows(self) -> list[dict[str, Any]]:
        import time

        now = time.monotonic()
        cached = self._cached
        if cached is not None and now - cached[0] < self.refresh_s:
            return cached[1]
        with self._lock:
            objects = list(self._objects)
        fresh = [self.row(o) for o in objects]
        self._cached = (now, fresh)
        return fresh
