"""A versioned, durable registry of model snapshots, and subscribers that follow it.

::

    learner ─ publish(state) ─▶ ModelRegistry("dir" | "redis://host:port/db", name=)
                                   versions 1, 2, ... (immutable) + head {latest, pinned}
                                       ▲  pin(v) / unpin() / rollback()
    Subscriber ── head() poll ─────────┘  loads a newer version off the prediction path and
       │       swaps one reference: a prediction never waits for a load
       └─ stats(): version, swaps, predictions, freshness p50/p99 (first prediction served by
          a version minus its newest event time), version lag, load time; prometheus();
          response(x) for a serving deployment (body and ``x-model-version`` header)

A version is published atomically (a file renamed into place, or one Lua script in Redis), so a
reader never sees a half-written version and a crashed learner leaves every published version
intact.
"""

from __future__ import annotations

import itertools
import math
import os
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import cloudpickle

from rtml.online._store import DirStore, RedisStore, is_redis_location

__all__ = ["ModelRegistry", "PublishError", "Subscriber", "Version"]


class PublishError(Exception):
    """A snapshot could not be published (e.g. the model cannot be pickled)."""


@dataclass
class Version:
    """One published snapshot.

    Attributes:
        number: 1, 2, ... in publish order.
        position: how many samples the model had learned (the stream offset to resume from).
        event_time: the newest event time it had learned from (``None`` if events had none).
        metrics: its test-then-train metrics at that moment.
        published: wall-clock time of the publish.
        model: the model itself (loaded lazily by :meth:`ModelRegistry.get`).
    """

    number: int
    position: int
    event_time: float | None
    metrics: dict[str, float]
    published: float
    model: Any = field(default=None, repr=False)
    state: Any = field(default=None, repr=False)


def _unpicklable_path(obj: Any, path: str, depth: int = 0) -> str | None:
    """The dotted path of the deepest attribute of ``obj`` that cannot be pickled."""
    try:
        cloudpickle.dumps(obj)
        return None
    except Exception:
        pass
    if depth < 8:
        children: list[tuple[str, Any]] = []
        if isinstance(obj, dict):
            children = [(f"{path}[{k!r}]", v) for k, v in obj.items()]
        elif isinstance(obj, (list, tuple)):
            children = [(f"{path}[{i}]", v) for i, v in enumerate(obj)]
        elif hasattr(obj, "__dict__"):
            children = [(f"{path}.{k}", v) for k, v in vars(obj).items()]
        for p, v in children:
            found = _unpicklable_path(v, p, depth + 1)
            if found is not None:
                return found
    return f"{path} ({type(obj).__name__})"


