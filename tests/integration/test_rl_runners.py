"""Env runners on real actors: batches, asynchronous sampling, bad input, crashed runners."""

from __future__ import annotations

import os
import signal
import time

import gymnasium as gym
import numpy as np
import pytest

import rtml
from rtml.rl import PPO, EnvError, EnvRunnerGroup, EpisodeError


class FlakyEnv(gym.Env):
    """Raises in step at episode step 3 of every other episode (always, with fail_every=1)."""

    def __init__(self, fail_every: int = 2):
        self.observation_space = gym.spaces.Box(-1, 1, (2,), np.float32)
        self.action_space = gym.spaces.Discrete(2)
        self.fail_every = fail_every
        self.episode, self.t = -1, 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.episode += 1
        self.t = 0
        return np.zeros(2, np.float32), {}

    def step(self, action):
        self.t += 1
        if self.episode % self.fail_every == 0 and self.t == 3:
            raise RuntimeError("simulator exploded")
        return np.zeros(2, np.float32), 1.0, self.t >= 5, False, {}


class SlowOnRunnerOne(gym.Env):
    """Steps take 20 ms on runner 1 (its reset seeds are 1000-1999), no time elsewhere."""

    def __init__(self):
        self.observation_space = gym.spaces.Box(-1, 1, (2,), np.float32)
        self.action_space = gym.spaces.Discrete(2)
        self.slow = False

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        if seed is not None:
            self.slow = 1000 <= seed < 2000
        return np.zeros(2, np.float32), {}

    def step(self, action):
        if self.slow:
            time.sleep(0.02)
        return np.zeros(2, np.float32), 1.0, False, False, {}


def broken():
    raise OSError("no simulator licence")


def test_group_samples_every_runner(shared_runtime):
    g = EnvRunnerGroup("CartPole-v1", num_runners=2, envs_per_runner=4, seed=3)
    try:
        batches = g.sample(None, 25, timeout=60)
        assert sorted(b["runner"] for b in batches) == [0, 1]
        assert all(b["obs"].shape == (25, 4, 4) and b["env_steps"] == 100 for b in batches)
        assert g.action_space.n == 2
        # different seeds per runner: different trajectories
        assert not np.array_equal(batches[0]["obs"], batches[1]["obs"])
    finally:
        g.stop()


def test_a_slow_runner_does_not_stall_the_others(shared_runtime):
    g = EnvRunnerGroup(SlowOnRunnerOne, num_runners=2, envs_per_runner=1)
    try:
        g.submit(0, None, 10)
        g.submit(1, None, 10)  # 10 steps x 20 ms
        fast = []
        for _ in range(3):  # runner 0 comes back three times while runner 1 is still busy
            b = g.next_batch(timeout=30)
            fast.append(b["runner"])
            if b["runner"] == 0 and len(fast) < 3:
                g.submit(0, None, 10)
        assert fast == [0, 0, 0]
        assert g.next_batch(timeout=30)["runner"] == 1
    finally:
        g.stop()


def test_unknown_env_id_fails_at_once_naming_env_and_runner(shared_runtime):
    with pytest.raises(EnvError, match=r"'CartPol-v1' does not exist \(checked before start"):
        EnvRunnerGroup("CartPol-v1", num_runners=2, envs_per_runner=1, timeout=60)
    # an env that cannot be made inside the runner: its error, naming env and runner
    with pytest.raises(
        EnvError,
        match=r"creating environment 'broken' \(runner \d\) raised "
        r"OSError: no simulator licence",
    ):
        EnvRunnerGroup(broken, num_runners=2, envs_per_runner=1, timeout=60)
    with pytest.raises(EnvError, match="'NoSuchEnv-v0' does not exist"):
        PPO(env="NoSuchEnv-v0")


def test_failing_episodes_are_dropped_and_counted(shared_runtime):
    g = EnvRunnerGroup(FlakyEnv, num_runners=2, envs_per_runner=2)
    try:
        batches = g.sample(None, 30, timeout=60)
        assert g.episodes_dropped == sum(b["episodes_dropped"] for b in batches) > 0
        assert any("simulator exploded" in e and "runner" in e for e in g.errors)
        assert all(b["episode_returns"] for b in batches)  # the other episodes went on
    finally:
        g.stop()


def test_an_env_that_always_fails_raises_with_env_runner_and_step(shared_runtime):
    g = EnvRunnerGroup(
        FlakyEnv,
        num_runners=1,
        envs_per_runner=1,
        env_kwargs={"fail_every": 1},
        max_consecutive_failures=2,
    )
    try:
        g.submit(0, None, 50)
        with pytest.raises(
            EpisodeError, match=r"env 'FlakyEnv', runner 0, env index 0, step \d+"
        ) as e:
            g.next_batch(timeout=60)
        assert type(e.value) is EpisodeError
        assert e.value.runner == 0
    finally:
        g.stop()


def test_a_killed_runner_is_replaced_and_training_goes_on(shared_runtime):
    ppo = PPO(num_runners=2, envs_per_runner=2, rollout_steps=32, num_epochs=2)
    try:
        ppo.train(iterations=2, progress=False)
        assert ppo.group.busy() == {0, 1}  # async sampling: requests in flight
        rtml.kill(ppo.group.runners[0])
        ms = ppo.train(iterations=4, progress=False)
        assert ppo.group.restarts >= 1
        assert ms[-1]["runner_restarts"] >= 1
        assert [m["iteration"] for m in ms] == [3, 4, 5, 6]
        assert ms[-1]["env_steps"] > ms[0]["env_steps"]
        assert any("runner 0 died" in e for e in ppo.group.errors)
        os.kill(ppo.group.pids(timeout=30)[1], signal.SIGKILL)  # a hard crash this time
        ms = ppo.train(iterations=3, progress=False)
        assert ppo.group.restarts >= 2
        assert ms[-1]["iteration"] == 9
    finally:
        ppo.stop()
