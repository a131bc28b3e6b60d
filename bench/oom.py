"""The memory monitor at work: a task that allocates without bound, on a node whose memory
threshold is set just above what the machine uses now, is killed before the machine runs out.

    .venv/bin/python bench/oom.py --quick            # ~10 s, prints one JSON object
    .venv/bin/python bench/oom.py --json bench/results/oom.json

Each round runs a non-retriable hog (32 MiB every 10 ms) and reports, from the error the
driver gets (``OutOfMemoryError`` carries them):

  rss_mib_at_kill     the hog's resident memory when the monitor killed it
  used_at_kill        the node's used fraction of memory then (threshold_used: the threshold)
  error_s             from the hog's start to the driver's OutOfMemoryError
  recover_s           from that error to the result of a new task on the same node
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "src"))

from _report import machine, write_json_atomic  # noqa: E402

import rtml  # noqa: E402
from rtml._node import _memory  # noqa: E402

HEADROOM = 600 * 2**20
CAP = 6 * 2**30


def hog() -> int:
    chunks = []
    while len(chunks) * 32 * 2**20 < CAP:
        chunks.append(b"\x01" * (32 * 2**20))
        time.sleep(0.01)
    time.sleep(120)
    return len(chunks)


def one_round() -> dict[str, float]:
    used, total = _memory.system_memory()
    threshold = min(0.99, (used + HEADROOM) / total)
    os.environ[_memory.THRESHOLD_ENV] = str(threshold)
    os.environ[_memory.REFRESH_ENV] = "50"
    rtml.init(num_cpus=1)
    try:
        f = rtml.remote(max_retries=0)(hog)
        rtml.get(rtml.remote(lambda: 0).remote(), timeout=60)  # a worker is up
        t0 = time.perf_counter()
        try:
            rtml.get(f.remote(), timeout=120)
            raise SystemExit("the hog was not killed")
        except rtml.exceptions.OutOfMemoryError as e:
            err = e
        t1 = time.perf_counter()
        rtml.get(rtml.remote(lambda: 1).remote(), timeout=60)
        t2 = time.perf_counter()
    finally:
        rtml.shutdown()
    return {
        "rss_mib_at_kill": (err.rss or 0) / 2**20,
        "used_at_kill": (err.used or 0) / (err.total or 1),
        "threshold_used": threshold,
        "error_s": t1 - t0,
        "recover_s": t2 - t1,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="one round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", help="also write the result here")
    args = ap.parse_args()
    rounds = [one_round() for _ in range(1 if args.quick else args.rounds)]
    out = {k: round(statistics.median(r[k] for r in rounds), 3) for k in rounds[0]}
    out["rounds"] = len(rounds)
    if args.json:
        write_json_atomic(args.json, {"result": out, "machine": machine()})
    print(json.dumps(out))


if __name__ == "__main__":
    main()
