"""The robustness report (issue 12): trained policies evaluated on every named scenario.

Each run's ``best_model.zip`` (``--model model.zip``: its last model) is evaluated on every
scenario of ``hedgegym scenarios`` with the agent interface it was trained for (its venues, action
mode and limits; a control is rebuilt on the scenario it meets), against every classical hedger on
those venues and routed to the cheapest, on the same held-out episodes: ``hedgegym matrix --local
--scenario S ... --policy RUN/best_model.zip ... --baselines B --episodes N --seed 1000000``, one
matrix per agent interface (runs with different interfaces cannot share one evaluation), where
``B`` is every classical hedger on each of the interface's venues and routed to the cheapest (the
standard the training configs judge by). Each cell is the paired difference of the mean-variance
objective against that scenario's best baseline, with its 95 % paired-bootstrap interval; **win**
when the interval lies above 0, *loss* when below, else tie (for ``frictionless``, where theory's
answer is delta hedging, a tie is the match)::

    python docs/robustness.py --episodes 2000 --out docs/robustness RUN_DIR...

Writes ``OUT/robustness.md`` (the table) and ``OUT/robustness.json`` (every cell), and keeps each
interface's matrix (per scenario: the report of ``hedgegym evaluate``) under ``OUT/interface-K/``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import yaml

from hedgegym.agents.baselines import every_hedger
from hedgegym.envs.config import list_scenarios, load_scenario
from hedgegym.train.evaluate import OBJECTIVE
from hedgegym.train.io import claim_dir, write_json_atomic, write_text_atomic
from hedgegym.train.matrix import evaluate_matrix
from hedgegym.train.policies import INTERFACE_FIELDS, read_interface

ORIGINAL = ("default", "short-gamma-crash", "long-gamma-pin", "zero-dte", "vault-epoch")
"""The five non-frictionless scenarios of the issue's target (a generalist wins on at least four)."""


def verdict(low: float, high: float) -> str:
    return "**win**" if low > 0 else "*loss*" if high < 0 else "tie"


def label(run: Path) -> str:
    config = yaml.safe_load((run / "config.yaml").read_text())
    return f"{config['name']} s{config['training']['seed']}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="Run directories of `hedgegym train` (best_model.zip).")
    parser.add_argument(
        "--model",
        default="best_model.zip",
        help="The zip of each run to evaluate: best_model.zip (what training kept), or model.zip (the last).",
    )
    parser.add_argument("--episodes", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=1_000_000, help="Seed of episode 0 (the held-out seeds).")
    parser.add_argument("--scenarios", nargs="*", default=None, help="Default: every named scenario.")
    parser.add_argument("--out", type=Path, required=True, help="Directory for the report; must be new or empty.")
    args = parser.parse_args(argv)
    for run in args.runs:
        if not (run / args.model).is_file():
            parser.error(f"{run}: no {args.model} (give run directories of `hedgegym train`)")
    scenarios = args.scenarios or list(list_scenarios())
    configs = [load_scenario(name) for name in scenarios]
    out = claim_dir(args.out)
    cells: dict[str, dict[str, dict]] = {name: {} for name in map(label, args.runs)}
    started = time.perf_counter()
    groups: dict[str, list[Path]] = {}
    for run in args.runs:
        interface = read_interface(run / args.model) or {"agent": {}}
        key = json.dumps({k: interface["agent"].get(k) for k in INTERFACE_FIELDS}, sort_keys=True)
        groups.setdefault(key, []).append(run)
    for k, (key, runs) in enumerate(groups.items()):
        baselines = every_hedger(json.loads(key)["venues"] or ["spot"])
        policies = {str(run / args.model): label(run) for run in runs}
        result = evaluate_matrix(configs, list(policies), ",".join(baselines), args.episodes, args.seed, local=True)
        result.write(out / f"interface-{k}")
        for scenario, res in result.results.items():
            for policy, name in policies.items():
                diff = res.paired[policy][OBJECTIVE]
                cells[name][scenario] = {
                    "objective": res.objectives[policy],
                    "reference": res.reference,
                    "reference_objective": res.objectives[res.reference],
                    "paired": diff.value,
                    "low": diff.low,
                    "high": diff.high,
                    "verdict": verdict(diff.low, diff.high).strip("*"),
                    "interface": json.loads(key),
                }
        print(f"interface {k} ({', '.join(policies.values())}): {time.perf_counter() - started:.0f} s", file=sys.stderr)
    command = "python docs/robustness.py " + " ".join(
        [
            f"--episodes {args.episodes}",
            f"--seed {args.seed}",
            *([f"--scenarios {' '.join(args.scenarios)}"] if args.scenarios else []),
            *([f"--model {args.model}"] if args.model != "best_model.zip" else []),
            f"--out {args.out}",
            *map(str, args.runs),
        ]
    )
    write_json_atomic(out / "robustness.json", {"episodes": args.episodes, "seed": args.seed, "cells": cells})
    write_text_atomic(out / "robustness.md", markdown(cells, scenarios, args.episodes, command))
    print(markdown(cells, scenarios, args.episodes, command))
    return 0


def markdown(cells: dict, scenarios: list[str], episodes: int, command: str) -> str:
    lines = [
        "# Robustness: every policy on every named scenario",
        "",
        f"Paired difference of the mean-variance objective (USD per episode) against each scenario's best "
        f"baseline on the policy's venues, 95 % paired-bootstrap interval, {episodes:,} held-out episodes "
        "(the same for every policy); the best baseline is named under each scenario's cell.",
        "",
        f"`{command}`",
        "",
        "| policy | " + " | ".join(scenarios) + f" | wins of the {len(ORIGINAL)} |",
        "|---|" + "---:|" * len(scenarios) + "---:|",
    ]
    for name, row in cells.items():
        out = []
        for s in scenarios:
            c = row[s]
            out.append(
                f"{c['paired'] / 1e3:+.1f}k [{c['low'] / 1e3:+.1f}k, {c['high'] / 1e3:+.1f}k] "
                f"{verdict(c['low'], c['high'])}<br>vs {c['reference']}"
            )
        wins = sum(row[s]["verdict"] == "win" for s in ORIGINAL if s in row)
        lines.append(f"| {name} | " + " | ".join(out) + f" | {wins} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
