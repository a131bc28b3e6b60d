"""Validation of ``@remote`` / ``.options()`` keyword arguments (Ray's names)."""

from __future__ import annotations

from typing import Any

from rtml._protocol._spec import STREAMING
from rtml._scheduler import normalize_request
from rtml._scheduler._bundles import task_resources
from rtml._scheduler._strategy import group_placement, normalize_strategy

TASK_OPTIONS = {
    "accelerator_type",
    "max_calls",
    "memory",
    "num_cpus",
    "num_gpus",
    "resources",
    "num_returns",
    "max_retries",
    "retry_exceptions",
    "name",
    "runtime_env",
    "scheduling_strategy",
    "placement_group",
    "placement_group_bundle_index",
    "placement_group_capture_child_tasks",
}
ACTOR_OPTIONS = {
    "accelerator_type",
    "memory",
    "num_cpus",
    "num_gpus",
    "resources",
    "max_concurrency",
    "max_restarts",
    "max_task_retries",
    "name",
    "namespace",
    "get_if_exists",
    "lifetime",
    "runtime_env",
    "concurrency_groups",
    "scheduling_strategy",
    "checkpoint_interval",
    "checkpoint_dir",
    "placement_group",
    "placement_group_bundle_index",
    "placement_group_capture_child_tasks",
}
# Accepted for compatibility with Ray programs; they change nothing on one node.
IGNORED_OPTIONS = {
    "object_store_memory",
    "_metadata",
    "label_selector",
    "enable_task_events",
    "_labels",
    "max_pending_calls",
    "allow_out_of_order_execution",
    "_generator_backpressure_num_objects",
}


ACCELERATOR_AMOUNT = 0.001  # of "accelerator_type:<NAME>" per task or actor, as in Ray


def with_accelerator(request: dict[str, float], accelerator_type: Any) -> dict[str, float]:
    """``accelerator_type=NAME`` as the custom resource ``accelerator_type:NAME``."""
    if accelerator_type is None:
        return request
    if not isinstance(accelerator_type, str) or not accelerator_type:
        raise TypeError(
            f"accelerator_type must be a string such as rtml.util.accelerators."
            f"NVIDIA_TESLA_V100, got {accelerator_type!r}"
        )
    return {**request, f"accelerator_type:{accelerator_type}": ACCELERATOR_AMOUNT}


def check_options(opts: dict[str, Any], allowed: set[str], what: str) -> None:
    for key in opts:
        if key not in allowed and key not in IGNORED_OPTIONS:
            raise ValueError(
                f"invalid option {key!r} for {what}; valid options are {', '.join(sorted(allowed))}"
            )


def check_max_calls(value: Any) -> None:
    """``max_calls`` (Ray: a worker exits after that many calls of the function) is validated
    as Ray does and otherwise has no effect: rtml's workers run any number of tasks."""
    if value is None:
        return
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(
            f"The type of keyword 'max_calls' must be int or None, but received type "
            f"{type(value).__name__} ({value!r})"
        )
    if value < 0:
        raise ValueError(
            f"The keyword 'max_calls' only accepts None, 0 or a positive integer, got {value!r}"
        )


_RUNTIME_ENV_KEYS = frozenset({"env_vars"})


def in_group(raw: dict[str, Any], resources: dict[str, float]) -> tuple[dict[str, float], Any]:
    """The request rewritten into the placement group the options name, and the placement
    ``(group id hex, bundle index, capture child tasks)``; unchanged and None without one.

    Raises:
        ValueError: the bundle index is out of range, or the request exceeds the bundle.
    """
    where = group_placement(raw)
    if where is None:
        return resources, None
    pg, index, capture = where
    pg_hex = pg.id.hex()
    bundles = list(pg.bundle_specs)
    return task_resources(pg_hex, index, resources, bundles), (pg_hex, index, capture, bundles)


def env_vars_of(runtime_env: Any) -> dict[str, str] | None:
    if not runtime_env:
        return None
    if not isinstance(runtime_env, dict):
        raise TypeError(f"runtime_env must be a dict, got {type(runtime_env).__name__}")
    unsupported = sorted(k for k in runtime_env if k not in _RUNTIME_ENV_KEYS)
    if unsupported:
        raise ValueError(
            f"runtime_env option(s) {', '.join(map(repr, unsupported))} are not supported by "
            "rtml, which only sets 'env_vars': workers run in the driver's Python environment "
            "(install packages there, and put code on the driver's sys.path or pass it as "
            "arguments; cloudpickle.register_pickle_by_value(module) sends a module by value)"
        )
    env = runtime_env.get("env_vars")
    if env is None:
        return None
    if not isinstance(env, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in env.items()
    ):
        raise TypeError("runtime_env['env_vars'] must be a dict of str to str")
    return dict(env)


class TaskOptions:
    """Resolved options of a remote function, computed once per options() call."""

    __slots__ = (
        "dynamic",
        "env_vars",
        "max_retries",
        "name",
        "num_returns",
        "placement",
        "raw",
        "resources",
        "retry_exceptions",
        "strategy",
    )

    def __init__(self, raw: dict[str, Any], is_generator: bool) -> None:
        check_options(raw, TASK_OPTIONS, "a remote function")
        self.raw = raw
        self.resources = with_accelerator(
            normalize_request(
                raw.get("num_cpus"),
                raw.get("num_gpus"),
                raw.get("resources"),
                memory=raw.get("memory"),
            ),
            raw.get("accelerator_type"),
        )
        check_max_calls(raw.get("max_calls"))
        nr = raw.get("num_returns")
        # "dynamic" (Ray's older generator mode): one ref whose value is a
        # DynamicObjectRefGenerator of the yielded values' refs.
        self.dynamic = nr == "dynamic"
        if nr is None:
            nr = STREAMING if is_generator else 1
        elif nr == "streaming":
            nr = STREAMING
        elif nr == "dynamic":
            nr = 1
        elif not isinstance(nr, int) or isinstance(nr, bool):
            raise TypeError(
                f"num_returns must be an int, 'streaming' or 'dynamic', got {type(nr).__name__}"
            )
        elif nr < 0:
            raise ValueError(f"num_returns must be a non-negative int, got {nr!r}")
        self.num_returns = nr
        mr = raw.get("max_retries", 3)
        if not isinstance(mr, int) or isinstance(mr, bool):
            raise TypeError(f"max_retries must be an int, got {type(mr).__name__} {mr!r}")
        if mr < -1:
            raise ValueError(f"max_retries must be an int >= -1 (-1: retry forever), got {mr!r}")
        self.max_retries = mr
        rx = raw.get("retry_exceptions", False)
        if isinstance(rx, bool):
            pass
        elif isinstance(rx, (list, tuple)) and all(
            isinstance(c, type) and issubclass(c, BaseException) for c in rx
        ):
            rx = tuple(rx)
        else:
            raise ValueError(
                f"retry_exceptions must be a bool or a list of exception classes, got {rx!r}"
            )
        self.retry_exceptions = rx
        self.name = raw.get("name")
        self.env_vars = env_vars_of(raw.get("runtime_env"))
        self.strategy = normalize_strategy(raw.get("scheduling_strategy"))
        self.resources, self.placement = in_group(raw, self.resources)
