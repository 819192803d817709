"""Env-steps per second next to a busy process: does the batched env slow down gracefully?

README says the parallel kernel's workers wait passively, so that a busy machine slows the batched
env down gracefully rather than collapsing it. This measures it: at N envs (default 1024) of one
scenario (default ``default``), on the same pre-drawn random actions,

- ``vector``: :class:`~hedgegym.envs.vector_env.HedgingVectorEnv` through the Gymnasium API (the
  Market's own choice of kernel: parallel at this N);
- ``kernel serial`` and ``kernel parallel``: :func:`hedgegym.envs.kernel.step_serial` and
  :func:`~hedgegym.envs.kernel.step_parallel` on a Market's arrays (step only);

first on the machine as it is (``idle``: no competitor of ours), then ``busy``: next to a torch job
this benchmark starts itself, a subprocess (a fresh interpreter, never a fork of this one, which
runs numba's and torch's threads) multiplying 512 x 512 matrices in a loop on ``--busy-threads``
torch threads (default 1: one of the 2 cores taken), then ``idle`` again after it is stopped.
Each figure is the best of ``--repeats`` timed runs of ``--seconds`` (rounds interleave the
contenders). The ratio busy / idle is each contender's busy rate over the better of its two idle
ones; 1 / cores-left would be a fair share (0.5 on 2 cores with one taken), far below it a collapse.

The load average is printed and saved before and after each phase: on a machine shared with other
work "idle" is only "without our competitor".

Usage:
    python benchmarks/bench_busy.py
    python benchmarks/bench_busy.py --n-envs 1024 --seconds 1 --busy-threads 1
Writes ``benchmarks/results/busy.json`` atomically.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numba
import numpy as np
from _common import reset_rows, step_kernel

from hedgegym.envs import HedgingVectorEnv, Market, kernel
from hedgegym.envs.config import load_scenario
from hedgegym.train.io import write_json_atomic

RESULTS = Path(__file__).resolve().parent / "results" / "busy.json"
ACTION_BATCHES = 32
COMPETITOR = """
import sys, torch
torch.set_num_threads({threads})
a = torch.randn(512, 512)
b = torch.randn(512, 512)
print("ready", flush=True)
while True:
    a = torch.tanh(a @ b)
"""


def kernel_step(config, n: int, fn, actions: np.ndarray) -> Callable[[int], None]:
    """``step(k)`` of the raw kernel ``fn`` on a Market's arrays; rows reset at the episode's end."""
    m = Market(config, n_envs=n)
    m.reset(seeds=np.arange(n))
    trades = np.stack([m.actions_to_trades(a) for a in actions])
    rows = np.arange(n, dtype=np.int64)
    seeds = np.arange(n, dtype=np.uint64)

    def step(k: int) -> None:
        step_kernel(fn, m, trades[k % len(trades)])
        if (k + 1) % m.episode_steps == 0:
            reset_rows(m, rows, seeds, (k + 1) // m.episode_steps)

    return step


def vector_step(config, n: int, actions: np.ndarray) -> Callable[[int], None]:
    env = HedgingVectorEnv(n, config=config)
    env.reset(seed=0)
    return lambda k: env.step(actions[k % len(actions)])


def best_rates(steps: dict[str, Callable[[int], None]], n: int, seconds: float, repeats: int) -> dict[str, float]:
    """Best env-steps/s (wall clock) of each contender over ``repeats`` interleaved rounds."""
    best = dict.fromkeys(steps, 0.0)
    for _ in range(repeats):
        for name, step in steps.items():
            calls = 0
            start = time.perf_counter()
            while calls < 3 or time.perf_counter() - start < seconds:
                step(calls)
                calls += 1
            best[name] = max(best[name], calls * n / (time.perf_counter() - start))
    return best


def phase(label: str, steps: dict, n: int, seconds: float, repeats: int) -> dict:
    load_before = os.getloadavg()
    rates = best_rates(steps, n, seconds, repeats)
    record = {"rates": rates, "load_average_before": load_before, "load_average_after": os.getloadavg()}
    print(f"{label} done (load {load_before[0]:.1f} -> {record['load_average_after'][0]:.1f})", flush=True)
    return record


def start_competitor(threads: int) -> subprocess.Popen:
    """The torch job, in a fresh interpreter; returns once it computes."""
    proc = subprocess.Popen(
        [sys.executable, "-c", COMPETITOR.format(threads=threads)], stdout=subprocess.PIPE, text=True
    )
    line = proc.stdout.readline()
    if line.strip() != "ready":
        proc.kill()
        raise RuntimeError(f"the competing torch job did not start (said {line!r})")
    time.sleep(1.0)  # let it reach its steady state
    return proc


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scenario", default="default")
    parser.add_argument("--n-envs", type=int, default=1024)
    parser.add_argument("--seconds", type=float, default=1.0, help="minimum length of one timed run")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per figure (the best is kept)")
    parser.add_argument("--busy-threads", type=int, default=1, help="torch threads of the competing job")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    config = load_scenario(args.scenario)
    n = args.n_envs
    probe = HedgingVectorEnv(n, config=config)
    actions = np.random.default_rng(0).uniform(-1.0, 1.0, (ACTION_BATCHES, *probe.action_space.shape))
    actions = actions.astype(np.float32)
    probe.close()
    steps = {
        "vector": vector_step(config, n, actions),
        "kernel serial": kernel_step(config, n, kernel.step_serial, actions),
        "kernel parallel": kernel_step(config, n, kernel.step_parallel, actions),
    }
    for step in steps.values():  # load or compile the numba code
        step(0)

    phases = {"idle": phase("idle", steps, n, args.seconds, args.repeats)}
    competitor = start_competitor(args.busy_threads)
    try:
        phases["busy"] = phase("busy", steps, n, args.seconds, args.repeats)
    finally:
        competitor.terminate()
        competitor.wait(timeout=10)
    time.sleep(1.0)
    phases["idle_after"] = phase("idle after", steps, n, args.seconds, args.repeats)

    ratios = {
        name: phases["busy"]["rates"][name] / max(phases["idle"]["rates"][name], phases["idle_after"]["rates"][name])
        for name in steps
    }
    print(
        f"\nenv-steps/s at N = {n} ({args.scenario}); competitor: torch matmul loop on {args.busy_threads} "
        f"thread(s), {os.cpu_count()} cores"
    )
    print(f"{'contender':>18}{'idle':>14}{'busy':>14}{'idle after':>14}{'busy/idle':>11}")
    for name in steps:
        print(
            f"{name:>18}"
            + "".join(f"{phases[p]['rates'][name]:>14,.0f}" for p in ("idle", "busy", "idle_after"))
            + f"{ratios[name]:>10.2f}x"
        )
    for p, rec in phases.items():
        print(f"  load average during {p}: {rec['load_average_before'][0]:.1f} -> {rec['load_average_after'][0]:.1f}")
    record = {
        "scenario": args.scenario,
        "n_envs": n,
        "seconds_per_run": args.seconds,
        "repeats": args.repeats,
        "competitor": {"kind": "torch 512x512 matmul loop, subprocess", "torch_threads": args.busy_threads},
        "phases": phases,
        "busy_over_idle": ratios,
        "machine": {
            "python": platform.python_version(),
            "cpu_count": os.cpu_count(),
            "numba_threads": numba.get_num_threads(),
            "threading_layer": numba.threading_layer(),
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        },
        "unix_time": time.time(),
    }
    write_json_atomic(args.output, record)
    print(f"wrote {args.output}")
    return record


if __name__ == "__main__":
    main()
