"""Evolution strategies and parallel MCTS on real workers."""

from __future__ import annotations

import types

import numpy as np
import pytest

import rtml
from rtml.rl import ES, ConnectFour, ESConfig, mcts


def test_es_learning_progresses(shared_runtime):
    with ES(ESConfig(seed=2, population=16)) as es:
        ms = es.train(iterations=8, progress=False)
    evals = [m["eval_return"] for m in ms]
    assert max(evals[-3:]) > evals[0] + 20, evals
    assert ms[-1]["env_steps"] > 0
    assert ms[-1]["episodes_dropped"] == 0


def test_the_noise_table_is_put_once_and_workers_get_seeds(shared_runtime):
    puts: list[int] = []
    calls: list[tuple] = []

    def put(value, **kw):
        puts.append(getattr(value, "nbytes", 0))
        return rtml.put(value, **kw)

    eng = types.ModuleType("counting_engine")
    for name in ("remote", "get", "wait", "kill", "get_actor", "cancel"):
        setattr(eng, name, getattr(rtml, name))
    eng.put = put
    cfg = ESConfig(population=8, pairs_per_task=4, noise_size=500_000, eval_episodes=0)
    with ES(cfg, engine=eng) as es:
        real = es.workers[0].evaluate

        class Spy:
            def remote(self, *args):
                calls.append(args)
                return real.remote(*args)

        for w in es.workers:
            w.evaluate = Spy() if w is es.workers[0] else w.evaluate
        es.train(iterations=3, progress=False)
    big = [n for n in puts if n >= 500_000 * 4]
    assert len(big) == 1  # the table, once
    assert len(puts) == 1 + 3  # plus the (small) parameters once per iteration
    assert calls
    assert all(isinstance(a[1], int) and a[2] == 4 for a in calls)


def test_es_restore_repeats_the_next_iteration(shared_runtime):
    cfg = ESConfig(population=8, pairs_per_task=4, noise_size=200_000, seed=4)
    es = ES(cfg)
    try:
        es.train(iterations=2, progress=False)
        state = es.save()
        es.train_iteration()
        theta1 = es.theta.copy()
    finally:
        es.stop()
    es2 = ES.restore(state)
    try:
        assert es2.iteration == 2
        es2.train_iteration()
        assert np.array_equal(es2.theta, theta1)
    finally:
        es2.stop()


def test_es_goes_on_when_a_worker_is_killed(shared_runtime):
    with ES(ESConfig(population=8, pairs_per_task=2, noise_size=200_000)) as es:
        es.train(iterations=1, progress=False)
        rtml.kill(es.workers[1])
        m = es.train_iteration()
        assert m["worker_restarts"] == 1
        assert m["iteration"] == 2


def _position(moves):
    g = ConnectFour()
    for m in moves:
        g = g.play(m)
    return g


@pytest.mark.parametrize("mode", ["tree", "root"])
def test_parallel_mcts_takes_the_win_and_blocks(shared_runtime, mode):
    win = _position([0, 6, 1, 6, 2, 5])  # X to move: 3 wins
    r = mcts(win, 10.0, mode=mode, max_simulations=4000, seed=1)
    assert r.move == 3
    assert r.tasks > 0
    assert r.simulations >= 1000
    block = _position([0, 6, 1, 6, 2])  # O to move: must block 3
    assert mcts(block, 10.0, mode=mode, max_simulations=4000, seed=2).move == 3


@pytest.mark.parametrize("mode", ["tree", "root", "serial"])
def test_min_simulations_goes_on_past_the_budget(shared_runtime, mode):
    block = _position([0, 6, 1, 6, 2])  # O to move: must block 3
    r = mcts(block, 0.001, mode=mode, min_simulations=600, max_simulations=4000, seed=3)
    assert r.simulations >= 600
    assert r.move == 3


def test_tree_mcts_spawns_simulations_until_the_budget(shared_runtime):
    r = mcts(ConnectFour(), 1.0, mode="tree", num_workers=2, rollouts_per_task=4)
    # every task after the first 2 x num_workers was spawned from an earlier one's result
    assert r.tasks > 4
    assert r.simulations >= 4 * (r.tasks - 4)
    assert sum(r.visits.values()) >= r.simulations - 4 * 4
    assert set(r.visits) == set(range(7))
