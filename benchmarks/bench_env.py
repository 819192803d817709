"""Env-steps per second of the hedging envs, in one run: batched vs Python loops vs the raw kernel.

For each number of envs N (default 64, 1024, 16384), with the same pre-drawn random actions:

- ``kernel``: the raw numba kernel (step + observe on preallocated arrays, resets at episode end),
  the floor any wrapper can reach;
- ``vector``: :class:`~hedgegym.envs.vector_env.HedgingVectorEnv` through the Gymnasium API;
- ``vector_sb3``: the same through the SB3 adapter :class:`~hedgegym.envs.sb3_vec_env.HedgingSB3VecEnv`,
  and ``vector_sb3_lean`` with its ``step_info=False`` (no per-step info keys);
- ``sync``: Gymnasium's ``SyncVectorEnv`` of N ``HedgingEnv``;
- ``dummy``: SB3's ``DummyVecEnv`` of N ``HedgingEnv``;

and, for one env, the cost of a ``HedgingEnv.step`` beyond its kernel call (step + observe).
Each figure is the best of ``--repeats`` timed runs of at least ``--seconds`` (as ``timeit``
advises: the fastest run is the least disturbed by other load); the rounds interleave the
contenders, so that load from other processes hits them alike. Episodes autoreset inside the runs.
Rates are given by the wall clock and by the process's CPU time: on a shared machine the second
is what the code costs (it excludes time the process waits for a core), but it sums numba's
threads, so it hides the parallel kernel's speed-up (use ``--parallel off`` to compare like with like).

Targets of the issue: at N = 1024, ``vector`` >= 20x ``sync`` and ``kernel`` / ``vector`` <= 1.5;
a ``HedgingEnv`` step <= 20 us beyond its kernel call.

Usage:
    python benchmarks/bench_env.py                      # N = 64, 1024, 16384
    python benchmarks/bench_env.py --sizes 64 1024 --seconds 0.5
    python benchmarks/bench_env.py --parallel off --output benchmarks/results/env_serial.json
Writes ``benchmarks/results/env.json`` (or ``--output``) atomically.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import gymnasium as gym
import numba
import numpy as np
from _common import reset_rows, step_kernel
from gymnasium.vector import AutoresetMode
from stable_baselines3.common.vec_env import DummyVecEnv

from hedgegym.envs import HedgingEnv, HedgingVectorEnv, Market, kernel
from hedgegym.envs.config import load_scenario
from hedgegym.envs.sb3_vec_env import HedgingSB3VecEnv
from hedgegym.train.io import write_json_atomic

RESULTS = Path(__file__).resolve().parent / "results" / "env.json"
ACTION_BATCHES = 32  # pre-drawn action batches, cycled


CLOCKS = ("wall", "cpu")


def timed_run(step: Callable[[int], None], n_envs: int, seconds: float) -> dict[str, float]:
    """Env-steps per second of one run of ``step(k)`` calls lasting >= ``seconds`` (and >= 3 calls),
    by the wall clock and by this process's CPU time (all its threads)."""
    calls = 0
    wall, cpu = time.perf_counter(), time.process_time()
    while calls < 3 or time.perf_counter() - wall < seconds:
        step(calls)
        calls += 1
    return {
        "wall": calls * n_envs / (time.perf_counter() - wall),
        "cpu": calls * n_envs / max(time.process_time() - cpu, 1e-9),
    }


def best_rates(steps: dict[str, Callable[[int], None]], n_envs: int, seconds: float, repeats: int) -> dict:
    """``{clock: {contender: best rate}}`` over ``repeats`` rounds; the rounds interleave the
    contenders so that a change in the machine's load hits all of them alike."""
    best = {clock: dict.fromkeys(steps, 0.0) for clock in CLOCKS}
    for _ in range(repeats):
        for name, step in steps.items():
            rates = timed_run(step, n_envs, seconds)
            for clock in CLOCKS:
                best[clock][name] = max(best[clock][name], rates[clock])
    return best


