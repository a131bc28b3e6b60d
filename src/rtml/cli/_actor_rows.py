"""The actor rows of Ray's microbenchmark, written against Ray's actor API.

Until ``@rtml.remote`` on a class works, each row reports "skipped: actors not available"
(the probe catches the ImportError / TypeError of the missing support; an error after actors
are known to work is reported as an error, not hidden).
"""

from __future__ import annotations

import gc
from typing import Any

import rtml
from rtml.cli import _workloads as w
from rtml.cli._timeit import Row, timeit

_MISSING = (ImportError, TypeError, AttributeError, NotImplementedError)
_state: dict[str, Any] = {}


class ActorsUnavailable(Exception):
    """Raised by a row that needs actors when the runtime has none."""


def _probe() -> str | None:
    """None if an actor can be created and called; else the reason it cannot."""
    if "reason" not in _state:
        try:
            cls = rtml.remote(num_cpus=0)(w.Probe)
            handle = cls.remote()
            rtml.get(handle.ping.remote(), timeout=60)
            release([handle])
            _state["reason"] = None
        except _MISSING as e:
            _state["reason"] = f"actors not available ({type(e).__name__}: {e})"[:160]
    return _state["reason"]


def actor_class(cls: type, **options: Any) -> Any:
    """``rtml.remote(**options)(cls)`` if actors work, else None."""
    if _probe() is not None:
        return None
    return rtml.remote(**options)(cls) if options else rtml.remote(cls)


def _need(cls: type, **options: Any) -> Any:
    reason = _probe()
    if reason is not None:
        raise ActorsUnavailable(reason)
    return actor_class(cls, **options)


def release(handles: list) -> None:
    """Drop actor handles (and kill the actors if the runtime has ``kill``)."""
    kill = getattr(rtml, "kill", None)
    for h in handles:
        if kill is not None:
            try:
                kill(h)
            except Exception:
                pass
    handles.clear()
    gc.collect()


def _row(fn: Any, duration: float, multiplier: float, handles: list) -> Row:
    try:
        return timeit("", fn, duration, multiplier)
    finally:
        release(handles)


# --------------------------------------------------------------------------- sync actors
def calls_sync(ctx: Any) -> Row:
    a = _need(w.Actor, num_cpus=0).remote()
    return _row(lambda: rtml.get(a.small_value.remote()), ctx.duration, 1, [a])


def calls_async(ctx: Any) -> Row:
    a = _need(w.Actor, num_cpus=0).remote()
    return _row(
        lambda: rtml.get([a.small_value.remote() for _ in range(1000)]), ctx.duration, 1000, [a]
    )


def calls_concurrent(ctx: Any) -> Row:
    a = _need(w.Actor, num_cpus=0).options(max_concurrency=16).remote()
    return _row(
        lambda: rtml.get([a.small_value.remote() for _ in range(1000)]), ctx.duration, 1000, [a]
    )


def one_to_n_async(ctx: Any) -> Row:
    n = 5000
    actor_cls = _need(w.Actor, num_cpus=0)
    actors = [actor_cls.remote() for _ in range(ctx.n_cpu)]
    client = _need(w.Client, num_cpus=0).remote(actors)
    return _row(
        lambda: rtml.get(client.small_value_batch.remote(n)),
        ctx.duration,
        n * len(actors),
        [client, *actors],
    )


def n_to_n_async(ctx: Any) -> Row:
    n, m = 5000, 4
    actor_cls = _need(w.Actor, num_cpus=0)
    a = [actor_cls.remote() for _ in range(ctx.n_cpu)]
    return _row(
        lambda: rtml.get([w.actor_work.remote(a, n) for _ in range(m)]), ctx.duration, m * n, a
    )


def n_to_n_arg_async(ctx: Any) -> Row:
    n = 1000
    actor_cls = _need(w.Actor, num_cpus=0)
    client_cls = _need(w.Client, num_cpus=0)
    actors = [actor_cls.remote() for _ in range(ctx.n_cpu)]
    clients = [client_cls.remote(a) for a in actors]
    return _row(
        lambda: rtml.get([c.small_value_batch_arg.remote(n) for c in clients]),
        ctx.duration,
        n * len(clients),
        [*clients, *actors],
    )


# --------------------------------------------------------------------------- async actors
# Ray declares AsyncActor with a bare @ray.remote (default resources), so it is here too.
def async_calls_sync(ctx: Any) -> Row:
    a = _need(w.AsyncActor).remote()
    return _row(lambda: rtml.get(a.small_value.remote()), ctx.duration, 1, [a])


def async_calls_async(ctx: Any) -> Row:
    a = _need(w.AsyncActor).remote()
    return _row(
        lambda: rtml.get([a.small_value.remote() for _ in range(1000)]), ctx.duration, 1000, [a]
    )


def async_calls_args_async(ctx: Any) -> Row:
    a = _need(w.AsyncActor).remote()
    return _row(
        lambda: rtml.get([a.small_value_with_arg.remote(i) for i in range(1000)]),
        ctx.duration,
        1000,
        [a],
    )


def async_one_to_n(ctx: Any) -> Row:
    n = 5000
    actor_cls = _need(w.AsyncActor)
    actors = [actor_cls.remote() for _ in range(ctx.n_cpu)]
    client = _need(w.Client, num_cpus=0).remote(actors)
    return _row(
        lambda: rtml.get(client.small_value_batch.remote(n)),
        ctx.duration,
        n * len(actors),
        [client, *actors],
    )


def async_n_to_n(ctx: Any) -> Row:
    n, m = 5000, 4
    actor_cls = _need(w.AsyncActor)
    a = [actor_cls.remote() for _ in range(ctx.n_cpu)]
    return _row(
        lambda: rtml.get([w.actor_work.remote(a, n) for _ in range(m)]), ctx.duration, m * n, a
    )


ROWS = [
    ("1:1 actor calls sync", calls_sync),
    ("1:1 actor calls async", calls_async),
    ("1:1 actor calls concurrent", calls_concurrent),
    ("1:n actor calls async", one_to_n_async),
    ("n:n actor calls async", n_to_n_async),
    ("n:n actor calls with arg async", n_to_n_arg_async),
    ("1:1 async-actor calls sync", async_calls_sync),
    ("1:1 async-actor calls async", async_calls_async),
    ("1:1 async-actor calls with args async", async_calls_args_async),
    ("1:n async-actor calls async", async_one_to_n),
    ("n:n async-actor calls async", async_n_to_n),
]
