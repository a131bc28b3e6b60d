"""``@rtml.remote`` on a function: the RemoteFunction handle and its ``.options()``."""

from __future__ import annotations

import functools
import inspect
import uuid
from typing import Any

from rtml._runtime import _context
from rtml._runtime._options import TaskOptions
from rtml._runtime._signature import check_call, signature_of
from rtml._serialization._code import check_size, dumps_code


class RemoteFunction:
    """A function that runs as a task. Call ``.remote(...)`` to get ObjectRefs."""

    def __init__(self, function: Any, options: dict[str, Any], fn_id: str | None = None) -> None:
        self._function = function
        self._fn_id = fn_id or uuid.uuid4().hex
        self._is_generator = inspect.isgeneratorfunction(function)
        self._default = options
        self._opts = TaskOptions(options, self._is_generator)
        self._name = getattr(function, "__qualname__", getattr(function, "__name__", "task"))
        self._blob: bytes | None = None
        self._dynamic_blob: bytes | None = None
        self._sig = signature_of(function)
        functools.update_wrapper(self, function)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(
            f"remote function {self._name} cannot be called directly; use "
            f"{self._name}.remote(...) to run it as a task (it returns an ObjectRef), or "
            "call the original function through its __wrapped__ attribute"
        )

    def _full_name(self) -> str:
        return f"{getattr(self._function, '__module__', None) or '?'}.{self._name}"

    def _get_blob(self) -> bytes:
        if self._blob is None:
            blob = dumps_code(self._function)
            check_size(blob, self._function, "remote function", self._full_name())
            self._blob = blob
        return self._blob

    def _runnable(self, blob_fn: Any) -> Any:
        """What local mode runs for a blob getter of this function (no pickling there)."""
        if getattr(blob_fn, "__func__", None) is RemoteFunction._get_dynamic_blob:
            return functools.partial(_run_dynamic, self._function)
        return self._function

    def _get_dynamic_blob(self) -> bytes:
        if self._dynamic_blob is None:
            blob = dumps_code(functools.partial(_run_dynamic, self._function))
            check_size(blob, self._function, "remote function", self._full_name())
            self._dynamic_blob = blob
        return self._dynamic_blob

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        """Submit a task; returns an ObjectRef (a list for num_returns>1, a generator of refs
        for generator functions and num_returns="streaming")."""
        return self._submit(args, kwargs, self._opts)

    def _submit(self, args: tuple, kwargs: dict, o: TaskOptions) -> Any:
        check_call(self._sig, self._name, args, kwargs)
        dynamic = o.dynamic
        client = _context.client()
        fn_id = self._fn_id + "-dynamic" if dynamic else self._fn_id
        get_blob = self._get_dynamic_blob if dynamic else self._get_blob
        if fn_id not in client.registered_fns and not hasattr(client, "register_class"):
            get_blob()  # pickled (and its size checked) before anything is submitted
        return client.submit_task(
            fn_id,
            get_blob,
            o.name or self._name,
            args,
            kwargs,
            o.num_returns,
            o.resources,
            o.max_retries,
            o.retry_exceptions,
            o.env_vars,
            strategy=o.strategy,
            placement=o.placement,
        )

    def bind(self, *args: Any, **kwargs: Any) -> Any:
        """A lazy node of a task graph (``rtml.dag``): runs when the graph is executed."""
        from rtml._runtime._dag import FunctionNode

        return FunctionNode(self, args, kwargs)

    def options(self, **options: Any) -> _BoundOptions:
        """The same function with some options overridden for the calls made through it."""
        merged = {**self._default, **options}
        return _BoundOptions(self, TaskOptions(merged, self._is_generator))

    def __reduce__(self) -> Any:
        return (RemoteFunction, (self._function, self._default, self._fn_id))

    def __repr__(self) -> str:
        return f"<rtml remote function {self._name}>"


def _run_dynamic(function: Any, *args: Any, **kwargs: Any) -> Any:
    """Runs in the worker for ``num_returns="dynamic"``: each yielded value is stored as an
    object of its own; the task's one result holds their refs."""
    from rtml._runtime._refs import DynamicObjectRefGenerator

    client = _context.client()
    return DynamicObjectRefGenerator([client.put(v) for v in function(*args, **kwargs)])


class _BoundOptions:
    __slots__ = ("_fn", "_opts")

    def __init__(self, fn: RemoteFunction, opts: TaskOptions) -> None:
        self._fn = fn
        self._opts = opts

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        return self._fn._submit(args, kwargs, self._opts)

    def bind(self, *args: Any, **kwargs: Any) -> Any:
        """A lazy node of a task graph (``rtml.dag``): runs when the graph is executed."""
        from rtml._runtime._dag import FunctionNode

        return FunctionNode(self, args, kwargs)

    def options(self, **options: Any) -> _BoundOptions:
        return _BoundOptions(
            self._fn, TaskOptions({**self._opts.raw, **options}, self._fn._is_generator)
        )