def raw_kernel(config, actions: np.ndarray, parallel: bool | None) -> Callable[[int], None]:
    """Step + observe on a Market's arrays, trades precomputed, all rows reset at the episode's end."""
    n = actions.shape[1]
    market = Market(config, n_envs=n, parallel=parallel)
    trades = np.stack([market.actions_to_trades(a) for a in actions])
    rows = np.arange(n, dtype=np.int64)
    seeds = np.arange(n, dtype=np.uint64)
    market.reset(seeds)
    fn = market._step_kernel  # the kernel the Market chose (serial or parallel) for this N
    m = market

    def step(k: int) -> None:
        step_kernel(fn, m, trades[k % len(trades)])
        kernel.observe_rows(m.state, m.hedge, m.params, m.obs)
        if (k + 1) % m.episode_steps == 0:
            reset_rows(m, rows, seeds, (k + 1) // m.episode_steps)

    return step


def gym_vector(env, actions: np.ndarray) -> Callable[[int], None]:
    env.reset(seed=0)
    return lambda k: env.step(actions[k % len(actions)])


def sb3_vector(venv, actions: np.ndarray) -> Callable[[int], None]:
    venv.seed(0)
    venv.reset()
    return lambda k: venv.step(actions[k % len(actions)])


def single_env_overhead(config, seconds: float, repeats: int) -> dict[str, float]:
    """Microseconds per HedgingEnv step, per raw kernel call on one row, and their difference."""
    actions = np.random.default_rng(0).uniform(-1, 1, (ACTION_BATCHES, 1, 3)).astype(np.float32)
    env = HedgingEnv(config=config)
    env.reset(seed=0)

    def env_step(k: int) -> None:
        _, _, terminated, truncated, _ = env.step(actions[k % ACTION_BATCHES, 0])
        if terminated or truncated:
            env.reset()

    rates = best_rates({"env": env_step, "kernel": raw_kernel(config, actions, False)}, 1, seconds, repeats)
    return {
        clock: {
            "hedging_env_step_us": 1e6 / r["env"],
            "kernel_step_us": 1e6 / r["kernel"],
            "overhead_us": 1e6 / r["env"] - 1e6 / r["kernel"],
        }
        for clock, r in rates.items()
    }


def run(sizes: list[int], scenario: str, seconds: float, repeats: int, loops_up_to: int, parallel: bool | None) -> dict:
    config = load_scenario(scenario)
    n_venues = len(config.agent.venues)
    rows = []
    for n in sizes:
        actions = np.random.default_rng(n).uniform(-1, 1, (ACTION_BATCHES, n, n_venues)).astype(np.float32)
        same_step = HedgingVectorEnv(n, config=config, parallel=parallel, autoreset_mode=AutoresetMode.SAME_STEP)
        steps = {
            "kernel": raw_kernel(config, actions, parallel),
            "vector": gym_vector(HedgingVectorEnv(n, config=config, parallel=parallel), actions),
            "vector_sb3": sb3_vector(HedgingSB3VecEnv(same_step), actions),
            "vector_sb3_lean": sb3_vector(
                HedgingSB3VecEnv(
                    HedgingVectorEnv(n, config=config, parallel=parallel, autoreset_mode=AutoresetMode.SAME_STEP),
                    step_info=False,
                ),
                actions,
            ),
        }
        if n <= loops_up_to:
            steps["sync"] = gym_vector(gym.vector.SyncVectorEnv([lambda: HedgingEnv(config=config)] * n), actions)
            steps["dummy"] = sb3_vector(DummyVecEnv([lambda: HedgingEnv(config=config)] * n), actions)
        rates = best_rates(steps, n, seconds, repeats)
        del steps
        for clock in CLOCKS:
            row = {
                "n_envs": n,
                "clock": clock,
                "parallel_kernel": same_step.market.parallel,
                "sync": None,
                "dummy": None,
                **rates[clock],
            }
            row["vector_over_sync"] = row["vector"] / row["sync"] if row["sync"] else None
            row["sb3_over_dummy"] = row["vector_sb3"] / row["dummy"] if row["dummy"] else None
            row["kernel_over_vector"] = row["kernel"] / row["vector"]
            row["kernel_over_sb3"] = row["kernel"] / row["vector_sb3"]
            rows.append(row)
        print(f"N = {n} done", flush=True)
    single = single_env_overhead(config, seconds, repeats)
    print_table(rows, single)
    return {
        "scenario": scenario,
        "episode_steps": config.episode_steps,
        "seconds_per_run": seconds,
        "repeats": repeats,
        "parallel": "auto (numba threads from 256 envs)" if parallel is None else parallel,
        "rows": rows,
        "single_env": single,
        "machine": {
            "python": platform.python_version(),
            "cpu_count": os.cpu_count(),
            "numba_threads": numba.get_num_threads(),
            "load_average": os.getloadavg(),
            "numpy": np.__version__,
            "numba": numba.__version__,
            "gymnasium": gym.__version__,
        },
        "unix_time": time.time(),
    }


COLUMNS = (
    "n_envs",
    "kernel",
    "vector",
    "vector_sb3",
    "vector_sb3_lean",
    "sync",
    "dummy",
    "vector_over_sync",
    "sb3_over_dummy",
    "kernel_over_vector",
    "kernel_over_sb3",
)
RATES = ("kernel", "vector", "vector_sb3", "vector_sb3_lean", "sync", "dummy")


def print_table(rows: list[dict], single: dict) -> None:
    for clock in CLOCKS:
        print(f"\nenv-steps/s by {'wall-clock' if clock == 'wall' else 'process CPU'} time (best of runs), ratios")
        print("".join(f"{c:>17}" for c in COLUMNS))
        for row in (r for r in rows if r["clock"] == clock):
            cells = [
                "-" if row[c] is None else f"{row[c]:,.0f}" if c in RATES or c == "n_envs" else f"{row[c]:.2f}x"
                for c in COLUMNS
            ]
            print("".join(f"{c:>17}" for c in cells))
        s = single[clock]
        print(
            f"HedgingEnv.step {s['hedging_env_step_us']:.1f} us, raw kernel (1 row) {s['kernel_step_us']:.1f} us: "
            f"{s['overhead_us']:.1f} us beyond the kernel (target <= 20)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 1024, 16384])
    parser.add_argument("--scenario", default="default")
    parser.add_argument("--seconds", type=float, default=1.0, help="minimum length of one timed run")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per figure (the best is kept)")
    parser.add_argument(
        "--loops-up-to",
        type=int,
        default=16384,
        help="largest N at which the Python-loop baselines (sync, dummy) are run",
    )
    parser.add_argument(
        "--parallel",
        choices=("auto", "on", "off"),
        default="auto",
        help="numba-parallel kernel: auto (the Market's choice, from 256 envs), on or off",
    )
    parser.add_argument("--output", type=Path, default=RESULTS, help="where to write the JSON results")
    args = parser.parse_args()
    parallel = {"auto": None, "on": True, "off": False}[args.parallel]
    result = run(args.sizes, args.scenario, args.seconds, args.repeats, args.loops_up_to, parallel)
    write_json_atomic(args.output, result)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
