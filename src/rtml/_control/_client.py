"""A connection to the control-plane server, for nodes, drivers and tools; it outlives restarts
of the server.

::

    caller threads ── call/submit(op, *args) ──▶ ("req", id, op, args) ──▶ GCS server
                          │ a _Request per id: Future, op, args, times sent   │
    connection thread "rtml-gcs-client" ◀── ("rep", id, ok, value) ◀──────────┤
         ├─ resolves the request's Future                                     │
         └─ ("pub", channel, message) ──▶ callback(message) for that channel ◀┘

Requests from any thread share one authenticated connection; replies are matched by id, so
many requests may be in flight (``submit``) while others wait (``call``). Subscription
callbacks run on the connection thread, in the order the server published: they must be quick
and must not wait on ``call`` (that would wait on themselves; it raises instead) — hand work to
another thread, or use ``submit``.

The connection thread drives one state machine (``close`` ends it from any thread)::

    CONNECTED ── a read or a send fails ──▶ RECONNECTING ── connect + token handshake ──┐
        ▲          requests in flight whose op is in _ONCE fail  │ after 0.02 s, doubling   │
        │          (they may have been applied); the others are  │ to 0.25 s (jittered),    │
        │          kept to be sent again; CONNECTION gets        │ until close()            │
        │          ("disconnected", why)                         │                          │
        └──── subscribe again to every channel, send every kept request (oldest first),  ◀─┘
              then CONNECTION gets ("reconnected", seconds down)
    any state ── close() ──▶ CLOSED: every request not answered fails with ConnectionError

A request made while RECONNECTING is kept and sent once connected. ``call`` waits for the reply
up to its timeout either way, then raises ``ConnectionError`` if the server is still unreachable
(naming the address, for how long, and why) or ``TimeoutError`` if it is connected but slow.

Which requests are sent again. The server may have applied a request whose reply was lost with
the connection, so a request is sent again only if applying it twice is harmless: reads,
``heartbeat``, ``register_node`` (the same id refreshes the registration), ``node_dead``,
writes keyed by ids (lineage, locations, functions, ``finish_job``, ``update_actor``...),
``add_events`` (best effort: a duplicate event if the server survived). Two refuse a second
application, and a refused replay of them is answered with what the first one made (the id is
unique, so only our own first send can have taken it): ``register_actor`` (``get_actor``) and
``add_job`` (``get_job``). ``next_job_id`` is sent again: a replay may skip an id, which costs
nothing. Not sent again, because their reply says whether *this* call made the change and a
replay would answer wrongly: ``kv_put``, ``kv_delete``, ``remove_actor`` (they fail with
``ConnectionError``: outcome unknown).

What a restart loses is the server's business: on Redis nothing but heartbeat figures, task
events and subscriptions (renewed here); in memory, everything (a node learns it from
``heartbeat`` answering False and registers again).
"""

from __future__ import annotations

import concurrent.futures
import itertools
import random
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

from rtml._control._events import EventPage, TaskEvent
from rtml._control._plane import FENCED
from rtml._control._records import ActorInfo, Ident, JobInfo, NodeInfo, ObjectEntry, TaskEntry
from rtml._transport import BlockingChannel
from rtml._transport._auth import AuthError, connect, find_token
from rtml.exceptions import RtmlSystemError

MAX_FRAME = 64 << 20
_BAD_INPUT = "ValueError: "
CONNECTION = "@connection"  # a channel of this client only: ("disconnected" | "reconnected", x)
BACKOFF_MIN_S = 0.02
BACKOFF_MAX_S = 0.25
ATTEMPT_TIMEOUT_S = 2.0  # one reconnection attempt (connect + handshake); close() waits for it
_ONCE = frozenset({"kv_put", "kv_delete", "remove_actor"})
_REPLAY_LOOKUP = {"register_actor": "get_actor", "add_job": "get_job"}

Callback = Callable[[Any], None]


class FencedError(RtmlSystemError):
    """The control plane refused a request of a node it declared dead (see ``register_node``):
    that node must stop its work and join again as a new node."""


