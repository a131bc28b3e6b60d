"""A connection to the control-plane server, for nodes, drivers and tools.

::

    caller threads ── call/submit(op, *args) ──▶ ("req", id, op, args) ──▶ GCS server
                          │ Future per request id                             │
    reader thread "rtml-gcs-client" ◀── ("rep", id, ok, value) ◀──────────────┤
         ├─ resolves the request's Future                                     │
         └─ ("pub", channel, message) ──▶ callback(message) for that channel ◀┘

Requests from any thread share one authenticated connection; replies are matched by id, so
many requests may be in flight (``submit``) while others wait (``call``). Subscription
callbacks run on the reader thread, in the order the server published: they must be quick and
must not wait on ``call`` (that would wait on themselves; it raises instead) — hand work to
another thread, or use ``submit``.

When the connection is lost every waiting request fails with ``ConnectionError``, and so does
every later one; ``on_disconnect`` (if given) is told once. Reconnecting is the owner's choice:
make a new client and subscribe again.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import socket
import sys
import threading
import traceback
from collections.abc import Callable
from typing import Any

from rtml._control._events import EventPage, TaskEvent
from rtml._control._records import ActorInfo, Ident, JobInfo, NodeInfo, ObjectEntry, TaskEntry
from rtml._transport import BlockingChannel
from rtml._transport._auth import AuthError, connect, find_token
from rtml.exceptions import RtmlSystemError

MAX_FRAME = 64 << 20
_BAD_INPUT = "ValueError: "

Callback = Callable[[Any], None]


class ControlClient:
    """Talks to the GCS at ``address`` ("HOST:PORT").

    Args:
        token: the cluster token (bytes or hex); None finds it like ``find_token`` does
            (``$RTML_TOKEN``, then this user's token file for ``address``).
        timeout: seconds to connect and authenticate.
        on_disconnect: called once, on the reader thread, with the ``ConnectionError`` when
            the connection is lost (not when ``close`` is called).

    Raises:
        ConnectionError: nothing listens at ``address``, or it refused the token
            (``AuthError``).
    """

    def __init__(self, address: str, token: bytes | str | None = None, timeout: float = 10.0,
                 *, on_disconnect: Callable[[ConnectionError], None] | None = None) -> None:
        self.address = address
        try:
            sock = connect(address, find_token(address, token), timeout)
        except AuthError as e:
            raise AuthError(f"the control plane at {address} refused this connection ({e}); "
                            "is the cluster token right?") from None
        self._ch = BlockingChannel(sock, max_frame=MAX_FRAME)
        self._send_lock = threading.Lock()
        self._lock = threading.Lock()  # guards _pending, _subs, _error
        self._pending: dict[int, concurrent.futures.Future] = {}
        self._subs: dict[str, list[Callback]] = {}
        self._ids = itertools.count(1)
        self._error: ConnectionError | None = None
        self._closing = False
        self._on_disconnect = on_disconnect
        self._reader = threading.Thread(target=self._read_loop, name="rtml-gcs-client",
                                        daemon=True)
        self._reader.start()

    # ------------------------------------------------------------------ lifecycle
    @property
    def connected(self) -> bool:
        return self._error is None

    def close(self) -> None:
        """Close the connection and wait for the reader thread (unless called from it)."""
        self._closing = True
        try:
            self._ch.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        if threading.current_thread() is not self._reader:
            self._reader.join()

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------------ requests
    def submit(self, op: str, *args: Any) -> concurrent.futures.Future:
        """Send a request without waiting; the Future resolves to the reply (or the error
        ``call`` would raise). Fire-and-forget batches (lineage, events) use this."""
        fut: concurrent.futures.Future = concurrent.futures.Future()
        req_id = next(self._ids)
        with self._lock:
            if self._error is not None:
                raise self._error
            self._pending[req_id] = fut
        try:
            with self._send_lock:
                self._ch.send([("req", req_id, op, args)])
        except BaseException as e:
            with self._lock:
                self._pending.pop(req_id, None)
            if isinstance(e, OSError):
                raise ConnectionError(f"lost the control plane at {self.address}: {e}") from None
            raise
        return fut

    def call(self, op: str, *args: Any, timeout: float | None = 10.0) -> Any:
        """Send a request and wait for its reply.

        Raises:
            ValueError: the server refused the request as wrong (unknown op or id, bad
                arguments, a taken actor name...).
            RtmlSystemError: the server failed on it (a bug, or its storage is unreachable).
            TimeoutError: no reply within ``timeout`` seconds.
            ConnectionError: the connection is lost.
            RuntimeError: called from a subscription callback.
        """
        if threading.current_thread() is self._reader:
            raise RuntimeError(
                "a subscription callback cannot wait on the control plane (it runs on the "
                "thread that reads the replies); use submit() or hand off to another thread")
        fut = self.submit(op, *args)
        try:
            return fut.result(timeout)
        except concurrent.futures.TimeoutError:  # not the builtin TimeoutError before 3.11
            fut.cancel()
            raise TimeoutError(
                f"the control plane at {self.address} did not answer {op!r} within "
                f"{timeout} s") from None

    def _error_of(self, op_value: Any) -> Exception:
        text = str(op_value)
        if text.startswith(_BAD_INPUT):
            return ValueError(text[len(_BAD_INPUT):])
        return RtmlSystemError(f"the control plane at {self.address} failed: {text}")

    # ------------------------------------------------------------------ subscriptions
    def subscribe(self, channel: str, callback: Callback) -> None:
        """Call ``callback(message)`` on the reader thread for every publication on
        ``channel`` from now on (see ``_pubsub`` for the channels and their messages)."""
        with self._lock:
            callbacks = self._subs.setdefault(channel, [])
            first = not callbacks
            callbacks.append(callback)
        if first:
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
        if last:
            self.call("unsubscribe", channel)

    def _drop_callback(self, channel: str, callback: Callback) -> None:
        callbacks = self._subs.get(channel, [])
        if callback in callbacks:
            callbacks.remove(callback)
        if not callbacks:
            self._subs.pop(channel, None)

    # ------------------------------------------------------------------ reader thread
    def _read_loop(self) -> None:
        error: ConnectionError
        try:
            while True:
                for msg in self._ch.receive():
                    self._dispatch(msg)
        except Exception as e:
            error = ConnectionError(f"lost the control plane at {self.address}: {e}")
        with self._lock:
            self._error = error
            pending, self._pending = self._pending, {}
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(error)
        self._ch.close()
        if self._on_disconnect is not None and not self._closing:
            self._on_disconnect(error)

    def _dispatch(self, msg: Any) -> None:
        if msg[0] == "rep":
            _, req_id, ok, value = msg
            with self._lock:
                fut = self._pending.pop(req_id, None)
            if fut is not None and fut.set_running_or_notify_cancel():
                if ok:
                    fut.set_result(value)
                else:
                    fut.set_exception(self._error_of(value))
        elif msg[0] == "pub":
            _, channel, message = msg
            with self._lock:
                callbacks = list(self._subs.get(channel, ()))
            for cb in callbacks:
                try:
                    cb(message)
                except Exception:
                    print(f"rtml: a callback for control-plane channel {channel!r} failed:\n"
                          f"{traceback.format_exc()}", file=sys.stderr, flush=True)

    # ------------------------------------------------------------------ typed wrappers
    def ping(self) -> str:
        return self.call("ping")

    def info(self) -> dict[str, Any]:
        return self.call("info")

    def register_node(self, node_id: str, info: dict[str, Any]) -> NodeInfo:
        return self.call("register_node", node_id, info)

    def heartbeat(self, node_id: str, available: dict[str, float], load: dict[str, float]
                  ) -> bool:
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

    def add_location(self, oid: Ident, node_id: str, size: int, owner: Any = None
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

    def get_events(self, task_id: Ident | None = None, since: int = 0, limit: int = 1000
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
