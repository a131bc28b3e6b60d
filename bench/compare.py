"""Side-by-side comparison of rtml with Ray, Dask distributed and multiprocessing.

    bash bench/setup_peers.sh                       # once: bench/.peers-venv
    bench/.peers-venv/bin/python bench/compare.py   # ~5 min with the defaults

Each framework runs in its own fresh subprocess (``_peer_run.py``), one after another, for
``--rounds`` rounds whose framework order rotates, so a slow phase of the (shared) machine does
not land on one framework only. Per workload, the per-round rates of all rounds are pooled
into mean ± std. Writes bench/results/compare.json and bench/results/compare.png and prints
the rtml/peer ratio of every row. ``--rl`` also runs bench/rl_loop.py.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from _frameworks import FRAMEWORKS  # noqa: E402
from _report import chart, ratios, table, write_json_atomic  # noqa: E402
from _timing import mean_std  # noqa: E402

MODULE_OF = {
    "rtml": "rtml",
    "ray": "ray",
    "dask": "distributed",
    "mp.Pool": None,
    "ProcessPool": None,
}
FIXED_ROWS = [  # (workload, unit, how to read it from one process's result)
    ("init() to first result", "ms", lambda r: [r["init_to_first_s"] * 1e3]),
    ("import time", "ms", lambda r: [] if r["import_s"] is None else [r["import_s"] * 1e3]),
    ("idle memory, all processes (RSS)", "MB", lambda r: [r["memory"]["rss_mb"]]),
    ("idle memory, all processes (USS)", "MB", lambda r: [r["memory"]["uss_mb"]]),
    ("shutdown()", "ms", lambda r: [r["shutdown_s"] * 1e3]),
]


def available(fw: str) -> bool:
    mod = MODULE_OF[fw]
    return mod is None or importlib.util.find_spec(mod) is not None


def run_one(fw: str, args: argparse.Namespace, log) -> dict | None:
    fd, out = tempfile.mkstemp(prefix=f"compare-{fw}-", suffix=".json")
    os.close(fd)
    cmd = [
        sys.executable,
        os.path.join(HERE, "_peer_run.py"),
        fw,
        str(args.num_cpus),
        str(args.duration),
        out,
        *args.workload,
    ]
    t = time.perf_counter()
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=args.timeout, check=False
        )
        log.write(f"==== {fw} (exit {proc.returncode})\n{proc.stdout}\n{proc.stderr}\n")
        if proc.returncode != 0:
            print(f"  {fw}: exited {proc.returncode}; see {args.log}", flush=True)
            return None
        with open(out, encoding="utf-8") as f:
            res = json.load(f)
    except subprocess.TimeoutExpired:
        print(f"  {fw}: timed out after {args.timeout} s", flush=True)
        return None
    finally:
        os.unlink(out)
    print(f"  {fw}: {time.perf_counter() - t:.1f} s", flush=True)
    return res


def aggregate(results: dict[str, list[dict]], frameworks: list[str]) -> list[dict]:
    rows: list[dict] = []
    for wname, unit, get in FIXED_ROWS:
        row = {"workload": wname, "unit": unit, "values": {}}
        for fw in frameworks:
            samples = [x for r in results.get(fw, []) for x in get(r)]
            if samples:
                m, s = mean_std(samples)
                row["values"][fw] = {"mean": m, "std": s, "n": len(samples), "samples": samples}
        rows.append(row)
    names: list[str] = []
    for fw in frameworks:
        for r in results.get(fw, []):
            names += [n for n in r["workloads"] if n not in names]
    for wname in names:
        row = {"workload": wname, "unit": "", "values": {}}
        for fw in frameworks:
            entries = [
                r["workloads"][wname] for r in results.get(fw, []) if wname in r["workloads"]
            ]
            ok = [e for e in entries if "samples" in e]
            if ok:
                samples = [x for e in ok for x in e["samples"]]
                m, s = mean_std(samples)
                row["unit"] = ok[0]["unit"]
                row["values"][fw] = {"mean": m, "std": s, "n": len(samples), "samples": samples}
            elif entries:
                row["values"][fw] = {
                    "status": entries[0].get("status", "error"),
                    "error": entries[0].get("error", ""),
                }
        rows.append(row)
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--duration", type=float, default=1.0, help="timed seconds per workload")
    ap.add_argument("--num-cpus", type=int, default=2)
    ap.add_argument("--frameworks", nargs="+", default=list(FRAMEWORKS), choices=FRAMEWORKS)
    ap.add_argument(
        "--workload",
        action="append",
        default=[],
        help="run only this workload (repeatable; start-up rows always run)",
    )
    ap.add_argument("--timeout", type=float, default=600.0, help="per framework process")
    ap.add_argument("--out-dir", default=os.path.join(HERE, "results"))
    ap.add_argument("--rl", action="store_true", help="also run bench/rl_loop.py")
    args = ap.parse_args()
    os.makedirs(args.out_dir, exist_ok=True)
    args.log = os.path.join(args.out_dir, "compare.log.tmp")
    frameworks = [fw for fw in args.frameworks if available(fw)]
    missing = sorted(set(args.frameworks) - set(frameworks))
    if missing:
        print(f"not installed here (run with bench/.peers-venv/bin/python): {missing}")
    started = time.time()
    results: dict[str, list[dict]] = {fw: [] for fw in frameworks}
    with open(args.log, "w", encoding="utf-8") as log:
        for rnd in range(args.rounds):
            order = frameworks[rnd % len(frameworks) :] + frameworks[: rnd % len(frameworks)]
            print(f"round {rnd + 1}/{args.rounds}: {' -> '.join(order)}", flush=True)
            for fw in order:
                res = run_one(fw, args, log)
                if res is not None:
                    results[fw].append(res)
    rows = aggregate(results, frameworks)
    print("\nmean ± std (pooled per-round samples; rates are per second unless unit says)\n")
    print(table(rows, frameworks))
    peers = [fw for fw in frameworks if fw != "rtml"]
    ratio_doc: list[dict] = []
    if "rtml" in frameworks and peers:
        text, ratio_doc = ratios(rows, "rtml", peers)
        print("\nrtml/peer (value ratio; for ms and MB lower is better, else higher)\n")
        print(text)
    for r in rows:
        for fw, v in r["values"].items():
            if v.get("status"):
                print(f"  note: {r['workload']} on {fw}: {v['status']}: {v['error']}")
    meta = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "num_cpus": args.num_cpus,
        "rounds": args.rounds,
        "duration_per_workload_s": args.duration,
        "started_unix": started,
        "wall_s": round(time.time() - started, 1),
        "loadavg_end": os.getloadavg(),
        "versions": versions(frameworks),
        "rtml_git_commit": git_commit(),
    }
    json_path = os.path.join(args.out_dir, "compare.json")
    write_json_atomic(json_path, {"meta": meta, "rows": rows, "ratios": ratio_doc})
    png = os.path.join(args.out_dir, "compare.png")
    err = chart(
        rows,
        frameworks,
        png,
        f"rtml vs peers, {args.num_cpus} worker slots, {os.cpu_count()} cores "
        f"(log scale; error bars: std)",
    )
    print(f"\nwrote {json_path}" + (f"; chart skipped: {err}" if err else f" and {png}"))
    print(f"wall time {meta['wall_s']} s")
    if args.rl:
        rl = [
            sys.executable,
            os.path.join(HERE, "rl_loop.py"),
            "--num-cpus",
            str(args.num_cpus),
            "--out-dir",
            args.out_dir,
        ]
        return subprocess.call(rl)
    return 0


def git_commit() -> str | None:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            cwd=HERE,
            check=False,
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return None


def versions(frameworks: list[str]) -> dict[str, str]:
    out = {}
    for fw in frameworks:
        mod = MODULE_OF[fw] or "multiprocessing"
        code = f"import {mod} as m; print(getattr(m, '__version__', 'stdlib'))"
        try:
            out[fw] = subprocess.run(
                [sys.executable, "-c", code],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            ).stdout.strip()
        except subprocess.TimeoutExpired:
            out[fw] = "?"
    return out


if __name__ == "__main__":
    raise SystemExit(main())
