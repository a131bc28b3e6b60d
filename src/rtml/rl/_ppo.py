"""PPO: parallel env runners feed a numpy learner (GAE, clipped surrogate, minibatch epochs).

::

    runners (actors) ── batch [T, N] ──▶ wait(first done) ──▶ resubmit that runner
         ▲                                   │ until train_batch_size env steps
         │ weights (flat, ~4.5k float64)     ▼
         └──────────────────────────── learner: GAE ─▶ epochs x minibatches ─▶ Adam

With ``async_sampling`` (the default) a runner gets its next request as soon as its batch
arrives, so one slow episode never holds up the others; its batch may then be one update
behind, which PPO's ratio against the behaviour policy's ``logp`` accounts for.
"""

from __future__ import annotations

import collections
import copy
import dataclasses
import time
from typing import Any, TextIO

import numpy as np

from rtml.rl._errors import EnvError
from rtml.rl._nn import Adam
from rtml.rl._panel import track
from rtml.rl._policy import CategoricalMLPPolicy, space_dims
from rtml.rl._runner import EnvRunnerGroup, env_name, make_env
from rtml.rl._util import ProgressLine, load_state, save_state

__all__ = ["PPO", "PPOConfig", "compute_gae", "ppo_loss_grad"]


@dataclasses.dataclass
class PPOConfig:
    """PPO's settings (the defaults solve CartPole-v1).

    Attributes:
        env: a gymnasium id or a function returning an env.
        env_kwargs: passed to ``gymnasium.make`` / the creator.
        num_runners, envs_per_runner: runner actors and envs per runner.
        rollout_steps: steps per env in one sample request.
        train_batch_size: env steps per update (default: one request from every runner).
        minibatch_size, num_epochs: SGD over each train batch.
        gamma, lam: discount and GAE lambda.
        clip: PPO's ratio clip; vf_coef, ent_coef: loss weights.
        lr: Adam step size, decayed linearly to ``lr * lr_final_fraction`` over
            ``lr_decay_steps`` env steps (0: constant).
        max_grad_norm: global gradient norm clip.
        hidden: hidden widths of the policy and value MLPs.
        async_sampling: resubmit a runner as soon as its batch arrives (see module doc).
        seed: seeds weights, runners and minibatch shuffling.
        return_window: completed episodes averaged in ``return_mean``.
        max_consecutive_failures, max_restarts: see :class:`EnvRunnerGroup`.
        num_cpus_per_runner: CPUs each runner reserves.
    """

    env: Any = "CartPole-v1"
    env_kwargs: dict[str, Any] | None = None
    num_runners: int = 2
    envs_per_runner: int = 8
    rollout_steps: int = 64
    train_batch_size: int | None = None
    minibatch_size: int = 256
    num_epochs: int = 10
    gamma: float = 0.99
    lam: float = 0.95
    clip: float = 0.2
    vf_coef: float = 0.5
    ent_coef: float = 0.0
    lr: float = 1e-3
    lr_decay_steps: int = 300_000
    lr_final_fraction: float = 0.1
    max_grad_norm: float = 0.5
    hidden: tuple[int, ...] = (64, 64)
    async_sampling: bool = True
    seed: int = 0
    return_window: int = 100
    max_consecutive_failures: int = 20
    max_restarts: int = 10
    num_cpus_per_runner: float = 1

    def batch_size(self) -> int:
        """Env steps per update."""
        one = self.rollout_steps * self.envs_per_runner
        return self.train_batch_size or one * self.num_runners


