"""Env-steps per second of the market kernel, against a NumPy yardstick, and its compile time.

On one scenario (default ``default``), for each number of envs N (default 1, 64, 1024, 16384):

- ``serial``: :func:`hedgegym.envs.kernel.step_serial`, one thread;
- ``parallel``: :func:`hedgegym.envs.kernel.step_parallel`, rows over numba's threads;
- ``numpy``: :class:`TextbookNumpy`, a vectorised NumPy "textbook step" written here — GBM, and
  the Black–Scholes delta and mark of one call per env, a spot trade and its cash — the least a
  simulator of this market does per step, and what a NumPy port would cost at the least. It is a
  speed yardstick measured in the same run, not an oracle: nothing checks the kernel against it;

the kernels on the same pre-drawn trades (up to ``agent.max_trade`` on every venue), inside
episodes (restarted, untimed, at their end). Each figure is the best of blocks of ``BLOCK`` steps timed over
``--repeats`` runs of ``--seconds`` per contender, the contenders interleaved, so that load from
other processes hits them alike (as ``timeit`` advises: the fastest run is the least disturbed);
rates are by wall-clock time, and by the process's CPU time for the single-threaded contenders.

Compile time: a fresh interpreter imports hedgegym and steps one env (``Market``, the serial kernel)
and then one parallel step, with ``NUMBA_CACHE_DIR`` set to a new temporary folder (cold: numba
compiles everything and writes its cache) and then again with the same folder (cached).

Targets of the issues: at N = 1024 ``parallel`` >= 1.9M env-steps/s on the 2-core dev machine (quiet);
cached import-and-first-step < 2 s. ``serial_over_numpy`` is reported, with no target: the kernel
steps the whole market (dealers, venues, smile, every line of the book), the yardstick one call.

Usage:
    python benchmarks/bench_kernel.py
    python benchmarks/bench_kernel.py --sizes 1024 --seconds 0.5 --no-compile
Writes ``benchmarks/results/kernel.json`` atomically.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numba
import numpy as np
from _common import step_kernel

from hedgegym.envs import kernel
from hedgegym.envs.config import load_scenario
from hedgegym.envs.market import Market
from hedgegym.train.io import write_json_atomic

RESULTS = Path(__file__).resolve().parent / "results" / "kernel.json"
TRADE_BATCHES = 16  # pre-drawn trade batches, cycled
BLOCK = 8  # steps per timed block: short, so that some blocks fall between other processes' bursts
# The CPU time of a multi-threaded run sums its threads: only single-threaded rates are given by it.
CPU_CLOCKED = ("serial", "numpy")
TARGET_PARALLEL_1024 = 1.9e6
TARGET_CACHED_FIRST_STEP_S = 2.0

FIRST_STEP = """
import time
start = time.perf_counter()
import numpy as np
from hedgegym.envs import kernel
from hedgegym.envs.config import load_scenario
from hedgegym.envs.market import Market
imported = time.perf_counter()
market = Market(load_scenario("{scenario}"), n_envs=1)
market.reset(seeds=0)
market.step(np.ones((1, 3)))
first_step = time.perf_counter()
m = market
kernel.step_parallel(m.state, m.hedge, m.keys, np.ones((1, 3)), m.params, m.venues, m.dealer_lines,
                     m.agent_lines, m.out, m.ext)
print(imported - start, first_step - start, time.perf_counter() - start)
"""


def _normal_cdf(x: np.ndarray) -> np.ndarray:
    """Standard normal CDF, Abramowitz & Stegun 26.2.17 (|error| < 7.5e-8): NumPy has no erf."""
    t = 1.0 / (1.0 + 0.2316419 * np.abs(x))
    poly = t * (0.319381530 + t * (-0.356563782 + t * (1.781477937 + t * (-1.821255978 + t * 1.330274429))))
    tail = np.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi) * poly
    return np.where(x >= 0.0, 1.0 - tail, tail)


class TextbookNumpy:
    """A speed yardstick, not an oracle: the textbook step of N envs in vectorised NumPy.

    Per step: a spot trade at mid paid from cash, a GBM log-price step, and the Black–Scholes
    (r = 0) delta and mark of one short at-the-money call per env, with the step's P&L and its sum.
    """

    def __init__(self, config, n: int):
        self.n = n
        self.dt = config.episode.dt
        self.sigma = config.market.sigma
        self.mu = config.market.mu
        self.log_strike = math.log(config.market.spot0)
        self.expiry = config.episode_steps * self.dt
        self.episode_steps = config.episode_steps
        self.rng = np.random.default_rng(n)
        self.reset()

    def reset(self) -> None:
        self.step_index = 0
        self.log_spot = np.full(self.n, self.log_strike)
        self.hedge = np.zeros(self.n)
        self.cash = np.zeros(self.n)
        self.value = self.mark(np.exp(self.log_spot))[0]
        self.cum_pnl = np.zeros(self.n)

    def mark(self, spot: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(value, delta) of the short call at the current step."""
        tau = max(self.expiry - self.step_index * self.dt, 1e-12)
        total_vol = self.sigma * math.sqrt(tau)
        d1 = (np.log(spot) - self.log_strike + 0.5 * total_vol * total_vol) / total_vol
        n1 = _normal_cdf(d1)
        call = spot * n1 - math.exp(self.log_strike) * _normal_cdf(d1 - total_vol)
        return -call, -n1

    def step(self, trades: np.ndarray) -> None:
        spot = np.exp(self.log_spot)
        q = trades[:, 0]
        self.hedge += q
        self.cash -= q * spot
        z = self.rng.standard_normal(self.n)
        self.log_spot += (self.mu - 0.5 * self.sigma**2) * self.dt + self.sigma * math.sqrt(self.dt) * z
        self.step_index += 1
        spot_new = np.exp(self.log_spot)
        value, _ = self.mark(spot_new)
        pnl = value - self.value + self.hedge * (spot_new - spot)
        self.value = value
        self.cum_pnl += pnl


