"""The synthetic world the recommender learns: users, items, tastes that drift, and the events.

::

    users (cohort, activity)   items (topic, quality; popularity over time)   -> Parquet tables
    impressions  n = 0, 1, ...  at  start + n / rate   (a user shown a random item)
    clicks       with probability sigmoid(taste[cohort][topic] + quality + ...), 0.05-0.9 s later
    drift        at start + drift_at: the tastes of every cohort move to other topics and one
                 topic trends; the item table's popularity column follows 2 s later

Everything is a pure function of the seed and ``start``, so a replayed source yields exactly
the same events (a restarted source actor resumes by skipping what it had read).
"""

from __future__ import annotations

import heapq
import math
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from rtml import stream as rs

POPULARITY_LAG_S = 2.0  # the offline popularity feature notices a trend this late


@dataclass(frozen=True)
class World:
    """How the synthetic world is made (every figure of the demo scales with these)."""

    seed: int = 7
    users: int = 4000
    items: int = 300
    cohorts: int = 6
    topics: int = 10
    rate: float = 5000.0  # impressions per second
    duration: float = 30.0  # seconds of events
    drift_at: float = 15.0  # seconds after start
    window: float = 1.0  # attribution window: a click later than this does not count

    def __post_init__(self) -> None:
        if not (0 < self.drift_at < self.duration):
            raise ValueError(
                f"drift_at ({self.drift_at}) must fall inside the run (0, {self.duration})"
            )
        if self.rate <= 0 or self.window <= 0:
            raise ValueError("rate and window must be positive")

    # -- the hidden truth ------------------------------------------------------------------

    def truth(self) -> dict[str, Any]:
        """Cohort of each user, topic and quality of each item, tastes before and after."""
        rng = random.Random(self.seed)
        cohort = [rng.randrange(self.cohorts) for _ in range(self.users)]
        activity = [rng.random() for _ in range(self.users)]
        topic = [rng.randrange(self.topics) for _ in range(self.items)]
        quality = [rng.gauss(0.0, 0.6) for _ in range(self.items)]
        before = [[rng.gauss(0.0, 1.2) for _ in range(self.topics)] for _ in range(self.cohorts)]
        moved = list(range(self.topics))
        rng.shuffle(moved)
        trending = rng.randrange(self.topics)
        after = [
            [before[c][moved[k]] + (1.5 if k == trending else 0.0) for k in range(self.topics)]
            for c in range(self.cohorts)
        ]
        return {
            "cohort": cohort,
            "activity": activity,
            "topic": topic,
            "quality": quality,
            "before": before,
            "after": after,
            "trending": trending,
        }

    # -- offline feature tables ------------------------------------------------------------

    def tables(self, start: float) -> tuple[list[dict], list[dict]]:
        """User rows (one per user) and item rows (one per item, plus a second row from the
        moment the offline job sees the trend), with wall-clock validity times."""
        tr = self.truth()
        users = [
            {
                "user": u,
                "updated_at": 0.0,
                "cohort": f"c{tr['cohort'][u]}",
                "activity": round(tr["activity"][u], 3),
            }
            for u in range(self.users)
        ]
        items = []
        rng = random.Random(self.seed + 1)
        for i in range(self.items):
            row = {
                "item": i,
                "updated_at": 0.0,
                "topic": f"t{tr['topic'][i]}",
                "quality": round(tr["quality"][i] + rng.gauss(0.0, 0.2), 3),
                "popularity": 0.2,
            }
            items.append(row)
            if tr["topic"][i] == tr["trending"]:
                items.append(
                    {
                        **row,
                        "updated_at": start + self.drift_at + POPULARITY_LAG_S,
                        "popularity": 1.0,
                    }
                )
        return users, items

    def write_tables(self, start: float, folder: str) -> tuple[str, str]:
        """Write the tables as Parquet into ``folder``; their paths."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        users, items = self.tables(start)
        paths = f"{folder}/users.parquet", f"{folder}/items.parquet"
        pq.write_table(pa.Table.from_pylist(users), paths[0])
        pq.write_table(pa.Table.from_pylist(items), paths[1])
        return paths

    # -- events ----------------------------------------------------------------------------

    def click_probability(
        self, tr: dict[str, Any], user: int, item: int, t: float, start: float
    ) -> float:
        taste = tr["after"] if t >= start + self.drift_at else tr["before"]
        logit = (
            -2.3
            + taste[tr["cohort"][user]][tr["topic"][item]]
            + tr["quality"][item]
            + 0.6 * (tr["activity"][user] - 0.5)
        )
        return 1.0 / (1.0 + math.exp(-logit))

    def events(self, start: float) -> Iterator[dict[str, Any]]:
        """Impressions and clicks in event-time order (not paced: see :class:`WorldSource`)."""
        tr = self.truth()
        rng = random.Random(self.seed + 2)
        pending: list[tuple[float, int]] = []  # (click time, impression id)
        total = int(self.duration * self.rate)
        n = 0
        while n < total or pending:
            t_imp = start + n / self.rate if n < total else math.inf
            if pending and pending[0][0] <= t_imp:
                t, imp = heapq.heappop(pending)
                yield {"k": "c", "id": imp, "t": t}
                continue
            user, item = rng.randrange(self.users), rng.randrange(self.items)
            if rng.random() < self.click_probability(tr, user, item, t_imp, start):
                delay = min(0.05 + rng.expovariate(1 / 0.25), 0.9 * self.window)
                heapq.heappush(pending, (t_imp + delay, n))
            yield {"k": "i", "id": n, "u": user, "i": item, "t": t_imp}
            n += 1


class WorldSource(rs.Source):
    """The world's events as a one-partition source, each released at its own time."""

    def __init__(self, world: World, start: float) -> None:
        self.world, self.start = world, start

    def partitions(self) -> list[str]:
        return ["0"]

    def open(self, partition: str, offset: Any | None) -> rs.SourceReader:
        return _WorldReader(self.world.events(self.start), int(offset or 0))

    def describe(self) -> str:
        return f"WorldSource({self.world.rate:.0f} impressions/s)"


