"""Length-prefixed frames of pickled message lists over a stream socket.

::

    sender: queue(msg) … queue(msg) ─flush─▶ [u32 length][pickle([msg, msg, …])] ─▶ socket
    receiver: recv() ─▶ buffer ─▶ every complete frame ─▶ list of messages, in order

Many messages queued before one flush travel as one frame and one write (coalescing); a single
message is flushed at once, never held back waiting for company. The node side never blocks on
a write (``NodeChannel``: non-blocking, the remainder waits for the socket to become writable),
so a node can never deadlock against a worker that is itself blocked writing to the node. Worker
and driver-client sides use ``BlockingChannel``.

Frames are trusted pickles: channels only ever connect processes of one runtime (socketpairs
created by the node, or connections that have proven the cluster token first).
"""

from __future__ import annotations

import os
import pickle
import socket
import ssl
import struct
import time
from typing import Any

_HEADER = struct.Struct("<I")
_REQ = struct.Struct("<Q")
RAW = 1 << 31  # header flag: a raw frame, [u64 request id][bytes], decoded as ("raw", id, bytes)
MAX_FRAME = RAW - 1  # frames are bounded; a larger one means a corrupt or hostile peer
_RECV_SIZE = 1 << 16  # larger reads make glibc mmap/munmap a fresh buffer per call (0001)
_BIG = 1 << 18  # raw frames above this are received into a buffer of their own
# ... allocated whole when the header arrives, so only up to this size (object chunks are 8 MiB):
# a larger one grows with the bytes that actually come, or a 12-byte header could make the
# receiver allocate 2 GiB (found by bench/fuzz.py).
_BIG_MAX = 64 << 20
_DONTWAIT = socket.MSG_DONTWAIT
_TLS_RECORD = 1 << 14  # TLS hands over at most one record (16 KiB) per read
# A non-blocking TLS socket says "not now" with these rather than BlockingIOError.
_AGAIN = (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError)


def _pending(sock: socket.socket) -> int:
    """Bytes TLS already decrypted but not handed over (the selector will not report them)."""
    return sock.pending() if isinstance(sock, ssl.SSLSocket) else 0


class FrameError(ConnectionError):
    """The peer sent something that is not a valid frame; the connection is unusable."""


def encode(msgs: list[Any]) -> bytes:
    payload = pickle.dumps(msgs, protocol=5)
    return _HEADER.pack(len(payload)) + payload


def raw_header(req: int, size: int) -> bytes:
    """Header of a raw frame carrying ``size`` bytes that answer request ``req`` (the bytes
    follow as they are: no pickling, no copy into the frame)."""
    return _HEADER.pack(RAW | (_REQ.size + size)) + _REQ.pack(req)


