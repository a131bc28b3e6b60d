"""Errors of rtml.rl: each names the environment, the runner and the step where it happened."""

from __future__ import annotations

__all__ = ["EnvError", "EpisodeError", "RLError"]


class RLError(Exception):
    """Base class of rtml.rl's errors."""


class EnvError(RLError, ValueError):
    """An environment cannot be made (unknown id, bad creator) or has a space rtml.rl can't use.

    Attributes:
        env: the environment id or creator's name.
        runner: the runner index (None: raised on the driver).
    """

    def __init__(self, message: str, env: str = "?", runner: int | None = None) -> None:
        super().__init__(message)
        self.env, self.runner = env, runner

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (type(self), (str(self), self.env, self.runner))


class EpisodeError(RLError, RuntimeError):
    """An episode failed: the env raised in ``step``/``reset``, or the policy's action was
    outside the action space.

    A runner drops such an episode and counts it (``episodes_dropped`` in the batch and in the
    metrics); this error is raised only when a runner sees ``max_consecutive_failures`` of
    them in a row with no episode finishing in between (the env or policy is broken, not
    unlucky).

    Attributes:
        env: the environment id; runner: the runner index; env_index: which of the runner's
        envs; step: the runner's env-step counter when it failed (its steps so far).
    """

    def __init__(
        self, message: str, env: str = "?", runner: int = -1, env_index: int = -1, step: int = -1
    ) -> None:
        super().__init__(message)
        self.env, self.runner, self.env_index, self.step = env, runner, env_index, step

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (type(self), (str(self), self.env, self.runner, self.env_index, self.step))
