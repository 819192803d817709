"""Wall time from ``hedgegym train CONFIG`` to the first checkpoint that beats the best baseline.

Starts ``hedgegym train CONFIG`` as a subprocess (checkpoints every ``--every`` timesteps, all
kept, at most ``--max-timesteps``), noting the wall time of each checkpoint from the moment the
command was started (imports and numba compilation included). Then judges each checkpoint, in
order, on 500 held-out episodes — the first 500 seeds of the config's final evaluation, which no
training step and no choice of ``best_model.zip`` has seen — against every baseline of the config's
``evaluation.baselines``: a checkpoint *wins* when the paired 95 % bootstrap interval of its
mean-variance objective minus the best baseline's excludes 0 on the positive side. Reports the
first winner's timesteps and wall time. The judging runs after training, so it does not count.

Writes ``benchmarks/results/time_to_win.json`` atomically.

Usage:
    python benchmarks/bench_time_to_win.py                        # configs/ppo_multi.yaml
    python benchmarks/bench_time_to_win.py --config configs/ppo_spot.yaml --every 100000
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "time_to_win.json"
EPISODES = 500


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "ppo_multi.yaml"))
    parser.add_argument("--every", type=int, default=250_000, help="checkpoint every this many timesteps")
    parser.add_argument("--max-timesteps", type=int, default=4_000_000)
    parser.add_argument("--episodes", type=int, default=EPISODES)
    parser.add_argument("--out", default=None, help="run directory (default: a temporary one)")
    args = parser.parse_args()

    from hedgegym.train.experiment import load_experiment

    base = load_experiment(args.config)
    total = min(args.max_timesteps, base.training.total_timesteps)
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="time-to-win-")) / "run"
    sets = {
        "training.total_timesteps": total,
        "training.checkpoint_every": args.every,
        "training.keep_checkpoints": 1000,
        # The final evaluation is not part of the measure; keep it small.
        "evaluation.final_episodes": 20,
    }
    cmd = [sys.executable, "-m", "hedgegym.train.cli", "train", args.config, "--out", str(out)]
    for k, v in sets.items():
        cmd += ["--set", f"{k}={v}"]
    started = time.time()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    train_wall = time.time() - started

    from hedgegym.train.evaluate import evaluate
    from hedgegym.train.policies import load_sb3_policy

    config = load_experiment(out / "config.yaml")
    scenario = config.scenario.resolved
    rows = []
    winner = None
    for entry_path in sorted((out / "checkpoints").glob("step_*[0-9].json")):
        entry = json.loads(entry_path.read_text())
        wall = datetime.fromisoformat(entry["time"]).timestamp() - started
        policy = load_sb3_policy(out / "checkpoints" / entry["model"], scenario)
        result = evaluate(
            [("agent", policy), *config.evaluation.baselines],
            scenario,
            episodes=args.episodes,
            seed=config.evaluation.seed,
            agent_impact_rerun=False,
        )
        diff = result.compare("agent", result.reference)["mean_variance"]
        row = {
            "timesteps": entry["timesteps"],
            "wall_s": round(wall, 1),
            "best_baseline": result.reference,
            "paired_mean_variance": [diff.value, diff.low, diff.high],
        }
        rows.append(row)
        print(
            f"{entry['timesteps']:>10,} steps  {wall:6.1f} s  vs {result.reference}: "
            f"{diff.value:+,.0f} [{diff.low:+,.0f}, {diff.high:+,.0f}]",
            flush=True,
        )
        if diff.low > 0 and winner is None:
            winner = row
            break
    record = {
        "config": str(args.config),
        "episodes": args.episodes,
        "checkpoint_every": args.every,
        "train_wall_s": round(train_wall, 1),
        "first_win": winner,
        "checkpoints": rows,
        "machine": {"python": platform.python_version(), "cpus": __import__("os").cpu_count()},
        "date": datetime.now().isoformat(timespec="seconds"),
    }
    from hedgegym.envs.atomic import write_text_atomic

    RESULTS.parent.mkdir(exist_ok=True)
    write_text_atomic(RESULTS, json.dumps(record, indent=2))
    if winner is None:
        print(f"no checkpoint up to {total:,} timesteps beats {rows[-1]['best_baseline'] if rows else '-'}")
    else:
        print(f"first win: {winner['timesteps']:,} timesteps, {winner['wall_s']} s after `hedgegym train` started")


if __name__ == "__main__":
    main()
