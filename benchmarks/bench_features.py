"""Cost of each second-order feature (README "The market model") when on, against the same scenario off.

On one base scenario (default ``default``), each variant steps N envs (default 1024) with the
parallel and the serial kernel, on the same pre-drawn trades, interleaved, best of blocks over
``--repeats`` runs of ``--seconds`` (the method of ``bench_kernel.py``, whose ``contender`` this
reuses):

- ``off``: the base scenario as it is;
- ``implied_vol``: ``market.implied_vol`` on (spot beta -2.8, vol of vol 0.75): one more normal
  draw, the ATM vol's slope in the clearing, the flow decomposition's book greeks each step;
- ``one_cohort``: the dealers as one cohort with the block's settings (the cohorts' clearing);
- ``four_cohorts``: four cohorts with schedules, lags and bands (``crowded-dealers``' cohorts);
- ``liquidations``: 128 buckets a side of leveraged perp positions ($4B long, $1B short, 10x);
- ``all``: the three together (four cohorts).

Each variant's figure is in env-steps per second and as a ratio to ``off``: wall-clock for both
kernels, and the serial kernel by the process's CPU time too (``serial_cpu``), which other
processes on a busy machine disturb far less than the wall clock. The variants measure
the features' code, not a scenario's dynamics: the base scenario's market is kept (a cascade that
liquidates everything costs less later).

Usage:
    python benchmarks/bench_features.py
    python benchmarks/bench_features.py --n 1024 --seconds 0.5 --repeats 3
Writes ``benchmarks/results/features.json`` atomically.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
from pathlib import Path

import numba

from hedgegym.envs import kernel
from hedgegym.envs.config import load_scenario
from hedgegym.train.io import write_json_atomic

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "features.json"
_spec = importlib.util.spec_from_file_location("bench_kernel", HERE / "bench_kernel.py")
bench_kernel = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_kernel)

IMPLIED_VOL = {"market.implied_vol": {"enabled": True, "spot_beta": -2.8, "kappa": 84.0, "vol_of_vol": 0.75}}
FOUR_COHORTS = {
    "dealers.cohorts": [
        {"share": 0.3, "rebalance_every": 4, "lag": 1, "band": 0.005},
        {"share": 0.3, "rebalance_every": 4, "lag": 1, "band": 0.005},
        {"share": 0.2, "rebalance_every": 4, "lag": 1, "band": 0.005},
        {"share": 0.2},
    ]
}
LIQUIDATIONS = {
    "venues.perp.liquidations": {
        "enabled": True,
        "long_oi_usd": 4.0e9,
        "short_oi_usd": 1.0e9,
        "leverage": 10.0,
        "buckets": 128,
        "insurance_fund_usd": 3.0e8,
    }
}


def variants(base: str) -> dict:
    cfg = load_scenario(base)
    one_cohort = {"dealers.cohorts": [{"share": 1.0, "venue_mix": cfg.dealers.venue_mix.model_dump()}]}
    return {
        "off": load_scenario(base),
        "implied_vol": load_scenario(base, IMPLIED_VOL),
        "one_cohort": load_scenario(base, one_cohort),
        "four_cohorts": load_scenario(base, FOUR_COHORTS),
        "liquidations": load_scenario(base, LIQUIDATIONS),
        "all": load_scenario(base, {**IMPLIED_VOL, **FOUR_COHORTS, **LIQUIDATIONS}),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", default="default")
    parser.add_argument("--n", type=int, default=1024)
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    load = os.getloadavg()
    configs = variants(args.scenario)
    runs = {}
    for name, cfg in configs.items():
        runs[(name, "parallel")] = bench_kernel.contender(cfg, kernel.step_parallel, args.n)
        runs[(name, "serial")] = bench_kernel.contender(cfg, kernel.step_serial, args.n)
    best = dict.fromkeys(runs, 0.0)
    best_cpu = dict.fromkeys(runs, 0.0)
    for _ in range(args.repeats):
        for key, run in runs.items():
            wall, cpu = run(args.seconds)
            best[key] = max(best[key], wall)
            best_cpu[key] = max(best_cpu[key], cpu)
    rows = []
    print(f"{args.scenario}, N = {args.n}, load {load[0]:.2f} {load[1]:.2f} before the run")
    header = ("variant", "parallel/s", "vs off", "serial/s", "vs off", "serial CPU/s", "vs off")
    print(" ".join(f"{h:>12}" for h in header))
    for name in configs:
        par, ser, ser_cpu = best[(name, "parallel")], best[(name, "serial")], best_cpu[(name, "serial")]
        row = {
            "variant": name,
            "parallel": par,
            "parallel_vs_off": par / best[("off", "parallel")],
            "serial": ser,
            "serial_vs_off": ser / best[("off", "serial")],
            "serial_cpu": ser_cpu,
            "serial_cpu_vs_off": ser_cpu / best_cpu[("off", "serial")],
        }
        rows.append(row)
        print(
            f"{name:>12} {par:12,.0f} {row['parallel_vs_off']:12.3f} {ser:12,.0f} {row['serial_vs_off']:12.3f} "
            f"{ser_cpu:12,.0f} {row['serial_cpu_vs_off']:12.3f}"
        )
    write_json_atomic(
        args.output,
        {
            "scenario": args.scenario,
            "n_envs": args.n,
            "seconds_per_run": args.seconds,
            "repeats": args.repeats,
            "rows": rows,
            "load_before": list(load),
            "load_after": list(os.getloadavg()),
            "machine": {
                "cpus": os.cpu_count(),
                "numba_threads": numba.get_num_threads(),
                "python": platform.python_version(),
            },
        },
    )
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
