"""Parallel best-first tree search: a dynamic task graph with heterogeneous durations.

The driver keeps K node expansions in flight. Each expansion is a task that itself submits one
rollout task per child (tasks spawn tasks) and waits for them; rollouts simulate random
playouts whose lengths are heavy-tailed, so expansions finish in no particular order. The driver
uses ``wait`` to fold in whichever expansion finished first and immediately launches the next
most promising one: no barriers, no idle workers (requirements R3-R5 of the paper). A
``SearchStats`` actor, whose handle every expansion receives, keeps shared statistics that the
tasks update as they go.

Run:  python examples/tree_search.py [--budget 200] [--in-flight 8]
It also runs unchanged with ``import ray as rtml``.
"""

from __future__ import annotations

import argparse
import heapq
import math
import random
import time

import rtml

BRANCHING = 4
DEPTH = 6


def reward(path: tuple[int, ...]) -> float:
    """A fixed, deterministic landscape over action sequences (unknown to the search)."""
    r = 0.0
    for i, a in enumerate(path):
        r += math.sin(1.7 * a + 0.9 * i) * (1.0 - i / (DEPTH + 1))
    return r


@rtml.remote
def rollout(path: tuple[int, ...], seed: int) -> float:
    """Finish ``path`` with random moves; the playout length is heavy-tailed."""
    rng = random.Random(seed)
    steps = int(min(200_000, rng.lognormvariate(math.log(4000), 1.0)))
    acc = 0.0
    for _ in range(steps):  # the "simulation": CPU work proportional to its length
        acc += rng.random()
    full = list(path)
    while len(full) < DEPTH:
        full.append(rng.randrange(BRANCHING))
    return reward(tuple(full)) + 1e-9 * acc


@rtml.remote
class SearchStats:
    """Shared statistics, updated by the expansion tasks (an actor: state with ordered calls)."""

    def __init__(self) -> None:
        self.rollouts = 0
        self.expansions = 0
        self.best = (-math.inf, ())

    def record(self, rollouts: int, value: float, path: tuple[int, ...]) -> None:
        self.rollouts += rollouts
        self.expansions += 1
        self.best = max(self.best, (value, path))

    def summary(self) -> dict:
        return {"rollouts": self.rollouts, "expansions": self.expansions, "best": self.best}


@rtml.remote
def expand(path: tuple[int, ...], rollouts: int, seed: int, stats) -> list[tuple[float, tuple]]:
    """Evaluate every child of ``path`` with rollouts run as nested tasks."""
    children = [(*path, a) for a in range(BRANCHING)]
    refs = {
        c: [rollout.remote(c, seed * 1000 + 10 * a + k) for k in range(rollouts)]
        for a, c in enumerate(children)
    }
    scored = [(sum(rtml.get(r, timeout=60)) / rollouts, c) for c, r in refs.items()]
    stats.record.remote(len(children) * rollouts, *max(scored))  # fire and forget
    return scored


def search(budget: int, in_flight: int, rollouts: int, stats) -> tuple[float, tuple[int, ...], int]:
    frontier: list[tuple[float, tuple[int, ...]]] = [(-0.0, ())]
    pending: dict[rtml.ObjectRef, tuple[int, ...]] = {}
    best = (-math.inf, ())
    launched = expanded = 0
    while (frontier or pending) and expanded < budget:
        while frontier and len(pending) < in_flight and launched < budget:
            _, path = heapq.heappop(frontier)
            pending[expand.remote(path, rollouts, launched, stats)] = path
            launched += 1
        ready, _ = rtml.wait(list(pending), num_returns=1, timeout=60)
        for ref in ready:
            pending.pop(ref)
            expanded += 1
            for value, child in rtml.get(ref, timeout=60):
                if len(child) == DEPTH:
                    best = max(best, (reward(child), child))
                else:
                    heapq.heappush(frontier, (-value, child))
    for ref in pending:
        rtml.cancel(ref)
    return best[0], best[1], expanded


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", type=int, default=200, help="node expansions")
    ap.add_argument("--in-flight", type=int, default=8, help="expansions kept in flight")
    ap.add_argument("--rollouts", type=int, default=3, help="rollouts per child")
    args = ap.parse_args()

    t0 = time.perf_counter()
    rtml.init()
    t_init = time.perf_counter() - t0
    t1 = time.perf_counter()
    stats = SearchStats.remote()
    value, path, expanded = search(args.budget, args.in_flight, args.rollouts, stats)
    elapsed = time.perf_counter() - t1
    summary = rtml.get(stats.summary.remote(), timeout=60)
    tasks = expanded * (1 + BRANCHING * args.rollouts)
    optimum = max((reward(p), p) for p in _all_paths(DEPTH))
    print(f"runtime started in {t_init * 1000:.0f} ms")
    print(
        f"expanded {expanded} nodes with {tasks} tasks in {elapsed:.2f} s "
        f"({tasks / elapsed:,.0f} tasks/s, nested tasks and wait-driven scheduling)"
    )
    print(
        f"best path found {path} reward {value:.3f}; optimum {optimum[1]} reward {optimum[0]:.3f}"
    )
    print(
        f"stats actor: {summary['expansions']} expansions and {summary['rollouts']} rollouts "
        f"recorded by the tasks; best rollout estimate {summary['best'][0]:.3f} "
        f"at {summary['best'][1]}"
    )
    rtml.shutdown()


def _all_paths(depth: int) -> list[tuple[int, ...]]:
    paths: list[tuple[int, ...]] = [()]
    for _ in range(depth):
        paths = [(*p, a) for p in paths for a in range(BRANCHING)]
    return paths


if __name__ == "__main__":
    main()
