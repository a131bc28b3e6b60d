"""The control-plane server as a real process, with real clients: requests, publications,
authentication, hostile connections, SIGTERM, and a restart on Redis that loses nothing."""

from __future__ import annotations

import os
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

import pytest

from conftest import wait_for
from rtml._control import ControlClient, object_channel
from rtml._control._local_redis import LocalRedis
from rtml._transport._auth import connect, new_token
from rtml._transport._channel import encode
from rtml.exceptions import RtmlSystemError

HEARTBEAT_TIMEOUT = 0.5


class Gcs:
    """One ``python -m rtml._control`` child process; its stderr goes to a file."""

    def __init__(self, tmp_path, token: bytes, redis: str | None = None, port: int = 0) -> None:
        self.log_path = tmp_path / f"gcs-{time.monotonic_ns()}.log"
        r, w = os.pipe()
        args = [
            sys.executable,
            "-m",
            "rtml._control",
            "--port",
            str(port),
            "--token-hex",
            token.hex(),
            "--heartbeat-timeout",
            str(HEARTBEAT_TIMEOUT),
            "--ready-fd",
            str(w),
        ]
        if redis:
            args += ["--redis", redis]
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                args, pass_fds=(w,), stdin=subprocess.DEVNULL, stdout=log, stderr=log
            )
        os.close(w)
        try:
            ready, _, _ = select.select([r], [], [], 30)
            line = os.read(r, 64) if ready else b""
        finally:
            os.close(r)
        if not line:
            self.stop()
            raise RuntimeError(f"the GCS did not start: {self.log()}")
        self.port = int(line)
        self.address = f"127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise


@pytest.fixture
def token():
    return new_token()


@pytest.fixture
def gcs(tmp_path, token):
    server = Gcs(tmp_path, token)
    yield server
    assert server.stop() == 0, server.log()


@pytest.fixture
def client(gcs, token):
    c = ControlClient(gcs.address, token)
    yield c
    c.close()


def closed_by_peer(sock: socket.socket) -> bool:
    """True once the server has closed ``sock`` (waits up to 20 s)."""
    sock.settimeout(20)
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        pass
    return True


# ---------------------------------------------------------------------------- serving
def test_calls_replies_and_errors(client):
    assert client.ping() == "pong"
    node = client.register_node("n1", {"address": "127.0.0.1:1", "resources": {"CPU": 2}})
    assert node.index == 1
    assert [n.node_id for n in client.list_nodes()] == ["n1"]
    job = client.next_job_id()
    assert client.add_job(job, {"namespace": "ns", "driver_pid": os.getpid()}).job_id == job
    client.register_actor(1, {"namespace": "ns", "name": "a"})
    with pytest.raises(ValueError, match="already exists"):
        client.register_actor(2, {"namespace": "ns", "name": "a"})
    with pytest.raises(ValueError, match="unknown control-plane operation"):
        client.call("no_such_op")
    assert client.update_actor(1, "ALIVE", node_id="n1", pid=3).pid == 3
    assert client.add_tasks([(i, b"spec", "me") for i in range(100)]) == 100
    assert client.get_task(7).spec == b"spec"
    assert client.add_locations([(5, "n1", 10)]) == 1
    assert client.get_locations(5) == (10, ("n1",))
    assert client.add_events([{"task_id": 7, "attempt": 0, "state": "RUNNING", "time": 1.0}]) == 0
    assert client.get_events(7).events[0][1].state == "RUNNING"
    assert client.kv_put("ns", "k", b"v")
    assert client.kv_get("ns", "k") == b"v"
    client.put_function("f", b"blob")
    assert client.get_function("f") == b"blob"
    futures = [client.submit("ping") for _ in range(50)]  # many in flight on one connection
    assert [f.result(10) for f in futures] == ["pong"] * 50
    assert client.info()["durable"] is False


def test_publications_of_node_registration_and_death(gcs, client, token):
    seen: list = []
    client.subscribe("nodes", seen.append)
    with ControlClient(gcs.address, token) as node:
        node.register_node("n1", {"address": "127.0.0.1:9", "resources": {"CPU": 1}})
        assert node.heartbeat("n1", {"CPU": 1}, {"queued": 0})
        wait_for(lambda: [m[0] for m in seen] == ["node_added"], what="node_added")
        assert seen[0][1].node_id == "n1"
        # It stops heartbeating: the server declares it dead within the timeout.
        wait_for(lambda: len(seen) == 2, what="node_dead")
        kind, rec = seen[1]
        assert kind == "node_dead"
        assert rec.node_id == "n1"
        assert "heartbeat" in rec.death_cause
        assert not node.heartbeat("n1", {}, {}), "a dead node is told to register again"
    assert "n1 (index 1) is dead" in gcs.log()


def test_object_subscriptions_and_callbacks_that_call_back(client):
    client.register_node("n1", {"address": "127.0.0.1:9", "resources": {}})
    got: list = []
    errors: list = []

    def on_location(message):
        got.append(message)
        try:
            client.ping()
        except RuntimeError as e:
            errors.append(e)

    client.subscribe(object_channel(42), on_location)
    client.add_location(42, "n1", 100)
    client.add_location(43, "n1", 100)  # another object: not delivered here
    wait_for(lambda: got and errors, what="the publication")
    assert got[0][0] == "location_added"
    assert got[0][1].nodes == ("n1",)
    assert "subscription callback" in str(errors[0])
    client.unsubscribe(object_channel(42))
    client.remove_location(42, "n1")
    assert client.ping() == "pong"
    assert len(got) == 1


