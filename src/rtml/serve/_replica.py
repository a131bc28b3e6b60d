"""A replica: an async actor holding one instance of the user's deployment.

::

    router ──handle_request(method, args, kwargs, model_id)──▶ Replica ──▶ (value, version)
    proxy  ──handle_http(wire request, model_id)─────────────▶ Replica ──▶ (status, headers,
                                                                            body, version)
    controller ──initialize / check_health / reconfigure / stats / drain──▶ Replica

A request reads the live ``(instance, version)`` pair once, when it starts, and finishes on it.
``reconfigure`` runs the user's ``reconfigure(user_config)`` on a shallow copy of the live
instance (in a thread when it is sync, so requests keep being served), then swaps the pair in
one assignment: the switch happens between requests and blocks none of them. At most
``max_ongoing_requests`` requests run at once; the others wait in the replica's queue.
"""

from __future__ import annotations

import asyncio
import copy
import inspect
import logging
import os
import time
import traceback
from typing import Any

import cloudpickle

from rtml.serve import _context, _direct
from rtml.serve._http import WireRequest, error_response, make_request, render
from rtml.serve._metrics import RequestStats
from rtml.serve._multiplex import reset_model_id, set_model_id

log = logging.getLogger("rtml.serve")


async def _call(fn: Any, *args: Any, **kwargs: Any) -> Any:
    out = fn(*args, **kwargs)
    if inspect.isawaitable(out):
        out = await out
    return out


