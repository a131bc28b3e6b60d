"""Placement groups: time to create a group of 4 bundles, have it ready, and remove it;
rtml (embedded runtime) against Ray, side by side in one run.

    .venv/bin/python bench/placement_groups.py            # ~1 min
    .venv/bin/python bench/placement_groups.py --quick    # one JSON object, ~30 s

Each framework runs in its own fresh process (Ray's with bench/.peers-venv/bin/python, or
$RTML_PEERS_PYTHON) on ``num_cpus=4``: one warm-up round, then ``--rounds`` rounds of
``pg = placement_group([{"CPU": 1}] * 4)``; ``get(pg.ready())``; ``remove_placement_group(pg)``
(Ray's removal returns before the resources are back, rtml's after: each round also waits until
the CPUs show as available again, so both are timed to the same point). Reported per framework:
medians of create+ready, remove (until the CPUs show as available), the remove call alone,
and the whole round, in ms. Nothing is
asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
PEERS_PY = os.environ.get("RTML_PEERS_PYTHON") or os.path.join(HERE, ".peers-venv", "bin", "python")


def child(framework: str, rounds: int) -> None:
    if framework == "rtml":
        sys.path.insert(0, os.path.join(HERE, "..", "src"))
        import rtml as ray
        from rtml.util.placement_group import placement_group, remove_placement_group

        ray.init(num_cpus=4, include_dashboard=False)
    else:
        import ray
        from ray.util.placement_group import placement_group, remove_placement_group

        ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)

    def one() -> tuple[float, float, float]:
        t0 = time.perf_counter()
        pg = placement_group([{"CPU": 1}] * 4)
        ray.get(pg.ready(), timeout=60)
        t1 = time.perf_counter()
        remove_placement_group(pg)
        t2 = time.perf_counter()
        deadline = time.monotonic() + 30
        while ray.available_resources().get("CPU", 0) < 4 and time.monotonic() < deadline:
            time.sleep(0.0005)
        return t1 - t0, time.perf_counter() - t1, t2 - t1

    one()  # warm-up: workers started, code loaded
    samples = [one() for _ in range(rounds)]
    ray.shutdown()
    print(
        json.dumps(
            {
                "ready": [s[0] for s in samples],
                "remove": [s[1] for s in samples],
                "remove_call": [s[2] for s in samples],
            }
        )
    )


def run(framework: str, rounds: int) -> dict:
    py = sys.executable if framework == "rtml" else PEERS_PY
    if framework != "rtml" and not os.path.exists(py):
        return {"status": "skipped", "error": f"no {py}: run bash bench/setup_peers.sh"}
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run(
        [py, os.path.abspath(__file__), "--child", framework, "--rounds", str(rounds)],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd="/tmp",
    )
    if out.returncode != 0:
        return {"status": "error", "error": out.stderr[-500:]}
    data = json.loads(out.stdout.strip().splitlines()[-1])
    ready, remove = data["ready"], data["remove"]
    return {
        "rounds": rounds,
        "create_ready_ms": round(statistics.median(ready) * 1e3, 2),
        "remove_ms": round(statistics.median(remove) * 1e3, 2),
        "remove_call_ms": round(statistics.median(data["remove_call"]) * 1e3, 2),
        "round_ms": round(
            statistics.median([a + b for a, b in zip(ready, remove, strict=True)]) * 1e3, 2
        ),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer rounds, one JSON object")
    ap.add_argument("--rounds", type=int, default=50)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        child(a.child, a.rounds)
        return
    rounds = 10 if a.quick else a.rounds
    res = {"bench": "placement_groups", "bundles": 4, "num_cpus": 4}
    res["rtml"] = run("rtml", rounds)
    res["ray"] = run("ray", rounds)
    r, y = res["rtml"], res["ray"]
    if "round_ms" in r and "round_ms" in y:
        res["ray_over_rtml_round"] = round(y["round_ms"] / r["round_ms"], 2)
    print(json.dumps(res))


if __name__ == "__main__":
    main()
