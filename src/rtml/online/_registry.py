"""A versioned, durable registry of model snapshots, and subscribers that follow it.

::

    learner ─ publish(state) ─▶ ModelRegistry(dir) ─▶ v00000001.pkl, v00000002.pkl, ... + HEAD
                                       ▲  pin(v) / unpin()   (HEAD names the served version)
    Subscriber ── poll(since) ─────────┘  loads a newer version off the prediction path and
               swaps one reference: a prediction never waits for a load

Each snapshot is written to a temporary file and renamed into place, so a reader never sees a
half-written version and a crashed learner leaves every published version intact.
"""

from __future__ import annotations

import json
import os
import pickle
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import cloudpickle

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
    """Versions of one model, durable in a directory.

    Args:
        path: the directory (created if missing); several processes may read it at once.

    Raises:
        OSError: the directory cannot be created.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = os.fspath(path)
        os.makedirs(self.path, exist_ok=True)

    def __reduce__(self) -> tuple:
        return (ModelRegistry, (self.path,))

    def _file(self, number: int) -> str:
        return os.path.join(self.path, f"v{number:08d}.pkl")

    def _write(self, name: str, data: bytes) -> None:
        tmp = os.path.join(self.path, f".{name}.{os.getpid()}.{threading.get_ident()}.tmp")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, os.path.join(self.path, name))

    def _head(self) -> dict[str, Any]:
        try:
            with open(os.path.join(self.path, "HEAD"), encoding="utf-8") as f:
                return dict(json.load(f))
        except FileNotFoundError:
            return {"latest": 0, "pinned": None}

    def versions(self) -> list[int]:
        """Every published version number, oldest first."""
        return sorted(int(n[1:9]) for n in os.listdir(self.path)
                      if n.startswith("v") and n.endswith(".pkl"))

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
            raise PublishError(f"cannot publish: {where} cannot be pickled ({e}); keep "
                               "connections, locks and open files out of the model, or give "
                               "it __getstate__/__setstate__") from e
        head = self._head()
        number = max(head["latest"], *(self.versions() or [0])) + 1
        v = Version(number, int(getattr(state, "position", 0)),
                    getattr(state, "event_time", None),
                    dict(metrics if metrics is not None else (
                        state.metric_values() if hasattr(state, "metric_values") else {})),
                    time.time())
        meta = {"number": v.number, "position": v.position, "event_time": v.event_time,
                "metrics": {k: float(x) for k, x in v.metrics.items()},
                "published": v.published}
        self._write(f"v{number:08d}.pkl", pickle.dumps((meta, blob), protocol=5))
        head["latest"] = number
        self._write("HEAD", json.dumps(head).encode())
        return v

    def current(self) -> int:
        """The version subscribers serve: the pinned one, else the latest (0: none yet)."""
        head = self._head()
        return int(head["pinned"] or head["latest"])

    def poll(self, since: int) -> int | None:
        """The current version number if it differs from ``since``, else ``None`` (cheap: one
        small file read)."""
        cur = self.current()
        return cur if cur and cur != since else None

    def get(self, number: int | None = None) -> Version:
        """Version ``number`` (default: the current one), with its model loaded.

        Raises:
            KeyError: no such version.
        """
        number = self.current() if number is None else number
        try:
            with open(self._file(number), "rb") as f:
                meta, blob = pickle.loads(f.read())
        except FileNotFoundError:
            raise KeyError(f"model version {number} is not in {self.path} "
                           f"(versions: {self.versions()[-5:]})") from None
        state = cloudpickle.loads(blob)
        return Version(meta["number"], meta["position"], meta["event_time"], meta["metrics"],
                       meta["published"], getattr(state, "model", state), state)

    def latest(self) -> Version:
        """The newest published version (ignores a pin). Raises KeyError if there is none."""
        return self.get(self._head()["latest"])

    def pin(self, number: int) -> None:
        """Serve version ``number`` from now on, whatever is published later (a rollback).

        Raises:
            KeyError: no such version.
        """
        if not os.path.exists(self._file(number)):
            raise KeyError(f"cannot pin model version {number}: not in {self.path}")
        head = self._head()
        head["pinned"] = number
        self._write("HEAD", json.dumps(head).encode())

    def unpin(self) -> None:
        """Serve the latest version again."""
        head = self._head()
        head["pinned"] = None
        self._write("HEAD", json.dumps(head).encode())

    def subscriber(self, interval: float = 0.05, follow: bool = True) -> Subscriber:
        """A :class:`Subscriber` holding the current version, following new ones."""
        return Subscriber(self, interval, follow)


class Subscriber:
    """Keeps the registry's current model in this process and swaps newer ones in.

    Loading happens on a background thread (``follow=True``) or in :meth:`refresh`; a
    prediction reads one reference, so it never waits for a load and never sees a mix.

    Args:
        registry: the :class:`ModelRegistry` to follow.
        interval: seconds between polls of the registry.
        follow: poll on a background thread (stop it with :meth:`close`).
    """

    def __init__(self, registry: ModelRegistry, interval: float = 0.05,
                 follow: bool = True) -> None:
        self.registry, self.interval = registry, interval
        self.version: Version | None = None
        self.swaps = 0
        self._stop = threading.Event()
        self.refresh()
        self._thread: threading.Thread | None = None
        if follow:
            self._thread = threading.Thread(target=self._loop, name="online-subscriber",
                                            daemon=True)
            self._thread.start()

    def refresh(self) -> bool:
        """Load the registry's current version if it is not the one held; True if swapped."""
        since = self.version.number if self.version is not None else 0
        n = self.registry.poll(since)
        if n is None:
            return False
        self.version = self.registry.get(n)  # one reference assignment: atomic for readers
        self.swaps += 1
        return True

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.refresh()
            except (OSError, KeyError, EOFError, pickle.UnpicklingError):
                continue  # a version being pruned or a transient read error: poll again

    def predict_one(self, x: dict) -> tuple[Any, int]:
        """``(prediction, version number)`` from the model held now.

        Raises:
            LookupError: nothing has been published yet.
        """
        v = self.version
        if v is None:
            raise LookupError(f"no model version in {self.registry.path} yet: wait for the "
                              "learner's first publish (or call learner.publish())")
        return v.model.predict_one(x), v.number

    def predict_proba_one(self, x: dict) -> tuple[Any, int]:
        """``(class probabilities, version number)``; see :meth:`predict_one`."""
        v = self.version
        if v is None:
            raise LookupError(f"no model version in {self.registry.path} yet")
        return v.model.predict_proba_one(x), v.number

    def close(self) -> None:
        """Stop following the registry."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> Subscriber:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
