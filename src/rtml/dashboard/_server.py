"""Start and stop the dashboard: a bound socket, then uvicorn on it in a daemon thread.

::

    start_dashboard() ── bind + listen (the URL is known now) ──▶ DashboardHandle
                      └─ thread "rtml-dashboard": wait for the first connection, then import
                         starlette/uvicorn, build the app, serve the socket until stop()
                           └─ thread "rtml-dashboard-source": every source call

Nothing web-related is imported before someone connects, so ``rtml.init()`` pays only for a
socket and an idle thread, and a runtime whose dashboard nobody opens never loads the web stack.
"""

from __future__ import annotations

import selectors
import socket
import sys
import threading
from collections.abc import Callable
from typing import Any

from rtml.dashboard._hosts import is_loopback

DEFAULT_PORT = 8265


def _bind(host: str, port: int | None) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    tries = [DEFAULT_PORT, 0] if port is None else [port]
    for i, p in enumerate(tries):
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, p))
            sock.listen(128)
            sock.setblocking(False)
            return sock
        except OSError:
            sock.close()
            if i == len(tries) - 1:
                raise
    raise AssertionError("unreachable")


class DashboardHandle:
    """A running dashboard.

    Attributes:
        url: ``http://host:port`` to open (no token in it).
        host, port: where it listens.
        token: the token it requires, or None when it is open (bound to loopback).
        error: what ended the server thread early, if anything did.
    """

    def __init__(
        self,
        sock: socket.socket,
        host: str,
        token: bytes | None,
        source_factory: Callable[[], Any],
        max_age: float,
    ) -> None:
        self.host = host
        self.port = int(sock.getsockname()[1])
        shown = (
            "127.0.0.1"
            if host in ("", "0.0.0.0")
            else "[::1]"
            if host == "::"
            else (f"[{host}]" if ":" in host else host)
        )
        self.url = f"http://{shown}:{self.port}"
        self.token = token
        self.error: BaseException | None = None
        self._sock = sock
        self._factory = source_factory
        self._max_age = max_age
        self._lock = threading.Lock()
        self._stopped = False
        self._server: Any = None
        self._backend: Any = None
        self._wake_r, self._wake_w = socket.socketpair()
        self._thread = threading.Thread(target=self._run, name="rtml-dashboard", daemon=True)

    @property
    def login_url(self) -> str:
        """The URL with the token in it (opening it once sets a cookie); ``url`` if open."""
        return self.url if self.token is None else f"{self.url}/?token={self.token.hex()}"

    def _first_client(self) -> bool:
        """Wait until someone connects (True) or stop() is called (False): a runtime whose
        dashboard nobody opens never imports the web stack."""
        with selectors.DefaultSelector() as sel:
            sel.register(self._sock, selectors.EVENT_READ)
            sel.register(self._wake_r, selectors.EVENT_READ)
            while True:
                ready = sel.select()
                if ready:  # a stop() wins over a client that came at the same time
                    return all(key.fileobj is not self._wake_r for key, _ in ready)

    def _run(self) -> None:
        try:
            if not self._first_client():
                return
            import uvicorn

            from rtml.dashboard._app import Backend, build_app
            from rtml.dashboard._model import DashboardModel

            with self._lock:
                if self._stopped:
                    return
                self._backend = Backend(DashboardModel(self._factory, max_age=self._max_age))
                app = build_app(
                    self._backend, self.token, open_=self.token is None and is_loopback(self.host)
                )
                config = uvicorn.Config(
                    app,
                    log_level="warning",
                    access_log=False,
                    lifespan="off",
                    loop="asyncio",
                    http="h11",
                    ws="none",
                    timeout_graceful_shutdown=1,
                    server_header=False,
                )
                self._server = uvicorn.Server(config)
            self._server.run(sockets=[self._sock])
        except BaseException as e:
            self.error = e
            print(f"rtml: the dashboard stopped: {type(e).__name__}: {e}", file=sys.stderr)  # noqa: T201
        finally:
            self._sock.close()
            if self._backend is not None:
                self._backend.close()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving, close the source and end the dashboard's threads. Idempotent."""
        with self._lock:
            self._stopped = True
            if self._backend is not None:
                self._backend.stopping.set()
            if self._server is not None:
                self._server.should_exit = True
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass
        self._thread.join(timeout)
        if not self._thread.is_alive():
            self._wake_r.close()
            self._wake_w.close()

    def __enter__(self) -> DashboardHandle:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"DashboardHandle({self.url!r})"


def start_dashboard(
    source_factory: Callable[[], Any],
    host: str = "127.0.0.1",
    port: int | None = 0,
    token: bytes | None = None,
    max_age: float = 0.5,
) -> DashboardHandle:
    """Serve the read-only dashboard for the runtime that ``source_factory`` reads.

    Args:
        source_factory: returns a ``StateSource`` (``rtml._observability._source``); called
            on the dashboard's own thread when the first page is asked for (and again if it
            raised), and the source is closed by ``stop()``.
        host: address to bind; a loopback one (the default) serves anyone on this machine,
            any other requires ``token``.
        port: 0 for a free port, None for 8265 if it is free (else a free port), or a port.
        token: the cluster's token, required when ``host`` is not a loopback address.
        max_age: seconds a state listing (nodes, actors, objects, ...) may be reused.

    Returns:
        A handle: ``.url`` is known at once (the socket is bound before this returns),
        ``.login_url`` carries the token, ``.stop()`` ends it.

    Raises:
        ValueError: ``host`` is not loopback and no token was given.
        OSError: the port cannot be bound.
    """
    if token is None and not is_loopback(host):
        raise ValueError(
            f"a dashboard bound to {host!r} (not loopback) needs the cluster's token: pass token="
        )
    sock = _bind(host, port)
    handle = DashboardHandle(sock, host, token, source_factory, max_age)
    handle._thread.start()
    return handle
