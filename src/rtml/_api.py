"""The public API functions: validate arguments, then hand off to this process's client."""

from __future__ import annotations

import inspect
import os
import threading
import time
from typing import Any

from rtml._runtime import _context
from rtml._runtime._refs import ObjectRef, ObjectRefGenerator

_init_lock = threading.RLock()
_runtime: Any = None

# Keyword arguments Ray's init() takes that change nothing for the embedded runtime.
_IGNORED_INIT = {
    "logging_level",
    "logging_format",
    "configure_logging",
    "log_to_driver_level",
    "job_config",
    "_temp_dir",
    "_system_config",
    "_plasma_directory",
    "_node_ip_address",
    "_enable_object_reconstruction",
    "runtime_env_setup",
    "storage",
    "_redis_password",
    "enable_resource_isolation",
    "labels",
    "_metrics_export_port",
    "logging_config",
    "_tracing_startup_hook",
}


class InitContext(dict):
    """What ``init()`` returns: a dict of addresses that also works as a context manager."""

    @property
    def dashboard_url(self) -> str | None:
        return self.get("webui_url")

    @property
    def address_info(self) -> dict[str, Any]:
        return dict(self)

    def __enter__(self) -> InitContext:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        shutdown()

    def disconnect(self) -> None:
        shutdown()


def init(
    address: str | None = None,
    *,
    num_cpus: float | None = None,
    num_gpus: float | None = None,
    resources: dict[str, float] | None = None,
    object_store_memory: int | None = None,
    namespace: str | None = None,
    ignore_reinit_error: bool = False,
    log_to_driver: bool = True,
    runtime_env: dict[str, Any] | None = None,
    local_mode: bool = False,
    include_dashboard: bool | None = None,
    dashboard_host: str = "127.0.0.1",
    dashboard_port: int | None = None,
    **kwargs: Any,
) -> InitContext:
    """Start an embedded runtime, or join a running cluster (``address=``) as a new job.

    Args:
        address: ``"HOST:PORT"`` of a running cluster's control plane (as ``rtml start
            --head`` prints) to join it as a new job; ``"auto"`` for the cluster this user
            started last on this machine; ``"local"`` or None (and no ``$RTML_ADDRESS``) to
            start an embedded runtime. The cluster's token is found in this user's token
            file on the same machine, else in ``$RTML_TOKEN``.
        num_cpus: CPUs to schedule on (default: the machine's CPU count); fractional allowed.
        num_gpus: GPUs to declare (default 0); tasks get device ids via ``get_gpu_ids()``.
        resources: custom resources, e.g. ``{"sensor": 2}``.
        object_store_memory: bytes of shared memory for large objects before spilling.
        _memory: (keyword, Ray's name) bytes of the ``"memory"`` resource that tasks and
            actors reserve with ``memory=``; default: the memory available at start.
        namespace: namespace for named actors.
        ignore_reinit_error: return quietly if already initialized.
        log_to_driver: print what tasks print here, prefixed with the task name and pid.
        runtime_env: ``{"env_vars": {...}}`` set in every worker.
        local_mode: run every task and actor call in this process, one at a time, when it is
            submitted (no workers), so breakpoints and debuggers work inside tasks; same API
            and errors. Ignores ``$RTML_ADDRESS``; see ``rtml._runtime._local`` for what
            differs.
        include_dashboard: serve the read-only web dashboard (default on; the returned
            context's ``dashboard_url`` says where). A cluster's is served by its head node.
        dashboard_host: address it binds (127.0.0.1: this machine only).
        dashboard_port: its port (default 8265 if free, else any free port).

    Returns:
        An InitContext (a dict; also a context manager that shuts down on exit).

    Raises:
        RuntimeError: already initialized and ``ignore_reinit_error`` is False.
        ValueError / TypeError: an argument is invalid (the message says which).
    """
    from rtml._node._build import default_object_store_memory
    from rtml._runtime._options import env_vars_of
    from rtml._runtime._runtime import Config, Runtime
    from rtml._scheduler import normalize_request

    global _runtime
    memory = kwargs.pop("_memory", None)  # Ray's name: the node's "memory" resource (bytes)
    unknown = set(kwargs) - _IGNORED_INIT
    if unknown:
        raise TypeError(f"init() got unexpected keyword argument(s): {', '.join(sorted(unknown))}")
    with _init_lock:
        if _runtime is not None or _context.get_client() is not None:
            if ignore_reinit_error:
                return _context_info()
            raise RuntimeError(
                "rtml.init() was called twice; call rtml.shutdown() first, or pass "
                "ignore_reinit_error=True"
            )
        if local_mode and address not in (None, "local"):
            raise ValueError(
                f"local_mode=True runs everything in this process; it cannot join the cluster "
                f"at {address!r} (drop address=, or drop local_mode=True)"
            )
        if address is None and not local_mode:
            address = os.environ.get("RTML_ADDRESS") or None
        if address is not None and address != "local":
            return _connect(
                address,
                namespace,
                log_to_driver,
                env_vars_of(runtime_env),
                num_cpus=num_cpus,
                num_gpus=num_gpus,
                resources=resources,
                object_store_memory=object_store_memory,
                _memory=memory,
            )
        if memory is not None:
            if (
                not isinstance(memory, (int, float))
                or isinstance(memory, bool)
                or not memory >= 0
                or memory == float("inf")
            ):
                raise ValueError(f"_memory must be a non-negative number of bytes, got {memory!r}")
            resources = {**(resources or {}), "memory": float(memory)}
        cpus = float(os.cpu_count() or 1) if num_cpus is None else num_cpus
        normalize_request(cpus, num_gpus or 0, resources)  # validates the numbers
        if object_store_memory is None:
            object_store_memory = default_object_store_memory()
        elif (
            not isinstance(object_store_memory, (int, float))
            or isinstance(object_store_memory, bool)
            or not object_store_memory >= 1  # (also refuses NaN)
            or object_store_memory == float("inf")
        ):
            raise ValueError(
                "object_store_memory must be a positive number of bytes, got "
                f"{object_store_memory!r}"
            )
        else:
            object_store_memory = int(object_store_memory)  # 2e9 is accepted, as in Ray
        config = Config(
            num_cpus=float(cpus),
            num_gpus=float(num_gpus or 0),
            resources=dict(resources or {}),
            object_store_memory=object_store_memory,
            namespace=namespace or "default",
            log_to_driver=log_to_driver,
            env_vars=env_vars_of(runtime_env) or {},
        )
        config.include_dashboard = include_dashboard is not False
        config.dashboard_host = dashboard_host
        config.dashboard_port = dashboard_port
        if local_mode:
            from rtml._runtime._local import LocalRuntime

            rt: Any = LocalRuntime(config)
        else:
            from rtml._observability._flusher import start_event_log

            rt = Runtime(config, start_events=start_event_log, start_dashboard=_start_dashboard)
        rt.start()
        _started(rt)
        return _context_info()


def _connect(
    address: str,
    namespace: str | None,
    log_to_driver: bool,
    env_vars: dict[str, str] | None,
    **node_options: Any,
) -> InitContext:
    """Join a running cluster as a new job (``_init_lock`` held)."""
    from rtml._runtime._remote import RemoteRuntime

    global _runtime
    given = sorted(k for k, v in node_options.items() if v is not None)
    if given:
        raise ValueError(
            f"{', '.join(given)} cannot be given when connecting to a running cluster (they "
            "describe a node); pass them to `rtml start` instead"
        )
    if not isinstance(address, str):
        raise TypeError(f"address must be a string like 'HOST:PORT' or 'auto', got {address!r}")
    rt = RemoteRuntime(address, None, namespace, log_to_driver, env_vars)
    rt.start()
    _started(rt)
    return _context_info()


def _start_dashboard(rt: Any, host: str, port: int | None) -> Any:
    """The embedded runtime's dashboard, reading its node in this process."""
    from rtml._observability._sources import LocalSource
    from rtml.dashboard import start_dashboard

    return start_dashboard(lambda: LocalSource(rt), host, port)


def _started(rt: Any) -> None:
    """``rt`` runs: it is this process's runtime, and what observability reads."""
    from rtml._observability._sources import set_current_source, source_opener

    global _runtime
    _runtime = rt
    set_current_source(source_opener(rt))


def _dashboard_url(rt: Any) -> str | None:
    dash = getattr(rt, "dashboard", None)
    if dash is not None:
        return dash.url
    return getattr(rt, "dashboard_url", None)  # a cluster's, served by its head node


def _context_info() -> InitContext:
    rt = _runtime
    info = InitContext(
        node_id=rt.node_id if rt else None,
        session_name=rt.session if rt else None,
        webui_url=_dashboard_url(rt),
        address=getattr(rt, "address", "local"),
    )
    return info


def _auto_init() -> Any:
    with _init_lock:
        client = _context.get_client()
        if client is None:
            init()
            client = _context.get_client()
        return client


_context.set_auto_init(_auto_init)
_client = _context.client


def is_initialized() -> bool:
    """True if this process has a running runtime (always True inside tasks)."""
    return _context.get_client() is not None


def shutdown() -> None:
    """Stop every process the runtime started and remove its shared memory and temp files."""
    global _runtime
    with _init_lock:
        rt, _runtime = _runtime, None
        if rt is not None:
            from rtml._observability._sources import set_current_source

            set_current_source(None)
            rt.shutdown()


def _as_ref_list(object_refs: Any, fn: str) -> tuple[list[ObjectRef], bool]:
    if isinstance(object_refs, ObjectRef):
        return [object_refs], True
    if isinstance(object_refs, (list, tuple)):
        for r in object_refs:
            if not isinstance(r, ObjectRef):
                raise TypeError(
                    f"{fn}() takes an ObjectRef or a list of ObjectRefs; the list holds a "
                    f"{type(r).__name__} ({r!r:.80})"
                )
        return list(object_refs), False
    if isinstance(object_refs, ObjectRefGenerator):
        raise TypeError(
            f"{fn}() got an ObjectRefGenerator; iterate it (for ref in gen) and {fn}() the refs"
        )
    raise TypeError(
        f"{fn}() takes an ObjectRef or a list of ObjectRefs, got {type(object_refs).__name__}"
    )


def get(object_refs: Any, *, timeout: float | None = None) -> Any:
    """The value(s) of ObjectRef(s), waiting for them to be computed.

    Args:
        object_refs: an ObjectRef or a list of them (order is kept).
        timeout: seconds to wait at most (None: no limit).

    Raises:
        GetTimeoutError: not ready within ``timeout``.
        TaskError: the task raised; the error is also an instance of the original exception.
        WorkerCrashedError, TaskCancelledError, ObjectLostError: see their docs.
    """
    refs, single = _as_ref_list(object_refs, "get")
    if timeout is not None and (not isinstance(timeout, (int, float)) or timeout < 0):
        raise ValueError(f"timeout must be a non-negative number or None, got {timeout!r}")
    client = _client()
    if not refs:
        return []
    values = client.get(refs, timeout)
    return values[0] if single else values


def put(value: Any, **_ignored: Any) -> ObjectRef:
    """Store ``value`` in the object store once; returns its ObjectRef."""
    return _client().put(value)


class _RefList(list):
    """The ``not_ready`` list ``wait`` returns: a plain list that also remembers its refs' ids,
    known distinct, so that the usual loop ``ready, not_ready = wait(not_ready)`` skips
    re-reading every ref and checking for duplicates on each call (half of its cost on 500
    refs). Any change to the list forgets them."""

    __slots__ = ("_ids",)

    def __reduce_ex__(self, protocol: Any) -> Any:
        return (list, (list(self),))

    def __setitem__(self, *a: Any) -> None:
        self._ids = None
        super().__setitem__(*a)

    def __delitem__(self, *a: Any) -> None:
        self._ids = None
        super().__delitem__(*a)

    def __iadd__(self, other: Any) -> Any:  # type: ignore[misc]
        self._ids = None
        return super().__iadd__(other)

    def __imul__(self, n: Any) -> Any:  # type: ignore[misc]
        self._ids = None
        return super().__imul__(n)

    def append(self, x: Any) -> None:
        self._ids = None
        super().append(x)

    def extend(self, xs: Any) -> None:
        self._ids = None
        super().extend(xs)

    def insert(self, i: Any, x: Any) -> None:
        self._ids = None
        super().insert(i, x)

    def pop(self, *a: Any) -> Any:
        self._ids = None
        return super().pop(*a)

    def remove(self, x: Any) -> None:
        self._ids = None
        super().remove(x)

    def clear(self) -> None:
        self._ids = None
        super().clear()

    def sort(self, *a: Any, **k: Any) -> None:
        self._ids = None
        super().sort(*a, **k)

    def reverse(self) -> None:
        self._ids = None
        super().reverse()


def wait(
    object_refs: list[ObjectRef],
    *,
    num_returns: int = 1,
    timeout: float | None = None,
    fetch_local: bool = True,
) -> tuple[list[ObjectRef], list[ObjectRef]]:
    """Wait until ``num_returns`` of the refs are ready, or ``timeout`` seconds pass.

    Returns:
        (ready, not_ready), each in the order of ``object_refs``.

    Raises:
        TypeError: ``object_refs`` is not a list of ObjectRefs.
        ValueError: duplicates, or ``num_returns`` out of range.
    """
    ids = object_refs._ids if type(object_refs) is _RefList else None
    if (
        ids is None
        and isinstance(object_refs, (list, tuple))
        and any(isinstance(r, ObjectRefGenerator) for r in object_refs)
    ):
        return _wait_with_generators(list(object_refs), num_returns, timeout)
    if ids is None:
        if isinstance(object_refs, ObjectRef) or not isinstance(object_refs, (list, tuple)):
            raise TypeError(
                f"wait() takes a list of ObjectRefs, got {type(object_refs).__name__}; "
                "wrap a single ref in a list: rtml.wait([ref])"
            )
        try:
            ids = [r._id for r in object_refs]  # the fast path; anything else is checked below
        except AttributeError:
            _as_ref_list(list(object_refs), "wait")
            raise
        if len(set(ids)) != len(ids):
            raise ValueError("wait() got duplicate ObjectRefs; pass each ref once")
    if not ids:
        return [], []
    if not isinstance(num_returns, int) or isinstance(num_returns, bool) or num_returns < 1:
        raise ValueError(f"num_returns must be a positive int, got {num_returns!r}")
    if num_returns > len(ids):
        raise ValueError(
            f"num_returns ({num_returns}) is larger than the number of refs ({len(ids)})"
        )
    if timeout is not None and (not isinstance(timeout, (int, float)) or timeout < 0):
        raise ValueError(f"timeout must be a non-negative number or None, got {timeout!r}")
    ready, not_ready, not_ready_ids = _client().wait(object_refs, num_returns, timeout, ids)
    out = _RefList(not_ready)
    out._ids = not_ready_ids
    return ready, out


_GEN_POLL_S = 0.02


def _wait_with_generators(
    items: list[Any], num_returns: int, timeout: float | None
) -> tuple[list[Any], list[Any]]:
    """``wait`` over refs and generators: a generator is ready once its next ref exists or it
    has ended (as in Ray). Waits on one pending item at a time, in slices."""
    if not isinstance(num_returns, int) or isinstance(num_returns, bool) or num_returns < 1:
        raise ValueError(f"num_returns must be a positive int, got {num_returns!r}")
    if num_returns > len(items):
        raise ValueError(
            f"num_returns ({num_returns}) is larger than the number of refs ({len(items)})"
        )
    if timeout is not None and (not isinstance(timeout, (int, float)) or timeout < 0):
        raise ValueError(f"timeout must be a non-negative number or None, got {timeout!r}")
    if len({id(x) for x in items}) != len(items):
        raise ValueError("wait() got duplicate ObjectRefs; pass each ref once")
    refs = [x for x in items if not isinstance(x, ObjectRefGenerator)]
    _as_ref_list(refs, "wait")
    deadline = None if timeout is None else time.monotonic() + timeout
    ready_ids: set[int] = set()
    while True:
        ready_ids.update(id(x) for x in items if isinstance(x, ObjectRefGenerator) and x._ready(0))
        pending = [r for r in refs if id(r) not in ready_ids]
        if pending:
            done, _ = wait(pending, num_returns=len(pending), timeout=0)
            ready_ids.update(id(r) for r in done)
        if len(ready_ids) >= num_returns:
            break
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            break
        step = _GEN_POLL_S if remaining is None else min(_GEN_POLL_S, remaining)
        pending = [r for r in refs if id(r) not in ready_ids]
        if pending:
            wait(pending, num_returns=1, timeout=step)
        else:
            gen = next(x for x in items if id(x) not in ready_ids)
            gen._ready(step)
    ready = [x for x in items if id(x) in ready_ids][:num_returns]
    taken = {id(x) for x in ready}
    return ready, [x for x in items if id(x) not in taken]


def cancel(object_ref: ObjectRef, *, force: bool = False, recursive: bool = True) -> None:
    """Cancel the task that produces ``object_ref``; ``get`` then raises TaskCancelledError.

    A queued task is dropped; a running one is interrupted (``force=True`` kills its worker).
    """
    if not isinstance(object_ref, ObjectRef):
        raise TypeError(f"cancel() takes an ObjectRef, got {type(object_ref).__name__}")
    _client().cancel(object_ref._id, force, recursive)


def remote(*args: Any, **options: Any) -> Any:
    """Make a function a remote function (or a class an actor class).

    Use bare (``@rtml.remote``) or with options (``@rtml.remote(num_cpus=0.5)``).
    """
    from rtml._runtime._remote_function import RemoteFunction

    def make(obj: Any) -> Any:
        if inspect.isclass(obj):
            from rtml._runtime._actor import ActorClass

            return ActorClass(obj, options)
        if not callable(obj):
            raise TypeError(f"@remote needs a function or a class, got {type(obj).__name__}")
        return RemoteFunction(obj, options)

    if len(args) == 1 and not options and (callable(args[0]) or inspect.isclass(args[0])):
        return make(args[0])
    if args:
        raise TypeError("@remote takes only keyword options, e.g. @rtml.remote(num_cpus=2)")
    if not options:  # as Ray: the decorator is bare or given options, never empty parentheses
        raise TypeError(
            "@rtml.remote must be applied either bare (@rtml.remote) or with keyword options "
            "(@rtml.remote(num_cpus=2)), not with empty parentheses"
        )
    return make


def cluster_resources() -> dict[str, float]:
    """Total resources of the runtime."""
    return _client().resources()[0]


def available_resources() -> dict[str, float]:
    """Resources not currently in use; as in Ray, a resource that is used up entirely is
    left out (``rtml.available_resources().get("CPU", 0)``)."""
    return {k: v for k, v in _client().resources()[1].items() if v > 0}


def get_gpu_ids() -> list[int]:
    """GPU ids assigned to the current task or actor (empty in the driver)."""
    return list(_client().gpu_ids)


def nodes() -> list[dict[str, Any]]:
    """The nodes of the runtime (one for the embedded runtime), alive or dead, with Ray's keys
    (``NodeID``, ``Alive``, ``Resources``, ``NodeManagerAddress``, ``Labels``...)."""
    return _client().nodes()


class RuntimeContext:
    """Information about the current driver, task or actor (``rtml.get_runtime_context()``)."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def get_job_id(self) -> str:
        return self._client.job_id

    def get_node_id(self) -> str:
        return self._client.node_id

    def get_task_id(self) -> str | None:
        t = self._client.current_task_id
        return None if t is None else format(t, "x")

    def get_worker_id(self) -> str:
        return format(self._client.proc, "x")

    def get_actor_id(self) -> str | None:
        a = self._client.current_actor_id
        return None if a is None else format(a, "x")

    def is_canceled(self) -> bool:
        """Whether the running task or actor call was cancelled with ``rtml.cancel``.

        A running actor call is not interrupted by ``cancel`` (as in Ray): it can check this
        and stop early; its caller's ``get`` raises TaskCancelledError either way.

        Raises:
            RuntimeError: called in the driver, outside any task or actor call.
        """
        client = self._client
        check = getattr(getattr(client, "worker", None), "is_canceled", None)
        if check is not None:  # a worker process
            return bool(check())
        if client.current_task_id is None:
            raise RuntimeError(
                "get_runtime_context().is_canceled() is only available inside a task or an "
                "actor call; this is the driver"
            )
        return False  # local mode runs each call when it is submitted: none is cancelled

    @property
    def job_id(self) -> str:
        return self.get_job_id()

    @property
    def node_id(self) -> str:
        return self.get_node_id()

    @property
    def task_id(self) -> str | None:
        return self.get_task_id()

    @property
    def namespace(self) -> str:
        return self._client.namespace

    def get_assigned_resources(self) -> dict[str, float]:
        return {"GPU": float(len(self._client.gpu_ids))} if self._client.gpu_ids else {}

    def get_accelerator_ids(self) -> dict[str, list[str]]:
        return {"GPU": [str(i) for i in self._client.gpu_ids]}


def get_runtime_context() -> RuntimeContext:
    return RuntimeContext(_client())


def timeline(filename: str | None = None) -> list[dict[str, Any]] | None:
    """The task timeline in the Chrome trace event format, as ``ray.timeline``: a row per
    worker (grouped by node), a slice per task execution, arrows from each task whose result a
    task took to that task. Open the file in https://ui.perfetto.dev or chrome://tracing.

    Args:
        filename: write the trace there (JSON object form, ``{"traceEvents": [...], ...}``)
            and return None; if None, return the trace events instead.

    Returns:
        The list of trace events if ``filename`` is None, else None.

    Raises:
        RuntimeError: rtml is not initialized, or runs in local mode (no task events).
        OSError: ``filename`` cannot be written.
    """
    from rtml._observability._sources import current_source
    from rtml._observability._timeline import dump_trace, trace_of_source

    if _runtime is None:
        raise RuntimeError("rtml.timeline() needs a running rtml: call rtml.init() first")
    source = current_source()
    try:
        trace = trace_of_source(source)
    finally:
        source.close()
    if filename is None:
        return list(trace["traceEvents"])
    dump_trace(trace, os.fspath(filename))
    return None


__all__ = [
    "available_resources",
    "cancel",
    "cluster_resources",
    "get",
    "get_gpu_ids",
    "get_runtime_context",
    "init",
    "is_initialized",
    "nodes",
    "put",
    "remote",
    "shutdown",
    "timeline",
    "wait",
]
