"""Frame encoding and decoding across arbitrary read boundaries, and both channel ends."""

from __future__ import annotations

import socket

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rtml._transport import _channel
from rtml._transport._channel import BlockingChannel, FrameError, NodeChannel, _Decoder, encode

messages = st.lists(
    st.one_of(
        st.integers(),
        st.binary(max_size=3000),
        st.text(max_size=50),
        st.tuples(st.text(max_size=5), st.integers()),
    ),
    min_size=1,
    max_size=5,
)


class ChunkedSocket:
    """recv_into hands out the stream in the given chunk sizes."""

    def __init__(self, data: bytes, sizes: list[int]) -> None:
        self.data = data
        self.sizes = sizes
        self.pos = 0

    def recv_into(self, view: memoryview, nbytes: int = 0, flags: int = 0) -> int:
        if self.pos >= len(self.data):
            raise BlockingIOError
        size = self.sizes.pop(0) if self.sizes else len(view)
        chunk = self.data[self.pos : self.pos + min(size, len(view))]
        view[: len(chunk)] = chunk
        self.pos += len(chunk)
        return len(chunk)


@settings(max_examples=200, deadline=None)
@given(
    batches=st.lists(messages, min_size=1, max_size=6),
    sizes=st.lists(st.integers(min_value=1, max_value=5000), max_size=40),
)
def test_frames_survive_any_split(batches, sizes):
    stream = b"".join(encode(b) for b in batches)
    sock = ChunkedSocket(stream, list(sizes))
    dec = _Decoder()
    got = []
    while True:
        try:
            n = dec.read_from(sock)
        except BlockingIOError:
            break
        got.extend(dec.take(n))
    assert got == [m for b in batches for m in b]
    # the copying path (used from the signal handler) agrees
    dec2 = _Decoder()
    got2 = []
    for i in range(0, len(stream), 7):
        got2.extend(dec2.feed(stream[i : i + 7]))
    assert got2 == got


def test_large_frames_and_both_channel_ends():
    a, b = socket.socketpair()
    node_end, worker_end = NodeChannel(a), BlockingChannel(b)
    try:
        big = [("exec", b"x" * (3 * _channel._RECV_SIZE + 17))]
        worker_end.send([*big, ("done", 1)])
        got = []
        while len(got) < 2:
            msgs = node_end.receive()
            assert msgs is not None
            got.extend(msgs)
        assert got == [*big, ("done", 1)]
        node_end.queue(("reply", 7, list(range(1000))))
        while node_end.flush():
            pass
        assert worker_end.receive(timeout=5) == [("reply", 7, list(range(1000)))]
        assert worker_end.receive(timeout=0.01) == []
    finally:
        node_end.close()
        worker_end.close()
    assert node_end.receive() is None


def test_oversized_and_garbage_frames_are_errors():
    dec = _Decoder()
    with pytest.raises(FrameError):
        dec.feed(b"\xff\xff\xff\xff")
    dec = _Decoder()
    with pytest.raises(FrameError):
        dec.feed(b"\x03\x00\x00\x00abc")


def test_receive_spinning_returns_what_arrives_and_nothing_after_its_time():
    a, b = socket.socketpair()
    try:
        ch = BlockingChannel(b)
        assert ch.receive_spinning(0.001) == []  # nothing sent: gives up, does not block
        frame = encode([("exec", 1), ("exec", 2)])
        a.sendall(frame[:3])  # a partial frame is kept for the next read
        assert ch.receive_spinning(0.001) == []
        a.sendall(frame[3:])
        assert ch.receive_spinning(1.0) == [("exec", 1), ("exec", 2)]
        a.sendall(encode(["after"]))
        assert ch.receive() == ["after"]  # the blocking read still works afterwards
        assert b.getblocking()  # polling never switched the socket to non-blocking
        a.close()
        with pytest.raises(ConnectionError):
            ch.receive_spinning(1.0)
    finally:
        a.close()
        b.close()
