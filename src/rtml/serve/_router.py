"""The router: which replica gets a request, from one event loop of one process.

::

    controller.listen(epoch) ──(replica set, limits; long poll)──▶ Router.replicas
    assign(request) ──▶ pick: the shorter of two sampled queues among replicas under
                        max_ongoing_requests ──▶ one actor call ──▶ (value, version)
                    └─▶ all full: wait in the router's queue (FIFO; at most
                        max_queued_requests, else BackPressureError) until one finishes
    replica died ──▶ dropped here, reported to the controller, the request retried once on
                     another replica

Queue lengths are the router's own count of the requests it has in flight on each replica
(no extra call per request); each replica also bounds what it runs at once.
"""

from __future__ import annotations

import asyncio
import os
import random
import uuid
from collections import deque
from dataclasses import dataclass
from typing import Any

from rtml.serve import _context, _direct
from rtml.serve._errors import BackPressureError, DeploymentUnavailableError


@dataclass
class Slot:
    replica_id: str
    handle: Any
    version: str
    inflight: int = 0
    dead: bool = False
    conn: _direct.Connection | None = None  # the direct path, on the replica's machine

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def choose(
    slots: list[Slot],
    max_ongoing: int,
    preferred: Slot | None = None,
    rng: random.Random | Any = random,
) -> Slot | None:
    """Power of two choices on queue length among the slots with room (None: all full)."""
    if preferred is not None and not preferred.dead and preferred.inflight < max_ongoing:
        return preferred
    free = [s for s in slots if s.inflight < max_ongoing and not s.dead]
    if not free:
        return None
    if len(free) <= 2:
        return min(free, key=lambda s: s.inflight)
    a, b = rng.sample(free, 2)
    return a if a.inflight <= b.inflight else b


def _died_types() -> tuple[type[BaseException], ...]:
    exc = _context.engine().exceptions
    names = ("ActorDiedError", "ActorUnavailableError", "RayActorError")
    return (
        _direct.ReplicaConnectionError,
        *(t for t in (getattr(exc, n, None) for n in names) if isinstance(t, type)),
    )


_HOST: str | None = None


def _connection(address: Any) -> _direct.Connection | None:
    global _HOST
    if address is None or os.environ.get("RTML_SERVE_DIRECT", "1") == "0":
        return None
    if _HOST is None:
        _HOST = _direct.host_id()
    host, path = address
    return _direct.Connection(path) if host == _HOST else None


