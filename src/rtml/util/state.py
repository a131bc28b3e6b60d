"""State of a running program, as ``ray.util.state``: list tasks, actors, objects, nodes and
workers, and summarize tasks, actors and objects.

Every function reads the runtime this process runs or is connected to (``address=None``; the
cluster started last on this machine if there is none), or the cluster whose control plane is
at ``address``. Rows are dicts whose keys also read as attributes (``task.state``).

Example::

    from rtml.util.state import list_tasks, summarize_tasks

    failed = list_tasks(filters=[("state", "=", "FAILED")], detail=True)
    print(failed[0].error, failed[0].traceback)
    print(summarize_tasks()["summary"])
"""

from __future__ import annotations

from typing import Any

from rtml._observability import _listing
from rtml._observability._listing import StateRecord

Filters = list[tuple[str, str, Any]]


def _list(
    resource: str, address: str | None, filters: Filters | None, limit: int, detail: bool
) -> list[StateRecord]:
    _listing.check_filters(resource, filters)  # refuse a bad filter before connecting
    with _listing.open_source(address) as source:
        rows = _listing.read_rows(source, resource)
    return _listing.select(rows, resource, filters, limit, detail)[0]


def list_tasks(
    address: str | None = None,
    filters: Filters | None = None,
    limit: int = 100,
    timeout: float | None = None,
    detail: bool = False,
    raise_on_missing_output: bool = True,
) -> list[StateRecord]:
    """Tasks: finished and failed ones from the task event log, pending and running ones live.

    Args:
        address: the cluster's control plane ``HOST:PORT`` or ``"auto"``; ``None`` for the
            runtime this process uses.
        filters: ``(key, op, value)`` triples, all of which a row must pass; ``op`` is ``=`` or
            ``!=`` (any key; ``state`` is compared case-insensitively, list keys such as
            ``deps`` by membership), or ``<`` / ``>`` (numeric keys such as ``duration_s``).
        limit: at most this many rows (in order of submission).
        timeout: accepted for Ray compatibility; unused.
        detail: every key (error, traceback, parent, deps, times...) instead of the compact
            columns (task_id, name, state, attempt, node_id, worker_pid, duration_s, error).
        raise_on_missing_output: accepted for Ray compatibility; unused.

    Returns:
        One record per task (its latest attempt).

    Raises:
        ValueError: a filter names an unknown key or operator, or compares a non-number.
        ConnectionError: no cluster at ``address``.
        RuntimeError: the runtime keeps no task events (local mode).
    """
    return _list("tasks", address, filters, limit, detail)


def list_actors(
    address: str | None = None,
    filters: Filters | None = None,
    limit: int = 100,
    timeout: float | None = None,
    detail: bool = False,
    raise_on_missing_output: bool = True,
) -> list[StateRecord]:
    """Actors, alive and dead (keys: actor_id, class_name, name, namespace, state, node_id,
    pid, num_restarts, death_cause, job_id).

    Args:
        address: as for ``list_tasks``.
        filters: as for ``list_tasks``.
        limit: at most this many rows.
        timeout: accepted for Ray compatibility; unused.
        detail: every key instead of the compact columns.
        raise_on_missing_output: accepted for Ray compatibility; unused.

    Returns:
        One record per actor.

    Raises:
        ValueError: a bad filter.
        ConnectionError: no cluster at ``address``.
    """
    return _list("actors", address, filters, limit, detail)


def list_objects(
    address: str | None = None,
    filters: Filters | None = None,
    limit: int = 100,
    timeout: float | None = None,
    detail: bool = False,
    raise_on_missing_output: bool = True,
) -> list[StateRecord]:
    """Objects in the node stores (keys: object_id, size, where, node_id, ref_count, holders,
    task_id).

    Args:
        address: as for ``list_tasks``.
        filters: as for ``list_tasks`` (e.g. ``("size", ">", 1 << 20)``,
            ``("where", "=", "SPILLED")``).
        limit: at most this many rows.
        timeout: accepted for Ray compatibility; unused.
        detail: every key (with ``holders``: who keeps a reference) instead of the compact
            columns.
        raise_on_missing_output: accepted for Ray compatibility; unused.

    Returns:
        One record per object and node that has it.

    Raises:
        ValueError: a bad filter.
        ConnectionError: no cluster at ``address``.
    """
    return _list("objects", address, filters, limit, detail)


