"""``await ref`` and ``ref.future()``: completion callbacks instead of blocked threads.

::

    await ref ──▶ client.on_ready(id, cb) ──(object sealed)──▶ cb ──call_soon_threadsafe──▶
                  asyncio future resolved in the caller's loop ──▶ get(ref, timeout=0)

    ref.future() ──▶ client.on_ready(id, cb) ──▶ cb queues the ref ──▶ one resolver thread
                     does get() and completes the concurrent.futures.Future
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import queue
import threading
from typing import Any

from rtml._runtime import _context

_resolver_q: queue.SimpleQueue[tuple[Any, Any]] = queue.SimpleQueue()
_resolver: threading.Thread | None = None
_resolver_lock = threading.Lock()


_client = _context.client


def _resolve(fut: concurrent.futures.Future, ref: Any) -> None:
    if not fut.set_running_or_notify_cancel():
        return
    try:
        fut.set_result(_client().get([ref], None)[0])
    except BaseException as e:
        fut.set_exception(e)


def _resolver_main() -> None:
    while True:
        fut, ref = _resolver_q.get()
        if fut is None:
            return
        _resolve(fut, ref)


def stop_resolver() -> None:
    """End the resolver thread (at shutdown); a later ``future()`` starts a new one."""
    global _resolver
    with _resolver_lock:
        t, _resolver = _resolver, None
    if t is not None and t.is_alive():
        _resolver_q.put((None, None))
        t.join(5)


def ref_future(ref: Any) -> concurrent.futures.Future:
    global _resolver
    fut: concurrent.futures.Future = concurrent.futures.Future()
    with _resolver_lock:
        if _resolver is None or not _resolver.is_alive():
            _resolver = threading.Thread(target=_resolver_main, name="rtml-futures", daemon=True)
            _resolver.start()
    _client().on_ready(ref._id, lambda: _resolver_q.put((fut, ref)))
    return fut


async def await_ref(ref: Any) -> Any:
    loop = asyncio.get_running_loop()
    fut = loop.create_future()

    def ready() -> None:
        def settle() -> None:
            if not fut.done():
                fut.set_result(None)

        loop.call_soon_threadsafe(settle)

    client = _client()
    client.on_ready(ref._id, ready)
    await fut
    return client.get([ref], None)[0]
