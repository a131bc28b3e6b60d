"""Model multiplexing: ``@serve.multiplexed`` caches models per replica (least recently used
out first); ``serve.get_multiplexed_model_id()`` names the model the current request asked
for (``handle.options(multiplexed_model_id=...)`` or the ``serve_multiplexed_model_id``
HTTP header)."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

__all__ = ["get_multiplexed_model_id", "multiplexed"]

MODEL_ID_HEADER = "serve_multiplexed_model_id"
_model_id: contextvars.ContextVar[str] = contextvars.ContextVar("serve_model_id", default="")


def get_multiplexed_model_id() -> str:
    """The model id of the request being handled ("" when it named none)."""
    return _model_id.get()


def set_model_id(model_id: str) -> contextvars.Token:
    return _model_id.set(model_id)


def reset_model_id(token: contextvars.Token) -> None:
    _model_id.reset(token)


class _ModelCache:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.models: OrderedDict[str, Any] = OrderedDict()
        self.loading: dict[str, asyncio.Future] = {}


def multiplexed(
    _fn: Callable[..., Any] | None = None, *, max_num_models_per_replica: int = 3
) -> Any:
    """Cache the models a loader returns, per replica, evicting the least recently used.

    Args:
        max_num_models_per_replica: how many models a replica keeps loaded (-1: no limit).

    Returns:
        A coroutine function ``load(model_id)`` that returns the cached model or loads it once
        (concurrent callers of one id share the load).

    Raises:
        ValueError: a bad ``max_num_models_per_replica``.
    """
    if not isinstance(max_num_models_per_replica, int) or (
        max_num_models_per_replica < 1 and max_num_models_per_replica != -1
    ):
        raise ValueError(
            f"max_num_models_per_replica must be an int >= 1 or -1, got "
            f"{max_num_models_per_replica!r}"
        )

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        params = list(inspect.signature(fn).parameters)
        is_method = bool(params) and params[0] == "self"
        key = f"__serve_models_{fn.__name__}_{id(fn)}"
        free = _ModelCache(max_num_models_per_replica)

        async def load(owner: Any, model_id: str) -> Any:
            if not isinstance(model_id, str) or not model_id:
                raise ValueError(
                    f"a multiplexed model id must be a non-empty str, got "
                    f"{model_id!r}: set handle.options(multiplexed_model_id=...) "
                    f"or the {MODEL_ID_HEADER} header"
                )
            cache = free
            if owner is not None:
                cache = owner.__dict__.get(key)
                if cache is None:
                    cache = owner.__dict__[key] = _ModelCache(max_num_models_per_replica)
            if model_id in cache.models:
                cache.models.move_to_end(model_id)
                return cache.models[model_id]
            pending = cache.loading.get(model_id)
            if pending is not None:
                return await asyncio.shield(pending)
            fut = asyncio.get_running_loop().create_future()
            cache.loading[model_id] = fut
            try:
                model = fn(owner, model_id) if owner is not None else fn(model_id)
                if inspect.isawaitable(model):
                    model = await model
            except BaseException as e:
                fut.set_exception(e)
                fut.exception()  # retrieved: no "never retrieved" warning
                raise
            finally:
                cache.loading.pop(model_id, None)
            if 0 < cache.capacity <= len(cache.models):
                cache.models.popitem(last=False)  # dropped: freed once nothing holds it
            cache.models[model_id] = model
            fut.set_result(model)
            return model

        if is_method:

            @functools.wraps(fn)
            async def method(self: Any, model_id: str) -> Any:
                return await load(self, model_id)

            return method

        @functools.wraps(fn)
        async def function(model_id: str) -> Any:
            return await load(None, model_id)

        return function

    return decorate(_fn) if _fn is not None else decorate