class _Decoder:
    """Frames from a byte stream. Reads land in one reused buffer (``recv_into``); complete
    frames are decoded straight from it, and only a partial frame's bytes are kept."""

    __slots__ = ("_big", "_big_filled", "_big_req", "_buf", "_max", "_rbuf", "_rview")

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        self._max = max_frame
        self._buf = bytearray()  # bytes of an incomplete frame, carried to the next read
        self._rbuf = bytearray(_RECV_SIZE)
        self._rview = memoryview(self._rbuf)
        # A large raw frame (an object chunk) is received straight into its own buffer.
        self._big: bytearray | None = None
        self._big_filled = 0
        self._big_req = 0

    def read_from(self, sock: socket.socket, flags: int = 0) -> int:
        """One ``recv_into`` the reused buffer (or the large frame being received); returns
        the byte count (0: peer closed)."""
        big = self._big
        if big is not None:
            n = sock.recv_into(memoryview(big)[self._big_filled :], 0, flags)
            self._big_filled += n
            return n
        n = sock.recv_into(self._rview, 0, flags)
        if n and self._buf:
            self._buf += self._rview[:n]
        return n

    def take(self, n: int) -> list[Any]:
        """Messages of every complete frame, after a ``read_from`` that returned ``n``."""
        big = self._big
        if big is not None:
            if self._big_filled < len(big):
                return []
            self._big = None
            return [("raw", self._big_req, big)]
        if self._buf:
            return self._frames(self._buf, len(self._buf), carry=True)
        return self._frames(self._rview, n, carry=False)

    def feed(self, data: bytes) -> list[Any]:
        """Add received bytes; return the messages of every complete frame, in order."""
        self._buf += data
        return self._frames(self._buf, len(self._buf), carry=True)

    def _frames(self, buf: Any, n: int, carry: bool) -> list[Any]:
        out: list[Any] = []
        pos = 0
        while n - pos >= 4:
            (word,) = _HEADER.unpack_from(buf, pos)
            length = word & MAX_FRAME
            if length >= self._max:
                raise FrameError(f"frame of {length} bytes exceeds the limit of {self._max}")
            end = pos + 4 + length
            if end > n:
                if word & RAW and _BIG < length <= _BIG_MAX and n - pos >= 4 + _REQ.size:
                    self._start_big(buf, pos, n, length, carry)
                    return out
                break
            if word & RAW:
                if length < _REQ.size:
                    raise FrameError("raw frame too short")
                (req,) = _REQ.unpack_from(buf, pos + 4)
                out.append(("raw", req, bytes(buf[pos + 4 + _REQ.size : end])))
                pos = end
                continue
            try:
                out.extend(pickle.loads(buf[pos + 4 : end]))
            except Exception as exc:
                raise FrameError(f"undecodable frame: {exc}") from exc
            pos = end
        if carry:
            if pos:
                del self._buf[:pos]
        elif pos < n:
            self._buf += buf[pos:n]  # keep the incomplete frame for the next read
        return out

    def _start_big(self, buf: Any, pos: int, n: int, length: int, carry: bool) -> None:
        """An incomplete large raw frame: what arrived of it moves into a buffer of its own
        size, and the following reads land there directly (no 64 KiB steps, no copies)."""
        (self._big_req,) = _REQ.unpack_from(buf, pos + 4)
        body = pos + 4 + _REQ.size
        big = self._big = bytearray(length - _REQ.size)
        have = n - body
        big[:have] = buf[body:n]
        self._big_filled = have
        if carry:
            del self._buf[:n]


class NodeChannel:
    """The node's end of a connection: queue messages, flush without ever blocking."""

    __slots__ = (
        "_decoder",
        "_out",
        "_pending",
        "_sent",
        "borrowed",
        "closed",
        "fileno",
        "sock",
        "tls",
    )

    def __init__(self, sock: socket.socket, max_frame: int = MAX_FRAME) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.fileno = sock.fileno()
        self._out: list[Any] = []
        self._pending: list[bytes] = []  # frames not fully written, oldest first
        self._sent = 0  # bytes of _pending[0] already written
        self._decoder = _Decoder(max_frame)
        self.closed = False
        self.borrowed = False  # read by a thread other than the selector's (see NodeShell)
        self.tls = isinstance(sock, ssl.SSLSocket)

    def queue(self, msg: Any) -> None:
        self._out.append(msg)

    def queue_raw(self, req: int, data: bytes) -> None:
        """Queue a raw frame (after the messages queued before it)."""
        if self._out:
            self._pending.append(encode(self._out))
            self._out = []
        self._pending.append(raw_header(req, len(data)))
        if data:
            self._pending.append(data)

    @property
    def has_queued(self) -> bool:
        return bool(self._out)

    @property
    def n_queued(self) -> int:
        return len(self._out)

    @property
    def wants_write(self) -> bool:
        return bool(self._pending)

    def flush(self) -> bool:
        """Send what is queued; return True if bytes remain for when the socket is writable.

        A partly written frame is resumed from an offset (never re-sliced: a large reply, such
        as a chunk of an object being pulled, would otherwise be copied once per send)."""
        if self.closed:
            self._out.clear()
            return False
        pending = self._pending
        if self._out:
            pending.append(encode(self._out))
            self._out = []
        sock = self.sock
        if not pending:
            return False
        while pending:
            head = pending[0]
            try:
                sent = sock.send(memoryview(head)[self._sent :] if self._sent else head)
            except _AGAIN:
                return True
            except OSError:
                pending.clear()
                self._sent = 0
                return False  # the reader side will see the close
            self._sent += sent
            if self._sent < len(head):
                return True
            pending.pop(0)
            self._sent = 0
        return False

    def receive(self) -> list[Any] | None:
        """Read what is available; return messages, or None if the peer closed."""
        dec = self._decoder
        out: list[Any] = []
        got = False
        while True:
            try:
                n = dec.read_from(self.sock)
            except _AGAIN:
                break
            except OSError:
                return None
            if not n:
                if got:
                    break
                return None
            got = True
            out.extend(dec.take(n))
            if self.tls:  # a full record: more may follow, and the selector may not say so
                if n < _TLS_RECORD and not _pending(self.sock):
                    break
            elif n < _RECV_SIZE:
                break
        return out

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            try:
                self.sock.close()
            except OSError:
                pass


