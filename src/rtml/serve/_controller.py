"""The serve controller: a named async actor that owns applications, deployments and replicas.

::

    serve.run ──deploy(app)──▶ Controller ──creates──▶ Replica actors, Proxy actors
    routers ──listen(epoch)──▶ long poll: the routable replica set of a deployment
    proxies ──listen_routes(epoch)──▶ long poll: route_prefix → ingress deployment
    control loop (every 0.1 s): replica counts, health checks, stats, autoscaling

Updates never take capacity away before its replacement works:

- a new ``user_config``: every running replica prepares it beside its live instance; when all
  succeeded, all switch (one assignment each); if one failed, all drop it (version unchanged);
- new code: a full set of new replicas starts beside the old ones; once every one has passed
  its constructor and ``check_health``, routing switches to them in one epoch, the old ones
  finish what they hold and stop; if one fails, the new ones stop (automatic rollback).
"""

from __future__ import annotations

import asyncio
import importlib
import itertools
import os
import shutil
import time
from dataclasses import dataclass, field
from typing import Any

from rtml.serve import _context
from rtml.serve._autoscale import Autoscaler
from rtml.serve._config import DeploymentConfig
from rtml.serve._direct import host_id
from rtml.serve._metrics import Histogram, Window, prometheus_text
from rtml.serve._replica import Replica

TICK_S = 0.1
STATS_PERIOD_S = 1.0
NODES_PERIOD_S = 1.0  # how often the controller looks for nodes that joined or left
NODE_RETRY_S = 5.0  # after proxies failed to start on a node
PROXY_START_TIMEOUT_S = 60.0
LISTEN_TIMEOUT_S = 10.0
MAX_START_FAILURES = 3


@dataclass
class Rep:
    rid: str
    handle: Any
    version: str
    state: str = "STARTING"  # STARTING, RUNNING, STOPPING
    routable: bool = False
    last_health: float = 0.0
    health_task: asyncio.Task | None = None
    ongoing: int = 0
    requests: int = 0
    errors: int = 0
    latency: Histogram = field(default_factory=Histogram)
    pid: int | None = None
    address: tuple[str, str] | None = None  # (host id, Unix socket path) of the direct path


@dataclass
class Dep:
    app: str
    name: str
    config: DeploymentConfig
    code: bytes
    code_hash: str
    version: str
    target: int
    replicas: dict[str, Rep] = field(default_factory=dict)
    status: str = "UPDATING"
    message: str = ""
    epoch: int = 0
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    updating: bool = False  # a code or config update is in progress
    pending: int = 0  # updates asked for and not finished (waited for by wait_app)
    failures: int = 0
    autoscaler: Autoscaler | None = None
    window: Window = field(default_factory=Window)
    queued: dict[str, int] = field(default_factory=dict)  # per proxy
    last_stats: float = 0.0
    gone: list[tuple[float, int, int, Histogram]] = field(default_factory=list)
    acks: dict[str, tuple[int, float]] = field(default_factory=dict)  # router: epoch, when
    waking: bool = False  # scaled up from zero for waiting requests: no replica running yet


@dataclass
class App:
    name: str
    route_prefix: str | None
    ingress: str
    deployments: list[str]
    status: str = "DEPLOYING"
    message: str = ""


