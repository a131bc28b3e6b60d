"""A soak: a mixed workload on a 3-node cluster for N minutes, sampling each process's resident
memory, open descriptors and threads, and the shared-memory segments, to show whether anything
grows without bound.

    .venv/bin/python bench/soak.py --quick                  # ~1 min, prints one JSON object
    .venv/bin/python bench/soak.py --minutes 30 --json bench/results/soak.json \
        --plot bench/results/soak.png

The cluster is ``rtml.testing.Cluster`` on this machine (control plane, head, two more nodes;
``num_cpus=1`` each); this process is the driver. The workload repeats, until the time is up:
a batch of tiny tasks spread over the nodes, an actor created, called and killed, a large object
(8 MiB) made on one node and read on another, a ``put`` of one from the driver; every
``--kill-every`` seconds one worker process (chosen at random) is killed with SIGKILL.

Sampled every ``--interval`` seconds: for the driver, the control plane and each node process,
RSS (MiB), open fds and threads; for the workers of each node, their sum (workers come and go);
and the count and total size of ``/dev/shm`` segments of this cluster. Reported: the slope of
each series per minute by least squares, after the first 20% of the run (warm-up), and its
last value; a plot of every series when matplotlib is there.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import sys
import threading
import time
from collections import defaultdict
from typing import Any

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "src"))

from _report import machine, write_json_atomic  # noqa: E402

import rtml  # noqa: E402
from rtml import exceptions as exc  # noqa: E402
from rtml.testing import Cluster  # noqa: E402
from rtml.util.scheduling_strategies import NodeAffinitySchedulingStrategy  # noqa: E402

MB = 1 << 20


@rtml.remote
def tiny(i: int) -> int:
    return i + 1


@rtml.remote
def make(nbytes: int) -> np.ndarray:
    return np.ones(nbytes, dtype=np.uint8)


@rtml.remote
def read(a: np.ndarray) -> int:
    return int(a[::4096].sum())


@rtml.remote
class Counter:
    def __init__(self) -> None:
        self.n = 0

    def add(self, k: int) -> int:
        self.n += k
        return self.n


# --------------------------------------------------------------------------- /proc
def _status(pid: int) -> dict[str, str]:
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            out[k] = v.strip()
    return out


def proc_sample(pid: int) -> tuple[float, int, int] | None:
    """(RSS MiB, open fds, threads) of ``pid``, None if it is gone."""
    try:
        st = _status(pid)
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    rss = int(st.get("VmRSS", "0 kB").split()[0]) / 1024
    return rss, fds, int(st.get("Threads", "0"))


def children(pid: int) -> list[int]:
    """Child processes of ``pid``, started by any of its threads."""
    out: list[int] = []
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out.extend(int(x) for x in f.read().split())
        except FileNotFoundError:
            pass
    return out


def shm_segments() -> tuple[int, float]:
    n, size = 0, 0
    for name in os.listdir("/dev/shm"):
        if name.startswith("rtml"):
            try:
                size += os.stat(os.path.join("/dev/shm", name)).st_blocks * 512
                n += 1
            except FileNotFoundError:
                pass
    return n, size / MB


class Sampler:
    def __init__(self, procs: dict[str, int], nodes: dict[str, int], interval: float) -> None:
        self.procs = procs  # name -> pid of long-lived processes
        self.nodes = nodes  # name -> pid of node processes (their children are workers)
        self.interval = interval
        self.t0 = time.monotonic()
        self.series: dict[str, list[tuple[float, float]]] = defaultdict(list)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="soak-sampler")

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def sample(self) -> None:
        t = (time.monotonic() - self.t0) / 60
        add = self.series
        for name, pid in self.procs.items():
            s = proc_sample(pid)
            if s is not None:
                add[f"{name}.rss_mib"].append((t, s[0]))
                add[f"{name}.fds"].append((t, s[1]))
                add[f"{name}.threads"].append((t, s[2]))
        for name, pid in self.nodes.items():
            tot = [0.0, 0.0, 0.0, 0.0]
            for w in children(pid):
                s = proc_sample(w)
                if s is not None:
                    tot[0] += s[0]
                    tot[1] += s[1]
                    tot[2] += s[2]
                    tot[3] += 1
            add[f"{name}.workers.rss_mib"].append((t, tot[0]))
            add[f"{name}.workers.fds"].append((t, tot[1]))
            add[f"{name}.workers.count"].append((t, tot[3]))
        n, size = shm_segments()
        add["shm.segments"].append((t, n))
        add["shm.mib"].append((t, size))

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope (units per minute)."""
    if len(points) < 3:
        return 0.0
    xs = [p[0] for p in points]
    ys = [p[1] for p in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den if den else 0.0


# --------------------------------------------------------------------------- workload
def workload(c: Cluster, seconds: float, kill_every: float, rng: random.Random) -> dict[str, int]:
    assert c.head_node is not None
    nodes = [c.head_node, *list(c.worker_nodes)]
    counts = defaultdict(int)
    end = time.monotonic() + seconds
    next_kill = time.monotonic() + kill_every
    i = 0
    while time.monotonic() < end:
        i += 1
        try:
            refs = [tiny.options(scheduling_strategy="SPREAD").remote(k) for k in range(50)]
            assert rtml.get(refs, timeout=120) == list(range(1, 51))
            counts["tasks"] += 50
            a = Counter.remote()
            assert rtml.get([a.add.remote(1) for _ in range(10)], timeout=120)[-1] == 10
            rtml.kill(a)
            counts["actors"] += 1
            src, dst = rng.sample(nodes, 2)
            big = make.options(
                scheduling_strategy=NodeAffinitySchedulingStrategy(src.node_id, soft=False)
            ).remote(8 * MB)
            got = rtml.get(
                read.options(
                    scheduling_strategy=NodeAffinitySchedulingStrategy(dst.node_id, soft=False)
                ).remote(big),
                timeout=120,
            )
            assert got == 8 * MB // 4096
            put = rtml.put(np.ones(8 * MB, dtype=np.uint8))
            assert rtml.get(read.remote(put), timeout=120) == 8 * MB // 4096
            del big, put
            counts["large_objects"] += 2
        except (exc.RtmlError, TimeoutError) as e:  # a kill can fail an actor call: counted
            counts["errors"] += 1
            counts[f"error:{type(e).__name__}"] += 1
        if time.monotonic() >= next_kill:
            next_kill = time.monotonic() + kill_every
            workers = [w for n in nodes for w in children(n.pid)]
            if workers:
                try:
                    os.kill(rng.choice(workers), signal.SIGKILL)
                    counts["workers_killed"] += 1
                except ProcessLookupError:
                    pass
    counts["cycles"] = i
    return dict(counts)


def plot(series: dict[str, list[tuple[float, float]]], path: str) -> str | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    kinds = ["rss_mib", "fds", "threads", "count", "segments", "mib"]
    groups: dict[str, list[str]] = defaultdict(list)
    for name in sorted(series):
        groups[name.rsplit(".", 1)[1]].append(name)
    kinds = [k for k in kinds if k in groups]
    fig, axes = plt.subplots(len(kinds), 1, figsize=(9, 2.6 * len(kinds)), sharex=True)
    for ax, kind in zip(axes, kinds, strict=True):
        for name in groups[kind]:
            xs, ys = zip(*series[name], strict=True)
            ax.plot(xs, ys, label=name.rsplit(".", 1)[0], linewidth=1)
        ax.set_ylabel(kind)
        ax.legend(fontsize=6, ncol=4, loc="upper left")
    axes[-1].set_xlabel("minutes")
    fig.suptitle("rtml soak: per-process resources over time")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--minutes", type=float, default=30.0)
    p.add_argument("--quick", action="store_true", help="about one minute")
    p.add_argument("--interval", type=float, default=None, help="seconds between samples")
    p.add_argument("--kill-every", type=float, default=None, help="seconds between kills")
    p.add_argument("--json", default=None)
    p.add_argument("--plot", default=None, help="PNG path for the plot")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--max-task-events",
        type=int,
        default=20_000,
        help="the control plane's task-event bound (RTML_MAX_TASK_EVENTS; default 20000, so "
        "that it is reached within the warm-up: the default of a cluster is 100000)",
    )
    a = p.parse_args()
    minutes = 1.0 if a.quick else a.minutes
    interval = a.interval or (1.0 if a.quick else 5.0)
    kill_every = a.kill_every or (10.0 if a.quick else 30.0)
    rng = random.Random(a.seed)
    os.environ["RTML_MAX_TASK_EVENTS"] = str(a.max_task_events)  # (the control plane's)
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    try:
        c.add_node(num_cpus=1)
        c.add_node(num_cpus=1)
        c.wait_for_nodes()
        rtml.init(address=c.address)
        assert c.head_node is not None
        assert c.control_plane is not None
        nodes = {"head": c.head_node.pid}
        nodes.update({f"node{k + 1}": n.pid for k, n in enumerate(c.worker_nodes)})
        procs = {"driver": os.getpid(), "gcs": c.control_plane.proc.pid, **nodes}
        sampler = Sampler(procs, nodes, interval)
        sampler.sample()
        sampler.start()
        try:
            counts = workload(c, minutes * 60, kill_every, rng)
        finally:
            sampler.stop()
            rtml.shutdown()
    finally:
        c.shutdown()
    series = sampler.series
    warm = 0.2 * minutes
    slopes = {
        name: round(slope([pt for pt in pts if pt[0] >= warm]), 4) for name, pts in series.items()
    }
    last = {name: pts[-1][1] for name, pts in series.items() if pts}
    out: dict[str, Any] = {
        "bench": "soak",
        "minutes": minutes,
        "max_task_events": a.max_task_events,
        "interval_s": interval,
        "samples": len(series.get("shm.segments", [])),
        "workload": counts,
        "slope_per_min": slopes,
        "last": last,
        "machine": machine(),
    }
    if a.plot:
        out["plot"] = plot(series, a.plot)
    if a.json:
        write_json_atomic(a.json, {**out, "series": series})
    print(json.dumps(out))


if __name__ == "__main__":
    main()
