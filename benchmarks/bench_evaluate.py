"""Benchmark `hedgegym evaluate`: all baselines on 10,000 episodes of `default`, against SyncVectorEnv.

Times :func:`hedgegym.train.evaluate` — every baseline of ``--baselines all`` on ``--episodes``
episodes, each run twice (with and without the agent's impact) plus the bootstrap — with numba
limited to each of ``--threads`` threads in turn, and the same policies stepped one env at a time through
``gymnasium.vector.SyncVectorEnv`` of :class:`HedgingEnv` (fewer episodes; the rate is per env-step).
The SyncVectorEnv run also checks that both paths give the same P&L on the same seeds.

Wall time depends on what else the machine runs, so the table also gives CPU time and the load
average. On a machine shared with other work, one numba thread can beat two: the parallel kernel's
threads meet at a barrier every step, and a thread that loses its core stalls the other.

Usage: ``python benchmarks/bench_evaluate.py [--episodes 10000] [--threads 2 1] [--sync-envs 16]``.
Writes ``benchmarks/results/evaluate.json`` (atomically).
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results" / "evaluate.json"


def timed(fn):
    """``(result, wall seconds, CPU seconds of this process, all threads)``."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def bench_evaluate(config, names: list[str], episodes: int, seed: int) -> dict:
    """The library call behind `hedgegym evaluate`, after a warm-up that compiles/loads numba code."""
    from hedgegym.envs.market import Market
    from hedgegym.train.evaluate import evaluate

    # A few rows run the serial kernel; big batches the parallel one: load (or compile) both first.
    market = Market(config, n_envs=2, parallel=True)
    market.reset(seeds=[0, 1])
    market.step()
    evaluate(names, config, episodes=8, seed=seed, n_resamples=10)
    result, wall, cpu = timed(lambda: evaluate(names, config, episodes=episodes, seed=seed))
    steps = 2 * len(result.policies) * episodes * config.episode_steps
    return {
        "result": result,
        "policies": result.policies,
        "episodes": episodes,
        "env_steps": steps,
        "wall_s": wall,
        "cpu_s": cpu,
        "steps_per_s": steps / wall,
        "steps_per_cpu_s": steps / cpu,
    }


def bench_sync_vector_env(config, names: list[str], n_envs: int, seed: int) -> dict:
    """Each policy for one episode per env of a SyncVectorEnv of HedgingEnv, one env at a time."""
    import gymnasium as gym

    from hedgegym.agents.baselines import make_baseline
    from hedgegym.envs.hedging_env import HedgingEnv

    pnl = {}

    def run():
        for name in names:
            policy = make_baseline(name, config)
            envs = gym.vector.SyncVectorEnv([lambda: HedgingEnv(config=config) for _ in range(n_envs)])
            obs, _ = envs.reset(seed=[seed + j for j in range(n_envs)])
            markets = [env.unwrapped.market for env in envs.envs]
            for _ in range(config.episode_steps):
                actions = np.stack([policy(obs[i], markets[i]) for i in range(n_envs)])
                obs, _, _, _, _ = envs.step(actions)
            # The episode has just ended; the autoreset happens on the next step, so the totals are there.
            pnl[policy.name] = np.array([m.episode_metrics()["pnl"][0] for m in markets])
            envs.close()

    _, wall, cpu = timed(run)
    steps = len(names) * n_envs * config.episode_steps
    return {
        "n_envs": n_envs,
        "episodes_per_policy": n_envs,
        "env_steps": steps,
        "wall_s": wall,
        "cpu_s": cpu,
        "steps_per_s": steps / wall,
        "steps_per_cpu_s": steps / cpu,
        "pnl": pnl,
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", default="default")
    parser.add_argument("--episodes", type=int, default=10_000)
    parser.add_argument(
        "--threads",
        type=int,
        nargs="+",
        default=[2, 1],
        help="numba thread counts to time (the issue's 2 cores; 1 for a shared machine)",
    )
    parser.add_argument("--sync-envs", type=int, default=16, help="envs of the SyncVectorEnv (1 episode each)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    import numba
    from rich.console import Console
    from rich.table import Table

    from hedgegym.envs.config import load_scenario
    from hedgegym.train.io import write_json_atomic
    from hedgegym.train.policies import expand_baselines

    config = load_scenario(args.scenario)
    names = expand_baselines("all", config)
    runs, per_episode = {}, None
    for threads in args.threads:
        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
        load = os.getloadavg()[0]
        run = bench_evaluate(config, names, args.episodes, args.seed)
        per_episode = run.pop("result").per_episode
        runs[numba.get_num_threads()] = {
            **run,
            "load_average_1min_before": round(load, 2),
            "load_average_1min_after": round(os.getloadavg()[0], 2),
        }
    sync = bench_sync_vector_env(config, names, args.sync_envs, args.seed)

    policies = list(per_episode)
    max_diff = max(float(np.max(np.abs(sync["pnl"][n] - per_episode[n]["pnl"][: args.sync_envs]))) for n in policies)
    sync.pop("pnl")
    fastest = min(runs.values(), key=lambda r: r["wall_s"])
    # Projected time of the evaluation's stepping (both runs) through SyncVectorEnv at its measured rate.
    projected = fastest["env_steps"] / sync["steps_per_s"]

    def rounded(d: dict) -> dict:
        return {k: round(v, 3) if isinstance(v, float) else v for k, v in d.items() if k != "policies"}

    record = {
        "scenario": args.scenario,
        "episodes": args.episodes,
        "policies": policies,
        "cpu_count": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
        "evaluate_by_numba_threads": {str(t): rounded(r) for t, r in runs.items()},
        "sync_vector_env": rounded(sync),
        "sync_vector_env_projected_wall_s": round(projected, 1),
        "speedup_wall": round(projected / fastest["wall_s"], 1),
        "speedup_per_cpu_s": round(fastest["steps_per_cpu_s"] / sync["steps_per_cpu_s"], 1),
        "max_abs_pnl_difference_usd": max_diff,
    }
    write_json_atomic(RESULTS, record)

    table = Table(
        title=f"evaluate: {len(names)} baselines x {args.episodes:,} episodes of {args.scenario} "
        "(x2: agent impact on/off)"
    )
    for col in ("engine", "env-steps", "wall s", "CPU s", "env-steps/s", "env-steps/CPU s", "load (1 min)"):
        table.add_column(col, justify="left" if col == "engine" else "right")
    rows = [(f"evaluate, numba threads {t}", r) for t, r in runs.items()]
    for label, r in rows + [(f"SyncVectorEnv x{args.sync_envs} HedgingEnv", sync)]:
        load = (
            f"{r['load_average_1min_before']:.1f} -> {r['load_average_1min_after']:.1f}"
            if "load_average_1min_before" in r
            else ""
        )
        table.add_row(
            label,
            f"{r['env_steps']:,}",
            f"{r['wall_s']:.1f}",
            f"{r['cpu_s']:.1f}",
            f"{r['steps_per_s']:,.0f}",
            f"{r['steps_per_cpu_s']:,.0f}",
            load,
        )
    console = Console(width=140)
    console.print(table)
    console.print(
        f"SyncVectorEnv for the same work: ~{projected:,.0f} s projected; evaluate is "
        f"{record['speedup_wall']}x faster (wall), {record['speedup_per_cpu_s']}x per CPU-second. "
        f"Same P&L on the same seeds: max |difference| {max_diff:.3g} USD. Wrote {RESULTS}"
    )
    return record


if __name__ == "__main__":
    main()