def compute_gae(batch: dict[str, Any], gamma: float, lam: float) -> tuple[np.ndarray, np.ndarray]:
    """Advantages and value targets ``[T, N]`` for one runner batch.

    A terminated step does not bootstrap; a truncated one bootstraps from the value of its
    real last observation (``final_values``); the recursion stops at both.
    """
    r = batch["rewards"].astype(np.float64)
    v = batch["values"].astype(np.float64)
    term, trunc = batch["terminated"], batch["truncated"]
    next_v = np.concatenate([v[1:], batch["last_values"][None, :].astype(np.float64)])
    next_v = np.where(trunc, batch["final_values"], next_v)
    delta = r + gamma * next_v * (1.0 - term) - v
    cont = 1.0 - (term | trunc)
    adv = np.zeros_like(r)
    last = np.zeros(r.shape[1])
    for t in range(len(r) - 1, -1, -1):
        last = delta[t] + gamma * lam * cont[t] * last
        adv[t] = last
    return adv, adv + v


def ppo_loss_grad(
    pol: CategoricalMLPPolicy,
    x: np.ndarray,
    a: np.ndarray,
    lp0: np.ndarray,
    ad: np.ndarray,
    rt: np.ndarray,
    cfg: PPOConfig,
    grad: np.ndarray,
) -> np.ndarray:
    """PPO's loss on a minibatch and its gradient (written into ``grad``).

    Loss: ``-mean(min(r*A, clip(r)*A)) + vf_coef*mean((V-R)^2) - ent_coef*mean(H)`` with
    ``r = exp(logp - logp_old)``.

    Returns:
        ``[policy_loss, vf_loss, entropy, approx_kl, total_loss]``.
    """
    k = len(x)
    logits, acts_pi = pol.pi.forward_cached(x)
    z = logits - logits.max(axis=1, keepdims=True)
    logp_all = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    p = np.exp(logp_all)
    lp = logp_all[np.arange(k), a]
    ratio = np.exp(lp - lp0)
    s1 = ratio * ad
    s2 = np.clip(ratio, 1 - cfg.clip, 1 + cfg.clip) * ad
    use1 = s1 <= s2
    g_lp = np.where(use1, -ad * ratio, 0.0) / k
    onehot = np.zeros_like(p)
    onehot[np.arange(k), a] = 1.0
    dlogits = (onehot - p) * g_lp[:, None]
    ent = -(p * logp_all).sum(axis=1)
    if cfg.ent_coef:
        dlogits += (cfg.ent_coef / k) * p * (logp_all + ent[:, None])
    v, acts_v = pol.vf.forward_cached(x)
    dv = (cfg.vf_coef * 2.0 / k) * (v[:, 0] - rt)
    pol.pi.backward(acts_pi, dlogits, grad[: pol.n_pi])
    pol.vf.backward(acts_v, dv[:, None], grad[pol.n_pi :])
    pl = -np.minimum(s1, s2).mean()
    vl = ((v[:, 0] - rt) ** 2).mean()
    return np.array(
        [pl, vl, ent.mean(), (lp0 - lp).mean(), pl + cfg.vf_coef * vl - cfg.ent_coef * ent.mean()]
    )


