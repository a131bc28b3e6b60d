"""Control-plane write throughput, in memory and on Redis (issue 5's closing figures).

::

    in process:   ControlPlane.handle ──▶ tables ──▶ MemoryStorage | RedisStorage | 2 shards
    over the wire: ControlClient ──loopback TCP──▶ python -m rtml._control ──▶ same backends

Rows: lineage (task-table) writes one task per call and 1000 per batch, in process and through
the server (synchronous round trips, and 100 requests in flight). Each redis-server is a local
child process without persistence (LocalRedis). Rates are Ray's method (``_timing.timeit``):
mean ± std of 4 rounds. Everything shares this machine's cores (client, server, redis).

Run: .venv/bin/python bench/control_plane.py [--duration 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import select
import subprocess
import sys
import tempfile
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))

from _timing import mean_std, timeit

from rtml._control import ControlClient, ControlPlane, open_storage
from rtml._control._local_redis import LocalRedis
from rtml._transport._auth import new_token

SPEC = b"x" * 200  # about the size of a small task spec's pickled arguments
BATCH = 1000
IN_FLIGHT = 100


def _tasks(ids: Any, n: int) -> list[tuple[int, bytes, int]]:
    return [(next(ids), SPEC, 1) for _ in range(n)]


def start_gcs(token: bytes, redis: str | None) -> subprocess.Popen:
    r, w = os.pipe()
    args = [
        sys.executable,
        "-m",
        "rtml._control",
        "--token-hex",
        token.hex(),
        "--ready-fd",
        str(w),
    ] + (["--redis", redis] if redis else [])
    proc = subprocess.Popen(args, pass_fds=(w,), stderr=subprocess.DEVNULL)
    os.close(w)
    ready, _, _ = select.select([r], [], [], 30)
    port = os.read(r, 64) if ready else b""
    os.close(r)
    if not port:
        proc.kill()
        raise RuntimeError("the GCS did not start")
    proc.port = int(port)  # type: ignore[attr-defined]
    return proc


def rows_in_process(spec: str | None, duration: float) -> dict[str, list[float]]:
    storage = open_storage(spec)
    plane = ControlPlane(storage)
    ids = itertools.count(1)
    out = {
        "in process, 1 task per call (calls/s)": timeit(
            lambda: plane.handle(0, "add_tasks", (_tasks(ids, 1),)), duration
        ),
        f"in process, {BATCH} per batch (tasks/s)": timeit(
            lambda: plane.handle(0, "add_tasks", (_tasks(ids, BATCH),)), duration, BATCH
        ),
    }
    storage.close()
    return out


def rows_over_the_wire(spec: str | None, duration: float) -> dict[str, list[float]]:
    token = new_token()
    proc = start_gcs(token, spec)
    ids = itertools.count(1)
    try:
        with ControlClient(f"127.0.0.1:{proc.port}", token) as c:  # type: ignore[attr-defined]

            def pipelined() -> None:
                futures = [c.submit("add_tasks", _tasks(ids, 1)) for _ in range(IN_FLIGHT)]
                for f in futures:
                    f.result(30)

            return {
                "client→server, 1 task per call (calls/s)": timeit(
                    lambda: c.add_tasks(_tasks(ids, 1)), duration
                ),
                f"client→server, {IN_FLIGHT} calls in flight (calls/s)": timeit(
                    pipelined, duration, IN_FLIGHT
                ),
                f"client→server, {BATCH} per batch (tasks/s)": timeit(
                    lambda: c.add_tasks(_tasks(ids, BATCH)), duration, BATCH
                ),
            }
    finally:
        proc.terminate()
        proc.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--duration", type=float, default=2.0, help="seconds per row (4 rounds)")
    ap.add_argument("--json", default=None, help="also write the samples here")
    args = ap.parse_args()
    results: dict[str, dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        shards = []
        try:
            for i in range(2):
                os.makedirs(os.path.join(tmp, str(i)))
                shards.append(LocalRedis(os.path.join(tmp, str(i))).start())
            backends: dict[str, Callable[[], str | None]] = {
                "memory": lambda: None,
                "redis": lambda: shards[0].address,
                "redis x2": lambda: f"{shards[0].address},{shards[1].address}",
            }
            for name, spec in backends.items():
                rows: dict[str, list[float]] = {}
                for fn in (rows_in_process, rows_over_the_wire):
                    for s in shards:  # start every row from empty Redis
                        _flush(s.address)
                    rows.update(fn(spec(), args.duration))
                results[name] = rows
        finally:
            for s in shards:
                s.stop()
    names = list(next(iter(results.values())))
    print(f"{'control-plane writes':48s}" + "".join(f"{b:>22s}" for b in results))
    for row in names:
        cells = []
        for b in results:
            mean, std = mean_std(results[b][row])
            cells.append(f"{mean:>12,.0f} ± {std:<7,.0f}")
        print(f"{row:48s}" + "".join(f"{c:>22s}" for c in cells))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


def _flush(address: str) -> None:
    storage: Any = open_storage(address)
    try:
        storage.clear()
    finally:
        storage.close()


if __name__ == "__main__":
    main()
