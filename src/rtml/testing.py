"""A local multi-node cluster on this machine, for tests and experiments.

Shaped like Ray's ``ray.cluster_utils.Cluster``::

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    worker = cluster.add_node(num_cpus=2, resources={"sensor": 1})
    cluster.wait_for_nodes()
    rtml.init(address=cluster.address)
    ...
    rtml.shutdown(); cluster.shutdown()

Every node is its own node-manager process with its own object store and workers; the control
plane is one more process. All of them are children of this process and end with
``shutdown()`` (or at interpreter exit).
"""

from __future__ import annotations

import atexit
import time
from typing import Any

from rtml._launch import Started, start_control_plane, start_node, stop_process
from rtml._transport import _auth

__all__ = ["Cluster", "NodeHandle"]


class NodeHandle:
    """A node started by ``Cluster``: its id, address, process and the options it got."""

    def __init__(self, started: Started, address: str, options: dict[str, Any], head: bool) -> None:
        self.node_id = started.node_id
        self.address = address
        self.process = started.proc
        self.options = options
        self.is_head = head

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def __repr__(self) -> str:
        return f"NodeHandle({self.node_id}, {self.address}, head={self.is_head})"


class Cluster:
    """A control plane plus node processes on this machine (see the module docstring).

    Args:
        initialize_head: start the head node now (with ``head_node_args``).
        connect: also ``rtml.init(address=...)`` this process to it (needs the head).
        head_node_args: options of the head node, as for ``add_node``.
        shutdown_at_exit: stop every process at interpreter exit if not done before.
        heartbeat_timeout: seconds without a heartbeat before the control plane declares a
            node dead.
        redis: ``HOST:PORT[,HOST:PORT...]`` of redis-servers for a durable control plane.
    """

    def __init__(
        self,
        initialize_head: bool = False,
        connect: bool = False,
        head_node_args: dict[str, Any] | None = None,
        shutdown_at_exit: bool = True,
        heartbeat_timeout: float | None = None,
        redis: str | None = None,
    ) -> None:
        self.token = _auth.new_token()
        self.redis = redis
        self.heartbeat_timeout = heartbeat_timeout
        self.control_plane: Started | None = None
        self.address = ""
        self.head_node: NodeHandle | None = None
        self.worker_nodes: list[NodeHandle] = []
        self._connected = False
        self._stopped = False
        self.start_control_plane()
        if shutdown_at_exit:
            atexit.register(self.shutdown)
        if initialize_head:
            self.add_node(**(head_node_args or {}))
            if connect:
                self.connect()
        elif connect:
            raise ValueError("connect=True needs initialize_head=True")

    def start_control_plane(self, port: int = 0) -> None:
        """(Re)start the control-plane process (on ``port``; 0 picks a free one)."""
        cp = start_control_plane(
            self.token, port=port, redis=self.redis, heartbeat_timeout=self.heartbeat_timeout
        )
        self.control_plane = cp
        self.address = f"127.0.0.1:{cp.port}"
        _auth.write_token(self.address, self.token)

    def restart_control_plane(self, kill: bool = True) -> None:
        """Stop the control plane (SIGKILL, or SIGTERM with ``kill=False``) and start a new
        one on the same port with the same Redis and token, as after a crash. Nodes and
        drivers reconnect by themselves; on Redis nothing is lost, in memory everything is
        (nodes register again, with the indices they had)."""
        assert self.control_plane is not None
        old = self.control_plane
        if kill:
            old.proc.kill()
            old.proc.wait()
        else:
            stop_process(old.proc)
        self.start_control_plane(port=old.port)

    # ------------------------------------------------------------------ nodes
    def add_node(self, wait: bool = True, **node_args: Any) -> NodeHandle:
        """Start a node process (the first one is the head).

        Args:
            node_args: ``num_cpus``, ``num_gpus``, ``resources``, ``object_store_memory``,
                ``labels``.
        """
        allowed = {"num_cpus", "num_gpus", "resources", "object_store_memory", "labels"}
        unknown = set(node_args) - allowed
        if unknown:
            raise TypeError(
                f"add_node() got unexpected option(s) {sorted(unknown)}; it takes {sorted(allowed)}"
            )
        head = self.head_node is None
        started = start_node(self.address, self.token, head=head, **node_args)
        node = NodeHandle(started, f"127.0.0.1:{started.port}", node_args, head)
        if head:
            self.head_node = node
        else:
            self.worker_nodes.append(node)
        if wait:
            self.wait_for_nodes()
        return node

    def remove_node(self, node: NodeHandle, allow_graceful: bool = True) -> None:
        """Stop a node: SIGTERM (graceful) or SIGKILL (``allow_graceful=False``)."""
        if allow_graceful:
            stop_process(node.process)
        else:
            node.process.kill()
            node.process.wait()
        if node is self.head_node:
            self.head_node = None
        elif node in self.worker_nodes:
            self.worker_nodes.remove(node)

    def list_all_nodes(self) -> list[NodeHandle]:
        return ([self.head_node] if self.head_node else []) + list(self.worker_nodes)

    def wait_for_nodes(self, timeout: float = 30.0) -> None:
        """Wait until the control plane lists exactly the live nodes started here."""
        from rtml._control._client import ControlClient

        want = {n.node_id for n in self.list_all_nodes()}
        deadline = time.monotonic() + timeout
        with ControlClient(self.address, self.token) as gcs:
            while True:
                alive = {n.node_id for n in gcs.list_nodes() if n.alive}
                if alive == want:
                    return
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"the control plane lists {sorted(alive)} alive, expected {sorted(want)}"
                    )
                time.sleep(0.05)

    # ------------------------------------------------------------------ drivers
    def connect(self, namespace: str | None = None) -> Any:
        import rtml

        ctx = rtml.init(address=self.address, namespace=namespace)
        self._connected = True
        return ctx

    def shutdown(self) -> None:
        """Disconnect this process's driver (if connected here) and stop every process."""
        if self._stopped:
            return
        self._stopped = True
        atexit.unregister(self.shutdown)
        if self._connected:
            import rtml

            rtml.shutdown()
        for node in reversed(self.list_all_nodes()):
            stop_process(node.process)
        self.worker_nodes.clear()
        self.head_node = None
        if self.control_plane is not None:
            stop_process(self.control_plane.proc)
        _auth.remove_token(self.address)
