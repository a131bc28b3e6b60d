"""Start and stop the embedded single-machine runtime.

::

    init() ─▶ NodeObjectStore (shared memory + spill dir)
           ─▶ Node (scheduler + object table) + NodeShell (selector thread, worker processes)
           ─▶ DriverClient (this process's core client)
           ─▶ prestart one worker per CPU, in parallel
    shutdown() ─▶ workers told to exit, then killed if they linger; every segment, spill file
                  and temp dir removed; also at interpreter exit (atexit)
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rtml._node._build import SHM_DIR, build_node, node_resources
from rtml._runtime import _payload
from rtml._runtime._driver import DriverClient
from rtml._runtime._session import Session

SESSIONS: list[str] = []  # every session started by this process (for leak checks)


@dataclass
class Config:
    num_cpus: float
    num_gpus: float
    resources: dict[str, float]
    object_store_memory: int
    namespace: str
    log_to_driver: bool
    env_vars: dict[str, str] = field(default_factory=dict)
    include_dashboard: bool = True
    dashboard_host: str = "127.0.0.1"
    dashboard_port: int | None = None  # None: 8265 if free, else any free port


def print_log(stream: str, name: str, pid: Any, text: str, job: str | None = None) -> None:
    out = sys.stderr if stream == "stderr" else sys.stdout
    prefix = f"({name} pid={pid}) "
    try:
        out.write("".join(prefix + line + "\n" for line in text.split("\n")))
        out.flush()
    except (OSError, ValueError):
        pass


class Runtime(Session):
    """The embedded runtime. What watches it is handed in by the layer that starts it
    (``rtml._api``): ``start_events(node, node_id, job_id)`` returns (event log, flusher),
    ``start_dashboard(runtime, host, port)`` a dashboard handle; both are optional."""

    def __init__(
        self,
        config: Config,
        start_events: Callable[..., Any] | None = None,
        start_dashboard: Callable[..., Any] | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        self.job_id = "01000000"
        resources = node_resources(
            config.num_cpus, config.num_gpus, config.resources, config.object_store_memory
        )
        worker_env = {**config.env_vars, "RTML_JOB_ID": self.job_id}
        self.parts = build_node(
            resources,
            config.object_store_memory,
            config.namespace,
            worker_env,
            config.log_to_driver,
            print_log,
        )
        self.session = self.parts.session
        SESSIONS.append(self.session)
        self.node_id = self.parts.node_id
        self.node = self.parts.node
        self.store = self.parts.store
        self.shell = self.parts.shell
        _payload.spill_dir = self.parts.spill_dir
        self.client = DriverClient(
            self.node, self.shell, self.session, SHM_DIR, self.node_id, self.job_id
        )
        self.client.namespace = config.namespace
        self.event_log: Any = None
        self._events: Any = None
        if start_events is not None:
            self.event_log, self._events = start_events(self.node, self.node_id, self.job_id)
        self._start_dashboard = start_dashboard
        self.dashboard: Any = None

    def _start_parts(self) -> None:
        self.parts.start()
        c = self.config
        if c.include_dashboard and self._start_dashboard is not None:
            # Binds now (the URL is known at once); the web stack loads on the first visit.
            self.dashboard = self._start_dashboard(self, c.dashboard_host, c.dashboard_port)

    def _stop_parts(self) -> None:
        if self.dashboard is not None:
            self.dashboard.stop()
        if self._events is not None:
            self._events.stop()
        self.parts.stop()
