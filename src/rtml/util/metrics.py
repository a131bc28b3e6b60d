"""Application metrics (as ``ray.util.metrics``): ``Counter``, ``Gauge`` and ``Histogram``.

::

    driver / task / actor ── inc / set / observe ──▶ this process's batch (a dict, no I/O)
        └─ at most every FLUSH_S (a one-shot timer), at exit, and on snapshot():
           one fire-and-forget call ── push(batch) ──▶ actor "rtml_metrics" (named, detached,
                                                       namespace "rtml"): sums the batches
    dashboard (in the driver) ── panel "Metrics" and GET /metrics (Prometheus text) ──▶
        snapshot of that actor, cached for a second

Counters and histograms send what changed since the last flush and are summed across
processes; a gauge sends its last value (the newest write wins). Uses only rtml's public API.
"""

from __future__ import annotations

import atexit
import bisect
import itertools
import math
import re
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

import rtml

__all__ = ["Counter", "Gauge", "Histogram", "Metric", "flush", "prometheus_text", "snapshot"]

ACTOR_NAME = "rtml_metrics"
NAMESPACE = "rtml"
FLUSH_S = 0.5
_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_TAG = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


class _Aggregator:
    """The actor that sums every process's batches."""

    def __init__(self) -> None:
        self.metrics: dict[str, dict[str, Any]] = {}

    def push(self, batch: dict[str, dict[str, Any]]) -> None:
        for name, m in batch.items():
            have = self.metrics.get(name)
            if have is None or have["kind"] != m["kind"]:
                have = self.metrics[name] = {**m, "series": {}}
            series = have["series"]
            for tags, v in m["series"].items():
                if m["kind"] == "gauge":
                    series[tags] = v
                elif m["kind"] == "counter":
                    series[tags] = series.get(tags, 0.0) + v
                else:
                    old = series.get(tags)
                    if old is None:
                        series[tags] = [list(v[0]), v[1]]
                    else:
                        old[0] = [a + b for a, b in zip(old[0], v[0], strict=True)]
                        old[1] += v[1]

    def snapshot(self) -> dict[str, dict[str, Any]]:
        return self.metrics


_Actor = rtml.remote(num_cpus=0)(_Aggregator)

_lock = threading.Lock()
_batch: dict[str, dict[str, Any]] = {}
_timer: threading.Timer | None = None
_actor: Any = None


_actor_session: tuple[str, str] | None = None


def _aggregator() -> Any:
    """The aggregator's handle, looked up again after rtml.shutdown() and a new init()."""
    global _actor, _actor_session
    ctx = rtml.get_runtime_context()
    session = (ctx.get_job_id(), ctx.get_node_id())
    if _actor is None or session != _actor_session:
        _actor_session = session
        _actor = _Actor.options(
            name=ACTOR_NAME, namespace=NAMESPACE, lifetime="detached", get_if_exists=True
        ).remote()
    return _actor


def flush(wait_s: float = 0.0) -> None:
    """Send this process's pending updates to the aggregator now.

    Args:
        wait_s: wait up to this long for the aggregator to have them (the periodic flush
            waits: a call sent from a worker's own thread between tasks is only sent on by
            waiting for it).
    """
    global _timer, _actor
    if not rtml.is_initialized():
        with _lock:
            _timer = None  # kept until a runtime is there to send them to
        return
    with _lock:
        batch = {k: {**m, "series": dict(m["series"])} for k, m in _batch.items()}
        for m in _batch.values():
            m["series"].clear()
        _timer = None
    batch = {k: m for k, m in batch.items() if m["series"]}
    if not batch:
        return
    try:
        try:
            ref = _aggregator().push.remote(batch)
        except Exception:
            _actor = None  # the runtime restarted or the actor is gone: look it up again
            ref = _aggregator().push.remote(batch)
        if wait_s > 0:
            rtml.wait([ref], timeout=wait_s)
    except Exception:
        pass  # no runtime to report to (shutting down): the updates are dropped


def _flush_at_exit() -> None:
    try:
        flush()
    except Exception:
        pass


atexit.register(_flush_at_exit)


def snapshot(timeout: float = 10.0) -> dict[str, dict[str, Any]]:
    """Every metric of every process, as the aggregator holds them: ``{name: {"kind",
    "description", "tag_keys", "boundaries", "series": {tag values tuple: value}}}`` (a
    histogram's value is ``[bucket counts, sum]``). Flushes this process's updates first."""
    flush()
    return rtml.get(_aggregator().snapshot.remote(), timeout=timeout)


