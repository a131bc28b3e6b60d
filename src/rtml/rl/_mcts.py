"""Monte Carlo tree search, serial or parallel on rtml (or Ray) tasks.

::

    tree parallel (the tree lives on the driver):
        select a leaf (UCT; a virtual loss on its path steers the next selections elsewhere)
          └─▶ rollouts.remote(leaf_state, k) ──▶ K tasks in flight
        wait(first done) ─▶ back up its k results, remove the virtual loss
          └─▶ select again from the updated tree and spawn the next task (until the deadline)

    root parallel: num_workers tasks each grow their own tree from the root for the time
        budget; the driver adds up the root's visit counts and plays the most visited move

A game is any object with ``to_play``, ``legal_moves()``, ``play(move)``, ``is_terminal()``,
``winner()`` and ``rollout(rng) -> winner`` (see :class:`ConnectFour`).
"""

from __future__ import annotations

import dataclasses
import math
import random
import time
from typing import Any

from rtml.util.engine import resolve

__all__ = ["MCTSResult", "mcts"]

_FIRST_RESULT_TIMEOUT = 60.0  # seconds past the budget to wait for a first simulation


class _Node:
    __slots__ = ("children", "mover", "n", "parent", "state", "untried", "vl", "w")

    def __init__(self, state: Any, parent: _Node | None, mover: int) -> None:
        self.state, self.parent, self.mover = state, parent, mover
        self.children: dict[Any, _Node] = {}
        self.untried = list(state.legal_moves()) if not state.is_terminal() else []
        self.n = 0.0  # visits (virtual ones included while in flight)
        self.w = 0.0  # reward for ``mover`` (the player who moved into this node)
        self.vl = 0  # virtual losses in flight


def _select(root: _Node, c: float, rng: random.Random, vloss: float) -> list[_Node]:
    """Path from the root to a new (or terminal) leaf, expanding one child; applies
    ``vloss`` virtual losses on the path."""
    node, path = root, [root]
    while True:
        if node.untried:
            move = node.untried.pop(rng.randrange(len(node.untried)))
            child = _Node(node.state.play(move), node, node.state.to_play)
            node.children[move] = child
            path.append(child)
            break
        if not node.children:
            break  # terminal
        log_n = math.log(max(node.n, 1.0))
        best, best_s = None, -math.inf
        for ch in node.children.values():
            s = ch.w / ch.n + c * math.sqrt(log_n / ch.n) if ch.n > 0 else math.inf
            if s > best_s:
                best, best_s = ch, s
        assert best is not None
        node = best
        path.append(node)
    if vloss:
        for nd in path:
            nd.n += vloss
            nd.vl += 1
    return path


def _backup(path: list[_Node], winners: list[int | None], vloss: float) -> None:
    k = len(winners)
    for nd in path:
        if vloss:
            nd.n -= vloss
            nd.vl -= 1
        wins = sum(1.0 if w == nd.mover else 0.5 if w is None else 0.0 for w in winners)
        nd.n += k
        nd.w += wins


def rollouts(state: Any, k: int, seed: int) -> list[int | None]:
    """Winners of ``k`` random playouts from ``state`` (the simulation task)."""
    rng = random.Random(seed)
    return [state.rollout(rng) for _ in range(k)]


def _serial(
    state: Any,
    budget: float,
    seed: int,
    c: float,
    max_simulations: int | None = None,
    min_simulations: int = 0,
) -> tuple[dict[Any, tuple[float, float]], int]:
    """Serial MCTS from ``state`` for ``budget`` seconds: root children's (visits, reward)
    and the number of simulations."""
    rng = random.Random(seed)
    root = _Node(state, None, 1 - state.to_play)
    deadline = time.perf_counter() + budget
    sims = 0
    while (time.perf_counter() < deadline or sims < min_simulations) and (
        max_simulations is None or sims < max_simulations
    ):
        path = _select(root, c, rng, 0.0)
        _backup(path, [path[-1].state.rollout(rng)], 0.0)
        sims += 1
    return {m: (ch.n, ch.w) for m, ch in root.children.items()}, sims


@dataclasses.dataclass
class MCTSResult:
    """The outcome of one search.

    Attributes:
        move: the move to play (most visited root child).
        visits: root children's visit counts by move.
        values: root children's mean reward (for the player to move) by move.
        simulations: playouts run; elapsed: seconds; sims_per_s: their ratio.
        tasks: tasks submitted (0 for serial).
    """

    move: Any
    visits: dict[Any, float]
    values: dict[Any, float]
    simulations: int
    elapsed: float
    sims_per_s: float
    tasks: int


def _result(stats: dict[Any, tuple[float, float]], sims: int, t0: float, tasks: int) -> MCTSResult:
    if not stats:
        raise ValueError("mcts() on a finished game: there is no move to choose")
    move = max(stats, key=lambda m: (stats[m][0], stats[m][1]))
    el = time.perf_counter() - t0
    return MCTSResult(
        move,
        {m: s[0] for m, s in stats.items()},
        {m: s[1] / s[0] if s[0] else 0.0 for m, s in stats.items()},
        sims,
        el,
        sims / el if el > 0 else 0.0,
        tasks,
    )


