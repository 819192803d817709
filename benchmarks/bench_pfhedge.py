"""Evaluation speed against the deep-hedging anchor: hedgegym vs pfhedge on the textbook hedge.

The textbook case: a frictionless market (the ``frictionless`` scenario: GBM, sigma = 60 %, r = 0,
no dealers, infinite depth, no costs), a book short one at-the-money European call (strike =
spot0, 7 days), hedged on spot with the Black–Scholes delta at every hourly step, ``--paths``
(10,000) paths x 168 steps. Both libraries simulate the paths and the hedge and return each
path's P&L:

- ``hedgegym``: :func:`hedgegym.train.evaluate.run_policy` with the ``delta`` baseline (the
  simulation behind ``hedgegym evaluate``: the compiled hedger's rollout, the kernel's step on
  blocks of rows, plus the five recorded sample paths), and the whole library call
  :func:`hedgegym.train.evaluate` (``agent_impact_rerun=False``: the market has no impact to
  measure), which adds the bootstrap of every metric (1,000 resamples) — the figure the target
  is judged on; and, for scale, the kernel alone: the same paths stepped with no hedger;
- ``pfhedge``: ``Hedger(BlackScholes(EuropeanOption(BrownianStock(sigma=0.6, dt=1/8760),
  maturity=168/8760))).compute_pnl(n_paths=...)`` under ``torch.no_grad()``, in torch's default
  float32. pfhedge simulates ``ceil(maturity / dt + 1)`` time points, 169 steps here (168/8760
  divided by 1/8760 rounds above 168): its path-steps are counted as it simulates them.

Rates are path-steps per second of wall-clock time, the best of ``--repeats`` runs, the two
libraries interleaved so that load from other processes hits them alike, at each thread count of
``--threads`` (numba's and torch's set alike). A check that both computed the same hedge: the
std of the P&L per unit of spot (the discrete-hedging error, ~ sqrt(pi/4) vega sigma sqrt(dt/T),
Kamal & Derman 1999) agrees within Monte Carlo error, and the means are ~0 for hedgegym (the
premium is in its cash) and ~ -(the call's price) for pfhedge (its P&L leaves the premium out).

pfhedge is not a dependency: ``pip install --no-deps pfhedge tqdm`` (it needs torch, already one).
Without it the benchmark measures hedgegym alone and says so.

Target of the issue: the whole ``evaluate`` call within 4x of pfhedge (``pfhedge / hedgegym
evaluate <= 4``, each at its best thread count). CPU seconds (all threads) are reported next to
wall time: on a shared machine they say what the work costs when the wall clock does not.

Usage:
    python benchmarks/bench_pfhedge.py
    python benchmarks/bench_pfhedge.py --threads 1 --repeats 3
Writes ``benchmarks/results/pfhedge.json`` atomically.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import os
import platform
import time
from pathlib import Path

import numba
import numpy as np

from hedgegym.agents.baselines import make_baseline
from hedgegym.envs.config import HOURS_PER_YEAR, resolve_config
from hedgegym.envs.greeks import bsm_greeks
from hedgegym.envs.market import Market
from hedgegym.train import evaluate
from hedgegym.train.evaluate import run_policy
from hedgegym.train.io import write_json_atomic

RESULTS = Path(__file__).resolve().parent / "results" / "pfhedge.json"
SIGMA = 0.6
STEPS = 168
TARGET_RATIO = 4.0
INSTALL = "pip install --no-deps pfhedge tqdm"


def textbook_config():
    """``frictionless`` with one short ATM 7-day call, hedged on spot (the book pfhedge hedges)."""
    config = resolve_config(
        "frictionless",
        {
            "agent.lines": [{"strike": 100_000.0, "expiry_days": STEPS / 24.0, "kind": "call", "quantity": -1.0}],
            "agent.venues": ["spot"],
        },
    )
    assert config.market.sigma == SIGMA and config.episode_steps == STEPS and config.episode.dt_hours == 1.0
    assert config.market.rate == 0.0 and config.market.mu == 0.0 and not config.dealers.lines
    return config


def hedgegym_runs(config, paths: int):
    """``{name: run()}``; each run returns (path-steps, P&L per path in units of spot0)."""
    policy = make_baseline("delta", config)
    seeds = np.arange(paths, dtype=np.int64)
    spot0 = config.market.spot0

    def simulate():
        per_episode, _ = run_policy(policy, config, seeds, name=policy.name)
        return paths * STEPS, per_episode["pnl"] / spot0

    def library():
        result = evaluate(["delta"], config, episodes=paths, seed=0, agent_impact_rerun=False)
        return paths * STEPS, result.per_episode["delta@spot"]["pnl"] / spot0

    def kernel():
        # The floor under both: the kernel's steps of the same paths with no hedger (Market.step with
        # the agent inactive), at the parallel kernel's one-batch size. Its P&L is the unhedged book's.
        market = Market(config, n_envs=paths)
        market.reset(seeds=seeds, episodes=0)
        for _ in range(STEPS):
            market.step()
        return paths * STEPS, None

    return {"hedgegym run_policy": simulate, "hedgegym evaluate": library, "hedgegym kernel only": kernel}


def pfhedge_run(paths: int):
    """pfhedge's run, or None when it is not installed."""
    if importlib.util.find_spec("pfhedge") is None:
        return None
    import torch
    from pfhedge.instruments import BrownianStock, EuropeanOption
    from pfhedge.nn import BlackScholes, Hedger

    option = EuropeanOption(BrownianStock(sigma=SIGMA, dt=1.0 / HOURS_PER_YEAR), maturity=STEPS / HOURS_PER_YEAR)
    model = BlackScholes(option)
    hedger = Hedger(model, inputs=model.inputs())

    def run():
        with torch.no_grad():
            pnl = hedger.compute_pnl(option, n_paths=paths)
        return paths * (option.ul().spot.shape[1] - 1), pnl.double().numpy()

    return run