def _record(metric: Metric, tags: Mapping[str, str] | None, apply: Any) -> None:
    global _timer
    key = metric._tag_values(tags)
    if _actor is None and rtml.is_initialized():
        # Looked up here, on the recording thread (a task's, in a worker), once per process:
        # from the flush timer's own thread, in a worker between tasks, it can stall.
        try:
            _aggregator()
        except Exception:
            pass  # flush tries again
    with _lock:
        m = _batch.get(metric._name)
        if m is None:
            m = _batch[metric._name] = metric._header()
        apply(m["series"], key)
        if _timer is None:
            _timer = threading.Timer(FLUSH_S, flush, kwargs={"wait_s": 5.0})
            _timer.name = "rtml-metrics-flush"
            _timer.daemon = True
            _timer.start()


class Metric:
    """What Counter, Gauge and Histogram share: a name, a description and tag keys."""

    _kind = ""

    def __init__(
        self, name: str, description: str = "", tag_keys: Sequence[str] | None = None
    ) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError("Empty name is not allowed. Please provide a metric name.")
        if not _NAME.match(name):
            raise ValueError(
                f"Invalid metric name {name!r}: use letters, digits, '_' and ':' "
                "(not starting with a digit)"
            )
        if tag_keys is None:
            tag_keys = ()
        if not isinstance(tag_keys, tuple):
            raise TypeError(f"tag_keys should be a tuple type, got: {type(tag_keys)}")
        for k in tag_keys:
            if not isinstance(k, str):
                raise TypeError(f"Tag keys must be str, got {type(k)}.")
            if not _TAG.match(k):
                raise ValueError(f"Invalid tag key {k!r}")
        self._name = name
        self._description = description
        self._tag_keys = tag_keys
        self._default_tags: dict[str, str] = {}

    @property
    def info(self) -> dict[str, Any]:
        return {
            "name": self._name,
            "description": self._description,
            "tag_keys": self._tag_keys,
            "default_tags": dict(self._default_tags),
        }

    def set_default_tags(self, default_tags: Mapping[str, str]) -> Metric:
        """Tags used when a record does not give them; returns the metric (to chain)."""
        for k, v in default_tags.items():
            if k not in self._tag_keys:
                raise ValueError(f"Unrecognized tag key {k!r}.")
            if not isinstance(v, str):
                raise TypeError(f"Tag values must be str, got {type(v)}.")
        self._default_tags = dict(default_tags)
        return self

    def _tag_values(self, tags: Mapping[str, str] | None) -> tuple[str, ...]:
        final = dict(self._default_tags)
        if tags:
            for k, v in tags.items():
                if k not in self._tag_keys:
                    raise ValueError(f"Unrecognized tag key {k!r}.")
                if not isinstance(v, str):
                    raise TypeError(f"Tag values must be str, got {type(v)}.")
            final.update(tags)
        missing = [k for k in self._tag_keys if k not in final]
        if missing:
            raise ValueError(f"Missing value for tag key(s): {','.join(missing)}.")
        return tuple(final[k] for k in self._tag_keys)

    def _header(self) -> dict[str, Any]:
        return {
            "kind": self._kind,
            "description": self._description,
            "tag_keys": self._tag_keys,
            "boundaries": None,
            "series": {},
        }


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"metric values are numbers, got {type(value).__name__}")
    return float(value)


class Counter(Metric):
    """A cumulative count, summed over every process (Prometheus ``counter``)."""

    _kind = "counter"

    def inc(self, value: float = 1.0, tags: Mapping[str, str] | None = None) -> None:
        v = _number(value)
        if v <= 0:
            raise ValueError(f"value must be >0, got {value}")

        def add(series: dict[Any, Any], key: tuple[str, ...]) -> None:
            series[key] = series.get(key, 0.0) + v

        _record(self, tags, add)


class Gauge(Metric):
    """A value that goes up and down; the last ``set`` from any process wins."""

    _kind = "gauge"

    def set(self, value: float, tags: Mapping[str, str] | None = None) -> None:
        v = _number(value)

        def put(series: dict[Any, Any], key: tuple[str, ...]) -> None:
            series[key] = v

        _record(self, tags, put)


