"""Fault tolerance (issue 6): what failures cost a running workload, on a local cluster.

    .venv/bin/python bench/fault_tolerance.py --json bench/results/fault_tolerance.json  # ~3 min
    .venv/bin/python bench/fault_tolerance.py --quick                       # ~1 min smoke run
    .venv/bin/python bench/fault_tolerance.py --only timeline --png /tmp/ft.png
    bench/.peers-venv/bin/python bench/fault_tolerance.py --replot bench/results/fault_tolerance.json \\
        --png /tmp/ft.png                     # draw the figure from a JSON (needs matplotlib)

Every cluster is ``rtml.testing.Cluster``: a control plane, a head node (``num_cpus=1``, the
driver's: this process) and two worker nodes (``num_cpus=1`` each), ``heartbeat_timeout=2.0``,
all on this machine's 2 cores. Sections (``--only``, repeatable):

  chaos      ``rtml._chaos.run`` (a random layered DAG of ~1,800 10 ms tasks and actor calls,
             values checked against a serial run) undisturbed and with every fault kind injected
             (a worker, an actor, a whole worker node replaced, the control plane restarted;
             8 faults about 0.5 s apart). Both on a Redis-backed control plane, a fresh cluster
             per run, alternating which goes first, the same seed within a pair. Tasks/s.
  recovery   objects made on a worker node (soft node affinity) and held only there:
             ``independent`` (N tasks of one 1 MiB array each) or ``chains`` (chains whose
             intermediate results are freed, so only lineage knows how to make the last one).
             ``rtml.wait`` until done (no pull), SIGKILL the node, then time ``rtml.get`` of the
             first object (rebuilt on a live node) and of all of them. ``frozen``: as
             ``independent`` but the node is SIGSTOPped (a machine that stops answering: its
             connections stay open, so only the missed heartbeats tell; SIGKILLed afterwards).
             A fresh victim node per repetition (with a worker started, as every node). The
             baseline is ``rtml.get`` of a same-size object on a live worker.
  timeline   the Ray paper's Fig. 11a analogue: chains of 100 ms steps (1 MiB results, freed
             once consumed), a fixed number in flight (a new chain starts when one ends); a
             worker node is SIGKILLed mid-run and a new node added a few seconds later (twice
             in a full run). Per 0.5 s: chain steps completed (first completions, as the driver
             sees them through ``rtml.wait``), tasks re-executed to rebuild lost objects (task
             events: a FINISHED event of a task after the driver had seen it done) and the head
             node's ``reconstructed`` counter. Per kill: objects whose only copy was on the dead
             node (``list_objects`` just before the SIGKILL), tasks re-executed, their ratio.
             After ``duration`` no new chain starts; the run ends when the last one is done.
  actor      ``bench/actor_checkpoint.py`` in a subprocess (its own embedded runtime): calls
             replayed after an actor SIGKILL with and without checkpoints (``--quick`` there too).

Nothing is asserted; wrong values and errors are reported. Every wait has a timeout and every
cluster is shut down in a ``finally``. The JSON keeps all samples, the load average around each
section (other sessions share the machine) and the git state.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "src"))

from _report import machine, write_json_atomic  # noqa: E402

SECTIONS = ("chaos", "recovery", "timeline", "actor")
VARIANTS = ("independent", "chains", "frozen")  # recovery workloads
N = 1 << 17  # float64s: 1 MiB, kept in the producing node's store (not inline)
BUCKET = 0.5  # seconds per timeline bucket


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _uptime() -> str:
    try:
        return subprocess.run(
            ["uptime"], capture_output=True, text=True, timeout=5, check=False
        ).stdout.strip()
    except OSError:
        return ""


def _median(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


# ---------------------------------------------------------------------- workload
# (defined lazily: importing rtml is left to the sections, so that --replot needs only
# matplotlib and the JSON)
_FNS: dict[str, Any] = {}


def fns() -> dict[str, Any]:
    if _FNS:
        return _FNS
    import numpy as np

    import rtml

    @rtml.remote
    def produce(v: float, ms: float) -> Any:
        if ms:
            time.sleep(ms / 1000)
        return np.full(N, float(v))

    @rtml.remote
    def step(a: Any, ms: float) -> Any:
        if ms:
            time.sleep(ms / 1000)
        return a + 1

    @rtml.remote
    def finish(a: Any, ms: float) -> tuple[float, float]:
        if ms:
            time.sleep(ms / 1000)
        return float(a[0]), float(a[-1])

    @rtml.remote
    def node_id() -> str:
        return rtml.get_runtime_context().get_node_id()

    _FNS.update(produce=produce, step=step, finish=finish, node_id=node_id)
    return _FNS


@contextlib.contextmanager
def local_cluster(workers: int = 2, redis: str | None = None) -> Iterator[Any]:
    from rtml.testing import Cluster

    c = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 1}, heartbeat_timeout=2.0, redis=redis
    )
    try:
        for _ in range(workers):
            c.add_node(num_cpus=1)
        c.connect()
        yield c
    finally:
        c.shutdown()


def on(node: Any) -> Any:
    from rtml.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return NodeAffinitySchedulingStrategy(node.node_id, soft=True)


def warm_up(c: Any, *nodes: Any) -> None:
    """A worker started and the functions imported on ``nodes`` (default: every node),
    outside any timing."""
    import rtml

    f = fns()
    refs = []
    for n in nodes or c.list_all_nodes():
        x = f["produce"].options(scheduling_strategy=on(n)).remote(0, 0)
        refs.append(
            f["finish"]
            .options(scheduling_strategy=on(n))
            .remote(f["step"].options(scheduling_strategy=on(n)).remote(x, 0), 0)
        )
    rtml.get(refs, timeout=60)


def reconstructed(gcs: Any) -> int:
    """Tasks re-run to rebuild lost objects, summed over the live nodes (the heartbeat load
    carries each node's cluster stats; a dead node's load is gone)."""
    return sum(int(n.load.get("reconstructed", 0)) for n in gcs.list_nodes() if n.alive)


def only_copies_on(node_id: str) -> set[int]:
    """Objects whose bytes are in ``node_id``'s store and in no other node's."""
    from rtml.util.state import list_objects

    rows = list_objects(limit=1_000_000, detail=True)
    held = {"SHARED_MEMORY", "SPILLED"}
    there = {
        int(r["object_id"], 16) for r in rows if r["node_id"] == node_id and r["where"] in held
    }
    elsewhere = {
        int(r["object_id"], 16)
        for r in rows
        if r["node_id"] != node_id and r["where"] in held | {"INLINE"}
    }
    return there - elsewhere


def task_of(oid: int) -> int:
    from rtml._protocol import _ids

    return int(_ids.task_of(oid))


# ---------------------------------------------------------------------- 1. chaos
def run_chaos(a: argparse.Namespace) -> dict[str, Any]:
    from rtml import _chaos
    from rtml._control._local_redis import LocalRedis

    runs: list[dict[str, Any]] = []
    for p in range(a.pairs):
        seed = a.seed + p
        order = ("baseline", "chaos") if p % 2 == 0 else ("chaos", "baseline")
        for kind in order:
            faults = [] if kind == "baseline" else list(_chaos.FAULTS)
            row: dict[str, Any] = {
                "pair": p,
                "seed": seed,
                "kind": kind,
                "load_before": os.getloadavg(),
            }
            t = time.perf_counter()
            try:
                with (
                    tempfile.TemporaryDirectory(prefix="rtml-ft-redis-") as d,
                    LocalRedis(d) as r,
                    local_cluster(redis=r.address) as c,
                ):
                    rep = _chaos.run(
                        c, seed, faults=faults, n_faults=a.n_faults, timeout=a.chaos_timeout
                    )
                row.update(
                    tasks=rep.tasks,
                    seconds=rep.seconds,
                    throughput=rep.throughput,
                    wrong=rep.wrong,
                    injector_errors=rep.errors,
                    faults=[
                        {
                            "at": f.at,
                            "kind": f.kind,
                            "detail": f.detail,
                            "took": f.took,
                            "landed": f.at < rep.seconds,
                        }
                        for f in rep.faults
                    ],
                )
            except Exception as e:  # (reported; the next run goes on)
                row["error"] = f"{type(e).__name__}: {e}"
            row["wall_s"] = time.perf_counter() - t
            log(
                f"chaos pair {p} {kind}: "
                + (
                    f"{row['throughput']:.0f} tasks/s in {row['seconds']:.2f} s, "
                    f"{len(row['faults'])} faults, {len(row['wrong'])} wrong"
                    if "error" not in row
                    else row["error"]
                )
            )
            runs.append(row)
    ok = {
        k: [r["throughput"] for r in runs if r["kind"] == k and "error" not in r]
        for k in ("baseline", "chaos")
    }
    pairs = []
    for p in range(a.pairs):
        b = [r for r in runs if r["pair"] == p and r["kind"] == "baseline" and "error" not in r]
        c = [r for r in runs if r["pair"] == p and r["kind"] == "chaos" and "error" not in r]
        if b and c:
            pairs.append(c[0]["throughput"] / b[0]["throughput"])
    kinds: dict[str, int] = {}
    for r in runs:
        for f in r.get("faults", []):
            if f["landed"]:
                kinds[f["kind"]] = kinds.get(f["kind"], 0) + 1
    mb, mc = _median(ok["baseline"]), _median(ok["chaos"])
    return {
        "runs": runs,
        "baseline_median": mb,
        "chaos_median": mc,
        "ratio_of_medians": mc / mb if mb and mc else None,
        "pair_ratios": pairs,
        "faults_landed_by_kind": kinds,
        "chaos_seconds_median": _median(
            [r["seconds"] for r in runs if r["kind"] == "chaos" and "error" not in r]
        ),
        "baseline_seconds_median": _median(
            [r["seconds"] for r in runs if r["kind"] == "baseline" and "error" not in r]
        ),
        "wrong_values": sum(len(r.get("wrong", [])) for r in runs),
        "errors": [r["error"] for r in runs if "error" in r],
    }


# ---------------------------------------------------------------------- 2. recovery
def _recovery_once(c: Any, variant: str, a: argparse.Namespace) -> dict[str, Any]:
    victim = c.worker_nodes[0]
    try:
        return _recovery_on(c, victim, variant, a)
    finally:
        if victim in c.worker_nodes:  # (an error left it alive, or stopped: SIGKILL works)
            c.remove_node(victim, allow_graceful=False)
        if len(c.worker_nodes) < 2:
            # The next victim, with a worker started (add_node waits until the dead node is
            # declared dead: the heartbeat timeout).
            warm_up(c, c.add_node(num_cpus=1))


def _recovery_on(c: Any, victim: Any, variant: str, a: argparse.Namespace) -> dict[str, Any]:
    import rtml

    f = fns()
    s = on(victim)
    if variant in ("independent", "frozen"):
        keep = [
            f["produce"].options(scheduling_strategy=s).remote(i, 0) for i in range(a.rec_tasks)
        ]
        expected = [float(i) for i in range(a.rec_tasks)]
    else:
        keep, expected = [], []
        for j in range(a.rec_chains):
            x = f["produce"].options(scheduling_strategy=s).remote(10 * j, 0)
            for _ in range(a.rec_length - 1):
                x = f["step"].options(scheduling_strategy=s).remote(x, 0)
            keep.append(x)  # (the intermediate refs are gone: freed once consumed)
            expected.append(float(10 * j + a.rec_length - 1))
            del x
    probe = f["produce"].options(scheduling_strategy=s).remote(-1, 0)
    ready, _ = rtml.wait([*keep, probe], num_returns=len(keep) + 1, timeout=60)
    if len(ready) != len(keep) + 1:
        raise TimeoutError(f"{variant}: only {len(ready)} of {len(keep) + 1} ready in 60 s")
    on_victim = only_copies_on(victim.node_id)
    t = time.perf_counter()
    rtml.get(probe, timeout=60)
    baseline = time.perf_counter() - t
    del probe
    lost = sum(1 for r in keep if r.id in on_victim)
    t_kill = time.perf_counter()
    if variant == "frozen":  # a machine that stops answering: found by missed heartbeats
        os.kill(victim.pid, signal.SIGSTOP)
    else:  # a process that dies: its connections close at once
        c.remove_node(victim, allow_graceful=False)
    first = rtml.get(keep[0], timeout=60)
    t_first = time.perf_counter() - t_kill
    values = rtml.get(keep, timeout=60)
    t_all = time.perf_counter() - t_kill
    wrong = sum(
        1
        for v, e in zip(values, expected, strict=True)
        if not (v.shape == (N,) and float(v[0]) == e and float(v[-1]) == e)
    )
    wrong += int(float(first[0]) != expected[0])
    del values, first, keep
    return {
        "variant": variant,
        "first_ms": t_first * 1e3,
        "all_ms": t_all * 1e3,
        "baseline_get_ms": baseline * 1e3,
        "objects": len(expected),
        "held_only_on_victim": lost,
        "wrong": wrong,
    }


def run_recovery(a: argparse.Namespace) -> dict[str, Any]:
    from rtml._control._client import ControlClient

    rows: list[dict[str, Any]] = []
    errors: list[str] = []
    with local_cluster() as c, ControlClient(c.address, c.token) as gcs:
        warm_up(c)
        time.sleep(0.6)  # (a heartbeat, for the counter's starting value)
        before = reconstructed(gcs)
        for rep in range(a.reps):
            for variant in VARIANTS[rep % 3 :] + VARIANTS[: rep % 3]:
                try:
                    row = _recovery_once(c, variant, a)
                except Exception as e:  # (reported; the next repetition goes on)
                    errors.append(f"{variant} rep {rep}: {type(e).__name__}: {e}")
                    log(errors[-1])
                    continue
                now = reconstructed(gcs)  # (add_node took > a heartbeat period)
                row["re_executed"] = now - before
                before = now
                row["rep"] = rep
                rows.append(row)
                log(
                    f"recovery {variant} rep {rep}: first {row['first_ms']:.0f} ms, all "
                    f"{row['all_ms']:.0f} ms, re-executed {row['re_executed']}, "
                    f"only copy on victim {row['held_only_on_victim']}/{row['objects']}"
                )
    out: dict[str, Any] = {
        "rows": rows,
        "errors": errors,
        "args": {
            "independent_tasks": a.rec_tasks,
            "chains": a.rec_chains,
            "chain_length": a.rec_length,
            "object_bytes": N * 8,
        },
    }
    for variant in VARIANTS:
        rs = [r for r in rows if r["variant"] == variant]
        out[variant] = {
            k: _median([r[k] for r in rs])
            for k in ("first_ms", "all_ms", "baseline_get_ms", "re_executed")
        }
        out[variant]["n"] = len(rs)
        out[variant]["wrong"] = sum(r["wrong"] for r in rs)
    return out


# ---------------------------------------------------------------------- 3. timeline
class _Chain:
    def __init__(self, cid: int, refs: list[Any], start: float) -> None:
        self.cid = cid
        self.start = start
        self.left = len(refs)


def run_timeline(a: argparse.Namespace) -> dict[str, Any]:
    import rtml
    from rtml._control._client import ControlClient
    from rtml._observability import _listing

    f = fns()
    L, K = a.chain_length, a.chains
    plan = sorted([(t, "kill") for t in a.kill_at] + [(t, "add") for t in a.add_at])
    with local_cluster() as c, ControlClient(c.address, c.token) as gcs:
        warm_up(c)
        head = c.head_node.node_id
        time.sleep(0.6)
        stat0 = reconstructed(gcs)
        pending: dict[Any, tuple[_Chain, int]] = {}  # ref -> (chain, step index)
        chains: list[_Chain] = []
        first_done: dict[int, float] = {}  # task id -> when the driver saw it done
        completions: list[float] = []
        faults: list[dict[str, Any]] = []
        samples: list[tuple[float, int, int]] = []  # (t, reconstructed, nodes alive)
        wrong: list[int] = []
        errors: list[str] = []
        adders: list[threading.Thread] = []

        def start_chain() -> None:
            ch = _Chain(len(chains), [None] * L, time.monotonic() - t0)
            chains.append(ch)
            x = f["produce"].remote(100 * ch.cid, a.step_ms)
            pending[x] = (ch, 0)
            for i in range(1, L - 1):
                x = f["step"].remote(x, a.step_ms)
                pending[x] = (ch, i)
            pending[f["finish"].remote(x, a.step_ms)] = (ch, L - 1)

        def add_node(rec: dict[str, Any]) -> None:
            t = time.monotonic()
            try:
                n = c.add_node(num_cpus=1)
                rec["detail"] = f"node {n.node_id} joined"
            except Exception as e:  # (reported)
                rec["detail"] = f"add_node failed: {type(e).__name__}: {e}"
                errors.append(rec["detail"])
            rec["took"] = time.monotonic() - t

        epoch0, t0 = time.time(), time.monotonic()
        try:
            for _ in range(K):
                start_chain()
            next_sample = 0.0
            while True:
                now = time.monotonic() - t0
                if plan and now >= plan[0][0]:
                    _, kind = plan.pop(0)
                    rec: dict[str, Any] = {"at": now, "kind": kind}
                    if kind == "kill":
                        if c.worker_nodes:
                            victim = c.worker_nodes[0]
                            lost = only_copies_on(victim.node_id)
                            rec["at"] = time.monotonic() - t0
                            c.remove_node(victim, allow_graceful=False)
                            rec.update(
                                node=victim.node_id,
                                lost_objects=len(lost),
                                lost_tasks=sorted(task_of(o) for o in lost),
                                detail=f"node {victim.node_id} SIGKILLed "
                                f"({len(lost)} objects only there)",
                            )
                        else:
                            rec["detail"] = "no worker node to kill"
                    else:
                        th = threading.Thread(target=add_node, args=(rec,), daemon=True)
                        th.start()
                        adders.append(th)
                    faults.append(rec)
                    log(f"timeline {now:5.1f} s: {kind} {rec.get('detail', '')}")
                if now >= next_sample:
                    try:
                        alive = sum(1 for n in gcs.list_nodes() if n.alive)
                        samples.append((now, reconstructed(gcs) - stat0, alive))
                    except Exception as e:  # (a sample missed is not a failure)
                        errors.append(f"sample at {now:.1f} s: {type(e).__name__}: {e}")
                    next_sample += BUCKET
                if now > a.duration + a.drain_timeout:
                    errors.append(
                        f"{len(pending)} chain steps not done {a.drain_timeout} s after "
                        "the run ended"
                    )
                    break
                if not pending:
                    if now >= a.duration and not plan:
                        break
                    time.sleep(0.05)
                    continue
                refs = list(pending)
                ready, _ = rtml.wait(refs, num_returns=len(refs), timeout=0.05)
                seen = time.monotonic() - t0
                for r in ready:
                    ch, i = pending.pop(r)
                    first_done[int(r.task_id(), 16)] = seen
                    completions.append(seen)
                    ch.left -= 1
                    if i == L - 1:
                        try:
                            lo, hi = rtml.get(r, timeout=30)
                            if lo != hi or lo != 100 * ch.cid + L - 2:
                                wrong.append(ch.cid)
                        except Exception as e:  # (reported)
                            errors.append(f"chain {ch.cid}: {type(e).__name__}: {e}")
                        if seen < a.duration:
                            start_chain()
                del ready, refs
        finally:  # (a node joining while the cluster shuts down would be left behind)
            for th in adders:
                th.join(60)
        end = time.monotonic() - t0
        time.sleep(1.0)  # (task events flush every 0.25 s, heartbeats every 0.5 s)
        stat_total = reconstructed(gcs) - stat0
        with _listing.open_source(None) as src:
            events, dropped = _listing.read_events(src)
    # Re-executions: a FINISHED event of a task after the driver had seen that task done.
    reexec: list[tuple[float, int, str]] = []  # (end time, task id, node)
    retried: set[int] = set()
    for ev in events:
        tid = ev.task_id if isinstance(ev.task_id, int) else int(str(ev.task_id), 16)
        if ev.attempt and ev.attempt > 1:
            retried.add(tid)
        if ev.state != "FINISHED" or tid not in first_done:
            continue
        t_end = float(ev.extra.get("end", ev.time)) - epoch0
        if t_end > first_done[tid] + 0.01:
            reexec.append((t_end, tid, ev.node_id))
    reexec.sort()
    per_node: dict[str, list[int]] = {}  # tasks finished per node and bucket (every attempt)
    n_buckets = int(end / BUCKET) + 1
    for ev in events:
        if ev.state == "FINISHED":
            b = int((float(ev.extra.get("end", ev.time)) - epoch0) / BUCKET)
            if 0 <= b < n_buckets:
                per_node.setdefault(ev.node_id, [0] * n_buckets)[b] += 1
    kills = [fr for fr in faults if fr["kind"] == "kill" and "node" in fr]
    for k, fr in enumerate(kills):
        until = kills[k + 1]["at"] if k + 1 < len(kills) else float("inf")
        mine = [x for x in reexec if fr["at"] <= x[0] < until]
        tasks = {x[1] for x in mine}
        lost_tasks = set(fr["lost_tasks"])
        fr["re_executed"] = len(mine)
        fr["lost_rebuilt"] = len(lost_tasks & tasks)
        fr["lost_not_rebuilt"] = [format(t, "x") for t in sorted(lost_tasks - tasks)]
        fr["lost_tasks"] = [format(t, "x") for t in fr["lost_tasks"]]
        fr["re_executed_per_lost_object"] = (
            len(mine) / fr["lost_objects"] if fr["lost_objects"] else None
        )
        fr["rebuilt_by_s"] = (mine[-1][0] - fr["at"]) if mine else None
    steps = [0] * n_buckets
    rex = [0] * n_buckets
    for t in completions:
        steps[min(int(t / BUCKET), n_buckets - 1)] += 1
    for t, _, _ in reexec:
        if 0 <= t < end:
            rex[min(int(t / BUCKET), n_buckets - 1)] += 1
    cum, nodes = [], []
    for b in range(n_buckets):
        upto = [s for s in samples if s[0] < (b + 1) * BUCKET]
        cum.append(upto[-1][1] if upto else 0)
        nodes.append(upto[-1][2] if upto else None)
    timeline = [
        {
            "t": b * BUCKET,
            "steps_per_s": steps[b] / BUCKET,
            "re_executed": rex[b],
            "re_executed_cumulative": sum(rex[: b + 1]),
            "reconstructed_counter": cum[b],
            "nodes_alive": nodes[b],
        }
        for b in range(n_buckets)
    ]
    lost_total = sum(fr["lost_objects"] for fr in kills)
    quiet = (
        [
            steps[b] / BUCKET
            for b in range(n_buckets)
            if b * BUCKET >= 1.0 and (b + 1) * BUCKET <= min(fr["at"] for fr in kills)
        ]
        if kills
        else []
    )
    return {
        "args": {
            "chains_in_flight": K,
            "chain_length": L,
            "step_ms": a.step_ms,
            "object_bytes": N * 8,
            "duration_s": a.duration,
            "kill_at": a.kill_at,
            "add_at": a.add_at,
        },
        "timeline": timeline,
        "faults": faults,
        "chains_started": len(chains),
        "chains_done": sum(1 for ch in chains if ch.left == 0),
        "steps_done": len(completions),
        "seconds": end,
        "steps_per_s_before_first_kill": _median(quiet),
        "re_executed_from_events": len(reexec),
        "reconstructed_counter": stat_total,
        "retried_tasks": len(retried),
        "lost_objects": lost_total,
        "re_executed_per_lost_object": len(reexec) / lost_total if lost_total else None,
        "re_executions": [{"t": t, "task": format(tid, "x"), "node": n} for t, tid, n in reexec],
        "finished_per_node": per_node,
        "head": head,
        "samples": samples,
        "events_dropped": dropped,
        "wrong_chains": wrong,
        "errors": errors,
    }


# ---------------------------------------------------------------------- 4. actor
def run_actor(a: argparse.Namespace) -> dict[str, Any]:
    script = os.path.join(HERE, "actor_checkpoint.py")
    with tempfile.TemporaryDirectory(prefix="rtml-ft-actor-") as d:
        out = os.path.join(d, "actor_checkpoint.json")
        cmd = [sys.executable, script, "--json", out] + (["--quick"] if a.quick else [])
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
        )
        try:
            stdout, stderr = proc.communicate(timeout=a.actor_timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # (its own session: it and its children)
            proc.communicate()
            return {"skipped": f"bench/actor_checkpoint.py took over {a.actor_timeout} s"}
        if proc.returncode != 0 or not os.path.exists(out):
            return {"error": f"exit {proc.returncode}", "stderr": stderr[-2000:]}
        with open(out, encoding="utf-8") as fh:
            doc = json.load(fh)
    return {
        "command": " ".join(["python", "bench/actor_checkpoint.py", *cmd[4:]]),
        "recovery_summary": doc["recovery_summary"],
        "steady": doc["steady"],
        "recovery": doc["recovery"],
        "args": doc["args"],
        "report": stdout.strip(),
    }


# ---------------------------------------------------------------------- report
def _fmt(x: Any, spec: str = ".0f", none: str = "n/a") -> str:
    return none if x is None else format(x, spec)


def report(doc: dict[str, Any]) -> str:
    lines: list[str] = []
    ch = doc.get("chaos")
    if ch:
        lines += [
            "",
            "== chaos: tasks/s of the chaos DAG, undisturbed vs every fault kind "
            f"({len(ch['runs']) // 2} pairs, fresh Redis-backed cluster per run)",
            "",
            f"{'pair':>4}  {'seed':>9}  {'baseline':>9}  {'chaos':>9}  {'ratio':>5}  "
            "faults that landed (kind@s)",
        ]
        for p in sorted({r["pair"] for r in ch["runs"]}):
            b = next((r for r in ch["runs"] if r["pair"] == p and r["kind"] == "baseline"), {})
            c = next((r for r in ch["runs"] if r["pair"] == p and r["kind"] == "chaos"), {})
            ratio = (
                c["throughput"] / b["throughput"]
                if b.get("throughput") and c.get("throughput")
                else None
            )
            fl = " ".join(f"{f['kind']}@{f['at']:.1f}" for f in c.get("faults", []) if f["landed"])
            lines.append(
                f"{p:>4}  {b.get('seed', c.get('seed', '')):>9}  "
                f"{_fmt(b.get('throughput')):>9}  {_fmt(c.get('throughput')):>9}  "
                f"{_fmt(ratio, '.2f'):>5}  {fl or c.get('error', '')}"
            )
        lines.append(
            f"median: baseline {_fmt(ch['baseline_median'])} tasks/s "
            f"({_fmt(ch['baseline_seconds_median'], '.2f')} s), chaos "
            f"{_fmt(ch['chaos_median'])} tasks/s "
            f"({_fmt(ch['chaos_seconds_median'], '.2f')} s), ratio "
            f"{_fmt(ch['ratio_of_medians'], '.2f')}; wrong values "
            f"{ch['wrong_values']}; errors {len(ch['errors'])}"
        )
    rc = doc.get("recovery")
    if rc:
        ar = rc["args"]
        lines += [
            "",
            "== recovery: SIGKILL of the node holding the only copies -> rtml.get "
            f"(medians of {rc['independent']['n']} repetitions, "
            f"{ar['object_bytes'] / 2**20:.0f} MiB objects)",
            "",
            f"{'workload':<32}  {'first':>8}  {'all':>8}  {'re-executed':>11}  get, no loss",
        ]
        for v, label in (
            ("independent", f"{ar['independent_tasks']} independent tasks"),
            ("chains", f"{ar['chains']} chains of {ar['chain_length']} tasks"),
            ("frozen", f"{ar['independent_tasks']} tasks, node SIGSTOPped"),
        ):
            s = rc[v]
            lines.append(
                f"{label:<32}  {_fmt(s['first_ms'], '.0f') + ' ms':>8}  "
                f"{_fmt(s['all_ms'], '.0f') + ' ms':>8}  "
                f"{_fmt(s['re_executed'], '.0f'):>11}  "
                f"{_fmt(s['baseline_get_ms'], '.1f')} ms"
            )
        if rc["errors"]:
            lines.append(f"errors: {rc['errors']}")
    tl = doc.get("timeline")
    if tl:
        ar = tl["args"]
        lines += [
            "",
            f"== timeline (Fig. 11a analogue): {ar['chains_in_flight']} chains of "
            f"{ar['chain_length']} x {ar['step_ms']:.0f} ms steps in flight, "
            f"{ar['object_bytes'] / 2**20:.0f} MiB results; ideal 10 steps/s per CPU",
            "re-exec: tasks re-executed that finished in that second; resubmitted: the "
            "head's cumulative count of tasks resubmitted to rebuild (per heartbeat); "
            "nodes: alive as the control plane lists them",
            "",
            f"{'t (s)':>6}  {'steps/s':>7}  {'re-exec':>7}  {'resubmitted':>11}  "
            f"{'nodes':>5}  event",
        ]
        rows = tl["timeline"]
        for i in range(0, len(rows), 2):  # 1 s rows (the JSON and the figure: 0.5 s)
            pair = rows[i : i + 2]
            t = pair[0]["t"]
            ev = "; ".join(
                [
                    f"{f['kind']} @{f['at']:.1f}"
                    for f in tl["faults"]
                    if t <= f["at"] < t + 2 * BUCKET
                ]
                + (["no new chains from here"] if t <= ar["duration_s"] < t + 2 * BUCKET else [])
            )
            lines.append(
                f"{t:>6.0f}  {statistics.mean(r['steps_per_s'] for r in pair):>7.1f}"
                f"  {sum(r['re_executed'] for r in pair):>7}  "
                f"{pair[-1]['reconstructed_counter']:>11}  "
                f"{_fmt(pair[-1]['nodes_alive'], 'd', '-'):>5}  {ev}"
            )
        lines.append("")
        for f in tl["faults"]:
            if f["kind"] == "kill" and "node" in f:
                lines.append(
                    f"kill @{f['at']:.1f} s: {f['lost_objects']} objects lost "
                    f"(only copy there), {f['re_executed']} tasks re-executed "
                    f"({_fmt(f['re_executed_per_lost_object'], '.1f')} per lost "
                    f"object), {f['lost_rebuilt']} of the lost rebuilt, last "
                    f"re-execution {_fmt(f['rebuilt_by_s'], '.1f')} s after the kill"
                )
            elif f["kind"] == "add":
                lines.append(
                    f"add  @{f['at']:.1f} s: {f.get('detail')} "
                    f"(took {_fmt(f.get('took'), '.1f')} s)"
                )
        lines.append(
            f"steps {tl['steps_done']} in {tl['seconds']:.1f} s ({tl['chains_done']}/"
            f"{tl['chains_started']} chains), {_fmt(tl['steps_per_s_before_first_kill'], '.1f')}"
            f" steps/s before the first kill; re-executed {tl['re_executed_from_events']} "
            f"(events) / {tl['reconstructed_counter']} (counter), retried "
            f"{tl['retried_tasks']}, lost {tl['lost_objects']} -> "
            f"{_fmt(tl['re_executed_per_lost_object'], '.1f')} re-executed per lost object; "
            f"wrong chains {len(tl['wrong_chains'])}; errors {tl['errors'] or 'none'}"
        )
    ac = doc.get("actor")
    if ac:
        lines += ["", "== actor checkpoints (bench/actor_checkpoint.py)", ""]
        if "report" in ac:
            lines.append(ac["report"])
        else:
            lines.append(str(ac.get("skipped") or ac.get("error")))
    return "\n".join(lines)


def plot(doc: dict[str, Any], path: str) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log(
            "matplotlib is not importable here: no figure (try bench/.peers-venv/bin/python "
            "bench/fault_tolerance.py --replot JSON --png PATH)"
        )
        return False
    tl = doc.get("timeline")
    if not tl:
        log("no timeline section: no figure")
        return False
    rows = tl["timeline"]
    ar = tl["args"]
    ts = [r["t"] for r in rows]
    fig, (ax, ax2) = plt.subplots(
        2, 1, figsize=(9, 5.5), sharex=True, gridspec_kw={"height_ratios": [3, 1.3]}
    )
    ax.bar(
        ts,
        [r["steps_per_s"] for r in rows],
        width=BUCKET,
        align="edge",
        color="#4c72b0",
        label="chain steps completed (first time)",
    )
    ax.bar(
        ts,
        [r["re_executed"] / BUCKET for r in rows],
        width=BUCKET,
        align="edge",
        bottom=[r["steps_per_s"] for r in rows],
        color="#dd8452",
        label="tasks re-executed (lineage)",
    )
    for f in tl["faults"]:
        for a_ in (ax, ax2):
            a_.axvline(f["at"], color="red" if f["kind"] == "kill" else "green", ls="--", lw=1)
        ax.text(
            f["at"],
            ax.get_ylim()[1] * 0.97,
            " node killed" if f["kind"] == "kill" else " node added",
            color="red" if f["kind"] == "kill" else "green",
            va="top",
            fontsize=8,
        )
    ax.set_ylabel("tasks/s (0.5 s buckets)")
    ax.set_title(
        f"{ar['chains_in_flight']} chains of {ar['chain_length']} x "
        f"{ar['step_ms']:.0f} ms tasks, 1 MiB results; 1-CPU nodes on 2 cores"
    )
    ax.legend(loc="lower left", fontsize=8)
    ax2.step(
        [t + BUCKET for t in ts],
        [r["re_executed_cumulative"] for r in rows],
        where="post",
        color="#dd8452",
        label="re-executed (finished)",
    )
    ax2.step(
        [t + BUCKET for t in ts],
        [r["reconstructed_counter"] for r in rows],
        where="post",
        color="#555555",
        ls=":",
        label="resubmitted (head's counter, per heartbeat)",
    )
    ax2.set_ylabel("tasks\n(cumulative)")
    ax2.legend(loc="upper left", fontsize=8)
    for a_ in (ax, ax2):
        a_.axvline(ar["duration_s"], color="gray", ls=":", lw=1)
    ax.text(
        ar["duration_s"],
        ax.get_ylim()[1] * 0.97,
        " no new chains",
        color="gray",
        va="top",
        fontsize=8,
    )
    ax2.set_xlabel("seconds")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


# ---------------------------------------------------------------------- main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="a short smoke run (~1 min)")
    ap.add_argument("--json", default=None, help="write the figures and samples here")
    ap.add_argument("--png", default=None, help="draw the timeline here (needs matplotlib)")
    ap.add_argument(
        "--replot",
        default=None,
        metavar="JSON",
        help="only draw --png from a JSON this script wrote",
    )
    ap.add_argument(
        "--only",
        action="append",
        choices=SECTIONS,
        default=None,
        help="run only this section (repeatable)",
    )
    ap.add_argument("--seed", type=int, default=20261124, help="chaos seed of the first pair")
    a = ap.parse_args()
    if a.replot:
        if not a.png:
            ap.error("--replot needs --png")
        with open(a.replot, encoding="utf-8") as fh:
            sys.exit(0 if plot(json.load(fh), a.png) else 1)
    # chaos
    a.pairs, a.n_faults, a.chaos_timeout = (1 if a.quick else 3), 8, 240.0
    # recovery
    a.reps = 2 if a.quick else 5
    a.rec_tasks, a.rec_chains, a.rec_length = 8, 2, 8
    # timeline
    a.chains, a.chain_length, a.step_ms = 9, 15, 100.0
    if a.quick:
        a.duration, a.kill_at, a.add_at = 12.0, [4.0], [7.0]
    else:
        a.duration, a.kill_at, a.add_at = 30.0, [8.0, 18.0], [12.0, 22.0]
    a.drain_timeout = 60.0
    # actor
    a.actor_timeout = 150.0
    sections = a.only or list(SECTIONS)
    doc: dict[str, Any] = {
        "command": "python bench/fault_tolerance.py " + " ".join(sys.argv[1:]),
        "machine": machine(),
        "cluster": "rtml.testing.Cluster: head num_cpus=1 (the driver's) + 2 worker nodes "
        "num_cpus=1, heartbeat_timeout=2.0",
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "uptime_at_start": _uptime(),
        "load_average_at_start": os.getloadavg(),  # others' work on this shared machine
        "load_average": {},
    }
    runners = {
        "chaos": run_chaos,
        "recovery": run_recovery,
        "timeline": run_timeline,
        "actor": run_actor,
    }
    t0 = time.perf_counter()
    for name in SECTIONS:
        if name not in sections:
            continue
        log(f"== {name} (load {os.getloadavg()[0]:.2f})")
        before = os.getloadavg()
        t = time.perf_counter()
        try:
            doc[name] = runners[name](a)
        except Exception as e:  # (a section that fails does not lose the others' figures)
            import traceback

            doc[name] = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}
            log(f"{name} failed: {doc[name]['traceback']}")
        doc[name]["seconds_total"] = round(time.perf_counter() - t, 1)
        doc["load_average"][name] = {"before": before, "after": os.getloadavg()}
    doc["seconds"] = round(time.perf_counter() - t0, 1)
    doc["uptime_at_end"] = _uptime()
    doc["load_average_at_end"] = os.getloadavg()
    ok = {k: v for k, v in doc.items() if not (k in SECTIONS and "error" in v)}
    print(report(ok))
    for name in SECTIONS:
        if name in doc and "error" in doc[name]:
            print(f"\n{name}: FAILED: {doc[name]['error']}")
    print(f"\n({doc['seconds']:.0f} s; {doc['uptime_at_start']} -> {doc['uptime_at_end']})")
    if a.json:
        write_json_atomic(a.json, json.loads(json.dumps(doc, default=str)))
    if a.png:
        plot(doc, a.png)


if __name__ == "__main__":
    main()
