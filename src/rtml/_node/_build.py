"""Assemble one node (store + state machine + I/O shell + actor manager) and take it apart.

Shared by the embedded runtime (the node lives in the driver) and the node server process of a
cluster (``python -m rtml._node``), so both run exactly the same node.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from dataclasses import dataclass
from typing import Any

import psutil

from rtml._node._actors import ActorManager
from rtml._node._bundles import NodeGroups
from rtml._node._node import Node
from rtml._node._shell import NodeShell
from rtml._object_store._segments import cleanup_session
from rtml._object_store._store import NodeObjectStore

SHM_DIR = "/dev/shm"


@dataclass
class NodeParts:
    session: str
    node_id: str
    tmpdir: str
    spill_dir: str
    store: NodeObjectStore
    shell: NodeShell
    node: Node

    def start(self) -> None:
        """Start the selector thread and one worker per CPU (spawned in parallel)."""
        self.shell.start()
        with self.node.lock:
            for _ in range(self.node.base_workers):
                self.node.start_worker()
            self.shell.flush()

    def stop(self) -> None:
        """Workers told to exit (killed if they linger); segments, spill files, temp dir gone."""
        try:
            self.shell.stop()
        finally:
            self.store.shutdown()
            cleanup_session(self.session, SHM_DIR)
            from rtml import _checkpoint

            _checkpoint.remove_session(self.session)
            shutil.rmtree(self.tmpdir, ignore_errors=True)


def default_object_store_memory() -> int:
    """30% of memory (as Ray), bounded by what /dev/shm can hold."""
    total = psutil.virtual_memory().total
    try:
        shm = shutil.disk_usage(SHM_DIR).free
    except OSError:
        shm = total
    return int(min(total * 0.3, shm * 0.9))


def node_resources(
    num_cpus: float, num_gpus: float, custom: dict[str, float], object_store_memory: int
) -> dict[str, float]:
    resources = {"CPU": num_cpus, **custom}
    if num_gpus:
        resources["GPU"] = num_gpus
    resources.setdefault("memory", float(psutil.virtual_memory().available))
    resources.setdefault("object_store_memory", float(object_store_memory))
    return resources


def build_node(
    resources: dict[str, float],
    object_store_memory: int,
    namespace: str,
    worker_env: dict[str, str],
    log_to_driver: bool,
    log_sink: Any,
    session: str | None = None,
) -> NodeParts:
    """A node ready to ``start()``; ``worker_env`` is set in every worker it spawns."""
    session = session or "s" + secrets.token_hex(4)
    node_id = secrets.token_hex(8)
    tmpdir = tempfile.mkdtemp(prefix=f"rtml-{session}-")
    spill_dir = os.path.join(tmpdir, "spill")
    os.makedirs(spill_dir)
    store = NodeObjectStore(session, object_store_memory, spill_dir, SHM_DIR)
    env = {**worker_env, "RTML_NODE_ID": node_id, "RTML_SPILL_DIR": spill_dir}
    env.setdefault("RTML_NAMESPACE", namespace)
    log_dir = env["RTML_LOG_DIR"] = os.path.join(tmpdir, "logs")
    os.makedirs(log_dir)
    shell = NodeShell(session, SHM_DIR, env, log_to_driver, log_sink)
    shell.log_dir = log_dir
    node = Node(shell, store, resources, session)
    shell.node = node
    node.actors = ActorManager(node, namespace)
    node.groups = NodeGroups(node, node_id)
    return NodeParts(session, node_id, tmpdir, spill_dir, store, shell, node)