class ModelRegistry:
    """Versions of one model, durable in a directory or in Redis.

    Args:
        location: a directory path (created if missing), or a Redis URL
            (``"redis://host:port/db"``, ``"rediss://..."``, ``"unix:///path.sock"``).
        name: the model's name. In Redis the versions live under ``rtml:online:<name>:``
            (default ``"model"``), so one server holds many models; in a directory a ``name``
            is a subdirectory (default: the directory itself).
        keep: keep only the newest ``keep`` versions (plus a pinned one); default: all.

    The registry is picklable (it travels as its location), so pass it into actors and
    serving replicas. Durability is the backend's: a directory's files are fsynced; Redis
    keeps versions as long as the server does (enable its AOF or RDB persistence to survive a
    restart of redis-server itself).

    Raises:
        OSError: the directory cannot be created.
        ConnectionError: Redis is not reachable at ``location``.
        ImportError: a Redis location without the ``redis`` package (``rtml[stream]``).
    """

    def __init__(
        self, location: str | os.PathLike, name: str | None = None, *, keep: int | None = None
    ) -> None:
        if keep is not None and keep < 1:
            raise ValueError(f"keep={keep}: keep at least 1 version (or None for all)")
        self.name, self.keep = name, keep
        self._store: DirStore | RedisStore
        if is_redis_location(location):
            self.location = str(location)
            self.path = None
            self._store = RedisStore(self.location, name or "model", keep)
        else:
            self.location = os.fspath(location)
            self.path = os.path.join(self.location, name) if name else self.location
            self._store = DirStore(self.path, keep)
        from rtml.online._panel import track_registry

        track_registry(self)

    def __reduce__(self) -> tuple:
        return (_make_registry, (self.location, self.name, self.keep))

    def __repr__(self) -> str:
        return f"ModelRegistry({self.describe()!r})"

    def describe(self) -> str:
        """Where the versions are (a path, or the Redis URL and key prefix)."""
        return self._store.describe()

    def head(self) -> tuple[int, int | None]:
        """``(latest version number, pinned number or None)``; one cheap read (0: none yet)."""
        return self._store.head()

    def versions(self) -> list[int]:
        """Every version number kept, oldest first."""
        return self._store.versions()

    def publish(self, state: Any, metrics: dict[str, float] | None = None) -> Version:
        """Write a new version holding ``state`` (an :class:`OnlineState` or a bare model).

        Returns:
            The new :class:`Version` (without the model loaded).

        Raises:
            PublishError: the state cannot be pickled; the message names the attribute.
        """
        try:
            blob = cloudpickle.dumps(state)
        except Exception as e:
            where = _unpicklable_path(state, "model" if not hasattr(state, "model") else "state")
            raise PublishError(
                f"cannot publish: {where} cannot be pickled ({e}); keep "
                "connections, locks and open files out of the model, or give "
                "it __getstate__/__setstate__"
            ) from e
        meta: dict[str, Any] = {
            "position": int(getattr(state, "position", 0)),
            "event_time": getattr(state, "event_time", None),
            "metrics": {
                k: float(x)
                for k, x in dict(
                    metrics
                    if metrics is not None
                    else (state.metric_values() if hasattr(state, "metric_values") else {})
                ).items()
            },
            "published": time.time(),
        }
        number = self._store.put(meta, blob)
        return Version(
            number, meta["position"], meta["event_time"], meta["metrics"], meta["published"]
        )

    def current(self) -> int:
        """The version subscribers serve: the pinned one, else the latest (0: none yet)."""
        latest, pinned = self.head()
        return int(pinned or latest)

    def poll(self, since: int) -> int | None:
        """The current version number if it differs from ``since``, else ``None`` (cheap: one
        small file read or one Redis ``HMGET``)."""
        cur = self.current()
        return cur if cur and cur != since else None

    def get(self, number: int | None = None) -> Version:
        """Version ``number`` (default: the current one), with its model loaded.

        Raises:
            KeyError: no such version (never published, or pruned by ``keep``).
        """
        number = self.current() if number is None else number
        try:
            meta, blob = self._store.read(number)
        except KeyError:
            raise KeyError(
                f"model version {number} is not in {self.describe()} "
                f"(versions: {self.versions()[-5:]})"
            ) from None
        state = cloudpickle.loads(blob)
        return Version(
            meta["number"],
            meta["position"],
            meta["event_time"],
            meta["metrics"],
            meta["published"],
            getattr(state, "model", state),
            state,
        )

    def latest(self) -> Version:
        """The newest published version (ignores a pin). Raises KeyError if there is none."""
        return self.get(self.head()[0])

    def pin(self, number: int) -> None:
        """Serve version ``number`` from now on, whatever is published later.

        Raises:
            KeyError: no such version.
        """
        try:
            self._store.set_pin(int(number))
        except KeyError:
            raise KeyError(
                f"cannot pin model version {number}: not in {self.describe()} "
                f"(versions: {self.versions()[-5:]})"
            ) from None

    def unpin(self) -> None:
        """Serve the latest version again."""
        self._store.set_pin(None)

    def rollback(self) -> int:
        """Pin the version before the one served now (the newest older one still kept).

        Returns:
            The version number now served.

        Raises:
            KeyError: there is no older version.
        """
        cur = self.current()
        older = [n for n in self.versions() if n < cur]
        if not older:
            raise KeyError(
                f"cannot roll back from model version {cur}: no older version in {self.describe()}"
            )
        self.pin(older[-1])
        return older[-1]

    def subscriber(
        self, interval: float = 0.05, follow: bool = True, window: int = 1000
    ) -> Subscriber:
        """A :class:`Subscriber` holding the current version, following new ones."""
        return Subscriber(self, interval, follow, window=window)

    def subscribers(self) -> list[dict[str, Any]]:
        """The last :meth:`Subscriber.stats` of every following subscriber of this registry, in
        any process (each reports every 2 s; one silent for 10 s is left out)."""
        return self._store.reports()


