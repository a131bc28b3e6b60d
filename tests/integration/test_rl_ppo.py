"""PPO on real runners: learning progresses, checkpoints restore the exact next update."""

from __future__ import annotations

import io

import numpy as np
import pytest

from rtml.rl import PPO, EnvError, PPOConfig


def test_ppo_learning_progresses_on_cartpole(shared_runtime):
    buf = io.StringIO()
    with PPO(PPOConfig(seed=1)) as ppo:
        ms = ppo.train(iterations=12, progress=True, file=buf)
    first, last = ms[0]["return_mean"], ms[-1]["return_mean"]
    assert last > first + 15, [m["return_mean"] for m in ms]
    for k in (
        "env_steps",
        "env_steps_per_s",
        "learner_s",
        "sample_s",
        "policy_loss",
        "vf_loss",
        "entropy",
        "kl",
        "episodes_dropped",
        "runner_restarts",
        "time_s",
    ):
        assert k in ms[-1], k
    assert ms[-1]["env_steps"] == 12 * 1024
    assert ms[-1]["env_steps_per_s"] > 0
    assert "PPO it 12" in buf.getvalue()
    assert "steps/s" in buf.getvalue()


def test_checkpoint_restore_gives_the_same_next_update(shared_runtime, tmp_path):
    path = str(tmp_path / "ppo.ckpt")
    cfg = PPOConfig(num_runners=2, envs_per_runner=2, rollout_steps=32, seed=5)
    ppo = PPO(cfg)
    try:
        ppo.train(iterations=2, progress=False)
        saved_w = ppo.policy.get_weights()
        ppo.save(path)
        batches = ppo.group.sample(saved_w, 32, timeout=60)
        m1 = ppo.update(batches)
        w1, adam1 = ppo.policy.get_weights(), ppo.optimizer.state()
    finally:
        ppo.stop()
    assert not np.array_equal(w1, saved_w)
    ppo2 = PPO.restore(path)
    try:
        assert ppo2.iteration == 2
        assert ppo2.env_steps == 2 * 128
        assert np.array_equal(ppo2.policy.get_weights(), saved_w)
        m2 = ppo2.update(batches)
        assert np.array_equal(ppo2.policy.get_weights(), w1)
        assert ppo2.optimizer.state()["t"] == adam1["t"]
        assert np.array_equal(ppo2.optimizer.state()["v"], adam1["v"])
        assert {k: v for k, v in m1.items() if k != "learner_s"} == {
            k: v for k, v in m2.items() if k != "learner_s"
        }
        ms = ppo2.train(iterations=1, progress=False)  # and training goes on from there
        assert ms[0]["iteration"] == 3
        assert len(ppo2.history) == 3
    finally:
        ppo2.stop()


def test_ppo_rejects_what_it_cannot_learn(shared_runtime):
    with pytest.raises(EnvError, match="Discrete action spaces"):
        PPO(env="Pendulum-v1")
    with (
        PPO(num_runners=1, envs_per_runner=1) as ppo,
        pytest.raises(ValueError, match="needs iterations="),
    ):
        ppo.train()
