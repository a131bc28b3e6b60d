"""Evolution strategies (OpenAI's, as in Ray's ES): a shared noise table put once, workers
exchange only seeds and returns, antithetic pairs, centered-rank fitness shaping.

::

    driver: noise = N(0,1) table ──put once──▶ every worker maps it (zero-copy)
    each iteration: theta ──put──▶ ref
        chunk k: (ref, seed_k, pairs) ──▶ worker: for each index i drawn from seed_k:
                                           R+ = episode(theta + sigma*eps_i),
                                           R- = episode(theta - sigma*eps_i)
        ◀── (seed_k, R+[], R-[]) ── wait(first done) ─▶ next chunk to that worker
    driver: eps_i re-derived from seed_k; ranks of all R; g = sum (rank+ - rank-) eps_i / n
            theta ← Adam(-g + l2 * theta)
"""

from __future__ import annotations

import collections
import copy
import dataclasses
import time
from collections.abc import Callable
from typing import Any, TextIO

import numpy as np

from rtml.rl._errors import RLError
from rtml.rl._nn import Adam
from rtml.rl._panel import track
from rtml.rl._policy import DeterministicMLPPolicy, space_dims
from rtml.rl._runner import _find_rl_error, _fresh, _is_death, env_name, make_env
from rtml.rl._util import ProgressLine, load_state, save_state
from rtml.util.engine import resolve

__all__ = ["ES", "ESConfig", "centered_ranks", "noise_indices"]


def centered_ranks(x: np.ndarray) -> np.ndarray:
    """Ranks of ``x`` (any shape) scaled to [-0.5, 0.5] (ties broken by position)."""
    flat = x.reshape(-1)
    ranks = np.empty(len(flat))
    ranks[flat.argsort(kind="stable")] = np.arange(len(flat))
    if len(flat) > 1:
        ranks = ranks / (len(flat) - 1) - 0.5
    else:
        ranks[:] = 0.0
    return ranks.reshape(x.shape)


def noise_indices(seed: int, count: int, table_size: int, dim: int) -> np.ndarray:
    """The noise-table offsets a chunk with ``seed`` uses (the same on worker and driver)."""
    return np.random.default_rng(seed).integers(0, table_size - dim + 1, count)


@dataclasses.dataclass
class ESConfig:
    """ES settings (the defaults solve CartPole-v1).

    Attributes:
        env, env_kwargs: the environment (gymnasium id or creator) and its arguments.
        num_workers: worker actors.
        population: antithetic pairs per iteration (2x episodes).
        pairs_per_task: pairs one worker call evaluates.
        sigma: noise scale; lr: Adam step size; l2: weight decay.
        hidden: hidden widths of the deterministic MLP policy.
        noise_size: float32 entries in the shared noise table.
        eval_episodes: episodes of the unperturbed policy per iteration (``eval_return``).
        max_episode_steps: cap on episode length (None: the env's own limit).
        seed: seeds the noise table, the weights and the chunks' seeds.
        num_cpus_per_worker: CPUs each worker reserves.
        max_restarts: worker replacements allowed before a crash is raised.
    """

    env: Any = "CartPole-v1"
    env_kwargs: dict[str, Any] | None = None
    num_workers: int = 2
    population: int = 32
    pairs_per_task: int = 4
    sigma: float = 0.1
    lr: float = 0.03
    l2: float = 0.005
    hidden: tuple[int, ...] = (16,)
    noise_size: int = 2_000_000
    eval_episodes: int = 2
    max_episode_steps: int | None = None
    seed: int = 0
    num_cpus_per_worker: float = 1
    max_restarts: int = 10


