"""Serving benchmark: rtml.serve against Ray Serve and a plain Starlette app under uvicorn.

    python bench/serve.py --quick               # < 1 min, rtml and the floor: one JSON line
    bench/.peers-venv/bin/python bench/serve.py # the full run (~5 min), Ray Serve included
    python bench/serve.py --json PATH           # where the full results go
                                                # (default bench/results/serve.json)

Load comes from Debian's ``wrk`` (``apt-get install wrk``) on loopback, one connection per
concurrent client, keep-alive. Deployments: a no-op returning a short text, and a River
model (StandardScaler + LogisticRegression) scoring a 10-feature JSON dict. Runs: concurrency
1, 16 and 64 with 1 and 2 replicas; then one load run at concurrency 16 of alternating 2 s
windows, steady / user_config swap / steady / new code / steady / failing new code (rolled
back) / ..., whose per-pair p99 ratios (change window over the steady window just before)
are reported as medians (``serve.run(app.options(user_config=...))`` is Ray Serve's own way
of swapping); a load run during which one of two replicas is SIGKILLed. Failed requests are wrk's
non-2xx responses plus its socket errors. The floor runs the same handler in-process in one
uvicorn process (no serving framework). Each framework runs in its own subprocess. The
benchmark measures; it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
RTML_PY = os.path.join(ROOT, ".venv", "bin", "python")
PEERS_PY = os.path.join(HERE, ".peers-venv", "bin", "python")
FEATURES = {f"f{i}": round(0.1 * i + 0.05, 2) for i in range(10)}


# ---------------------------------------------------------------------- the deployments
def train_model() -> Any:
    """A small River model, trained on synthetic data (same seed everywhere)."""
    import random

    from river import compose, linear_model, preprocessing

    rng = random.Random(7)
    model = compose.Pipeline(preprocessing.StandardScaler(), linear_model.LogisticRegression())
    for _ in range(300):
        x = {f"f{i}": rng.random() for i in range(10)}
        model.learn_one(x, x["f0"] + x["f3"] > 1.0)
    return model


def make_app(serve: Any, kind: str, replicas: int, broken: bool = False) -> Any:
    """The benchmark deployment for ``serve`` (rtml.serve or ray.serve); ``broken``: a new
    version whose constructor fails (for the rollback run)."""

    @serve.deployment(
        name="Model",
        num_replicas=replicas,
        max_ongoing_requests=100,
        user_config={"v": 0},
        ray_actor_options={"num_cpus": 0},
    )
    class Model:
        def __init__(self, code_version: int = 0) -> None:
            # A new code_version is a new version of the code for both frameworks (new
            # constructor arguments: new replicas), like a deploy of changed code.
            self.code_version = code_version
            if broken:
                raise RuntimeError("the new model version cannot be loaded")
            self.model = train_model() if kind == "river" else None
            self.v = 0

        def reconfigure(self, config: dict) -> None:
            self.v = config["v"]

        def pid(self) -> int:
            return os.getpid()

        async def __call__(self, request: Any) -> Any:
            if self.model is None:
                return "ok"
            x = await request.json()
            return {"p": self.model.predict_proba_one(x).get(True, 0.0), "v": self.v}

    return Model


def floor_factory() -> Any:
    """The floor app for uvicorn's worker processes (``--workers N`` needs an import path)."""
    return floor_app(os.environ["SERVE_BENCH_KIND"])


def floor_app(kind: str) -> Any:
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse, PlainTextResponse
    from starlette.routing import Route

    model = train_model() if kind == "river" else None

    async def handle(request: Any) -> Any:
        if model is None:
            return PlainTextResponse("ok")
        x = await request.json()
        return JSONResponse({"p": model.predict_proba_one(x).get(True, 0.0), "v": 0})

    return Starlette(routes=[Route("/", handle, methods=["GET", "POST"])])