class _Request:
    __slots__ = ("args", "fut", "op", "sends")

    def __init__(self, fut: concurrent.futures.Future, op: str, args: tuple) -> None:
        self.fut = fut
        self.op = op
        self.args = args
        self.sends = 0  # how many times it went out whole (> 1: a replay)


def _shutdown(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


class ControlClient:
    """Talks to the GCS at ``address`` ("HOST:PORT"), reconnecting by itself when it is lost.

    Args:
        token: the cluster token (bytes or hex); None finds it like ``find_token`` does
            (``$RTML_TOKEN``, then this user's token file for ``address``).
        timeout: seconds to connect and authenticate (the first time; later attempts take at
            most ``ATTEMPT_TIMEOUT_S`` each).
        on_disconnect: called on the connection thread with the ``ConnectionError`` each time
            the connection is lost (not when ``close`` is called). To hear of reconnections,
            ``subscribe(CONNECTION, callback)``.

    Raises:
        ConnectionError: nothing listens at ``address``, or it refused the token
            (``AuthError``).
    """

    def __init__(
        self,
        address: str,
        token: bytes | str | None = None,
        timeout: float = 10.0,
        *,
        on_disconnect: Callable[[ConnectionError], None] | None = None,
    ) -> None:
        self.address = address
        self._token = find_token(address, token)
        self._timeout = timeout
        try:
            sock = connect(address, self._token, timeout)
        except AuthError as e:
            raise AuthError(
                f"the control plane at {address} refused this connection ({e}); "
                "is the cluster token right?"
            ) from None
        except ConnectionError as e:
            raise ConnectionError(
                f"no control plane answers at {address} ({e}); is the "
                "cluster running (or its control plane restarting)?"
            ) from None
        self._send_lock = threading.Lock()  # taken before _lock when both are needed
        self._lock = threading.Lock()  # guards the fields below
        self._ch: BlockingChannel | None = BlockingChannel(sock, max_frame=MAX_FRAME)
        self._pending: dict[int, _Request] = {}
        self._subs: dict[str, list[Callback]] = {}
        self._as_node: tuple[str, int] | None = None  # the node incarnation this speaks for
        self._closed = False
        self._down_since: float | None = None
        self._last_error: BaseException | None = None
        self._ids = itertools.count(1)
        self._wake = threading.Event()  # set by close(): ends a wait between attempts
        self._on_disconnect = on_disconnect
        self.reconnects = 0
        self._thread = threading.Thread(
            target=self._run, args=(self._ch,), name="rtml-gcs-client", daemon=True
        )
        self._thread.start()

    # ------------------------------------------------------------------ lifecycle
    @property
    def connected(self) -> bool:
        return self._ch is not None and not self._closed

    def close(self) -> None:
        """End the connection (and reconnection attempts); requests not answered fail. Waits
        for the connection thread (unless called from it)."""
        with self._lock:
            self._closed = True
            ch, pending, self._pending = self._ch, self._pending, {}
        self._wake.set()
        if ch is not None:
            _shutdown(ch.sock)  # the thread sees the end and closes it
        error = ConnectionError(f"the connection to the control plane at {self.address} is closed")
        for req in pending.values():
            if req.fut.set_running_or_notify_cancel():
                req.fut.set_exception(error)
        if threading.current_thread() is not self._thread:
            self._thread.join()

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------------ requests
    def submit(self, op: str, *args: Any) -> concurrent.futures.Future:
        """Send a request without waiting; the Future resolves to the reply (or the error
        ``call`` would raise). While reconnecting the request waits to be sent."""
        fut: concurrent.futures.Future = concurrent.futures.Future()
        self._send(_Request(fut, op, args))
        return fut

    def _send(self, req: _Request) -> int:
        with self._send_lock:
            with self._lock:
                if self._closed:
                    raise ConnectionError(
                        f"the connection to the control plane at {self.address} is closed"
                    )
                req_id = next(self._ids)
                self._pending[req_id] = req
                ch = self._ch
                if ch is not None:
                    req.sends += 1
            if ch is not None:
                try:
                    ch.send([("req", req_id, req.op, req.args)])
                except OSError:  # not sent whole: the server cannot have applied it
                    with self._lock:
                        req.sends -= 1
                    _shutdown(ch.sock)  # the connection thread takes it from here
                except BaseException:  # e.g. an argument that does not pickle
                    with self._lock:
                        self._pending.pop(req_id, None)
                    raise
        return req_id

    def call(self, op: str, *args: Any, timeout: float | None = 10.0) -> Any:
        """Send a request and wait for its reply.

        Raises:
            ValueError: the server refused the request as wrong (unknown op or id, bad
                arguments, a taken actor name...).
            RtmlSystemError: the server failed on it (a bug, or its storage is unreachable).
            ConnectionError: the control plane stayed unreachable for ``timeout`` seconds,
                or the connection was lost while a request not sent twice was in flight, or
                the client is closed.
            TimeoutError: connected, but no reply within ``timeout`` seconds.
            RuntimeError: called from a subscription callback.
        """
        if threading.current_thread() is self._thread:
            raise RuntimeError(
                "a subscription callback cannot wait on the control plane (it runs on the "
                "thread that reads the replies); use submit() or hand off to another thread"
            )
        fut: concurrent.futures.Future = concurrent.futures.Future()
        req_id = self._send(_Request(fut, op, args))
        try:
            return fut.result(timeout)
        except concurrent.futures.TimeoutError:  # not the builtin TimeoutError before 3.11
            with self._lock:
                self._pending.pop(req_id, None)  # never sent again
                down, why = self._down_since, self._last_error
            fut.cancel()
            if down is not None:
                raise ConnectionError(
                    f"the control plane at {self.address} is unreachable (for "
                    f"{time.monotonic() - down:.1f} s: {why}); {op!r} was not answered within "
                    f"{timeout} s"
                ) from None
            raise TimeoutError(
                f"the control plane at {self.address} did not answer {op!r} within {timeout} s"
            ) from None

    def _error_of(self, op_value: Any) -> Exception:
        text = str(op_value)
        if text.startswith(_BAD_INPUT + FENCED):
            return FencedError(text[len(_BAD_INPUT + FENCED) :].strip())
        if text.startswith(_BAD_INPUT):
            return ValueError(text[len(_BAD_INPUT) :])
        return RtmlSystemError(f"the control plane at {self.address} failed: {text}")

    # ------------------------------------------------------------------ subscriptions
    def subscribe(self, channel: str, callback: Callback) -> None:
        """Call ``callback(message)`` on the connection thread for every publication on
        ``channel`` from now on (see ``_pubsub`` for the channels and their messages; they
        are renewed after every reconnection). ``CONNECTION`` is this client's own channel:
        ``("disconnected", reason)`` when the connection is lost, ``("reconnected", seconds
        it was down)`` once it is back (publications made meanwhile are missed: read the
        state again)."""
        with self._lock:
            callbacks = self._subs.setdefault(channel, [])
            first = not callbacks
            callbacks.append(callback)
        if first and channel != CONNECTION:
            try:
                self.call("subscribe", channel)
            except BaseException:
                with self._lock:
                    self._drop_callback(channel, callback)
                raise

    def unsubscribe(self, channel: str, callback: Callback | None = None) -> None:
        """Stop calling ``callback`` (all callbacks if None) for ``channel``."""
        with self._lock:
            if callback is None:
                self._subs.pop(channel, None)
            else:
                self._drop_callback(channel, callback)
            last = channel not in self._subs
        if last and channel != CONNECTION:
            self.call("unsubscribe", channel)

    def _drop_callback(self, channel: str, callback: Callback) -> None:
        callbacks = self._subs.get(channel, [])
        if callback in callbacks:
            callbacks.remove(callback)
        if not callbacks:
            self._subs.pop(channel, None)

    def _deliver(self, channel: str, message: Any) -> None:
        with self._lock:
            callbacks = list(self._subs.get(channel, ()))
        for cb in callbacks:
            try:
                cb(message)
            except Exception:
                print(  # noqa: T201
                    f"rtml: a callback for control-plane channel {channel!r} failed:\n"
                    f"{traceback.format_exc()}",
                    file=sys.stderr,
                    flush=True,
                )

    # ------------------------------------------------------------------ connection thread
    def _run(self, ch: BlockingChannel | None) -> None:
        while ch is not None:
            try:
                while True:
                    for msg in ch.receive():
                        self._dispatch(msg)
            except Exception as e:
                error = ConnectionError(f"lost the control plane at {self.address}: {e}")
            ch = self._reconnect() if self._lost(ch, error) else None

    def _lost(self, ch: BlockingChannel, error: ConnectionError) -> bool:
        """CONNECTED → RECONNECTING; False if closed instead."""
        _shutdown(ch.sock)  # unblocks a sender, then none can be using it
        with self._send_lock:
            ch.close()
        with self._lock:
            if self._closed:
                return False
            self._ch = None
            self._down_since = time.monotonic()
            self._last_error = error
            failed = []
            for req_id, req in list(self._pending.items()):
                if req.fut.cancelled():
                    del self._pending[req_id]
                elif req.sends and req.op in _ONCE:
                    del self._pending[req_id]
                    failed.append(req)
        for req in failed:
            if req.fut.set_running_or_notify_cancel():
                req.fut.set_exception(
                    ConnectionError(
                        f"lost the control plane at {self.address} with {req.op!r} in flight: it "
                        "may or may not have been applied"
                    )
                )
        if self._on_disconnect is not None:
            self._on_disconnect(error)
        self._deliver(CONNECTION, ("disconnected", str(error)))
        return True

    def _reconnect(self) -> BlockingChannel | None:
        """RECONNECTING → CONNECTED (the new channel), or None once closed."""
        delay = BACKOFF_MIN_S
        while not self._wake.wait(delay * random.uniform(0.5, 1.0)):
            try:
                sock = connect(self.address, self._token, min(self._timeout, ATTEMPT_TIMEOUT_S))
            except OSError as e:  # refused, unreachable, or the handshake failed
                with self._lock:
                    self._last_error = e
                delay = min(BACKOFF_MAX_S, delay * 2)
                continue
            ch = BlockingChannel(sock, max_frame=MAX_FRAME)
            return ch if self._resume(ch) else None
        return None

    def _resume(self, ch: BlockingChannel) -> bool:
        """Subscribe again, send what waits, tell CONNECTION subscribers; False if closed."""
        with self._send_lock:
            with self._lock:
                if self._closed:
                    ch.close()
                    return False
                self._ch = ch
                down = time.monotonic() - (self._down_since or time.monotonic())
                self._down_since = None
                self.reconnects += 1
                msgs: list[Any] = []
                if self._as_node is not None:  # first: the requests below speak for it
                    msgs.append(("req", next(self._ids), "bind_node", self._as_node))
                msgs += [
                    ("req", next(self._ids), "subscribe", (channel,))
                    for channel in self._subs
                    if channel != CONNECTION
                ]
                for req_id, req in sorted(self._pending.items()):
                    if req.fut.cancelled():
                        del self._pending[req_id]
                        continue
                    req.sends += 1
                    msgs.append(("req", req_id, req.op, req.args))
            try:
                ch.send(msgs)
            except OSError:
                _shutdown(ch.sock)  # lost again: the read loop notices
        self._deliver(CONNECTION, ("reconnected", down))
        return True

    def _dispatch(self, msg: Any) -> None:
        if msg[0] == "rep":
            _, req_id, ok, value = msg
            with self._lock:
                req = self._pending.pop(req_id, None)
            if req is None:  # a renewed subscription, or a call that gave up waiting
                return
            if (
                not ok
                and req.sends > 1
                and req.op in _REPLAY_LOOKUP
                and "already registered" in str(value)
            ):
                self._answer_replay(req)
                return
            if req.fut.set_running_or_notify_cancel():
                if ok:
                    req.fut.set_result(value)
                else:
                    req.fut.set_exception(self._error_of(value))
        elif msg[0] == "pub":
            _, channel, message = msg
            self._deliver(channel, message)

    def _answer_replay(self, req: _Request) -> None:
        """Our first send of ``req`` was applied before the connection broke: answer it with
        the record it made."""
        try:
            self._send(_Request(req.fut, _REPLAY_LOOKUP[req.op], (req.args[0],)))
        except ConnectionError as e:
            if req.fut.set_running_or_notify_cancel():
                req.fut.set_exception(e)

    # ------------------------------------------------------------------ typed wrappers
    def ping(self) -> str:
        return self.call("ping")

    def info(self) -> dict[str, Any]:
        return self.call("info")

    def register_node(self, node_id: str, info: dict[str, Any]) -> NodeInfo:
        """Register a node; from then on this client speaks for that incarnation (after a
        reconnect too): once the control plane declares it dead, its requests are refused
        with ``FencedError``."""
        rec: NodeInfo = self.call("register_node", node_id, info)
        with self._lock:
            self._as_node = (node_id, rec.index)
        return rec

    def heartbeat(self, node_id: str, available: dict[str, float], load: dict[str, float]) -> bool:
        return self.call("heartbeat", node_id, available, load)

    def node_dead(self, node_id: str, cause: str = "reported dead") -> NodeInfo | None:
        return self.call("node_dead", node_id, cause)

    def get_node(self, node_id: str) -> NodeInfo | None:
        return self.call("get_node", node_id)

    def list_nodes(self, alive_only: bool = False) -> list[NodeInfo]:
        return self.call("list_nodes", alive_only)

    def next_job_id(self) -> int:
        return self.call("next_job_id")

    def add_job(self, job_id: int, info: dict[str, Any]) -> JobInfo:
        return self.call("add_job", job_id, info)

    def finish_job(self, job_id: int) -> JobInfo:
        return self.call("finish_job", job_id)

    def get_job(self, job_id: int) -> JobInfo | None:
        return self.call("get_job", job_id)

    def list_jobs(self) -> list[JobInfo]:
        return self.call("list_jobs")

    def put_function(self, fn_id: str, blob: bytes) -> None:
        self.call("put_function", fn_id, blob)

    def get_function(self, fn_id: str) -> bytes | None:
        return self.call("get_function", fn_id)

    def register_actor(self, actor_id: Ident, info: dict[str, Any]) -> ActorInfo:
        return self.call("register_actor", actor_id, info)

    def update_actor(self, actor_id: Ident, state: str, **fields: Any) -> ActorInfo:
        return self.call("update_actor", actor_id, state, fields)

    def get_actor(self, actor_id: Ident) -> ActorInfo | None:
        return self.call("get_actor", actor_id)

    def lookup_actor(self, namespace: str, name: str) -> ActorInfo | None:
        return self.call("lookup_actor", namespace, name)

    def list_actors(self, namespace: str | None = None) -> list[ActorInfo]:
        return self.call("list_actors", namespace)

    def add_tasks(self, items: list[tuple[Ident, bytes, Any]]) -> int:
        return self.call("add_tasks", items)

    def remove_tasks(self, task_ids: list[Ident]) -> int:
        return self.call("remove_tasks", task_ids)

    def get_task(self, task_id: Ident) -> TaskEntry | None:
        return self.call("get_task", task_id)

    def add_location(
        self, oid: Ident, node_id: str, size: int, owner: Any = None
    ) -> ObjectEntry | None:
        return self.call("add_location", oid, node_id, size, owner)

    def add_locations(self, items: list[tuple[Any, ...]]) -> int:
        return self.call("add_locations", items)

    def remove_location(self, oid: Ident, node_id: str) -> ObjectEntry | None:
        return self.call("remove_location", oid, node_id)

    def get_locations(self, oid: Ident) -> tuple[int, tuple[str, ...]] | None:
        return self.call("get_locations", oid)

    def remove_objects(self, oids: list[Ident]) -> int:
        return self.call("remove_objects", oids)

    def add_events(self, records: list[TaskEvent | dict[str, Any]]) -> int:
        return self.call("add_events", records)

    def get_events(
        self, task_id: Ident | None = None, since: int = 0, limit: int = 1000
    ) -> EventPage:
        return self.call("get_events", task_id, since, limit)

    def kv_put(self, namespace: str, key: str, value: bytes, overwrite: bool = True) -> bool:
        return self.call("kv_put", namespace, key, value, overwrite)

    def kv_get(self, namespace: str, key: str) -> bytes | None:
        return self.call("kv_get", namespace, key)

    def kv_delete(self, namespace: str, key: str) -> bool:
        return self.call("kv_delete", namespace, key)

    def kv_keys(self, namespace: str, prefix: str = "") -> list[str]:
        return self.call("kv_keys", namespace, prefix)
