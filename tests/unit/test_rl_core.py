"""rtml.rl's pieces without processes: networks, PPO's gradient, GAE, ES ranks, the env
runner stepping in-process, Connect Four and serial MCTS."""

from __future__ import annotations

import io
import pickle

import gymnasium as gym
import numpy as np
import pytest

from rtml.rl import (
    CategoricalMLPPolicy,
    ConnectFour,
    EnvError,
    EnvRunner,
    EpisodeError,
    Policy,
    PPOConfig,
    centered_ranks,
    compute_gae,
    make_env,
    mcts,
)
from rtml.rl._nn import MLP, Adam
from rtml.rl._ppo import ppo_loss_grad
from rtml.rl._util import ProgressLine, load_state, save_state


def test_mlp_backward_matches_finite_differences():
    rng = np.random.default_rng(0)
    net = MLP([3, 5, 4, 2], rng=rng)
    x = rng.standard_normal((6, 3))
    target = rng.standard_normal((6, 2))

    def loss() -> float:
        return float(((net.forward(x) - target) ** 2).sum())

    out, acts = net.forward_cached(x)
    g = net.backward(acts, 2 * (out - target))
    for i in rng.choice(len(net.flat), 12, replace=False):
        old = net.flat[i]
        net.flat[i] = old + 1e-6
        up = loss()
        net.flat[i] = old - 1e-6
        down = loss()
        net.flat[i] = old
        assert g[i] == pytest.approx((up - down) / 2e-6, rel=1e-4, abs=1e-6)


def test_ppo_loss_gradient_matches_finite_differences():
    rng = np.random.default_rng(1)
    pol = CategoricalMLPPolicy(4, 3, (8,), seed=3)
    pol.flat += rng.standard_normal(len(pol.flat)) * 0.3
    cfg = PPOConfig(ent_coef=0.05, clip=0.2)
    x = rng.standard_normal((20, 4))
    a = rng.integers(0, 3, 20)
    lp0 = np.log(np.full(20, 1 / 3)) + rng.standard_normal(20) * 0.1
    ad, rt = rng.standard_normal(20), rng.standard_normal(20)
    grad = np.zeros_like(pol.flat)
    ppo_loss_grad(pol, x, a, lp0, ad, rt, cfg, grad)
    scratch = np.zeros_like(grad)
    for i in rng.choice(len(pol.flat), 15, replace=False):
        old = pol.flat[i]
        pol.flat[i] = old + 1e-6
        up = ppo_loss_grad(pol, x, a, lp0, ad, rt, cfg, scratch)[4]
        pol.flat[i] = old - 1e-6
        down = ppo_loss_grad(pol, x, a, lp0, ad, rt, cfg, scratch)[4]
        pol.flat[i] = old
        assert grad[i] == pytest.approx((up - down) / 2e-6, rel=1e-3, abs=1e-6)


def test_gae_stops_at_termination_and_bootstraps_truncation():
    T, N = 3, 2
    batch = {
        "rewards": np.ones((T, N), np.float32),
        "values": np.full((T, N), 0.5, np.float32),
        "terminated": np.array([[False, False], [True, False], [False, False]]),
        "truncated": np.array([[False, False], [False, True], [False, False]]),
        "final_values": np.array([[0, 0], [0, 10.0], [0, 0]], np.float32),
        "last_values": np.array([2.0, 2.0], np.float32),
    }
    adv, ret = compute_gae(batch, gamma=0.9, lam=1.0)
    # env 0: step 1 terminates: delta = 1 - 0.5; step 0 = 1 + 0.9*0.5 - 0.5 + 0.9*adv1
    assert adv[1, 0] == pytest.approx(0.5)
    assert adv[0, 0] == pytest.approx(1 + 0.45 - 0.5 + 0.9 * 0.5)
    # env 1: step 1 truncated: bootstraps from its real last observation's value (10)
    assert adv[1, 1] == pytest.approx(1 + 0.9 * 10 - 0.5)
    assert adv[2, 1] == pytest.approx(1 + 0.9 * 2 - 0.5)  # the next episode: last_values
    assert np.allclose(ret, adv + 0.5)


def test_centered_ranks():
    r = centered_ranks(np.array([[10.0, -3.0], [5.0, 7.0]]))
    assert r.shape == (2, 2)
    assert r.min() == -0.5
    assert r.max() == 0.5
    assert r[0, 0] == 0.5
    assert r[0, 1] == -0.5
    assert np.allclose(sorted(r.reshape(-1)), [-0.5, -1 / 6, 1 / 6, 0.5])


