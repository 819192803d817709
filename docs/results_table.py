"""README's table "Every shipped config, judged the same way", from the run directories themselves.

Reads each run's ``config.yaml``, ``run_info.json`` and ``evaluation/metrics.json`` (written by
``hedgegym train``) and prints one markdown row per run: the best baseline by the mean-variance
objective (the report's ``reference``), both objectives, the paired difference with its 95 %
interval, slippage against the textbook delta hedger on the agent's venues (``delta@cheapest``, or
``delta@VENUE`` for a single-venue agent), the verdict and the wall time of the whole command
(training and final evaluation, from ``run_info.json``'s start and finish)::

    python docs/results_table.py runs/ppo_spot-s0-* runs/ppo_spot-s1-* ...

Verdict: **win** when the interval lies above 0 and the agent slips less than delta ("objective
only" when it slips more); *loss* when it lies below 0; for ``frictionless``, *match* when the
interval holds 0 (theory's answer is delta); otherwise *tie*.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime
from pathlib import Path

import yaml


def _k(x: float) -> str:
    return f"{x / 1e3:+.1f}k"


def _usd(x: float) -> str:
    return f"{x / 1e3:.1f}k" if abs(x) >= 1e3 else f"{x:.0f}"


def row(run: Path) -> str:
    config = yaml.safe_load((run / "config.yaml").read_text())
    info = json.loads((run / "run_info.json").read_text())
    metrics = json.loads((run / "evaluation" / "metrics.json").read_text())
    agent = config["name"]  # the trained policy's name in the report
    reference = metrics["reference"]
    values = metrics["objective"]["values"]
    paired = metrics["paired_differences"][agent]["mean_variance"]
    lo, hi = paired["ci"]
    scenario = metrics["scenario"] if isinstance(metrics["scenario"], str) else metrics["scenario"].get("name", "")
    venues = sorted({p.split("@")[1] for p in metrics["policies"] if "@" in p} - {"cheapest"})
    delta = "delta@cheapest" if "delta@cheapest" in metrics["policies"] else f"delta@{venues[0]}"
    slip = {p: metrics["policies"][p]["metrics"]["slippage_usd"]["value"] for p in (agent, delta)}
    if "frictionless" in str(scenario):
        verdict = "match" if lo <= 0.0 <= hi else ("**win**" if lo > 0 else "loss")
    elif lo > 0.0 and slip[agent] < slip[delta]:
        verdict = "**win**"
    elif lo > 0.0:
        verdict = "objective only (slips more than delta)"
    elif hi < 0.0:
        verdict = "loss"
    else:
        verdict = "tie"
    wall = datetime.fromisoformat(info["finished"]) - datetime.fromisoformat(info["started"])
    return (
        f"| `{config['name']}` | {info['seed']} | {reference} | {_usd(values[agent])} | {_usd(values[reference])} | "
        f"{_k(paired['value'])} [{_k(lo)}, {_k(hi)}] | {slip[agent]:,.0f} / {slip[delta]:,.0f} | {verdict} | "
        f"{wall.total_seconds():.0f} s |"
    )


def main(runs: list[str]) -> None:
    print(
        "| config | seed | best baseline | agent | best baseline | paired [95 % CI] | slippage agent / delta "
        "| verdict | wall |"
    )
    print("|---|---:|---|---:|---:|---:|---:|---|---:|")
    for run in map(Path, runs):
        missing = [f for f in ("config.yaml", "run_info.json", "evaluation/metrics.json") if not (run / f).is_file()]
        if missing:
            sys.exit(f"{run}: no {', '.join(missing)} (a finished `hedgegym train` run directory has them)")
        print(row(run))


if __name__ == "__main__":
    main(sys.argv[1:])
