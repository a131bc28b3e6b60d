"""A node manager in its own process: what ``rtml start`` runs on every machine of a cluster.

::

    driver ──TCP──▶ accept thread ──handshake thread (token)──▶ NodeShell.attach ──▶ Node
                                                                  (a client process, like a
                                                                   worker that never runs tasks)
    Node + NodeShell + object store + workers: the same node the embedded runtime runs
    heartbeat thread ──every 0.5 s──▶ control plane: available resources, queue length,
                                      then lineage and object locations (batched)
    worker output ──▶ the drivers of the job that printed it (and the node's log files)

Nothing reaches the node's ``pickle.loads`` before the peer proved it holds the cluster token.

The control plane may restart under a running node: the task path never waits on it (only the
heartbeat thread, the event flusher and ``cluster.gcs_pool`` talk to it). While it is away the
client reconnects by itself, the heartbeat thread skips its rounds and lineage and locations
stay queued in the node (a batch the control plane did not take goes back to the queue). Once
reconnected the node heartbeats at once and reads the node list again (deaths and joins
published meanwhile were missed); if the control plane no longer knows it (the in-memory
backend restarted) it registers again under the same index, and says the state is lost.
"""

from __future__ import annotations

import os
import pickle
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from rtml import exceptions as exc
from rtml._control._client import CONNECTION
from rtml._node._build import NodeParts, build_node
from rtml._node._cluster import ClusterState
from rtml._transport import _tls
from rtml._transport._auth import AuthError, serve_handshake

MAX_CLIENT_FRAME = 1 << 30  # a driver may send inline values up to the inline threshold only
HEARTBEAT_S = 0.5
EVENT_BACKLOG = 100_000  # task events kept while the control plane is away (oldest dropped)
STOP_CALL_S = 2.0  # calls made while stopping never wait longer for the control plane