def mcts(
    state: Any,
    time_budget: float = 1.0,
    *,
    mode: str = "tree",
    num_workers: int = 2,
    in_flight: int | None = None,
    rollouts_per_task: int = 8,
    c: float = 1.4,
    virtual_loss: float = 1.0,
    seed: int = 0,
    max_simulations: int | None = None,
    min_simulations: int = 0,
    engine: Any = None,
) -> MCTSResult:
    """Choose a move for ``state`` by Monte Carlo tree search within ``time_budget`` seconds.

    Args:
        state: a game state (see the module docstring), not finished.
        time_budget: seconds for the search; no task is started after it, and results that
            arrive later are not waited for (in ``"tree"`` mode, if none has arrived by then,
            e.g. on workers just starting, the first one is).
        mode: ``"tree"`` (one tree on the driver, simulations as tasks with virtual loss),
            ``"root"`` (``num_workers`` independent trees in tasks, merged) or ``"serial"``
            (in this process).
        num_workers: parallel searches (``"root"``) / the engine's CPUs to keep busy.
        in_flight: simulation tasks kept running in ``"tree"`` mode (default
            ``2 * num_workers``).
        rollouts_per_task: playouts one simulation task runs from its leaf.
        c: UCT exploration constant; virtual_loss: visits added per in-flight simulation.
        seed: seeds the search's random choices.
        max_simulations: stop earlier after this many playouts (None: the budget only).
        min_simulations: go on past the budget until this many playouts are done (a result
            that does not depend on how busy the machine is; 0: the budget only).
        engine: ``"rtml"`` (default) or ``"ray"``.

    Returns:
        An :class:`MCTSResult`.

    Raises:
        ValueError: an unknown mode, or a finished game.
        TimeoutError: ``"tree"`` mode, no simulation finished within a minute past the budget.
    """
    t0 = time.perf_counter()
    if state.is_terminal():
        raise ValueError("mcts() on a finished game: there is no move to choose")
    if mode == "serial":
        stats, sims = _serial(state, time_budget, seed, c, max_simulations, min_simulations)
        return _result(stats, sims, t0, 0)
    if mode not in ("tree", "root"):
        raise ValueError(f"unknown mcts mode {mode!r}: use 'tree', 'root' or 'serial'")
    eng = resolve(engine)
    if mode == "root":
        task = eng.remote(_serial)
        cap = None if max_simulations is None else max(1, max_simulations // num_workers)
        low = -(-min_simulations // num_workers)
        refs = [
            task.remote(state, max(0.0, time_budget - 0.005), seed * 1000 + i, c, cap, low)
            for i in range(num_workers)
        ]
        merged: dict[Any, list[float]] = {}
        total = 0
        for stats, sims in eng.get(refs, timeout=time_budget + 30.0):
            total += sims
            for m, (n, w) in stats.items():
                acc = merged.setdefault(m, [0.0, 0.0])
                acc[0] += n
                acc[1] += w
        return _result({m: (v[0], v[1]) for m, v in merged.items()}, total, t0, len(refs))
    sim = eng.remote(rollouts)
    rng = random.Random(seed)
    root = _Node(state, None, 1 - state.to_play)
    k_in_flight = in_flight or 2 * num_workers
    deadline = t0 + time_budget
    pending: dict[Any, list[_Node]] = {}
    sims = tasks = 0

    def under_max() -> bool:
        return max_simulations is None or sims < max_simulations

    def budget_left() -> bool:  # start another simulation?
        in_flight = len(pending) * rollouts_per_task
        return under_max() and (
            time.perf_counter() < deadline or sims + in_flight < min_simulations
        )

    def spawn() -> None:
        nonlocal sims, tasks
        while budget_left():
            path = _select(root, c, rng, virtual_loss)
            leaf = path[-1]
            if leaf.state.is_terminal():  # nothing to simulate: back up the known result
                _backup(path, [leaf.state.winner()] * rollouts_per_task, virtual_loss)
                sims += rollouts_per_task
                continue
            pending[sim.remote(leaf.state, rollouts_per_task, rng.getrandbits(62))] = path
            tasks += 1
            return

    for _ in range(k_in_flight):
        spawn()
    while pending and (
        (under_max() and time.perf_counter() < deadline) or sims < min_simulations or sims == 0
    ):
        # Past the deadline with no result yet (cold workers): wait for the first one, so a
        # move is never chosen from an empty tree.
        left = deadline - time.perf_counter()
        ready, _ = eng.wait(
            list(pending), num_returns=1, timeout=left if left > 0 else _FIRST_RESULT_TIMEOUT
        )
        if not ready and left <= 0:
            raise TimeoutError(
                f"mcts(): no simulation finished within {time_budget} s + "
                f"{_FIRST_RESULT_TIMEOUT} s ({sims} done); are the engine's "
                "workers busy?"
            )
        for ref in ready:
            path = pending.pop(ref)
            winners = eng.get(ref, timeout=30.0)
            _backup(path, winners, virtual_loss)
            sims += len(winners)
            spawn()  # the next simulation is chosen from the tree this result updated
    for ref in list(pending):  # results still running: not waited for
        try:
            eng.cancel(ref)
        except Exception:  # finished meanwhile, or the engine cannot cancel
            pass
    stats = {m: (ch.n - ch.vl * virtual_loss, ch.w) for m, ch in root.children.items()}
    return _result(stats, sims, t0, tasks)
