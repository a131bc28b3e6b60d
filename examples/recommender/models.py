"""The models: River logistic regression on user, item and cross features, and a frozen copy.

Kept apart from ``pipeline.py`` so that the dataflow's actors never import River.
"""

from __future__ import annotations

from typing import Any

from river import base, compose, linear_model, optim, preprocessing


def make_model() -> Any:
    """Logistic regression on one-hot cohort, topic and their cross, plus numeric features."""
    categorical = compose.Select("cohort", "topic", "cross") | preprocessing.OneHotEncoder()
    numeric = compose.Select("quality", "activity", "popularity")
    return (categorical + numeric) | linear_model.LogisticRegression(optimizer=optim.SGD(0.05))


class Frozen(base.Classifier):
    """A model that learns only from samples labelled before ``until`` and is then used
    unchanged: a model trained once and served as it is ("level 1")."""

    def __init__(self, model: Any, until: float) -> None:
        self.model, self.until = model, until

    def learn_one(self, x: dict, y: Any) -> None:
        if x["t"] < self.until:
            self.model.learn_one(x, y)

    def predict_proba_one(self, x: dict) -> dict:
        return self.model.predict_proba_one(x)