class Replica:
    """One replica of a deployment (created by the controller; not for direct use)."""

    def __init__(
        self,
        replica_id: str,
        app: str,
        deployment: str,
        code: bytes,
        user_config: Any,
        version: str,
        max_ongoing: int,
        engine: str,
    ) -> None:
        _context.set_engine(engine)
        self.replica_id = replica_id
        self.app = app
        self.deployment = deployment
        self._code = code
        self._initial_config = user_config
        self.version = version
        self.max_ongoing = max_ongoing
        self.is_function = False
        self._live: tuple[Any, str] | None = None
        self._asgi: Any = None
        self.ongoing = 0
        self.stats = RequestStats()
        self._sem: asyncio.Semaphore | None = None
        self._idle: asyncio.Event | None = None
        self._pending: dict[str, Any] = {}
        self._server: _direct.Server | None = None

    # ------------------------------------------------------------------ lifecycle
    async def initialize(self) -> dict[str, Any]:
        """Construct the user's object (and apply its user_config), then open the direct
        socket; raises what the user's code raises."""
        _context.own_loop(asyncio.get_running_loop())
        self._sem = asyncio.Semaphore(self.max_ongoing)
        self._idle = asyncio.Event()
        self._idle.set()
        target, args, kwargs = cloudpickle.loads(self._code)
        self._code = b""
        if inspect.isclass(target):
            self._asgi = getattr(target, "_serve_asgi_app", None)
            instance = target(*args, **kwargs)
            if inspect.isawaitable(instance):  # pragma: no cover - not a Python feature
                instance = await instance
            if self._initial_config is not None:
                fn = getattr(instance, "reconfigure", None)
                if fn is None:
                    raise TypeError(
                        f"deployment {self.deployment} has a user_config but its "
                        "class defines no reconfigure(self, config) method"
                    )
                await _call(fn, self._initial_config)
        else:
            self.is_function = True
            instance = target
        self._live = (instance, self.version)
        self._server = _direct.Server(self._direct)
        path = await self._server.start()
        return {"pid": os.getpid(), "host": _direct.host_id(), "path": path}

    async def _direct(self, kind: int, payload: Any) -> Any:
        if kind == _direct.HTTP:
            return await self.handle_http(*payload)
        return await self.handle_request(*payload)

    async def check_health(self) -> bool:
        """Run the user's ``check_health`` if it has one; raises when it does."""
        if self._live is None:
            raise RuntimeError(f"replica {self.replica_id} is not initialized")
        fn = getattr(self._live[0], "check_health", None) if not self.is_function else None
        if fn is not None:
            await _call(fn)
        return True

    async def prepare(self, user_config: Any, version: str) -> str:
        """Build ``version``: the user's ``reconfigure(user_config)`` on a shallow copy of the
        live instance, in a thread when it is sync (requests keep being served meanwhile).

        Raises:
            what the user's ``reconfigure`` raises (the live instance keeps serving).
        """
        assert self._live is not None
        instance, _ = self._live
        if self.is_function:
            self._pending[version] = instance
            return version
        if getattr(instance, "reconfigure", None) is None:
            raise TypeError(
                f"deployment {self.deployment} got a user_config but its class "
                "defines no reconfigure(self, config) method"
            )
        new = copy.copy(instance)
        fn = new.reconfigure
        if inspect.iscoroutinefunction(fn):
            await fn(user_config)
        else:
            await asyncio.to_thread(fn, user_config)
        self._pending[version] = new
        return version

    async def commit(self, version: str) -> str:
        """Switch to a prepared version: requests that start from now on run on it."""
        new = self._pending.pop(version)
        self._live = (new, version)  # one assignment: in-flight requests keep the old pair
        self.version = version
        self._pending.clear()
        return version

    async def abort(self, version: str) -> None:
        """Drop a prepared version (another replica failed to prepare it)."""
        self._pending.pop(version, None)

    async def stats_now(self) -> dict[str, Any]:
        return {
            "replica_id": self.replica_id,
            "version": self.version,
            "ongoing": self.ongoing,
            "pid": os.getpid(),
            **self.stats.to_wire(),
        }

    async def drain(self, timeout_s: float) -> int:
        """Wait until no request runs here (or ``timeout_s``); the number still running."""
        if self._idle is not None and self.ongoing:
            try:
                await asyncio.wait_for(self._idle.wait(), timeout_s)
            except asyncio.TimeoutError:
                pass
        return self.ongoing

    # ------------------------------------------------------------------ requests
    async def handle_request(
        self, method: str, args: tuple, kwargs: dict, model_id: str
    ) -> tuple[Any, str]:
        """One handle call: ``(value, version)``; the user's exception propagates."""
        sem = self._enter()
        t0 = time.perf_counter()
        ok = False
        token = set_model_id(model_id) if model_id else None
        try:
            async with sem:
                instance, version = self._live  # type: ignore[misc]
                if self.is_function:
                    if method != "__call__":
                        raise AttributeError(
                            f"deployment {self.deployment} is a function: "
                            f"call handle.remote(...), not .{method}"
                        )
                    fn = instance
                else:
                    fn = getattr(instance, method, None)
                    if fn is None:
                        raise AttributeError(
                            f"deployment {self.deployment} has no method {method!r}"
                        )
                value = await _call(fn, *args, **kwargs)
                ok = True
                return value, version
        finally:
            if token is not None:
                reset_model_id(token)
            self._exit(t0, ok)

    async def handle_http(self, wire: WireRequest, model_id: str) -> tuple:
        """One HTTP request: ``(status, headers, body, version)``; never raises for user
        errors (a 500 with an error id, the traceback in the replica's log)."""
        sem = self._enter()
        t0 = time.perf_counter()
        ok = False
        token = set_model_id(model_id) if model_id else None
        version = self.version
        try:
            async with sem:
                instance, version = self._live  # type: ignore[misc]
                try:
                    if self._asgi is not None:
                        resp = await _run_asgi(self._asgi, wire, instance)
                    else:
                        request = make_request(wire)
                        resp = render(await _call(instance, request))
                    ok = True
                except Exception as e:
                    resp, error_id = error_response(e)
                    if error_id is None:
                        ok = True  # the client's fault: not counted as a deployment error
                    else:
                        print(  # noqa: T201
                            f"[rtml.serve] {self.app}/{self.deployment} replica "
                            f"{self.replica_id} error {error_id}:\n"
                            f"{''.join(traceback.format_exception(e))}",
                            flush=True,
                        )
                return (*resp, version)
        finally:
            if token is not None:
                reset_model_id(token)
            self._exit(t0, ok)

    def _enter(self) -> asyncio.Semaphore:
        if self._sem is None or self._live is None:
            raise RuntimeError(f"replica {self.replica_id} got a request before it was initialized")
        self.ongoing += 1
        assert self._idle is not None
        self._idle.clear()
        return self._sem

    def _exit(self, t0: float, ok: bool) -> None:
        self.ongoing -= 1
        self.stats.record((time.perf_counter() - t0) * 1e3, ok)
        if not self.ongoing:
            assert self._idle is not None
            self._idle.set()


async def _run_asgi(app: Any, wire: WireRequest, instance: Any) -> tuple:
    """Run an ASGI app (``@serve.ingress``) on one request; (status, headers, body)."""
    method, path, root_path, query, headers, client, body = wire
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": root_path,
        "query_string": query,
        "headers": headers,
        "client": client,
        "server": ("127.0.0.1", 0),
        "state": {"serve_instance": instance},
    }
    sent = False
    status = 500
    out_headers: list = []
    chunks: list[bytes] = []

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            # An app listening for a disconnect waits until it is done with the response.
            await asyncio.get_running_loop().create_future()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status, out_headers
        if message["type"] == "http.response.start":
            status = message["status"]
            out_headers = list(message.get("headers", []))
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope, receive, send)
    return (status, out_headers, b"".join(chunks))