class Router:
    """Routes the requests of one deployment that start on one event loop."""

    def __init__(self, app: str, deployment: str, loop: asyncio.AbstractEventLoop) -> None:
        self.app = app
        self.deployment = deployment
        self.loop = loop
        self.slots: dict[str, Slot] = {}
        self.order: list[Slot] = []
        self.max_ongoing = 1
        self.max_queued = -1
        self.epoch = -1
        self.deleted = False
        self.waiters: deque[asyncio.Future] = deque()
        self.affinity: dict[str, str] = {}  # model id -> replica id that served it last
        self.queue_limit_default: int | None = None  # the HTTP proxy sets one
        self._listener: asyncio.Task | None = None
        self._known = asyncio.Event()
        self._died = _died_types()
        self._why = "deployment unavailable"
        self.id = uuid.uuid4().hex[:12]
        # Set for handles used in a task's (or a single-threaded actor's) main thread: that
        # thread fetches the replica set itself, since this loop's thread cannot wait for
        # engine replies there (the main thread reads them only inside its own calls).
        self.polled_by_caller = False

    # ------------------------------------------------------------------ replica set
    def start(self) -> None:
        if self._listener is None and not self.polled_by_caller:
            self._listener = self.loop.create_task(self._listen())

    async def _listen(self) -> None:
        ctl = _context.get_controller()
        failures = 0
        while True:
            if ctl is None:
                self._close("serve is not running: call serve.run() first")
                return
            try:
                update = await ctl.listen.remote(self.app, self.deployment, self.epoch, self.id)
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as e:
                failures += 1
                if failures >= 3 or isinstance(e, self._died):
                    self._close(
                        f"the serve controller is gone ({type(e).__name__}); was "
                        "serve.shutdown() called?"
                    )
                    return
                await asyncio.sleep(0.1 * failures)
                continue
            if update is not None:
                self.apply(update)

    def apply(self, update: dict[str, Any]) -> None:
        """Take a new replica set and limits from the controller."""
        self.epoch = update["epoch"]
        if update.get("deleted"):
            self._close(f"deployment {self.deployment!r} of application {self.app!r} was deleted")
            return
        self.max_ongoing = update["max_ongoing"]
        self.max_queued = update["max_queued"]
        new: dict[str, Slot] = {}
        for rid, handle, version, address in update["replicas"]:
            old = self.slots.get(rid)
            if old is not None:
                old.version = version
                new[rid] = old
            else:
                new[rid] = Slot(rid, handle, version, conn=_connection(address))
        for rid, old in self.slots.items():
            if rid not in new:
                old.dead = True  # in-flight requests finish; no new ones go there
                if not old.inflight:
                    old.close()
        self.slots = new
        self.order = list(new.values())
        self._known.set()
        self._dispatch()

    def _close(self, why: str) -> None:
        self.deleted = True
        self._known.set()
        for slot in self.order:
            slot.dead = True
            if not slot.inflight:
                slot.close()  # the others close when their last request ends
        while self.waiters:
            fut = self.waiters.popleft()
            if not fut.done():
                fut.set_exception(DeploymentUnavailableError(why))
        self._why = why

    def stop(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            self._listener = None
        for slot in self.order:
            slot.close()

    # ------------------------------------------------------------------ capacity
    def queued(self) -> int:
        return sum(1 for f in self.waiters if not f.done())

    def _limit(self) -> int:
        if self.max_queued >= 0:
            return self.max_queued
        if self.queue_limit_default is not None:
            return max(self.queue_limit_default, 10 * self.max_ongoing * len(self.order))
        return -1

    async def _acquire(self, model_id: str, avoid: Slot | None) -> Slot:
        if not self._known.is_set():
            self.start()
            await self._known.wait()
        if self.deleted:
            raise DeploymentUnavailableError(self._why)
        pref = self.slots.get(self.affinity.get(model_id, "")) if model_id else None
        slots = self.order if avoid is None else [s for s in self.order if s is not avoid]
        slot = None if self.waiters else choose(slots, self.max_ongoing, pref)
        if slot is None and avoid is not None and not self.waiters:
            slot = choose(self.order, self.max_ongoing)  # the only one left
        if slot is not None:
            slot.inflight += 1
            return slot
        limit = self._limit()
        if limit >= 0 and self.queued() >= limit:
            raise BackPressureError(self.queued(), limit)
        fut = self.loop.create_future()
        self.waiters.append(fut)
        if not self.order:
            ctl = _context.get_controller()
            if ctl is not None:
                ctl.report_demand.remote(self.app, self.deployment)  # scale up from zero
        try:
            return await fut  # _dispatch counted it in flight already
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                self._release(fut.result())  # given a replica just as it was cancelled
            raise

    def _release(self, slot: Slot) -> None:
        slot.inflight -= 1
        if slot.dead and not slot.inflight:
            slot.close()
        self._dispatch()

    def _dispatch(self) -> None:
        while self.waiters:
            if self.waiters[0].done():  # cancelled while waiting
                self.waiters.popleft()
                continue
            slot = choose(self.order, self.max_ongoing)
            if slot is None:
                return
            fut = self.waiters.popleft()
            slot.inflight += 1
            fut.set_result(slot)

    def _drop(self, slot: Slot) -> None:
        if slot.dead:
            return
        slot.dead = True
        if self.slots.get(slot.replica_id) is slot:
            del self.slots[slot.replica_id]
            self.order = list(self.slots.values())
        ctl = _context.get_controller()
        if ctl is not None and not self.polled_by_caller:  # else its stats poll finds out
            ctl.report_dead.remote(self.app, self.deployment, slot.replica_id)

    # ------------------------------------------------------------------ requests
    async def assign(
        self, method: str, args: tuple, kwargs: dict, model_id: str = "", wire: Any = None
    ) -> Any:
        """Send one request; ``(value, version)`` for a handle call, ``(status, headers,
        body, version)`` for HTTP (``wire`` set). A replica that dies under it is dropped and
        the request retried once on another one."""
        avoid: Slot | None = None
        for attempt in (0, 1):
            slot = await self._acquire(model_id, avoid)
            try:
                if slot.conn is not None:
                    if wire is not None:
                        out = await slot.conn.call(_direct.HTTP, (wire, model_id))
                    else:
                        out = await slot.conn.call(_direct.CALL, (method, args, kwargs, model_id))
                elif wire is not None:
                    out = await _result(slot.handle.handle_http.remote(wire, model_id))
                else:
                    out = await _result(
                        slot.handle.handle_request.remote(method, args, kwargs, model_id)
                    )
            except self._died:
                self._drop(slot)
                if attempt:
                    raise
                avoid = slot
                continue
            finally:
                self._release(slot)
            if model_id:
                self.affinity[model_id] = slot.replica_id
                if len(self.affinity) > 4096:
                    self.affinity.clear()
            return out
        raise AssertionError("unreachable")


async def _result(ref: Any) -> Any:
    return await ref


_routers: dict[tuple[int, str, str], Router] = {}


def router_for(app: str, deployment: str, snapshot: dict[str, Any] | None = None) -> Router:
    """The router of ``app/deployment`` on the running event loop (created on first use);
    with ``snapshot`` (a replica set the caller fetched) it takes that instead of polling."""
    loop = asyncio.get_running_loop()
    key = (id(loop), app, deployment)
    r = _routers.get(key)
    if r is None or r.loop is not loop or r.deleted:  # deleted: maybe deployed again since
        r = _routers[key] = Router(app, deployment, loop)
        r.polled_by_caller = snapshot is not None
        r.start()
    if snapshot is not None and snapshot.get("epoch", -1) >= r.epoch:
        r.apply(snapshot)
    return r


def forget_routers(loop: asyncio.AbstractEventLoop | None = None) -> None:
    """Stop and drop the routers (of one loop, or all): at shutdown."""
    for key, r in list(_routers.items()):
        if loop is None or r.loop is loop:
            if not r.loop.is_closed():
                try:
                    r.loop.call_soon_threadsafe(r.stop)
                except RuntimeError:
                    pass
            del _routers[key]
