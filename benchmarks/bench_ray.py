"""Benchmark Ray in hedgegym: sweep trials per hour at 1 and 2 workers, Ray's per-trial overhead, matrix throughput.

* **Trials per hour.** The same sweep — ``--trials`` trials of ``configs/ppo_spot.yaml`` at a small
  fixed budget (``--timesteps``, 16 envs, one-day episodes, a periodic evaluation every quarter of
  the budget, 200 final episodes against ``delta``), over a space without early stopping (``asha:
  null``, so every trial trains its whole budget) — with 1 and with 2 workers of 1 CPU each, on a
  local Ray started by the sweep. Trials per hour = trials / wall time, Ray's start included (and
  without it: the start is timed on its own).
* **Per-trial overhead.** The wall time of one trial inside the 1-worker sweep (Ray's start and the
  driver's bookkeeping spread over the trials) against the same config trained by
  :func:`hedgegym.train.train` in a fresh Python process (imports included, as in a Ray worker).
* **Matrix throughput.** ``hedgegym matrix``'s work — policies x scenarios x ``--episodes`` — as Ray
  tasks on 2 workers against the same work in one process (``local``): episodes per second of
  each, and the check that both give the same numbers.

Usage: ``python benchmarks/bench_ray.py [--trials 4] [--timesteps 8192] [--episodes 20000]``.
Writes ``benchmarks/results/ray.json`` (atomically).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "ray.json"
CONFIG = ROOT / "configs" / "ppo_spot.yaml"
SPACE = {
    "description": "bench_ray: learning rate and epochs, every trial to the end",
    "parameters": {
        "algorithm.hyperparameters.learning_rate": {"loguniform": [1e-4, 1e-3]},
        "algorithm.hyperparameters.n_epochs": {"int": [3, 6]},
    },
    "asha": None,
    "search": {"seed": 0, "startup_trials": 10},
}


def budget(timesteps: int) -> dict:
    """ppo_spot at a small fixed budget: 16 envs, one-day episodes (24 steps), 4 periodic evaluations."""
    return {
        "env.n_envs": 16,
        "training.total_timesteps": timesteps,
        "training.checkpoint_every": timesteps // 4,
        "evaluation.every": timesteps // 4,
        "evaluation.episodes": 50,
        "evaluation.final_episodes": 200,
        "evaluation.baselines": ["delta"],
        "scenario.overrides.episode.horizon_days": 1.0,
        "algorithm.hyperparameters.n_steps": 64,
        "algorithm.hyperparameters.batch_size": 256,
    }


def time_ray_start() -> float:
    """Seconds for a local Ray to start and run its first task, in a fresh process."""
    code = (
        "import time; t = time.perf_counter()\n"
        "from hedgegym.train.cluster import ray_session\n"
        "import ray\n"
        "with ray_session(None, 2, 1):\n"
        "    ray.get(ray.remote(lambda: 1).remote())\n"
        "    print(time.perf_counter() - t)\n"
    )
    return float(_python(code))


def bench_sweep(workdir: Path, trials: int, timesteps: int, workers: int) -> dict:
    from hedgegym.train.sweep import run_sweep

    space = workdir / "space.yaml"
    space.write_text(yaml.safe_dump(SPACE))
    load = os.getloadavg()[0]
    started = time.perf_counter()
    result = run_sweep(
        CONFIG,
        space,
        sets=budget(timesteps),
        trials=trials,
        workers=workers,
        out=workdir / f"sweep-{workers}",
        notify=lambda line: None,
    )
    wall = time.perf_counter() - started
    finished = [r for r in result.leaderboard if r["status"] == "finished"]
    assert len(finished) == trials, result.leaderboard
    return {
        "workers": workers,
        "trials": trials,
        "wall_s": wall,
        "trials_per_hour": trials / wall * 3600,
        "load_average_1min_before": round(load, 2),
        "load_average_1min_after": round(os.getloadavg()[0], 2),
    }


def time_direct_train(workdir: Path, timesteps: int) -> float:
    """One trial's config trained by `train()` in a fresh Python process (imports included)."""
    code = (
        "import sys, time; t = time.perf_counter()\n"
        "from hedgegym.train.experiment import load_experiment\n"
        "from hedgegym.train.training import train\n"
        f"cfg = load_experiment({str(CONFIG)!r}, {budget(timesteps)!r})\n"
        "train(cfg, out=sys.argv[1])\n"
        "print(time.perf_counter() - t)\n"
    )
    return float(_python(code, str(workdir / "direct")))


