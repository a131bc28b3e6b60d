"""Env runners: actors that each step a vector of gymnasium envs and return batches.

::

    EnvRunnerGroup ── sample.remote(weights, T) ──▶ EnvRunner i (actor): N envs, a Policy copy
         ▲                                            step all N envs T times, reset finished
         │ wait(in_flight, num_returns=1)             ones, drop failing episodes
         └──────── batch: [T, N] arrays + episode stats ◀─┘
    a runner whose process died is replaced (same index, fresh seed) and its request re-sent

Batches are dicts of numpy arrays laid out ``[T, N]`` (step, env): ``obs``, ``actions``,
``rewards``, ``terminated``, ``truncated``, ``mask`` (False for steps of a dropped episode),
the policy's extras (``logp``, ``values``), ``final_values`` (value of the last observation of
a truncated episode), ``last_values`` (bootstrap for the fragment's end), plus the returns and
lengths of the episodes that ended, ``episodes_dropped`` and ``errors``.
"""

from __future__ import annotations

import collections
import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from rtml.rl._errors import EnvError, EpisodeError, RLError
from rtml.rl._policy import Policy, RandomPolicy
from rtml.util.engine import optional_import, resolve

__all__ = ["EnvRunner", "EnvRunnerGroup", "env_name", "make_env"]

_DEATH = {
    "ActorDiedError",
    "RayActorError",
    "ActorUnavailableError",
    "WorkerCrashedError",
    "NodeDiedError",
    "ActorError",
}


def env_name(env: Any) -> str:
    """A printable name for an env id or creator."""
    return env if isinstance(env, str) else getattr(env, "__name__", type(env).__name__)


def make_env(
    env: str | Callable[[], Any],
    runner: int | None = None,
    env_kwargs: dict[str, Any] | None = None,
) -> Any:
    """``gymnasium.make(env, **env_kwargs)`` for an id, or ``env()`` for a creator.

    Raises:
        EnvError: the id is not registered, or the creator raised / returned no env.
    """
    gym = optional_import("gymnasium", "rl", "rtml.rl")
    where = f" (runner {runner})" if runner is not None else ""
    if isinstance(env, str):
        try:
            return gym.make(env, **(env_kwargs or {}))
        except gym.error.Error as e:
            raise EnvError(
                f"environment {env!r} does not exist{where}: {e}. Use a registered "
                "id (gymnasium.pprint_registry() lists them) or pass a function "
                "that creates the env, e.g. env=lambda: MyEnv()",
                env,
                runner,
            ) from e
    if not callable(env):
        raise EnvError(
            f"env must be a gymnasium id or a function returning an env, got {type(env).__name__}",
            env_name(env),
            runner,
        )
    try:
        made = env(**(env_kwargs or {}))
    except Exception as e:
        raise EnvError(
            f"creating environment {env_name(env)!r}{where} raised {type(e).__name__}: {e}",
            env_name(env),
            runner,
        ) from e
    if not hasattr(made, "step") or not hasattr(made, "reset"):
        raise EnvError(
            f"env creator {env_name(env)!r}{where} returned {type(made).__name__}, "
            "not an environment (it needs reset() and step())",
            env_name(env),
            runner,
        )
    return made


def _find_rl_error(e: BaseException | None) -> RLError | None:
    """The RLError inside an engine error (a TaskError cause, an actor's constructor)."""
    found, seen = None, 0
    while e is not None and seen < 8:  # the deepest one is the original, not a wrapper
        if isinstance(e, RLError):
            found = e
        nxt = getattr(e, "cause", None)
        e = nxt if isinstance(nxt, BaseException) else e.__cause__
        seen += 1
    return found


def _is_death(e: BaseException) -> bool:
    """The actor's process died (restart it), not its constructor raising (Ray keeps only
    the message of a constructor's error: ``actor_init_failed``)."""
    if getattr(e, "_actor_init_failed", False):
        return False
    return any(c.__name__ in _DEATH for c in type(e).__mro__)


def _check_id(env: Any) -> None:
    """Fail on the driver, before any actor starts, for an id gymnasium does not know."""
    if isinstance(env, str):
        gym = optional_import("gymnasium", "rl", "rtml.rl")
        try:
            gym.spec(env)
        except gym.error.Error as e:
            raise EnvError(
                f"environment {env!r} does not exist (checked before starting the "
                f"runners): {e}. Use a registered id (gymnasium.pprint_registry() "
                "lists them) or pass a function that creates the env, e.g. "
                "env=lambda: MyEnv()",
                env,
                None,
            ) from e


def _fresh(e: RLError) -> RLError:
    """A copy of an RLError without the engine's wrapper class (same type, same message)."""
    red: Any = e.__reduce__()
    fresh: RLError = red[0](*red[1])
    return fresh