# ---------------------------------------------------------------------- load (wrk)
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def _ms(text: str) -> float:
    m = re.match(r"([\d.]+)(us|ms|s)", text)
    if m is None:
        raise ValueError(f"cannot read wrk latency {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def wrk(port: int, conc: int, duration: float, kind: str) -> dict[str, Any]:
    """One wrk run; requests/s, latency quantiles (ms), requests and failures."""
    script = None
    cmd = [
        "wrk",
        "-t1",
        f"-c{conc}",
        f"-d{max(1, round(duration))}s",
        "--latency",
        "--timeout",
        "10s",
    ]
    if kind == "river":
        fd, script = tempfile.mkstemp(suffix=".lua")
        with os.fdopen(fd, "w") as f:
            f.write(
                'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
                f"wrk.body = '{json.dumps(FEATURES)}'\n"
            )
        cmd += ["-s", script]
    try:
        out = subprocess.run(
            [*cmd, f"http://127.0.0.1:{port}/"],
            capture_output=True,
            text=True,
            timeout=duration + 60,
            check=False,
        ).stdout
    finally:
        if script:
            os.unlink(script)
    res: dict[str, Any] = {"concurrency": conc, "duration_s": duration}
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    res["qps"] = float(m.group(1)) if m else 0.0
    for q in ("50", "75", "90", "99"):
        m = re.search(rf"^\s+{q}%\s+(\S+)", out, re.M)
        res[f"p{q}_ms"] = round(_ms(m.group(1)), 3) if m else None
    m = re.search(r"(\d+) requests in", out)
    res["requests"] = int(m.group(1)) if m else 0
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    failed = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        failed += sum(int(g) for g in m.groups())
    res["failed"] = failed
    return res


# ---------------------------------------------------------------------- one framework
def _serve_module(fw: str) -> tuple[Any, Any]:
    if fw == "ray":
        import ray
        from ray import serve
    else:
        import rtml as ray
        from rtml import serve
    return ray, serve


def _replica_pids(serve: Any, n: int) -> list[int]:
    """The pids of the application's replicas, asked of the replicas themselves."""
    handle = serve.get_app_handle("bench")
    pids: set[int] = set()
    for _ in range(50):
        pids.update(r.result(timeout_s=30) for r in [handle.pid.remote() for _ in range(8)])
        if len(pids) >= n:
            break
    return sorted(pids)


def run_framework(
    fw: str,
    kinds: list[str],
    replicas: list[int],
    concs: list[int],
    duration: float,
    pairs: int,
    window: float,
    kill_s: float,
    code_swaps: bool,
) -> dict[str, Any]:
    ray, serve = _serve_module(fw)
    port = free_port()
    t0 = time.perf_counter()
    ray.init(num_cpus=2, **({"include_dashboard": False} if fw == "ray" else {}))
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    out: dict[str, Any] = {"framework": fw, "rows": [], "events": {}}
    try:
        for kind in kinds:
            for n in replicas:
                Model = make_app(serve, kind, n)
                serve.run(Model.bind(), name="bench", route_prefix="/")
                out.setdefault("startup_s", round(time.perf_counter() - t0, 2))
                wrk(port, 8, 1.0, kind)  # warm-up
                for c in concs:
                    out["rows"].append(
                        {"model": kind, "replicas": n, **wrk(port, c, duration, kind)}
                    )
            if pairs:
                modes = (
                    ["config"]
                    + (["code"] if code_swaps else [])
                    + (["rollback"] if fw == "rtml" else [])
                )  # Ray Serve does not roll back
                out["events"][f"changes_{kind}"] = _alternating_run(
                    port,
                    kind,
                    serve,
                    make_app(serve, kind, replicas[0]),
                    make_app(serve, kind, replicas[0], broken=True),
                    modes,
                    pairs,
                    window,
                )
            if kill_s:
                Model = make_app(serve, kind, 2)
                serve.run(Model.bind(), name="bench", route_prefix="/")
                out["events"][f"kill_{kind}"] = _kill_run(port, kind, serve, kill_s)
    finally:
        serve.shutdown()
        ray.shutdown()
    return out


def _alternating_run(
    port: int,
    kind: str,
    serve: Any,
    Model: Any,
    Broken: Any,
    modes: list[str],
    pairs: int,
    window: float,
) -> dict:
    """Steady and change windows alternating within one load run: ``steady, <mode 1>,
    steady, <mode 2>, ...`` (``pairs`` of each mode), each ``window`` s of wrk at 16 clients.
    A change window starts one update 0.2 s in: a new user_config (``config``), new code
    (``code``: new constructor arguments, so new replicas) or new code whose constructor fails
    (``rollback``). The ratio of a pair is the change window's p99 over the steady window
    just before it, so both saw the same load from the rest of the machine; the median of a
    mode's ratios is its figure."""
    serve.run(Model.bind(0), name="bench", route_prefix="/")
    wrk(port, 16, 1.0, kind)  # warm-up
    code_v = 0
    windows: list[dict[str, Any]] = []
    out: dict[str, Any] = {
        m: {"ratios": [], "failed": 0, "requests": 0, "call_s": [], "errors": []} for m in modes
    }
    for i in range(pairs * len(modes)):
        mode = modes[i % len(modes)]
        steady = wrk(port, 16, window, kind)
        v = i + 1
        if mode == "config":
            app = Model.options(user_config={"v": v}).bind(code_v)
        elif mode == "code":
            code_v = v
            app = Model.bind(code_v)
        else:
            app = Broken.bind(v)
        calls: list[float] = []
        errors: list[str] = []

        def change(app: Any = app, calls: list = calls, errors: list = errors) -> None:
            time.sleep(0.2)
            t = time.perf_counter()
            try:
                serve.run(app, name="bench", route_prefix="/")
            except Exception as e:  # a rollback: serve.run reports the failed update
                errors.append(f"{type(e).__name__}: {str(e)[:160]}")
            calls.append(round(time.perf_counter() - t, 3))

        th = threading.Thread(target=change)
        th.start()
        during = wrk(port, 16, window, kind)
        th.join(300)
        windows += [{"kind": "steady", **steady}, {"kind": mode, **during}]
        o = out[mode]
        if steady["p99_ms"] and during["p99_ms"]:
            o["ratios"].append(round(during["p99_ms"] / steady["p99_ms"], 2))
        o["failed"] += during["failed"]
        o["requests"] += during["requests"]
        o["call_s"] += calls
        o["errors"] = (o["errors"] + errors)[:2]
    for o in out.values():
        o["median_p99_ratio"] = statistics.median(o["ratios"]) if o["ratios"] else None
    steady_failed = sum(w["failed"] for w in windows if w["kind"] == "steady")
    return {
        "window_s": window,
        "pairs": pairs,
        "modes": out,
        "steady_failed": steady_failed,
        "windows": windows,
    }


def _kill_run(port: int, kind: str, serve: Any, duration: float) -> dict:
    pids = _replica_pids(serve, 2)
    killed: list[int] = []

    def killer() -> None:
        time.sleep(min(1.0, duration / 3))
        if pids:
            os.kill(pids[0], signal.SIGKILL)
            killed.append(pids[0])

    th = threading.Thread(target=killer)
    th.start()
    res = wrk(port, 16, duration, kind)
    th.join(30)
    return {"during": res, "killed_pid": killed[0] if killed else None}


def run_floor(kinds: list[str], concs: list[int], duration: float, workers: int) -> dict[str, Any]:
    out: dict[str, Any] = {"framework": f"floor-{workers}w", "rows": []}
    for kind in kinds:
        port = free_port()
        proc = subprocess.Popen(
            [sys.executable, __file__, "--floor-server", kind, str(port), str(workers)]
        )
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    time.sleep(0.05)
            wrk(port, 8, 1.0, kind)
            for c in concs:
                out["rows"].append({"model": kind, "replicas": 1, **wrk(port, c, duration, kind)})
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(30)
    return out


# ---------------------------------------------------------------------- orchestration
def spawn(python: str, args: list[str], timeout: float) -> dict[str, Any] | None:
    fd, path = tempfile.mkstemp(suffix=".json", prefix="serve-bench-")
    os.close(fd)
    try:
        proc = subprocess.run(
            [python, __file__, *args, "--out", path],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if proc.returncode != 0:
            sys.stderr.write(f"{args[:2]} exited {proc.returncode}:\n{proc.stderr[-3000:]}\n")
            return None
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    finally:
        os.unlink(path)


def quick() -> dict[str, Any]:
    rt = spawn(
        RTML_PY if os.path.exists(RTML_PY) else sys.executable,
        [
            "--worker",
            "rtml",
            "--kinds",
            "noop",
            "--replicas",
            "1",
            "--conc",
            "1,64",
            "--duration",
            "3",
            "--pairs",
            "3",
            "--window",
            "2",
            "--kill",
            "4",
        ],
        150,
    )
    fl = spawn(
        sys.executable,
        ["--worker", "floor", "--kinds", "noop", "--conc", "1,64", "--duration", "3"],
        60,
    )

    def row(doc: dict | None, c: int) -> dict:
        return next((r for r in (doc or {}).get("rows", []) if r["concurrency"] == c), {})

    ev = (rt or {}).get("events", {})
    modes = ev.get("changes_noop", {}).get("modes", {})
    return {
        "qps_c64": row(rt, 64).get("qps"),
        "floor_qps_c64": row(fl, 64).get("qps"),
        "p50_ms_c1": row(rt, 1).get("p50_ms"),
        "p99_ms_c1": row(rt, 1).get("p99_ms"),
        "swap_failed": modes.get("config", {}).get("failed"),
        "kill_failed": ev.get("kill_noop", {}).get("during", {}).get("failed"),
        "rollback_failed": modes.get("rollback", {}).get("failed"),
        "swap_p99_ratio": modes.get("config", {}).get("median_p99_ratio"),
        "rollback_p99_ratio": modes.get("rollback", {}).get("median_p99_ratio"),
    }


def full(args: argparse.Namespace) -> dict[str, Any]:
    from _report import machine  # bench/ is on sys.path when run as a script

    common = [
        "--kinds",
        "noop,river",
        "--replicas",
        "1,2",
        "--conc",
        "1,16,64",
        "--duration",
        str(args.duration),
        "--pairs",
        "5",
        "--window",
        "2",
        "--kill",
        "6",
        "--code-swaps",
    ]
    only = set(args.frameworks.split(","))
    docs = []
    if "rtml" in only:
        docs.append(
            spawn(
                RTML_PY if os.path.exists(RTML_PY) else sys.executable,
                ["--worker", "rtml", *common],
                900,
            )
        )
    if "floor" in only:
        for workers in (1, os.cpu_count() or 1):
            docs.append(
                spawn(
                    sys.executable,
                    [
                        "--worker",
                        "floor",
                        "--kinds",
                        "noop,river",
                        "--conc",
                        "1,16,64",
                        "--duration",
                        str(args.duration),
                        "--floor-workers",
                        str(workers),
                    ],
                    300,
                )
            )
    if "ray" in only and os.path.exists(PEERS_PY):
        docs.append(spawn(PEERS_PY, ["--worker", "ray", *common], 1200))
    fresh = [d for d in docs if d]
    kept: list[dict] = []
    if only != {"rtml", "floor", "ray"} and os.path.exists(args.json):
        # A partial run replaces its frameworks in the existing results and keeps the rest.
        with open(args.json, encoding="utf-8") as f:
            names = {d["framework"] for d in fresh}
            kept = [d for d in json.load(f)["frameworks"] if d["framework"] not in names]
    return {"machine": machine(), "frameworks": kept + fresh}


def print_table(doc: dict[str, Any]) -> None:
    print(
        f"{'framework':<8} {'model':<6} {'repl':>4} {'conc':>4} {'req/s':>9} {'p50 ms':>8} "
        f"{'p99 ms':>8} {'failed':>6}"
    )
    for fw in doc["frameworks"]:
        for r in fw["rows"]:
            print(
                f"{fw['framework']:<8} {r['model']:<6} {r['replicas']:>4} "
                f"{r['concurrency']:>4} {r['qps']:>9,.0f} {r['p50_ms'] or 0:>8.3f} "
                f"{r['p99_ms'] or 0:>8.3f} {r['failed']:>6}"
            )
    for fw in doc["frameworks"]:
        for name, ev in fw.get("events", {}).items():
            if "modes" in ev:
                for mode, o in ev["modes"].items():
                    calls = o["call_s"]
                    span = f"{min(calls)}-{max(calls)}" if calls else "-"
                    print(
                        f"{fw['framework']:<8} {name:<14} {mode:<8} {o['requests']:>7} "
                        f"requests, {o['failed']} failed, p99/steady median "
                        f"{o['median_p99_ratio']} of {o['ratios']}; serve.run {span} s"
                    )
                continue
            d = ev["during"]
            print(
                f"{fw['framework']:<8} {name:<14} {d['requests']:>7} requests, "
                f"{d['failed']} failed, {d['qps']:,.0f} req/s, p99 {d['p99_ms']} ms"
            )


def chart(doc: dict[str, Any], path: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("no chart: matplotlib is not installed (run with bench/.peers-venv/bin/python)")
        return
    fig, axes = plt.subplots(1, 2, figsize=(13, 5))
    for ax, kind in zip(axes, ("noop", "river"), strict=True):
        labels: list[str] = []
        for fw in doc["frameworks"]:
            for n in (1, 2):
                rows = [r for r in fw["rows"] if r["model"] == kind and r["replicas"] == n]
                if not rows:
                    continue
                label = (
                    fw["framework"]
                    if fw["framework"].startswith("floor")
                    else f"{fw['framework']} ({n} replica{'s' if n > 1 else ''})"
                )
                labels.append(label)
                ax.plot(
                    [r["concurrency"] for r in rows],
                    [r["qps"] for r in rows],
                    marker="o",
                    label=label,
                )
        ax.set_xscale("log", base=2)
        ax.set_xlabel("concurrent clients (wrk, keep-alive)")
        ax.set_ylabel("requests/s (higher is better)")
        ax.set_title(f"{kind} deployment, 2 CPUs shared with the load generator", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="rtml and the floor only, < 1 min")
    p.add_argument("--json", default=os.path.join(HERE, "results", "serve.json"))
    p.add_argument("--duration", type=float, default=5.0, help="seconds per load run")
    p.add_argument(
        "--frameworks",
        default="rtml,floor,ray",
        help="which to run (a partial run keeps the others' results in --json)",
    )
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    p.add_argument("--kinds", default="noop", help=argparse.SUPPRESS)
    p.add_argument("--replicas", default="1", help=argparse.SUPPRESS)
    p.add_argument("--conc", default="1,16,64", help=argparse.SUPPRESS)
    p.add_argument("--pairs", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--window", type=float, default=2.0, help=argparse.SUPPRESS)
    p.add_argument("--kill", type=float, default=0.0, help=argparse.SUPPRESS)
    p.add_argument("--code-swaps", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--floor-server", nargs=3, help=argparse.SUPPRESS)
    p.add_argument("--floor-workers", type=int, default=os.cpu_count() or 1, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.floor_server:
        import uvicorn

        kind, port, workers = args.floor_server
        os.environ["SERVE_BENCH_KIND"] = kind
        uvicorn.run(
            "serve:floor_factory",
            factory=True,
            app_dir=HERE,
            host="127.0.0.1",
            port=int(port),
            workers=int(workers),
            log_level="warning",
            access_log=False,
            http="h11",
        )
        return
    if args.worker:
        kinds = args.kinds.split(",")
        concs = [int(c) for c in args.conc.split(",")]
        if args.worker == "floor":
            doc = run_floor(kinds, concs, args.duration, args.floor_workers)
        else:
            doc = run_framework(
                args.worker,
                kinds,
                [int(r) for r in args.replicas.split(",")],
                concs,
                args.duration,
                args.pairs,
                args.window,
                args.kill,
                args.code_swaps,
            )
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(doc, f)
        return
    if subprocess.run(["which", "wrk"], capture_output=True, check=False).returncode != 0:
        sys.exit("bench/serve.py needs wrk: sudo apt-get install wrk")
    if args.quick:
        print(json.dumps(quick()))
        return
    doc = full(args)
    sys.path.insert(0, HERE)
    from _report import write_json_atomic

    os.makedirs(os.path.dirname(args.json), exist_ok=True)
    write_json_atomic(args.json, doc)
    print_table(doc)
    chart(doc, os.path.splitext(args.json)[0] + ".png")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