def test_adam_state_round_trip_repeats_the_step():
    a, b = Adam(4, lr=0.1), Adam(4, lr=0.1)
    p1 = np.ones(4)
    a.step(p1, np.array([1.0, -1, 2, 0]))
    b.load(a.state())
    p2 = p1.copy()
    g = np.array([0.5, 0.5, -1, 3])
    a.step(p1, g)
    b.step(p2, g)
    assert np.array_equal(p1, p2)


def test_checkpoint_file_is_atomic_and_typed(tmp_path):
    path = str(tmp_path / "c.ckpt")
    save_state({"kind": "rtml.rl.PPO", "x": np.arange(3)}, path)
    assert load_state(path, "rtml.rl.PPO")["x"].tolist() == [0, 1, 2]
    with pytest.raises(ValueError, match=r"not a rtml\.rl\.ES checkpoint"):
        load_state(path, "rtml.rl.ES")
    assert [p.name for p in tmp_path.iterdir()] == ["c.ckpt"]


def test_progress_line_writes_return_and_rate():
    buf = io.StringIO()
    bar = ProgressLine("PPO", 1000, buf)
    bar.update(3, 500, 42.5, 1234.0, force=True)
    bar.close()
    text = buf.getvalue()
    assert "PPO it 3" in text
    assert "500/1,000 (50%)" in text
    assert "return 42.5" in text
    assert "1,234 steps/s" in text


# ---------------------------------------------------------------- env runner in-process
class FlakyEnv(gym.Env):
    """Raises in step at the given episode step of every ``fail_every``-th episode."""

    def __init__(self, fail_at: int = 3, fail_every: int = 2):
        self.observation_space = gym.spaces.Box(-1, 1, (2,), np.float32)
        self.action_space = gym.spaces.Discrete(2)
        self.fail_at, self.fail_every = fail_at, fail_every
        self.episode = -1
        self.t = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.episode += 1
        self.t = 0
        return np.zeros(2, np.float32), {}

    def step(self, action):
        self.t += 1
        if self.episode % self.fail_every == 0 and self.t == self.fail_at:
            raise RuntimeError("simulator exploded")
        return np.zeros(2, np.float32), 1.0, self.t >= 5, False, {}


class OutOfSpacePolicy(Policy):
    def compute_actions(self, obs, rng):
        return np.full(len(obs), 7), {}


def test_runner_batch_layout_and_episode_stats():
    r = EnvRunner("CartPole-v1", index=0, num_envs=3, seed=1)
    b = r.sample(None, 50)
    assert b["obs"].shape == (50, 3, 4)
    assert b["actions"].shape == (50, 3)
    assert b["env_steps"] == 150
    assert b["mask"].all()
    done = b["terminated"] | b["truncated"]
    assert len(b["episode_returns"]) == int(done.sum()) > 0
    assert all(x == y for x, y in zip(b["episode_returns"], b["episode_lengths"], strict=True))


def test_runner_drops_and_counts_an_episode_whose_env_raises():
    r = EnvRunner(FlakyEnv, index=4, num_envs=2, seed=0)
    b = r.sample(None, 20)
    assert b["episodes_dropped"] >= 2
    assert not b["mask"].all()
    assert "env 'FlakyEnv', runner 4" in b["errors"][0]
    assert "simulator exploded" in b["errors"][0]
    assert "step" in b["errors"][0]
    # the dropped episodes' steps are masked out; finished ones count 5 steps each
    assert b["episode_lengths"]
    assert set(b["episode_lengths"]) == {5}
    assert int(b["mask"].sum()) == b["env_steps"] - 2 * b["episodes_dropped"]


def test_runner_raises_after_consecutive_failures_with_env_runner_and_step():
    r = EnvRunner(
        FlakyEnv,
        index=1,
        num_envs=1,
        env_kwargs={"fail_at": 1, "fail_every": 1},
        max_consecutive_failures=3,
    )
    with pytest.raises(EpisodeError, match=r"env 'FlakyEnv', runner 1, env index 0, step") as e:
        r.sample(None, 10)
    assert e.value.runner == 1
    assert e.value.env == "FlakyEnv"
    assert pickle.loads(pickle.dumps(e.value)).step == e.value.step