def timed_blocks(step: Callable[[int], None], restart: Callable[[], None], n: int):
    """``run(seconds)``: call ``step(k)`` for >= ``seconds`` in timed blocks of ``BLOCK`` steps
    (``restart()``, untimed, before each block); returns the best block's (wall, CPU) rates."""

    def run(seconds: float) -> tuple[float, float]:
        best_wall = best_cpu = 0.0
        start = time.perf_counter()
        while best_wall == 0.0 or time.perf_counter() - start < seconds:
            restart()
            wall, cpu = time.perf_counter(), time.process_time()
            for k in range(BLOCK):
                step(k)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            best_wall = max(best_wall, BLOCK * n / wall)
            best_cpu = max(best_cpu, BLOCK * n / cpu) if cpu > 0 else best_cpu
        return best_wall, best_cpu

    return run


def _trades(config, n: int) -> np.ndarray:
    return np.random.default_rng(n).uniform(-1.0, 1.0, (TRADE_BATCHES, n, 3)) * config.agent.max_trade


def contender(config, fn: Callable, n: int) -> Callable[[float], tuple[float, float]]:
    """``run(seconds)`` of the kernel ``fn`` on ``n`` envs (episodes restart, untimed, at their end)."""
    m = Market(config, n_envs=n)
    trades = _trades(config, n)
    seeds = np.arange(n)
    episode = 0
    m.reset(seeds=seeds)
    step_kernel(fn, m, trades[0])

    def restart() -> None:
        nonlocal episode
        if m.step_index[0] + BLOCK > m.episode_steps:
            episode += 1
            m.reset(seeds=seeds, episodes=episode)

    def step(k: int) -> None:
        step_kernel(fn, m, trades[k % TRADE_BATCHES])

    return timed_blocks(step, restart, n)


def numpy_contender(config, n: int) -> Callable[[float], tuple[float, float]]:
    """``run(seconds)`` of :class:`TextbookNumpy` on ``n`` envs, on the same trades."""
    yardstick = TextbookNumpy(config, n)
    trades = _trades(config, n)

    def restart() -> None:
        if yardstick.step_index + BLOCK > yardstick.episode_steps:
            yardstick.reset()

    return timed_blocks(lambda k: yardstick.step(trades[k % TRADE_BATCHES]), restart, n)


def throughput(scenario: str, sizes: list[int], seconds: float, repeats: int) -> list[dict]:
    config = load_scenario(scenario)
    rows = []
    for n in sizes:
        runs = {
            "serial": contender(config, kernel.step_serial, n),
            "parallel": contender(config, kernel.step_parallel, n),
            "numpy": numpy_contender(config, n),
        }
        best = dict.fromkeys(runs, (0.0, 0.0))
        for _ in range(repeats):
            for name, run in runs.items():
                wall, cpu = run(seconds)
                best[name] = (max(best[name][0], wall), max(best[name][1], cpu))
        row = {"n_envs": n}
        for name in runs:
            row[name] = best[name][0]
            if name in CPU_CLOCKED:
                row[f"{name}_cpu"] = best[name][1]
        row["serial_over_numpy"] = row["serial"] / row["numpy"]
        row["serial_over_numpy_cpu"] = row["serial_cpu"] / row["numpy_cpu"]
        row["parallel_over_serial"] = row["parallel"] / row["serial"]
        rows.append(row)
        print(f"N = {n} done", flush=True)
    return rows