class Controller:
    """The serve controller actor (one per cluster, named ``rtml_serve_controller``)."""

    def __init__(self, engine: str) -> None:
        _context.set_engine(engine)
        self.engine = engine
        self.apps: dict[str, App] = {}
        self.deps: dict[tuple[str, str], Dep] = {}
        self.ids = itertools.count(1)
        self.version_no: dict[tuple[str, str], int] = {}
        self.routes_epoch = 0
        self.routes_changed = asyncio.Event()
        self.node_proxies: dict[str, list[tuple[str, Any]]] = {}  # node → (proxy id, handle)
        self.starting: set[str] = set()  # nodes whose proxies are starting
        self.node_retry: dict[str, float] = {}  # node → when to try its proxies again
        self.proxy_errors: dict[str, str] = {}  # node → why its proxies did not start
        self.proxy_info: dict[str, Any] = {}
        self.proxy_stats: dict[str, dict[str, int]] = {}
        self.http: dict[str, Any] | None = None  # host, port, location once proxies run
        self.http_options: dict[str, Any] = {}
        self.last_nodes = 0.0
        self.sync_task: asyncio.Task | None = None
        self.loop_task: asyncio.Task | None = None
        self.tasks: set[asyncio.Task] = set()
        self.stopping = False

    # ------------------------------------------------------------------ plumbing
    def _spawn(self, coro: Any) -> asyncio.Task:
        t = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(t)
        t.add_done_callback(self.tasks.discard)
        return t

    def _ensure_loop(self) -> None:
        if self.loop_task is None:
            self.loop_task = self._spawn(self._control_loop())

    def _bump(self, d: Dep) -> None:
        d.epoch += 1
        d.changed.set()
        d.changed = asyncio.Event()

    def _bump_routes(self) -> None:
        self.routes_epoch += 1
        self.routes_changed.set()
        self.routes_changed = asyncio.Event()

    def _new_version(self, key: tuple[str, str]) -> str:
        n = self.version_no.get(key, 0) + 1
        self.version_no[key] = n
        return str(n)

    # ------------------------------------------------------------------ long polls
    async def listen(
        self, app: str, name: str, epoch: int, router_id: str = ""
    ) -> dict[str, Any] | None:
        """The routable replicas of a deployment once they differ from ``epoch`` (None after
        a timeout without change)."""
        d = self.deps.get((app, name))
        if d is None:
            return {"epoch": epoch + 1, "deleted": True}
        if router_id:
            now = time.monotonic()
            d.acks[router_id] = (epoch, now)
            if len(d.acks) > 1000:  # routers that went away stop listening: forget them
                d.acks = {k: v for k, v in d.acks.items() if now - v[1] < 2 * LISTEN_TIMEOUT_S}
        if d.epoch == epoch:
            try:
                await asyncio.wait_for(d.changed.wait(), LISTEN_TIMEOUT_S)
            except asyncio.TimeoutError:
                return None
            d2 = self.deps.get((app, name))
            if d2 is not d:
                return {"epoch": epoch + 1, "deleted": True}
        return self._routing(d)

    def _routing(self, d: Dep) -> dict[str, Any]:
        return {
            "epoch": d.epoch,
            "max_ongoing": d.config.max_ongoing_requests,
            "max_queued": d.config.max_queued_requests,
            "replicas": [
                (r.rid, r.handle, r.version, r.address) for r in d.replicas.values() if r.routable
            ],
        }

    async def listen_routes(self, epoch: int) -> dict[str, Any] | None:
        """route_prefix → (app, ingress deployment), once it differs from ``epoch``."""
        if self.routes_epoch == epoch:
            try:
                await asyncio.wait_for(self.routes_changed.wait(), LISTEN_TIMEOUT_S)
            except asyncio.TimeoutError:
                return None
        return {
            "epoch": self.routes_epoch,
            "routes": {
                a.route_prefix: (a.name, a.ingress)
                for a in self.apps.values()
                if a.route_prefix is not None and a.status != "DELETING"
            },
        }

    async def report_dead(self, app: str, name: str, rid: str) -> None:
        d = self.deps.get((app, name))
        r = d.replicas.get(rid) if d else None
        if d is not None and r is not None and r.state != "STOPPING":
            self._replace(d, r, "its process died")

    async def report_proxy(
        self, proxy_id: str, codes: dict[str, int], queued: dict[str, int]
    ) -> None:
        self.proxy_stats[proxy_id] = codes
        for key, d in self.deps.items():
            d.queued[proxy_id] = queued.get(f"{key[0]}/{key[1]}", 0)

    async def report_demand(self, app: str, name: str) -> None:
        """A router holds requests and sees no replica: scale up from zero."""
        d = self.deps.get((app, name))
        if d is not None and d.target == 0 and d.autoscaler is not None:
            d.target, d.waking = 1, True

    # ------------------------------------------------------------------ deploy
    async def deploy(
        self,
        app_name: str,
        route_prefix: str | None,
        ingress: str,
        deployments: list[tuple[str, DeploymentConfig, bytes, str]],
    ) -> None:
        """Create or update an application (returns at once; ``wait_app`` waits)."""
        self._ensure_loop()
        if route_prefix is not None:
            for other in self.apps.values():
                if other.name != app_name and other.route_prefix == route_prefix:
                    raise ValueError(
                        f"route_prefix {route_prefix!r} is already used by "
                        f"application {other.name!r}: pick another one or "
                        f"serve.delete({other.name!r}) first"
                    )
        names = [n for n, *_ in deployments]
        old = self.apps.get(app_name)
        if old is not None:
            for n in old.deployments:
                if n not in names:
                    self._delete_dep((app_name, n))
        app = App(app_name, route_prefix, ingress, names)
        self.apps[app_name] = app
        for name, cfg, code, code_hash in deployments:
            key = (app_name, name)
            d = self.deps.get(key)
            if d is None:
                v = self._new_version(key)
                d = Dep(app_name, name, cfg, code, code_hash, v, cfg.initial_replicas())
                if cfg.autoscaling_config is not None:
                    d.autoscaler = Autoscaler(cfg.autoscaling_config)
                self.deps[key] = d
            else:
                self._update(d, cfg, code, code_hash)
        self._bump_routes()

    def _update(self, d: Dep, cfg: DeploymentConfig, code: bytes, code_hash: str) -> None:
        old = d.config
        same_code = code_hash == d.code_hash and cfg.version == old.version
        if cfg.autoscaling_config is not None:
            if d.autoscaler is None or d.autoscaler.cfg != cfg.autoscaling_config:
                d.autoscaler = Autoscaler(cfg.autoscaling_config)
                d.target = max(
                    cfg.autoscaling_config.min_replicas,
                    min(cfg.autoscaling_config.max_replicas, d.target),
                )
        else:
            d.autoscaler = None
            d.target = cfg.num_replicas
        limits_changed = (
            cfg.max_ongoing_requests != old.max_ongoing_requests
            or cfg.max_queued_requests != old.max_queued_requests
        )
        if same_code and cfg.user_config == old.user_config:
            d.config = cfg
            if "rolled back" in d.message:
                d.message = ""  # the version that serves is the one asked for
            if limits_changed:
                self._bump(d)
            return
        if d.updating:
            d.message = "an update is in progress; this one waits for it"
        d.pending += 1
        if same_code:
            self._spawn(self._update_config(d, cfg))
        else:
            self._spawn(self._update_code(d, cfg, code, code_hash))

    async def reconfigure(self, app: str, name: str, user_config: Any) -> str:
        """A new user_config for one deployment (rtml's shortcut for re-running the app
        with ``.options(user_config=...)``); the version serving afterwards."""
        d = self.deps.get((app, name))
        if d is None:
            raise ValueError(f"no deployment {name!r} in application {app!r}")
        from dataclasses import replace

        d.pending += 1
        await self._update_config(d, replace(d.config, user_config=user_config))
        if d.status == "UNHEALTHY" or d.message.startswith("update to version"):
            raise RuntimeError(d.message)
        return d.version

    async def _wait_idle_update(self, d: Dep) -> None:
        while d.updating:
            await asyncio.sleep(TICK_S)
        d.updating = True

    async def _update_config(self, d: Dep, cfg: DeploymentConfig) -> None:
        await self._wait_idle_update(d)
        try:
            version = self._new_version((d.app, d.name))
            d.status = "UPDATING"
            reps = [r for r in d.replicas.values() if r.state == "RUNNING"]
            results = await asyncio.gather(
                *[
                    self._call(
                        r.handle.prepare.remote(cfg.user_config, version),
                        cfg.health_check_timeout_s,
                    )
                    for r in reps
                ],
                return_exceptions=True,
            )
            failed = [
                (r, e) for r, e in zip(reps, results, strict=True) if isinstance(e, BaseException)
            ]
            if failed:
                await asyncio.gather(
                    *[self._call(r.handle.abort.remote(version), 10) for r in reps],
                    return_exceptions=True,
                )
                d.message = (
                    f"update to version {version} failed on replica "
                    f"{failed[0][0].rid}: {_short(failed[0][1])}; rolled back, "
                    f"version {d.version} keeps serving"
                )
                d.status = "HEALTHY"
                return
            await asyncio.gather(
                *[self._call(r.handle.commit.remote(version), 10) for r in reps],
                return_exceptions=True,
            )
            for r in reps:
                r.version = version
            d.config, d.version = cfg, version
            d.message = ""
            d.status = "HEALTHY"
            self._bump(d)
        finally:
            d.updating = False
            d.pending -= 1

    async def _update_code(
        self, d: Dep, cfg: DeploymentConfig, code: bytes, code_hash: str
    ) -> None:
        await self._wait_idle_update(d)
        try:
            version = self._new_version((d.app, d.name))
            d.status = "UPDATING"
            n = cfg.num_replicas if d.autoscaler is None else max(d.target, 1)
            new = [self._create(d, version, code, cfg) for _ in range(n)]
            results = await asyncio.gather(
                *[self._start(d, r, cfg) for r in new], return_exceptions=True
            )
            errors = [e for e in results if isinstance(e, BaseException)]
            if errors:
                for r in new:
                    self._stop(d, r, drain=False)
                d.message = (
                    f"update to version {version} failed: {_short(errors[0])}; rolled "
                    f"back, version {d.version} keeps serving"
                )
                d.status = "HEALTHY" if self._running(d) else "UNHEALTHY"
                return
            old = [r for r in d.replicas.values() if r.version != version]
            for r in new:
                r.state, r.routable = "RUNNING", True
                r.last_health = time.monotonic()
            for r in old:
                r.routable = False
            d.config, d.code, d.code_hash, d.version = cfg, code, code_hash, version
            d.target = n
            d.message = ""
            d.status = "HEALTHY"
            self._bump(d)  # the switch: one epoch for every router
            await self._wait_acks(d, cfg.graceful_shutdown_wait_loop_s)
            for r in old:
                self._stop(d, r, drain=True)
        finally:
            d.updating = False
            d.pending -= 1

    async def _wait_acks(self, d: Dep, timeout: float) -> None:
        """Wait (a bounded time) until every router listening has the current epoch."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            # A live router listens again at least every LISTEN_TIMEOUT_S.
            recent = time.monotonic() - LISTEN_TIMEOUT_S - 1
            if not any(e < d.epoch for e, t in d.acks.values() if t > recent):
                return
            await asyncio.sleep(0.01)

    # ------------------------------------------------------------------ replicas
    def _create(self, d: Dep, version: str, code: bytes, cfg: DeploymentConfig) -> Rep:
        eng = _context.engine()
        rid = f"{d.name}#{next(self.ids)}"
        opts: dict[str, Any] = {"num_cpus": 0, "max_concurrency": 100_000, "max_restarts": 0}
        opts.update(cfg.ray_actor_options)
        actor_cls = eng.remote(**opts)(Replica)
        handle = actor_cls.remote(
            rid,
            d.app,
            d.name,
            code,
            cfg.user_config,
            version,
            cfg.max_ongoing_requests,
            self.engine,
        )
        r = Rep(rid, handle, version)
        d.replicas[rid] = r
        return r

    async def _start(self, d: Dep, r: Rep, cfg: DeploymentConfig) -> None:
        info = await self._call(r.handle.initialize.remote(), None)
        r.pid, r.address = info["pid"], (info["host"], info["path"])
        await self._call(r.handle.check_health.remote(), cfg.health_check_timeout_s)

    async def _call(self, ref: Any, timeout: float | None) -> Any:
        if timeout is None:
            return await ref
        return await asyncio.wait_for(_awaitable(ref), timeout)

    def _running(self, d: Dep) -> list[Rep]:
        return [r for r in d.replicas.values() if r.state == "RUNNING" and r.routable]

    def _stop(self, d: Dep, r: Rep, drain: bool) -> None:
        if r.state == "STOPPING":
            return
        r.state, r.routable = "STOPPING", False
        d.gone.append((time.monotonic(), r.requests, r.errors, r.latency))
        self._spawn(self._kill(d, r, drain))

    async def _kill(self, d: Dep, r: Rep, drain: bool) -> None:
        if drain:
            try:
                await self._call(
                    r.handle.drain.remote(d.config.graceful_shutdown_timeout_s),
                    d.config.graceful_shutdown_timeout_s + 5,
                )
            except Exception:
                pass
        try:
            _context.engine().kill(r.handle)
        except Exception:
            pass
        _remove_socket(r)
        d.replicas.pop(r.rid, None)

    def _replace(self, d: Dep, r: Rep, why: str) -> None:
        was_routable = r.routable
        self._stop(d, r, drain=False)
        d.message = f"replica {r.rid} was replaced: {why}"
        if was_routable:
            self._bump(d)

    async def _start_one(self, d: Dep) -> None:
        cfg = d.config
        r = self._create(d, d.version, d.code, cfg)
        try:
            await self._start(d, r, cfg)
        except Exception as e:
            d.failures += 1
            self._stop(d, r, drain=False)
            if d.failures >= MAX_START_FAILURES and not self._running(d):
                d.status = "DEPLOY_FAILED"
                d.message = (
                    f"replicas of version {d.version} failed to start "
                    f"{d.failures} times; last error: {_short(e)}"
                )
            return
        if r.state != "STARTING" or d.version != r.version:
            self._stop(d, r, drain=False)
            return
        d.failures = 0
        d.waking = False
        r.state, r.routable, r.last_health = "RUNNING", True, time.monotonic()
        self._bump(d)

    # ------------------------------------------------------------------ control loop
    async def _control_loop(self) -> None:
        while not self.stopping:
            now = time.monotonic()
            for d in list(self.deps.values()):
                try:
                    self._reconcile(d, now)
                except Exception as e:  # one deployment's trouble must not stop the loop
                    d.message = f"controller error: {_short(e)}"
            for a in self.apps.values():
                self._app_status(a)
            if (
                self.http is not None
                and now - self.last_nodes >= NODES_PERIOD_S
                and (self.sync_task is None or self.sync_task.done())
            ):
                # One at a time: two overlapping syncs would both replace a dead proxy.
                self.last_nodes = now
                self.sync_task = self._spawn(self._sync_proxies())
            await asyncio.sleep(TICK_S)

    def _reconcile(self, d: Dep, now: float) -> None:
        if d.updating:
            return
        current = [
            r
            for r in d.replicas.values()
            if r.state in ("STARTING", "RUNNING") and r.version == d.version
        ]
        if d.status != "DEPLOY_FAILED":
            missing = d.target - len(current)
            for _ in range(max(0, missing)):
                self._spawn(self._start_one(d))
            if missing < 0:
                # Stop the ones still starting first, then the least busy.
                extra = sorted(current, key=lambda r: (r.state == "RUNNING", r.ongoing))
                for r in extra[:-missing]:
                    was = r.routable
                    self._stop(d, r, drain=True)
                    if was:
                        self._bump(d)
        running = self._running(d)
        if (
            d.status in ("UPDATING", "UNHEALTHY")
            and len(running) >= d.target
            and all(r.state == "RUNNING" for r in current)
        ):
            d.status = "HEALTHY"
        elif d.status == "HEALTHY" and len(running) < d.target:
            d.status = "UPDATING"
        for r in running:
            if r.health_task is None and now - r.last_health >= d.config.health_check_period_s:
                r.health_task = self._spawn(self._health(d, r))
        if now - d.last_stats >= STATS_PERIOD_S:
            d.last_stats = now
            self._spawn(self._stats(d, running))

    async def _health(self, d: Dep, r: Rep) -> None:
        try:
            await self._call(r.handle.check_health.remote(), d.config.health_check_timeout_s)
            r.last_health = time.monotonic()
        except Exception as e:
            if r.state == "RUNNING":
                self._replace(d, r, f"its health check failed: {_short(e)}")
        finally:
            r.health_task = None

    async def _stats(self, d: Dep, reps: list[Rep]) -> None:
        results = await asyncio.gather(
            *[self._call(r.handle.stats_now.remote(), 5) for r in reps], return_exceptions=True
        )
        for r, s in zip(reps, results, strict=True):
            if isinstance(s, BaseException):
                if r.state == "RUNNING" and isinstance(s, _died_types()):
                    self._replace(d, r, "its process died")
                continue
            r.ongoing, r.requests, r.errors = s["ongoing"], s["requests"], s["errors"]
            r.latency = Histogram.from_wire(s["latency"])
        req, err, lat = self._totals(d)
        d.window.push(req, err, lat)
        if d.autoscaler is not None and not d.updating:
            ongoing = sum(r.ongoing for r in reps) + sum(d.queued.values())
            d.target = d.autoscaler.observe(time.monotonic(), len(reps), ongoing)
            if d.waking and not self._running(d):
                # Requests wait in routers that do not report their queues (handles): keep
                # the replica that starts for them until it runs and takes them.
                d.target = max(d.target, 1)

    def _totals(self, d: Dep) -> tuple[int, int, Histogram]:
        lat = Histogram()
        req = err = 0
        for _, rq, er, h in d.gone:
            req, err = req + rq, err + er
            lat.add(h)
        for r in d.replicas.values():
            if r.state != "STOPPING":
                req, err = req + r.requests, err + r.errors
                lat.add(r.latency)
        return req, err, lat

    def _app_status(self, a: App) -> None:
        if a.status == "DELETING":
            return
        states = [self.deps[(a.name, n)].status for n in a.deployments if (a.name, n) in self.deps]
        if any(s == "DEPLOY_FAILED" for s in states):
            a.status = "DEPLOY_FAILED"
            a.message = "; ".join(
                self.deps[(a.name, n)].message
                for n in a.deployments
                if self.deps[(a.name, n)].status == "DEPLOY_FAILED"
            )
        elif all(s == "HEALTHY" for s in states):
            a.status, a.message = "RUNNING", ""
        elif a.status == "RUNNING":
            a.status = "UNHEALTHY" if any(s == "UNHEALTHY" for s in states) else "RUNNING"
        else:
            a.status = "DEPLOYING"

    # ------------------------------------------------------------------ queries
    async def wait_app(self, name: str, timeout_s: float) -> dict[str, Any]:
        """Wait until an application is running or failed (or ``timeout_s``)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            a = self.apps.get(name)
            if a is None:
                return {"status": "NOT_FOUND", "message": f"no application {name!r}"}
            self._app_status(a)
            busy = any(
                self.deps[(name, n)].pending for n in a.deployments if (name, n) in self.deps
            )
            if a.status in ("RUNNING", "DEPLOY_FAILED") and not busy:
                msgs = [
                    self.deps[(name, n)].message
                    for n in a.deployments
                    if (name, n) in self.deps and self.deps[(name, n)].message
                ]
                return {"status": a.status, "message": a.message or "; ".join(msgs)}
            await asyncio.sleep(0.02)
        return {
            "status": "TIMEOUT",
            "message": f"application {name!r} not running after {timeout_s} s",
        }

    async def status(self) -> dict[str, Any]:
        apps = {}
        for a in self.apps.values():
            deps = {}
            for n in a.deployments:
                d = self.deps.get((a.name, n))
                if d is None:
                    continue
                deps[n] = self._dep_status(d)
            apps[a.name] = {
                "status": a.status,
                "message": a.message,
                "route_prefix": a.route_prefix,
                "ingress": a.ingress,
                "deployments": deps,
            }
        proxies = {
            pid: {**info, "responses": sum(self.proxy_stats.get(pid, {}).values())}
            for pid, info in self.proxy_info.items()
        }
        http = dict(self.http) if self.http else None
        if http is not None and self.proxy_errors:
            http["errors"] = dict(self.proxy_errors)
        return {"applications": apps, "proxies": proxies, "http": http}

    def _dep_status(self, d: Dep) -> dict[str, Any]:
        states: dict[str, int] = {}
        versions: dict[str, int] = {}
        for r in d.replicas.values():
            states[r.state] = states.get(r.state, 0) + 1
            if r.routable:
                versions[r.version] = versions.get(r.version, 0) + 1
        req, err, _ = self._totals(d)
        return {
            "status": d.status,
            "message": d.message,
            "version": d.version,
            "target_replicas": d.target,
            "replica_states": states,
            "replica_versions": versions,
            "replicas": [
                {
                    "replica_id": r.rid,
                    "state": r.state,
                    "version": r.version,
                    "pid": r.pid,
                    "ongoing": r.ongoing,
                }
                for r in d.replicas.values()
            ],
            "metrics": {
                **d.window.summary(),
                "requests_total": req,
                "errors_total": err,
                "ongoing": sum(r.ongoing for r in d.replicas.values()),
                "queued": sum(d.queued.values()),
            },
        }

    async def metrics_text(self) -> str:
        rows = []
        for d in self.deps.values():
            req, err, lat = self._totals(d)
            versions: dict[str, int] = {}
            for r in d.replicas.values():
                if r.routable:
                    versions[r.version] = versions.get(r.version, 0) + 1
            rows.append(
                {
                    "app": d.app,
                    "deployment": d.name,
                    "requests": req,
                    "errors": err,
                    "latency": lat,
                    "ongoing": sum(r.ongoing for r in d.replicas.values()),
                    "queued": sum(d.queued.values()),
                    "replicas": versions,
                }
            )
        codes: dict[str, int] = {}
        for c in self.proxy_stats.values():
            for k, v in c.items():
                codes[k] = codes.get(k, 0) + v
        return prometheus_text(rows, codes)

    async def replica_pids(self, app: str, name: str) -> dict[str, int]:
        d = self.deps.get((app, name))
        if d is None:
            return {}
        return {r.rid: r.pid for r in d.replicas.values() if r.routable and r.pid}

    # ------------------------------------------------------------------ delete, shutdown
    def _delete_dep(self, key: tuple[str, str]) -> None:
        d = self.deps.pop(key, None)
        if d is None:
            return
        for r in list(d.replicas.values()):
            self._stop(d, r, drain=False)
        self._bump(d)

    async def delete(self, name: str) -> bool:
        a = self.apps.pop(name, None)
        if a is None:
            return False
        for n in a.deployments:
            self._delete_dep((name, n))
        self._bump_routes()
        return True

    async def start_http(self, options: dict[str, Any]) -> dict[str, Any]:
        """Start the HTTP proxies (once): a set on every alive node (``location``
        "EveryNode"), or on ``head_node`` only ("HeadOnly"); where they listen. Nodes that
        join later get theirs from the control loop.

        Raises:
            RuntimeError: proxies already run with another host, port or location.
            OSError: the port cannot be bound on the first node tried.
        """
        if self.http is not None:
            if options and any(
                options.get(k) is not None and options[k] != self.http.get(k)
                for k in ("host", "port", "location")
            ):
                raise RuntimeError(
                    f"serve's HTTP proxies already listen on "
                    f"{self.http['host']}:{self.http['port']} "
                    f"({self.http['location']}); call serve.shutdown() before "
                    "starting them elsewhere"
                )
            return dict(self.http)
        self.http_options = dict(options)
        self.http_options.setdefault("location", "EveryNode")
        self.http = {k: self.http_options.get(k) for k in ("host", "port", "location")}
        try:
            await self._sync_proxies(raise_errors=True)
        except Exception:
            self.http = None
            for node in list(self.node_proxies):  # those that did start on other nodes
                self._forget_node(node)
            self.proxy_errors.clear()
            raise
        self._ensure_loop()
        return dict(self.http)

    def _proxy_nodes(self) -> dict[str, float]:
        """The alive nodes that should run proxies now, with their CPU count."""
        eng = _context.engine()
        # An embedded (one-node) rtml runtime lists its node with NodeID "" when asked from a
        # worker: that node is this one.
        here = eng.get_runtime_context().get_node_id()
        alive = {
            n["NodeID"] or here: float(n.get("Resources", {}).get("CPU", 0) or 0)
            for n in eng.nodes()
            if n.get("Alive")
        }
        if self.http_options.get("location") == "HeadOnly":
            head = str(self.http_options.get("head_node"))
            return {head: alive[head]} if head in alive else {}
        return alive

    async def _sync_proxies(self, raise_errors: bool = False) -> None:
        """Start proxies on nodes without them; forget those of nodes that left."""
        if self.http is None or self.stopping:
            return
        try:
            wanted = self._proxy_nodes()
        except Exception as e:
            if raise_errors:
                raise
            self.proxy_errors["nodes"] = f"cannot list the nodes: {_short(e)}"
            return
        self.proxy_errors.pop("nodes", None)
        for node in [n for n in self.node_proxies if n not in wanted]:
            self._forget_node(node)
        new = [
            n
            for n in wanted
            if n not in self.node_proxies
            and n not in self.starting
            and time.monotonic() >= self.node_retry.get(n, 0.0)
        ]
        if not raise_errors:
            await self._replace_dead_proxies()
        if not new:
            return
        self.starting.update(new)
        try:
            results = await asyncio.gather(
                *[self._start_node_proxies(n, wanted[n]) for n in new], return_exceptions=True
            )
        finally:
            self.starting.difference_update(new)
        self._note_starts(new, results, raise_errors)

    def _note_starts(self, nodes: list[str], results: list[Any], raise_errors: bool) -> None:
        for node, res in zip(nodes, results, strict=True):
            if isinstance(res, BaseException):
                self.node_retry[node] = time.monotonic() + NODE_RETRY_S
                self.proxy_errors[node] = _short(res)
                if raise_errors:
                    raise res
            else:
                self.proxy_errors.pop(node, None)

    async def _replace_dead_proxies(self) -> None:
        """Ping every proxy; start a replacement (same id, same node) for each that died."""
        nodes = [n for n in self.node_proxies if n not in self.starting]
        pairs = [(n, pid, h) for n in nodes for pid, h in self.node_proxies[n]]
        pongs = await asyncio.gather(
            *[asyncio.wait_for(_awaitable(h.ping.remote()), 10) for _, _, h in pairs],
            return_exceptions=True,
        )
        dead: dict[str, list[str]] = {}
        for (node, pid, _h), pong in zip(pairs, pongs, strict=True):
            if isinstance(pong, _died_types()):
                dead.setdefault(node, []).append(pid)
        if not dead or self.http is None or self.stopping:
            return
        for node, pids in dead.items():
            self.node_proxies[node] = [
                (p, h) for p, h in self.node_proxies.get(node, []) if p not in pids
            ]
            for pid in pids:
                self.proxy_info.pop(pid, None)
                self.proxy_stats.pop(pid, None)
        todo = list(dead)
        self.starting.update(todo)
        try:
            results = await asyncio.gather(
                *[self._start_node_proxies(n, 0, dead[n]) for n in todo], return_exceptions=True
            )
        finally:
            self.starting.difference_update(todo)
        self._note_starts(todo, results, False)

    async def _start_node_proxies(
        self, node: str, cpus: float, ids: list[str] | None = None
    ) -> None:
        """Start a node's proxies (or, with ``ids``, replacements for those that died)."""
        from rtml.serve._proxy import Proxy

        eng = _context.engine()
        if ids is None:
            n = self.http_options.get("num_proxies") or max(
                1, min(int(cpus) or 1, os.cpu_count() or 1)
            )
            ids = [f"proxy-{node[:8]}-{i}" for i in range(n)]
        strategies = importlib.import_module(f"{eng.__name__}.util.scheduling_strategies")
        where = strategies.NodeAffinitySchedulingStrategy(node_id=node, soft=False)
        cls = eng.remote(
            num_cpus=0, max_concurrency=100_000, max_restarts=0, scheduling_strategy=where
        )(Proxy)
        handles = [cls.remote(pid, self.http_options, self.engine) for pid in ids]
        try:
            infos = await asyncio.wait_for(
                asyncio.gather(*[_awaitable(h.start.remote()) for h in handles]),
                PROXY_START_TIMEOUT_S,
            )
        except BaseException:
            for h in handles:
                try:
                    eng.kill(h)
                except Exception:
                    pass
            raise
        if self.http is None or self.stopping:  # shut down meanwhile
            for h in handles:
                eng.kill(h)
            return
        self.node_proxies.setdefault(node, []).extend(zip(ids, handles, strict=True))
        for pid, info in zip(ids, infos, strict=True):
            self.proxy_info[pid] = {**info, "node_id": node}

    def _forget_node(self, node: str) -> None:
        """A node left (or no longer should run proxies): its proxies stop counting."""
        for pid, h in self.node_proxies.pop(node, []):
            try:
                _context.engine().kill(h)
            except Exception:
                pass  # gone with its node
            self.proxy_info.pop(pid, None)
            self.proxy_stats.pop(pid, None)
            for d in self.deps.values():
                d.queued.pop(pid, None)

    async def shutdown(self) -> None:
        """Stop every replica and proxy (the caller kills this actor afterwards)."""
        self.stopping = True
        eng = _context.engine()
        reps = [r for d in self.deps.values() for r in d.replicas.values()]
        handles = [r.handle for r in reps]
        for node in list(self.node_proxies):
            handles += [h for _, h in self.node_proxies.pop(node)]
        self.http = None
        for key in list(self.deps):
            d = self.deps.pop(key)
            d.replicas.clear()
            self._bump(d)
        self.apps.clear()
        self._bump_routes()
        pending = [t for t in self.tasks if not t.done() and t is not asyncio.current_task()]
        for t in pending:
            t.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        # Replicas created by tasks cancelled just now are in no table: the engine ends them
        # with this actor (their only handle holder).
        for h in handles:
            try:
                eng.kill(h)
            except Exception:
                pass
        for r in reps:
            _remove_socket(r)


def _remove_socket(r: Rep) -> None:
    """A killed replica leaves its socket's directory behind: remove it (same machine)."""
    if (
        r.address is not None and r.address[0] == host_id() and not r.address[1].startswith("\0")
    ):  # abstract names leave no file
        shutil.rmtree(os.path.dirname(r.address[1]), ignore_errors=True)


async def _awaitable(ref: Any) -> Any:
    return await ref


def _died_types() -> tuple[type[BaseException], ...]:
    exc = _context.engine().exceptions
    return tuple(
        t
        for t in (
            getattr(exc, n, None)
            for n in ("ActorDiedError", "ActorUnavailableError", "RayActorError")
        )
        if isinstance(t, type)
    )


def _short(e: BaseException) -> str:
    cause = getattr(e, "cause", None)
    if isinstance(cause, BaseException):
        e = cause
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[-1] if text else ''}"