class _WorldReader(rs.SourceReader):
    def __init__(self, events: Iterator[dict[str, Any]], skip: int) -> None:
        self._events, self._pos = events, 0
        self._next: dict[str, Any] | None = None
        self._done = False
        for _ in range(skip):  # replay: the same events, already delivered before
            self._take()

    def _take(self) -> dict[str, Any] | None:
        ev = self._next if self._next is not None else next(self._events, None)
        self._next = None
        if ev is None:
            self._done = True
        else:
            self._pos += 1
        return ev

    def read(self, max_records: int, timeout: float) -> list[Any]:
        out: list[Any] = []
        now = time.time()
        while len(out) < max_records and not self._done:
            if self._next is None:
                self._next = next(self._events, None)
                if self._next is None:
                    self._done = True
                    break
            if self._next["t"] > now:
                if out:
                    break
                time.sleep(min(timeout, self._next["t"] - now))
                now = time.time()
                if self._next["t"] > now:
                    break
            out.append(self._next)
            self._next = None
            self._pos += 1
        return out

    def offset(self) -> int:
        return self._pos

    def done(self) -> bool:
        return self._done


def produce(world: World, start: float, put: Any, stop: Any, batch_s: float = 0.002) -> int:
    """Append the world's events to a broker as they happen: ``put(list_of_events)`` every
    ``batch_s`` seconds, until the events end or ``stop`` (a threading.Event) is set."""
    n = 0
    buf: list[dict[str, Any]] = []
    flush_at = time.time() + batch_s
    for ev in world.events(start):
        now = time.time()
        if ev["t"] > now:
            if buf:
                put(buf)
                n += len(buf)
                buf = []
            if stop.wait(ev["t"] - now):
                return n
        buf.append(ev)
        if time.time() >= flush_at:
            put(buf)
            n += len(buf)
            buf = []
            flush_at = time.time() + batch_s
    if buf:
        put(buf)
        n += len(buf)
    return n
