"""Property-based fuzzing of what a node and the control plane accept from an authenticated
peer: random bytes, frames with random payloads, mutated frames and well-framed pickles of
random messages. Whatever one connection sends, the server closes at most that connection and
keeps serving everyone else: after every example a second, well-behaved client is served."""

from __future__ import annotations

import pickle
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rtml
from rtml._control._client import ControlClient
from rtml._transport import _auth
from rtml._transport._channel import encode
from rtml.testing import Cluster

NODE_TAGS = [
    "done", "refs", "revoked", "submit", "hello", "item", "put", "get", "wait", "unget",
    "cancel", "stream_next", "stream_drop", "log", "resources", "client_hello", "nodes",
    "fetch", "pull", "state", "read_log", "actor_call", "actor_create", "req", "raw",
]  # fmt: skip

leaves = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True)
    | st.text(max_size=16)
    | st.binary(max_size=64)
)
values = st.recursive(
    leaves,
    lambda c: (
        st.lists(c, max_size=4).map(tuple)
        | st.lists(c, max_size=4)
        | st.dictionaries(st.text(max_size=6), c, max_size=3)
    ),
    max_leaves=12,
)
messages = st.tuples(st.sampled_from(NODE_TAGS) | st.text(max_size=8), values).flatmap(
    lambda tv: st.lists(values, max_size=5).map(lambda rest: (tv[0], *rest))
)
requests = st.tuples(st.just("req"), st.integers(0, 2**64), st.text(max_size=24), values)


def _mutate(frame: bytes, data: st.DataObject) -> bytes:
    b = bytearray(frame)
    for _ in range(data.draw(st.integers(1, 8))):
        i = data.draw(st.integers(0, len(b) - 1))
        b[i] = data.draw(st.integers(0, 255))
    return bytes(b)


@st.composite
def frames(draw, msgs: st.SearchStrategy) -> bytes:
    kind = draw(st.sampled_from(["bytes", "payload", "pickle", "mutated", "header"]))
    if kind == "bytes":
        return draw(st.binary(min_size=1, max_size=512))
    if kind == "payload":
        body = draw(st.binary(max_size=256))
        raw = draw(st.booleans())
        return struct.pack("<I", len(body) | (1 << 31 if raw else 0)) + body
    if kind == "header":  # lengths at and beyond the edges, raw flag or not
        return struct.pack("<I", draw(st.integers(0, 2**32 - 1))) + draw(st.binary(max_size=16))
    frame = encode(draw(st.lists(msgs, min_size=1, max_size=3)))
    if kind == "pickle":
        return frame
    return _mutate(frame, draw(st.data()))


@rtml.remote
def plus_one(x):
    return x + 1


@pytest.fixture(scope="module")
def cluster():
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    try:
        c.connect()
        assert rtml.get(plus_one.remote(1), timeout=60) == 2
        yield c
    finally:
        c.shutdown()


def _send(address: str, token: bytes, frame: bytes) -> None:
    """An authenticated peer sends ``frame`` and goes away (or is sent away)."""
    sock = _auth.connect(address, token)
    try:
        sock.settimeout(0.2)
        try:
            sock.sendall(frame)
            sock.recv(1 << 16)  # whatever comes back first, or the close
        except (TimeoutError, OSError):
            pass
    finally:
        sock.close()


FUZZ = settings(
    max_examples=60,
    deadline=3000,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    database=None,
)


@FUZZ
@given(frame=frames(messages))
def test_node_survives_any_frame_from_an_authenticated_peer(cluster, frame):
    _send(cluster.head_node.address, cluster.token, frame)
    assert rtml.get(plus_one.remote(41), timeout=30) == 42
    assert cluster.head_node.alive()


@pytest.fixture(scope="module")
def gcs(cluster):
    with ControlClient(cluster.address, cluster.token) as client:
        yield client


@FUZZ
@given(frame=frames(requests | messages))
def test_control_plane_survives_any_frame_from_an_authenticated_peer(cluster, gcs, frame):
    _send(cluster.address, cluster.token, frame)
    assert any(n.alive for n in gcs.list_nodes())
    assert cluster.control_plane.proc.poll() is None


@pytest.mark.parametrize("target", ["node", "control plane"])
def test_an_undecodable_frame_closes_only_that_connection(cluster, gcs, target):
    address = cluster.head_node.address if target == "node" else cluster.address
    bad = _auth.connect(address, cluster.token)
    good = _auth.connect(address, cluster.token)  # a bystander on the same server
    try:
        bad.settimeout(10)
        body = b"\x80\x05not a pickle"
        bad.sendall(struct.pack("<I", len(body)) + body)
        assert bad.recv(1 << 16) == b""  # closed by the server
        good.settimeout(0.3)
        with pytest.raises(TimeoutError):
            good.recv(1)  # still open, nothing was said to it
    finally:
        bad.close()
        good.close()
    assert rtml.get(plus_one.remote(1), timeout=30) == 2
    assert any(n.alive for n in gcs.list_nodes())


def test_frames_of_random_messages_are_well_formed():
    """The strategies themselves: a pickle frame decodes back to what was drawn."""
    from rtml._transport._channel import _Decoder

    msg = ("req", 1, "op", {"k": (1, b"x")})
    assert _Decoder().feed(encode([msg])) == [msg]
    assert pickle.loads(encode([msg])[4:]) == [msg]
