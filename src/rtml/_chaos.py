"""Chaos runs: a DAG of tasks and actor calls on a local cluster while processes are killed.

Used by the chaos test (``tests/integration/test_chaos.py``, fixed seed) and by
``bench/fault_tolerance.py --only chaos --seed N`` (any seed, figures). The workload is a
random layered DAG: every node of a layer combines two values of the layer before, through a
task (most) or a call on one of a few actors; some values are large (stored in the producing node's object store, so a node death
loses them and lineage rebuilds them), the rest inline. Its result is checked value by value
against the same functions evaluated serially in this process.

The fault injector follows a plan drawn from the seed: SIGKILL a random worker, an actor's
process, a whole worker node (replaced by a new one), or the control plane (restarted; needs a
Redis-backed cluster). What happened and when is returned with the figures.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import rtml

SMALL, BIG = 16, 20_000  # float64s: inline vs in a node's store (160 kB)
FAULTS = ("worker", "actor", "node", "control_plane")


# ---------------------------------------------------------------------- the workload
def leaf(i: int, big: bool, ms: float) -> np.ndarray:
    if ms:
        time.sleep(ms / 1000)
    return np.linspace(0.0, 1.0, BIG if big else SMALL) * (i % 97) / 97.0


def combine(a: np.ndarray, b: np.ndarray, salt: float, ms: float) -> np.ndarray:
    if ms:
        time.sleep(ms / 1000)
    return np.tanh(a * 0.5 + float(b.mean()) + salt)


class Mixer:
    """An actor whose calls are pure functions of their arguments and its constructor's, so
    replayed or restarted calls give the same values."""

    def __init__(self, scale: float) -> None:
        self.scale = scale

    def mix(self, a: np.ndarray, b: np.ndarray, salt: float, ms: float) -> np.ndarray:
        return combine(a, b, salt, ms) * self.scale

    def pid(self) -> int:
        import os

        return os.getpid()


@dataclass
class Dag:
    """node i: ("leaf", (i,), big) or ("task"|actor index, (parent a, parent b, salt), big)."""

    nodes: list[tuple[Any, tuple, bool]]
    layers: list[list[int]]
    check: list[int]  # nodes whose values are kept and checked (last layer + a sample)


def make_dag(
    seed: int,
    layers: int,
    width: int,
    big_fraction: float = 0.2,
    actor_fraction: float = 0.1,
    n_actors: int = 2,
) -> Dag:
    rng = random.Random(seed)
    nodes: list[tuple[Any, tuple, bool]] = []
    grid: list[list[int]] = []
    first = []
    for i in range(width):
        nodes.append(("leaf", (i,), rng.random() < big_fraction))
        first.append(len(nodes) - 1)
    grid.append(first)
    for _ in range(1, layers):
        prev = grid[-1]
        row = []
        for _ in range(width):
            a, b = rng.choice(prev), rng.choice(prev)
            kind: Any = rng.randrange(n_actors) if rng.random() < actor_fraction else "task"
            nodes.append((kind, (a, b, rng.random()), nodes[a][2]))
            row.append(len(nodes) - 1)
        grid.append(row)
    inner = [i for row in grid[:-1] for i in row]
    check = sorted(set(grid[-1]) | set(rng.sample(inner, min(len(inner), width // 2))))
    return Dag(nodes, grid, check)


def serial(dag: Dag, scales: list[float]) -> dict[int, np.ndarray]:
    values: dict[int, np.ndarray] = {}
    for i, (kind, args, big) in enumerate(dag.nodes):
        if kind == "leaf":
            values[i] = leaf(args[0], big, 0)
        else:
            a, b, salt = args
            v = combine(values[a], values[b], salt, 0)
            values[i] = v if kind == "task" else v * scales[kind]
    return {i: values[i] for i in dag.check}


def submit(dag: Dag, actors: list[Any], task_ms: float, max_retries: int) -> dict[int, Any]:
    """Submit the whole DAG at once; keep only the refs that will be checked (the others are
    freed as soon as their consumers ran, so losing them tests lineage, not luck)."""
    r_leaf = rtml.remote(max_retries=max_retries)(leaf)
    r_combine = rtml.remote(max_retries=max_retries)(combine)
    refs: dict[int, Any] = {}
    keep = set(dag.check)
    needed_by: dict[int, int] = {}
    for kind, args, _big in dag.nodes:
        if kind != "leaf":
            needed_by[args[0]] = needed_by.get(args[0], 0) + 1
            needed_by[args[1]] = needed_by.get(args[1], 0) + 1
    out: dict[int, Any] = {}
    for i, (kind, args, big) in enumerate(dag.nodes):
        if kind == "leaf":
            refs[i] = r_leaf.remote(args[0], big, task_ms)
        else:
            a, b, salt = args
            if kind == "task":
                refs[i] = r_combine.remote(refs[a], refs[b], salt, task_ms)
            else:
                refs[i] = actors[kind].mix.remote(refs[a], refs[b], salt, task_ms)
            for p in (a, b):
                needed_by[p] -= 1
                if not needed_by[p] and p not in keep:
                    del refs[p]
        if i in keep:
            out[i] = refs[i]
    return out


# ---------------------------------------------------------------------- faults
@dataclass
class Fault:
    at: float  # seconds after the start
    kind: str
    detail: str = ""
    took: float = 0.0  # how long injecting it took (a node replacement waits for the join)


@dataclass
class ChaosReport:
    seed: int
    tasks: int
    seconds: float
    faults: list[Fault] = field(default_factory=list)
    wrong: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def throughput(self) -> float:
        return self.tasks / self.seconds if self.seconds else 0.0


class FaultInjector(threading.Thread):
    """Injects ``plan`` (kinds, one every ``interval`` s give or take half) into ``cluster``."""

    def __init__(
        self,
        cluster: Any,
        actors: list[Any],
        actor_pids: list[int],
        plan: list[str],
        interval: float,
        seed: int,
    ) -> None:
        super().__init__(name="chaos-injector", daemon=True)
        self.cluster = cluster
        self.actors = actors
        self.actor_pids = actor_pids
        self.plan = list(plan)
        self.interval = interval
        self.rng = random.Random(seed + 1)
        self.stop = threading.Event()
        self.done: list[Fault] = []
        self.failures: list[str] = []
        self.t0 = time.monotonic()

    def run(self) -> None:
        for kind in self.plan:
            if self.stop.wait(self.interval * self.rng.uniform(0.5, 1.5)):
                return
            at = time.monotonic() - self.t0
            try:
                detail = getattr(self, "_" + kind)()
            except Exception as e:  # (reported; the run goes on)
                self.failures.append(f"{kind}: {type(e).__name__}: {e}")
                continue
            self.done.append(Fault(at, kind, detail, time.monotonic() - self.t0 - at))

    def _worker(self) -> str:
        import psutil

        nodes = self.cluster.list_all_nodes()
        self.rng.shuffle(nodes)
        for n in nodes:
            kids = [p for p in psutil.Process(n.pid).children() if p.pid not in self.actor_pids]
            if kids:
                victim = self.rng.choice(kids)
                victim.kill()
                return f"worker {victim.pid} of node {n.node_id}"
        return "no worker to kill"

    def _actor(self) -> str:
        import os
        import signal

        from rtml.util.state import list_actors

        # (Not by asking the actor: a call waits behind every earlier call of this driver.)
        alive = [
            a
            for a in list_actors(filters=[("class_name", "=", "Mixer")])
            if a.get("state") == "ALIVE" and a.get("pid")
        ]
        if not alive:
            return "no live actor"
        a = self.rng.choice(alive)
        os.kill(a["pid"], signal.SIGKILL)
        return f"actor {a['actor_id']} (pid {a['pid']})"

    def _node(self) -> str:
        victims = list(self.cluster.worker_nodes)
        if not victims:
            return "no worker node"
        n = self.rng.choice(victims)
        self.cluster.remove_node(n, allow_graceful=False)
        self.cluster.add_node(**n.options)
        return f"node {n.node_id} killed and replaced"

    def _control_plane(self) -> str:
        self.cluster.restart_control_plane()
        return "control plane restarted"


def fault_plan(seed: int, kinds: list[str], n: int) -> list[str]:
    """``n`` faults: every kind in ``kinds`` once first (in a random order, so each surely
    lands while the workload runs), then random workers and actors."""
    rng = random.Random(seed)
    plan = list(kinds)
    rng.shuffle(plan)
    cheap = [k for k in kinds if k in ("worker", "actor")] or ["worker"]
    while len(plan) < n:
        plan.append(rng.choice(cheap))
    return plan


def run(
    cluster: Any,
    seed: int,
    layers: int = 12,
    width: int = 150,
    task_ms: float = 10.0,
    faults: list[str] | None = None,
    n_faults: int = 8,
    interval: float = 0.5,
    timeout: float = 300.0,
) -> ChaosReport:
    """Run the DAG on ``cluster`` (this process connected to it) with ``faults`` injected;
    None or [] runs it undisturbed (the baseline)."""
    scales = [1.5, 0.75]
    dag = make_dag(seed, layers, width, n_actors=len(scales))
    expected = serial(dag, scales)
    r_mixer = rtml.remote(max_restarts=-1, max_task_retries=-1)(Mixer)
    actors = [r_mixer.remote(s) for s in scales]
    actor_pids = [rtml.get(a.pid.remote(), timeout=60) for a in actors]
    injector = None
    if faults:
        injector = FaultInjector(
            cluster, actors, actor_pids, fault_plan(seed, faults, n_faults), interval, seed
        )
    t0 = time.monotonic()
    if injector is not None:
        injector.t0 = t0
        injector.start()
    report = ChaosReport(seed, len(dag.nodes), 0.0)
    try:
        refs = submit(dag, actors, task_ms, max_retries=-1)
        ids = sorted(refs)
        values = rtml.get([refs[i] for i in ids], timeout=timeout)
        report.seconds = time.monotonic() - t0
    finally:
        if injector is not None:
            injector.stop.set()
            injector.join(120)
            report.faults = injector.done
            report.errors = injector.failures
    for i, v in zip(ids, values, strict=True):
        if not np.array_equal(v, expected[i]):
            report.wrong.append(i)
    return report
