"""Serving: ``/recommend?user=ID&k=10`` ranks candidate items with the freshest model version;
``/`` is the live page and ``/data`` its figures.

::

    HTTP ─▶ proxy ─▶ Recommender replica: Subscriber (swaps versions off the request path)
                                          user + item rows as of now ─▶ features ─▶ top k
    HTTP ─▶ proxy ─▶ Page replica ─ "/" page.html, "/data" ─▶ Timeline actor (the driver fills it)
"""

from __future__ import annotations

import bisect
import os
import random
import time
from typing import Any

import pipeline
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse

import rtml
from rtml import serve

TIMELINE = "recommender-timeline"
HERE = os.path.dirname(os.path.abspath(__file__))


class _Rows:
    """Rows of a feature table by key, each valid from its time on: ``at(key, t)``."""

    def __init__(self, path: str, key: str) -> None:
        import pyarrow.parquet as pq

        self.times: dict[Any, list[float]] = {}
        self.rows: dict[Any, list[dict]] = {}
        for r in sorted(pq.read_table(path).to_pylist(), key=lambda r: r["updated_at"]):
            self.times.setdefault(r[key], []).append(r["updated_at"])
            self.rows.setdefault(r[key], []).append(r)

    def at(self, key: Any, t: float) -> dict | None:
        times = self.times.get(key)
        if not times:
            return None
        i = bisect.bisect_right(times, t) - 1
        return self.rows[key][i] if i >= 0 else None


@serve.deployment(num_replicas=2, max_ongoing_requests=32, health_check_period_s=1.0)
class Recommender:
    """Ranks ``candidates`` items (a per-user, per-second sample) by predicted click chance."""

    def __init__(
        self, registry: Any, users_path: str, items_path: str, candidates: int = 40
    ) -> None:
        self.models = registry.subscriber(interval=0.02)
        self.users = _Rows(users_path, "user")
        self.items = _Rows(items_path, "item")
        self.item_ids = sorted(self.items.rows)
        self.candidates = min(candidates, len(self.item_ids))

    async def __call__(self, request: Request) -> Any:
        try:
            user = int(request.query_params["user"])
            k = int(request.query_params.get("k", 10))
        except (KeyError, ValueError):
            return JSONResponse({"error": "pass /recommend?user=<int>&k=<int>"}, status_code=400)
        version = self.models.version
        if version is None:
            return JSONResponse(
                {"error": "no model version published yet"},
                status_code=503,
                headers={"retry-after": "1"},
            )
        now = time.time()
        urow = self.users.at(user, now)
        pool = random.Random(user * 1_000_003 + int(now)).sample(self.item_ids, self.candidates)
        model = version.model
        scored = []
        for item in pool:
            x = pipeline.features(urow, self.items.at(item, now), now)
            scored.append((model.predict_proba_one(x).get(True, 0.0), item))
        scored.sort(reverse=True)
        return JSONResponse(
            {
                "user": user,
                "model_version": version.number,
                "items": [i for _, i in scored[:k]],
                "scores": [round(p, 4) for p, _ in scored[:k]],
            },
            headers={"x-model-version": str(version.number)},
        )


@rtml.remote(num_cpus=0)
class Timeline:
    """The figures of the run so far, as the page draws them (filled by the driver)."""

    def __init__(self) -> None:
        self.doc: dict[str, Any] = {"series": {}, "marks": {}, "summary": {}}

    def update(self, doc: dict[str, Any]) -> None:
        self.doc = doc

    def get(self) -> dict[str, Any]:
        return self.doc


@serve.deployment(num_replicas=1)
class Page:
    """The live page (``/``) and the figures it polls (``/data``)."""

    def __init__(self) -> None:
        with open(os.path.join(HERE, "page.html"), encoding="utf-8") as f:
            self.html = f.read()
        self.timeline: Any = None

    async def __call__(self, request: Request) -> Any:
        if request.url.path.rstrip("/").endswith("/data"):
            if self.timeline is None:
                self.timeline = rtml.get_actor(TIMELINE)
            return JSONResponse(await self.timeline.get.remote())
        return HTMLResponse(self.html)