class ESWorker:
    """Evaluates perturbations of a policy; runs as an actor holding the shared noise table.

    Args:
        env, env_kwargs: the environment.
        noise: the shared noise table (the ``put`` ref, resolved by the engine).
        policy: a :class:`DeterministicMLPPolicy` (its weights are replaced per episode).
        index: this worker's number (in error messages).
        max_episode_steps: cap on episode length.
    """

    def __init__(
        self,
        env: str | Callable[[], Any],
        env_kwargs: dict[str, Any] | None,
        noise: np.ndarray,
        policy: DeterministicMLPPolicy,
        index: int,
        max_episode_steps: int | None,
    ) -> None:
        self.env = make_env(env, index, env_kwargs)
        self.name, self.noise, self.policy, self.index = env_name(env), noise, policy, index
        self.max_steps = max_episode_steps
        self.dropped = 0

    def _episode(self, params: np.ndarray, seed: int) -> tuple[float, int] | str:
        self.policy.set_weights(params)
        steps, total = 0, 0.0
        try:
            obs, _ = self.env.reset(seed=seed)
            while True:
                a = self.policy.act(np.asarray(obs, dtype=np.float64).reshape(-1))
                obs, r, term, trunc, _ = self.env.step(a)
                total += float(r)
                steps += 1
                if term or trunc or (self.max_steps and steps >= self.max_steps):
                    return total, steps
        except Exception as e:
            self.dropped += 1
            return (
                f"env {self.name!r}, ES worker {self.index}, episode step {steps}: "
                f"{type(e).__name__}: {e}"
            )

    def evaluate(self, theta: np.ndarray, seed: int, pairs: int, sigma: float) -> dict[str, Any]:
        """Antithetic episodes for ``pairs`` noise indices drawn from ``seed``.

        Returns:
            ``seed``, ``returns`` (pairs x 2: +, -; NaN for a dropped pair), ``env_steps``,
            ``dropped``, ``errors``.
        """
        idx = noise_indices(seed, pairs, len(self.noise), len(theta))
        out = np.full((pairs, 2), np.nan)
        steps, errors = 0, []
        for k, i in enumerate(idx):
            eps = self.noise[i : i + len(theta)]
            ep_seed = int(seed % (2**31)) + k
            pos = self._episode(theta + sigma * eps, ep_seed)
            neg = self._episode(theta - sigma * eps, ep_seed)
            for res in (pos, neg):
                if isinstance(res, str):
                    errors.append(res)
                else:
                    steps += res[1]
            if not isinstance(pos, str) and not isinstance(neg, str):
                out[k] = pos[0], neg[0]
        return {
            "seed": seed,
            "returns": out,
            "env_steps": steps,
            "dropped": int(np.isnan(out[:, 0]).sum()),
            "errors": errors,
        }

    def rollouts(self, theta: np.ndarray, episodes: int, seed: int) -> dict[str, Any]:
        """Returns of ``episodes`` episodes of the unperturbed policy."""
        rets, steps, errors = [], 0, []
        for k in range(episodes):
            res = self._episode(theta, seed + k)
            if isinstance(res, str):
                errors.append(res)
            else:
                rets.append(res[0])
                steps += res[1]
        return {"returns": rets, "env_steps": steps, "errors": errors}


