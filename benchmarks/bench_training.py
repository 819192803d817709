"""Training throughput of PPO: the batched env vs ``DummyVecEnv`` of ``HedgingEnv``s, same run.

For each number of envs, trains the same PPO (same hyperparameters, network, normaliser, seed) on
:class:`~hedgegym.envs.sb3_vec_env.HedgingSB3VecEnv` (``batched``: one numba call steps every env,
the serial kernel, as training builds it) and on SB3's ``DummyVecEnv`` of ``Monitor(HedgingEnv)``
(``dummy``: a Python loop over envs), ``--repeats`` times each, alternating. Reports the fastest
repeat's timesteps per second and where its wall time goes:

- ``env``: inside the vector env's ``step``/``reset`` (simulator, info dicts, autoreset);
- ``update``: PPO's gradient epochs (``model.train``);
- ``rollout_other``: the rest of collection: policy forward pass, normaliser, rollout buffer, GAE.

The issue's target: env <= 15 % of PPO's wall time at 64+ envs (batched). Writes
``benchmarks/results/training.json`` atomically.

Usage:
    python benchmarks/bench_training.py                 # 16, 64, 256 envs
    python benchmarks/bench_training.py --n-envs 64 --iterations 3
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

from stable_baselines3.common.vec_env import DummyVecEnv, VecEnvWrapper, VecNormalize

from hedgegym.agents import sb3
from hedgegym.envs.config import load_scenario
from hedgegym.train.io import write_json_atomic

RESULTS = Path(__file__).resolve().parent / "results" / "training.json"
# The hyperparameters of configs/ppo_multi.yaml, with the batch scaled to the rollout size.
N_STEPS = 168
N_EPOCHS = 5
MINIBATCHES = 4
POLICY_KWARGS = {"net_arch": [64, 64], "activation_fn": "tanh", "log_std_init": -1.0}


class EnvTimer(VecEnvWrapper):
    """Accumulates the wall time spent inside the wrapped vector env."""

    def __init__(self, venv):
        super().__init__(venv)
        self.seconds = 0.0

    def reset(self):
        t = time.perf_counter()
        obs = self.venv.reset()
        self.seconds += time.perf_counter() - t
        return obs

    def step_async(self, actions):
        t = time.perf_counter()
        self.venv.step_async(actions)
        self.seconds += time.perf_counter() - t

    def step_wait(self):
        t = time.perf_counter()
        out = self.venv.step_wait()
        self.seconds += time.perf_counter() - t
        return out


def dummy_vec_env(scenario, n_envs: int, seed: int):
    """SB3's reference: a Python list of single HedgingEnvs, Monitor-wrapped for episode stats."""
    from stable_baselines3.common.monitor import Monitor

    from hedgegym.envs.hedging_env import HedgingEnv

    venv = DummyVecEnv([lambda: Monitor(HedgingEnv(config=scenario)) for _ in range(n_envs)])
    venv.seed(seed)
    return venv


def batched_vec_env(scenario, n_envs: int, seed: int):
    """The batched env as training builds it (serial kernel, no per-step info dicts)."""
    return sb3.make_vec_env(scenario, n_envs, seed)


# The numba-parallel kernel is left out: once used, its OpenMP workers stay in the process and
# slow every later measurement on a 2-core machine (see agents.sb3.make_vec_env).
KINDS = {"batched": batched_vec_env, "dummy": dummy_vec_env}


def run(kind: str, scenario, n_envs: int, iterations: int, seed: int = 0) -> dict[str, float]:
    """Train PPO for ``iterations`` rollouts on the ``kind`` env; timings in seconds and shares."""
    sb3.configure_torch(seed, threads=1, deterministic=True)
    raw = KINDS[kind](scenario, n_envs, seed)
    timer = EnvTimer(raw)
    env = VecNormalize(timer, gamma=0.99)
    rollout = N_STEPS * n_envs
    model = sb3.build_model(
        "ppo",
        env,
        {"n_steps": N_STEPS, "batch_size": rollout // MINIBATCHES, "n_epochs": N_EPOCHS},
        POLICY_KWARGS,
        seed=seed,
    )
    update = [0.0]
    train_epochs = model.train

    def timed_train():
        t = time.perf_counter()
        train_epochs()
        update[0] += time.perf_counter() - t

    model.train = timed_train
    # One warm-up iteration (numba cache load, torch first calls), not timed.
    model.learn(rollout)
    timer.seconds, update[0] = 0.0, 0.0
    start = time.perf_counter()
    model.learn(rollout * iterations, reset_num_timesteps=False)
    wall = time.perf_counter() - start
    env.close()
    return {
        "timesteps": rollout * iterations,
        "wall_s": round(wall, 3),
        "timesteps_per_s": round(rollout * iterations / wall, 1),
        "env_share": round(timer.seconds / wall, 4),
        "update_share": round(update[0] / wall, 4),
        "rollout_other_share": round(1.0 - (timer.seconds + update[0]) / wall, 4),
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-envs", type=int, nargs="+", default=[16, 64, 256], help="Numbers of envs to time.")
    parser.add_argument("--iterations", type=int, default=3, help="Timed PPO iterations (rollout + update) per run.")
    parser.add_argument("--repeats", type=int, default=3, help="Runs of each kind; the fastest is reported.")
    parser.add_argument("--scenario", default="default", help="Named scenario.")
    parser.add_argument("--out", type=Path, default=RESULTS, help="Result JSON path.")
    args = parser.parse_args(argv)

    import stable_baselines3
    import torch

    scenario = load_scenario(args.scenario)
    rows = []
    for n in args.n_envs:
        # Alternate the two and keep each one's fastest repeat: other load on the machine only slows
        # a run down, so the fastest is the best estimate of what the code costs.
        repeats = {kind: [] for kind in KINDS}
        for _ in range(args.repeats):
            for kind in KINDS:
                repeats[kind].append(run(kind, scenario, n, args.iterations))
        row = {"n_envs": n, **{k: max(v, key=lambda r: r["timesteps_per_s"]) for k, v in repeats.items()}}
        row["speedup"] = round(row["batched"]["timesteps_per_s"] / row["dummy"]["timesteps_per_s"], 2)
        row["timesteps_per_s_all_repeats"] = {k: [r["timesteps_per_s"] for r in v] for k, v in repeats.items()}
        rows.append(row)
        print(
            f"n_envs={n:4d}  "
            + "  ".join(
                f"{k} {row[k]['timesteps_per_s']:7.0f}/s (env {row[k]['env_share']:.1%}, "
                f"update {row[k]['update_share']:.1%})"
                for k in KINDS
            )
            + f"  speedup x{row['speedup']:.2f}",
            flush=True,
        )
    result = {
        "benchmark": "PPO training throughput, batched env vs DummyVecEnv of HedgingEnv",
        "scenario": args.scenario,
        "ppo": {
            "n_steps": N_STEPS,
            "n_epochs": N_EPOCHS,
            "minibatches": MINIBATCHES,
            "policy_kwargs": POLICY_KWARGS,
            "normalize": "VecNormalize(obs, reward)",
            "torch_threads": 1,
        },
        "iterations": args.iterations,
        "repeats": args.repeats,
        "machine": {
            "cpus": _cpus(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "stable_baselines3": stable_baselines3.__version__,
        },
        "target": "env_share <= 0.15 at 64+ envs (batched)",
        "speedup": "batched / dummy timesteps per second",
        "results": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out, result)
    print(f"wrote {args.out}")
    return result


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


if __name__ == "__main__":
    main()
