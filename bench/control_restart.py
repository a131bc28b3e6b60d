"""The pause a client sees while the control plane is killed and restarted (issue 6).

    .venv/bin/python bench/control_restart.py [--restarts 3] [--window 4] [--json out.json]

A 2-node ``rtml.testing.Cluster`` on Redis (a local redis-server without persistence), the
driver in this process. During each trial of ``--window`` seconds three loops run and stamp
every completion with ``time.monotonic()`` (system-wide on Linux, so stamps from different
processes compare):

  driver      this process: ``get(tiny.remote())`` in a loop, SPREAD over both nodes
  node side   an actor on the second node: ``get(tiny.remote())`` in a loop from inside it
  gcs client  this process: ``ControlClient.ping()`` in a loop (what a control-plane user sees)

A restart trial SIGKILLs the control-plane process one second into the window and starts a new
one on the same port and Redis (``Cluster.restart_control_plane``); a baseline trial does
nothing. Trials alternate. Reported per loop: the longest gap between consecutive completions
in the window, restart trials against baseline trials. Also per restart: kill → new process
listening, and kill → every node heartbeating again (the new server's node table shows their
load: a recovered row has none until the node's first heartbeat after the restart).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "src"))

from _report import write_json_atomic  # noqa: E402

import rtml  # noqa: E402
from rtml._control._client import ControlClient  # noqa: E402
from rtml._control._local_redis import LocalRedis  # noqa: E402
from rtml.testing import Cluster  # noqa: E402

LOOPS = ("driver", "node side", "gcs client")


@rtml.remote
def tiny() -> None:
    return None


@rtml.remote(num_cpus=0, resources={"side": 1})
class Looper:
    def run(self, seconds: float) -> list[float]:
        stamps = []
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            rtml.get(tiny.remote(), timeout=60)
            stamps.append(time.monotonic())
        return stamps


def max_gap(stamps: list[float], start: float, end: float) -> float:
    """Longest time without a completion in [start, end] (its edges count as completions)."""
    points = [start, *(s for s in stamps if start <= s <= end), end]
    return max(b - a for a, b in itertools.pairwise(points))


def loop(fn: Any, stop: threading.Event, stamps: list[float]) -> None:
    while not stop.is_set():
        fn()
        stamps.append(time.monotonic())


def all_heartbeating(gcs: ControlClient) -> bool:
    return all(n.load for n in gcs.list_nodes(alive_only=True))


def trial(
    cluster: Cluster, looper: Any, gcs: ControlClient, window: float, restart: bool
) -> dict[str, Any]:
    stamps: dict[str, list[float]] = {name: [] for name in LOOPS}
    stop = threading.Event()
    threads = [
        threading.Thread(target=loop, args=(fn, stop, stamps[name]), daemon=True)
        for name, fn in (
            (
                "driver",
                lambda: rtml.get(tiny.options(scheduling_strategy="SPREAD").remote(), timeout=60),
            ),
            ("gcs client", lambda: gcs.call("ping", timeout=60)),
        )
    ]
    start = time.monotonic()
    node_side = looper.run.remote(window)
    for t in threads:
        t.start()
    out: dict[str, Any] = {"restart": restart}
    time.sleep(1.0)
    if restart:
        t0 = time.monotonic()
        cluster.restart_control_plane(kill=True)
        out["listening_s"] = time.monotonic() - t0
        with ControlClient(cluster.address, cluster.token) as probe:
            while not all_heartbeating(probe):
                time.sleep(0.002)
        out["nodes_heartbeating_s"] = time.monotonic() - t0
    end = start + window
    stamps["node side"] = rtml.get(node_side, timeout=120)
    time.sleep(max(0.0, end - time.monotonic()))
    stop.set()
    for t in threads:
        t.join(60)
    out["max_gap_ms"] = {
        name: 1e3 * max_gap(stamps[name], start + 0.2, end - 0.2) for name in LOOPS
    }  # (0.2 s: the loops starting and ending)
    out["completions"] = {name: len(stamps[name]) for name in LOOPS}
    return out


def summarize(trials: list[dict[str, Any]]) -> dict[str, Any]:
    restarts = [t for t in trials if t["restart"]]
    base = [t for t in trials if not t["restart"]]
    summary: dict[str, Any] = {}
    for name in LOOPS:
        summary[name] = {
            "max_gap_ms_restart": max(t["max_gap_ms"][name] for t in restarts),
            "max_gap_ms_baseline": max(t["max_gap_ms"][name] for t in base),
            "median_of_max_gap_ms_restart": statistics.median(
                t["max_gap_ms"][name] for t in restarts
            ),
        }
    for key in ("listening_s", "nodes_heartbeating_s"):
        values = [t[key] for t in restarts]
        summary[key] = {"median": statistics.median(values), "max": max(values)}
    return summary


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--restarts", type=int, default=3)
    p.add_argument("--window", type=float, default=4.0, help="seconds per trial")
    p.add_argument("--json", default=None, help="also write the results here")
    args = p.parse_args()

    with tempfile.TemporaryDirectory() as tmp, LocalRedis(tmp) as redis:
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1}, redis=redis.address)
        try:
            cluster.add_node(num_cpus=1, resources={"side": 1})
            cluster.connect()
            looper = Looper.remote()
            rtml.get([tiny.remote() for _ in range(100)], timeout=60)  # warm the workers
            with ControlClient(cluster.address, cluster.token) as gcs:
                trial(cluster, looper, gcs, 1.5, False)  # warm-up, not reported
                trials = []
                for i in range(2 * args.restarts):
                    trials.append(trial(cluster, looper, gcs, args.window, i % 2 == 1))
                    print(json.dumps(trials[-1]), file=sys.stderr, flush=True)
        finally:
            cluster.shutdown()
    doc = {
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "restarts": args.restarts,
        "window_s": args.window,
        "summary": summarize(trials),
        "trials": trials,
    }
    s = doc["summary"]
    print(f"{'loop':<12} {'longest pause, restart':>24} {'baseline':>10}")
    for name in LOOPS:
        print(
            f"{name:<12} {s[name]['max_gap_ms_restart']:>21.1f} ms "
            f"{s[name]['max_gap_ms_baseline']:>7.1f} ms"
        )
    print(
        f"kill -> new control plane listening: median {s['listening_s']['median']:.3f} s, "
        f"max {s['listening_s']['max']:.3f} s"
    )
    print(
        f"kill -> every node heartbeating again: median "
        f"{s['nodes_heartbeating_s']['median']:.3f} s, "
        f"max {s['nodes_heartbeating_s']['max']:.3f} s"
    )
    if args.json:
        write_json_atomic(args.json, doc)


if __name__ == "__main__":
    main()
