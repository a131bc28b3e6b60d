"""The HTTP proxy: an async actor running uvicorn on the shared port (SO_REUSEPORT).

::

    client ──HTTP/1.1 keep-alive──▶ kernel spreads connections over the proxies (one per
    core, all bound to host:port) ──▶ Proxy ASGI app: auth, /-/ routes, longest route_prefix
    ──▶ Router.assign (the proxy's own router per deployment: power of two choices, one
    actor call) ──▶ Replica.handle_http ──▶ (status, headers, body, version) ──▶ response
    with x-rtml-version

The proxy never runs user code: a user exception is a 500 the replica built; every failure
here is answered (4xx/5xx) and logged, never raised out of the ASGI app.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import os
import socket
import traceback
import uuid
from typing import Any

from rtml.serve import _context
from rtml.serve._errors import BackPressureError, DeploymentUnavailableError
from rtml.serve._http import VERSION_HEADER
from rtml.serve._multiplex import MODEL_ID_HEADER
from rtml.serve._router import Router, _died_types

_MODEL_HEADER = MODEL_ID_HEADER.encode()
_TEXT = [(b"content-type", b"text/plain; charset=utf-8")]
STATS_PERIOD_S = 1.0


def _response(status: int, msg: str, extra: list | None = None) -> tuple[int, list, bytes]:
    return status, [*_TEXT, *(extra or [])], msg.encode()


class Proxy:
    """One HTTP proxy process (created by the controller; not for direct use)."""

    def __init__(self, proxy_id: str, options: dict[str, Any], engine: str) -> None:
        _context.set_engine(engine)
        self.proxy_id = proxy_id
        self.host: str = options["host"]
        self.port: int = options["port"]
        self.max_body = int(options["max_body_bytes"])
        token = options.get("auth_token")
        self.auth = f"Bearer {token}".encode() if token else None
        self.routes: list[tuple[str, str, str]] = []  # (prefix, app, ingress), longest first
        self.routers: dict[tuple[str, str], Router] = {}
        self.codes: dict[str, int] = {}
        self.epoch = -1
        self.server: Any = None
        self.tasks: list[asyncio.Task] = []
        self._died = _died_types()

    async def start(self) -> dict[str, Any]:
        """Bind and serve; returns where (raises when the port cannot be bound)."""
        import uvicorn

        # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY on accepted connections only when
        # the listening socket names it (else each response's body waits ~40 ms for the ACK
        # of its headers: Nagle plus delayed ACK).
        sock = socket.socket(
            socket.AF_INET6 if ":" in self.host else socket.AF_INET,
            socket.SOCK_STREAM,
            socket.IPPROTO_TCP,
        )
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            sock.bind((self.host, self.port))
        except OSError as e:
            sock.close()
            raise OSError(
                f"the serve proxy cannot listen on {self.host}:{self.port} ({e}): "
                "pick another port with serve.start(http_options={'port': ...})"
            ) from None
        sock.listen(2048)
        sock.setblocking(False)

        # A plain function, interface named: on Ray the actor's methods are wrapped (callable
        # with any arguments, returning a coroutine), which uvicorn's detection takes for an
        # app factory or an ASGI2 app.
        async def app(scope: dict, receive: Any, send: Any) -> None:
            await self.__call__(scope, receive, send)

        config = uvicorn.Config(
            app,
            interface="asgi3",
            lifespan="off",
            log_config=None,
            log_level="warning",
            access_log=False,
            http="h11",
            ws="none",
            timeout_keep_alive=90,
            server_header=False,
            date_header=False,
            backlog=2048,
        )
        self.server = uvicorn.Server(config)
        loop = asyncio.get_running_loop()
        _context.own_loop(loop)
        self.tasks.append(loop.create_task(self.server.serve(sockets=[sock])))
        self.tasks.append(loop.create_task(self._listen_routes()))
        self.tasks.append(loop.create_task(self._push_stats()))
        while not self.server.started:
            if self.tasks[0].done():
                self.tasks[0].result()  # raises why it stopped
                raise RuntimeError("the serve proxy's HTTP server stopped at start")
            await asyncio.sleep(0.005)
        return {"pid": os.getpid(), "host": self.host, "port": self.port}

    async def ping(self) -> int:
        """The controller's liveness check."""
        return os.getpid()

    # ------------------------------------------------------------------ control
    async def _listen_routes(self) -> None:
        ctl = _context.get_controller()
        while ctl is not None:
            try:
                update = await ctl.listen_routes.remote(self.epoch)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                if isinstance(e, self._died):
                    return
                await asyncio.sleep(0.2)
                continue
            if update is None:
                continue
            self.epoch = update["epoch"]
            routes = [(p, a, d) for p, (a, d) in update["routes"].items()]
            self.routes = sorted(routes, key=lambda r: -len(r[0]))

    async def _push_stats(self) -> None:
        ctl = _context.get_controller()
        while ctl is not None:
            await asyncio.sleep(STATS_PERIOD_S)
            queued = {f"{a}/{d}": r.queued() for (a, d), r in self.routers.items()}
            try:
                await ctl.report_proxy.remote(self.proxy_id, dict(self.codes), queued)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                if isinstance(e, self._died):
                    return

    def _router(self, app: str, dep: str) -> Router:
        r = self.routers.get((app, dep))
        if r is None or r.deleted:
            r = Router(app, dep, asyncio.get_running_loop())
            # HTTP without max_queued_requests: a bounded queue (100, or ten times what the
            # replicas run at once), then 503 + Retry-After instead of waiting without end.
            r.queue_limit_default = 100
            r.start()
            self.routers[(app, dep)] = r
        return r

    def _match(self, path: str) -> tuple[str, str, str] | None:
        for prefix, app, dep in self.routes:
            if prefix == "/" or path == prefix or path.startswith(prefix.rstrip("/") + "/"):
                return prefix, app, dep
        return None

    # ------------------------------------------------------------------ ASGI
    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1003})
            return
        try:
            status, headers, body = await self._handle(scope, receive)
        except Exception as e:  # a bug here must not take the proxy down
            eid = uuid.uuid4().hex[:12]
            print(  # noqa: T201
                f"[rtml.serve] proxy {self.proxy_id} error {eid}:\n"
                f"{''.join(traceback.format_exception(e))}",
                flush=True,
            )
            status, headers, body = _response(500, f"serve proxy error (error id {eid})")
        key = str(status)
        self.codes[key] = self.codes.get(key, 0) + 1
        headers = [h for h in headers if h[0] != b"content-length"]
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _handle(self, scope: dict, receive: Any) -> tuple[int, list, bytes]:
        path: str = scope["path"]
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        if path == "/-/healthz":
            return _response(200, "success")
        if self.auth is not None:
            given = next((v for k, v in headers if k == b"authorization"), b"")
            if not hmac.compare_digest(given, self.auth):
                return _response(
                    401,
                    "missing or wrong bearer token: send the header "
                    "'Authorization: Bearer <token>' (the serve auth_token)",
                    [(b"www-authenticate", b"Bearer")],
                )
        if path == "/-/routes":
            body = json.dumps({p: a for p, a, _ in self.routes}).encode()
            return 200, [(b"content-type", b"application/json")], body
        if path == "/-/metrics":
            ctl = _context.get_controller()
            if ctl is None:
                return _response(503, "serve is not running")
            text = await asyncio.wait_for(_await(ctl.metrics_text.remote()), 10)
            return 200, [(b"content-type", b"text/plain; version=0.0.4")], text.encode()
        match = self._match(path)
        if match is None:
            return _response(
                404,
                f"no application is routed at {path!r}; routes: "
                f"{', '.join(p for p, _, _ in self.routes) or 'none'}",
            )
        prefix, app, dep = match
        length = next((v for k, v in headers if k == b"content-length"), None)
        if length is not None:
            try:
                n = int(length)
            except ValueError:
                return _response(400, f"bad content-length header {length!r}")
            if n > self.max_body:
                return _response(
                    413,
                    f"request body of {n} bytes is over the limit of "
                    f"{self.max_body} bytes (http_options max_body_bytes)",
                )
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return _response(499, "client disconnected")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                return _response(
                    413,
                    f"request body is over the limit of {self.max_body} "
                    "bytes (http_options max_body_bytes)",
                )
            chunks.append(chunk)
            if not message.get("more_body"):
                break
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        model_id = next((v for k, v in headers if k == _MODEL_HEADER), b"").decode()
        root = "" if prefix == "/" else prefix.rstrip("/")
        wire = (
            scope["method"],
            path,
            root,
            scope.get("query_string", b""),
            headers,
            scope.get("client"),
            body,
        )
        try:
            status, out_headers, out_body, version = await self._router(app, dep).assign(
                "__call__", (), {}, model_id, wire
            )
        except BackPressureError as e:
            return _response(503, f"{app}: {e}", [(b"retry-after", b"1")])
        except DeploymentUnavailableError as e:
            return _response(503, str(e), [(b"retry-after", b"1")])
        except self._died:
            return _response(
                503,
                f"{app}: the replicas serving this request died; retry",
                [(b"retry-after", b"1")],
            )
        out_headers = list(out_headers)
        out_headers.append((VERSION_HEADER.encode(), str(version).encode()))
        return status, out_headers, out_body


async def _await(ref: Any) -> Any:
    return await ref
