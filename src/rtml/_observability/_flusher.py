"""Drain a node's recorded task events into an event log, off the node's hot path.

The embedded runtime keeps the log in the driver process (``start_event_log``); a cluster node
sends the same batches to the control plane (``EventFlusher`` with a sink that calls
``add_events``). ``RTML_TASK_EVENTS=0`` turns recording off (to measure what it costs).
"""

from __future__ import annotations

import os
import sys
import threading
from typing import Any

from rtml._observability._recorder import FLUSH_S, CompactEventLog, compact, to_dict

EVENT_CAPACITY = 100_000


def events_enabled() -> bool:
    return os.environ.get("RTML_TASK_EVENTS", "1") != "0"


class EventFlusher:
    """A thread that moves ``node.events`` into ``sink(batch)`` every FLUSH_S: compact tuples,
    or with ``as_dicts`` the event dicts a control plane's EventLog takes."""

    def __init__(
        self, node: Any, node_id: str, sink: Any, default_job: str = "", as_dicts: bool = False
    ) -> None:
        self.node = node
        self.node_id = node_id
        self.sink = sink
        self.default_job = default_job
        self.as_dicts = as_dicts
        self._flush_lock = threading.Lock()  # the thread and readers may flush at once
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="rtml-events", daemon=True)

    def start(self) -> EventFlusher:
        self.node.events = []
        self.thread.start()
        return self

    def flush(self) -> None:
        node = self.node
        with self._flush_lock:
            with node.lock:
                records, node.events = node.events, []
            if not records:
                return
            try:
                batch = compact(records, self.default_job)
                if self.as_dicts:
                    self.sink([to_dict(c, self.node_id) for c in batch])
                else:
                    self.sink(batch)
            except Exception as e:  # observability must never take the runtime down
                print(f"rtml: dropped {len(records)} task events: {e}", file=sys.stderr)  # noqa: T201

    def _run(self) -> None:
        while not self._stop.wait(FLUSH_S):
            self.flush()

    def stop(self) -> None:
        self._stop.set()
        if self.thread.is_alive():
            self.thread.join(5)
        self.flush()
        with self.node.lock:
            self.node.events = None


class _Off:
    def stop(self) -> None:
        pass


def start_event_log(node: Any, node_id: str, job_id: str) -> tuple[CompactEventLog, Any]:
    """The embedded runtime's event log and the flusher that fills it."""
    log = CompactEventLog(node_id, EVENT_CAPACITY)
    if not events_enabled():
        return log, _Off()
    return log, EventFlusher(node, node_id, log.append, job_id).start()
