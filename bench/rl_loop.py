"""The paper's headline experiment: an RL-style loop of simulations feeding a policy update.

    bench/.peers-venv/bin/python bench/rl_loop.py            # ~2 min; all frameworks
    bench/.peers-venv/bin/python bench/rl_loop.py --sims 500 --frameworks rtml

Simulation i sleeps d[i] seconds, d drawn once from a lognormal (median 5 ms, sigma 0.85,
clipped at 100 ms; fixed seed), so every framework runs the same durations in the same order.
A simulation gets the current policy (1000 float64) and returns a small gradient; the driver
folds it in (``policy += 0.01 * grad``).

  BSP      launch a round of K, get all (barrier), update once per round, repeat.
  dynamic  keep K in flight; wait(num_returns=1), update with that result, launch a
           replacement with the new policy (Dask: as_completed, adding the replacement).

Reported: simulations/s, update latency (time between consecutive policy updates: median and
p99), and utilisation = sum(d) / (wall * slots). Plus a tree search where tasks spawn tasks
(tasks/s sustained). Each (framework, variant) runs in a fresh subprocess.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from _report import chart, fmt, write_json_atomic  # noqa: E402

PLAN = [
    ("rtml", "dynamic"),
    ("rtml", "bsp"),
    ("ray", "dynamic"),
    ("ray", "bsp"),
    ("dask", "dynamic"),
    ("mp.Pool", "bsp"),
    ("rtml", "tree"),
    ("ray", "tree"),
    ("dask", "tree"),
]


def durations(n: int, seed: int) -> list[float]:
    import numpy as np

    rng = np.random.default_rng(seed)
    return [float(x) for x in np.minimum(rng.lognormal(math.log(0.005), 0.85, n), 0.1)]


def simulate(policy: Any, d: float, i: int) -> Any:
    import numpy as np

    time.sleep(d)
    return np.full(16, (i % 7) * 1e-3) + policy[:16] * 0.0


def simulate_args(a: tuple) -> Any:
    return simulate(*a)


def nested(depth: int, branching: int, remote: Any, get: Any) -> int:
    """Tree node: a leaf scores itself; an inner node spawns its children and sums them."""
    if depth == 0:
        return sum(range(100)) % 7  # a tiny evaluation
    return sum(get([remote(depth - 1, branching) for _ in range(branching)]))


# --------------------------------------------------------------------------- child side
class Runner:
    def __init__(self, fw: str, cpus: int) -> None:
        self.fw = fw
        if fw in ("rtml", "ray"):
            import importlib

            import cloudpickle

            cloudpickle.register_pickle_by_value(sys.modules[__name__])
            self.ray = importlib.import_module(fw)
            self.ray.init(num_cpus=cpus, include_dashboard=False)
            self.sim = self.ray.remote(simulate)
        elif fw == "dask":
            import cloudpickle
            import distributed

            cloudpickle.register_pickle_by_value(sys.modules[__name__])
            self.cluster = distributed.LocalCluster(
                n_workers=cpus, threads_per_worker=1, processes=True, dashboard_address=None
            )
            self.client = distributed.Client(self.cluster)
        else:
            import multiprocessing

            self.pool = multiprocessing.Pool(cpus)

    def stop(self) -> None:
        if self.fw in ("rtml", "ray"):
            self.ray.shutdown()
        elif self.fw == "dask":
            self.client.close()
            self.cluster.close()
        else:
            self.pool.close()
            self.pool.join()

    def bsp(self, d: list[float], k: int, policy: Any) -> list[float]:
        stamps = []
        for start in range(0, len(d), k):
            idx = range(start, min(start + k, len(d)))
            if self.fw == "mp.Pool":
                grads = self.pool.map(simulate_args, [(policy, d[i], i) for i in idx])
            else:
                grads = self.ray.get([self.sim.remote(policy, d[i], i) for i in idx])
            for g in grads:
                policy[:16] += 0.01 * g
            stamps.append(time.perf_counter())
        return stamps

    def dynamic(self, d: list[float], k: int, policy: Any) -> list[float]:
        stamps = []
        n = len(d)
        if self.fw == "dask":
            from distributed import as_completed

            c = self.client
            ac = as_completed(
                [c.submit(simulate, policy.copy(), d[i], i, pure=False) for i in range(min(k, n))]
            )
            launched = min(k, n)
            for fut in ac:
                policy[:16] += 0.01 * fut.result()
                stamps.append(time.perf_counter())
                if launched < n:
                    ac.add(c.submit(simulate, policy.copy(), d[launched], launched, pure=False))
                    launched += 1
            return stamps
        ray, sim = self.ray, self.sim
        in_flight = [sim.remote(policy, d[i], i) for i in range(min(k, n))]
        launched = len(in_flight)
        while in_flight:
            ready, in_flight = ray.wait(in_flight, num_returns=1)
            policy[:16] += 0.01 * ray.get(ready[0])
            stamps.append(time.perf_counter())
            if launched < n:
                in_flight.append(sim.remote(policy, d[launched], launched))
                launched += 1
        return stamps

    def tree(self, depth: int, branching: int) -> int:
        if self.fw == "dask":
            from distributed import worker_client

            def node(dep: int, b: int) -> int:
                if dep == 0:
                    return nested(0, b, None, None)
                with worker_client() as wc:  # secedes from the worker's thread pool
                    return sum(
                        wc.gather([wc.submit(node, dep - 1, b, pure=False) for _ in range(b)])
                    )

            return self.client.submit(node, depth, branching, pure=False).result()
        ray = self.ray

        @ray.remote
        def node(dep: int, b: int) -> int:
            return nested(dep, b, node.remote, ray.get)

        return ray.get(node.remote(depth, branching))


def child(fw: str, variant: str, a: argparse.Namespace) -> dict:
    import numpy as np

    r = Runner(fw, a.num_cpus)
    try:
        if variant == "tree":
            total = sum(a.branching**i for i in range(a.depth + 1))
            times = []
            for _ in range(a.tree_reps + 1):  # the first (cold: workers start) is reported apart
                t = time.perf_counter()
                r.tree(a.depth, a.branching)
                times.append(time.perf_counter() - t)
            return {"tasks_per_tree": total, "tree_s": times}
        d = durations(a.sims, a.seed)
        policy = np.zeros(1000)
        warm = d[: 2 * a.k]  # start workers and ship functions before timing
        getattr(r, variant)(warm, a.k, policy.copy())
        t0 = time.perf_counter()
        stamps = getattr(r, variant)(d, a.k, policy)
        return {"t0": t0, "stamps": stamps, "sum_d": sum(d), "n": len(d)}
    finally:
        r.stop()


# --------------------------------------------------------------------------- parent side
def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, math.ceil(q * len(xs)) - 1))]


def summarize(fw: str, variant: str, res: dict, cpus: int) -> dict:
    if variant == "tree":
        cold, warm = res["tree_s"][0], res["tree_s"][1:]
        n = res["tasks_per_tree"]
        return {
            "framework": fw,
            "variant": variant,
            "tasks_per_tree": n,
            "cold_tasks_per_s": n / cold,
            "tasks_per_s": n * len(warm) / sum(warm),
        }
    stamps = res["stamps"]
    wall = stamps[-1] - res["t0"]
    gaps = [b - a for a, b in zip([res["t0"], *stamps[:-1]], stamps, strict=True)]
    return {
        "framework": fw,
        "variant": variant,
        "sims_per_s": res["n"] / wall,
        "update_latency_median_ms": pct(gaps, 0.5) * 1e3,
        "update_latency_p99_ms": pct(gaps, 0.99) * 1e3,
        "updates": len(stamps),
        "utilisation": res["sum_d"] / (wall * cpus),
        "wall_s": wall,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sims", type=int, default=2000)
    ap.add_argument("--k", type=int, default=4, help="simulations in flight / per BSP round")
    ap.add_argument("--num-cpus", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--depth", type=int, default=2, help="tree depth")
    ap.add_argument("--branching", type=int, default=30)
    ap.add_argument("--tree-reps", type=int, default=3)
    ap.add_argument("--frameworks", nargs="+", default=["rtml", "ray", "dask", "mp.Pool"])
    ap.add_argument("--out-dir", default=os.path.join(HERE, "results"))
    ap.add_argument("--child", nargs=3, metavar=("FW", "VARIANT", "OUT"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        res = child(a.child[0], a.child[1], a)
        with open(a.child[2], "w", encoding="utf-8") as f:
            json.dump(res, f)
        return 0
    os.makedirs(a.out_dir, exist_ok=True)
    d = durations(a.sims, a.seed)
    print(
        f"{a.sims} simulations, K={a.k}, {a.num_cpus} slots; durations median "
        f"{pct(d, 0.5) * 1e3:.1f} ms, p99 {pct(d, 0.99) * 1e3:.1f} ms, max {max(d) * 1e3:.1f} ms;"
        f" ideal {sum(d) / a.num_cpus:.1f} s ({a.sims * a.num_cpus / sum(d):.0f} sims/s)"
    )
    rows = []
    for fw, variant in PLAN:
        if fw not in a.frameworks:
            continue
        out = os.path.join(a.out_dir, f"rl-{fw}-{variant}.json.tmp")
        cmd = [sys.executable, __file__, "--child", fw, variant, out, *sys.argv[1:]]
        t = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False)
        if proc.returncode != 0:
            err = (proc.stderr.strip().splitlines() or ["?"])[-1][:200]
            print(f"  {fw:8s} {variant:8s} failed: {err}", flush=True)
            rows.append({"framework": fw, "variant": variant, "error": err})
            continue
        with open(out, encoding="utf-8") as f:
            rows.append(summarize(fw, variant, json.load(f), a.num_cpus))
        os.unlink(out)
        print(f"  {fw:8s} {variant:8s} done in {time.perf_counter() - t:.1f} s", flush=True)
    print(
        f"\n{'framework':10s} {'variant':8s} {'sims/s':>9s} {'upd p50 ms':>11s} "
        f"{'upd p99 ms':>11s} {'util':>6s}"
    )
    for r in rows:
        if r["variant"] != "tree" and "error" not in r:
            print(
                f"{r['framework']:10s} {r['variant']:8s} {fmt(r['sims_per_s']):>9s} "
                f"{fmt(r['update_latency_median_ms']):>11s} "
                f"{fmt(r['update_latency_p99_ms']):>11s} {r['utilisation']:6.2f}"
            )
    print(
        f"\ntree search, depth {a.depth} x branching {a.branching} (tasks spawn tasks, "
        f"nested get), {a.tree_reps} warm trees after one cold"
    )
    for r in rows:
        if r["variant"] == "tree" and "error" not in r:
            print(
                f"{r['framework']:10s} {fmt(r['tasks_per_s']):>9s} tasks/s sustained "
                f"(cold first tree: {fmt(r['cold_tasks_per_s'])} tasks/s)"
            )
    for r in rows:
        if "error" in r:
            print(f"{r['framework']:10s} {r['variant']:8s} error: {r['error']}")
    write_json_atomic(
        os.path.join(a.out_dir, "rl_loop.json"),
        {"args": {k: v for k, v in vars(a).items() if k != "child"}, "rows": rows},
    )
    plot_rows = [
        {"workload": f"RL {v} sims/s", "unit": "per second", "values": {}}
        for v in ("dynamic", "bsp")
    ]
    plot_rows.append({"workload": "tree search tasks/s", "unit": "per second", "values": {}})
    for r in rows:
        if "error" in r:
            continue
        target = (
            plot_rows[2]
            if r["variant"] == "tree"
            else plot_rows[0 if r["variant"] == "dynamic" else 1]
        )
        val = r.get("tasks_per_s") or r.get("sims_per_s")
        target["values"][r["framework"]] = {"mean": val, "std": 0.0}
    fws = [f for f in ["rtml", "ray", "dask", "mp.Pool"] if f in a.frameworks]
    chart(
        plot_rows,
        fws,
        os.path.join(a.out_dir, "rl_loop.png"),
        "RL loop and tree search (log scale)",
    )
    print(f"\nwrote {os.path.join(a.out_dir, 'rl_loop.json')} and rl_loop.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
