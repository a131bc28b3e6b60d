"""The multi-node figures of issue 5: latency, scaling, object transfer, data locality.

    .venv/bin/python bench/cluster.py --json bench/results/cluster.json   # ~6-7 min
    .venv/bin/python bench/cluster.py --quick                             # ~1 min smoke run
    .venv/bin/python bench/cluster.py --only transfer --only locality

Every cluster is ``rtml.testing.Cluster`` on this machine: a control-plane process plus one
node-manager process per node (each ``num_cpus=1``, its own store and workers). The driver (this
process) connects to the head node. All nodes share this machine's cores, so "3 nodes" is three
processes competing for 2 cores: the figures show the per-hop costs and how the runtime places
work, not the speed-up of real machines.

  latency     sequential ``get(f.remote())`` of a no-op, pinned to the head (the driver's
              node) or to the other node with a hard NodeAffinitySchedulingStrategy, and with
              the default strategy; blocks of calls alternate between the targets. The embedded
              runtime (``rtml.init(num_cpus=1)``) is measured right after, for reference.
  throughput  1, 2 and 3 nodes, plus the embedded runtime, in rotating order per round: tiny
              tasks submitted in bulk then gathered (default strategy, and SPREAD), 10 ms sleep
              tasks (default, SPREAD): tasks/s, and the share of tasks each node ran.
  transfer    two nodes; a task pinned on node B makes a numpy array (1 MB, 100 MB, 1 GB). Pull
              into a task: a task pinned on the head reads it (the head pulls it) minus the same
              task once the copy is local. Pull to the driver: ``get`` on the head of an object
              made on B, minus ``get`` of one made on the head. GB/s = size / difference.
  locality    the Ray paper's Fig. 8a: two nodes, 20 objects of 10-100 MB (uniform, seeded),
              each made on a random node; then one task per object, in random order, each
              reading its object. Default (locality-aware) placement vs locality-unaware SPREAD
              and random hard node affinity; sequential (latency per task) and in bulk (total
              time); a fourth policy, hard affinity to the object's node, is the ideal.
              "MB pulled" is what the stores actually received (``ShmWatch``: an object's
              segment appearing in a second node's store); "needed" is the part the placement
              made necessary (each object is read once: the sizes of the objects read on the
              node that did not make them).
  control     the control plane's side of placement: every node sends a heartbeat and
              refreshes its view (list_nodes) every 0.5 s. Node ticks/s the control-plane
              server sustains with 1-1000 registered nodes, in memory and on Redis.

Reported: medians over all samples (p90 where it is a latency), the spread of per-round
medians, and the raw samples in the JSON. No figure is asserted anywhere.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import statistics
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "src"))

from _report import machine, write_json_atomic  # noqa: E402

import rtml  # noqa: E402
from rtml.testing import Cluster  # noqa: E402
from rtml.util.scheduling_strategies import NodeAffinitySchedulingStrategy  # noqa: E402

MB = 1 << 20
STORE = 3 << 30  # object_store_memory per node: a 1 GB object plus its pulled copy fit
SECTIONS = ("latency", "throughput", "transfer", "locality", "control")


# --------------------------------------------------------------------------- remote functions
@rtml.remote
def noop() -> None:
    return None


@rtml.remote
def where() -> str:
    return rtml.get_runtime_context().get_node_id()


@rtml.remote
def nap(seconds: float) -> str:
    time.sleep(seconds)
    return rtml.get_runtime_context().get_node_id()


@rtml.remote
def make(nbytes: int, seed: int = 0) -> np.ndarray:
    return np.full(nbytes, seed % 251, dtype=np.uint8)


@rtml.remote
def read(a: np.ndarray) -> tuple[int, str]:
    """Touch one byte per page (the whole object is mapped), say where it ran."""
    return int(a[::4096].sum()), rtml.get_runtime_context().get_node_id()


# --------------------------------------------------------------------------- helpers
def pin(node_id: str) -> NodeAffinitySchedulingStrategy:
    return NodeAffinitySchedulingStrategy(node_id, soft=False)


@contextmanager
def cluster_of(n: int, store: int | None = None) -> Iterator[tuple[Cluster, list[str]]]:
    """A cluster of ``n`` nodes (num_cpus=1 each), this process connected to the head; yields
    it and the node ids, head first. Everything is stopped on the way out."""
    args: dict[str, Any] = {"num_cpus": 1}
    if store:
        args["object_store_memory"] = store
    c = Cluster(initialize_head=True, head_node_args=dict(args))
    try:
        for _ in range(n - 1):
            c.add_node(**args)
        c.wait_for_nodes()
        rtml.init(address=c.address)
        try:
            assert c.head_node is not None
            yield c, [c.head_node.node_id] + [w.node_id for w in c.worker_nodes]
        finally:
            rtml.shutdown()
    finally:
        c.shutdown()


class ShmWatch:
    """Which objects appear in which node's store while it runs: polls /dev/shm for the
    stores' segment files (``rtml_{session}_{object hex}``), so a pull shows up as the object
    appearing in a second node's store, whoever asked for it. A segment that is deleted and
    created again (a new inode) counts again: the object travelled twice."""

    def __init__(self, c: Cluster, nodes: list[str], period: float = 0.005) -> None:
        from rtml._control._client import ControlClient

        with ControlClient(c.address, c.token) as gcs:
            self.prefix = {
                f"rtml_{gcs.get_node(nid).extra['session']}_": i for i, nid in enumerate(nodes)
            }
        self.period = period
        self.seen: set[tuple[int, int, int]] = set()  # (node index, object id, inode)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def copies(self) -> Counter:
        """(node index, object id) -> how many times a segment of it was created there."""
        return Counter((k, oid) for k, oid, _ino in self.seen)

    def _scan(self) -> None:
        with os.scandir("/dev/shm") as it:
            for entry in it:
                name = entry.name
                if not name.startswith("rtml_"):
                    continue
                head, _, oid = name.rpartition("_")
                i = self.prefix.get(head + "_")
                if i is not None:
                    try:
                        self.seen.add((i, int(oid, 16), entry.inode()))
                    except (ValueError, OSError):
                        pass

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            self._scan()

    def __enter__(self) -> ShmWatch:
        self._scan()
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()
        self._scan()


@contextmanager
def embedded() -> Iterator[tuple[None, list[str]]]:
    rtml.init(num_cpus=1)
    try:
        yield None, [rtml.get_runtime_context().get_node_id()]
    finally:
        rtml.shutdown()


def warm(nodes: list[str]) -> None:
    """Start a worker on every node and let the function caches fill."""
    for nid in nodes:
        rtml.get(
            [
                f.options(scheduling_strategy=pin(nid)).remote()
                for f in (noop, where)
                for _ in range(50)
            ],
            timeout=60,
        )
        rtml.get(nap.options(scheduling_strategy=pin(nid)).remote(0.001), timeout=60)
    rtml.get([noop.remote() for _ in range(200)], timeout=60)


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q)) if xs else float("nan")


def med(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def summary(samples: list[float], per_round: list[float] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"median": med(samples), "n": len(samples)}
    if per_round:
        out["round_medians_min_max"] = [min(per_round), max(per_round)]
    return out


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t = time.perf_counter()
    v = fn()
    return time.perf_counter() - t, v


def timed_get(ref: Any) -> tuple[float, Any]:
    """Seconds for ``get(ref)`` (ref: an ObjectRef), and the value."""
    t = time.perf_counter()
    v = rtml.get(ref, timeout=300)
    return time.perf_counter() - t, v


def timed_call(f: Any, *args: Any) -> tuple[float, Any]:
    """Seconds for ``get(f.remote(*args))`` (submission included), and the value."""
    t = time.perf_counter()
    v = rtml.get(f.remote(*args), timeout=300)
    return time.perf_counter() - t, v


def log(msg: str) -> None:
    print(msg, flush=True)


# --------------------------------------------------------------------------- 1. latency
def run_latency(a: argparse.Namespace) -> dict[str, Any]:
    calls, block = a.latency_calls, a.latency_block
    blocks = max(1, calls // block)
    out: dict[str, Any] = {"calls": blocks * block, "block": block}
    samples: dict[str, list[float]] = {}
    with cluster_of(2) as (_, (head, other)):
        warm([head, other])
        targets: dict[str, Any] = {
            "head node (hard affinity)": noop.options(scheduling_strategy=pin(head)),
            "other node (hard affinity)": noop.options(scheduling_strategy=pin(other)),
            "default strategy": noop,
        }
        for f in targets.values():  # warm-up per target
            for _ in range(block):
                rtml.get(f.remote(), timeout=30)
        names = list(targets)
        for b in range(blocks):
            for name in names[b % len(names) :] + names[: b % len(names)]:
                f = targets[name]
                xs = samples.setdefault(name, [])
                for _ in range(block):
                    t = time.perf_counter()
                    rtml.get(f.remote(), timeout=30)
                    xs.append(time.perf_counter() - t)
    with embedded():
        for _ in range(block):
            rtml.get(noop.remote(), timeout=30)
        xs = samples.setdefault("embedded runtime, rtml.init(num_cpus=1)", [])
        for _ in range(blocks * block):
            t = time.perf_counter()
            rtml.get(noop.remote(), timeout=30)
            xs.append(time.perf_counter() - t)
    rows = {}
    for name, xs in samples.items():
        us = [x * 1e6 for x in xs]
        rows[name] = {
            "median_us": med(us),
            "p90_us": pct(us, 90),
            "p99_us": pct(us, 99),
            "n": len(us),
        }
        log(f"  latency  {name:42s} median {med(us):7.0f} us  p90 {pct(us, 90):7.0f} us")
    out["rows"] = rows
    return out


# --------------------------------------------------------------------------- 2. throughput
def _rate(fn: Callable[[], list[Any]], n: int) -> tuple[float, list[Any]]:
    dt, vals = timed(fn)
    return n / dt, vals


def throughput_once(nodes: list[str], a: argparse.Namespace) -> dict[str, tuple[float, Counter]]:
    n_tiny, sleep_s = a.tiny_tasks, a.sleep_ms / 1000
    n_sleep = a.sleep_tasks_per_node * len(nodes)
    workloads: dict[str, tuple[Callable[[], list[Any]], int]] = {
        "tiny tasks, default": (
            lambda: rtml.get([where.remote() for _ in range(n_tiny)], timeout=120),
            n_tiny,
        ),
        "tiny tasks, SPREAD": (
            lambda: rtml.get(
                [where.options(scheduling_strategy="SPREAD").remote() for _ in range(n_tiny)],
                timeout=120,
            ),
            n_tiny,
        ),
        f"{a.sleep_ms:g} ms sleep tasks, default": (
            lambda: rtml.get([nap.remote(sleep_s) for _ in range(n_sleep)], timeout=120),
            n_sleep,
        ),
        f"{a.sleep_ms:g} ms sleep tasks, SPREAD": (
            lambda: rtml.get(
                [nap.options(scheduling_strategy="SPREAD").remote(sleep_s) for _ in range(n_sleep)],
                timeout=120,
            ),
            n_sleep,
        ),
    }
    out = {}
    for name, (fn, n) in workloads.items():
        rate, vals = _rate(fn, n)
        index = {nid: i for i, nid in enumerate(nodes)}
        out[name] = (rate, Counter(index.get(v, -1) for v in vals))
    return out


def run_throughput(a: argparse.Namespace) -> dict[str, Any]:
    configs: list[str] = ["embedded", "1 node", "2 nodes", "3 nodes"]
    samples: dict[str, dict[str, list[float]]] = {}
    shares: dict[str, dict[str, Counter]] = {}
    per_round: dict[str, dict[str, list[float]]] = {}
    for r in range(a.rounds):
        order = configs[r % len(configs) :] + configs[: r % len(configs)]
        for cfg in order:
            ctx: Any = embedded() if cfg == "embedded" else cluster_of(int(cfg[0]))
            with ctx as (_, nodes):
                warm(nodes)
                round_rates: dict[str, list[float]] = {}
                for _ in range(a.reps):
                    for name, (rate, where_ran) in throughput_once(nodes, a).items():
                        samples.setdefault(cfg, {}).setdefault(name, []).append(rate)
                        round_rates.setdefault(name, []).append(rate)
                        shares.setdefault(cfg, {}).setdefault(name, Counter()).update(where_ran)
                for name, rates in round_rates.items():
                    per_round.setdefault(cfg, {}).setdefault(name, []).append(med(rates))
            log(
                f"  throughput round {r + 1}/{a.rounds} {cfg}: "
                + ", ".join(f"{k} {med(v):,.0f}/s" for k, v in round_rates.items())
            )
    rows: dict[str, Any] = {}
    for cfg in configs:
        rows[cfg] = {}
        for name, xs in samples.get(cfg, {}).items():
            cnt = shares[cfg][name]
            total = sum(cnt.values()) or 1
            rows[cfg][name] = {
                "tasks_per_s": summary(xs, per_round[cfg][name]),
                "share_per_node": [round(cnt.get(i, 0) / total, 3) for i in range(len(cnt))],
            }
    return {
        "tiny_tasks": a.tiny_tasks,
        "sleep_ms": a.sleep_ms,
        "sleep_tasks_per_node": a.sleep_tasks_per_node,
        "rounds": a.rounds,
        "reps_per_round": a.reps,
        "rows": rows,
    }


# --------------------------------------------------------------------------- 3. transfer
def run_transfer(a: argparse.Namespace) -> dict[str, Any]:
    sizes = [
        (s, reps)
        for s, reps in (
            (1 * MB, a.transfer_reps[0]),
            (100 * MB, a.transfer_reps[1]),
            (1024 * MB, a.transfer_reps[2]),
        )
        if reps > 0
    ]
    rows: dict[str, Any] = {}
    with cluster_of(2, STORE) as (_, (head, other)):
        warm([head, other])
        on_head, on_other = pin(head), pin(other)
        reader = read.options(scheduling_strategy=on_head)
        for size, reps in sizes:
            raw: dict[str, list[float]] = {
                "task_remote_s": [],
                "task_local_s": [],
                "driver_remote_s": [],
                "driver_local_s": [],
            }
            for i in range(reps):
                # pull into a task: the head pulls the object for its task
                ref = make.options(scheduling_strategy=on_other).remote(size, i)
                rtml.wait([ref], timeout=120)
                t_remote, (_, ran) = timed_call(reader, ref)
                t_local, _ = timed_call(reader, ref)
                assert ran == head, "the reader ran on the wrong node"
                raw["task_remote_s"].append(t_remote)
                raw["task_local_s"].append(t_local)
                del ref
                # pull to the driver: get on the head of an object made on the other node
                for key, where_to in (("driver_remote_s", on_other), ("driver_local_s", on_head)):
                    ref = make.options(scheduling_strategy=where_to).remote(size, i)
                    rtml.wait([ref], timeout=120)
                    dt, value = timed_get(ref)
                    assert value.nbytes == size
                    raw[key].append(dt)
                    del value, ref
                gc.collect()
            task_s = med(raw["task_remote_s"]) - med(raw["task_local_s"])
            driver_s = med(raw["driver_remote_s"]) - med(raw["driver_local_s"])
            label = f"{size // MB} MB"
            rows[label] = {
                "bytes": size,
                "reps": reps,
                "pull_into_task_GBps": size / task_s / 1e9 if task_s > 0 else None,
                "pull_to_driver_GBps": size / driver_s / 1e9 if driver_s > 0 else None,
                "task_remote_ms": med(raw["task_remote_s"]) * 1e3,
                "task_local_ms": med(raw["task_local_s"]) * 1e3,
                "driver_remote_ms": med(raw["driver_remote_s"]) * 1e3,
                "driver_local_ms": med(raw["driver_local_s"]) * 1e3,
                "samples_s": raw,
            }
            log(
                f"  transfer {label:>8}: into a task {rows[label]['pull_into_task_GBps'] or 0:.3f}"
                f" GB/s ({rows[label]['task_remote_ms']:.1f} - "
                f"{rows[label]['task_local_ms']:.1f} ms), to the driver "
                f"{rows[label]['pull_to_driver_GBps'] or 0:.3f} GB/s "
                f"({rows[label]['driver_remote_ms']:.1f} - "
                f"{rows[label]['driver_local_ms']:.1f} ms)"
            )
    return {"object_store_memory_per_node": STORE, "rows": rows}


# --------------------------------------------------------------------------- 4. locality
def _objects(
    nodes: list[str], rng: random.Random, n: int
) -> tuple[list[Any], list[int], list[int]]:
    sizes = [rng.randint(10 * MB, 100 * MB) for _ in range(n)]
    homes = [rng.randrange(len(nodes)) for _ in range(n)]
    refs = [
        make.options(scheduling_strategy=pin(nodes[h])).remote(s, i)
        for i, (s, h) in enumerate(zip(sizes, homes, strict=True))
    ]
    ready, _ = rtml.wait(refs, num_returns=len(refs), timeout=300)
    assert len(ready) == len(refs)
    return refs, sizes, homes


POLICIES = [
    "default (locality-aware)",
    "SPREAD",
    "random hard affinity",
    "hard affinity to the object's node",
]


def _reader(policy: str, nodes: list[str], home: str, rng: random.Random) -> Any:
    if policy == "SPREAD":
        return read.options(scheduling_strategy="SPREAD")
    if policy == "random hard affinity":
        return read.options(scheduling_strategy=pin(rng.choice(nodes)))
    if policy == "hard affinity to the object's node":
        return read.options(scheduling_strategy=pin(home))
    return read


def locality_once(
    c: Cluster, nodes: list[str], policy: str, mode: str, seed: int, n_objects: int
) -> dict[str, Any]:
    """One set of fresh objects, one reading task per object (in random order)."""
    rng = random.Random(seed)  # the same objects and order for every policy of a round
    refs, sizes, homes = _objects(nodes, rng, n_objects)
    order = list(range(len(refs)))
    rng.shuffle(order)
    readers = [_reader(policy, nodes, nodes[homes[i]], rng) for i in order]
    lat: list[float] = []
    with ShmWatch(c, nodes) as watch:
        t0 = time.perf_counter()
        if mode == "sequential":
            ran = []
            for f, i in zip(readers, order, strict=True):
                dt, (_, nid) = timed_call(f, refs[i])
                lat.append(dt)
                ran.append(nid)
        else:
            out = rtml.get(
                [f.remote(refs[i]) for f, i in zip(readers, order, strict=True)], timeout=300
            )
            ran = [nid for _, nid in out]
        total = time.perf_counter() - t0
    index = {nid: k for k, nid in enumerate(nodes)}
    oid_of = {int(ref.hex(), 16): i for i, ref in enumerate(refs)}
    copies = {(k, oid_of[oid]): n for (k, oid), n in watch.copies().items() if oid in oid_of}
    pulled = sum(sizes[i] * (n - (k == homes[i])) for (k, i), n in copies.items())
    needed = sum(sizes[i] for i, nid in zip(order, ran, strict=True) if index[nid] != homes[i])
    missing = [i for i in range(len(refs)) if (homes[i], i) not in copies]
    del refs
    gc.collect()
    return {
        "total_s": total,
        "task_latency_s": lat,
        "bytes": sum(sizes),
        "pulled_bytes": pulled,
        "needed_bytes": needed,
        "local_fraction": sum(index[nid] == homes[i] for i, nid in zip(order, ran, strict=True))
        / len(order),
        "unseen_originals": len(missing),
    }


def run_locality(a: argparse.Namespace) -> dict[str, Any]:
    modes = ["sequential", "bulk"]
    raw: dict[str, dict[str, list[dict[str, Any]]]] = {}
    with cluster_of(2, STORE) as (c, nodes):
        warm(nodes)
        for r in range(a.rounds):
            for mode in modes:
                for k in range(len(POLICIES)):
                    policy = POLICIES[(r + k) % len(POLICIES)]
                    res = locality_once(
                        c,
                        nodes,
                        policy,
                        mode,
                        a.seed * 1000 + r * 10 + modes.index(mode),
                        a.objects,
                    )
                    raw.setdefault(policy, {}).setdefault(mode, []).append(res)
                    lat = res["task_latency_s"]
                    log(
                        f"  locality round {r + 1}/{a.rounds} {mode:10s} {policy:34s} total "
                        f"{res['total_s']:6.2f} s, pulled {res['pulled_bytes'] / MB:5.0f} MB "
                        f"(needed {res['needed_bytes'] / MB:4.0f}) of "
                        f"{res['bytes'] / MB:4.0f} MB, local {res['local_fraction']:.0%}"
                        + (f", mean task {statistics.fmean(lat) * 1e3:.0f} ms" if lat else "")
                    )
    rows: dict[str, Any] = {}
    for policy in POLICIES:
        rows[policy] = {}
        for mode, runs in raw.get(policy, {}).items():
            lat_ms = [x * 1e3 for res in runs for x in res["task_latency_s"]]
            rows[policy][mode] = {
                "total_s_median": med([res["total_s"] for res in runs]),
                "pulled_MB_median": med([res["pulled_bytes"] / MB for res in runs]),
                "needed_MB_median": med([res["needed_bytes"] / MB for res in runs]),
                "object_MB_median": med([res["bytes"] / MB for res in runs]),
                "local_fraction_median": med([res["local_fraction"] for res in runs]),
                **(
                    {
                        "task_latency_ms_mean": statistics.fmean(lat_ms),
                        "task_latency_ms_median": med(lat_ms),
                        "task_latency_ms_p90": pct(lat_ms, 90),
                    }
                    if lat_ms
                    else {}
                ),
                "runs": runs,
            }
    return {
        "objects": a.objects,
        "object_MB": [10, 100],
        "rounds": a.rounds,
        "seed": a.seed,
        "rows": rows,
    }


# --------------------------------------------------------------------------- 5. control plane
def _node_info(i: int) -> dict[str, Any]:
    """What a node registers (the shape of _node/_server.py's registration)."""
    return {
        "address": f"10.0.{i // 250}.{i % 250}:40000",
        "host": f"host-{i}",
        "pid": 1000 + i,
        "resources": {"CPU": 8.0, "memory": 32e9, "object_store_memory": 8e9},
        "labels": {},
        "is_head": i == 0,
        "session": f"{i:08x}",
    }


def control_ticks(client: Any, ids: list[str], ticks: int, in_flight: int) -> float:
    """Node ticks/s: one tick = what a node sends every HEARTBEAT_S (a heartbeat with its
    availability and load, then list_nodes to refresh its view)."""
    avail = {"CPU": 3.0, "memory": 32e9, "object_store_memory": 8e9}
    load = {"available": avail, "queued": 2, "tasks": 7, "workers": 8, "clients": 1}
    t = time.perf_counter()
    done = 0
    while done < ticks:
        futures = []
        for k in range(in_flight):
            nid = ids[(done + k) % len(ids)]
            futures.append(client.submit("heartbeat", nid, avail, load))
            futures.append(client.submit("list_nodes", False))
        for f in futures:
            f.result(60)
        done += in_flight
    return done / (time.perf_counter() - t)


def run_control(a: argparse.Namespace) -> dict[str, Any]:
    import tempfile

    from control_plane import start_gcs

    from rtml._control import ControlClient
    from rtml._control._local_redis import LocalRedis
    from rtml._transport._auth import new_token

    rows: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        redis = LocalRedis(tmp).start()
        try:
            for backend, spec in (("memory", None), ("redis", redis.address)):
                token = new_token()
                proc: Any = start_gcs(token, spec)
                try:
                    with ControlClient(f"127.0.0.1:{proc.port}", token) as client:
                        ids: list[str] = []
                        for n in a.control_nodes:
                            while len(ids) < n:
                                ids.append(f"{len(ids) + 1:016x}")
                                client.register_node(ids[-1], _node_info(len(ids) - 1))
                            control_ticks(client, ids, 20, 1)  # warm-up
                            sync = [
                                control_ticks(client, ids, a.control_ticks, 1) for _ in range(3)
                            ]
                            piped = [
                                control_ticks(client, ids, a.control_ticks, 50) for _ in range(3)
                            ]
                            row = {
                                "ticks_per_s_one_at_a_time": med(sync),
                                "ticks_per_s_50_in_flight": med(piped),
                                "nodes_served_at_0_5_s": med(piped) * 0.5,
                            }
                            rows.setdefault(backend, {})[str(n)] = row
                            log(
                                f"  control  {backend:6s} {n:5d} nodes registered: "
                                f"{row['ticks_per_s_one_at_a_time']:7,.0f} ticks/s one at a time, "
                                f"{row['ticks_per_s_50_in_flight']:7,.0f} with 50 in flight "
                                f"-> ~{row['nodes_served_at_0_5_s']:,.0f} nodes at one tick "
                                "per 0.5 s"
                            )
                finally:
                    proc.terminate()
                    proc.wait()
        finally:
            redis.stop()
    return {
        "tick": "heartbeat + list_nodes (what each node sends every 0.5 s)",
        "ticks": a.control_ticks,
        "rows": rows,
    }


# --------------------------------------------------------------------------- report
def report(doc: dict[str, Any]) -> str:
    lines: list[str] = []
    if "latency" in doc:
        lines += [
            "",
            "Round trip of a no-op task, sequential get(f.remote()) from the driver",
            f"{'placement':46s} {'median':>9s} {'p90':>9s}",
        ]
        for name, r in doc["latency"]["rows"].items():
            lines.append(f"{name:46s} {r['median_us']:7.0f}us {r['p90_us']:7.0f}us")
    if "throughput" in doc:
        t = doc["throughput"]
        rows = t["rows"]
        names = list(next(iter(rows.values())))
        lines += [
            "",
            "Task throughput, tasks/s (median; nodes of num_cpus=1 sharing 2 cores)",
            f"{'workload':30s}" + "".join(f"{c:>20s}" for c in rows),
        ]
        for name in names:
            cells = []
            for cfg in rows:
                x = rows[cfg].get(name)
                if x is None:
                    cells.append(f"{'':>20s}")
                    continue
                share = "/".join(f"{s * 100:.0f}" for s in x["share_per_node"])
                cells.append(f"{x['tasks_per_s']['median']:>9,.0f} ({share:>7s})")
            lines.append(f"{name:30s}" + "".join(f"{c:>20s}" for c in cells))
        lines.append("(in brackets: % of the tasks run by each node, head first)")
    if "transfer" in doc:
        lines += [
            "",
            "Object transfer between two nodes (GB/s; ms: remote - local)",
            f"{'size':>8s} {'into a task':>26s} {'to the driver':>26s}",
        ]
        for label, r in doc["transfer"]["rows"].items():
            a = r["pull_into_task_GBps"] or float("nan")
            b = r["pull_to_driver_GBps"] or float("nan")
            lines.append(
                f"{label:>8s} {a:7.3f} ({r['task_remote_ms']:7.1f}-"
                f"{r['task_local_ms']:5.1f} ms) {b:7.3f} ({r['driver_remote_ms']:7.1f}-"
                f"{r['driver_local_ms']:5.1f} ms)"
            )
    if "locality" in doc:
        lo = doc["locality"]
        nan = float("nan")
        lines += [
            "",
            f"Locality (Fig. 8a): {lo['objects']} objects of 10-100 MB on 2 nodes, one "
            "reading task each (medians; MB pulled as seen in the stores, and the part "
            "the placement needed)",
            f"{'policy':35s} {'mean task':>10s} {'seq. total':>10s} {'MB pulled':>14s} "
            f"{'local':>6s} {'bulk total':>10s} {'MB pulled':>14s}",
        ]
        for policy, modes in lo["rows"].items():
            s, b = modes.get("sequential", {}), modes.get("bulk", {})
            lines.append(
                f"{policy:35s} {s.get('task_latency_ms_mean', nan):7.0f} ms "
                f"{s.get('total_s_median', nan):8.2f} s "
                f"{s.get('pulled_MB_median', nan):6.0f} ({s.get('needed_MB_median', nan):5.0f}) "
                f"{s.get('local_fraction_median', nan) * 100:5.0f}% "
                f"{b.get('total_s_median', nan):8.2f} s "
                f"{b.get('pulled_MB_median', nan):6.0f} ({b.get('needed_MB_median', nan):5.0f})"
            )
    if "control" in doc:
        rows = doc["control"]["rows"]
        lines += [
            "",
            "Control plane: node ticks/s (heartbeat + list_nodes), 50 in flight (one at a time)",
            f"{'nodes registered':>16s}" + "".join(f"{b:>24s}" for b in rows),
        ]
        for n in next(iter(rows.values())):
            lines.append(
                f"{n:>16s}"
                + "".join(
                    f"{rows[b][n]['ticks_per_s_50_in_flight']:>11,.0f} "
                    f"({rows[b][n]['ticks_per_s_one_at_a_time']:>7,.0f})    "
                    for b in rows
                )
            )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="a fast smoke run (~1 min)")
    ap.add_argument("--json", default=None, help="write the figures and samples here")
    ap.add_argument(
        "--only",
        action="append",
        choices=SECTIONS,
        default=None,
        help="run only this section (repeatable)",
    )
    ap.add_argument("--rounds", type=int, default=None, help="rounds (throughput, locality)")
    ap.add_argument("--seed", type=int, default=8)
    a = ap.parse_args()
    if a.quick:
        a.rounds = a.rounds or 1
        a.reps, a.latency_calls, a.latency_block = 1, 300, 100
        a.tiny_tasks, a.sleep_tasks_per_node = 500, 30
        a.transfer_reps, a.objects = (3, 1, 0), 6
        a.control_nodes, a.control_ticks = (1, 100), 100
    else:
        a.rounds = a.rounds or 3
        a.reps, a.latency_calls, a.latency_block = 2, 2000, 200
        a.tiny_tasks, a.sleep_tasks_per_node = 2000, 100
        a.transfer_reps, a.objects = (20, 5, 3), 20
        a.control_nodes, a.control_ticks = (1, 10, 100, 1000), 300
    a.sleep_ms = 10.0
    sections = a.only or list(SECTIONS)
    doc: dict[str, Any] = {
        "command": "python bench/cluster.py " + " ".join(sys.argv[1:]),
        "machine": machine(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "load_average_at_start": os.getloadavg(),  # others' work on this shared machine
    }
    runners = {
        "latency": run_latency,
        "throughput": run_throughput,
        "transfer": run_transfer,
        "locality": run_locality,
        "control": run_control,
    }
    t0 = time.perf_counter()
    for name in SECTIONS:
        if name in sections:
            log(f"== {name}")
            t = time.perf_counter()
            doc[name] = runners[name](a)
            doc[name]["seconds"] = round(time.perf_counter() - t, 1)
    doc["seconds"] = round(time.perf_counter() - t0, 1)
    doc["load_average_at_end"] = os.getloadavg()
    print(report(doc))
    print(f"\n({doc['seconds']:.0f} s)")
    if a.json:
        write_json_atomic(a.json, json.loads(json.dumps(doc, default=str)))


if __name__ == "__main__":
    main()
