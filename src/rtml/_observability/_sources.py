"""The two ``StateSource`` implementations, and how a process finds the one to read.

::

    current_source() ── embedded runtime in this process ──▶ LocalSource (its node, its log)
                     └─ driver of a cluster ─────────────────▶ ClusterSource(address, token)
    connect_source(address) (CLI, dashboard on the head) ──────▶ ClusterSource
    ClusterSource ── control plane: task events, nodes, actors (dead ones too)
                  └─ each live node, as an observer client: live tasks, objects, workers,
                     actors (with pids), log files and their text
"""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Callable
from typing import Any

from rtml._control._events import EventPage
from rtml._node import _readers
from rtml._node._readers import LOG_DIR, log_files, read_log_file


def _node_record(n: Any) -> dict[str, Any]:
    load = n.load or {}
    return {
        "node_id": n.node_id,
        "index": n.index,
        "address": n.address,
        "alive": n.alive,
        "is_head": bool(n.extra.get("is_head")),
        "resources_total": dict(n.resources),
        "resources_available": dict(n.available if n.alive else {}),
        "queued": int(load.get("queued", 0)),
        "tasks": int(load.get("tasks", 0)),
        "death_cause": n.death_cause,
    }


class LocalSource:
    """The embedded runtime of this process."""

    def __init__(self, runtime: Any) -> None:
        self.rt = runtime

    def _read(self, kind: str) -> list[dict[str, Any]]:
        node = self.rt.node
        with node.lock:
            return _readers.READERS[kind](node, self.rt.node_id)

    def task_events(self, since: int = 0, limit: int | None = None) -> EventPage:
        flush = getattr(self.rt._events, "flush", None)
        if flush is not None:
            flush()
        return self.rt.event_log.query(since=since, limit=limit)

    def live_tasks(self) -> list[dict[str, Any]]:
        return self._read("live_tasks")

    def actors(self) -> list[dict[str, Any]]:
        return self._read("actors")

    def objects(self) -> list[dict[str, Any]]:
        return self._read("objects")

    def workers(self) -> list[dict[str, Any]]:
        return self._read("workers")

    def nodes(self) -> list[dict[str, Any]]:
        node = self.rt.node
        with node.lock:
            total, avail = node.resources.totals(), node.resources.availability()
            queued = sum(len(q) for q in node.ready.values())
            tasks = len(node.tasks)
        return [
            {
                "node_id": self.rt.node_id,
                "index": 0,
                "address": "127.0.0.1",
                "alive": True,
                "is_head": True,
                "resources_total": total,
                "resources_available": avail,
                "queued": queued,
                "tasks": tasks,
                "death_cause": None,
            }
        ]

    def logs(self) -> list[dict[str, Any]]:
        return log_files(os.path.join(self.rt.parts.tmpdir, LOG_DIR), self.rt.node_id)

    def read_log(self, node_id: str, pid: int, tail: int | None = None) -> str:
        text = None
        if node_id == self.rt.node_id:
            text = read_log_file(os.path.join(self.rt.parts.tmpdir, LOG_DIR), pid, tail)
        if text is None:
            raise ValueError(f"no log for worker pid {pid} on node {node_id}")
        return text

    def close(self) -> None:
        pass


class _NodeLink:
    """A blocking observer connection to one node."""

    def __init__(self, address: str, token: bytes, timeout: float) -> None:
        from rtml._transport import BlockingChannel
        from rtml._transport._auth import connect

        self.chan = BlockingChannel(connect(address, token, timeout), 1 << 30)
        self.timeout = timeout
        self._req = itertools.count(1)
        self.request(
            lambda r: (
                "client_hello",
                r,
                {"kind": "observer", "pid": os.getpid(), "log_to_driver": False},
            )
        )

    def request(self, msg_fn: Any) -> Any:
        import time

        req = next(self._req)
        self.chan.send([msg_fn(req)])
        deadline = time.monotonic() + self.timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("a node did not answer a state request")
            for m in self.chan.receive(remaining):
                if m[0] == "reply" and m[1] == req:
                    return m[2]

    def close(self) -> None:
        self.chan.close()


