"""The learning state that a learner actor hosts: model, test-then-train metrics, drift, bad input.

::

    learn(x, y) ─▶ check x ─▶ predict ─▶ metrics.update (whole stream + rolling window)
                                     └─▶ error ─▶ drift detector ─▶ alert | reset | swap
                   └─▶ model.learn_one(x, y) ─▶ position += 1
    predict(x, key) ─▶ pending[key] ── label(key, y) ─▶ score + learn   (delayed labels)
                                   └── expire(now) after label_timeout ─▶ counted, dead-lettered
    learn_many(samples) ─▶ one by one (exact test-then-train), or with mini_batch=True and a
                           model with learn_many: predict the batch, score it, learn the batch
                           (batch-prequential)

Pure Python and picklable, so a snapshot of it is a snapshot of the learner.
"""

from __future__ import annotations

import importlib
import time
import traceback
from collections import deque
from typing import Any

from rtml.util.engine import optional_import

__all__ = ["Drift", "OnlineState"]

_NUMERIC = (int, float, bool)
_MAX_SIGNATURES = 64  # type signatures of samples that passed the feature check, remembered


def _river() -> Any:
    river = optional_import("river", "online", "rtml.online")
    for sub in ("base", "drift", "metrics", "utils"):  # ``import river`` does not load them
        importlib.import_module(f"river.{sub}")
    return river


class Drift:
    """What to watch for concept drift, and what to do on it.

    Args:
        detector: a River drift detector fed the error stream (0/1 for a classifier, absolute
            error for a regressor); default ``river.drift.ADWIN()``.
        action: ``"alert"`` (record only), ``"reset"`` (replace the model with an untrained
            clone) or ``"swap"`` (replace it with a background model trained since the warning).
        warning: the detector whose detection starts the background model for ``"swap"``;
            default ``river.drift.ADWIN(delta=0.01)`` (more sensitive than the drift detector).

    Raises:
        ValueError: an unknown action.
    """

    def __init__(self, detector: Any = None, action: str = "alert", warning: Any = None) -> None:
        if action not in ("alert", "reset", "swap"):
            raise ValueError(f"Drift action {action!r} is unknown: use 'alert', 'reset' or 'swap'")
        river = _river()
        self.detector = detector if detector is not None else river.drift.ADWIN()
        self.action = action
        self.warning = None
        if action == "swap":
            self.warning = warning if warning is not None else river.drift.ADWIN(delta=0.01)


