"""The direct data path: routers talk to replicas on the same machine over a Unix socket.

::

    Router ──frame(id, kind, payload)──▶ Unix socket (a 0700 directory of the user's) ──▶
    Replica.handle_http / handle_request ──frame(id, ok, result)──▶ Router's reader task
    ──▶ the request's future

One write each way per request, many requests in flight on one connection. An engine actor
call between two worker processes costs three messages through the node manager and a second
round trip to fetch the value (decision 0012 has the figures); the controller, health checks
and stats stay on actor calls. A replica whose connection breaks (its process died) fails the
requests in flight with ReplicaConnectionError, which the router retries like ActorDiedError.
Only processes of the same user can connect (checked with SO_PEERCRED on Linux's abstract
socket names, else by a 0700 directory), the same trust as the engine's shared memory;
routers on other machines use actor calls.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import pickle
import shutil
import socket
import struct
import sys
import tempfile
from typing import Any

import cloudpickle

_LEN = struct.Struct("!I")
HTTP, CALL = 0, 1


class ReplicaConnectionError(ConnectionError):
    """The connection to a replica broke: its process died (the request is retried)."""


def host_id() -> str:
    """This machine's identity (a router uses a replica's socket only on the same one)."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot = f.read().strip()
    except OSError:
        boot = ""
    return f"{socket.gethostname()}/{boot}"


def _dumps(kind: int, obj: Any) -> bytes:
    if kind == HTTP:
        return pickle.dumps(obj, protocol=5)
    return cloudpickle.dumps(obj, protocol=5)


_ABSTRACT = sys.platform.startswith("linux")
_PEERCRED = struct.Struct("3i")  # pid, uid, gid
CONNECT_TIMEOUT_S = 10.0


def _peer_uid(writer: asyncio.StreamWriter) -> int | None:
    sock = writer.get_extra_info("socket")
    try:
        _pid, uid, _gid = _PEERCRED.unpack(
            sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
        )
    except (OSError, AttributeError):
        return None
    return uid


class Server:
    """A replica's listening socket; ``handler(kind, payload)`` answers each frame.

    On Linux the socket has an abstract name (no file to leave behind when the replica is
    killed) and takes connections from processes of the same user only (SO_PEERCRED);
    elsewhere it is a file in a fresh 0700 directory.
    """

    def __init__(self, handler: Any) -> None:
        self.handler = handler
        self.dir: str | None = None
        if _ABSTRACT:
            self.path = f"\0rtml-serve-{os.getpid()}-{os.urandom(8).hex()}"
        else:
            self.dir = tempfile.mkdtemp(prefix="rtml-serve-")  # mode 0700: this user only
            self.path = os.path.join(self.dir, "replica.sock")
        self.server: asyncio.base_events.Server | None = None
        self.tasks: set[asyncio.Future] = set()

    async def start(self) -> str:
        # The socket is bound here, not by the event loop: uvloop (Ray's actors run on it
        # when installed) takes an abstract name for a bad argument.
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(self.path)
            sock.listen(1024)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self.server = await asyncio.start_unix_server(self._conn, sock=sock)
        return self.path

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)

    async def _conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if _ABSTRACT and _peer_uid(writer) != os.getuid():
            writer.close()  # another user's process: nothing it sends is unpickled
            return
        try:
            while True:
                head = await reader.readexactly(_LEN.size)
                body = await reader.readexactly(_LEN.unpack(head)[0])
                req_id, kind, payload = pickle.loads(body)
                t = asyncio.ensure_future(self._one(writer, req_id, kind, payload))
                self.tasks.add(t)
                t.add_done_callback(self.tasks.discard)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def _one(
        self, writer: asyncio.StreamWriter, req_id: int, kind: int, payload: Any
    ) -> None:
        try:
            out = (req_id, True, await self.handler(kind, payload))
            data = _dumps(kind, out)
        except Exception as e:
            try:
                data = cloudpickle.dumps((req_id, False, e), protocol=5)
            except Exception as pe:
                data = cloudpickle.dumps(
                    (
                        req_id,
                        False,
                        RuntimeError(
                            f"{type(e).__name__}: {e} (the exception is not picklable: {pe})"
                        ),
                    )
                )
        if not writer.is_closing():
            writer.write(_LEN.pack(len(data)) + data)


class Connection:
    """A router's connection to one replica, shared by all its requests."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.ids = itertools.count(1)
        self.pending: dict[int, asyncio.Future] = {}
        self.writer: asyncio.StreamWriter | None = None
        self.reader_task: asyncio.Task | None = None
        self.opening: asyncio.Future | None = None
        self.broken: BaseException | None = None

    async def _open(self) -> None:
        if self.writer is not None:
            return
        if self.opening is None:
            self.opening = asyncio.ensure_future(self._connect())
        await asyncio.shield(self.opening)

    async def _connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            # Connected by the socket module (uvloop rejects abstract names), off the loop:
            # a full backlog would block the connect.
            sock.settimeout(CONNECT_TIMEOUT_S)
            await asyncio.get_running_loop().run_in_executor(None, sock.connect, self.path)
            sock.setblocking(False)
            reader, self.writer = await asyncio.open_unix_connection(sock=sock)
        except OSError as e:
            sock.close()
            self.broken = ReplicaConnectionError(f"cannot reach the replica at {self.path}: {e}")
            raise self.broken from None
        self.reader_task = asyncio.ensure_future(self._read(reader))

    async def _read(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                head = await reader.readexactly(_LEN.size)
                req_id, ok, value = pickle.loads(await reader.readexactly(_LEN.unpack(head)[0]))
                fut = self.pending.pop(req_id, None)
                if fut is not None and not fut.done():
                    if ok:
                        fut.set_result(value)
                    else:
                        fut.set_exception(value)
        except (asyncio.IncompleteReadError, ConnectionError, OSError) as e:
            self._fail(
                ReplicaConnectionError(
                    f"the connection to the replica broke ({e!r}): its process died"
                )
            )
        except asyncio.CancelledError:
            self._fail(ReplicaConnectionError("the connection to the replica was closed"))
            raise

    def _fail(self, e: BaseException) -> None:
        self.broken = e
        pending, self.pending = self.pending, {}
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(e)

    async def call(self, kind: int, payload: Any) -> Any:
        if self.broken is not None:
            raise self.broken
        await self._open()
        if self.broken is not None:
            raise self.broken
        assert self.writer is not None
        req_id = next(self.ids)
        fut = asyncio.get_running_loop().create_future()
        self.pending[req_id] = fut
        data = _dumps(kind, (req_id, kind, payload))
        self.writer.write(_LEN.pack(len(data)) + data)
        transport = self.writer.transport
        if transport.get_write_buffer_size() > 1 << 20:
            await self.writer.drain()
        try:
            return await fut
        finally:
            self.pending.pop(req_id, None)

    def close(self) -> None:
        if self.reader_task is not None:
            self.reader_task.cancel()
        if self.writer is not None:
            self.writer.close()
