"""Deployment handles and their responses.

::

    handle.remote(*args) ──▶ on this thread's event loop (inside a replica or an async
                              caller), else on the process's serve loop thread
                          ──▶ Router.assign ──▶ replica ──▶ (value, version)
                          ──▶ DeploymentResponse: .result(timeout_s=), await, or pass it to
                              another handle call (resolved before that call is sent)
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from typing import Any

from rtml.serve import _context
from rtml.serve._router import router_for

__all__ = ["DeploymentHandle", "DeploymentResponse"]


async def _resolve_args(args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    if any(isinstance(a, DeploymentResponse) for a in args):
        args = tuple([await a if isinstance(a, DeploymentResponse) else a for a in args])
    if any(isinstance(v, DeploymentResponse) for v in kwargs.values()):
        kwargs = {k: await v if isinstance(v, DeploymentResponse) else v for k, v in kwargs.items()}
    return args, kwargs


async def _send(
    app: str,
    deployment: str,
    method: str,
    args: tuple,
    kwargs: dict,
    model_id: str,
    snapshot: dict[str, Any] | None = None,
) -> tuple[Any, str]:
    args, kwargs = await _resolve_args(args, kwargs)
    return await router_for(app, deployment, snapshot).assign(method, args, kwargs, model_id)


_snapshots: dict[tuple[str, str], tuple[float, dict[str, Any]]] = {}
SNAPSHOT_TTL_S = 1.0


def _caller_polls() -> bool:
    """True in the main thread of an rtml task or single-threaded actor: there only that
    thread can wait for engine replies, so it fetches the replica set itself."""
    if (
        _context.engine_name() != "rtml"
        or threading.current_thread() is not threading.main_thread()
    ):
        return False
    try:
        return _context.engine().get_runtime_context().get_task_id() is not None
    except Exception:
        return False


def _snapshot(app: str, deployment: str) -> dict[str, Any]:
    key = (app, deployment)
    now = time.monotonic()
    hit = _snapshots.get(key)
    if hit is not None and now - hit[0] < SNAPSHOT_TTL_S:
        return hit[1]
    ctl = _context.get_controller()
    if ctl is None:
        raise RuntimeError("serve is not running: call serve.run() first")
    update = _context.engine().get(ctl.listen.remote(app, deployment, -1, ""), timeout=30)
    _snapshots[key] = (now, update)
    return update


class DeploymentResponse:
    """The future result of one handle call.

    ``.result(timeout_s=)`` blocks for it (not from inside an event loop: ``await`` it
    there); ``await response`` gives it in async code; passed as an argument to another
    handle call, it is resolved first. ``.version`` names the deployment version that
    served it, once it is done.
    """

    def __init__(
        self, fut: asyncio.Future | concurrent.futures.Future, loop: asyncio.AbstractEventLoop
    ) -> None:
        self._fut = fut
        self._loop = loop
        self._version: str | None = None

    def _unwrap(self, out: tuple[Any, str]) -> Any:
        value, self._version = out
        return value

    def result(self, *, timeout_s: float | None = None) -> Any:
        """The call's value.

        Args:
            timeout_s: seconds to wait at most (None: no limit).

        Raises:
            TimeoutError: not done within ``timeout_s``.
            RuntimeError: called on the event loop that runs the request (use ``await``).
            the exception the deployment raised, or BackPressureError /
            DeploymentUnavailableError when no replica could take it.
        """
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if isinstance(self._fut, asyncio.Future):
            if running is self._loop:
                raise RuntimeError(
                    "DeploymentResponse.result() would block the event loop "
                    "this request runs on: use `await response` instead"
                )
            cf = asyncio.run_coroutine_threadsafe(_wait(self._fut), self._loop)
        else:
            cf = self._fut
        try:
            return self._unwrap(cf.result(timeout_s))
        except concurrent.futures.TimeoutError:
            raise TimeoutError(
                f"the deployment's response did not arrive within {timeout_s} s"
            ) from None

    def __await__(self) -> Any:
        return self._await().__await__()

    async def _await(self) -> Any:
        if isinstance(self._fut, asyncio.Future) and asyncio.get_running_loop() is self._loop:
            return self._unwrap(await self._fut)
        if isinstance(self._fut, asyncio.Future):
            cf = asyncio.run_coroutine_threadsafe(_wait(self._fut), self._loop)
            return self._unwrap(await asyncio.wrap_future(cf))
        return self._unwrap(await asyncio.wrap_future(self._fut))

    @property
    def version(self) -> str | None:
        """The version of the deployment that served this request (None until done)."""
        if (
            self._version is None
            and self._fut.done()
            and not self._fut.cancelled()
            and self._fut.exception() is None
        ):
            self._version = self._fut.result()[1]
        return self._version

    def cancel(self) -> None:
        """Cancel the request if it has not finished."""
        if isinstance(self._fut, asyncio.Future):
            self._loop.call_soon_threadsafe(self._fut.cancel)
        else:
            self._fut.cancel()


async def _wait(fut: asyncio.Future) -> Any:
    return await asyncio.shield(fut)


class _MethodHandle:
    def __init__(self, handle: DeploymentHandle, method: str) -> None:
        self._handle = handle
        self._method = method

    def remote(self, *args: Any, **kwargs: Any) -> DeploymentResponse:
        return self._handle._call(self._method, args, kwargs)

    def options(self, **opts: Any) -> _MethodHandle:
        return _MethodHandle(self._handle.options(**opts), self._method)


class DeploymentHandle:
    """Calls into a deployment: ``handle.remote(...)``, ``handle.method.remote(...)``.

    Handles pickle to their names: bound into another deployment, passed to a task or an
    actor, they route from wherever they are used.
    """

    def __init__(
        self,
        deployment_name: str,
        app_name: str = _context.DEFAULT_APP_NAME,
        *,
        method_name: str = "__call__",
        multiplexed_model_id: str = "",
    ) -> None:
        self.deployment_name = deployment_name
        self.app_name = app_name
        self._method = method_name
        self._model_id = multiplexed_model_id

    def __reduce__(self) -> Any:
        return (_rebuild, (self.deployment_name, self.app_name, self._method, self._model_id))

    def __repr__(self) -> str:
        return f"DeploymentHandle(deployment={self.deployment_name!r}, app={self.app_name!r})"

    def __getattr__(self, name: str) -> _MethodHandle:
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        return _MethodHandle(self, name)

    def options(
        self,
        *,
        method_name: str | None = None,
        multiplexed_model_id: str | None = None,
        stream: bool = False,
        use_new_handle_api: bool = True,
        **_ignored: Any,
    ) -> DeploymentHandle:
        """A copy of this handle with other call options.

        Args:
            method_name: the method ``remote()`` calls (default ``__call__``).
            multiplexed_model_id: the model id the replica sees in
                ``serve.get_multiplexed_model_id()``; requests for one id go to the replica
                that served it last while it has room.
            stream: not supported (raises ValueError).

        Raises:
            ValueError: ``stream=True``.
        """
        if stream:
            raise ValueError(
                "streaming handle calls (stream=True) are not supported by "
                "rtml.serve yet: return the whole result"
            )
        return DeploymentHandle(
            self.deployment_name,
            self.app_name,
            method_name=self._method if method_name is None else method_name,
            multiplexed_model_id=(
                self._model_id if multiplexed_model_id is None else multiplexed_model_id
            ),
        )

    def remote(self, *args: Any, **kwargs: Any) -> DeploymentResponse:
        """Call the deployment (its ``__call__``, or the handle's ``method_name``).

        Returns:
            A DeploymentResponse at once; the request is routed in the background.
        """
        return self._call(self._method, args, kwargs)

    def _call(self, method: str, args: tuple, kwargs: dict) -> DeploymentResponse:
        snapshot = None
        loop = _context.owned_running_loop()
        if loop is None and _caller_polls():
            snapshot = _snapshot(self.app_name, self.deployment_name)
        coro = _send(
            self.app_name, self.deployment_name, method, args, kwargs, self._model_id, snapshot
        )
        if loop is not None:
            return DeploymentResponse(loop.create_task(coro), loop)
        bg = _context.background_loop()
        return DeploymentResponse(asyncio.run_coroutine_threadsafe(coro, bg), bg)


def _rebuild(deployment: str, app: str, method: str, model_id: str) -> DeploymentHandle:
    return DeploymentHandle(deployment, app, method_name=method, multiplexed_model_id=model_id)