class ClusterSource:
    """A running cluster, read through its control plane and nodes. Thread-safe."""

    def __init__(self, address: str, token: bytes, timeout: float = 10.0) -> None:
        from rtml._control._client import ControlClient

        self.address = address
        self.token = token
        self.timeout = timeout
        self.gcs = ControlClient(address, token, timeout=timeout)
        self._links: dict[str, _NodeLink] = {}
        self._lock = threading.Lock()

    def _nodes(self) -> list[Any]:
        return self.gcs.list_nodes()

    def _link(self, n: Any) -> _NodeLink | None:
        link = self._links.get(n.node_id)
        if link is None:
            try:
                link = self._links[n.node_id] = _NodeLink(n.address, self.token, self.timeout)
            except (ConnectionError, OSError, TimeoutError):
                return None
        return link

    def _gather(self, kind: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        with self._lock:
            for n in self._nodes():
                if not n.alive:
                    continue
                link = self._link(n)
                if link is None:
                    continue
                try:
                    out.extend(link.request(lambda r, k=kind: ("state", r, k)) or [])
                except (ConnectionError, OSError, TimeoutError):
                    self._links.pop(n.node_id, None)
                    link.close()
        return out

    def task_events(self, since: int = 0, limit: int | None = None) -> EventPage:
        return self.gcs.get_events(since=since, limit=limit if limit is not None else 1 << 30)

    def live_tasks(self) -> list[dict[str, Any]]:
        return self._gather("live_tasks")

    def objects(self) -> list[dict[str, Any]]:
        return self._gather("objects")

    def workers(self) -> list[dict[str, Any]]:
        return self._gather("workers")

    def actors(self) -> list[dict[str, Any]]:
        live = {a["actor_id"]: a for a in self._gather("actors")}
        for rec in self.gcs.list_actors():
            aid = format(rec.actor_id, "x") if isinstance(rec.actor_id, int) else rec.actor_id
            if aid in live:
                a = live[aid]
                a["name"] = a["name"] or rec.name
                a["namespace"] = a["namespace"] or rec.namespace
                continue
            live[aid] = {
                "actor_id": aid,
                "class_name": rec.class_name,
                "name": rec.name,
                "namespace": rec.namespace,
                "state": rec.state,
                "node_id": rec.node_id,
                "pid": rec.pid,
                "num_restarts": rec.num_restarts,
                "death_cause": rec.death_cause,
                "job_id": format(rec.job_id, "08x") if rec.job_id is not None else "",
            }
        return list(live.values())

    def nodes(self) -> list[dict[str, Any]]:
        return [_node_record(n) for n in self._nodes()]

    def logs(self) -> list[dict[str, Any]]:
        return self._gather("logs")

    def read_log(self, node_id: str, pid: int, tail: int | None = None) -> str:
        with self._lock:
            for n in self._nodes():
                if n.node_id == node_id and n.alive:
                    link = self._link(n)
                    if link is not None:
                        text = link.request(lambda r: ("read_log", r, int(pid), tail))
                        if text is not None:
                            return text
        raise ValueError(f"no log for worker pid {pid} on node {node_id}")

    def close(self) -> None:
        with self._lock:
            for link in self._links.values():
                link.close()
            self._links.clear()
        self.gcs.close()


# How to open a source for the runtime this process runs or is connected to: handed in by the
# layer that starts it (``rtml._api``), None while none runs.
_current: Callable[[], Any] | None = None


def set_current_source(opener: Callable[[], Any] | None) -> None:
    """Hand in how to read this process's runtime (None: it stopped)."""
    global _current
    _current = opener


def has_current_source() -> bool:
    """True while this process runs, or is connected to, a runtime."""
    return _current is not None


def current_source() -> Any:
    """The source for the runtime this process runs or is connected to.

    Raises:
        RuntimeError: rtml is not initialized in this process, or runs in local mode.
    """
    opener = _current
    if opener is None:
        raise RuntimeError(
            "rtml is not initialized: call rtml.init() first, or pass the cluster's address"
        )
    return opener()


def source_opener(rt: Any) -> Callable[[], Any]:
    """How to read ``rt``: its node in this process, its cluster, or nothing (local mode)."""
    if hasattr(rt, "event_log"):
        return lambda: LocalSource(rt)
    if hasattr(rt, "gcs"):
        return lambda: ClusterSource(rt.address, rt.token)

    def none() -> Any:
        raise RuntimeError("this runtime (local mode) keeps no task events or node state")

    return none


def connect_source(address: str = "auto", token: str | bytes | None = None) -> ClusterSource:
    """A source for the cluster at ``address`` ("auto": the one started last on this machine).

    Raises:
        ConnectionError: no cluster there, or no token for it.
    """
    from rtml._runtime._remote import resolve_address
    from rtml._transport._auth import find_token

    addr = resolve_address(address)
    return ClusterSource(addr, find_token(addr, token))