class Histogram(Metric):
    """Observations counted in buckets with the given upper ``boundaries`` (plus +Inf)."""

    _kind = "histogram"

    def __init__(
        self,
        name: str,
        description: str = "",
        boundaries: Sequence[float] | None = None,
        tag_keys: Sequence[str] | None = None,
    ) -> None:
        super().__init__(name, description, tag_keys)
        if not boundaries:
            raise ValueError(
                "boundaries argument should be provided when using the Histogram class. "
                "e.g., Histogram('name', boundaries=[1.0, 2.0])"
            )
        bounds = [_number(b) for b in boundaries]
        for b in bounds:
            if b <= 0 or not math.isfinite(b):
                raise ValueError(
                    f"Invalid `boundaries` argument at index {bounds.index(b)}, {b}. "
                    "Use positive values for the arguments."
                )
        if any(b >= c for b, c in itertools.pairwise(bounds)):
            raise ValueError(f"boundaries must be strictly increasing, got {bounds}")
        self.boundaries = bounds

    @property
    def info(self) -> dict[str, Any]:
        return {**super().info, "boundaries": list(self.boundaries)}

    def _header(self) -> dict[str, Any]:
        return {**super()._header(), "boundaries": list(self.boundaries)}

    def observe(self, value: float, tags: Mapping[str, str] | None = None) -> None:
        v = _number(value)
        i = bisect.bisect_left(self.boundaries, v)
        n = len(self.boundaries) + 1

        def add(series: dict[Any, Any], key: tuple[str, ...]) -> None:
            h = series.get(key)
            if h is None:
                h = series[key] = [[0] * n, 0.0]
            h[0][i] += 1
            h[1] += v

        _record(self, tags, add)


def _label(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _num(v: float) -> str:
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    if math.isnan(v):
        return "NaN"
    return repr(float(v)) if not float(v).is_integer() else str(int(v))


def prometheus_text(metrics: Mapping[str, Mapping[str, Any]]) -> str:
    """Prometheus exposition text (version 0.0.4) of a :func:`snapshot`."""
    out: list[str] = []
    for name in sorted(metrics):
        m = metrics[name]
        desc = str(m.get("description") or "").replace("\\", "\\\\").replace("\n", "\\n")
        out.append(f"# HELP {name} {desc}".rstrip())
        out.append(f"# TYPE {name} {m['kind']}")
        keys = m["tag_keys"]
        for tags, v in sorted(m["series"].items()):
            labels = [f'{k}="{_label(t)}"' for k, t in zip(keys, tags, strict=True)]
            if m["kind"] != "histogram":
                lab = "{" + ",".join(labels) + "}" if labels else ""
                out.append(f"{name}{lab} {_num(v)}")
                continue
            counts, total = v
            acc = 0
            for i, c in enumerate(counts):
                acc += c
                le = "+Inf" if i == len(m["boundaries"]) else _num(m["boundaries"][i])
                bucket = ",".join([*labels, 'le="' + le + '"'])
                out.append(f"{name}_bucket{{{bucket}}} {acc}")
            lab = "{" + ",".join(labels) + "}" if labels else ""
            out.append(f"{name}_sum{lab} {_num(total)}")
            out.append(f"{name}_count{lab} {acc}")
    return "\n".join(out) + "\n" if out else ""


# What the dashboard shows (it runs in the driver): the aggregator's figures, asked for at
# most once a second so a page refresh never waits on the actor more than that.
_cache: tuple[float, dict[str, dict[str, Any]]] | None = None


def _cached() -> dict[str, dict[str, Any]]:
    global _cache
    now = time.monotonic()
    if _cache is not None and now - _cache[0] < 1.0:
        return _cache[1]
    if not rtml.is_initialized():
        return {}
    try:
        actor = rtml.get_actor(ACTOR_NAME, namespace=NAMESPACE)
    except ValueError:
        return {}  # no metric was recorded yet
    flush()
    data = rtml.get(actor.snapshot.remote(), timeout=2.0)
    _cache = (now, data)
    return data


def _panel_rows() -> list[dict[str, Any]]:
    rows = []
    for name, m in sorted(_cached().items()):
        for tags, v in sorted(m["series"].items()):
            row: dict[str, Any] = {
                "metric": name,
                "kind": m["kind"],
                "tags": ",".join(f"{k}={t}" for k, t in zip(m["tag_keys"], tags, strict=True)),
            }
            if m["kind"] == "histogram":
                n = sum(v[0])
                row.update(value=n, mean=round(v[1] / n, 6) if n else None)
            else:
                row["value"] = v
            rows.append(row)
    return rows


def _register() -> None:
    from rtml.dashboard import register_metrics, register_panel

    register_panel("metrics", "Metrics (rtml.util.metrics)", _panel_rows)
    register_metrics("rtml.util.metrics", lambda: prometheus_text(_cached()))


_register()
