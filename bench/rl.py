"""rtml.rl against gymnasium's AsyncVectorEnv and RLlib: sampling, PPO, ES, MCTS.

    .venv/bin/python bench/rl.py --quick                      # < 1 min, one JSON object
    bench/.peers-venv/bin/python bench/rl.py --json bench/results/rl.json   # ~10 min, all rows

Rows (CartPole-v1 unless said):
  sampling   env steps/s with a random and an MLP policy (64x64 tanh), 2 runners x 8 envs:
             rtml.rl EnvRunnerGroup (2 requests of 256 steps in flight, resubmitted as they
             come back), gymnasium AsyncVectorEnv with 16 envs (its one process per env) and
             with 2 envs (2 processes, as many as the runners), RLlib 2.60 env runners
             (2 x 8, its default torch MLP; peers venv).
  ppo        wall-clock and env steps to a mean return of 450 (last 100 episodes), cap 300k
             steps: rtml.rl PPO (defaults) and RLlib's tuned CartPole PPO example.
  es         ES on CartPole-v1: the same 20 iterations (12 in --quick) with 1 and 2 workers (the work is
             identical: seeded episodes, deterministic policy), speed-up = t1 / t2 (each the best of
             2 alternating runs); time to an
             eval return of 475 (CartPole-v1's solved threshold) with 2 workers.
  mcts       Connect Four: simulations/s serial, root- and tree-parallel (2 workers); win
             rate of each parallel mode against serial MCTS at equal time per move.
Each framework runs in its own subprocess (RLlib's with bench/.peers-venv/bin/python).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
PEERS_PY = os.path.join(HERE, ".peers-venv", "bin", "python")


# --------------------------------------------------------------------------- children
def rtml_sample(policy: str, seconds: float) -> dict[str, Any]:
    import rtml
    from rtml.rl import CategoricalMLPPolicy, EnvRunnerGroup

    rtml.init(num_cpus=2, include_dashboard=False)
    try:
        pol = CategoricalMLPPolicy(4, 2) if policy == "mlp" else None
        w = pol.get_weights() if pol is not None else None
        g = EnvRunnerGroup("CartPole-v1", num_runners=2, envs_per_runner=8, policy=pol)
        g.sample(w, 64)  # warm up
        for i in range(2):
            g.submit(i, w, 256)
        steps, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            b = g.next_batch(60)
            steps += b["env_steps"]
            g.submit(b["runner"], w, 256)
        el = time.perf_counter() - t0
        g.stop()
        return {"steps_per_s": steps / el, "steps": steps}
    finally:
        rtml.shutdown()


def gym_async_sample(policy: str, seconds: float, num_envs: int) -> dict[str, Any]:
    import gymnasium as gym
    import numpy as np

    from rtml.rl import CategoricalMLPPolicy

    envs = gym.vector.AsyncVectorEnv([lambda: gym.make("CartPole-v1")] * num_envs)
    pol = CategoricalMLPPolicy(4, 2)
    rng = np.random.default_rng(0)
    try:
        obs, _ = envs.reset(seed=0)
        for _ in range(20):
            obs, *_ = envs.step(envs.action_space.sample())
        steps, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            if policy == "mlp":
                a = pol.compute_actions(np.asarray(obs, np.float64), rng)[0]
            else:
                a = rng.integers(0, 2, num_envs)
            obs, *_ = envs.step(a)
            steps += num_envs
        return {"steps_per_s": steps / (time.perf_counter() - t0), "steps": steps}
    finally:
        envs.close()


def rtml_ppo(max_steps: int, target: float) -> dict[str, Any]:
    import rtml
    from rtml.rl import PPO

    rtml.init(num_cpus=2, include_dashboard=False)
    try:
        t0 = time.perf_counter()
        ppo = PPO()
        t_ready = time.perf_counter()
        ms = ppo.train(env_steps=max_steps, target_return=target, progress=False)
        wall = time.perf_counter() - t0
        ppo.stop()
        return {
            "wall_s": wall,
            "setup_s": t_ready - t0,
            "env_steps": ms[-1]["env_steps"],
            "return": ms[-1]["return_mean"],
            "reached": ms[-1]["return_mean"] >= target,
            "learner_s": sum(m["learner_s"] for m in ms),
            "iterations": len(ms),
            "curve": [(m["time_s"] + (t_ready - t0), m["env_steps"], m["return_mean"]) for m in ms],
        }
    finally:
        rtml.shutdown()


def rtml_es(iterations: int, target: float, solve: bool) -> dict[str, Any]:
    import rtml
    from rtml.rl import ES

    rtml.init(num_cpus=2, include_dashboard=False)
    out: dict[str, Any] = {}
    try:
        for _ in range(2):  # alternating, best of 2: other load on the machine comes and goes
            for n in (1, 2):
                es = ES(num_workers=n, seed=0)
                es.train_iteration()  # warm up: workers started, table mapped
                t = time.perf_counter()
                ms = es.train(iterations=iterations, progress=False)
                took = time.perf_counter() - t
                out[f"t{n}"] = min(took, out.get(f"t{n}", took))
                out[f"steps{n}"] = ms[-1]["env_steps"] - es.history[0]["env_steps"]
                es.stop()
        out["speedup"] = out["t1"] / out["t2"]
        if solve:
            t = time.perf_counter()
            es = ES(num_workers=2, seed=1)
            ms = es.train(iterations=200, target_return=target, progress=False)
            out["solve_wall_s"] = time.perf_counter() - t
            out["solve_iterations"] = len(ms)
            out["solve_env_steps"] = ms[-1]["env_steps"]
            out["solve_eval_return"] = ms[-1]["eval_return"]
            out["curve"] = [(m["time_s"], m["env_steps"], m["eval_return"]) for m in ms]
            es.stop()
        return out
    finally:
        rtml.shutdown()


def rtml_mcts(budget: float, games: int) -> dict[str, Any]:
    import random

    import rtml
    from rtml.rl import ConnectFour, mcts

    rtml.init(num_cpus=2, include_dashboard=False)
    try:
        out: dict[str, Any] = {}
        start = ConnectFour()
        mcts(start, 0.3, mode="tree")  # warm up the workers
        mcts(start, 0.3, mode="root")
        for mode in ("serial", "root", "tree"):
            rs = [mcts(start.play(3), budget, mode=mode, seed=s) for s in range(3)]
            out[f"{mode}_sims_per_s"] = sum(r.simulations for r in rs) / sum(r.elapsed for r in rs)
        for mode in ("root", "tree"):
            wins = draws = 0
            for gi in range(games):
                g, par_first = ConnectFour(), gi % 2 == 0
                rng = random.Random(gi)
                g = g.play(rng.randrange(7))  # a random opening move for variety
                while not g.is_terminal():
                    par_turn = (g.to_play == 1) == par_first  # the opening was player 0's
                    m = mcts(
                        g, budget, mode=mode if par_turn else "serial", seed=rng.getrandbits(30)
                    ).move
                    g = g.play(m)
                w = g.winner()
                if w is None:
                    draws += 1
                elif (w == 1) == par_first:
                    wins += 1
            out[f"{mode}_vs_serial_wins"] = wins
            out[f"{mode}_vs_serial_draws"] = draws
            out[f"{mode}_vs_serial_games"] = games
        return out
    finally:
        rtml.shutdown()


def rllib_sample(seconds: float) -> dict[str, Any]:
    import ray
    from ray.rllib.algorithms.ppo import PPOConfig

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        cfg = (
            PPOConfig()
            .environment("CartPole-v1")
            .env_runners(num_env_runners=2, num_envs_per_env_runner=8)
        )
        algo = cfg.build_algo()
        g = algo.env_runner_group

        def one(r: Any) -> int:
            return sum(len(e) for e in r.sample(num_timesteps=2048))

        g.foreach_env_runner(one, local_env_runner=False)
        steps, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            steps += sum(g.foreach_env_runner(one, local_env_runner=False))
        el = time.perf_counter() - t0
        algo.stop()
        return {"steps_per_s": steps / el, "steps": steps}
    finally:
        ray.shutdown()


def rllib_ppo(max_steps: int, target: float, limit_s: float) -> dict[str, Any]:
    import ray
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        t0 = time.perf_counter()
        cfg = (
            PPOConfig()
            .environment("CartPole-v1")
            .env_runners(num_env_runners=2)
            .training(lr=0.0003, num_epochs=6, vf_loss_coeff=0.01)
            .rl_module(
                model_config=DefaultModelConfig(
                    fcnet_hiddens=[32], fcnet_activation="linear", vf_share_layers=True
                )
            )
        )
        algo = cfg.build_algo()
        t_ready = time.perf_counter()
        curve, ret, steps = [], None, 0
        while steps < max_steps and time.perf_counter() - t0 < limit_s:
            res = algo.train()
            er = res.get("env_runners", {})
            ret = er.get("episode_return_mean")
            steps = int(
                res.get("num_env_steps_sampled_lifetime")
                or er.get("num_env_steps_sampled_lifetime")
                or 0
            )
            curve.append((time.perf_counter() - t0, steps, None if ret is None else float(ret)))
            if ret is not None and ret >= target:
                break
        wall = time.perf_counter() - t0
        algo.stop()
        return {
            "wall_s": wall,
            "setup_s": t_ready - t0,
            "env_steps": steps,
            "return": None if ret is None else float(ret),
            "reached": bool(ret is not None and ret >= target),
            "curve": curve,
        }
    finally:
        ray.shutdown()


def learner_compare(reps: int) -> dict[str, Any]:
    """numpy (rtml.rl's) against torch CPU for PPO's two hot loops: one minibatch update
    (256 x 4 -> 64 -> 64 tanh, policy and value heads, Adam) and a runner's batched forward
    (8 observations). Needs torch (the peers venv)."""
    import numpy as np
    import torch

    from rtml.rl import CategoricalMLPPolicy, PPOConfig
    from rtml.rl._nn import Adam
    from rtml.rl._ppo import ppo_loss_grad

    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((256, 4))
    a = rng.integers(0, 2, 256)
    lp0, ad, rt = np.full(256, np.log(0.5)), rng.standard_normal(256), rng.standard_normal(256)
    pol, cfg = CategoricalMLPPolicy(4, 2), PPOConfig()
    opt, grad = Adam(len(pol.flat), eps=1e-5), np.zeros_like(pol.flat)

    def np_update() -> None:
        ppo_loss_grad(pol, x, a, lp0, ad, rt, cfg, grad)
        opt.step(pol.flat, grad)

    def mlp(out: int) -> Any:
        return torch.nn.Sequential(
            torch.nn.Linear(4, 64),
            torch.nn.Tanh(),
            torch.nn.Linear(64, 64),
            torch.nn.Tanh(),
            torch.nn.Linear(64, out),
        )

    pi, vf = mlp(2), mlp(1)
    topt = torch.optim.Adam(list(pi.parameters()) + list(vf.parameters()), lr=3e-4)
    tx, ta = torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(a)
    tlp0, tad, trt = (torch.as_tensor(v, dtype=torch.float32) for v in (lp0, ad, rt))

    def torch_update() -> None:
        logp_all = torch.log_softmax(pi(tx), dim=1)
        lp = logp_all.gather(1, ta[:, None])[:, 0]
        ratio = torch.exp(lp - tlp0)
        loss = (
            -torch.min(ratio * tad, torch.clamp(ratio, 0.8, 1.2) * tad).mean()
            + 0.5 * ((vf(tx)[:, 0] - trt) ** 2).mean()
        )
        topt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(pi.parameters()) + list(vf.parameters()), 0.5)
        topt.step()

    x8 = x[:8]
    t8 = tx[:8]

    def np_forward() -> None:
        pol.compute_actions(x8, rng)

    def torch_forward() -> None:
        with torch.no_grad():
            torch.distributions.Categorical(logits=pi(t8)).sample()
            vf(t8)

    out = {}
    for name, fn in (
        ("numpy_update_us", np_update),
        ("torch_update_us", torch_update),
        ("numpy_forward8_us", np_forward),
        ("torch_forward8_us", torch_forward),
    ):
        for _ in range(50):
            fn()
        t = time.perf_counter()
        for _ in range(reps):
            fn()
        out[name] = (time.perf_counter() - t) / reps * 1e6
    return out


CHILDREN = {
    "rtml_sample": rtml_sample,
    "gym_async_sample": gym_async_sample,
    "rtml_ppo": rtml_ppo,
    "rtml_es": rtml_es,
    "rtml_mcts": rtml_mcts,
    "rllib_sample": rllib_sample,
    "rllib_ppo": rllib_ppo,
    "learner_compare": learner_compare,
}


# --------------------------------------------------------------------------- parent
def run(name: str, *args: Any, python: str = sys.executable, timeout: float = 1200) -> dict:
    """``CHILDREN[name](*args)`` in a fresh process; its result, or {"error": ...}."""
    out = os.path.join(HERE, "results", f".rl-{name}-{os.getpid()}.json.tmp")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    cmd = [python, __file__, "--child", name, out, json.dumps(args)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout} s"}
    if proc.returncode != 0 or not os.path.exists(out):
        lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()] or ["?"]
        return {"error": lines[-1][:300]}
    with open(out, encoding="utf-8") as f:
        res = json.load(f)
    os.unlink(out)
    return res


def chart(doc: dict, path: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(matplotlib missing: no chart)")
        return
    fig, ax = plt.subplots(figsize=(7, 4))
    for label, key in (
        ("rtml.rl PPO", "rtml_ppo"),
        ("RLlib PPO", "rllib_ppo"),
        ("rtml.rl ES (eval)", "rtml_es"),
    ):
        curve = doc.get(key, {}).get("curve")
        if curve:
            pts = [(t, r) for t, _, r in curve if r is not None]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], label=label)
    ax.axhline(450, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("wall-clock seconds (PPO: from construction; ES: training time)")
    ax.set_ylabel("mean return, CartPole-v1")
    ax.set_title("Return over time, 2 cores")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="< 1 min; prints one JSON object")
    ap.add_argument("--json", help="write every figure to this file")
    ap.add_argument("--seconds", type=float, default=5.0, help="per sampling row")
    ap.add_argument("--no-rllib", action="store_true")
    ap.add_argument("--games", type=int, default=10, help="MCTS games per parallel mode")
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        res = CHILDREN[a.child[0]](*json.loads(a.child[2]))
        with open(a.child[1], "w", encoding="utf-8") as f:
            json.dump(res, f)
        return 0
    if a.quick:
        s = run("rtml_sample", "random", 2.0)
        g16 = run("gym_async_sample", "random", 2.0, 16)
        g2 = run("gym_async_sample", "random", 2.0, 2)
        ppo = run("rtml_ppo", 300_000, 450.0)
        es = run("rtml_es", 12, 475.0, False)
        gym_best = max(g16.get("steps_per_s", 0.0), g2.get("steps_per_s", 0.0))
        print(
            json.dumps(
                {
                    "steps_per_s": round(s.get("steps_per_s", 0.0)),
                    "async_vector_env_steps_per_s": round(gym_best),
                    "ppo_return": ppo.get("return"),
                    "ppo_env_steps": ppo.get("env_steps"),
                    "es_speedup": round(es.get("speedup", 0.0), 2),
                }
            )
        )
        return 0
    from _report import machine, write_json_atomic

    peers = os.path.exists(PEERS_PY) and not a.no_rllib
    doc: dict[str, Any] = {
        "machine": machine(),
        "started": time.strftime("%Y-%m-%d %H:%M"),
        "loadavg_before": os.getloadavg(),
        "sampling": {},
    }
    for pol in ("random", "mlp"):
        row = doc["sampling"][pol] = {}
        row["rtml"] = run("rtml_sample", pol, a.seconds)
        row["gym_async_16"] = run("gym_async_sample", pol, a.seconds, 16)
        row["gym_async_2"] = run("gym_async_sample", pol, a.seconds, 2)
        if peers and pol == "mlp":
            row["rllib"] = run("rllib_sample", a.seconds, python=PEERS_PY)
        print(
            f"sampling {pol}: "
            + ", ".join(f"{k} {v.get('steps_per_s', v.get('error'))}" for k, v in row.items()),
            flush=True,
        )
    if peers:
        doc["learner_compare"] = run("learner_compare", 2000, python=PEERS_PY)
        print("learner numpy vs torch:", doc["learner_compare"], flush=True)
    doc["rtml_ppo"] = run("rtml_ppo", 300_000, 450.0)
    print("rtml ppo:", {k: v for k, v in doc["rtml_ppo"].items() if k != "curve"}, flush=True)
    if peers:
        doc["rllib_ppo"] = run("rllib_ppo", 300_000, 450.0, 900.0, python=PEERS_PY, timeout=1000)
        print("rllib ppo:", {k: v for k, v in doc["rllib_ppo"].items() if k != "curve"}, flush=True)
    doc["rtml_es"] = run("rtml_es", 20, 475.0, True)
    print("es:", {k: v for k, v in doc["rtml_es"].items() if k != "curve"}, flush=True)
    doc["rtml_mcts"] = run("rtml_mcts", 0.2, a.games)
    print("mcts:", doc["rtml_mcts"], flush=True)
    doc["loadavg_after"] = os.getloadavg()
    # the table
    print(f"\n{'row':44s} {'rtml.rl':>12s} {'peer':>12s} {'ratio':>7s}")
    for pol in ("random", "mlp"):
        r = doc["sampling"][pol]
        mine = r["rtml"].get("steps_per_s")
        for peer in ("gym_async_16", "gym_async_2", "rllib"):
            p = r.get(peer, {}).get("steps_per_s")
            if mine and p:
                print(
                    f"{'steps/s ' + pol + ' vs ' + peer:44s} {mine:12,.0f} {p:12,.0f} "
                    f"{mine / p:6.2f}x"
                )
    rp, lp = doc["rtml_ppo"], doc.get("rllib_ppo", {})
    if rp.get("wall_s") and lp.get("wall_s"):
        print(
            f"{'PPO wall s to 450 (RLlib: ' + str(lp.get('reached')) + ')':44s} "
            f"{rp['wall_s']:12.1f} {lp['wall_s']:12.1f} {lp['wall_s'] / rp['wall_s']:6.2f}x"
        )
    path = a.json or os.path.join(HERE, "results", "rl.json")
    write_json_atomic(path, doc)
    chart(doc, os.path.join(os.path.dirname(path), "rl.png"))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
