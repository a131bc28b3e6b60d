"""``ControlClient`` reconnecting: servers in this process (threads, sockets, no processes),
stopped and started again on the same port over the same storage, as a restarted GCS would.

A scripted fake server (it authenticates, reads requests, never answers, hangs up) puts
requests in flight at the moment the connection breaks, to check which are sent again.
"""

from __future__ import annotations

import concurrent.futures
import socket
import threading
import time

import pytest

from conftest import wait_for
from rtml._control import ControlPlane, MemoryStorage
from rtml._control._client import CONNECTION, ControlClient
from rtml._control._server import ControlServer
from rtml._transport import BlockingChannel
from rtml._transport._auth import new_token, serve_handshake

NODE = {"address": "127.0.0.1:1", "resources": {"CPU": 1}}


class Server:
    """A ``ControlServer`` on a thread of this process."""

    def __init__(self, plane: ControlPlane, token: bytes, port: int = 0) -> None:
        self.plane = plane
        self.server = ControlServer(plane, token, port=port, tick_interval=0.05)
        self.port = self.server.port
        self.address = self.server.address
        self.thread = threading.Thread(target=self.server.serve_forever, name="test-gcs")
        self.thread.start()
        self.stopped = False

    def stop(self) -> None:
        """Every connection closes, as if the process died."""
        if self.stopped:
            return
        self.stopped = True
        self.server.stop()
        self.thread.join()
        self.server.close()


@pytest.fixture
def token():
    return new_token()


@pytest.fixture
def storage():
    return MemoryStorage()  # kept across "restarts": the durable case


@pytest.fixture
def server(storage, token):
    s = Server(ControlPlane(storage, heartbeat_timeout=10), token)
    yield s
    s.stop()


def restart(server: Server, storage, token) -> Server:
    """Stop ``server`` and start another on its port over the same storage."""
    server.stop()
    return Server(ControlPlane(storage, heartbeat_timeout=10), token, server.port)


class Seen:
    """Messages of a channel, collected on the client's connection thread."""

    def __init__(self) -> None:
        self.items: list = []

    def __call__(self, message) -> None:
        self.items.append(message)

    def kinds(self) -> list:
        return [m[0] for m in self.items]


def test_a_call_made_while_down_is_answered_once_the_server_is_back(server, storage, token):
    c = ControlClient(server.address, token)
    seen, conn = Seen(), Seen()
    try:
        c.subscribe("nodes", seen)
        c.subscribe(CONNECTION, conn)
        server.stop()
        wait_for(lambda: not c.connected, what="the client to notice")
        assert conn.kinds() == ["disconnected"]
        fut = c.submit("register_node", "n1", NODE)  # waits for the server
        server = Server(ControlPlane(storage, heartbeat_timeout=10), token, server.port)
        assert fut.result(10).index == 1
        wait_for(lambda: conn.kinds() == ["disconnected", "reconnected"], what="reconnected")
        assert 0 < conn.items[1][1] < 10, "how long it was down"
        assert c.connected
        assert c.reconnects == 1
        wait_for(lambda: seen.kinds() == ["node_added"], what="the renewed subscription")
        with ControlClient(server.address, token) as other:
            other.register_node("n2", NODE)
        wait_for(lambda: seen.kinds() == ["node_added", "node_added"], what="publication")
        assert c.get_node("n2").index == 2
    finally:
        c.close()
        server.stop()


def test_a_call_that_outlasts_its_timeout_while_down_names_the_address(server, token):
    lost: list = []
    c = ControlClient(server.address, token, on_disconnect=lost.append)
    try:
        server.stop()
        wait_for(lambda: not c.connected, what="the client to notice")
        t0 = time.monotonic()
        with pytest.raises(ConnectionError, match=f"{server.address} is unreachable"):
            c.call("ping", timeout=0.3)
        assert time.monotonic() - t0 < 2
        assert len(lost) == 1
        assert isinstance(lost[0], ConnectionError)
    finally:
        c.close()


def test_close_while_reconnecting_is_prompt_and_fails_what_waits(server, token):
    c = ControlClient(server.address, token)
    server.stop()
    wait_for(lambda: not c.connected, what="the client to notice")
    fut = c.submit("ping")
    t0 = time.monotonic()
    c.close()
    assert time.monotonic() - t0 < 1
    assert not c._thread.is_alive()
    with pytest.raises(ConnectionError, match="closed"):
        fut.result(1)
    with pytest.raises(ConnectionError, match="closed"):
        c.ping()


