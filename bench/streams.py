"""Streams side by side: rtml.stream, the same dataflow on Ray, Bytewax 0.21, and a plain
single-process Python loop (the floor of per-event cost).

Workloads (issue 13): (a) parse -> filter -> map over small JSON events; (b) keyed tumbling-
window count over 100k keys; (c) stream-table as-of join against a 1M-row table; (d) end-to-end
latency at a fixed 10k events/s, from the append to a Redis stream to the sink; (e) recovery:
kill one operator actor mid-run, time until output resumes, lost and duplicated outputs with
an exactly-once sink.

    .venv/bin/python bench/streams.py --quick                 # rtml and the floor, < 1 min
    bash bench/setup_peers.sh                                 # once: Ray, Bytewax
    bench/.peers-venv/bin/python bench/streams.py --json bench/results/streams.json

Each (framework, workload) runs in a fresh subprocess; throughput is events over the wall time
from starting the dataflow to its last output (start-up included; table loading for (c) is
timed apart and excluded). Nothing here asserts a number.
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

KINDS = ("view", "click", "cart", "buy")
WARMUP_S = 1.0


def event_json(i: int) -> str:
    return f'{{"user": {i % 1000}, "item": {i % 97}, "kind": "{KINDS[i % 4]}", "v": {i}}}'


def parse_filter_map(s: str):
    return s


def _parse(s):
    return json.loads(s)


def _is_click(e):
    return e["kind"] == "click"


def _project(e):
    return (e["user"], e["item"], e["v"])


def window_event(i: int, keys: int, n: int) -> tuple[int, float]:
    return (i * 7919) % keys, i * 40.0 / n  # 40 s of event time: 4 windows of 10 s


def table_rows(rows: int, keys: int):
    versions = rows // keys
    for k in range(keys):
        for v in range(versions):
            yield {"user": k, "t": float(v * 10), "score": k * 10 + v}


# -- the floor: one process, plain Python ---------------------------------------------------


def floor(workload: str, n: int, keys: int, rows: int) -> dict:
    t0 = time.perf_counter()
    if workload == "a":
        out = 0
        for i in range(n):
            e = json.loads(event_json(i))
            if e["kind"] == "click":
                out += len((e["user"], e["item"], e["v"]))
        return {"events_per_s": n / (time.perf_counter() - t0)}
    if workload == "b":
        counts: dict = {}
        for i in range(n):
            k, ts = window_event(i, keys, n)
            w = (k, int(ts // 10))
            counts[w] = counts.get(w, 0) + 1
        return {"events_per_s": n / (time.perf_counter() - t0), "windows": len(counts)}
    if workload == "c":
        t_load = time.perf_counter()
        index: dict = {}
        for r in table_rows(rows, keys):
            e = index.setdefault(r["user"], ([], []))
            e[0].append(r["t"])
            e[1].append(r)
        load_s = time.perf_counter() - t_load
        t0 = time.perf_counter()
        hits = 0
        for i in range(n):
            k, ts = (i * 7919) % keys, (i % 1000) / 10.0
            times, rs_ = index[k]
            j = bisect.bisect_right(times, ts)
            hits += j > 0 and rs_[j - 1]["score"] >= 0
        return {"events_per_s": n / (time.perf_counter() - t0), "table_load_s": load_s}
    raise ValueError(workload)


# -- rtml.stream, on rtml or on Ray ---------------------------------------------------------


def stream_run(
    engine_name: str, workload: str, n: int, keys: int, rows: int, redis_address: str | None
) -> dict:
    if engine_name == "ray":
        import ray as eng

        eng.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    else:
        import rtml as eng

        eng.init(num_cpus=2)
    from rtml import stream as rs

    try:
        if workload in ("a", "b", "c"):
            return _throughput(rs, engine_name, workload, n, keys, rows)
        if workload == "d":
            return _latency(rs, engine_name, n, redis_address)
        if workload == "e":
            return _recovery(rs, eng, engine_name, n)
        raise ValueError(workload)
    finally:
        eng.shutdown()


def _throughput(rs, engine, workload, n, keys, rows):
    flow = rs.Dataflow(f"bench-{workload}")
    half = n // 2
    if workload == "a":
        src = rs.IterableSource(
            lambda p: map(event_json, range(p * half, (p + 1) * half)), partitions=2
        )
        (
            flow.source(src)
            .map(_parse)
            .filter(_is_click)
            .map(_project)
            .sink(rs.CallableSink(_drop, batch=True))
        )
    elif workload == "b":
        src = rs.IterableSource(
            lambda p: (window_event(i, keys, n) for i in range(p * half, (p + 1) * half)),
            partitions=2,
        )
        (
            flow.source(src)
            .with_event_time(_second, max_out_of_order=1.0)
            .key_by(_first)
            .window(rs.Tumbling(seconds=10))
            .count()
            .sink(rs.CallableSink(_drop, batch=True))
        )
    else:
        table = rs.Table.from_rows(list(table_rows(rows, keys)), key="user", time="t")
        src = rs.IterableSource(
            lambda p: (
                ((i * 7919) % keys, (i % 1000) / 10.0) for i in range(p * half, (p + 1) * half)
            ),
            partitions=2,
        )
        (
            flow.source(src)
            .with_event_time(_second, max_out_of_order=100.0)
            .key_by(_first)
            .join_as_of(table)
            .map(_score)
            .sink(rs.CallableSink(_drop, batch=True))
        )
    t_start = time.perf_counter()
    run = flow.run(parallelism=2, checkpoint_every=None, max_batch=2048, engine=engine)
    t_ready = time.perf_counter()  # join tables are loaded and sharded in run()
    run.wait(timeout=600)
    t_end = time.perf_counter()
    out = {"events_per_s": n / (t_end - t_ready), "wall_s": t_end - t_start}
    if workload == "c":
        out["table_load_s"] = t_ready - t_start
    return out


def _drop(batch):
    return None


def _first(e):
    return e[0]


def _second(e):
    return e[1]


def _score(pair):
    return pair[1]["score"] if pair[1] else None


class _Latencies:
    def __init__(self):
        self.lat = []

    def add(self, records):
        now = time.time()
        self.lat.extend((float(r["t"]), now - float(r["t"])) for r in records)

    def get(self):
        return self.lat


def _latency(rs, engine, n, redis_address):
    import redis

    host, port = redis_address.split(":")
    r = redis.Redis(host=host, port=int(port))
    key = f"lat-{engine}-{os.getpid()}"
    r.delete(key)
    eng = __import__(engine)
    lat = eng.remote(num_cpus=0)(_Latencies).remote()
    flow = rs.Dataflow(f"bench-d-{os.getpid()}")
    (
        flow.source(rs.RedisStreamSource(key, redis_address, start="0"))
        .map(_as_event)
        .sink(rs.ActorSink(lat, "add", engine=engine))
    )
    run = flow.run(parallelism=1, checkpoint_every=1.0, engine=engine)
    time.sleep(1.0)  # actors up and reading before the clock starts
    rate = 10_000
    # The producer is its own process, as an application appending events would be (in the
    # driver it would share a GIL with the embedded node).
    producer = subprocess.Popen(
        [sys.executable, __file__, "--produce", redis_address, key, str(n), str(rate)]
    )
    producer.wait(timeout=n / rate + 60)
    deadline = time.time() + 30
    values = []
    while time.time() < deadline:
        values = eng.get(lat.get.remote(), timeout=30)
        if len(values) >= n:
            break
        time.sleep(0.05)
    run.stop(timeout=60)
    r.delete(key)
    r.close()
    # Steady state: events appended after the first second (the first second includes the
    # consumer's and workers' warm-up); the whole run is reported too.
    start = min((t for t, _ in values), default=0.0)
    steady = sorted(lat for t, lat in values if t >= start + WARMUP_S)
    every = sorted(lat for _, lat in values)

    def pick(xs, q):
        return xs[min(len(xs) - 1, int(q * len(xs)))] * 1000 if xs else float("nan")

    return {
        "events_per_s": rate,
        "received": len(values),
        "p50_ms": pick(steady, 0.5),
        "p99_ms": pick(steady, 0.99),
        "max_ms": pick(steady, 1.0),
        "p99_all_ms": pick(every, 0.99),
        "warmup_s": WARMUP_S,
    }


def produce(address: str, key: str, n: int, rate: int) -> None:
    import redis

    host, port = address.split(":")
    r = redis.Redis(host=host, port=int(port))
    t0 = time.time()
    sent = 0
    pipe = r.pipeline(transaction=False)
    while sent < n:
        due = min(int((time.time() - t0) * rate), n)
        while sent < due:
            pipe.xadd(key, {"t": repr(time.time()), "i": sent})
            sent += 1
        pipe.execute()
        time.sleep(0.0002)
    r.close()


def _as_event(rec):
    return rec


def _running(n, x):
    return ((n or 0) + 1, (x, (n or 0) + 1))


def _mod5(x):
    return x % 5


def _recovery(rs, eng, engine, n):
    sink = rs.CollectSink(exactly_once=True, engine=engine)
    flow = rs.Dataflow(f"bench-e-{os.getpid()}")
    (
        flow.source(rs.IterableSource(list(range(n)), partitions=2, rate=n / 8))
        .key_by(_mod5)
        .stateful_map(_running)
        .sink(sink)
    )
    run = flow.run(parallelism=2, checkpoint_every=0.2, engine=engine)
    deadline = time.time() + 30
    while (run.last_checkpoint < 5) and time.time() < deadline:
        time.sleep(0.02)
    before = sink.count()
    t_kill = time.perf_counter()
    eng.kill(run._actors[1][0])  # a keyed operator actor
    while run.restarts == 0 and time.perf_counter() - t_kill < 60:
        time.sleep(0.005)
    # Output resumes when records beyond what was written before the kill (and beyond what
    # the restored checkpoint itself re-delivers) arrive.
    before = max(before, sink.count())
    while sink.count() <= before and time.perf_counter() - t_kill < 60:
        time.sleep(0.005)
    resume_s = time.perf_counter() - t_kill
    run.wait(timeout=120)
    values = [x for x, _ in sink.items()]
    seen = set(values)
    return {
        "events_per_s": n / 8,
        "resume_s": resume_s,
        "lost": n - len(seen),
        "duplicated": len(values) - len(seen),
        "restarts": run.restarts,
    }


# -- Bytewax 0.21 ---------------------------------------------------------------------------


def bytewax_run(workload: str, n: int, keys: int, rows: int, procs: int) -> dict:
    """Runs `procs` Bytewax processes (one worker each) as a cluster; returns the slowest."""
    import socket

    ports = []
    for _ in range(procs):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    addrs = ",".join(f"127.0.0.1:{p}" for p in ports)
    t0 = time.perf_counter()
    ps = [
        subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--bytewax-proc",
                workload,
                str(n),
                str(keys),
                str(rows),
                addrs,
                str(i),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(procs)
    ]
    outs = [json.loads(p.communicate(timeout=900)[0].strip().splitlines()[-1]) for p in ps]
    wall = time.perf_counter() - t0
    load = max(o.get("table_load_s", 0.0) for o in outs)
    return {
        "events_per_s": n / (wall - load),
        "wall_s": wall,
        **({"table_load_s": load} if workload == "c" else {}),
    }


def bytewax_proc(workload, n, keys, rows, addrs, proc_id) -> None:
    from datetime import datetime, timedelta, timezone

    import bytewax.operators as op
    from bytewax.dataflow import Dataflow
    from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
    from bytewax.outputs import DynamicSink, StatelessSinkPartition
    from bytewax.testing import cluster_main

    half = n // 2

    class Part(StatefulSourcePartition):
        def __init__(self, p):
            self.i, self.end = p * half, (p + 1) * half

        def next_batch(self):
            if self.i >= self.end:
                raise StopIteration()
            hi = min(self.i + 2048, self.end)
            batch = [make(i) for i in range(self.i, hi)]
            self.i = hi
            return batch

        def snapshot(self):
            return self.i

    class Src(FixedPartitionedSource):
        def list_parts(self):
            return ["0", "1"]

        def build_part(self, step_id, for_part, resume_state):
            return Part(int(for_part))

    class Drop(StatelessSinkPartition):
        def write_batch(self, items):
            return None

    class DropSink(DynamicSink):
        def build(self, step_id, worker_index, worker_count):
            return Drop()

    epoch0 = datetime(2020, 1, 1, tzinfo=timezone.utc)
    flow = Dataflow(f"bench-{workload}")
    load_s = 0.0
    if workload == "a":
        make = event_json
        s = op.input("in", flow, Src())
        s = op.map("parse", s, json.loads)
        s = op.filter("clicks", s, lambda e: e["kind"] == "click")
        s = op.map("project", s, lambda e: (e["user"], e["item"], e["v"]))
    elif workload == "b":
        import bytewax.operators.windowing as win

        def make(i):
            k, ts = window_event(i, keys, n)
            return (str(k), epoch0 + timedelta(seconds=ts))

        s = op.input("in", flow, Src())
        clock = win.EventClock(lambda e: e[1], wait_for_system_duration=timedelta(seconds=1))
        windower = win.TumblingWindower(length=timedelta(seconds=10), align_to=epoch0)
        s = win.count_window("count", s, clock, windower, lambda e: e[0]).down
    else:
        t = time.perf_counter()
        index: dict = {}
        for r in table_rows(rows, keys):
            e = index.setdefault(r["user"], ([], []))
            e[0].append(r["t"])
            e[1].append(r)
        load_s = time.perf_counter() - t

        def make(i):
            return ((i * 7919) % keys, (i % 1000) / 10.0)

        def look(kv):
            k, ev = kv
            times, rs_ = index[int(k)]
            j = bisect.bisect_right(times, ev[1])
            return (ev, rs_[j - 1]["score"] if j else None)

        s = op.input("in", flow, Src())
        s = op.key_on("key", s, lambda e: str(e[0]))
        s = op.map("asof", s, look)
    op.output("out", s, DropSink())
    cluster_main(flow, addrs.split(","), proc_id)
    print(json.dumps({"table_load_s": load_s}))


# -- orchestration --------------------------------------------------------------------------

SIZES = {
    "quick": {
        "a": 400_000,
        "b": 400_000,
        "c": 300_000,
        "d": 20_000,
        "e": 8_000,
        "keys": 100_000,
        "rows": 1_000_000,
    },
    "full": {
        "a": 2_000_000,
        "b": 1_000_000,
        "c": 1_000_000,
        "d": 50_000,
        "e": 16_000,
        "keys": 100_000,
        "rows": 1_000_000,
    },
}


def _sub(args: list[str], python: str = sys.executable, timeout: float = 900) -> dict:
    out = subprocess.run([python, __file__, *args], capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        return {"error": (out.stderr.strip().splitlines() or ["?"])[-1][:300]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="rtml and the floor, small sizes")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--chart", help="write a PNG bar chart here (needs matplotlib)")
    ap.add_argument("--frameworks", nargs="*", default=None)
    ap.add_argument("--workloads", nargs="*", default=list("abcde"))
    ap.add_argument("--worker", nargs=2, metavar=("FRAMEWORK", "WORKLOAD"), help=argparse.SUPPRESS)
    ap.add_argument("--bytewax-proc", nargs=6, help=argparse.SUPPRESS)
    ap.add_argument("--redis", help=argparse.SUPPRESS)
    ap.add_argument("--produce", nargs=4, help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--size", default="full", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.produce:
        addr, key, n, rate = a.produce
        produce(addr, key, int(n), int(rate))
        return
    if a.bytewax_proc:
        w, n, k, r, addrs, pid = a.bytewax_proc
        bytewax_proc(w, int(n), int(k), int(r), addrs, int(pid))
        return
    if a.worker:
        fw, wl = a.worker
        sz = SIZES[a.size]
        if fw == "floor":
            res = floor(wl, sz[wl], sz["keys"], sz["rows"])
        elif fw == "bytewax":
            res = bytewax_run(wl, sz[wl], sz["keys"], sz["rows"], 2)
        else:
            res = stream_run(fw, wl, sz[wl], sz["keys"], sz["rows"], a.redis)
        print(json.dumps(res))
        return

    size = "quick" if a.quick else "full"
    frameworks = a.frameworks or (
        ["rtml", "floor"] if a.quick else ["rtml", "ray", "bytewax", "floor"]
    )
    redis = None
    if "d" in a.workloads and shutil.which("redis-server"):
        sys.path.insert(0, os.path.join(HERE, "..", "src"))
        import tempfile

        from rtml._control._local_redis import LocalRedis  # bench-only helper

        redis_dir = tempfile.mkdtemp(prefix="rtml-bench-redis-")
        redis = LocalRedis(redis_dir).start()
    results: dict = {}
    try:
        for wl in a.workloads:
            for fw in frameworks:
                if fw == "floor" and wl in ("d", "e"):
                    continue
                if fw == "bytewax" and wl in ("d", "e"):
                    continue
                if wl == "d" and redis is None:
                    results.setdefault(wl, {})[fw] = {"error": "redis-server not installed"}
                    continue
                args = ["--worker", fw, wl, "--size", size]
                if redis is not None:
                    args += ["--redis", redis.address]
                results.setdefault(wl, {})[fw] = _sub(args)
                print(f"  ({wl}) {fw:8s} {results[wl][fw]}", file=sys.stderr)
    finally:
        if redis is not None:
            redis.stop()
            shutil.rmtree(redis_dir, ignore_errors=True)
    summary = _summary(results, size)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"summary": summary, "results": results}, f, indent=1)
    if a.chart:
        _chart(results, a.chart)
    _table(results)
    print(json.dumps(summary))


def _summary(results: dict, size: str) -> dict:
    out: dict = {"size": size}
    for wl, per in results.items():
        r = per.get("rtml", {})
        row = {"events_per_s": r.get("events_per_s")}
        if "floor" in per:
            row["floor_events_per_s"] = per["floor"].get("events_per_s")
        for peer in ("ray", "bytewax"):
            if peer in per and per[peer].get("events_per_s") and r.get("events_per_s"):
                row[f"x_{peer}"] = r["events_per_s"] / per[peer]["events_per_s"]
        for k in ("p50_ms", "p99_ms", "resume_s", "lost", "duplicated", "table_load_s"):
            if k in r:
                row[k] = r[k]
        out[wl] = row
    return out


def _table(results: dict) -> None:
    names = {
        "a": "parse/filter/map",
        "b": "window count 100k keys",
        "c": "as-of join 1M rows",
        "d": "latency at 10k/s",
        "e": "recovery",
    }
    for wl, per in results.items():
        cells = []
        for fw, r in per.items():
            if "error" in r:
                cells.append(f"{fw}: error ({r['error'][:60]})")
            elif wl == "d":
                cells.append(f"{fw}: p50 {r['p50_ms']:.2f} ms p99 {r['p99_ms']:.2f} ms")
            elif wl == "e":
                cells.append(
                    f"{fw}: resumed in {r['resume_s']:.2f} s, lost {r['lost']}, "
                    f"duplicated {r['duplicated']}"
                )
            else:
                cells.append(f"{fw}: {r['events_per_s']:,.0f}/s")
        print(f"({wl}) {names[wl]:24s} " + " | ".join(cells), file=sys.stderr)


def _chart(results: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    wls = [w for w in "abc" if w in results]
    fws = sorted({fw for w in wls for fw in results[w]})
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.8 / max(len(fws), 1)
    for j, fw in enumerate(fws):
        vals = [results[w].get(fw, {}).get("events_per_s") or 0 for w in wls]
        ax.bar([i + j * width for i in range(len(wls))], vals, width, label=fw)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(wls))])
    ax.set_xticklabels(["(a) parse/filter/map", "(b) window count", "(c) as-of join"][: len(wls)])
    ax.set_ylabel("events/s (2 cores, parallelism 2)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