def list_nodes(
    address: str | None = None,
    filters: Filters | None = None,
    limit: int = 100,
    timeout: float | None = None,
    detail: bool = False,
    raise_on_missing_output: bool = True,
) -> list[StateRecord]:
    """Nodes, alive and dead (keys: node_id, index, address, alive, is_head, resources_total,
    resources_available, queued, tasks, death_cause).

    Args:
        address: as for ``list_tasks``.
        filters: as for ``list_tasks`` (e.g. ``("alive", "=", True)``).
        limit: at most this many rows.
        timeout: accepted for Ray compatibility; unused.
        detail: every key instead of the compact columns.
        raise_on_missing_output: accepted for Ray compatibility; unused.

    Returns:
        One record per node incarnation.

    Raises:
        ValueError: a bad filter.
        ConnectionError: no cluster at ``address``.
    """
    return _list("nodes", address, filters, limit, detail)


def list_workers(
    address: str | None = None,
    filters: Filters | None = None,
    limit: int = 100,
    timeout: float | None = None,
    detail: bool = False,
    raise_on_missing_output: bool = True,
) -> list[StateRecord]:
    """Worker processes of the live nodes (keys: worker_id, pid, node_id, state, actor_id,
    tasks, blocked).

    Args:
        address: as for ``list_tasks``.
        filters: as for ``list_tasks`` (e.g. ``("state", "=", "IDLE")``).
        limit: at most this many rows.
        timeout: accepted for Ray compatibility; unused.
        detail: every key instead of the compact columns.
        raise_on_missing_output: accepted for Ray compatibility; unused.

    Returns:
        One record per worker.

    Raises:
        ValueError: a bad filter.
        ConnectionError: no cluster at ``address``.
    """
    return _list("workers", address, filters, limit, detail)


def summarize_tasks(
    address: str | None = None, timeout: float | None = None, raise_on_missing_output: bool = True
) -> dict[str, Any]:
    """Task counts per function and state, as Ray's task summary.

    Args:
        address: as for ``list_tasks``.
        timeout: accepted for Ray compatibility; unused.
        raise_on_missing_output: accepted for Ray compatibility; unused.

    Returns:
        ``{"summary": {name: {"func_or_class_name", "type", "state_counts", "total",
        "mean_duration_s"}}, "total_tasks", "total_actor_tasks", "state_counts",
        "dropped_events"}``.

    Raises:
        ConnectionError: no cluster at ``address``.
        RuntimeError: the runtime keeps no task events (local mode).
    """
    with _listing.open_source(address) as source:
        events, dropped = _listing.read_events(source)
        rows = _listing.task_rows(events, source.live_tasks())
    return _listing.summarize_tasks(rows, dropped)


def summarize_actors(
    address: str | None = None, timeout: float | None = None, raise_on_missing_output: bool = True
) -> dict[str, Any]:
    """Actor counts per class and state.

    Args:
        address: as for ``list_tasks``.
        timeout: accepted for Ray compatibility; unused.
        raise_on_missing_output: accepted for Ray compatibility; unused.

    Returns:
        ``{"summary": {class_name: {"class_name", "state_counts", "total"}},
        "total_actors"}``.

    Raises:
        ConnectionError: no cluster at ``address``.
    """
    with _listing.open_source(address) as source:
        rows = _listing.read_rows(source, "actors")
    return _listing.summarize_actors(rows)


def summarize_objects(
    address: str | None = None,
    limit: int = 100,
    timeout: float | None = None,
    raise_on_missing_output: bool = True,
) -> dict[str, Any]:
    """Objects by size, with who holds a reference to each (what ``rtml memory`` prints).

    Args:
        address: as for ``list_tasks``.
        limit: list at most this many objects (the largest); totals count them all.
        timeout: accepted for Ray compatibility; unused.
        raise_on_missing_output: accepted for Ray compatibility; unused.

    Returns:
        ``{"total_objects", "total_size", "by_where": {where: {"count", "size"}},
        "by_node": {node_id: {"count", "size"}}, "objects": [records, largest first],
        "truncated"}``.

    Raises:
        ConnectionError: no cluster at ``address``.
    """
    with _listing.open_source(address) as source:
        rows = _listing.read_rows(source, "objects")
    return _listing.summarize_objects(rows, limit)


def memory_summary(address: str | None = None, limit: int = 100) -> str:
    """``summarize_objects`` as text: totals by location and node, then the largest objects
    with their holders.

    Args:
        address: as for ``list_tasks``.
        limit: list at most this many objects.

    Returns:
        The text ``rtml memory`` prints.

    Raises:
        ConnectionError: no cluster at ``address``.
    """
    return _listing.memory_text(summarize_objects(address, limit))


__all__ = [
    "StateRecord",
    "list_actors",
    "list_nodes",
    "list_objects",
    "list_tasks",
    "list_workers",
    "memory_summary",
    "summarize_actors",
    "summarize_objects",
    "summarize_tasks",
]
