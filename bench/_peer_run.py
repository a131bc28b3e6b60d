"""One framework, one fresh process: ``python bench/_peer_run.py FRAMEWORK NUM_CPUS DURATION
OUT.json [WORKLOAD ...]`` (run by compare.py; not meant to be run by hand).

Measures, in order: import time; start() to the first task result; idle memory of the whole
process tree after a few tasks; each workload (Ray's timeit method); shutdown time.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import time
import traceback

_T_START = time.perf_counter()
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _frameworks  # noqa: E402
from _timing import timeit, tree_memory  # noqa: E402

# What a framework raises when it lacks a feature (rtml actors before they land).
_MISSING = (ImportError, TypeError, AttributeError, NotImplementedError)


def main(argv: list[str]) -> None:
    name, cpus, duration, out_path = argv[0], int(argv[1]), float(argv[2]), argv[3]
    wanted = set(argv[4:])
    res: dict = {"framework": name, "pid": os.getpid(), "workloads": {}}
    t0 = time.perf_counter()
    fw = _frameworks.make(name, cpus)  # imports the framework
    t1 = time.perf_counter()
    fw.start()
    fw.first_result()
    t2 = time.perf_counter()
    # multiprocessing is imported before the clock starts; only third-party imports count.
    res["import_s"] = None if name in ("mp.Pool", "ProcessPool") else t1 - t0
    res["init_to_first_s"] = t2 - t1
    try:
        for _ in range(20):
            fw.first_result()
        gc.collect()
        time.sleep(0.5)
        res["memory"] = tree_memory()
        for wname, setup in fw.workloads().items():
            if wanted and wname not in wanted:
                continue
            entry: dict = {}
            try:
                fn, mult, unit = setup()
                entry = {
                    "unit": unit,
                    "samples": timeit(fn, duration, mult, budget=max(10, 10 * duration)),
                }
            except _MISSING as e:
                entry = {"status": "skipped", "error": f"{type(e).__name__}: {e}"[:200]}
            except Exception as e:
                traceback.print_exc()
                entry = {"status": "error", "error": f"{type(e).__name__}: {e}"[:200]}
            res["workloads"][wname] = entry
            fn = setup = None
            gc.collect()
    finally:
        t3 = time.perf_counter()
        fw.stop()
        res["shutdown_s"] = time.perf_counter() - t3
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump(res, f)


if __name__ == "__main__":
    main(sys.argv[1:])