class EnvRunner:
    """Steps ``num_envs`` environments with a policy; meant to run as an actor.

    Args:
        env: a gymnasium id (``"CartPole-v1"``) or a function returning an env.
        index: this runner's number (in error messages and seeds).
        num_envs: environments stepped together (one batched policy call per step).
        policy: a :class:`Policy` (None: random actions).
        seed: base seed; env j of runner i is first reset with
            ``seed + 1000 * i + j + 1_000_000 * generation``.
        generation: how many times this runner index was restarted.
        env_kwargs: passed to ``gymnasium.make`` or the creator.
        max_consecutive_failures: failing episodes in a row (per env, none finishing between)
            before ``sample`` raises instead of dropping.

    Raises:
        EnvError: the env cannot be made.
    """

    def __init__(
        self,
        env: str | Callable[[], Any],
        index: int = 0,
        num_envs: int = 8,
        policy: Policy | None = None,
        seed: int = 0,
        generation: int = 0,
        env_kwargs: dict[str, Any] | None = None,
        max_consecutive_failures: int = 20,
    ) -> None:
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        self.env_spec, self.index, self.num_envs = env, index, num_envs
        self.name = env_name(env)
        self.env_kwargs = env_kwargs
        self.max_failures = max_consecutive_failures
        self.envs = [make_env(env, index, env_kwargs) for _ in range(num_envs)]
        self.action_space = self.envs[0].action_space
        self.observation_space = self.envs[0].observation_space
        self.policy = policy if policy is not None else RandomPolicy(self.action_space)
        base = seed + 1000 * index + 1_000_000 * generation
        self.rng = np.random.default_rng(base)
        self.steps = 0
        self.episodes_dropped = 0
        self.failures = [0] * num_envs
        self.ep_return = np.zeros(num_envs)
        self.ep_len = np.zeros(num_envs, dtype=np.int64)
        first = [self._reset(j, base + j) for j in range(num_envs)]
        self.obs = np.array(first, dtype=np.float64).reshape(num_envs, -1)
        import gymnasium as gym

        self._discrete = isinstance(self.action_space, gym.spaces.Discrete)

    # ------------------------------------------------------------------ helpers
    def _reset(self, j: int, seed: int | None = None) -> Any:
        try:
            o, _ = self.envs[j].reset(seed=seed)
            return o
        except Exception as e:
            if self.failures[j] >= self.max_failures:
                raise EpisodeError(
                    self._where(j, f"reset raised {type(e).__name__}: {e}"),
                    self.name,
                    self.index,
                    j,
                    self.steps,
                ) from e
            self.failures[j] += 1
            self.envs[j] = make_env(self.env_spec, self.index, self.env_kwargs)
            return self._reset(j, seed)

    def _where(self, j: int, what: str) -> str:
        return (
            f"env {self.name!r}, runner {self.index}, env index {j}, step {self.steps} "
            f"(episode step {int(self.ep_len[j])}): {what}"
        )

    def _fail(self, j: int, what: str, errors: list[str]) -> None:
        msg = self._where(j, what)
        self.failures[j] += 1
        if self.failures[j] > self.max_failures:
            raise EpisodeError(
                f"{msg}; {self.failures[j]} episodes in a row failed, so the "
                "env or the policy is broken: fix it (episodes that fail now "
                "and then are dropped and counted instead)",
                self.name,
                self.index,
                j,
                self.steps,
            )
        errors.append(msg)
        self.episodes_dropped += 1
        self.ep_return[j] = 0.0
        self.ep_len[j] = 0
        self.obs[j] = np.asarray(self._reset(j), dtype=np.float64).reshape(-1)

    def _bad_actions(self, actions: np.ndarray) -> np.ndarray:
        if self._discrete and np.issubdtype(actions.dtype, np.integer) and actions.ndim == 1:
            lo = int(self.action_space.start)
            return (actions < lo) | (actions >= lo + int(self.action_space.n))
        return np.array([not self.action_space.contains(a) for a in actions])

    # ------------------------------------------------------------------ API
    def spaces(self) -> tuple[Any, Any]:
        """(observation_space, action_space) of the envs."""
        return self.observation_space, self.action_space

    def pid(self) -> int:
        """This runner's process id."""
        return os.getpid()

    def sample(self, weights: np.ndarray | None, num_steps: int) -> dict[str, Any]:
        """Step every env ``num_steps`` times with the policy at ``weights``.

        Args:
            weights: the policy's parameters (None: keep the current ones).
            num_steps: steps per env (the batch has ``num_steps * num_envs`` rows).

        Returns:
            A batch dict (see the module docstring).

        Raises:
            EpisodeError: ``max_consecutive_failures`` episodes of one env failed in a row.
        """
        t0 = time.perf_counter()
        pol = self.policy
        pol.set_weights(weights)
        T, N = num_steps, self.num_envs
        value_fn = getattr(pol, "value", None)
        obs_buf = np.empty((T, N, self.obs.shape[1]), dtype=np.float32)
        rew = np.zeros((T, N), dtype=np.float32)
        term = np.zeros((T, N), dtype=bool)
        trunc = np.zeros((T, N), dtype=bool)
        mask = np.ones((T, N), dtype=bool)
        final_values = np.zeros((T, N), dtype=np.float32)
        act_buf: np.ndarray | None = None
        extras: dict[str, np.ndarray] = {}
        ep_start = [0] * N
        returns: list[float] = []
        lengths: list[int] = []
        errors: list[str] = []
        steps0, dropped0 = self.steps, self.episodes_dropped
        envs, rng = self.envs, self.rng
        for t in range(T):
            obs_buf[t] = self.obs
            actions, ex = pol.compute_actions(self.obs, rng)
            actions = np.asarray(actions)
            if act_buf is None:
                act_buf = np.zeros((T, *actions.shape), dtype=actions.dtype)
            act_buf[t] = actions
            for k, v in ex.items():
                if k not in extras:
                    extras[k] = np.zeros((T, *np.shape(v)), dtype=np.float32)
                extras[k][t] = v
            bad = self._bad_actions(actions)
            final_obs: list[np.ndarray] = []
            final_at: list[int] = []
            for j in range(N):
                a = actions[j]
                failed = None
                if bad[j]:
                    failed = (
                        f"the policy returned action {np.asarray(a).tolist()!r}, outside the action space "
                        f"{self.action_space}"
                    )
                else:
                    try:
                        o, r, te, tr, _ = envs[j].step(int(a) if self._discrete else a)
                    except Exception as e:
                        failed = f"step raised {type(e).__name__}: {e}"
                if failed is not None:
                    mask[ep_start[j] : t + 1, j] = False
                    term[t, j] = True  # cut the advantage recursion at the dropped episode
                    self._fail(j, failed, errors)
                    ep_start[j] = t + 1
                    continue
                self.steps += 1
                rew[t, j] = r
                self.ep_return[j] += r
                self.ep_len[j] += 1
                if te or tr:
                    term[t, j] = bool(te)
                    trunc[t, j] = not te
                    if not te and value_fn is not None:
                        final_obs.append(np.asarray(o, dtype=np.float64).reshape(-1))
                        final_at.append(j)
                    returns.append(float(self.ep_return[j]))
                    lengths.append(int(self.ep_len[j]))
                    self.ep_return[j] = 0.0
                    self.ep_len[j] = 0
                    self.failures[j] = 0
                    o = self._reset(j)
                    ep_start[j] = t + 1
                self.obs[j] = o
            if final_at:
                final_values[t, final_at] = value_fn(np.stack(final_obs))  # type: ignore[misc]
        batch: dict[str, Any] = {
            "obs": obs_buf,
            "actions": act_buf,
            "rewards": rew,
            "terminated": term,
            "truncated": trunc,
            "mask": mask,
            "final_values": final_values,
            "last_values": (
                value_fn(self.obs).astype(np.float32)
                if value_fn is not None
                else np.zeros(N, dtype=np.float32)
            ),
            "episode_returns": returns,
            "episode_lengths": lengths,
            "episodes_dropped": self.episodes_dropped - dropped0,
            "errors": errors,
            "env_steps": self.steps - steps0,
            "runner": self.index,
            "sample_s": time.perf_counter() - t0,
        }
        batch.update(extras)
        return batch