class BlockingChannel:
    """A worker's (or remote client's) end: blocking sends, receive with optional deadline."""

    __slots__ = ("_decoder", "sock")

    def __init__(self, sock: socket.socket, max_frame: int = MAX_FRAME) -> None:
        sock.setblocking(True)
        self.sock = sock
        self._decoder = _Decoder(max_frame)

    def send(self, msgs: list[Any]) -> None:
        self.sock.sendall(encode(msgs))

    def receive(self, timeout: float | None = None) -> list[Any]:
        """Block until at least one message arrives (or ``timeout`` seconds pass: returns [])."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return []
                self.sock.settimeout(remaining)
            try:
                n = self._decoder.read_from(self.sock)
            except TimeoutError:
                return []
            finally:
                if deadline is not None:
                    self.sock.settimeout(None)
            if not n:
                raise ConnectionError("the node closed the connection")
            msgs = self._decoder.take(n)
            if msgs and not _pending(self.sock):
                return msgs
            if msgs:  # TLS holds more decrypted bytes: take them too, they will not wake us
                return msgs + self.receive_nowait()

    def receive_spinning(self, seconds: float) -> list[Any]:
        """Poll for messages for up to ``seconds`` without going to sleep, offering the CPU to
        anything else runnable between polls; return what arrived ([] if nothing did).

        Waking a process that sleeps costs the sender and the sleeper far more than a message
        (on this VM ~10-20 µs each way, decision 0010); a worker that expects its next task
        within a round trip waits for it awake."""
        dec = self._decoder
        sock = self.sock
        end = time.perf_counter() + seconds
        if isinstance(sock, ssl.SSLSocket):  # TLS takes no recv flags: poll non-blocking
            while True:
                msgs = self.receive_nowait()
                if msgs or time.perf_counter() >= end:
                    return msgs
                os.sched_yield()
        while True:
            try:
                n = dec.read_from(sock, _DONTWAIT)
            except (BlockingIOError, InterruptedError):
                if time.perf_counter() >= end:
                    return []
                os.sched_yield()
                continue
            if not n:
                raise ConnectionError("the node closed the connection")
            msgs = dec.take(n)
            if msgs:
                return msgs

    def receive_nowait(self) -> list[Any]:
        """Whatever complete messages are already readable, without blocking."""
        self.sock.setblocking(False)
        try:
            chunks: list[bytes] = []
            while True:
                try:
                    data = self.sock.recv(_RECV_SIZE)
                except _AGAIN:
                    break
                if not data:
                    break
                chunks.append(data)
            return self._decoder.feed(b"".join(chunks)) if chunks else []
        finally:
            self.sock.setblocking(True)

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass
