"""Ray Serve's API on rtml: deployments, applications, run/status/delete/shutdown.

::

    @serve.deployment ──▶ Deployment ──.options()──▶ Deployment
                                     ──.bind(*args)──▶ Application (a graph: bound
                                                       Applications in args become handles)
    serve.run(app) ──▶ the controller actor (started once, named, detached)
                   ──deploy──▶ replica actors (one user instance each) + HTTP proxies
                   ──▶ DeploymentHandle of the ingress deployment
    handle.remote() ──▶ router (power of two choices) ──▶ replica ──▶ DeploymentResponse
    HTTP ──▶ proxies on host:port (SO_REUSEPORT) ──▶ router ──▶ replica ──▶ response

Everything runs on the engine's public core API (``remote``, ``get``, ``kill``,
``get_actor``), rtml's by default; ``serve.start(engine="ray")`` (or
``RTML_SERVE_ENGINE=ray``) runs it on Ray.
"""

from __future__ import annotations

import hashlib
import inspect
import ipaddress
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import cloudpickle

from rtml.serve import _context
from rtml.serve._config import DeploymentConfig, build_config, merge
from rtml.serve._errors import RayServeException
from rtml.serve._handle import DeploymentHandle
from rtml.serve._panel import show as show_panel
from rtml.serve._router import forget_routers

DEFAULT_HTTP_OPTIONS: dict[str, Any] = {
    "host": "127.0.0.1",
    "port": 8000,
    "num_proxies": None,
    "max_body_bytes": 16 * 2**20,
    "auth_token": None,
    "allow_unauthenticated": False,
}
_http_options: dict[str, Any] = {}
_proxy_location = "EveryNode"
CONTROL_TIMEOUT_S = 60.0


class Deployment:
    """A function or class decorated with ``@serve.deployment``: ``.bind()`` it into an
    application, ``.options()`` for a changed copy."""

    def __init__(self, target: Callable[..., Any], config: DeploymentConfig) -> None:
        self._target = target
        self._config = config

    @property
    def name(self) -> str:
        return self._config.name

    @property
    def func_or_class(self) -> Callable[..., Any]:
        return self._target

    @property
    def num_replicas(self) -> int:
        return self._config.num_replicas

    @property
    def user_config(self) -> Any:
        return self._config.user_config

    @property
    def max_ongoing_requests(self) -> int:
        return self._config.max_ongoing_requests

    def options(self, **opts: Any) -> Deployment:
        """A copy with some options changed (the same names as ``@serve.deployment``).

        Raises:
            ValueError: an unknown option or a bad value.
        """
        _check_user_config(self._target, opts.get("user_config"))
        return Deployment(self._target, merge(self._config, opts))

    def bind(self, *args: Any, **kwargs: Any) -> Application:
        """An application that constructs this deployment with ``args``/``kwargs``; bound
        applications among them reach the constructor as DeploymentHandles."""
        return Application(self, args, kwargs)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise RayServeException(
            f"deployment {self.name!r} cannot be called directly: "
            f"serve.run({self.name}.bind(...)) and call the handle"
        )

    def __repr__(self) -> str:
        return f"Deployment(name={self.name!r})"


@dataclass
class Application:
    """A deployment bound to its constructor arguments (possibly other applications)."""

    deployment: Deployment
    args: tuple
    kwargs: dict[str, Any]


def _check_user_config(target: Any, user_config: Any) -> None:
    if (
        user_config is not None
        and inspect.isclass(target)
        and not callable(getattr(target, "reconfigure", None))
    ):
        raise ValueError(
            f"user_config is set but {target.__name__} has no "
            "reconfigure(self, config) method to receive it"
        )


def deployment(_func_or_class: Callable[..., Any] | None = None, **opts: Any) -> Any:
    """Turn a function or class into a Deployment.

    Args:
        name, num_replicas (int or "auto"), max_ongoing_requests (default 5),
        max_queued_requests (-1: no limit), ray_actor_options (num_cpus, num_gpus,
        resources, runtime_env; replicas reserve no CPU unless asked), user_config,
        autoscaling_config, health_check_period_s (10), health_check_timeout_s (30),
        graceful_shutdown_timeout_s (20), graceful_shutdown_wait_loop_s (2), version.

    Returns:
        A Deployment, or a decorator when called with options only.

    Raises:
        ValueError / TypeError: an unknown option or a bad value.
    """

    def decorate(target: Callable[..., Any]) -> Deployment:
        if not callable(target):
            raise TypeError(
                f"@serve.deployment needs a function or a class, got {type(target).__name__}"
            )
        _check_user_config(target, opts.get("user_config"))
        return Deployment(target, build_config(getattr(target, "__name__", "deployment"), opts))

    if _func_or_class is not None:
        return decorate(_func_or_class)
    return decorate


def _reduce_state(state: Any) -> Any:
    return (type(state), (dict(state._state),))


def ingress(app: Any) -> Callable[[type], type]:
    """Serve an ASGI app (FastAPI, Starlette) from a class deployment's replicas: each HTTP
    request runs through ``app``; ``request.state.serve_instance`` is the replica's instance.

    Returns:
        A class decorator.
    """
    if not callable(app):
        raise TypeError(f"serve.ingress() needs an ASGI app, got {type(app).__name__}")
    import copyreg

    from starlette.datastructures import State

    # Starlette's State answers every attribute lookup from a dict that unpickling has not
    # restored yet (endless recursion): ship it as that dict.
    copyreg.pickle(State, _reduce_state)

    def decorate(cls: type) -> type:
        if not inspect.isclass(cls):
            raise TypeError("@serve.ingress(app) decorates a class (the deployment)")
        cls._serve_asgi_app = app  # type: ignore[attr-defined]
        return cls

    return decorate


# ---------------------------------------------------------------------- controller
def _forget_local_state() -> None:
    """Drop this process's routers, serve loop and cached controller."""
    _context.set_controller(None)
    forget_routers()
    _context.stop_background_loop()


def _ensure_controller(engine: str | None = None) -> Any:
    if _context.stale_session():
        _forget_local_state()  # the engine was shut down under serve: start from scratch
    if engine is not None and engine != _context.engine_name():
        if _context.get_controller() is not None:
            raise RayServeException(
                f"serve is running on {_context.engine_name()}; "
                "serve.shutdown() before switching engines"
            )
        _context.set_engine(engine)
    ctl = _context.get_controller(create=True)
    if ctl is not None:
        show_panel()
        return ctl
    from rtml.serve._controller import Controller

    eng = _context.engine()
    cls = eng.remote(
        num_cpus=0,
        name=_context.CONTROLLER_NAME,
        namespace=_context.NAMESPACE,
        lifetime="detached",
        max_concurrency=100_000,
        get_if_exists=True,
        max_restarts=0,
    )(Controller)
    ctl = cls.remote(_context.engine_name())
    _context.set_controller(ctl)
    show_panel()
    return ctl


def _get(ref: Any, timeout: float = CONTROL_TIMEOUT_S) -> Any:
    return _context.engine().get(ref, timeout=timeout)


def _resolve_http_options(http_options: Any) -> dict[str, Any]:
    opts = dict(DEFAULT_HTTP_OPTIONS)
    opts.update(_http_options)
    if http_options is not None:
        if hasattr(http_options, "model_dump"):
            http_options = http_options.model_dump()
        if not isinstance(http_options, dict):
            raise TypeError(f"http_options must be a dict, got {type(http_options).__name__}")
        unknown = (
            set(http_options)
            - set(DEFAULT_HTTP_OPTIONS)
            - {"location", "root_path", "request_timeout_s", "keep_alive_timeout_s", "middlewares"}
        )
        if unknown:
            raise ValueError(
                f"unknown http_options {sorted(unknown)}; valid: {sorted(DEFAULT_HTTP_OPTIONS)}"
            )
        opts.update({k: v for k, v in http_options.items() if k in DEFAULT_HTTP_OPTIONS})
    n = opts["num_proxies"]
    if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 1):
        raise ValueError(
            f"http_options num_proxies must be an int >= 1 (proxies per node) "
            f"or None (one per CPU of the node), got {n!r}"
        )
    if not opts["auth_token"]:
        opts["auth_token"] = os.environ.get("RTML_SERVE_TOKEN") or None
    if (
        not _is_loopback(opts["host"])
        and not opts["auth_token"]
        and not opts["allow_unauthenticated"]
    ):
        raise ValueError(
            f"serve would listen on {opts['host']} without authentication: set "
            "http_options={'auth_token': ...} (or RTML_SERVE_TOKEN) so clients must send "
            "'Authorization: Bearer <token>', or http_options={'allow_unauthenticated': True} "
            "to accept anyone who can reach the port"
        )
    return opts


def _start_proxies(ctl: Any, opts: dict[str, Any]) -> None:
    """Ask the controller for proxies on every node (or on this driver's node: HeadOnly)."""
    opts = {
        **opts,
        "location": _proxy_location,
        "head_node": _context.engine().get_runtime_context().get_node_id(),
    }
    _get(ctl.start_http.remote(opts))


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def start(
    http_options: dict[str, Any] | None = None,
    *,
    proxy_location: str | None = None,
    detached: bool = True,
    engine: str | None = None,
    **_ignored: Any,
) -> None:
    """Start serve (the controller and, unless ``proxy_location="Disabled"``, the HTTP
    proxies); ``serve.run`` does this by itself.

    Args:
        http_options: ``host`` (127.0.0.1), ``port`` (8000, the same on every node; nodes
            on one host share it with SO_REUSEPORT), ``num_proxies`` (per node; one per CPU
            of the node),
            ``max_body_bytes`` (16 MiB), ``auth_token`` (required off loopback, also read
            from RTML_SERVE_TOKEN), ``allow_unauthenticated`` (False).
        proxy_location: "EveryNode" (the default: proxies on every alive node, started on
            nodes as they join), "HeadOnly" (on the node of the driver calling this) or
            "Disabled" (handles only).
        engine: "rtml" (default) or "ray".

    Raises:
        ValueError: bad http_options, or a public host without a token.
        OSError: the port is taken.
    """
    global _proxy_location
    opts = _resolve_http_options(http_options)
    if http_options:
        _http_options.update(http_options)
    if proxy_location is not None:
        loc = str(getattr(proxy_location, "value", proxy_location))
        if loc not in ("EveryNode", "HeadOnly", "Disabled", "NoServer"):
            raise ValueError(
                f"proxy_location must be EveryNode, HeadOnly or Disabled, got {proxy_location!r}"
            )
        _proxy_location = loc
    ctl = _ensure_controller(engine)
    if _proxy_location not in ("Disabled", "NoServer"):
        _start_proxies(ctl, opts)


def _flatten(
    app: Application, app_name: str, out: dict[str, tuple[Deployment, tuple, dict]]
) -> DeploymentHandle:
    dep = app.deployment

    def sub(v: Any) -> Any:
        if isinstance(v, Application):
            return _flatten(v, app_name, out)
        if isinstance(v, list):
            return [sub(x) for x in v]
        if isinstance(v, tuple):
            return tuple(sub(x) for x in v)
        if isinstance(v, dict):
            return {k: sub(x) for k, x in v.items()}
        return v

    args = tuple(sub(a) for a in app.args)
    kwargs = {k: sub(v) for k, v in app.kwargs.items()}
    seen = out.get(dep.name)
    if (
        seen is not None
        and seen[0] is not dep
        and (seen[0]._target is not dep._target or seen[1:] != (args, kwargs))
    ):
        raise RayServeException(
            f"two different deployments are named {dep.name!r} in "
            "application; give one another name with .options(name=...)"
        )
    out[dep.name] = (dep, args, kwargs)
    return DeploymentHandle(dep.name, app_name)