class EnvRunnerGroup:
    """A set of :class:`EnvRunner` actors with asynchronous sampling and crash recovery.

    Example::

        group = EnvRunnerGroup("CartPole-v1", num_runners=2, envs_per_runner=8)
        batches = group.sample(None, num_steps=64, timeout=30)   # random policy
        group.stop()

    Args:
        env: a gymnasium id or a function returning an env (picklable: it runs in the
            runners' processes).
        num_runners: runner actors.
        envs_per_runner: environments each runner steps together.
        policy: the :class:`Policy` every runner copies (None: random actions).
        seed: base seed (see :class:`EnvRunner`).
        env_kwargs: passed to ``gymnasium.make`` or the creator.
        max_consecutive_failures: see :class:`EnvRunner`.
        max_restarts: runner replacements allowed in all before a crash is raised.
        num_cpus_per_runner: CPUs each runner actor reserves.
        engine: ``"rtml"`` (default) or ``"ray"``.
        timeout: seconds to wait for the runners to start.

    Raises:
        EnvError: the env cannot be made (raised here, from the first runner's error).
    """

    def __init__(
        self,
        env: str | Callable[[], Any],
        num_runners: int = 2,
        envs_per_runner: int = 8,
        policy: Policy | None = None,
        seed: int = 0,
        env_kwargs: dict[str, Any] | None = None,
        max_consecutive_failures: int = 20,
        max_restarts: int = 10,
        num_cpus_per_runner: float = 1,
        engine: Any = None,
        timeout: float = 60.0,
    ) -> None:
        if num_runners < 1:
            raise ValueError(f"num_runners must be >= 1, got {num_runners}")
        self.engine = resolve(engine)
        _check_id(env)
        self.env, self.num_runners, self.envs_per_runner = env, num_runners, envs_per_runner
        self.policy, self.seed, self.env_kwargs = policy, seed, env_kwargs
        self.max_failures, self.max_restarts = max_consecutive_failures, max_restarts
        self._cls = self.engine.remote(num_cpus=num_cpus_per_runner)(EnvRunner)
        self.generation = [0] * num_runners
        self.restarts = 0
        self.episodes_dropped = 0
        self.errors: collections.deque[str] = collections.deque(maxlen=50)
        self.runners = [self._make(i) for i in range(num_runners)]
        self._in_flight: dict[Any, tuple[int, Any, int]] = {}  # ref -> (runner, weights, T)
        try:
            got = self.engine.get([r.spaces.remote() for r in self.runners], timeout=timeout)
        except Exception as e:
            self.stop()
            found = _find_rl_error(e)
            if found is not None:
                raise _fresh(found) from None
            raise
        self.observation_space, self.action_space = got[0]

    def _make(self, i: int) -> Any:
        return self._cls.remote(
            self.env,
            i,
            self.envs_per_runner,
            self.policy,
            self.seed,
            self.generation[i],
            self.env_kwargs,
            self.max_failures,
        )

    def _restart(self, i: int, cause: BaseException) -> None:
        if self.restarts >= self.max_restarts:
            raise RLError(
                f"runner {i} of env {env_name(self.env)!r} died and the group has "
                f"already replaced {self.restarts} runners (max_restarts="
                f"{self.max_restarts}); last cause: {cause}"
            ) from cause
        try:
            self.engine.kill(self.runners[i])
        except Exception:  # already gone
            pass
        self.generation[i] += 1
        self.restarts += 1
        self.errors.append(f"runner {i} died and was replaced: {type(cause).__name__}")
        self.runners[i] = self._make(i)

    def pids(self, timeout: float = 30.0) -> list[int]:
        """The runners' process ids."""
        return list(self.engine.get([r.pid.remote() for r in self.runners], timeout=timeout))

    def submit(self, i: int, weights: np.ndarray | None, num_steps: int) -> Any:
        """Start a ``sample`` on runner ``i``; returns its ref (``next_batch`` collects it)."""
        ref = self.runners[i].sample.remote(weights, num_steps)
        self._in_flight[ref] = (i, weights, num_steps)
        return ref

    def busy(self) -> set[int]:
        """Indices of runners with a sample request in flight."""
        return {i for i, _, _ in self._in_flight.values()}

    def next_batch(self, timeout: float | None = 60.0) -> dict[str, Any]:
        """The first batch to finish among the requests in flight (``wait``).

        A runner that died meanwhile is replaced and its request re-sent; the others keep
        running.

        Raises:
            GetTimeoutError / TimeoutError: nothing finished within ``timeout``.
            EnvError, EpisodeError: from the runner (with env, runner and step).
            RLError: more than ``max_restarts`` runners died.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if not self._in_flight:
                raise RLError("next_batch() with no sample request in flight: submit() first")
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready, _ = self.engine.wait(list(self._in_flight), num_returns=1, timeout=left)
            if not ready:
                raise TimeoutError(
                    f"no runner finished a batch within {timeout} s; raise the "
                    "timeout or sample fewer steps per request"
                )
            ref = ready[0]
            i, weights, T = self._in_flight.pop(ref)
            try:
                batch: dict[str, Any] = self.engine.get(ref, timeout=left)
            except Exception as e:
                found = _find_rl_error(e)
                if found is not None:
                    raise _fresh(found) from None
                if not _is_death(e):
                    raise
                self._restart(i, e)
                self.submit(i, weights, T)
                continue
            self.episodes_dropped += batch["episodes_dropped"]
            self.errors.extend(batch["errors"])
            return batch

    def sample(
        self, weights: np.ndarray | None, num_steps: int, timeout: float | None = 60.0
    ) -> list[dict[str, Any]]:
        """One batch from every runner (submitted together, returned in finishing order).

        Raises:
            As ``next_batch``.
        """
        for i in range(self.num_runners):
            if i not in self.busy():
                self.submit(i, weights, num_steps)
        return [self.next_batch(timeout) for _ in range(self.num_runners)]

    def stop(self) -> None:
        """Kill the runner actors (requests in flight are dropped)."""
        self._in_flight = {}
        for r in self.runners:
            try:
                self.engine.kill(r)
            except Exception:  # already dead, or the runtime is gone
                pass
        self.runners = []