class OnlineState:
    """A model learning test-then-train, with River metrics, delayed labels and drift handling.

    Args:
        model: a River estimator (``learn_one`` with ``predict_one``/``predict_proba_one``).
        metrics: River metrics scored over the whole stream (default ``Accuracy`` for a
            classifier, ``MAE`` for a regressor).
        window: size of the rolling window for a second copy of each metric (0: none).
        drift: a :class:`Drift`, or ``None`` for no drift detection.
        label_timeout: seconds a prediction waits for its delayed label before it is expired.
        check_features: dead-letter a sample whose features miss or change type against the
            first sample's (a River model would silently learn from it otherwise).
        max_dead_letters: how many dead letters are kept (all are counted).
        mini_batch: learn :meth:`learn_many`'s samples as one mini-batch when the model has
            River's ``learn_many`` (and pandas is installed): the batch is predicted, scored,
            then learned (batch-prequential; figures differ from one-by-one). Otherwise, and by
            default, one by one, exactly as ``river.evaluate.progressive_val_score``.
    """

    def __init__(
        self,
        model: Any,
        metrics: list[Any] | None = None,
        *,
        window: int = 1000,
        drift: Drift | None = None,
        label_timeout: float = 600.0,
        check_features: bool = True,
        max_dead_letters: int = 1000,
        mini_batch: bool = False,
    ) -> None:
        river = _river()
        if not hasattr(model, "learn_one"):
            raise TypeError(f"{type(model).__name__} has no learn_one: pass a River estimator")
        self.model = model
        self.is_classifier = isinstance(model, river.base.Classifier) or _last_step_is(
            model, river.base.Classifier
        )
        if metrics is None:
            metrics = [river.metrics.Accuracy() if self.is_classifier else river.metrics.MAE()]
        self.metrics = list(metrics)
        self.rolling = (
            [
                river.utils.Rolling(
                    type(m),
                    window_size=window,
                    **{k: v for k, v in m._get_params().items() if k != "cm"},
                )
                for m in self.metrics
            ]
            if window
            else []
        )
        self.use_proba = self.is_classifier and any(not m.requires_labels for m in self.metrics)
        self.drift = drift
        self.background: Any = None
        self.drifts: list[dict[str, Any]] = []
        self.label_timeout = label_timeout
        self.pending: dict[Any, tuple[dict, Any, float]] = {}
        self.check_features = check_features
        self.schema: dict[str, bool] | None = None  # feature -> numeric?
        self.position = 0  # samples learned
        self.seen = 0  # samples offered (learned + dead-lettered)
        self.event_time: float | None = None
        self.counts = {
            "learned": 0,
            "bad_features": 0,
            "model_error": 0,
            "unknown_key": 0,
            "expired": 0,
        }
        self.dead: deque = deque(maxlen=max_dead_letters)
        self.mini_batch = bool(mini_batch) and _supports_many(model)
        # feed -> (epoch, samples of that epoch learned): what each exactly-once feed (a
        # dataflow sink writer) has delivered, so a replayed epoch is learned only once
        self.feeds: dict[Any, tuple[int, int]] = {}
        self.learner_id: str | None = None  # the Learner whose actor holds this state
        self.outbox: deque | None = None  # dead letters not yet sent to the output (actor)
        self.outbox_dropped = 0
        self._keys: frozenset | None = None
        self._good: set[tuple] = set()
        self._updates: list[tuple[Any, bool]] | None = None

    def __getstate__(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["outbox"] = None  # what is not yet sent is not part of a snapshot
        d["_updates"] = None  # bound methods: rebuilt on first use
        return d

    def __setstate__(self, d: dict[str, Any]) -> None:
        d.setdefault("feeds", {})
        d.setdefault("learner_id", None)
        d.setdefault("outbox", None)
        d.setdefault("outbox_dropped", 0)
        d.setdefault("mini_batch", False)
        d.setdefault("_keys", frozenset(d["schema"]) if d.get("schema") is not None else None)
        d.setdefault("_good", set())
        d["_updates"] = None
        self.__dict__.update(d)

    # -- input -----------------------------------------------------------------------------

    def _bad(self, kind: str, item: Any, reason: str) -> None:
        self.counts[kind] += 1
        rec = {"kind": kind, "item": item, "reason": reason, "position": self.seen}
        self.dead.append(rec)
        out = self.outbox
        if out is not None:
            if len(out) >= out.maxlen:  # type: ignore[operator]
                self.outbox_dropped += 1
            out.append(rec)

    def _check(self, x: Any) -> str | None:
        if type(x) is not dict and not isinstance(x, dict):
            return f"features must be a dict, got {type(x).__name__}"
        if not self.check_features:
            return None
        if self.schema is None:
            self.schema = {k: isinstance(v, _NUMERIC) for k, v in x.items() if v is not None}
            self._keys = frozenset(self.schema)
            return None
        # Fast path: the same feature types as a sample that already passed (one C-level
        # map per sample instead of a Python loop over the features).
        keys = self._keys
        if keys is not None and keys <= x.keys():
            sig = tuple(map(type, map(x.__getitem__, self.schema)))
            if sig in self._good:
                return None
        else:
            sig = None
        reason = self._check_slow(x)
        if reason is None and sig is not None and len(self._good) < _MAX_SIGNATURES:
            self._good.add(sig)
        return reason

    def _check_slow(self, x: dict) -> str | None:
        assert self.schema is not None
        for k, numeric in self.schema.items():
            v = x.get(k)
            if v is None:
                return f"feature {k!r} is missing"
            if numeric != isinstance(v, _NUMERIC):
                return (
                    f"feature {k!r} is {type(v).__name__} {v!r}, expected "
                    f"{'a number' if numeric else 'a string/category'}"
                )
        return None

    # -- test then train -------------------------------------------------------------------

    def _predict(self, x: dict) -> Any:
        if self.use_proba:
            return self.model.predict_proba_one(x)
        return self.model.predict_one(x)

    def predict(self, x: dict) -> Any:
        """The model's prediction for ``x`` (probabilities if a metric needs them)."""
        return self._predict(x)

    def _score(self, y: Any, y_pred: Any) -> None:
        if y_pred is None or y_pred == {}:
            return
        label = (
            max(y_pred, key=y_pred.__getitem__)
            if type(y_pred) is dict or isinstance(y_pred, dict)
            else y_pred
        )
        updates = self._updates
        if updates is None:  # (update, wants the label) per metric, worked out once
            updates = self._updates = [
                (m.update, bool(self.use_proba and m.requires_labels))
                for group in (self.metrics, self.rolling)
                for m in group
            ]
        for update, wants_label in updates:
            update(y, label if wants_label else y_pred)
        if self.drift is not None:
            self._watch(y, label)

    def _watch(self, y: Any, label: Any) -> None:
        d = self.drift
        if d is None:
            return
        err = float(label != y) if self.is_classifier else abs(float(y) - float(label))
        if d.warning is not None:
            d.warning.update(err)
            if d.warning.drift_detected and self.background is None:
                self.background = self.model.clone()
        d.detector.update(err)
        if d.detector.drift_detected:
            self.drifts.append(
                {
                    "position": self.position,
                    "event_time": self.event_time,
                    "action": d.action,
                    "wall_time": time.time(),
                }
            )
            if d.action == "reset":
                self.model = self.model.clone()
            elif d.action == "swap":
                self.model = self.background if self.background is not None else self.model.clone()
                self.background = None

    def _learn(self, x: dict, y: Any, t: float | None) -> bool:
        try:
            self.model.learn_one(x, y)
            if self.background is not None:
                self.background.learn_one(x, y)
        except Exception as e:  # a model that raises must not stop the learner
            self._bad(
                "model_error",
                (x, y),
                f"{type(e).__name__}: {e}\n" + "".join(traceback.format_exception(e)[-3:]),
            )
            return False
        self.position += 1
        self.counts["learned"] += 1
        if t is not None and (self.event_time is None or t > self.event_time):
            self.event_time = t
        return True

    def learn(self, x: Any, y: Any, t: float | None = None) -> bool:
        """Test then train on one labelled sample; ``False`` if it was dead-lettered."""
        self.seen += 1
        reason = self._check(x)
        if reason is not None:
            self._bad("bad_features", (x, y), reason)
            return False
        self._score(y, self._predict(x))
        return self._learn(x, y, t)

    def learn_many(self, samples: list[tuple]) -> int:
        """Test then train on ``(x, y[, t])`` samples; how many were learned.

        One by one (exactly as :meth:`learn`), unless ``mini_batch`` is on and the model has
        ``learn_many``: then the batch's good samples are predicted with the model as it was
        before the batch, scored, and learned in one ``learn_many`` call (batch-prequential).
        """
        if not self.mini_batch or len(samples) < 2:
            learn = self.learn
            before = self.position
            for s in samples:
                learn(*s)
            return self.position - before
        return self._learn_batch(samples)

    def _learn_batch(self, samples: list[tuple]) -> int:
        pd = optional_import("pandas", "online", "mini-batch learning (learn_many)")
        xs, ys, ts = [], [], []
        for s in samples:
            x, y = s[0], s[1]
            self.seen += 1
            reason = self._check(x)
            if reason is not None:
                self._bad("bad_features", (x, y), reason)
                continue
            xs.append(x)
            ys.append(y)
            if len(s) > 2 and s[2] is not None:
                ts.append(s[2])
        if not xs:
            return 0
        X, Y = pd.DataFrame(xs), pd.Series(ys)
        try:
            if self.use_proba:
                preds: list[Any] = self.model.predict_proba_many(X).to_dict(orient="records")
            else:
                preds = list(self.model.predict_many(X))
        except Exception:  # a model that cannot predict a batch yet: score one by one
            preds = [self._predict(x) for x in xs]
        for y, p in zip(ys, preds, strict=True):
            self._score(y, p)
        try:
            self.model.learn_many(X, Y)
            if self.background is not None:
                self.background.learn_many(X, Y)
        except Exception:  # find the samples that fail: one by one, each dead-lettered alone
            n = 0
            for x, y in zip(xs, ys, strict=True):
                n += self._learn(x, y, None)
            self._newest(ts)
            return n
        self.position += len(xs)
        self.counts["learned"] += len(xs)
        self._newest(ts)
        return len(xs)

    def _newest(self, ts: list[float]) -> None:
        if ts:
            t = max(ts)
            if self.event_time is None or t > self.event_time:
                self.event_time = t

    # -- delayed labels --------------------------------------------------------------------

    def ask(self, key: Any, x: Any, now: float | None = None) -> Any:
        """Predict for ``x`` now and keep it under ``key`` until its label arrives."""
        reason = self._check(x)
        if reason is not None:
            self.seen += 1
            self._bad("bad_features", (key, x), reason)
            return None
        y_pred = self._predict(x)
        self.pending[key] = (x, y_pred, time.time() if now is None else now)
        return y_pred

    def answer(self, key: Any, y: Any, t: float | None = None) -> bool:
        """The label for the prediction kept under ``key``: score it, then learn."""
        self.seen += 1
        item = self.pending.pop(key, None)
        if item is None:
            self._bad(
                "unknown_key",
                (key, y),
                f"no pending prediction under key {key!r} "
                "(never asked, already answered, or expired)",
            )
            return False
        x, y_pred, _ = item
        self._score(y, y_pred)
        return self._learn(x, y, t)

    def expire(self, now: float | None = None) -> int:
        """Drop predictions whose label did not come within ``label_timeout``; how many."""
        now = time.time() if now is None else now
        old = [k for k, (_, _, t0) in self.pending.items() if now - t0 > self.label_timeout]
        for k in old:
            self.pending.pop(k)
            self._bad("expired", k, f"no label within {self.label_timeout}s")
        return len(old)

    # -- reporting -------------------------------------------------------------------------

    def metric_values(self) -> dict[str, float]:
        """Every metric's current value: ``{"Accuracy": ..., "rolling Accuracy": ...}``."""
        out = {type(m).__name__: m.get() for m in self.metrics}
        for m, r in zip(self.metrics, self.rolling, strict=False):
            out[f"rolling {type(m).__name__}"] = r.get()
        return out

    def stats(self) -> dict[str, Any]:
        """Position, counts, metrics, drifts and pending labels, as plain data."""
        return {
            "position": self.position,
            "seen": self.seen,
            "event_time": self.event_time,
            "metrics": self.metric_values(),
            "counts": dict(self.counts),
            "drifts": list(self.drifts),
            "pending": len(self.pending),
        }


def _supports_many(model: Any) -> bool:
    """River mini-batch methods on every step (``learn_many``; ``transform_many`` before the
    last; ``predict_many``/``predict_proba_many`` on the last), and pandas to build frames."""
    steps = getattr(model, "steps", None)
    parts = list(steps.values()) if steps is not None else [model]
    if not parts or not all(hasattr(p, "learn_many") for p in parts):
        return False
    if not all(hasattr(p, "transform_many") for p in parts[:-1]):
        return False
    if not (hasattr(parts[-1], "predict_many") or hasattr(parts[-1], "predict_proba_many")):
        return False
    try:
        import pandas  # noqa: F401
    except ImportError:
        return False
    return True


def _last_step_is(model: Any, cls: type) -> bool:
    steps = getattr(model, "steps", None)
    return steps is not None and bool(steps) and isinstance(list(steps.values())[-1], cls)