def _python(code: str, *args: str) -> str:
    """The last line ``code`` prints, run in a fresh interpreter; its stderr if it fails."""
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"the benchmark's subprocess failed:\n{out.stderr[-3000:]}")
    return out.stdout.strip().splitlines()[-1]


def bench_matrix(episodes: int, model: Path) -> dict:
    from hedgegym.envs.config import resolve_scenario
    from hedgegym.train.matrix import evaluate_matrix

    configs = [resolve_scenario(name, None, {"episode.horizon_days": 1.0}) for name in ("default", "short-gamma-crash")]
    policies, baselines = [str(model)], "delta,leland,whalley_wilmott"
    work = len(configs) * 4 * episodes  # policy-episodes
    evaluate_matrix(configs[:1], policies, baselines, 64, 0, local=True)  # numba's cache and torch loaded
    load = os.getloadavg()[0]
    t = time.perf_counter()
    local = evaluate_matrix(configs, policies, baselines, episodes, 0, local=True)
    local_s = time.perf_counter() - t
    t = time.perf_counter()
    ray = evaluate_matrix(configs, policies, baselines, episodes, 0, workers=2)
    ray_s = time.perf_counter() - t
    same = json.dumps(ray.matrix_json()) == json.dumps(local.matrix_json())
    return {
        "scenarios": len(configs),
        "policies": 4,
        "episodes": episodes,
        "local_s": local_s,
        "ray_s": ray_s,
        "local_episodes_per_s": work / local_s,
        "ray_episodes_per_s": work / ray_s,
        "ray_tasks": ray.tasks,
        "identical": same,
        "load_average_1min_before": round(load, 2),
        "load_average_1min_after": round(os.getloadavg()[0], 2),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--timesteps", type=int, default=8192)
    parser.add_argument("--episodes", type=int, default=20_000)
    args = parser.parse_args(argv)

    from hedgegym.train.experiment import load_experiment
    from hedgegym.train.io import write_json_atomic
    from hedgegym.train.training import train

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        ray_start = time_ray_start()
        direct = time_direct_train(workdir, args.timesteps)
        sweeps = [bench_sweep(workdir, args.trials, args.timesteps, w) for w in (1, 2)]
        one = sweeps[0]
        per_trial_ray = one["wall_s"] / args.trials
        per_trial_no_start = (one["wall_s"] - ray_start) / args.trials
        model = train(
            load_experiment(CONFIG, {**budget(args.timesteps), "evaluation.every": 0}), out=workdir / "model"
        ).model_path
        matrix = bench_matrix(args.episodes, model)
    record = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "ray_start_s": ray_start,
        "direct_train_s": direct,
        "sweeps": sweeps,
        "per_trial": {
            "ray_s": per_trial_ray,
            "ray_without_start_s": per_trial_no_start,
            "direct_s": direct,
            "overhead_s": per_trial_ray - direct,
            "overhead_without_start_s": per_trial_no_start - direct,
        },
        "matrix": matrix,
        "settings": {"trials": args.trials, "timesteps": args.timesteps, "budget": budget(args.timesteps)},
    }
    write_json_atomic(RESULTS, record)
    print(f"Ray start (local, first task): {ray_start:.1f} s; one trial trained directly: {direct:.1f} s")
    for s in sweeps:
        print(
            f"{s['workers']} worker(s): {s['trials']} trials in {s['wall_s']:.0f} s = {s['trials_per_hour']:.0f} "
            f"trials/hour (load {s['load_average_1min_before']:.1f} -> {s['load_average_1min_after']:.1f})"
        )
    p = record["per_trial"]
    print(
        f"per trial at 1 worker: {p['ray_s']:.1f} s in Ray ({p['ray_without_start_s']:.1f} s without Ray's start) "
        f"vs {p['direct_s']:.1f} s direct: overhead {p['overhead_s']:+.1f} s ({p['overhead_without_start_s']:+.1f} s)"
    )
    print(
        f"matrix {matrix['scenarios']} scenarios x {matrix['policies']} policies x {matrix['episodes']:,} episodes: "
        f"local {matrix['local_s']:.1f} s ({matrix['local_episodes_per_s']:,.0f} episodes/s), Ray 2 workers "
        f"{matrix['ray_s']:.1f} s ({matrix['ray_episodes_per_s']:,.0f} episodes/s, {matrix['ray_tasks']} tasks), "
        f"x{matrix['local_s'] / matrix['ray_s']:.2f}; identical: {matrix['identical']}"
    )
    return record


if __name__ == "__main__":
    main()
