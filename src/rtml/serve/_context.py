"""Per-process serve state: the engine (rtml or Ray), the controller's name, and the
background event loop that drives handles called from plain (non-async) threads."""

from __future__ import annotations

import asyncio
import os
import threading
from types import ModuleType
from typing import Any

from rtml.util.engine import resolve

CONTROLLER_NAME = "rtml_serve_controller"
NAMESPACE = "serve"
DEFAULT_APP_NAME = "default"

_engine_name: str = os.environ.get("RTML_SERVE_ENGINE", "rtml")
_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_thread: threading.Thread | None = None
_controller: Any = None
_controller_job: Any = None  # the engine session the cached handle belongs to
# Event loops serve owns (replicas', proxies'): handles called on them route on them. A user's
# loop may close at any time (asyncio.run), so calls from it route on the serve loop thread.
_owned_loops: set[int] = set()


def own_loop(loop: asyncio.AbstractEventLoop) -> None:
    _owned_loops.add(id(loop))


def owned_running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return None
    return loop if id(loop) in _owned_loops else None


def set_engine(name: str) -> None:
    global _engine_name
    resolve(name)  # fails now, with a message, when the engine is not there
    _engine_name = name


def engine_name() -> str:
    return _engine_name


def engine() -> ModuleType:
    return resolve(_engine_name)


def get_controller(create: bool = False) -> Any:
    """The controller's actor handle (cached); None when serve is not running."""
    global _controller, _controller_job
    eng = engine()
    if _controller is not None:
        if eng.is_initialized() and _job(eng) == _controller_job:
            return _controller
        _controller = None  # the engine was shut down (and maybe started again) since
    if not create and not eng.is_initialized():
        return None
    try:
        _controller = eng.get_actor(CONTROLLER_NAME, namespace=NAMESPACE)
    except ValueError:
        return None
    _controller_job = _job(eng)
    return _controller


def _job(eng: ModuleType) -> Any:
    """Which engine session this is (a new ``init`` after ``shutdown`` is a new one)."""
    try:
        ctx = eng.get_runtime_context()
        return (ctx.get_job_id(), ctx.get_node_id())
    except Exception:
        return None


def stale_session() -> bool:
    """True when the cached controller handle is from an engine session that has ended."""
    eng = engine()
    return _controller is not None and (not eng.is_initialized() or _job(eng) != _controller_job)


def set_controller(handle: Any) -> None:
    global _controller, _controller_job
    _controller = handle
    _controller_job = _job(engine()) if handle is not None else None


def background_loop() -> asyncio.AbstractEventLoop:
    """The process's serve loop (started on first use), for handles called from threads that
    run no event loop."""
    global _loop, _thread
    with _lock:
        if _loop is not None:
            return _loop
        loop = asyncio.new_event_loop()
        started = threading.Event()

        def main() -> None:
            asyncio.set_event_loop(loop)
            own_loop(loop)
            loop.call_soon(started.set)
            loop.run_forever()

        t = threading.Thread(target=main, name="serve-handles", daemon=True)
        t.start()
        started.wait(10)
        _loop, _thread = loop, t
        return loop


def stop_background_loop() -> None:
    """Stop the serve loop (at ``serve.shutdown()``); cancels what still runs on it."""
    global _loop, _thread
    with _lock:
        loop, t, _loop, _thread = _loop, _thread, None, None
    if loop is None or t is None:
        return

    def stop() -> None:
        for task in asyncio.all_tasks(loop):
            task.cancel()
        loop.call_soon(loop.stop)

    loop.call_soon_threadsafe(stop)
    t.join(10)
    _owned_loops.discard(id(loop))
    if not t.is_alive():
        loop.close()
