"""Joins: a stream with an offline table as of event time, and two streams by window or
interval (pure state machines, per key group).

::

    Table.from_parquet/csv/duckdb/rows/dict ──load()──▶ {kg: {key: (times[], rows[])}}
    event (key, ts) ──▶ AsOfIndex.lookup(key, ts) ──▶ the newest row with time <= ts (or None)

    left (key, lt) ─┐                     emit (left, right) for every pair of one key in
                    ├─▶ WindowJoinState    the same window, as soon as both sides are there
    right (key, rt)─┘   IntervalJoinState  or with lt + lower <= rt <= lt + upper

A join never sees the future: a table row counts for an event only if its time is at or before
the event's, and stream buffers are purged by the watermark exactly when no event that is not
late can match them any more (an event is late when ts < watermark - lateness).
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from typing import Any

from rtml.stream._errors import StreamConfigError
from rtml.stream._keys import key_group
from rtml.stream._time import WindowSpec

__all__ = ["AsOfIndex", "IntervalJoinState", "Table", "WindowJoinState"]


class Table:
    """An offline table to join a keyed stream with, as of each event's time.

    Build one with a ``from_*`` constructor. Rows are dicts of the table's columns. With a
    ``time`` column a key may have many rows (its history) and an event sees the newest row
    whose time is at or before the event's time; without one, a key has one row (the last).
    The table is loaded on the driver when the dataflow starts (and by ``Run.refresh``) and
    sharded over the join's actors by key.
    """

    def __init__(
        self, loader: Callable[[], Any], key: str, time: str | None = None, name: str = "table"
    ) -> None:
        self._loader, self.key, self.time, self.name = loader, key, time, name

    @classmethod
    def from_parquet(
        cls, path: str, key: str, time: str | None = None, columns: list[str] | None = None
    ) -> Table:
        """A Parquet file (or directory of files) read with pyarrow."""

        def load():
            pq = _pyarrow("parquet")
            return pq.read_table(path, columns=columns)

        return cls(load, key, time, name=str(path))

    @classmethod
    def from_csv(cls, path: str, key: str, time: str | None = None) -> Table:
        """A CSV file with a header, read with pyarrow (types inferred)."""

        def load():
            return _pyarrow("csv").read_csv(path)

        return cls(load, key, time, name=str(path))

    @classmethod
    def from_duckdb(
        cls, query: str, key: str, time: str | None = None, database: str | None = None
    ) -> Table:
        """The result of a DuckDB SQL query (e.g. over Parquet files or a database file)."""

        def load():
            duckdb = _optional("duckdb")
            con = duckdb.connect(database or ":memory:", read_only=bool(database))
            try:
                result = con.sql(query)
                for name in ("to_arrow_table", "fetch_arrow_table"):  # newest name first
                    if hasattr(result, name):
                        return getattr(result, name)()
                table = result.arrow()
                return table.read_all() if hasattr(table, "read_all") else table
            finally:
                con.close()

        return cls(load, key, time, name="duckdb")

    @classmethod
    def from_rows(cls, rows: list[dict], key: str, time: str | None = None) -> Table:
        """Rows given as dicts."""
        return cls(lambda: list(rows), key, time, name="rows")

    @classmethod
    def from_dict(cls, mapping: dict[Any, dict]) -> Table:
        """A static table: ``{key: row}``."""
        return cls(
            lambda: [{"__key__": k, **dict(v)} for k, v in mapping.items()],
            "__key__",
            None,
            name="dict",
        )

    def load(self) -> dict[int, dict[Any, Any]]:
        """Read the table and index it: ``{key group: {key: entry}}``."""
        data = self._loader()
        if isinstance(data, list):
            rows = data
            cols = set(rows[0]) if rows else {self.key} | ({self.time} if self.time else set())
        else:  # a pyarrow table
            cols = set(data.column_names)
            rows = data.to_pylist()
        for col, what in ((self.key, "key"), (self.time, "time")):
            if col is not None and col not in cols:
                raise StreamConfigError(
                    f"table {self.name!r} has no column {col!r} (given as {what}=); its "
                    f"columns are {sorted(cols)}"
                )
        return index_rows(rows, self.key, self.time, self.name)


def index_rows(rows: list[dict], key: str, time: str | None, name: str) -> dict[int, dict]:
    out: dict[int, dict[Any, Any]] = {}
    if time is None:
        for row in rows:
            k = row[key]
            out.setdefault(key_group(k), {})[k] = row
        return out
    hist: dict[Any, list] = {}
    for row in rows:
        t = row[time]
        if t is None:
            raise StreamConfigError(
                f"table {name!r} has a row with no {time!r} for key "
                f"{row[key]!r}; fill it or drop the row"
            )
        hist.setdefault(row[key], []).append((_seconds(t), row))
    for k, entries in hist.items():
        entries.sort(key=lambda e: e[0])
        out.setdefault(key_group(k), {})[k] = ([t for t, _ in entries], [r for _, r in entries])
    return out


def _seconds(t: Any) -> float:
    if isinstance(t, (int, float)):
        return float(t)
    if hasattr(t, "timestamp"):  # datetime (naive is taken as UTC)
        import datetime

        if t.tzinfo is None:
            t = t.replace(tzinfo=datetime.timezone.utc)
        return t.timestamp()
    raise StreamConfigError(
        f"table time values must be numbers (seconds) or datetimes, got {type(t).__name__}"
    )


def _optional(name: str):
    from rtml.util.engine import optional_import

    return optional_import(name, "stream", "rtml.stream.Table")


def _pyarrow(sub: str):
    _optional("pyarrow")
    import importlib

    return importlib.import_module(f"pyarrow.{sub}")


class AsOfIndex:
    """The share of a table's index one actor holds, looked up as of an event's time."""

    def __init__(self, timed: bool) -> None:
        self.timed = timed
        self.keys: dict[Any, Any] = {}

    def update(self, groups: dict[int, dict[Any, Any]]) -> None:
        for keys in groups.values():
            self.keys.update(keys)

    def replace(self, groups: dict[int, dict[Any, Any]]) -> None:
        fresh: dict[Any, Any] = {}
        for keys in groups.values():
            fresh.update(keys)
        self.keys = fresh  # one assignment: lookups see the old or the new table, never half

    def lookup(self, key: Any, ts: float | None) -> Any:
        entry = self.keys.get(key)
        if entry is None or not self.timed:
            return entry
        if ts is None:
            raise StreamConfigError(
                "join_as_of on a table with a time column needs event time: "
                "call .with_event_time(...) before key_by"
            )
        times, rows = entry
        i = bisect.bisect_right(times, ts)
        return rows[i - 1] if i else None


class WindowJoinState:
    """Pairs of left and right events of one key within the same window."""

    def __init__(self, spec: WindowSpec, lateness: float = 0.0) -> None:
        if not hasattr(spec, "windows"):
            raise StreamConfigError(
                "join(window=) takes Tumbling or Sliding windows; for "
                "events close in time use interval_join(lower=, upper=)"
            )
        self.spec, self.lateness = spec, float(lateness)
        self.groups: dict[int, dict[Any, dict[tuple[float, float], tuple[list, list]]]] = {}

    def add(
        self, side: int, kg: int, key: Any, ts: float, value: Any, wm: float, out: list, late: list
    ) -> None:
        wins = self.groups.setdefault(kg, {}).setdefault(key, {})
        missed = False
        for w in self.spec.windows(ts):  # type: ignore[union-attr]
            if w[1] + self.lateness <= wm:
                missed = True
                continue
            sides = wins.get(w)
            if sides is None:
                sides = wins[w] = ([], [])
            sides[side].append((ts, value))
            for ots, other in sides[1 - side]:
                pair = (value, other) if side == 0 else (other, value)
                out.append((max(ts, ots), pair))
        if missed:
            late.append((side, key, ts, value))
        if not wins:
            del self.groups[kg][key]

    def advance(self, wm: float) -> None:
        for kg in list(self.groups):
            keys = self.groups[kg]
            for key in list(keys):
                wins = keys[key]
                for w in [w for w in wins if w[1] + self.lateness <= wm]:
                    del wins[w]
                if not wins:
                    del keys[key]
            if not keys:
                del self.groups[kg]

    def snapshot(self) -> dict[int, Any]:
        return {
            kg: {k: {w: (list(a), list(b)) for w, (a, b) in ws.items()} for k, ws in keys.items()}
            for kg, keys in self.groups.items()
        }

    def restore(self, groups: dict[int, Any]) -> None:
        self.groups = dict(groups)


class IntervalJoinState:
    """Pairs ``(left, right)`` of one key with ``lt + lower <= rt <= lt + upper``; with
    ``how="left"`` also ``(left, None)`` for a left that met no right, once its interval has
    closed (at event time ``lt + upper``, when the watermark passes it)."""

    def __init__(
        self, lower: float, upper: float, lateness: float = 0.0, how: str = "inner"
    ) -> None:
        lower, upper = float(lower), float(upper)
        if lower > upper:
            raise StreamConfigError(
                f"interval_join(lower={lower}, upper={upper}): lower must "
                "be at most upper (right.ts - left.ts lies in [lower, upper])"
            )
        if how not in ("inner", "left"):
            raise StreamConfigError(f"interval_join(how={how!r}) is unknown: use 'inner' or 'left'")
        self.lower, self.upper, self.lateness = lower, upper, float(lateness)
        self.outer = how == "left"
        # key -> (lefts as [ts, value, matched], rights as (ts, value))
        self.groups: dict[int, dict[Any, tuple[list, list]]] = {}

    def add(
        self, side: int, kg: int, key: Any, ts: float, value: Any, wm: float, out: list, late: list
    ) -> None:
        if ts < wm - self.lateness:
            late.append((side, key, ts, value))
            return
        sides = self.groups.setdefault(kg, {}).setdefault(key, ([], []))
        if side == 0:
            entry = [ts, value, False]
            sides[0].append(entry)
            lo, hi = ts + self.lower, ts + self.upper
            for ots, other in sides[1]:
                if lo <= ots <= hi:
                    entry[2] = True
                    out.append((max(ts, ots), (value, other)))
        else:
            sides[1].append((ts, value))
            lo, hi = ts - self.upper, ts - self.lower
            for left in sides[0]:
                if lo <= left[0] <= hi:
                    left[2] = True
                    out.append((max(ts, left[0]), (left[1], value)))

    def advance(self, wm: float) -> list[tuple[Any, float, Any]]:
        """Forget what can no longer pair; ``(key, ts, (left, None))`` for the lefts that
        closed unmatched (``how="left"``)."""
        cut = wm - self.lateness
        closed: list[tuple[Any, float, Any]] = []
        for kg in list(self.groups):
            keys = self.groups[kg]
            for key in list(keys):
                lefts, rights = keys[key]
                # A left can still meet a non-late right (rt >= cut) while lt + upper >= cut;
                # a right can still meet a non-late left (lt >= cut) while rt - lower >= cut.
                if self.outer:
                    closed.extend(
                        (key, e[0] + self.upper, (e[1], None))
                        for e in lefts
                        if e[0] + self.upper < cut and not e[2]
                    )
                lefts[:] = [e for e in lefts if e[0] + self.upper >= cut]
                rights[:] = [e for e in rights if e[0] - self.lower >= cut]
                if not lefts and not rights:
                    del keys[key]
            if not keys:
                del self.groups[kg]
        return closed

    def snapshot(self) -> dict[int, Any]:
        return {
            kg: {k: (list(a), list(b)) for k, (a, b) in keys.items()}
            for kg, keys in self.groups.items()
        }

    def restore(self, groups: dict[int, Any]) -> None:
        self.groups = {
            kg: {
                k: ([e if len(e) == 3 else [e[0], e[1], False] for e in a], b)
                for k, (a, b) in keys.items()
            }
            for kg, keys in groups.items()
        }
