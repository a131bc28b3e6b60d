"""A driver connected to a running cluster: ``rtml.init(address="auto" | "HOST:PORT")``.

::

    init(address) ─▶ control plane (HOST:PORT, token): a job id, the list of nodes
                 ─▶ the node on this machine (head first): TCP + token handshake, "client_hello"
                 ─▶ RemoteClient: the worker's client protocol, in threaded mode
    user thread ──"submit"/"get"/"put"/...──▶ node      reader thread ◀──"reply"/"log"── node

The driver is a client process of its node, like a worker that never runs tasks: the node owns
its objects, counts its references and releases them all when the connection closes. Large
values go through the node's shared memory directly (the driver runs on the node's machine).

The control plane is needed only at ``init`` and ``shutdown``: its client reconnects by itself
if the control plane restarts, ``init`` waits for it (up to ``timeout`` per request) and
``shutdown`` waits at most ``FINISH_JOB_S``; tasks never go through it.
"""

from __future__ import annotations

import os
import selectors
import socket
import threading
import time
from typing import Any

from rtml import exceptions as exc
from rtml._runtime import _payload
from rtml._runtime._refs import counter
from rtml._runtime._session import Session
from rtml._transport import BlockingChannel
from rtml._transport._auth import connect, find_token, state_dir
from rtml._worker._client import WorkerClient

MAX_FRAME = 1 << 30
REF_FLUSH_S = 0.1  # ref releases made while the driver is otherwise idle reach the node by then
FINISH_JOB_S = 1.0  # shutdown waits this long at most for the control plane (it may be away)
CURRENT = "current_cluster"


def resolve_address(address: str) -> str:
    """``"auto"``: ``$RTML_ADDRESS``, else the cluster this user started last on this machine."""
    if address != "auto":
        return address
    env = os.environ.get("RTML_ADDRESS")
    if env:
        return env
    try:
        with open(os.path.join(state_dir(), CURRENT)) as f:
            found = f.read().strip()
    except FileNotFoundError:
        found = ""
    if not found:
        raise ConnectionError(
            "address='auto' found no running cluster on this machine: start one with "
            "`rtml start --head`, or pass address='HOST:PORT'"
        )
    return found


def _pick_node(nodes: list[Any]) -> Any:
    local = {"127.0.0.1", "localhost", socket.gethostname()}
    try:
        local.add(socket.gethostbyname(socket.gethostname()))
    except OSError:
        pass
    here = [n for n in nodes if n.alive and n.extra.get("host") in local]
    if not here:
        raise ConnectionError(
            "no live node of this cluster runs on this machine; a driver must run beside a "
            "node (start one with `rtml start --address HEAD:PORT`)"
        )
    here.sort(key=lambda n: (not n.extra.get("is_head"), n.index))
    return here[0]


class _Connection:
    """The driver's end of its node connection: locked sends (pending ref updates first) and a
    reader thread for replies and worker output."""

    def __init__(self, sock: socket.socket) -> None:
        self.chan = BlockingChannel(sock, MAX_FRAME)
        self.sock = sock
        self.send_lock = threading.Lock()
        self.in_user = False
        self.client: RemoteClient | None = None
        self.closing = False
        self.thread = threading.Thread(target=self._read, name="rtml-driver-reader", daemon=True)

    def send(self, msgs: list[Any]) -> None:
        with self.send_lock:
            client = self.client
            if client is not None:
                if client.lost is not None:
                    raise client.lost
                rm = client.ref_message()
                if rm is not None:
                    msgs.insert(0, rm)
            try:
                self.chan.send(msgs)
            except OSError as e:
                raise exc.RtmlSystemError(f"lost the connection to the rtml node: {e}") from None

    def request_sync(self, msg: tuple, timeout: float) -> Any:
        """One request before the reader thread runs (the hello)."""
        self.chan.send([msg])
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("the rtml node did not answer the hello")
            for m in self.chan.receive(remaining):
                if m[0] == "reply":
                    return m[2]

    def _read(self) -> None:
        client = self.client
        assert client is not None
        sel = selectors.DefaultSelector()
        sel.register(self.sock, selectors.EVENT_READ)
        error: BaseException | None = None
        try:
            while not self.closing:
                if not sel.select(REF_FLUSH_S):
                    if counter.acquired or counter.released:
                        self.send([])  # carries the pending ref updates
                    continue
                for m in self.chan.receive():
                    tag = m[0]
                    if tag == "reply":
                        client.on_reply(m[1], m[2])
                    elif tag == "log":
                        from rtml._runtime._runtime import print_log

                        print_log(m[1], m[2], m[3], m[4])
                    elif tag == "exit":
                        raise ConnectionError("the rtml node is shutting down")
        except (ConnectionError, OSError, exc.RtmlSystemError) as e:
            error = e
        finally:
            sel.close()
        if not self.closing:
            client.on_lost(
                exc.RtmlSystemError(
                    f"lost the connection to the rtml node ({error}); call rtml.shutdown() and "
                    "rtml.init(address=...) again once the cluster is back"
                )
            )

    def close(self) -> None:
        self.closing = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        if self.thread.is_alive() and threading.current_thread() is not self.thread:
            self.thread.join(2)
        self.chan.close()


