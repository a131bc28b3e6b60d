"""From raw events to labelled, featured samples: the dataflow, the features and the models.

::

    events ─┬─ impressions ─ key: impression ─┐ interval_join(how="left", 0..window):
            └─ clicks ────── key: impression ─┘   (impression, click) ─▶ y=1 at the click
                                                  (impression, None) ─▶ y=0 when it closes
      ─ key: user ─ as-of users.parquet ─ key: item ─ as-of items.parquet
        ─▶ features ─▶ LearnerSink(continual), LearnerSink(frozen)   (models: models.py)

A positive is known when its click arrives; a negative when the attribution window closes with
no click (that is when each becomes a sample, and the time freshness is counted from). The
feature rows are the ones valid at that time: point-in-time correct, never from the future.
"""

from __future__ import annotations

import functools
from typing import Any

from rtml import stream as rs


def features(user: dict | None, item: dict | None, t: float) -> dict[str, Any]:
    """The model's input for a user and an item (rows of the feature tables) at time ``t``."""
    user = user or {"cohort": "unknown", "activity": 0.5}
    item = item or {"topic": "unknown", "quality": 0.0, "popularity": 0.2}
    return {
        "cohort": user["cohort"],
        "topic": item["topic"],
        "cross": f"{user['cohort']}:{item['topic']}",
        "quality": item["quality"],
        "activity": user["activity"],
        "popularity": item["popularity"],
        "t": t,
    }


def _is_impression(e: dict) -> bool:
    return e["k"] == "i"


def _is_click(e: dict) -> bool:
    return e["k"] == "c"


def _impression_id(e: dict) -> int:
    return e["id"]


def _labelled(pair: tuple[dict, dict | None], window: float) -> dict:
    imp, click = pair
    return {
        "id": imp["id"],
        "u": imp["u"],
        "i": imp["i"],
        "y": click is not None,
        "t": click["t"] if click is not None else imp["t"] + window,
    }


def _user(s: dict) -> int:
    return s["u"]


def _item(pair: tuple[dict, Any]) -> int:
    return pair[0]["i"]


def _sample(pair: tuple[tuple[dict, Any], Any]) -> tuple[dict, bool, float]:
    (s, user), item = pair
    return features(user, item, s["t"]), s["y"], s["t"]


def build(
    source: rs.Source,
    window: float,
    users: rs.Table,
    items: rs.Table,
    sinks: list[rs.Sink],
    name: str = "recommender",
    decode: Any = None,
) -> rs.Dataflow:
    """The dataflow from ``source`` to ``sinks`` (``decode`` maps a broker record to an
    event dict first, e.g. JSON text from Redis)."""
    flow = rs.Dataflow(name)
    raw = flow.source(source, name="events")
    if decode is not None:
        raw = raw.map(decode, name="decode")
    events = raw.with_event_time(lambda e: e["t"], max_out_of_order=0.05)
    imps = events.filter(_is_impression, name="impressions").key_by(_impression_id)
    clicks = events.filter(_is_click, name="clicks").key_by(_impression_id)
    labelled = (
        imps.interval_join(clicks, lower=0.0, upper=window, how="left", name="attribution")
        .map(functools.partial(_labelled, window=window), name="label")
        .key_by(_user)
    )
    samples = (
        labelled.join_as_of(users, name="user_features")
        .key_by(_item)
        .join_as_of(items, name="item_features")
        .map(_sample, name="features")
    )
    for i, sink in enumerate(sinks):
        samples.sink(sink, name=f"learner_{i}")
    return flow
