"""The control-plane (GCS) server process: a thin I/O shell around ``ControlPlane``.

::

    accept ──▶ handshake thread (one per connection, short-lived: a silent peer stalls only it)
                 │ proved the token                       │ failed: logged, that socket closed
                 ▼
    selector thread ◀─ NodeChannel(max_frame=64 MiB) ◀── ("req", req_id, op, args)
         │ ControlPlane.handle(conn id, op, args)
         ├──▶ ("rep", req_id, True, value) | ("rep", req_id, False, "ValueError: ..." | "...")
         └──▶ ("pub", channel, message) to every subscriber of what changed
    every tick ──▶ ControlPlane.tick ──▶ heartbeat timeouts published on "nodes"

One thread serves every connection with ``selectors``; replies and publications are queued per
connection and flushed once per loop turn without ever blocking. A connection that sends an
oversized, undecodable or malformed frame is closed alone; a subscriber that disconnects is
dropped. SIGTERM and SIGINT stop the loop, close every connection and the storage, and exit 0.

Restarts: on Redis, a new server rebuilds every table from storage; nodes recorded ALIVE get a
fresh grace period of ``--heartbeat-timeout`` seconds from its start (the first tick runs before
serving) and are declared dead as usual if they do not heartbeat within it. Clients reconnect
by themselves (``_client.py``). In memory nothing survives, and the server says so at start.

Usage::

    python -m rtml._control --port 0 (--token-hex HEX | --token-file F | $RTML_TOKEN)
                            [--redis HOST:PORT[,HOST:PORT...]]
                            [--heartbeat-timeout S] [--ready-fd FD]

Once listening it writes its port to ``--ready-fd`` (then closes it), or prints
``RTML_GCS_READY <port>`` on stdout.
"""

from __future__ import annotations

import argparse
import os
import selectors
import signal
import socket
import sys
import threading
import time
import traceback
from typing import Any

from rtml._control._plane import DEFAULT_HEARTBEAT_TIMEOUT, ControlPlane
from rtml._control._pubsub import Delivery
from rtml._control._storage import open_storage
from rtml._transport import FrameError, NodeChannel, _tls
from rtml._transport._auth import TOKEN_ENV, AuthError, parse_token, serve_handshake

MAX_FRAME = 64 << 20
MAX_HANDSHAKES = 64  # connections authenticating at once; more are refused, not queued
_LISTENER = object()
_WAKE = object()


def log(msg: str) -> None:
    print(f"rtml gcs[{os.getpid()}]: {msg}", file=sys.stderr, flush=True)  # noqa: T201


class _Conn:
    __slots__ = ("ch", "id", "mask", "peer")

    def __init__(self, conn_id: int, ch: NodeChannel, peer: str) -> None:
        self.id = conn_id
        self.ch = ch
        self.peer = peer
        self.mask = selectors.EVENT_READ