def run(
    target: Application | Deployment,
    blocking: bool = False,
    name: str = "default",
    route_prefix: str | None = "/",
    logging_config: Any = None,
    _local_testing_mode: bool = False,
    timeout_s: float = CONTROL_TIMEOUT_S,
    **_ignored: Any,
) -> DeploymentHandle:
    """Deploy an application (or update it in place) and return its ingress handle.

    Re-running an application by the same name updates it without dropping a request: new
    ``user_config`` is prepared beside the live instances and switched to at once; new code
    starts new replicas, switches to them once they are healthy, and rolls back if they fail.

    Args:
        target: ``Deployment.bind(...)`` (a bare Deployment is bound with no arguments).
        blocking: block until interrupted (Ctrl-C) after deploying.
        name: the application's name.
        route_prefix: the HTTP path it is served under ("/" by default; None: no HTTP).
        timeout_s: how long to wait for the application to run.

    Returns:
        The DeploymentHandle of the ingress deployment.

    Raises:
        RayServeException: the application failed to deploy, or an update failed and was
            rolled back (the message says which version keeps serving).
        TimeoutError: not running within ``timeout_s``.
    """
    if isinstance(target, Deployment):
        target = target.bind()
    if not isinstance(target, Application):
        raise TypeError(
            f"serve.run() needs an application (deployment.bind(...)), got {type(target).__name__}"
        )
    if not isinstance(name, str) or not name:
        raise ValueError(f"an application name must be a non-empty str, got {name!r}")
    if route_prefix is not None and (
        not isinstance(route_prefix, str) or not route_prefix.startswith("/")
    ):
        raise ValueError(f"route_prefix must start with '/', got {route_prefix!r}")
    if route_prefix and route_prefix != "/":
        route_prefix = route_prefix.rstrip("/")
    found: dict[str, tuple[Deployment, tuple, dict]] = {}
    ingress_handle = _flatten(target, name, found)
    specs = []
    for dep_name, (dep, args, kwargs) in found.items():
        try:
            code = cloudpickle.dumps((dep._target, args, kwargs))
        except Exception as e:
            raise RayServeException(
                f"deployment {dep_name!r} or its constructor arguments "
                f"cannot be pickled ({type(e).__name__}: {e})"
            ) from e
        h = hashlib.sha256(code)
        h.update(repr(sorted(dep._config.ray_actor_options.items())).encode())
        specs.append((dep_name, dep._config, code, h.hexdigest()[:16]))
    ctl = _ensure_controller()
    if route_prefix is not None and _proxy_location not in ("Disabled", "NoServer"):
        _start_proxies(ctl, _resolve_http_options(None))
    _get(ctl.deploy.remote(name, route_prefix, target.deployment.name, specs))
    state = _get(ctl.wait_app.remote(name, timeout_s), timeout_s + 10)
    if state["status"] == "TIMEOUT":
        raise TimeoutError(state["message"])
    if state["status"] != "RUNNING":
        raise RayServeException(f"application {name!r} failed to deploy: {state['message']}")
    if state["message"].startswith("update to version") and "rolled back" in state["message"]:
        raise RayServeException(f"application {name!r}: {state['message']}")
    if blocking:
        try:
            while True:
                time.sleep(1)
        except KeyboardInterrupt:
            pass
    return ingress_handle


# ---------------------------------------------------------------------- lookups
def _controller_or_raise() -> Any:
    ctl = _context.get_controller()
    if ctl is None:
        raise RayServeException("serve is not running: call serve.run(app) first")
    return ctl


def get_app_handle(name: str) -> DeploymentHandle:
    """The ingress handle of a running application.

    Raises:
        RayServeException: no application of that name (or serve not running).
    """
    st = _get(_controller_or_raise().status.remote())
    app = st["applications"].get(name)
    if app is None:
        raise RayServeException(
            f"no application named {name!r}; running: {sorted(st['applications']) or 'none'}"
        )
    return DeploymentHandle(app["ingress"], name)


