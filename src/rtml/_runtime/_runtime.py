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

import atexit
import os
import secrets
import shutil
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from typing import Any

import psutil

from rtml._node._node import Node
from rtml._node._shell import NodeShell
from rtml._object_store._segments import cleanup_session
from rtml._object_store._store import NodeObjectStore
from rtml._runtime import _context, _payload
from rtml._runtime._driver import DriverClient
from rtml._runtime._refs import counter

SHM_DIR = "/dev/shm"
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


def default_object_store_memory() -> int:
    """30% of memory (as Ray), bounded by what /dev/shm can hold."""
    total = psutil.virtual_memory().total
    try:
        shm = shutil.disk_usage(SHM_DIR).free
    except OSError:
        shm = total
    return int(min(total * 0.3, shm * 0.9))


def _print_log(stream: str, name: str, pid: Any, text: str) -> None:
    out = sys.stderr if stream == "stderr" else sys.stdout
    prefix = f"({name} pid={pid}) "
    try:
        out.write("".join(prefix + line + "\n" for line in text.split("\n")))
        out.flush()
    except (OSError, ValueError):
        pass


class Runtime:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.session = "s" + secrets.token_hex(4)
        SESSIONS.append(self.session)
        self.node_id = secrets.token_hex(8)
        self.job_id = "01000000"
        self.tmpdir = tempfile.mkdtemp(prefix=f"rtml-{self.session}-")
        spill_dir = os.path.join(self.tmpdir, "spill")
        os.makedirs(spill_dir)
        self.store = NodeObjectStore(self.session, config.object_store_memory, spill_dir, SHM_DIR)
        worker_env = {**config.env_vars, "RTML_NODE_ID": self.node_id,
                      "RTML_JOB_ID": self.job_id, "RTML_NAMESPACE": config.namespace,
                      "RTML_SPILL_DIR": spill_dir}
        _payload.spill_dir = spill_dir
        self.shell = NodeShell(self.session, SHM_DIR, worker_env, config.log_to_driver,
                               _print_log)
        resources = {"CPU": config.num_cpus, **config.resources}
        if config.num_gpus:
            resources["GPU"] = config.num_gpus
        resources.setdefault("memory", float(psutil.virtual_memory().available))
        resources.setdefault("object_store_memory", float(config.object_store_memory))
        self.node = Node(self.shell, self.store, resources, self.session)
        self.shell.node = self.node
        from rtml._node._actors import ActorManager

        self.node.actors = ActorManager(self.node, config.namespace)
        self.client = DriverClient(self.node, self.shell, self.session, SHM_DIR, self.node_id,
                                   self.job_id)
        self.client.namespace = config.namespace
        self._stopped = False
        self._lock = threading.Lock()

    def start(self) -> None:
        counter.reset()
        counter.enabled = True
        self.shell.start()
        with self.node.lock:
            for _ in range(self.node.base_workers):
                self.node.start_worker()
            self.shell.flush()
        _context.set_client(self.client)
        atexit.register(self.shutdown)

    def shutdown(self) -> None:
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        counter.enabled = False
        if _context.get_client() is self.client:
            _context.set_client(None)
        from rtml._runtime._async import stop_resolver

        stop_resolver()
        try:
            self.shell.stop()
        finally:
            self.store.shutdown()
            cleanup_session(self.session, SHM_DIR)
            shutil.rmtree(self.tmpdir, ignore_errors=True)
            counter.reset()
            atexit.unregister(self.shutdown)
