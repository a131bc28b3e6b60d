"""The dashboard's web app (Starlette): a page, its script, and read-only JSON endpoints.

::

    browser ── GET / , /static/* ─────────────────────────────▶ files read once at start
            ── GET /api/snapshot?since=N&wait=S (long poll) ──▶ Backend ──▶ DashboardModel
            ── GET /api/{nodes,tasks,actors,...} ─────────────▶   (one thread: the source's)
            ── GET /api/logs/{node_id}/{pid}?tail=N ──────────▶
            ── GET /api/trace.json (Chrome trace, all events) ─▶
            ── GET /metrics (Prometheus text, register_metrics) ▶
    Guard (outermost): bound to loopback, only Host: localhost/127.0.0.1/[::1] (no DNS
    rebinding); bound elsewhere, the cluster token (``?token=<hex>`` once, then a cookie; or
    ``Authorization: Bearer <hex>``), else 401.

Every endpoint is async and calls the model on the backend's single thread, so no request ever
runs in a thread pool of its own and the source is only touched from one thread.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import math
import threading
from concurrent.futures import ThreadPoolExecutor
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from rtml.dashboard._hosts import is_loopback
from rtml.dashboard._model import DashboardModel
from rtml.dashboard._panels import metrics_text

STATIC = Path(__file__).parent / "static"
COOKIE = "rtml_dashboard"
POLL_S = 0.1  # how often a long poll looks for new task events
MAX_WAIT_S = 5.0
_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
    "style-src 'self'; script-src 'self'; frame-ancestors 'none'",
}
_STATIC_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}


def cookie_value(token: bytes) -> str:
    """What the cookie holds: proves the token was shown once, without being the token."""
    return hmac.new(token, b"rtml-dashboard-cookie", hashlib.sha256).hexdigest()


def _json_safe(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {str(k): _json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_json_safe(x) for x in v]
    return v


def json_response(data: Any, status: int = 200) -> Response:
    try:
        body = json.dumps(data, default=str, allow_nan=False)
    except ValueError:  # an infinite or NaN number somewhere: JSON has none
        body = json.dumps(_json_safe(data), default=str, allow_nan=False)
    return Response(body, status, media_type="application/json", headers=_HEADERS)


class Guard:
    """ASGI middleware: who may read the dashboard (see the module docstring)."""

    def __init__(self, app: Any, token: bytes | None, open_: bool) -> None:
        self.app = app
        self.token = token
        self.open = open_
        self.cookie = cookie_value(token) if token is not None else None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {
            k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])
        }
        if self.open:
            host = headers.get("host", "")
            name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
            if not is_loopback(name):
                await _deny(
                    403,
                    "this dashboard only answers requests addressed to localhost or 127.0.0.1",
                    scope,
                    receive,
                    send,
                )
                return
            await self.app(scope, receive, send)
            return
        assert self.token is not None
        assert self.cookie is not None
        query = parse_qsl(scope.get("query_string", b"").decode("latin-1"))
        given = next((v for k, v in query if k == "token"), None)
        if given is not None:
            if hmac.compare_digest(given.strip().lower().encode(), self.token.hex().encode()):
                rest = urlencode([(k, v) for k, v in query if k != "token"])
                where = scope.get("root_path", "") + scope["path"] + (f"?{rest}" if rest else "")
                resp = Response(status_code=303, headers={"Location": where, **_HEADERS})
                resp.set_cookie(COOKIE, self.cookie, httponly=True, samesite="strict", path="/")
                await resp(scope, receive, send)
                return
            await _deny(401, "wrong token", scope, receive, send)
            return
        auth = headers.get("authorization", "")
        if auth.lower().startswith("bearer ") and hmac.compare_digest(
            auth[7:].strip().lower().encode(), self.token.hex().encode()
        ):
            await self.app(scope, receive, send)
            return
        jar: SimpleCookie = SimpleCookie()
        try:
            jar.load(headers.get("cookie", ""))
        except Exception:
            pass
        morsel = jar.get(COOKIE)
        if morsel is not None and hmac.compare_digest(morsel.value.encode(), self.cookie.encode()):
            await self.app(scope, receive, send)
            return
        await _deny(
            401,
            "this dashboard needs the cluster's token: open it once as "
            "<address>/?token=<hex token> (`rtml start --head` printed it)",
            scope,
            receive,
            send,
        )


async def _deny(status: int, text: str, scope: Any, receive: Any, send: Any) -> None:
    await PlainTextResponse(text + "\n", status, headers=_HEADERS)(scope, receive, send)


class Backend:
    """The model, called on one thread of its own (``rtml-dashboard-source``)."""

    def __init__(self, model: DashboardModel) -> None:
        self.model = model
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="rtml-dashboard-source")
        self.stopping = threading.Event()

    async def call(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    def close(self) -> None:
        """Close the source on its own thread, then end that thread."""
        try:
            self.executor.submit(self.model.close).result()
        finally:
            self.executor.shutdown(wait=True)


def _float(request: Request, name: str, default: float, lo: float, hi: float) -> float:
    try:
        v = float(request.query_params.get(name, default))
    except ValueError:
        v = default
    return min(hi, max(lo, v)) if math.isfinite(v) else default


def build_app(backend: Backend, token: bytes | None = None, open_: bool = True) -> Any:
    """The ASGI app (Starlette behind the Guard) over ``backend``."""
    files = {
        p.name: (p.read_bytes(), _STATIC_TYPES.get(p.suffix, "application/octet-stream"))
        for p in STATIC.iterdir()
        if p.is_file()
    }
    model = backend.model

    async def page(request: Request) -> Response:
        body, kind = files["index.html"]
        return Response(body, media_type=kind, headers=_HEADERS)

    async def static(request: Request) -> Response:
        found = files.get(request.path_params["name"])
        if found is None:
            return PlainTextResponse("not found\n", 404)
        return Response(found[0], media_type=found[1], headers=_HEADERS)

    async def snapshot(request: Request) -> Response:
        """Page data; with ``since`` and ``wait``, answers as soon as the event cursor moves
        past ``since``, or after ``wait`` seconds (a long poll)."""
        since = int(_float(request, "since", -1, -1, 1 << 62))
        wait = _float(request, "wait", 0.0, 0.0, MAX_WAIT_S)
        window = _float(request, "window", 30.0, 1.0, 3600.0)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while since >= 0 and not backend.stopping.is_set():
            try:
                if await backend.call(model.ingest) != since:
                    break  # new events (or a log that started over: the page reloads it)
            except Exception:
                break  # the snapshot reports it
            if loop.time() + POLL_S > deadline:
                break
            await asyncio.sleep(POLL_S)
        return json_response(await backend.call(model.snapshot, window))

    def part(name: str) -> Any:
        async def endpoint(request: Request) -> Response:
            window = _float(request, "window", 30.0, 1.0, 3600.0)
            data = await backend.call(model.snapshot, window)
            return json_response(data[name])

        return endpoint

    async def log_text(request: Request) -> Response:
        try:
            pid = int(request.path_params["pid"])
        except ValueError:
            return json_response({"error": "pid is a number"}, 400)
        tail_s = request.query_params.get("tail")
        tail = int(_float(request, "tail", 1000, 1, 1_000_000)) if tail_s else None
        try:
            text = await backend.call(model.read_log, request.path_params["node_id"], pid, tail)
        except ValueError as e:
            return json_response({"error": str(e)}, 404)
        except Exception as e:
            return json_response({"error": f"{type(e).__name__}: {e}"}, 503)
        return json_response({"node_id": request.path_params["node_id"], "pid": pid, "text": text})

    async def trace(request: Request) -> Response:
        try:
            data = await backend.call(model.trace)
        except Exception as e:
            return json_response({"error": f"{type(e).__name__}: {e}"}, 503)
        resp = json_response(data)
        resp.headers["Content-Disposition"] = 'attachment; filename="rtml-timeline.json"'
        return resp

    async def metrics(request: Request) -> Response:
        text = await backend.call(metrics_text)
        return Response(
            text, media_type="text/plain; version=0.0.4; charset=utf-8", headers=_HEADERS
        )

    routes = [
        Route("/", page, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/static/{name}", static, methods=["GET"]),
        Route("/api/snapshot", snapshot, methods=["GET"]),
        *[
            Route(f"/api/{name}", part(name), methods=["GET"])
            for name in (
                "nodes",
                "tasks",
                "actors",
                "objects",
                "workers",
                "timeline",
                "failures",
                "logs",
            )
        ],
        Route("/api/logs/{node_id}/{pid}", log_text, methods=["GET"]),
        Route("/api/trace.json", trace, methods=["GET"]),
    ]
    return Guard(Starlette(routes=routes), token, open_)