class ES:
    """Evolution strategies on rtml (or Ray) actors.

    Example::

        es = ES(ESConfig(env="CartPole-v1", num_workers=2))
        es.train(iterations=30, target_return=475)
        es.stop()

    Args:
        config: an :class:`ESConfig` (None: the defaults).
        engine: ``"rtml"`` (default) or ``"ray"``.
        timeout: seconds to wait for the workers to start.
        **overrides: fields of ``ESConfig`` to change.

    Raises:
        EnvError: unknown env id or unsupported spaces.
    """

    def __init__(
        self,
        config: ESConfig | None = None,
        engine: Any = None,
        timeout: float = 60.0,
        **overrides: Any,
    ) -> None:
        cfg = dataclasses.replace(config or ESConfig(), **overrides)
        self.config = cfg
        self.engine = resolve(engine)
        probe = make_env(cfg.env, None, cfg.env_kwargs)
        try:
            obs_dim, action = space_dims(
                probe.observation_space, probe.action_space, env_name(cfg.env)
            )
        finally:
            probe.close()
        self.policy = DeterministicMLPPolicy(obs_dim, action, cfg.hidden, cfg.seed)
        self.theta = self.policy.get_weights()
        if cfg.noise_size < len(self.theta):
            raise ValueError(
                f"noise_size {cfg.noise_size} is smaller than the policy's "
                f"{len(self.theta)} parameters"
            )
        self.noise = (
            np.random.default_rng(cfg.seed + 12345)
            .standard_normal(cfg.noise_size)
            .astype(np.float32)
        )
        self.optimizer = Adam(len(self.theta), lr=cfg.lr)
        self.rng = np.random.default_rng(cfg.seed + 99)
        self.iteration = self.env_steps = self.episodes_dropped = self.restarts = 0
        self.elapsed = 0.0
        self.history: list[dict[str, Any]] = []
        self.errors: collections.deque[str] = collections.deque(maxlen=50)
        self._noise_ref = self.engine.put(self.noise)  # once: workers map it
        self._cls = self.engine.remote(num_cpus=cfg.num_cpus_per_worker)(ESWorker)
        self.workers = [self._make(i) for i in range(cfg.num_workers)]
        track(self)
        try:
            self.engine.get(
                [w.rollouts.remote(self.theta, 0, 0) for w in self.workers], timeout=timeout
            )
        except Exception as e:
            self.stop()
            found = _find_rl_error(e)
            if found is not None:
                raise _fresh(found) from None
            raise

    def _make(self, i: int) -> Any:
        c = self.config
        return self._cls.remote(
            c.env, c.env_kwargs, self._noise_ref, self.policy, i, c.max_episode_steps
        )

    def _replace(self, i: int, cause: BaseException) -> None:
        if self.restarts >= self.config.max_restarts:
            raise RLError(
                f"ES worker {i} died and {self.restarts} workers were already "
                f"replaced (max_restarts={self.config.max_restarts}): {cause}"
            ) from cause
        try:
            self.engine.kill(self.workers[i])
        except Exception:  # already gone
            pass
        self.restarts += 1
        self.errors.append(f"ES worker {i} died and was replaced: {type(cause).__name__}")
        self.workers[i] = self._make(i)

    def train_iteration(self, timeout: float | None = 120.0) -> dict[str, Any]:
        """Evaluate one population and update ``theta``.

        Returns:
            Metrics: ``iteration``, ``return_mean`` (population), ``return_max``,
            ``eval_return`` (unperturbed policy), ``env_steps`` (total), ``env_steps_per_s``,
            ``learner_s``, ``episodes_dropped``, ``worker_restarts``, ``time_s``.

        Raises:
            TimeoutError: a call took longer than ``timeout``.
            RLError: more than ``max_restarts`` workers died.
        """
        c, eng = self.config, self.engine
        t0 = time.perf_counter()
        theta_ref = eng.put(self.theta)
        sizes = [c.pairs_per_task] * (c.population // c.pairs_per_task)
        if c.population % c.pairs_per_task:
            sizes.append(c.population % c.pairs_per_task)
        chunks = [
            (int(s), n) for s, n in zip(self.rng.integers(0, 2**62, len(sizes)), sizes, strict=True)
        ]
        todo = collections.deque(chunks)
        eval_seed = int(self.rng.integers(0, 2**31 - 1000))
        in_flight: dict[Any, tuple[int, Any]] = {}

        def launch(i: int, job: Any) -> None:
            w = self.workers[i]
            if job == "eval":
                ref = w.rollouts.remote(theta_ref, c.eval_episodes, eval_seed)
            else:
                ref = w.evaluate.remote(theta_ref, job[0], job[1], c.sigma)
            in_flight[ref] = (i, job)

        if c.eval_episodes:
            todo.append("eval")  # type: ignore[arg-type]
        for i in range(len(self.workers)):
            if todo:
                launch(i, todo.popleft())
        results: list[dict[str, Any]] = []
        evals: list[float] = []
        steps = 0
        deadline = None if timeout is None else time.monotonic() + timeout
        while in_flight:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready, _ = eng.wait(list(in_flight), num_returns=1, timeout=left)
            if not ready:
                raise TimeoutError(
                    f"ES iteration {self.iteration + 1} did not finish within {timeout} s"
                )
            i, job = in_flight.pop(ready[0])
            try:
                res = eng.get(ready[0], timeout=left)
            except Exception as e:
                found = _find_rl_error(e)
                if found is not None:
                    raise _fresh(found) from None
                if not _is_death(e):
                    raise
                self._replace(i, e)
                launch(i, job)
                continue
            steps += res["env_steps"]
            self.errors.extend(res["errors"])
            if job == "eval":
                evals.extend(res["returns"])
            else:
                results.append(res)
                self.episodes_dropped += res["dropped"]
            if todo:
                launch(i, todo.popleft())
        t1 = time.perf_counter()
        dim = len(self.theta)
        results.sort(key=lambda r: r["seed"])  # arrival order must not change the update
        idx = np.concatenate(
            [noise_indices(r["seed"], len(r["returns"]), c.noise_size, dim) for r in results]
        )
        R = np.concatenate([r["returns"] for r in results])
        ok = ~np.isnan(R).any(axis=1)
        idx, R = idx[ok], R[ok]
        if len(R):
            ranks = centered_ranks(R)
            weights = ranks[:, 0] - ranks[:, 1]
            eps = np.stack([self.noise[i : i + dim] for i in idx]).astype(np.float64)
            g = weights @ eps / len(R)
            self.optimizer.step(self.theta, -g + c.l2 * self.theta)
        self.iteration += 1
        self.env_steps += steps
        wall = time.perf_counter() - t0
        self.elapsed += wall
        m = {
            "iteration": self.iteration,
            "env_steps": self.env_steps,
            "return_mean": float(R.mean()) if len(R) else None,
            "return_max": float(R.max()) if len(R) else None,
            "eval_return": float(np.mean(evals)) if evals else None,
            "env_steps_per_s": steps / wall if wall > 0 else 0.0,
            "learner_s": time.perf_counter() - t1,
            "episodes_dropped": self.episodes_dropped,
            "worker_restarts": self.restarts,
            "time_s": self.elapsed,
        }
        self.history.append(m)
        return m

    def train(
        self,
        iterations: int | None = None,
        env_steps: int | None = None,
        target_return: float | None = None,
        timeout: float | None = 120.0,
        progress: bool = True,
        file: TextIO | None = None,
    ) -> list[dict[str, Any]]:
        """Train until ``iterations`` more iterations, ``env_steps`` in all, or an
        ``eval_return`` (else the population mean) of ``target_return``.

        Raises:
            ValueError: no stopping rule given. As ``train_iteration``.
        """
        if iterations is None and env_steps is None and target_return is None:
            raise ValueError("train() needs iterations=, env_steps= or target_return=")
        bar = ProgressLine("ES", env_steps, file, progress)
        out: list[dict[str, Any]] = []
        try:
            while (iterations is None or len(out) < iterations) and (
                env_steps is None or self.env_steps < env_steps
            ):
                m = self.train_iteration(timeout)
                out.append(m)
                score = m["eval_return"] if m["eval_return"] is not None else m["return_mean"]
                bar.update(m["iteration"], m["env_steps"], score, m["env_steps_per_s"])
                if target_return is not None and score is not None and score >= target_return:
                    break
        finally:
            bar.close()
        return out

    def save(self, path: str | None = None) -> dict[str, Any]:
        """The whole training state (the noise table is rebuilt from the seed)."""
        state = {
            "kind": "rtml.rl.ES",
            "version": 1,
            "config": dataclasses.asdict(self.config),
            "theta": self.theta.copy(),
            "optimizer": self.optimizer.state(),
            "rng": copy.deepcopy(self.rng.bit_generator.state),
            "iteration": self.iteration,
            "env_steps": self.env_steps,
            "elapsed": self.elapsed,
            "history": copy.deepcopy(self.history),
        }
        if path is not None:
            save_state(state, path)
        return state

    @classmethod
    def restore(cls, state: str | dict[str, Any], engine: Any = None, timeout: float = 60.0) -> ES:
        """An ES with the config and training state of a checkpoint (file or dict)."""
        st = load_state(state, "rtml.rl.ES")
        cfg = dict(st["config"])
        cfg["hidden"] = tuple(cfg["hidden"])
        es = cls(ESConfig(**cfg), engine=engine, timeout=timeout)
        es.theta[...] = st["theta"]
        es.optimizer.load(st["optimizer"])
        es.rng.bit_generator.state = copy.deepcopy(st["rng"])
        es.iteration, es.env_steps = st["iteration"], st["env_steps"]
        es.elapsed, es.history = st["elapsed"], copy.deepcopy(st["history"])
        return es

    def stop(self) -> None:
        """Kill the workers."""
        for w in self.workers:
            try:
                self.engine.kill(w)
            except Exception:  # already gone
                pass
        self.workers = []

    def __enter__(self) -> ES:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()
