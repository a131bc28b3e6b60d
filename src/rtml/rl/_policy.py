"""Policies that runners call: ``compute_actions(obs, rng) -> (actions, extras)``.

A policy is a plain picklable object: each runner holds its own copy and the learner sends
new weights with every sample request (a flat float64 vector, a few KB).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rtml.rl._errors import EnvError
from rtml.rl._nn import MLP, flat_size

__all__ = ["CategoricalMLPPolicy", "DeterministicMLPPolicy", "Policy", "RandomPolicy", "space_dims"]


def space_dims(observation_space: Any, action_space: Any, env: str = "?") -> tuple[int, Any]:
    """(observation size, action description) for the spaces rtml.rl's MLPs handle.

    The action description is ``("discrete", n)`` or ``("box", low, high)``.

    Raises:
        EnvError: an observation space that is not a flat Box, or an action space that is
            neither Discrete nor a flat Box.
    """
    import gymnasium as gym

    if not isinstance(observation_space, gym.spaces.Box) or len(observation_space.shape) != 1:
        raise EnvError(
            f"env {env!r}: rtml.rl's MLP policies need a flat Box observation "
            f"space, got {observation_space}; wrap the env (e.g. "
            "gymnasium.wrappers.FlattenObservation)",
            env,
        )
    obs_dim = int(observation_space.shape[0])
    if isinstance(action_space, gym.spaces.Discrete):
        return obs_dim, ("discrete", int(action_space.n))
    if isinstance(action_space, gym.spaces.Box) and len(action_space.shape) == 1:
        return obs_dim, (
            "box",
            np.asarray(action_space.low, dtype=np.float64),
            np.asarray(action_space.high, dtype=np.float64),
        )
    raise EnvError(
        f"env {env!r}: action space {action_space} is not supported (Discrete or a flat Box)", env
    )


class Policy:
    """What a runner calls. Subclass it for your own policy.

    ``compute_actions`` gets a batch of observations ``(n, obs_dim)`` and a numpy Generator,
    and returns ``(actions, extras)``: ``actions`` has one entry per observation, ``extras``
    maps names to arrays of the same length (kept per step in the batch, e.g. ``logp``).
    """

    def compute_actions(
        self, obs: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Actions for a batch of observations; see the class docstring."""
        raise NotImplementedError(f"{type(self).__name__} must define compute_actions")

    def get_weights(self) -> np.ndarray | None:
        """The policy's parameters (None: it has none)."""
        return None

    def set_weights(self, weights: np.ndarray | None) -> None:
        """Load parameters from ``get_weights()`` (None: keep the current ones)."""


class RandomPolicy(Policy):
    """Uniform random actions from ``action_space`` (a baseline and for throughput runs)."""

    def __init__(self, action_space: Any) -> None:
        self.action_space = action_space

    def compute_actions(
        self, obs: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        n = len(obs)
        import gymnasium as gym

        if isinstance(self.action_space, gym.spaces.Discrete):
            return rng.integers(0, int(self.action_space.n), n) + int(self.action_space.start), {}
        return np.array([self.action_space.sample() for _ in range(n)]), {}


class CategoricalMLPPolicy(Policy):
    """An actor-critic for discrete actions: two tanh MLPs (logits and value).

    Args:
        obs_dim: observation size; num_actions: size of the Discrete action space.
        hidden: hidden widths of both networks.
        seed: initialises the weights.
    """

    def __init__(
        self, obs_dim: int, num_actions: int, hidden: tuple[int, ...] = (64, 64), seed: int = 0
    ) -> None:
        self.obs_dim, self.num_actions, self.hidden = obs_dim, num_actions, tuple(hidden)
        pi_sizes = [obs_dim, *hidden, num_actions]
        vf_sizes = [obs_dim, *hidden, 1]
        self.n_pi = flat_size(pi_sizes)
        self.flat = np.zeros(self.n_pi + flat_size(vf_sizes))
        rng = np.random.default_rng(seed)
        self.pi = MLP(pi_sizes, self.flat[: self.n_pi], rng, out_scale=0.01)
        self.vf = MLP(vf_sizes, self.flat[self.n_pi :], rng, out_scale=1.0)

    def __getstate__(self) -> dict[str, Any]:
        return {"args": (self.obs_dim, self.num_actions, self.hidden), "flat": self.flat}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(*state["args"])  # type: ignore[misc]
        self.flat[...] = state["flat"]

    def get_weights(self) -> np.ndarray:
        return self.flat.copy()

    def set_weights(self, weights: np.ndarray | None) -> None:
        if weights is not None:
            self.flat[...] = weights

    def logits(self, obs: np.ndarray) -> np.ndarray:
        """Action logits for a batch of observations."""
        return self.pi.forward(obs)

    def value(self, obs: np.ndarray) -> np.ndarray:
        """State values for a batch of observations, shape ``(n,)``."""
        return self.vf.forward(obs)[:, 0]

    def compute_actions(
        self, obs: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        logits = self.pi.forward(obs)
        z = logits - logits.max(axis=1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(axis=1, keepdims=True)
        u = rng.random((len(obs), 1))
        actions = (p.cumsum(axis=1) < u).sum(axis=1)
        actions = np.minimum(actions, self.num_actions - 1)
        logp = np.log(p[np.arange(len(obs)), actions] + 1e-12)
        return actions, {"logp": logp, "values": self.vf.forward(obs)[:, 0]}


class DeterministicMLPPolicy(Policy):
    """A deterministic tanh MLP for ES: argmax of the outputs (Discrete) or outputs squashed by
    tanh into the Box's bounds.

    Args:
        obs_dim: observation size; action: ``space_dims``'s action description.
        hidden: hidden widths.
        seed: initialises the weights.
    """

    def __init__(
        self, obs_dim: int, action: Any, hidden: tuple[int, ...] = (32,), seed: int = 0
    ) -> None:
        self.obs_dim, self.action, self.hidden = obs_dim, action, tuple(hidden)
        out = action[1] if action[0] == "discrete" else len(action[1])
        self.net = MLP([obs_dim, *hidden, out], rng=np.random.default_rng(seed), out_scale=0.1)

    def __getstate__(self) -> dict[str, Any]:
        return {"args": (self.obs_dim, self.action, self.hidden), "flat": self.net.flat}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(*state["args"])  # type: ignore[misc]
        self.net.flat[...] = state["flat"]

    @property
    def num_params(self) -> int:
        """Size of the flat parameter vector."""
        return len(self.net.flat)

    def get_weights(self) -> np.ndarray:
        return self.net.flat.copy()

    def set_weights(self, weights: np.ndarray | None) -> None:
        if weights is not None:
            self.net.flat[...] = weights

    def act(self, obs: np.ndarray) -> Any:
        """The action for one observation (as the env's step takes it)."""
        out = self.net.forward(obs[None, :])[0]
        if self.action[0] == "discrete":
            return int(out.argmax())
        low, high = self.action[1], self.action[2]
        return low + (np.tanh(out) + 1.0) * 0.5 * (high - low)

    def compute_actions(
        self, obs: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        out = self.net.forward(obs)
        if self.action[0] == "discrete":
            return out.argmax(axis=1), {}
        low, high = self.action[1], self.action[2]
        return low + (np.tanh(out) + 1.0) * 0.5 * (high - low), {}