class ControlServer:
    """Serves a ``ControlPlane`` on ``host:port`` (0: any free port, see ``.port``).

    ``serve_forever`` runs the loop in the calling thread; ``stop`` (thread- and signal-safe)
    ends it; ``close`` releases every socket afterwards. The caller owns the plane's storage.
    """

    def __init__(
        self,
        plane: ControlPlane,
        token: bytes,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        tick_interval: float | None = None,
        handshake_timeout: float = 5.0,
        max_frame: int = MAX_FRAME,
    ) -> None:
        self.plane = plane
        self._token = token
        self._handshake_timeout = handshake_timeout
        self._max_frame = max_frame
        self._interval = tick_interval or max(0.01, min(1.0, plane.heartbeat_timeout / 4))
        _tls.context(server=True)  # a TLS misconfiguration fails the start, with its reason
        self._listener = socket.create_server((host, port), backlog=256)
        _tls.warn_if_plain(host, "control plane")
        self._listener.setblocking(False)
        self.host = host
        self.port: int = self._listener.getsockname()[1]
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._sel = selectors.DefaultSelector()
        self._sel.register(self._listener, selectors.EVENT_READ, _LISTENER)
        self._sel.register(self._wake_r, selectors.EVENT_READ, _WAKE)
        self._lock = threading.Lock()  # guards the handshake hand-over below
        self._authed: list[tuple[socket.socket, str]] = []
        self._handshaking: dict[socket.socket, threading.Thread] = {}
        self._conns: dict[int, _Conn] = {}
        self._dirty: set[_Conn] = set()
        self._next_id = 0
        self._stopping = False
        self._closed = False

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    # ------------------------------------------------------------------ lifecycle
    def stop(self) -> None:
        """Ask the loop to end (safe from signal handlers and other threads)."""
        self._stopping = True
        self._wake()

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"\0")
        except OSError:
            pass  # full (a wake-up is already pending) or closed

    def close(self) -> None:
        """Close the listener, every connection and any handshake still running."""
        with self._lock:
            self._closed = True
            pending, self._authed = self._authed, []
            handshaking = dict(self._handshaking)
        for sock in handshaking:  # a peer stuck in the handshake: wake its thread up
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for thread in handshaking.values():
            thread.join(timeout=self._handshake_timeout + 1)
        for sock, _ in pending:
            sock.close()
        for conn in list(self._conns.values()):
            self._close_conn(conn)
        self._sel.close()
        self._listener.close()
        self._wake_r.close()
        self._wake_w.close()

    def serve_forever(self) -> None:
        self._tick()  # nodes recovered from storage: their grace period starts now
        next_tick = time.monotonic() + self._interval
        while not self._stopping:
            for key, mask in self._sel.select(max(0.0, next_tick - time.monotonic())):
                data = key.data
                if data is _LISTENER:
                    self._accept()
                elif data is _WAKE:
                    self._adopt()
                else:
                    if mask & selectors.EVENT_READ:
                        self._read(data)
                    if mask & selectors.EVENT_WRITE:
                        self._dirty.add(data)
            if time.monotonic() >= next_tick:
                self._tick()
                next_tick = time.monotonic() + self._interval
            self._flush()

    # ------------------------------------------------------------------ accepting
    def _accept(self) -> None:
        while True:
            try:
                sock, addr = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:  # e.g. out of descriptors: try again next turn
                log(f"accept failed: {e}")
                return
            peer = f"{addr[0]}:{addr[1]}"
            thread = threading.Thread(
                target=self._handshake, args=(sock, peer), name="rtml-gcs-handshake", daemon=True
            )
            with self._lock:
                refuse = len(self._handshaking) >= MAX_HANDSHAKES
                if not refuse:
                    self._handshaking[sock] = thread
            if refuse:
                log(f"refused {peer}: {MAX_HANDSHAKES} connections are already authenticating")
                sock.close()
                continue
            thread.start()

    def _handshake(self, raw: socket.socket, peer: str) -> None:
        try:
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock = serve_handshake(raw, self._token, self._handshake_timeout)
        except (AuthError, OSError) as e:
            log(f"refused {peer}: {e}")
            with self._lock:
                self._handshaking.pop(raw, None)
            raw.close()
            return
        with self._lock:
            self._handshaking.pop(raw, None)
            closed = self._closed
            if not closed:
                self._authed.append((sock, peer))
        if closed:
            sock.close()
        else:
            self._wake()

    def _adopt(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass
        with self._lock:
            authed, self._authed = self._authed, []
        for sock, peer in authed:
            self._next_id += 1
            conn = _Conn(self._next_id, NodeChannel(sock, max_frame=self._max_frame), peer)
            self._conns[conn.id] = conn
            self._sel.register(sock, selectors.EVENT_READ, conn)

    # ------------------------------------------------------------------ serving
    def _read(self, conn: _Conn) -> None:
        try:
            msgs = conn.ch.receive()
        except FrameError as e:
            log(f"closing {conn.peer}: {e}")
            self._close_conn(conn)
            return
        if msgs is None:
            self._close_conn(conn)
            return
        for msg in msgs:
            if not (isinstance(msg, tuple) and len(msg) == 4 and msg[0] == "req"):
                log(f"closing {conn.peer}: not a request: {msg!r:.200}")
                self._close_conn(conn)
                return
            _, req_id, op, args = msg
            try:
                reply, deliveries = self.plane.handle(conn.id, op, args)
            except ValueError as e:
                conn.ch.queue(("rep", req_id, False, f"ValueError: {e}"))
            except Exception as e:
                log(f"{op!r:.100} from {conn.peer} failed:\n{traceback.format_exc()}")
                conn.ch.queue(("rep", req_id, False, f"{type(e).__name__}: {e}"))
            else:
                conn.ch.queue(("rep", req_id, True, reply))
                self._deliver(deliveries)
            self._dirty.add(conn)

    def _deliver(self, deliveries: list[Delivery]) -> None:
        for sub, channel, message in deliveries:
            conn = self._conns.get(sub)  # type: ignore[call-overload]
            if conn is not None:
                conn.ch.queue(("pub", channel, message))
                self._dirty.add(conn)

    def _tick(self) -> None:
        try:
            deliveries = self.plane.tick()
        except Exception:  # e.g. Redis unreachable: keep serving, try again next tick
            log(f"periodic check failed:\n{traceback.format_exc()}")
            return
        dead = {
            msg[1].index: msg[1]
            for _, channel, msg in deliveries  # (one per subscriber)
            if channel == "nodes" and msg[0] == "node_dead"
        }
        for rec in dead.values():
            log(f"node {rec.node_id} (index {rec.index}) is dead: {rec.death_cause}")
        self._deliver(deliveries)

    def _flush(self) -> None:
        dirty, self._dirty = self._dirty, set()
        for conn in dirty:
            if conn.ch.closed:
                continue
            try:
                pending = conn.ch.flush()
            except Exception as e:  # a reply that does not pickle: a bug, but only theirs
                log(f"closing {conn.peer}: cannot send: {e!r}")
                self._close_conn(conn)
                continue
            mask = selectors.EVENT_READ | (selectors.EVENT_WRITE if pending else 0)
            if mask != conn.mask:
                conn.mask = mask
                self._sel.modify(conn.ch.sock, mask, conn)

    def _close_conn(self, conn: _Conn) -> None:
        if self._conns.pop(conn.id, None) is None:
            return
        try:
            self._sel.unregister(conn.ch.sock)
        except (KeyError, ValueError):
            pass
        conn.ch.close()
        self._dirty.discard(conn)
        self.plane.drop_subscriber(conn.id)


# ---------------------------------------------------------------------------- process entry
MAX_EVENTS_ENV = "RTML_MAX_TASK_EVENTS"
DEFAULT_MAX_EVENTS = 100_000


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m rtml._control", description="Run an rtml control-plane (GCS) server."
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=0, help="port to bind; 0 picks a free one")
    tok = p.add_mutually_exclusive_group()
    tok.add_argument("--token-hex", help="the cluster token, in hex")
    tok.add_argument(
        "--token-file", help=f"a file holding the cluster token, in hex (default: ${TOKEN_ENV})"
    )
    p.add_argument(
        "--redis",
        default=None,
        help="HOST:PORT[,HOST:PORT...]: keep the tables in Redis, one server per "
        "shard (default: in memory, lost when this process exits)",
    )
    p.add_argument(
        "--heartbeat-timeout",
        type=float,
        default=DEFAULT_HEARTBEAT_TIMEOUT,
        help="seconds without a heartbeat before a node is declared dead",
    )
    p.add_argument(
        "--max-task-events",
        type=int,
        default=int(os.environ.get(MAX_EVENTS_ENV, DEFAULT_MAX_EVENTS)),
        help=f"task events kept in memory, oldest dropped first (default {DEFAULT_MAX_EVENTS}, "
        f"or ${MAX_EVENTS_ENV}); about 1 KB each",
    )
    p.add_argument(
        "--ready-fd",
        type=int,
        default=None,
        help="write the bound port to this descriptor once listening",
    )
    _tls.add_arguments(p)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = _parse(argv)
    try:
        if args.token_file:
            with open(args.token_file) as f:
                token = parse_token(f.read())
        elif args.token_hex:
            token = parse_token(args.token_hex)
        elif os.environ.get(TOKEN_ENV):
            token = parse_token(os.environ[TOKEN_ENV])
        else:
            raise ValueError(f"give the cluster token: --token-hex, --token-file or ${TOKEN_ENV}")
        _tls.configure(args.tls_cert, args.tls_key, args.tls_ca)
        storage = open_storage(args.redis)
    except (OSError, ValueError) as e:  # ConnectionError is an OSError
        log(f"cannot start: {e}")
        sys.exit(1)
    try:
        plane = ControlPlane(
            storage,
            heartbeat_timeout=args.heartbeat_timeout,
            event_capacity=args.max_task_events,
        )
        server = ControlServer(plane, token, args.host, args.port)
    except BaseException as e:
        storage.close()
        log(f"cannot start: {e}")
        sys.exit(1)

    def on_signal(signum: int, frame: Any) -> None:
        server.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    from rtml._launch import end_with_parent

    end_with_parent()
    if args.redis:
        log(f"listening on {server.address}, tables in Redis {args.redis}")
        alive = plane.nodes.records(alive_only=True)
        if alive:
            log(
                f"recovered {len(alive)} live node(s) from Redis; each has "
                f"{plane.heartbeat_timeout:g} s to send a heartbeat before it is declared dead"
            )
    else:
        log(
            f"listening on {server.address}, tables in memory: NOT DURABLE, the cluster's "
            "state (nodes, jobs, actors, lineage, object locations, kv) does not survive a "
            "restart of this process; give --redis HOST:PORT for a control plane that can "
            "restart"
        )
    if args.ready_fd is not None:
        os.write(args.ready_fd, f"{server.port}\n".encode())
        os.close(args.ready_fd)
    else:
        print(f"RTML_GCS_READY {server.port}", flush=True)  # noqa: T201
    try:
        server.serve_forever()
    finally:
        server.close()
        storage.close()
    log("stopped")
