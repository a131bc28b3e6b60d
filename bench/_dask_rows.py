"""Dask on rtml against Dask's own schedulers and Dask-on-Ray: two graphs, 2 CPUs each.

    .venv/bin/python bench/_dask_rows.py [--quick]      # prints the rows as JSON

- array: ``(x + x.T).sum()`` of a chunked random array (4000x4000 in 500x500 chunks; quick:
  2000x2000 in 250x250), and
- groupby: ``ddf.groupby("k").v.mean()`` of a 16-partition dataframe (2M rows; quick: 400k),

each computed by ``rtml.util.dask.ray_dask_get`` (and with ``fuse=False``: one rtml task per
Dask task, as Dask-on-Ray submits them), Dask's ``threads`` and ``processes``
schedulers (2 workers) and ``ray.util.dask.ray_dask_get`` (run by bench/.peers-venv's Python
in a subprocess when that venv has Ray; else the row says why it is missing). Each figure is
the median wall time of the repeats after one warm-up run (which starts the workers and loads
the libraries in them). ``bench/front_ends.py`` imports :func:`dask_rows`. Measures only.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
PEERS_PY = os.path.join(HERE, ".peers-venv", "bin", "python")
CPUS = 2


def _workloads(quick: bool) -> dict[str, Any]:
    import dask.array as da
    import dask.dataframe as dd
    import numpy as np
    import pandas as pd

    n, c = (2000, 250) if quick else (4000, 500)
    x = da.random.RandomState(0).random_sample((n, n), chunks=(c, c))
    arr = (x + x.T).sum()
    rows = 400_000 if quick else 2_000_000
    rs = np.random.RandomState(1)
    df = pd.DataFrame({"k": rs.randint(0, 100, rows), "v": rs.random_sample(rows)})
    grp = dd.from_pandas(df, npartitions=16).groupby("k").v.mean()
    return {"array_sum": arr, "groupby_mean": grp}


def _time(coll: Any, scheduler: Any, repeats: int, **kw: Any) -> dict[str, Any]:
    coll.compute(scheduler=scheduler, **kw)  # warm-up
    samples = []
    for _ in range(repeats):
        t = time.perf_counter()
        coll.compute(scheduler=scheduler, **kw)
        samples.append(time.perf_counter() - t)
    return {"median_s": round(statistics.median(samples), 4), "samples_s": samples}


def _graph_size(coll: Any) -> int:
    """Keys in the collection's graph (before Dask's optimizations)."""
    return len(coll.__dask_graph__())


def _local_rows(quick: bool, repeats: int) -> dict[str, Any]:
    import rtml
    from rtml.util.dask import ray_dask_get

    out: dict[str, Any] = {}
    work = _workloads(quick)
    rtml.init(num_cpus=CPUS, include_dashboard=False)
    try:
        for name, coll in work.items():
            out.setdefault(name, {})["rtml"] = _time(coll, ray_dask_get, repeats)
            out[name]["rtml unfused"] = _time(coll, ray_dask_get, repeats, fuse=False)
    finally:
        rtml.shutdown()
    for name, coll in work.items():
        out[name]["dask threads"] = _time(coll, "threads", repeats, num_workers=CPUS)
        out[name]["dask processes"] = _time(coll, "processes", repeats, num_workers=CPUS)
        out[name]["tasks_in_graph"] = _graph_size(coll)
    return out


def _ray_rows(quick: bool, repeats: int) -> dict[str, Any]:
    """Run in the peers venv: Dask-on-Ray on the same graphs."""
    import ray
    from ray.util.dask import ray_dask_get

    work = _workloads(quick)
    ray.init(num_cpus=CPUS, include_dashboard=False, log_to_driver=False)
    try:
        return {name: _time(coll, ray_dask_get, repeats) for name, coll in work.items()}
    finally:
        ray.shutdown()


def dask_rows(quick: bool) -> dict[str, Any]:
    """``{workload: {scheduler: {"median_s", "samples_s"}, "tasks_in_graph": n}}``."""
    repeats = 3 if quick else 5
    out = _local_rows(quick, repeats)
    if not os.path.exists(PEERS_PY):
        why = "bench/.peers-venv is missing (bash bench/setup_peers.sh)"
        for name in out:
            out[name]["dask-on-ray"] = {"status": "skipped", "error": why}
        return out
    args = [PEERS_PY, os.path.abspath(__file__), "--ray", *(["--quick"] if quick else [])]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        for name in out:
            out[name]["dask-on-ray"] = {"status": "error", "error": proc.stderr[-400:]}
        return out
    ray_out = json.loads(proc.stdout.strip().splitlines()[-1])
    for name, row in ray_out.items():
        out[name]["dask-on-ray"] = row
    return out


if __name__ == "__main__":
    quick = "--quick" in sys.argv
    if "--ray" in sys.argv:
        print(json.dumps(_ray_rows(quick, 3 if quick else 5)))
    else:
        rows = dask_rows(quick)
        print(json.dumps(rows, indent=1))
        for name, row in rows.items():
            cells = [
                f"{k} {v['median_s'] * 1e3:.0f} ms"
                for k, v in row.items()
                if isinstance(v, dict) and "median_s" in v
            ]
            print(f"{name} ({row['tasks_in_graph']} tasks): " + ", ".join(cells), file=sys.stderr)
