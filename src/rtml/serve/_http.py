"""HTTP on the replica's side: a proxied request becomes a Starlette ``Request``; what
``__call__`` returns becomes (status, headers, body).

Pure functions: no sockets, so the unit tests cover them directly.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

# (method, path, root_path, query_string, headers, client, body) as the proxy sends it.
WireRequest = tuple[str, str, str, bytes, list[tuple[bytes, bytes]], Any, bytes]
WireResponse = tuple[int, list[tuple[bytes, bytes]], bytes]

VERSION_HEADER = "x-rtml-version"


class MalformedRequestError(ValueError):
    """The request body is not what the deployment asked for (e.g. not JSON): a 400."""


class _Request(Request):
    """A Starlette request whose ``json()`` failure is the client's fault (400), not a bug."""

    async def json(self) -> Any:
        body = await self.body()
        try:
            return json.loads(body)
        except (ValueError, UnicodeDecodeError) as e:
            raise MalformedRequestError(f"the request body is not valid JSON: {e}") from None


def make_request(wire: WireRequest) -> Request:
    method, path, root_path, query, headers, client, body = wire
    scope = {
        "type": "http",
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
    }
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return _Request(scope, receive)


def _json_default(o: Any) -> Any:
    if hasattr(o, "tolist"):  # numpy arrays and scalars
        return o.tolist()
    if hasattr(o, "model_dump"):  # pydantic
        return o.model_dump()
    if isinstance(o, (set, frozenset)):
        return list(o)
    raise TypeError(f"{type(o).__name__} is not JSON serializable")


def render(value: Any) -> WireResponse:
    """What a deployment returned, as an HTTP response.

    Raises:
        TypeError: a value that is neither a Response, str, bytes nor JSON-serializable.
    """
    if isinstance(value, StreamingResponse):
        raise TypeError(
            "StreamingResponse is not supported by rtml.serve yet: return the "
            "whole body (a Response, str, bytes or a JSON value)"
        )
    if isinstance(value, Response):
        return (value.status_code, list(value.raw_headers), bytes(value.body))
    if isinstance(value, str):
        return (200, [(b"content-type", b"text/plain; charset=utf-8")], value.encode())
    if isinstance(value, (bytes, bytearray, memoryview)):
        return (200, [(b"content-type", b"application/octet-stream")], bytes(value))
    try:
        body = json.dumps(value, default=_json_default, separators=(",", ":")).encode()
    except (TypeError, ValueError) as e:
        raise TypeError(
            f"the deployment returned a {type(value).__name__}, which is not "
            f"JSON serializable ({e}): return a Starlette Response, str, bytes "
            f"or a JSON value"
        ) from None
    return (200, [(b"content-type", b"application/json")], body)


def error_response(e: BaseException) -> tuple[WireResponse, str | None]:
    """The response for an exception raised while handling a request, and the error id to log
    it under (None when it is the client's fault)."""
    if isinstance(e, MalformedRequestError):
        return _text(400, str(e)), None
    if isinstance(e, HTTPException):
        headers = [(k.lower().encode(), v.encode()) for k, v in (e.headers or {}).items()]
        status, body = _text(e.status_code, str(e.detail))[::2]
        return (status, [(b"content-type", b"text/plain; charset=utf-8"), *headers], body), None
    error_id = uuid.uuid4().hex[:12]
    return _json(
        500,
        {
            "error": "the deployment raised an exception",
            "error_id": error_id,
            "type": type(e).__name__,
        },
    ), error_id


def _text(status: int, msg: str) -> WireResponse:
    return (status, [(b"content-type", b"text/plain; charset=utf-8")], msg.encode())


def _json(status: int, obj: Any) -> WireResponse:
    return (status, [(b"content-type", b"application/json")], json.dumps(obj).encode())


def text_response(status: int, msg: str) -> WireResponse:
    return _text(status, msg)


def json_response(status: int, obj: Any) -> WireResponse:
    return _json(status, obj)