def _make_registry(location: str, name: str | None, keep: int | None) -> ModelRegistry:
    return ModelRegistry(location, name, keep=keep)


class _Served:
    """A version as a subscriber serves it: the model, and when it first answered."""

    __slots__ = ("count", "first", "fresh", "model", "number", "retired", "version")

    def __init__(self, version: Version) -> None:
        self.version, self.model, self.number = version, version.model, version.number
        self.count = itertools.count()  # next() is atomic under the GIL: no lock
        self.first: float | None = None
        self.retired: float | None = None
        self.fresh = False  # its freshness has been taken

    def served(self) -> int:
        return int(repr(self.count)[6:-1])  # "count(N)": the predictions counted so far


_SUB_IDS = itertools.count(1)
_HOST = socket.gethostname()


def _quantile(xs: Any, q: float) -> float | None:
    """Nearest rank: the smallest value with at least ``q`` of the values at or below it."""
    s = sorted(xs)
    return s[max(0, math.ceil(q * len(s)) - 1)] if s else None


class Subscriber:
    """Keeps the registry's current model in this process and swaps newer ones in.

    Loading happens on a background thread (``follow=True``) or in :meth:`refresh`; a
    prediction reads one reference and bumps one counter, so it never waits for a load and
    never sees a mix of versions.

    Args:
        registry: the :class:`ModelRegistry` to follow.
        interval: seconds between polls of the registry.
        follow: poll on a background thread (stop it with :meth:`close`); it also reports
            :meth:`stats` to the registry every 2 s (:meth:`ModelRegistry.subscribers`).
        window: how many versions' freshness and load times the quantiles cover.

    Freshness of a version is the wall-clock time of the first prediction it served minus its
    ``event_time`` (the newest event time it learned). It is in seconds when events carry
    their arrival time as ``time.time()`` (``learner.learn(x, y, t=time.time())``).
    """

    def __init__(
        self,
        registry: ModelRegistry,
        interval: float = 0.05,
        follow: bool = True,
        window: int = 1000,
    ) -> None:
        self.registry, self.interval = registry, interval
        self.id = f"{_HOST}-{os.getpid()}-{next(_SUB_IDS)}"
        self._served: _Served | None = None
        self.swaps = 0
        self.polls = self.poll_errors = 0
        self.latest = 0
        self.pinned: int | None = None
        self.version_lag = 0
        self.first_load_ms: float | None = None
        self._freshness: deque[float] = deque(maxlen=window)
        self._load_ms: deque[float] = deque(maxlen=window)
        self._records: list[_Served] = []  # the served one and those retired < 1 s ago
        self._retired_predictions = 0
        self._unserved = 0
        self._lock = threading.Lock()  # refresh and stats, never a prediction
        self._stop = threading.Event()
        self.refresh()
        self._thread: threading.Thread | None = None
        if follow:
            self._thread = threading.Thread(
                target=self._loop, name="online-subscriber", daemon=True
            )
            self._thread.start()
        from rtml.online._panel import track_subscriber

        track_subscriber(self)

    @property
    def version(self) -> Version | None:
        """The :class:`Version` served now (``None`` before the first publish)."""
        s = self._served
        return s.version if s is not None else None

    def refresh(self) -> bool:
        """Poll the registry and load its current version if it is not the one held (off the
        prediction path); True if swapped."""
        with self._lock:
            latest, pinned = self.registry.head()
            self.polls += 1
            self.latest, self.pinned = latest, pinned
            cur = pinned or latest
            s = self._served
            swapped = False
            if cur and (s is None or cur != s.number):
                t0 = time.perf_counter()
                v = self.registry.get(cur)
                ms = (time.perf_counter() - t0) * 1000
                if s is None:  # the first load also imports the model's modules
                    self.first_load_ms = ms
                else:
                    self._load_ms.append(ms)
                new = _Served(v)
                self._served = new  # one reference assignment: atomic for readers
                if s is not None:
                    s.retired = time.monotonic()
                self._records.append(new)
                self.swaps += 1
                swapped = True
            served = self._served.number if self._served is not None else 0
            self.version_lag = max(0, latest - served)
            self._collect()
            return swapped

    def _collect(self) -> None:
        """Take the freshness of versions that have answered; retire versions swapped out
        over a second ago (a prediction that read the old reference has finished by then)."""
        now = time.monotonic()
        keep = []
        for s in self._records:
            if s.first is not None and not s.fresh:
                s.fresh = True
                if s.version.event_time is not None:
                    self._freshness.append(s.first - s.version.event_time)
            if s.retired is not None and now - s.retired > 1.0:
                self._retired_predictions += s.served()
                self._unserved += not s.fresh  # swapped out before it served a prediction
            else:
                keep.append(s)
        self._records = keep

    def _loop(self) -> None:
        next_report = 0.0
        while not self._stop.wait(self.interval):
            try:
                self.refresh()
            except Exception:  # a version being pruned, a transient read error: poll again
                self.poll_errors += 1
            if time.monotonic() >= next_report:
                next_report = time.monotonic() + 2.0
                try:
                    self.registry._store.report(self.id, self.stats(), ttl=10.0)
                except Exception:
                    pass  # reports are best effort

    def _take(self) -> _Served:
        s = self._served
        if s is None:
            raise LookupError(
                f"no model version in {self.registry.describe()} yet: wait for "
                "the learner's first publish (or call learner.publish())"
            )
        return s

    def predict_one(self, x: dict) -> tuple[Any, int]:
        """``(prediction, version number)`` from the model held now.

        Raises:
            LookupError: nothing has been published yet.
        """
        s = self._take()
        y = s.model.predict_one(x)
        if next(s.count) == 0:
            s.first = time.time()
        return y, s.number

    def predict_proba_one(self, x: dict) -> tuple[Any, int]:
        """``(class probabilities, version number)``; see :meth:`predict_one`."""
        s = self._take()
        y = s.model.predict_proba_one(x)
        if next(s.count) == 0:
            s.first = time.time()
        return y, s.number

    def predict(self, x: dict, proba: bool = False) -> dict[str, Any]:
        """``{"prediction": ..., "version": n}``: what a deployment returns to a handle call
        (``proba=True``: class probabilities, keys made strings for JSON)."""
        if proba:
            p, n = self.predict_proba_one(x)
            return {"prediction": {str(k): v for k, v in p.items()}, "version": n}
        y, n = self.predict_one(x)
        return {"prediction": y, "version": n}

    def response(self, x: dict, proba: bool = False) -> Any:
        """A Starlette ``JSONResponse`` of :meth:`predict`, with the serving version in the
        ``x-model-version`` header: return it from a deployment's ``__call__`` (rtml.serve or
        Ray Serve)."""
        from starlette.responses import JSONResponse

        body = self.predict(x, proba)
        return JSONResponse(body, headers={"x-model-version": str(body["version"])})

    def stats(self) -> dict[str, Any]:
        """What is served and how fresh it is.

        Returns:
            ``version`` (served now; 0 before the first publish), ``event_time`` (its newest
            event time), ``latest`` and ``pinned`` (the registry's, at the last poll),
            ``version_lag`` (latest minus served, at the last poll), ``swaps``,
            ``predictions``, ``freshness_p50_s`` / ``freshness_p99_s`` / ``freshness_n``
            (over the last ``window`` versions that served a prediction; ``None`` until one
            has), ``load_ms_p50`` / ``load_ms_p99`` (loading a newer version, off the
            prediction path; ``None`` before the first swap), ``first_load_ms`` (the first
            version, which also imports the model's modules), ``unserved_versions`` (swapped out before serving anything), ``polls``,
            ``poll_errors``, ``registry``, ``subscriber``.
        """
        with self._lock:
            self._collect()
            s = self._served
            predictions = self._retired_predictions + sum(w.served() for w in self._records)
            fr, ld = list(self._freshness), list(self._load_ms)

            def r(v: float | None, d: int) -> float | None:
                return None if v is None else round(v, d)

            return {
                "registry": self.registry.describe(),
                "subscriber": self.id,
                "version": s.number if s is not None else 0,
                "event_time": s.version.event_time if s is not None else None,
                "latest": self.latest,
                "pinned": self.pinned,
                "version_lag": self.version_lag,
                "swaps": self.swaps,
                "predictions": predictions,
                "freshness_p50_s": r(_quantile(fr, 0.5), 4),
                "freshness_p99_s": r(_quantile(fr, 0.99), 4),
                "freshness_n": len(fr),
                "load_ms_p50": r(_quantile(ld, 0.5), 3),
                "load_ms_p99": r(_quantile(ld, 0.99), 3),
                "first_load_ms": r(self.first_load_ms, 3),
                "unserved_versions": self._unserved,
                "polls": self.polls,
                "poll_errors": self.poll_errors,
            }

    def prometheus(self) -> str:
        """:meth:`stats` in Prometheus text format (return it from a metrics route, e.g.
        ``PlainTextResponse(sub.prometheus())``, or use :meth:`metrics_response`)."""
        st = self.stats()
        name = self.registry.name or os.path.basename(self.registry.path or "") or "model"
        lab = f'registry="{_escape(name)}",subscriber="{_escape(self.id)}"'
        out: list[str] = []

        def metric(key: str, kind: str, help_: str, samples: list[tuple[str, Any]]) -> None:
            out.append(f"# HELP rtml_online_{key} {help_}")
            out.append(f"# TYPE rtml_online_{key} {kind}")
            for extra, v in samples:
                if v is not None:
                    out.append(f"rtml_online_{key}{{{lab}{extra}}} {float(v):g}")

        metric("model_version", "gauge", "Model version served now.", [("", st["version"])])
        metric(
            "latest_version",
            "gauge",
            "Newest version in the registry at the last poll.",
            [("", st["latest"])],
        )
        metric(
            "version_lag",
            "gauge",
            "Registry latest minus served version.",
            [("", st["version_lag"])],
        )
        metric("swaps_total", "counter", "Versions swapped in.", [("", st["swaps"])])
        metric("predictions_total", "counter", "Predictions served.", [("", st["predictions"])])
        metric(
            "freshness_seconds",
            "summary",
            "First prediction served by a version minus its newest event time.",
            [
                (',quantile="0.5"', st["freshness_p50_s"]),
                (',quantile="0.99"', st["freshness_p99_s"]),
            ],
        )
        metric(
            "load_milliseconds",
            "summary",
            "Time to load a version (off the prediction path).",
            [(',quantile="0.5"', st["load_ms_p50"]), (',quantile="0.99"', st["load_ms_p99"])],
        )
        return "\n".join(out) + "\n"

    def metrics_response(self) -> Any:
        """A Starlette response of :meth:`prometheus` (for a deployment's metrics route)."""
        from starlette.responses import PlainTextResponse

        return PlainTextResponse(self.prometheus(), media_type="text/plain; version=0.0.4")

    def close(self) -> None:
        """Stop following the registry."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
            try:
                self.registry._store.forget(self.id)
            except Exception:
                pass

    def __enter__(self) -> Subscriber:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _escape(s: str) -> str:
    return s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