def get_deployment_handle(
    deployment_name: str, app_name: str | None = None, **_ignored: Any
) -> DeploymentHandle:
    """The handle of a deployment (of ``app_name``, or of the only application).

    Raises:
        RayServeException: no such deployment or application.
    """
    st = _get(_controller_or_raise().status.remote())
    apps = st["applications"]
    if app_name is None:
        if len(apps) != 1:
            raise RayServeException(
                f"{len(apps)} applications are running: pass app_name (one of {sorted(apps)})"
            )
        app_name = next(iter(apps))
    if app_name not in apps or deployment_name not in apps[app_name]["deployments"]:
        raise RayServeException(f"no deployment {deployment_name!r} in application {app_name!r}")
    return DeploymentHandle(deployment_name, app_name)


def reconfigure(
    user_config: Any,
    deployment_name: str | None = None,
    app_name: str = _context.DEFAULT_APP_NAME,
    timeout_s: float = 60,
) -> str:
    """Push a new ``user_config`` (e.g. a new model version) to a running deployment without
    re-running the application: prepared beside the live instance on every replica, then
    switched to between requests (rtml's shortcut; Ray's way, re-running the app with
    ``.options(user_config=...)``, does the same).

    Args:
        user_config: passed to each replica's ``reconfigure``.
        deployment_name: the deployment (default: the application's ingress).
        app_name: its application.

    Returns:
        The version that serves afterwards.

    Raises:
        RuntimeError: a replica's ``reconfigure`` failed; nothing switched.
    """
    ctl = _controller_or_raise()
    if deployment_name is None:
        deployment_name = get_app_handle(app_name).deployment_name
    return str(_get(ctl.reconfigure.remote(app_name, deployment_name, user_config), timeout_s))


def delete(name: str, _blocking: bool = True) -> None:
    """Delete an application: its replicas stop and its route goes away."""
    ctl = _context.get_controller()
    if ctl is None:
        return
    _get(ctl.delete.remote(name))


def shutdown() -> None:
    """Stop serve: every application, replica, proxy and the controller (the engine keeps
    running)."""
    ctl = _context.get_controller()
    if ctl is not None:
        try:
            _get(ctl.shutdown.remote(), 30)
        except Exception:
            pass  # already gone: nothing left to stop
        try:
            _context.engine().kill(ctl)
        except Exception:
            pass
    _forget_local_state()
    _http_options.clear()
    global _proxy_location
    _proxy_location = "EveryNode"


# ---------------------------------------------------------------------- status
@dataclass
class DeploymentStatusOverview:
    """A deployment's state; ``metrics`` holds requests/s, p50/p95/p99 (ms), errors,
    ongoing and queued requests."""

    name: str
    status: str
    message: str
    version: str
    replica_states: dict[str, int]
    replica_versions: dict[str, int]
    replicas: list[dict[str, Any]]
    metrics: dict[str, Any]
    target_replicas: int = 0
    status_trigger: str = ""


@dataclass
class ApplicationStatusOverview:
    status: str
    message: str
    route_prefix: str | None
    deployments: dict[str, DeploymentStatusOverview] = field(default_factory=dict)
    last_deployed_time_s: float = 0.0


@dataclass
class ServeStatus:
    """``serve.status()``: applications by name, and the HTTP proxies."""

    applications: dict[str, ApplicationStatusOverview] = field(default_factory=dict)
    proxies: dict[str, Any] = field(default_factory=dict)
    http: dict[str, Any] | None = None


def status() -> ServeStatus:
    """Applications, their deployments (replicas, versions, metrics) and the proxies."""
    ctl = _context.get_controller()
    if ctl is None:
        return ServeStatus()
    st = _get(ctl.status.remote())
    apps = {}
    for name, a in st["applications"].items():
        deps = {
            n: DeploymentStatusOverview(
                name=n,
                status=d["status"],
                message=d["message"],
                version=d["version"],
                replica_states=d["replica_states"],
                replica_versions=d["replica_versions"],
                replicas=d["replicas"],
                metrics=d["metrics"],
                target_replicas=d["target_replicas"],
            )
            for n, d in a["deployments"].items()
        }
        apps[name] = ApplicationStatusOverview(a["status"], a["message"], a["route_prefix"], deps)
    return ServeStatus(apps, st["proxies"], st["http"])