def test_action_outside_the_space_is_a_dropped_episode_then_an_error():
    r = EnvRunner(
        "CartPole-v1", index=2, num_envs=2, policy=OutOfSpacePolicy(), max_consecutive_failures=2
    )
    with pytest.raises(EpisodeError, match=r"action 7, outside the action space Discrete\(2\)"):
        r.sample(None, 10)
    r2 = EnvRunner("CartPole-v1", index=2, num_envs=1, policy=OutOfSpacePolicy())
    b = r2.sample(None, 3)
    assert b["episodes_dropped"] == 3
    assert b["env_steps"] == 0


def test_unknown_env_id_names_the_env_and_the_fix():
    with pytest.raises(EnvError, match=r"'CartPol-v1' does not exist \(runner 3\)") as e:
        make_env("CartPol-v1", runner=3)
    assert "pprint_registry" in str(e.value)
    assert e.value.runner == 3
    with pytest.raises(EnvError, match="returned int, not an environment"):
        make_env(lambda: 3)


# ---------------------------------------------------------------- Connect Four, MCTS
def play(moves):
    g = ConnectFour()
    for m in moves:
        g = g.play(m)
    return g


@pytest.mark.parametrize(
    ("moves", "winner"),
    [
        ([0, 6, 1, 6, 2, 6, 3], 0),  # horizontal
        ([0, 1, 0, 1, 0, 1, 0], 0),  # vertical
        ([0, 1, 1, 2, 2, 3, 2, 3, 3, 6, 3], 0),  # diagonal /
        ([0, 3, 1, 1, 2, 2, 0, 0, 5, 1, 6, 0], 1),  # diagonal \ by the second player
    ],
)
def test_connect_four_detects_wins(moves, winner):
    g = play(moves[:-1])
    assert not g.is_terminal()
    g = g.play(moves[-1])
    assert g.is_terminal()
    assert g.winner() == winner
    assert g.legal_moves() == []


def test_connect_four_rejects_illegal_moves_and_full_columns():
    g = play([2] * 6)
    assert 2 not in g.legal_moves()
    with pytest.raises(ValueError, match="illegal Connect Four move 2"):
        g.play(2)
    with pytest.raises(ValueError, match="illegal"):
        g.play(7)
    assert pickle.loads(pickle.dumps(g)) == g


def test_random_rollouts_end_in_a_legal_result():
    import random

    rng = random.Random(0)
    results = [ConnectFour().rollout(rng) for _ in range(300)]
    assert set(results) <= {0, 1, None}
    assert results.count(0) > 50
    assert results.count(1) > 50


def test_serial_mcts_takes_a_win_and_blocks_a_loss():
    win = play([0, 6, 1, 6, 2, 5])  # X to move, 3 wins
    assert mcts(win, 5.0, mode="serial", max_simulations=3000).move == 3
    block = play([0, 6, 1, 6, 2])  # O to move, must block 3
    assert mcts(block, 5.0, mode="serial", max_simulations=3000).move == 3
    with pytest.raises(ValueError, match="finished game"):
        mcts(play([0, 1, 0, 1, 0, 1, 0]), 0.1, mode="serial")
    with pytest.raises(ValueError, match="unknown mcts mode"):
        mcts(ConnectFour(), 0.1, mode="leaf")


def test_the_dashboard_panel_lists_live_trainers():
    from types import SimpleNamespace

    from rtml.dashboard._panels import panels_view
    from rtml.rl import _panel

    class FakePPO:
        def __init__(self):
            self.config = SimpleNamespace(env="CartPole-v1")
            self.history = [
                {
                    "iteration": 3,
                    "env_steps": 6144,
                    "return_mean": 42.5,
                    "env_steps_per_s": 9876.4,
                    "learner_s": 0.0123,
                    "episodes_dropped": 1,
                }
            ]
            self.group = SimpleNamespace(restarts=2)

    trainer = FakePPO()
    _panel.track(trainer)
    (panel,) = [p for p in panels_view() if p["name"] == "rl"]
    (row,) = [r for r in panel["rows"] if r["algorithm"] == "FakePPO"]
    assert row == {
        "algorithm": "FakePPO",
        "env": "CartPole-v1",
        "iteration": 3,
        "env_steps": 6144,
        "return_mean": 42.5,
        "env_steps_per_s": 9876,
        "learner_ms": 12.3,
        "episodes_dropped": 1,
        "restarts": 2,
    }
    del trainer, row, panel
    import gc

    gc.collect()
    (panel,) = [p for p in panels_view() if p["name"] == "rl"]
    assert not [r for r in panel["rows"] if r["algorithm"] == "FakePPO"]  # gone with it