# ---------------------------------------------------------------------------- hostile peers
def test_a_wrong_token_is_refused_and_others_keep_working(gcs, client):
    with pytest.raises(ConnectionError):
        ControlClient(gcs.address, new_token(), timeout=5)
    assert client.ping() == "pong"
    wait_for(lambda: "refused" in gcs.log(), what="the refusal to be logged")


def test_a_silent_peer_does_not_stall_the_server(gcs, token):
    silent = socket.create_connection(("127.0.0.1", gcs.port))
    try:
        with ControlClient(gcs.address, token) as c:
            assert c.ping() == "pong"
    finally:
        silent.close()


@pytest.mark.parametrize(
    "payload",
    [
        b"garbage that is no frame at all",
        struct.pack("<I", 100 << 20) + b"x" * 1000,  # announces a 100 MiB frame: over the limit
        struct.pack("<I", 5) + b"abcde",  # a frame that does not unpickle
        encode([("hello", "not a request")]),  # a valid frame, not a request
        encode(["req"]),
    ],
    ids=["garbage", "oversized", "undecodable", "not-a-request", "short"],
)
def test_a_bad_frame_closes_only_that_connection(gcs, client, token, payload):
    seen: list = []
    client.subscribe("nodes", seen.append)
    bad = connect(gcs.address, token)
    try:  # the bad connection subscribes too: once closed it must be dropped, not sent to
        bad.sendall(encode([("req", 1, "subscribe", ("nodes",))]))
        bad.sendall(payload)
        assert closed_by_peer(bad)
    finally:
        bad.close()
    assert client.ping() == "pong"
    client.register_node("n1", {"address": "127.0.0.1:1", "resources": {}})
    wait_for(lambda: seen, what="the publication to the good subscriber")
    assert client.info()["subscribers"] == 1
    assert "closing" in gcs.log()


# ---------------------------------------------------------------------------- stopping
def test_sigterm_stops_the_server_and_clients_notice(tmp_path, token):
    server = Gcs(tmp_path, token)
    lost = threading.Event()
    c = ControlClient(server.address, token, on_disconnect=lambda e: lost.set())
    try:
        assert c.ping() == "pong"
        assert server.stop(signal.SIGTERM) == 0
        assert lost.wait(20)
        with pytest.raises(ConnectionError):
            c.call("ping", timeout=0.5)  # (it waits for a reconnection up to its timeout)
        assert not c.connected
    finally:
        c.close()
    assert "stopped" in server.log()


def test_a_call_to_a_stalled_server_times_out(gcs, client):
    os.kill(gcs.proc.pid, signal.SIGSTOP)
    try:
        with pytest.raises(TimeoutError):
            client.call("ping", timeout=0.2)
    finally:
        os.kill(gcs.proc.pid, signal.SIGCONT)
    assert client.ping() == "pong"


def test_a_bad_redis_address_fails_fast(tmp_path, token):
    with pytest.raises(RuntimeError, match="did not start"):
        Gcs(tmp_path, token, redis="127.0.0.1:1")


# ---------------------------------------------------------------------------- redis restart
def test_a_restarted_gcs_on_redis_has_the_old_state(tmp_path, token):
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed: `make test` installs it")
    with LocalRedis(str(tmp_path)) as redis:
        first = Gcs(tmp_path, token, redis=redis.address)
        try:
            with ControlClient(first.address, token) as c:
                c.register_node("n1", {"address": "127.0.0.1:1", "resources": {"CPU": 4}})
                job = c.next_job_id()
                c.add_job(job, {"namespace": "ns"})
                c.register_actor(9, {"namespace": "ns", "name": "keeper"})
                c.put_function("f", b"fn")
                c.add_tasks([(1, b"spec", "driver")])
                c.add_location(77, "n1", 1234)
                c.kv_put("ns", "k", b"v")
                assert c.info()["durable"] is True
        finally:
            first.stop(signal.SIGKILL)  # no goodbye: the process just dies
        second = Gcs(tmp_path, token, redis=redis.address)
        try:
            with ControlClient(second.address, token) as c:
                assert [(n.node_id, n.state) for n in c.list_nodes()] == [("n1", "ALIVE")]
                assert c.next_job_id() == job + 1
                assert [j.namespace for j in c.list_jobs()] == ["ns"]
                assert c.lookup_actor("ns", "keeper").actor_id == 9
                assert c.get_function("f") == b"fn"
                assert c.get_task(1).owner == "driver"
                assert c.get_locations(77) == (1234, ("n1",))
                assert c.kv_get("ns", "k") == b"v"
                assert c.register_node("n2", {"address": "x:2", "resources": {}}).index == 2
        finally:
            assert second.stop() == 0


def test_system_errors_are_reported_as_such(tmp_path, token):
    """The storage going away is not the caller's fault: RtmlSystemError, server still up."""
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed: `make test` installs it")
    redis = LocalRedis(str(tmp_path)).start()
    server = Gcs(tmp_path, token, redis=redis.address)
    try:
        with ControlClient(server.address, token) as c:
            c.kv_put("ns", "k", b"v")
            redis.stop(kill=True)
            with pytest.raises(RtmlSystemError, match="Redis"):
                c.kv_get("ns", "k")
            assert c.ping() == "pong"
    finally:
        assert server.stop() == 0
        redis.stop()
