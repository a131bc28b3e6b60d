"""Reinforcement learning on rtml (or Ray): env runners, PPO, evolution strategies, MCTS.

::

    EnvRunnerGroup ─ actors, each stepping N gymnasium envs ─▶ batches via wait(first done)
        └─▶ PPO: GAE + minibatch epochs (numpy MLP) ─▶ new weights to the runners
    ES: noise table put once ─▶ workers get (params, seed) ─▶ return (seed, R+, R-) ─▶ ranks
    MCTS: tree on the driver; each simulation is a task, its result backs up and spawns the
          next one (virtual loss spreads them); or root-parallel trees merged

See the README's "Reinforcement learning (rtml.rl)" section.
"""

from rtml.rl._errors import EnvError, EpisodeError, RLError
from rtml.rl._es import ES, ESConfig, ESWorker, centered_ranks
from rtml.rl._games import ConnectFour
from rtml.rl._mcts import MCTSResult, mcts
from rtml.rl._policy import CategoricalMLPPolicy, DeterministicMLPPolicy, Policy, RandomPolicy
from rtml.rl._ppo import PPO, PPOConfig, compute_gae
from rtml.rl._runner import EnvRunner, EnvRunnerGroup, make_env

__all__ = [
    "ES",
    "PPO",
    "CategoricalMLPPolicy",
    "ConnectFour",
    "DeterministicMLPPolicy",
    "ESConfig",
    "ESWorker",
    "EnvError",
    "EnvRunner",
    "EnvRunnerGroup",
    "EpisodeError",
    "MCTSResult",
    "PPOConfig",
    "Policy",
    "RLError",
    "RandomPolicy",
    "centered_ranks",
    "compute_gae",
    "make_env",
    "mcts",
]