class PPO:
    """Proximal policy optimisation on rtml (or Ray) actors.

    Example::

        ppo = PPO(PPOConfig(env="CartPole-v1"))
        for m in ppo.train(env_steps=100_000, target_return=450):
            pass
        ppo.save("ppo.ckpt"); ppo.stop()

    Args:
        config: a :class:`PPOConfig` (None: the defaults).
        engine: ``"rtml"`` (default) or ``"ray"``.
        timeout: seconds to wait for the runners to start.
        **overrides: fields of ``PPOConfig`` to change.

    Raises:
        EnvError: unknown env id, or spaces the MLP policy cannot handle (Discrete actions and
            a flat Box observation are needed).
    """

    def __init__(
        self,
        config: PPOConfig | None = None,
        engine: Any = None,
        timeout: float = 60.0,
        **overrides: Any,
    ) -> None:
        cfg = dataclasses.replace(config or PPOConfig(), **overrides)
        self.config = cfg
        self._engine = engine
        probe = make_env(cfg.env, None, cfg.env_kwargs)
        try:
            obs_dim, action = space_dims(
                probe.observation_space, probe.action_space, env_name(cfg.env)
            )
        finally:
            probe.close()
        if action[0] != "discrete":
            raise EnvError(
                f"env {env_name(cfg.env)!r}: rtml.rl's PPO handles Discrete action "
                f"spaces; this one is a Box (use ES for it)",
                env_name(cfg.env),
            )
        self.policy = CategoricalMLPPolicy(obs_dim, action[1], cfg.hidden, cfg.seed)
        self.optimizer = Adam(len(self.policy.flat), lr=cfg.lr, eps=1e-5)
        self.rng = np.random.default_rng(cfg.seed + 7)
        self.iteration = 0
        self.env_steps = 0
        self.episodes = 0
        self.recent_returns: collections.deque[float] = collections.deque(maxlen=cfg.return_window)
        self.history: list[dict[str, Any]] = []
        self.elapsed = 0.0
        self.group = EnvRunnerGroup(
            cfg.env,
            cfg.num_runners,
            cfg.envs_per_runner,
            self.policy,
            cfg.seed,
            cfg.env_kwargs,
            cfg.max_consecutive_failures,
            cfg.max_restarts,
            cfg.num_cpus_per_runner,
            engine,
            timeout,
        )
        track(self)

    # ------------------------------------------------------------------ learner
    def _lr(self) -> float:
        cfg = self.config
        if not cfg.lr_decay_steps:
            return cfg.lr
        frac = min(1.0, self.env_steps / cfg.lr_decay_steps)
        return cfg.lr * (1.0 - frac * (1.0 - cfg.lr_final_fraction))

    def update(self, batches: list[dict[str, Any]]) -> dict[str, float]:
        """One PPO update (all epochs) on runner batches; the result depends only on the
        training state and the batches, so a restored checkpoint repeats it exactly.

        Args:
            batches: batches from :meth:`EnvRunnerGroup.next_batch` (or ``sample``).

        Returns:
            Learner metrics: ``policy_loss``, ``vf_loss``, ``entropy``, ``kl``, ``learner_s``,
            ``lr``.
        """
        t0 = time.perf_counter()
        cfg = self.config
        obs, act, logp_old, adv, ret = [], [], [], [], []
        for b in batches:
            a, r = compute_gae(b, cfg.gamma, cfg.lam)
            m = b["mask"].reshape(-1)
            obs.append(b["obs"].reshape(-1, b["obs"].shape[-1])[m])
            act.append(b["actions"].reshape(-1)[m])
            logp_old.append(b["logp"].reshape(-1)[m])
            adv.append(a.reshape(-1)[m])
            ret.append(r.reshape(-1)[m])
        X = np.concatenate(obs).astype(np.float64)
        A = np.concatenate(act).astype(np.int64)
        LP = np.concatenate(logp_old).astype(np.float64)
        ADV = np.concatenate(adv)
        RET = np.concatenate(ret)
        n = len(X)
        if n == 0:
            return {
                "policy_loss": 0.0,
                "vf_loss": 0.0,
                "entropy": 0.0,
                "kl": 0.0,
                "learner_s": time.perf_counter() - t0,
                "lr": self._lr(),
            }
        ADV = (ADV - ADV.mean()) / (ADV.std() + 1e-8)
        pol, opt = self.policy, self.optimizer
        grad = np.zeros_like(pol.flat)
        lr = self._lr()
        mb = max(1, min(cfg.minibatch_size, n))
        stats = np.zeros(5)
        count = 0
        for _ in range(cfg.num_epochs):
            perm = self.rng.permutation(n)
            for s in range(0, n - mb + 1, mb):
                idx = perm[s : s + mb]
                st = ppo_loss_grad(pol, X[idx], A[idx], LP[idx], ADV[idx], RET[idx], cfg, grad)
                norm = float(np.sqrt((grad * grad).sum()))
                if norm > cfg.max_grad_norm:
                    grad *= cfg.max_grad_norm / norm
                opt.step(pol.flat, grad, lr)
                stats += st
                count += 1
        stats /= max(1, count)
        return {
            "policy_loss": float(stats[0]),
            "vf_loss": float(stats[1]),
            "entropy": float(stats[2]),
            "kl": float(stats[3]),
            "learner_s": time.perf_counter() - t0,
            "lr": lr,
        }

    # ------------------------------------------------------------------ sampling
    def _collect(self, timeout: float | None) -> list[dict[str, Any]]:
        cfg, g = self.config, self.group
        w = self.policy.get_weights()
        if not cfg.async_sampling:
            return g.sample(w, cfg.rollout_steps, timeout)
        busy = g.busy()
        for i in range(cfg.num_runners):
            if i not in busy:
                g.submit(i, w, cfg.rollout_steps)
        got, steps = [], 0
        while steps < cfg.batch_size():
            b = g.next_batch(timeout)
            got.append(b)
            steps += b["env_steps"] + int((~b["mask"]).sum())
            g.submit(b["runner"], w, cfg.rollout_steps)
        return got

    def train_iteration(self, timeout: float | None = 60.0) -> dict[str, Any]:
        """Sample one train batch and update once.

        Args:
            timeout: seconds to wait for any one runner's batch.

        Returns:
            This iteration's metrics (also appended to ``history``): ``iteration``,
            ``env_steps`` (total), ``return_mean`` (last ``return_window`` episodes; None
            before the first one ends), ``return_mean_iter``, ``episodes``,
            ``env_steps_per_s``, ``sample_s``, ``learner_s``, ``episodes_dropped``,
            ``runner_restarts``, the learner's losses, ``time_s`` (training time so far).

        Raises:
            EnvError, EpisodeError: from a runner (the env is broken, not unlucky).
            TimeoutError: no batch within ``timeout``.
        """
        t0 = time.perf_counter()
        batches = self._collect(timeout)
        t1 = time.perf_counter()
        learn = self.update(batches)
        steps = sum(b["env_steps"] for b in batches)
        rets = [r for b in batches for r in b["episode_returns"]]
        self.recent_returns.extend(rets)
        self.iteration += 1
        self.env_steps += steps
        self.episodes += len(rets)
        wall = time.perf_counter() - t0
        self.elapsed += wall
        m: dict[str, Any] = {
            "iteration": self.iteration,
            "env_steps": self.env_steps,
            "env_steps_iter": steps,
            "episodes": self.episodes,
            "return_mean": (float(np.mean(self.recent_returns)) if self.recent_returns else None),
            "return_mean_iter": float(np.mean(rets)) if rets else None,
            "env_steps_per_s": steps / wall if wall > 0 else 0.0,
            "sample_s": t1 - t0,
            "episodes_dropped": self.group.episodes_dropped,
            "runner_restarts": self.group.restarts,
            "time_s": self.elapsed,
            **learn,
        }
        self.history.append(m)
        return m

    def train(
        self,
        iterations: int | None = None,
        env_steps: int | None = None,
        target_return: float | None = None,
        timeout: float | None = 60.0,
        progress: bool = True,
        file: TextIO | None = None,
    ) -> list[dict[str, Any]]:
        """Train until the first of: ``iterations`` more iterations, ``env_steps`` total env
        steps, a ``return_mean`` of ``target_return`` (at least one limit is needed).

        Args:
            iterations, env_steps, target_return: when to stop.
            timeout: per-batch timeout (see ``train_iteration``).
            progress: draw a progress line on ``file`` (default stderr).

        Returns:
            The metrics of each iteration run (see ``train_iteration``).

        Raises:
            ValueError: no stopping rule given.
            As ``train_iteration``.
        """
        if iterations is None and env_steps is None and target_return is None:
            raise ValueError(
                "train() needs iterations=, env_steps= or target_return= to know when to stop"
            )
        bar = ProgressLine("PPO", env_steps, file, progress)
        out: list[dict[str, Any]] = []
        try:
            while True:
                if iterations is not None and len(out) >= iterations:
                    break
                if env_steps is not None and self.env_steps >= env_steps:
                    break
                m = self.train_iteration(timeout)
                out.append(m)
                bar.update(m["iteration"], m["env_steps"], m["return_mean"], m["env_steps_per_s"])
                if (
                    target_return is not None
                    and m["return_mean"] is not None
                    and m["return_mean"] >= target_return
                ):
                    break
        finally:
            bar.close()
        return out

    def metrics(self) -> dict[str, Any]:
        """The latest iteration's metrics and the run's totals (for dashboards and logs)."""
        last = self.history[-1] if self.history else {}
        return {
            **last,
            "iterations": self.iteration,
            "env_steps": self.env_steps,
            "episodes": self.episodes,
            "runner_restarts": self.group.restarts,
            "episodes_dropped": self.group.episodes_dropped,
            "recent_errors": list(self.group.errors)[-5:],
        }

    def compute_actions(self, obs: np.ndarray, explore: bool = False) -> np.ndarray:
        """Actions for a batch of observations (greedy unless ``explore``)."""
        obs = np.asarray(obs, dtype=np.float64).reshape(-1, self.policy.obs_dim)
        if explore:
            return self.policy.compute_actions(obs, self.rng)[0]
        return self.policy.logits(obs).argmax(axis=1)

    # ------------------------------------------------------------------ checkpoints
    def save(self, path: str | None = None) -> dict[str, Any]:
        """The whole training state (weights, optimizer, RNG, counters, metrics, config);
        written atomically to ``path`` too when given.

        Returns:
            The state dict (``PPO.restore`` takes it or the file).
        """
        state = {
            "kind": "rtml.rl.PPO",
            "version": 1,
            "config": dataclasses.asdict(self.config) | {"env": self.config.env},
            "weights": self.policy.get_weights(),
            "optimizer": self.optimizer.state(),
            "rng": copy.deepcopy(self.rng.bit_generator.state),
            "iteration": self.iteration,
            "env_steps": self.env_steps,
            "episodes": self.episodes,
            "recent_returns": list(self.recent_returns),
            "history": copy.deepcopy(self.history),
            "elapsed": self.elapsed,
            "runner_restarts": self.group.restarts,
        }
        if path is not None:
            save_state(state, path)
        return state

    def load(self, state: str | dict[str, Any]) -> None:
        """Load a state from ``save`` into this PPO (its runners keep running and start new
        episodes with the loaded weights)."""
        st = load_state(state, "rtml.rl.PPO")
        self.policy.set_weights(st["weights"])
        self.optimizer.load(st["optimizer"])
        self.rng = np.random.default_rng()
        self.rng.bit_generator.state = copy.deepcopy(st["rng"])
        self.iteration, self.env_steps = st["iteration"], st["env_steps"]
        self.episodes, self.elapsed = st["episodes"], st["elapsed"]
        self.recent_returns = collections.deque(
            st["recent_returns"], maxlen=self.config.return_window
        )
        self.history = copy.deepcopy(st["history"])

    @classmethod
    def restore(cls, state: str | dict[str, Any], engine: Any = None, timeout: float = 60.0) -> PPO:
        """A PPO with the config and training state of a checkpoint (file or dict).

        Raises:
            ValueError: not a PPO checkpoint.
        """
        st = load_state(state, "rtml.rl.PPO")
        cfg = dict(st["config"])
        cfg["hidden"] = tuple(cfg["hidden"])
        ppo = cls(PPOConfig(**cfg), engine=engine, timeout=timeout)
        ppo.load(st)
        return ppo

    def stop(self) -> None:
        """Stop the runners."""
        self.group.stop()

    def __enter__(self) -> PPO:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()