def compile_times(scenario: str) -> dict:
    """Seconds to import and take the first steps in a fresh interpreter: cold cache, then cached."""
    out = {}
    with tempfile.TemporaryDirectory(prefix="hedgegym-numba-cache-") as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        for label in ("cold", "cached"):
            start = time.perf_counter()
            proc = subprocess.run(
                [sys.executable, "-c", FIRST_STEP.format(scenario=scenario)],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            wall = time.perf_counter() - start
            imported, first_step, with_parallel = (float(x) for x in proc.stdout.split())
            out[label] = {
                "import_s": imported,
                "import_and_first_step_s": first_step,
                "with_first_parallel_step_s": with_parallel,
                "process_wall_s": wall,
            }
            print(f"compile ({label}) done", flush=True)
    return out


def print_report(rows: list[dict], compile_s: dict | None, load: tuple[float, float]) -> None:
    cores = os.cpu_count() or 1
    if load[0] > 0.5:
        # Other processes on the cores: numba's OpenMP threads spin-wait for each other at every
        # step, so one descheduled thread stalls the parallel kernel; the serial figures hold up.
        print(
            f"\nwarning: load average {load[0]:.1f} on {cores} cores before the run (this run's own "
            f"included, {load[1]:.1f} after): other processes depress the parallel figures"
        )
    print("\nenv-steps/s (best of runs; cpu: by process CPU time)")
    head = ("N", "serial", "serial cpu", "parallel", "numpy", "numpy cpu", "serial/numpy", "(cpu)", "par/serial")
    print("".join(f"{h:>13}" for h in head))
    for r in rows:
        cells = (
            f"{r['n_envs']:,}",
            f"{r['serial']:,.0f}",
            f"{r['serial_cpu']:,.0f}",
            f"{r['parallel']:,.0f}",
            f"{r['numpy']:,.0f}",
            f"{r['numpy_cpu']:,.0f}",
            f"{r['serial_over_numpy']:.1f}x",
            f"{r['serial_over_numpy_cpu']:.1f}x",
            f"{r['parallel_over_serial']:.2f}x",
        )
        print("".join(f"{c:>13}" for c in cells))
    if compile_s:
        print("\nimport + first step in a fresh interpreter, s (first parallel step in brackets)")
        for label, c in compile_s.items():
            print(
                f"  {label:>6}: {c['import_and_first_step_s']:.2f} ({c['with_first_parallel_step_s']:.2f}); "
                f"import alone {c['import_s']:.2f}; process {c['process_wall_s']:.2f}"
            )
    print("\ntargets")
    for r in rows:
        if r["n_envs"] == 1024:
            print(
                f"  parallel at N=1024 >= {TARGET_PARALLEL_1024:,.0f}/s: {r['parallel']:,.0f} "
                f"{'met' if r['parallel'] >= TARGET_PARALLEL_1024 else 'MISSED'}"
            )
    if compile_s:
        cached = compile_s["cached"]["import_and_first_step_s"]
        print(
            f"  cached import-and-first-step < {TARGET_CACHED_FIRST_STEP_S:g} s: {cached:.2f} s "
            f"{'met' if cached < TARGET_CACHED_FIRST_STEP_S else 'MISSED'}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 64, 1024, 16384])
    parser.add_argument("--scenario", default="default")
    parser.add_argument("--seconds", type=float, default=1.0, help="minimum length of one timed run")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per figure (the best is kept)")
    parser.add_argument("--no-compile", action="store_true", help="skip the compile-time subprocesses")
    parser.add_argument("--output", type=Path, default=RESULTS, help="where to write the JSON results")
    args = parser.parse_args()
    load_before = os.getloadavg()
    rows = throughput(args.scenario, args.sizes, args.seconds, args.repeats)
    load_after = os.getloadavg()
    compile_s = None if args.no_compile else compile_times(args.scenario)
    print_report(rows, compile_s, (load_before[0], load_after[0]))
    write_json_atomic(
        args.output,
        {
            "scenario": args.scenario,
            "seconds_per_run": args.seconds,
            "repeats": args.repeats,
            "rows": rows,
            "compile": compile_s,
            "targets": {
                "parallel_at_1024": TARGET_PARALLEL_1024,
                "cached_import_and_first_step_s": TARGET_CACHED_FIRST_STEP_S,
            },
            "machine": {
                "python": platform.python_version(),
                "cpu_count": os.cpu_count(),
                "numba_threads": numba.get_num_threads(),
                "threading_layer": numba.threading_layer(),
                "load_average_before": load_before,
                "load_average_after": load_after,
                "numpy": np.__version__,
                "numba": numba.__version__,
            },
            "unix_time": time.time(),
        },
    )
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
