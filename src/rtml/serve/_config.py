"""Deployment options with Ray Serve's names and defaults, validated once at decoration time.

Pure data: nothing here starts a process or touches the network.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

DEFAULT_MAX_ONGOING_REQUESTS = 5
DEFAULT_HEALTH_CHECK_PERIOD_S = 10.0
DEFAULT_HEALTH_CHECK_TIMEOUT_S = 30.0
DEFAULT_GRACEFUL_SHUTDOWN_TIMEOUT_S = 20.0
DEFAULT_GRACEFUL_SHUTDOWN_WAIT_LOOP_S = 2.0

# Options Ray Serve has that change nothing here; accepted so Ray programs run unchanged.
IGNORED_DEPLOYMENT_OPTIONS = {
    "placement_group_bundles",
    "placement_group_strategy",
    "max_replicas_per_node",
    "logging_config",
    "request_router_config",
    "max_constructor_retry_count",
    "rolling_update_percentage",
    "max_surge_percent",
    "backpressure_config",
    "placement_group_bundle_label_selector",
    "gang_scheduling_config",
    "deployment_actors",
    "route_prefix",
    "is_driver_deployment",
    "prev_version",
    "init_args",
    "init_kwargs",
}
DEPLOYMENT_OPTIONS = {
    "name",
    "version",
    "num_replicas",
    "ray_actor_options",
    "user_config",
    "max_ongoing_requests",
    "max_queued_requests",
    "autoscaling_config",
    "graceful_shutdown_wait_loop_s",
    "graceful_shutdown_timeout_s",
    "health_check_period_s",
    "health_check_timeout_s",
    "max_concurrent_queries",
}
ACTOR_OPTIONS = {
    "num_cpus",
    "num_gpus",
    "resources",
    "runtime_env",
    "memory",
    "object_store_memory",
    "accelerator_type",
    "scheduling_strategy",
}


@dataclass(frozen=True)
class AutoscalingConfig:
    """Ray Serve's request-based autoscaling knobs, with its defaults.

    ``desired = ceil(total ongoing requests / target_ongoing_requests)`` averaged over
    ``look_back_period_s``, clipped to ``[min_replicas, max_replicas]``, applied once the
    decision has held for ``upscale_delay_s`` (up) or ``downscale_delay_s`` (down).
    """

    min_replicas: int = 1
    max_replicas: int = 1
    initial_replicas: int | None = None
    target_ongoing_requests: float = 2.0
    metrics_interval_s: float = 10.0
    look_back_period_s: float = 30.0
    smoothing_factor: float = 1.0
    upscaling_factor: float | None = None
    downscaling_factor: float | None = None
    upscale_delay_s: float = 30.0
    downscale_delay_s: float = 600.0
    downscale_to_zero_delay_s: float | None = None

    def __post_init__(self) -> None:
        if self.min_replicas < 0:
            raise ValueError(
                f"autoscaling_config min_replicas must be >= 0, got {self.min_replicas}"
            )
        if self.max_replicas < 1 or self.max_replicas < self.min_replicas:
            raise ValueError(
                f"autoscaling_config max_replicas ({self.max_replicas}) must be "
                f">= 1 and >= min_replicas ({self.min_replicas})"
            )
        if self.initial_replicas is not None and not (
            self.min_replicas <= self.initial_replicas <= self.max_replicas
        ):
            raise ValueError(
                f"autoscaling_config initial_replicas ({self.initial_replicas}) "
                "must lie between min_replicas and max_replicas"
            )
        if self.target_ongoing_requests <= 0:
            raise ValueError("autoscaling_config target_ongoing_requests must be > 0")
        for name in ("metrics_interval_s", "look_back_period_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"autoscaling_config {name} must be > 0")
        for name in ("upscale_delay_s", "downscale_delay_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"autoscaling_config {name} must be >= 0")

    @classmethod
    def from_value(cls, value: Any) -> AutoscalingConfig:
        if isinstance(value, AutoscalingConfig):
            return value
        if hasattr(value, "model_dump"):  # a Ray AutoscalingConfig (pydantic)
            value = value.model_dump()
        if not isinstance(value, dict):
            raise TypeError(
                f"autoscaling_config must be a dict or AutoscalingConfig, got "
                f"{type(value).__name__}"
            )
        names = {f.name for f in dataclasses.fields(cls)}
        known = {k: v for k, v in value.items() if k in names}
        unknown = (
            set(value)
            - names
            - {
                "target_num_ongoing_requests_per_replica",
                "upscale_smoothing_factor",
                "downscale_smoothing_factor",
                "aggregation_function",
                "policy",
                "max_ongoing_requests",
            }
        )
        if unknown:
            raise ValueError(
                f"unknown autoscaling_config keys {sorted(unknown)}; valid keys are {sorted(names)}"
            )
        if "target_num_ongoing_requests_per_replica" in value:
            known.setdefault(
                "target_ongoing_requests", value["target_num_ongoing_requests_per_replica"]
            )
        return cls(**known)

    def initial(self) -> int:
        return self.min_replicas if self.initial_replicas is None else self.initial_replicas


@dataclass(frozen=True)
class DeploymentConfig:
    """The resolved options of one deployment."""

    name: str
    num_replicas: int = 1
    max_ongoing_requests: int = DEFAULT_MAX_ONGOING_REQUESTS
    max_queued_requests: int = -1
    user_config: Any = None
    autoscaling_config: AutoscalingConfig | None = None
    ray_actor_options: dict[str, Any] = field(default_factory=dict)
    health_check_period_s: float = DEFAULT_HEALTH_CHECK_PERIOD_S
    health_check_timeout_s: float = DEFAULT_HEALTH_CHECK_TIMEOUT_S
    graceful_shutdown_timeout_s: float = DEFAULT_GRACEFUL_SHUTDOWN_TIMEOUT_S
    graceful_shutdown_wait_loop_s: float = DEFAULT_GRACEFUL_SHUTDOWN_WAIT_LOOP_S
    version: str | None = None

    def initial_replicas(self) -> int:
        a = self.autoscaling_config
        return self.num_replicas if a is None else a.initial()


def _positive_int(name: str, v: Any, minimum: int = 1) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or v < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {v!r}")
    return v


def _positive_float(name: str, v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0 or math.isnan(v):
        raise ValueError(f"{name} must be a number > 0, got {v!r}")
    return float(v)


def build_config(name: str, opts: dict[str, Any]) -> DeploymentConfig:
    """Validate ``@serve.deployment`` / ``.options()`` keyword arguments.

    Raises:
        ValueError / TypeError: an unknown option or a bad value, named.
    """
    for key in opts:
        if key not in DEPLOYMENT_OPTIONS and key not in IGNORED_DEPLOYMENT_OPTIONS:
            raise ValueError(
                f"invalid option {key!r} for a deployment; valid options are "
                f"{', '.join(sorted(DEPLOYMENT_OPTIONS))}"
            )
    kw: dict[str, Any] = {"name": opts.get("name") or name}
    if not isinstance(kw["name"], str):
        raise TypeError(f"a deployment's name must be a str, got {kw['name']!r}")
    auto = opts.get("autoscaling_config")
    nr = opts.get("num_replicas")
    if nr == "auto":
        auto = {"min_replicas": 1, "max_replicas": 100, **(auto or {})}
        nr = None
    if auto is not None:
        if nr is not None:
            raise ValueError(
                "num_replicas and autoscaling_config are mutually exclusive: "
                "set min_replicas/max_replicas in autoscaling_config instead"
            )
        kw["autoscaling_config"] = AutoscalingConfig.from_value(auto)
        kw["num_replicas"] = kw["autoscaling_config"].initial()
    elif nr is not None:
        kw["num_replicas"] = _positive_int("num_replicas", nr, 0)
    mor = opts.get("max_ongoing_requests", opts.get("max_concurrent_queries"))
    if mor is not None:
        kw["max_ongoing_requests"] = _positive_int("max_ongoing_requests", mor)
    mq = opts.get("max_queued_requests")
    if mq is not None:
        if not isinstance(mq, int) or isinstance(mq, bool) or mq < -1:
            raise ValueError(
                f"max_queued_requests must be -1 (no limit) or an int >= 0, got {mq!r}"
            )
        kw["max_queued_requests"] = mq
    if "user_config" in opts:
        kw["user_config"] = opts["user_config"]
    rao = opts.get("ray_actor_options")
    if rao is not None:
        if not isinstance(rao, dict):
            raise TypeError(f"ray_actor_options must be a dict, got {type(rao).__name__}")
        bad = set(rao) - ACTOR_OPTIONS
        if bad:
            raise ValueError(
                f"ray_actor_options may not set {sorted(bad)}; allowed: {sorted(ACTOR_OPTIONS)}"
            )
        kw["ray_actor_options"] = dict(rao)
    for key in (
        "health_check_period_s",
        "health_check_timeout_s",
        "graceful_shutdown_timeout_s",
        "graceful_shutdown_wait_loop_s",
    ):
        if opts.get(key) is not None:
            kw[key] = _positive_float(key, opts[key])
    if opts.get("version") is not None:
        kw["version"] = str(opts["version"])
    return DeploymentConfig(**kw)


def merge(base: DeploymentConfig, opts: dict[str, Any]) -> DeploymentConfig:
    """``.options(**opts)`` on a deployment whose config is ``base``."""
    raw: dict[str, Any] = {
        "name": base.name,
        "max_ongoing_requests": base.max_ongoing_requests,
        "max_queued_requests": base.max_queued_requests,
        "ray_actor_options": base.ray_actor_options,
        "health_check_period_s": base.health_check_period_s,
        "health_check_timeout_s": base.health_check_timeout_s,
        "graceful_shutdown_timeout_s": base.graceful_shutdown_timeout_s,
        "graceful_shutdown_wait_loop_s": base.graceful_shutdown_wait_loop_s,
        "version": base.version,
        "user_config": base.user_config,
    }
    if "num_replicas" in opts or "autoscaling_config" in opts:
        pass  # the new one replaces both
    elif base.autoscaling_config is not None:
        raw["autoscaling_config"] = base.autoscaling_config
    else:
        raw["num_replicas"] = base.num_replicas
    if opts.get("num_replicas") is None and "num_replicas" in opts:
        opts = {k: v for k, v in opts.items() if k != "num_replicas"}
    raw.update(opts)
    return build_config(base.name, raw)