def set_threads(n: int) -> int:
    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    if importlib.util.find_spec("torch") is not None:
        import torch

        torch.set_num_threads(n)
    return numba.get_num_threads()


def measure(runs: dict, repeats: int) -> dict:
    """Best rate of each contender over ``repeats`` interleaved rounds (and its least CPU time),
    with its last P&L."""
    best = {name: {"path_steps_per_s": 0.0} for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            start, cpu = time.perf_counter(), time.process_time()
            path_steps, pnl = run()
            wall, cpu = time.perf_counter() - start, time.process_time() - cpu
            if path_steps / wall > best[name]["path_steps_per_s"]:
                best[name] = {"path_steps_per_s": path_steps / wall, "wall_s": wall, "path_steps": path_steps}
            best[name]["cpu_s"] = min(best[name].get("cpu_s", math.inf), cpu)
            best[name]["pnl"] = pnl
    return best


def pnl_summary(pnl: np.ndarray) -> dict:
    return {
        "mean": float(pnl.mean()),
        "std": float(pnl.std(ddof=1)),
        "std_error_of_std": float(pnl.std(ddof=1) / math.sqrt(2.0 * (pnl.size - 1))),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--paths", type=int, default=10_000)
    parser.add_argument(
        "--threads", type=int, nargs="+", default=[2, 1], help="thread counts of numba and torch (the same for both)"
    )
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per figure (the best is kept)")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    config = textbook_config()
    runs = hedgegym_runs(config, args.paths)
    pf = pfhedge_run(args.paths)
    if pf is None:
        print(f"pfhedge is not installed ({INSTALL}): measuring hedgegym alone")
    else:
        runs["pfhedge"] = pf
    for run in runs.values():  # compile / load numba code, warm torch
        run()

    rows = []
    for threads in args.threads:
        used = set_threads(threads)
        load_before = os.getloadavg()
        best = measure(runs, args.repeats)
        row = {"threads": used, "load_average_before": load_before, "load_average_after": os.getloadavg()}
        for name, b in best.items():
            row[name] = {**{k: v for k, v in b.items() if k != "pnl"}}
            if b["pnl"] is not None:
                row[name]["pnl_per_spot0"] = pnl_summary(b["pnl"])
        if pf is not None:
            row["pfhedge_over_hedgegym"] = (
                best["pfhedge"]["path_steps_per_s"] / best["hedgegym run_policy"]["path_steps_per_s"]
            )
            row["pfhedge_over_hedgegym_evaluate"] = (
                best["pfhedge"]["path_steps_per_s"] / best["hedgegym evaluate"]["path_steps_per_s"]
            )
            row["pfhedge_over_hedgegym_kernel"] = (
                best["pfhedge"]["path_steps_per_s"] / best["hedgegym kernel only"]["path_steps_per_s"]
            )
        rows.append(row)

    tau = STEPS / HOURS_PER_YEAR
    greeks = bsm_greeks(1.0, 1.0, tau, 0.0, SIGMA, True)
    expected_std = math.sqrt(math.pi / 4.0) * float(greeks.vega) * SIGMA / math.sqrt(STEPS)
    print(
        f"\ntextbook hedge: short 1 ATM call, 7 days, sigma {SIGMA:g}, BS delta on spot, {args.paths:,} paths "
        f"x {STEPS} hourly steps\n"
    )
    print(
        f"{'threads':>8}{'contender':>22}{'path-steps/s':>16}{'wall s':>9}{'CPU s':>8}{'P&L mean':>11}"
        f"{'P&L std':>10}{'load':>12}"
    )
    for row in rows:
        for name in runs:
            r = row[name]
            s = r.get("pnl_per_spot0")
            pnl = f"{s['mean']:>11.5f}{s['std']:>10.5f}" if s else f"{'(no hedge)':>21}"
            print(
                f"{row['threads']:>8}{name:>22}{r['path_steps_per_s']:>16,.0f}{r['wall_s']:>9.3f}{r['cpu_s']:>8.3f}"
                f"{pnl}{row['load_average_before'][0]:>6.1f}->{row['load_average_after'][0]:.1f}"
            )
    print(
        f"\nP&L in units of spot0; expected std ~ sqrt(pi/4) vega sigma / sqrt(N) = {expected_std:.5f}; "
        f"call price {float(greeks.price):.5f} (pfhedge's mean is minus it: its P&L leaves the premium out)"
    )
    if pf is not None:
        best_pf = max(r["pfhedge"]["path_steps_per_s"] for r in rows)
        loop_ratio = best_pf / max(r["hedgegym run_policy"]["path_steps_per_s"] for r in rows)
        ratio = best_pf / max(r["hedgegym evaluate"]["path_steps_per_s"] for r in rows)
        kernel_ratio = best_pf / max(r["hedgegym kernel only"]["path_steps_per_s"] for r in rows)
        print(
            f"\npfhedge / hedgegym (each at its best thread count): whole evaluate {ratio:.2f}x, "
            f"run_policy {loop_ratio:.2f}x, the kernel alone {kernel_ratio:.2f}x; per thread count (evaluate): "
            + ", ".join(f"{r['threads']}: {r['pfhedge_over_hedgegym_evaluate']:.2f}x" for r in rows)
        )
        print(
            f"target: the whole evaluate within {TARGET_RATIO:g}x of pfhedge: "
            f"{'met' if ratio <= TARGET_RATIO else 'MISSED'}"
        )
    else:
        best_pf = ratio = loop_ratio = kernel_ratio = None
    record = {
        "case": {
            "scenario": "frictionless",
            "book": "short 1 ATM call, 7 days",
            "sigma": SIGMA,
            "steps": STEPS,
            "paths": args.paths,
            "hedge": "Black-Scholes delta on spot, every step",
        },
        "pfhedge_installed": pf is not None,
        "rows": rows,
        "best_ratio_pfhedge_over_hedgegym_evaluate": ratio,
        "best_ratio_pfhedge_over_hedgegym_run_policy": loop_ratio,
        "best_ratio_pfhedge_over_hedgegym_kernel_only": kernel_ratio,
        "target_ratio": TARGET_RATIO,
        "expected_pnl_std_per_spot0": expected_std,
        "machine": {
            "python": platform.python_version(),
            "cpu_count": os.cpu_count(),
            "numba": numba.__version__,
            "threading_layer": numba.threading_layer(),
        },
        "unix_time": time.time(),
    }
    write_json_atomic(args.output, record)
    print(f"wrote {args.output}")
    return record


if __name__ == "__main__":
    main()