def test_several_restarts_in_a_row(server, storage, token):
    c = ControlClient(server.address, token)
    try:
        c.register_node("n1", NODE)
        for i in range(3):
            server = restart(server, storage, token)
            assert c.heartbeat("n1", {"CPU": 1}, {}), f"restart {i}: recovered and heartbeating"
        assert c.reconnects == 3
        assert [n.index for n in c.list_nodes()] == [1]
    finally:
        c.close()
        server.stop()


def test_a_node_registering_again_with_a_plane_that_lost_its_state_keeps_its_index(server, token):
    c = ControlClient(server.address, token)
    try:
        c.register_node("head", NODE)
        c.register_node("side", NODE)
        server.stop()
        server = Server(ControlPlane(MemoryStorage(), heartbeat_timeout=10), token, server.port)
        assert c.get_node("side") is None, "the in-memory state is gone"
        assert c.register_node("side", {**NODE, "index": 2}).index == 2
        assert c.register_node("head", {**NODE, "index": 1}).index == 1
        assert c.register_node("new", NODE).index == 3, "the counter moved past them"
        assert c.register_node("late", {**NODE, "index": 1}).index == 4, "1 is taken"
        assert "index" not in c.get_node("side").extra
        server.plane.validate()
    finally:
        c.close()
        server.stop()


# ---------------------------------------------------------------------------- in flight
class HangUp:
    """Authenticates one client, reads ``n`` requests without answering, stops listening and
    hangs up: those requests were in flight when the connection broke."""

    def __init__(self, token: bytes, n: int) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"
        self.token = token
        self.n = n
        self.received: list = []
        self.thread = threading.Thread(target=self._run, name="test-hangup")
        self.thread.start()

    def _run(self) -> None:
        sock, _ = self.listener.accept()
        serve_handshake(sock, self.token)
        ch = BlockingChannel(sock)
        deadline = time.monotonic() + 10
        while len(self.received) < self.n and time.monotonic() < deadline:
            self.received.extend(m[2] for m in ch.receive(10) if m[0] == "req")
        self.listener.close()
        sock.shutdown(socket.SHUT_RDWR)
        ch.close()


def test_requests_in_flight_are_sent_again_only_if_that_is_safe(storage, token):
    fake = HangUp(token, 4)
    c = ControlClient(fake.address, token)
    try:
        applied = ControlPlane(storage)  # what the dying server had applied before it died
        applied.handle("s", "register_actor", (5, {"namespace": "ns", "name": "a"}))
        job = applied.handle("s", "next_job_id", ())[0]
        applied.handle("s", "add_job", (job, {"namespace": "ns"}))
        futs = {
            op: c.submit(op, *args)
            for op, args in [
                ("kv_put", ("ns", "k", b"v")),
                ("register_actor", (5, {"namespace": "ns", "name": "a"})),
                ("add_job", (job, {"namespace": "ns"})),
                ("get_actor", (5,)),
            ]
        }
        fake.thread.join(10)
        assert fake.received == list(futs)
        with pytest.raises(ConnectionError, match="may or may not have been applied"):
            futs["kv_put"].result(10)
        server = Server(ControlPlane(storage, heartbeat_timeout=10), token, fake.port)
        try:
            rec = futs["register_actor"].result(10)
            assert (rec.actor_id, rec.name) == (5, "a"), "a refused replay: what it made"
            assert futs["add_job"].result(10).job_id == job
            assert futs["get_actor"].result(10).actor_id == 5
            with pytest.raises(ValueError, match="already registered"):
                c.register_actor(5, {"namespace": "ns"})  # not a replay: refused as ever
            assert c.kv_put("ns", "k", b"v"), "not applied: the caller may try again"
        finally:
            server.stop()
    finally:
        c.close()
        fake.listener.close()


def test_a_call_from_a_connection_callback_raises(server, storage, token):
    c = ControlClient(server.address, token)
    errors: list = []

    def on_connection(message) -> None:
        try:
            c.ping()
        except RuntimeError as e:
            errors.append(e)

    try:
        c.subscribe(CONNECTION, on_connection)
        server = restart(server, storage, token)
        wait_for(lambda: len(errors) == 2, what="both callbacks")
        assert c.ping() == "pong"
        fut = c.submit("ping")
        assert fut.result(10) == "pong"
    finally:
        c.close()
        server.stop()
    assert isinstance(fut, concurrent.futures.Future)