class NodeServer:
    """One cluster node: its parts, a listener for drivers, registration and heartbeats."""

    def __init__(
        self,
        resources: dict[str, float],
        object_store_memory: int,
        token: bytes,
        gcs: Any,
        host: str = "127.0.0.1",
        port: int = 0,
        is_head: bool = False,
        labels: dict[str, str] | None = None,
        gcs_address: str = "",
        dashboard_port: int = 0,
    ) -> None:
        self._ctor = dict(
            resources=resources,
            object_store_memory=object_store_memory,
            token=token,
            gcs=gcs,
            host=host,
            is_head=is_head,
            labels=labels,
            gcs_address=gcs_address,
            dashboard_port=dashboard_port,
        )
        self.token = token
        self.gcs = gcs
        self.gcs_address = gcs_address
        self.dashboard_port = dashboard_port  # 0: 8265 if free, else any; -1: no dashboard
        self.dashboard: Any = None
        # Handed in by the process that runs the node (``rtml._node.__main__``), both optional:
        # start_dashboard(host, port, token or None) and start_events(node, node_id, sink).
        self.start_dashboard: Callable[..., Any] | None = None
        self.start_events: Callable[..., Any] | None = None
        self.is_head = is_head
        self.labels = dict(labels or {})
        _tls.context(server=True)  # a TLS misconfiguration fails the start, with its reason
        self.listener = socket.create_server((host, port), reuse_port=False)
        _tls.warn_if_plain(host, "node")
        self.listener.settimeout(0.2)
        self.host = host
        self.port = self.listener.getsockname()[1]
        self.address = f"{host}:{self.port}"
        self.parts: NodeParts = build_node(
            resources, object_store_memory, "default", {}, True, self._route_log
        )
        self.node = self.parts.node
        self.shell = self.parts.shell
        self.shell.token = token
        self.shell.on_client_log = self._route_log_local
        self.node_index = 0
        self.shell.node_info = {
            "node_id": self.parts.node_id,
            "session": self.parts.session,
            "shm_dir": "/dev/shm",
            "spill_dir": self.parts.spill_dir,
            "address": self.address,
        }
        self._stop = threading.Event()
        self._kick = threading.Event()  # wakes the heartbeat thread: reconnected, or stopping
        self._threads: list[threading.Thread] = []
        self._events: Any = None
        self._event_backlog: list[dict[str, Any]] = []
        self._unsent: tuple[list[Any], ...] = ([], [], [], [])  # records not yet taken
        self._info: dict[str, Any] = {}
        self._trouble = False  # a heartbeat problem was printed (not again until it clears)
        # Fencing: set (to the cause) once the control plane declared this incarnation dead;
        # ``wakeup`` is set with it, so the process that serves the node replaces it.
        self.fenced: str | None = None
        self.wakeup: threading.Event | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        info = {
            "address": self.address,
            "host": self.host,
            "pid": os.getpid(),
            "resources": self.node.resources.totals(),
            "labels": self.labels,
            "is_head": self.is_head,
            "session": self.parts.session,
        }
        if self.is_head and self.dashboard_port != -1 and self.start_dashboard is not None:
            loopback = self.host.startswith("127.") or self.host in ("localhost", "::1")
            self.dashboard = self.start_dashboard(
                self.host,
                None if self.dashboard_port == 0 else self.dashboard_port,
                None if loopback else self.token,
            )
            info["dashboard_url"] = self.dashboard.url
        self._info = info
        rec = self.gcs.register_node(self.parts.node_id, info)
        self.node_index = rec.index
        self.node.cluster = ClusterState(self.node, self.parts.node_id, rec.index)
        self.node.cluster.gcs = self.gcs
        self.gcs.subscribe("nodes", self._on_node_change)
        self.gcs.subscribe(CONNECTION, self._on_connection)
        self._refresh_view()
        self.parts.start()
        if self.start_events is not None:
            self._events = self.start_events(self.node, self.parts.node_id, self._send_events)
        for target, name in (
            (self._accept_loop, "rtml-node-accept"),
            (self._heartbeat_loop, "rtml-node-heartbeat"),
        ):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)

    def renewed(self) -> NodeServer:
        """A new node for this process after this one was fenced: same resources, address
        and control-plane client, a new node id; ``start`` registers it as a new node."""
        new = NodeServer(**self._ctor, port=self.port)  # type: ignore[arg-type]
        new.start_dashboard = self.start_dashboard
        new.start_events = self.start_events
        new.wakeup = self.wakeup
        return new

    def stop(self) -> None:
        self._stop.set()
        self._kick.set()
        for t in self._threads:
            t.join(2)
        if self._events is not None:
            self._events.stop()
        if self.dashboard is not None:
            self.dashboard.stop()
        if self.fenced is not None:  # the process goes on with a new node: not these
            try:
                self.gcs.unsubscribe(CONNECTION, self._on_connection)
                self.gcs.unsubscribe("nodes", self._on_node_change)
            except (ConnectionError, TimeoutError, OSError, exc.RtmlError) as e:
                print(f"rtml node: could not unsubscribe: {e}", file=sys.stderr)  # noqa: T201
        try:  # leave the cluster now rather than when heartbeats are missed
            if self.fenced is not None:
                raise exc.RtmlSystemError("it was declared dead already")
            if not self.gcs.connected:
                raise ConnectionError(f"the control plane at {self.gcs.address} is unreachable")
            self.gcs.call("node_dead", self.parts.node_id, "stopped", timeout=STOP_CALL_S)
        except (ConnectionError, TimeoutError, OSError, exc.RtmlError) as e:
            print(f"rtml node: could not tell the control plane it stops: {e}", file=sys.stderr)  # noqa: T201
        self.listener.close()
        self.parts.stop()
        if self.node.cluster is not None:
            self.node.cluster.gcs_pool.shutdown(wait=True, cancel_futures=True)

    # ------------------------------------------------------------------ connections
    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                sock, peer = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(
                target=self._admit, args=(sock, peer), name="rtml-node-auth", daemon=True
            ).start()

    def _admit(self, sock: socket.socket, peer: Any) -> None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock = serve_handshake(sock, self.token)
        except AuthError as e:
            print(f"rtml node: refused connection from {peer}: {e}", file=sys.stderr)  # noqa: T201
            sock.close()
            return
        if self._stop.is_set():
            sock.close()
            return
        self.shell.attach(sock, MAX_CLIENT_FRAME)

    def _route_log(self, stream: str, name: str, pid: Any, text: str, job: str | None) -> None:
        """Worker output goes to the connected drivers of the job that printed it (all drivers
        for output printed outside any job's task), and to the other nodes, which pass it to
        their drivers of that job; called on the selector thread."""
        msg = ("log", stream, name, pid, text, job)
        for wid, c in self.node.clients.items():
            info = c.info
            if info.get("kind") == "node" or (
                info.get("log_to_driver", True) and (job is None or info.get("job_id") == job)
            ):
                self.shell.send(wid, msg)

    def _route_log_local(
        self, stream: str, name: str, pid: Any, text: str, job: str | None
    ) -> None:
        msg = ("log", stream, name, pid, text, job)
        for wid, c in self.node.clients.items():
            info = c.info
            if (
                info.get("kind") != "node"
                and info.get("log_to_driver", True)
                and (job is None or info.get("job_id") == job)
            ):
                self.shell.send(wid, msg)

    # ------------------------------------------------------------------ heartbeats
    def load(self) -> dict[str, Any]:
        node = self.node
        with node.lock:
            queued = sum(len(q) for q in node.ready.values())
            waiting = len(node.tasks) - queued
            load = {
                "available": node.resources.availability(),
                "queued": queued,
                "tasks": waiting + queued,
                "workers": len(node.workers),
                "clients": len(node.clients),
            }
            broken = node.pool.start_error
            if broken is not None:  # shown by `rtml status`
                load["worker_start_error"] = str(broken)[:2000]
            if node.cluster is not None:
                load.update(node.cluster.stats)  # forwarded, pulls, pulled/served bytes
            return load

    def _on_node_change(self, message: Any) -> None:
        """A node joined, changed or died (pushed by the control plane; reader thread)."""
        _kind, rec = message
        with self.node.lock:
            self.node.cluster.update_view([rec])
            self.shell.flush()

    def _on_connection(self, message: Any) -> None:
        """The control-plane connection was lost or is back (reader thread: just note it)."""
        kind, detail = message
        if kind == "disconnected":  # the one line an outage prints
            print(  # noqa: T201
                f"rtml node: {detail}; reconnecting in the background, tasks keep running",
                file=sys.stderr,
                flush=True,
            )
        self._kick.set()  # back: heartbeat and read the node list now, not in 0.5 s

    def _send_records(self) -> None:
        """Lineage of the tasks owned here and locations of large objects, in batches (what
        lineage reconstruction and `rtml memory` read from the control plane). A batch the
        control plane did not take is kept, and sent (in order) before newer records.

        Raises:
            ConnectionError, TimeoutError, RtmlSystemError: not all were taken (the rest is
                kept for the next round).
        """
        cluster = self.node.cluster
        with self.node.lock:
            fresh = cluster.take_records()  # lineage add, lineage drop, stored, freed
        for kept, new in zip(self._unsent, fresh, strict=True):
            kept.extend(new)
        node_id = self.parts.node_id
        gcs = self.gcs
        senders = (
            lambda add: gcs.add_tasks(
                [(s.task_id, pickle.dumps(s, protocol=5), s.owner) for s in add]
            ),
            gcs.remove_tasks,
            lambda stored: gcs.add_locations(
                [(oid, node_id, size, cluster.owner_of(oid)) for oid, size in stored]
            ),
            lambda freed: [gcs.remove_location(oid, node_id) for oid in freed],
        )
        for batch, send in zip(self._unsent, senders, strict=True):
            if not batch:
                continue
            try:
                send(batch)
            except ValueError as e:  # refused: never let a bad record stop the others
                print(f"rtml node: the control plane refused a record: {e}", file=sys.stderr)  # noqa: T201
            batch.clear()  # (any other error leaves it, and those after it, for next time)

    def _send_events(self, batch: list[dict[str, Any]]) -> None:
        """The event flusher's sink: events wait (bounded) while the control plane is away."""
        backlog = self._event_backlog
        backlog.extend(batch)
        del backlog[:-EVENT_BACKLOG]
        if not self.gcs.connected:
            return
        try:  # (short: stopping flushes once more, and must not wait long)
            self.gcs.call("add_events", backlog, timeout=STOP_CALL_S)
        except (ConnectionError, TimeoutError):
            return  # lost meanwhile: sent with the next batch
        except Exception:
            backlog.clear()  # refused: the flusher reports them dropped
            raise
        backlog.clear()

    def _refresh_view(self) -> None:
        nodes = self.gcs.list_nodes()
        with self.node.lock:
            self.node.cluster.update_view(nodes)
            self.shell.flush()

    def _heartbeat(self) -> None:
        load = self.load()
        if self.gcs.heartbeat(self.parts.node_id, load["available"], load):
            return
        rec = self.gcs.get_node(self.parts.node_id)
        if rec is None:  # a control plane that lost its state: join it again, same index
            print(  # noqa: T201
                f"rtml node: the control plane at {self.gcs.address} restarted without its "
                "state (the in-memory backend does not survive a restart; start it with "
                "--redis HOST:PORT for one that does): registering this node again; jobs, "
                "actors, lineage and object locations recorded before are lost",
                file=sys.stderr,
                flush=True,
            )
            rec = self.gcs.register_node(
                self.parts.node_id, {**self._info, "index": self.node_index}
            )
            if rec.index != self.node_index:
                print(  # noqa: T201
                    f"rtml node: registered again with index {rec.index}, not "
                    f"{self.node_index} (taken by a node that joined first); ids made here "
                    "may be taken for that node's",
                    file=sys.stderr,
                    flush=True,
                )
        elif not rec.alive or rec.index != self.node_index:
            self._fence(rec.death_cause or f"node index {rec.index} took its place")

    def _fence(self, cause: str) -> None:
        """This incarnation was declared dead (paused or cut off past the heartbeat timeout)
        while it kept running: the cluster has retried its tasks and restarted its actors
        elsewhere, so it must not go on. Stop taking work now; the serving process stops its
        workers and actors, drops their results and joins again as a new node."""
        if self.fenced is not None:
            return
        self.fenced = cause
        print(  # noqa: T201
            f"rtml node: the control plane declared this node dead ({cause}); stopping its "
            "workers and actors, dropping their results and joining again as a new node",
            file=sys.stderr,
            flush=True,
        )
        self.listener.close()  # no new drivers or peers for this incarnation
        self._stop.set()
        if self.wakeup is not None:
            self.wakeup.set()

    def _heartbeat_loop(self) -> None:
        while True:
            self._kick.wait(HEARTBEAT_S)
            self._kick.clear()
            if self._stop.is_set():
                return
            if not self.gcs.connected:
                continue  # the client reconnects by itself; records wait in the node
            try:
                self._heartbeat()
                self._refresh_view()
                self._send_records()
            except (ConnectionError, TimeoutError, OSError, exc.RtmlError) as e:
                lost = isinstance(e, ConnectionError) and not self.gcs.connected
                if not lost and not self._trouble:  # (an outage was reported already)
                    print(f"rtml node: heartbeat failed: {e}", file=sys.stderr, flush=True)  # noqa: T201
                self._trouble = True
            else:
                self._trouble = False


def serve(server: NodeServer, ready_fd: int | None) -> None:
    """Run until SIGTERM/SIGINT; report the port on ``ready_fd`` once serving."""
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server.wakeup = stop
    server.start()
    msg = f"RTML_NODE_READY {server.port} {server.parts.node_id}\n".encode()
    if ready_fd is not None:
        os.write(ready_fd, msg)
        os.close(ready_fd)
    else:
        sys.stdout.write(msg.decode())
        sys.stdout.flush()
    while True:
        while not stop.wait(0.5):
            pass
        t0 = time.monotonic()
        fenced = server.fenced
        server.stop()
        print(f"rtml node: stopped in {time.monotonic() - t0:.2f}s", file=sys.stderr)  # noqa: T201
        if fenced is None:
            return
        stop.clear()
        server = server.renewed()
        server.start()
        print(  # noqa: T201
            f"rtml node: joined again as node {server.parts.node_id} (index {server.node_index})",
            file=sys.stderr,
            flush=True,
        )