class RemoteClient(WorkerClient):
    """The worker's client protocol spoken by a driver (always in threaded mode)."""

    def __init__(self, conn: _Connection, proc: int, node_info: dict[str, Any]) -> None:
        super().__init__(conn, proc, node_info["session"], node_info["shm_dir"])
        self.node_id = node_info["node_id"]
        self.threaded = True


class RemoteRuntime(Session):
    """Same surface as the embedded Runtime (start, shutdown, client, session, node_id)."""

    def __init__(
        self,
        address: str,
        token: str | bytes | None,
        namespace: str | None,
        log_to_driver: bool,
        env_vars: dict[str, str] | None,
        timeout: float = 10.0,
    ) -> None:
        from rtml._control._client import ControlClient

        self.address = resolve_address(address)
        self.token = find_token(self.address, token)
        super().__init__()
        self.gcs = ControlClient(self.address, self.token, timeout=timeout)
        conn: _Connection | None = None
        try:
            self.job_id = format(self.gcs.next_job_id(), "08x")
            self.namespace = namespace or f"anon-{self.job_id}"
            nodes = self.gcs.list_nodes()
            node = _pick_node(nodes)
            self.dashboard_url = next(
                (n.extra.get("dashboard_url") for n in nodes if n.alive and n.extra.get("is_head")),
                None,
            )
            self.node_address = node.address
            conn = self.conn = _Connection(connect(self.node_address, self.token, timeout))
            hello = {
                "pid": os.getpid(),
                "job_id": self.job_id,
                "namespace": self.namespace,
                "log_to_driver": log_to_driver,
            }
            info = conn.request_sync(("client_hello", 0, hello), timeout)
        except BaseException:
            if conn is not None:
                conn.chan.close()
            self.gcs.close()
            raise
        self.node_info = info
        self.session = info["session"]
        self.node_id = info["node_id"]
        self.client = RemoteClient(self.conn, info["proc"], info)
        self.client.job_id = self.job_id
        self.client.namespace = self.namespace
        self.client.job = (self.job_id, self.namespace)
        self.client.job_env = dict(env_vars) if env_vars else None
        self.conn.client = self.client
        self.gcs.add_job(
            int(self.job_id, 16),
            {
                "driver_pid": os.getpid(),
                "namespace": self.namespace,
                "node": self.node_id,
                "start_time": time.time(),
            },
        )

    def _start_parts(self) -> None:
        _payload.spill_dir = self.node_info["spill_dir"]
        self.conn.thread.start()

    def _stop_parts(self) -> None:
        try:
            self.conn.close()  # the node releases every ref this driver held
            try:  # a control plane restarting is waited for briefly, never long
                self.gcs.call("finish_job", int(self.job_id, 16), timeout=FINISH_JOB_S)
            except (ConnectionError, TimeoutError, ValueError, exc.RtmlError):
                pass  # (the job stays RUNNING in its table)
        finally:
            self.gcs.close()
