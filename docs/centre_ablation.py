"""Where a band policy's objective comes from: its band's width, its centre, or its start.

A policy trained through a band control (:class:`hedgegym.agents.residual.BandControl`) sets two
things every step: the band's width ``a_w`` and its centre ``a_c`` (a deliberate over- or
under-hedge). This script evaluates each trained model three ways on the same held-out episodes
(seeds ``--seed + j``, those of ``docs/robustness.py``), on each scenario, with the model's own
interface (:func:`hedgegym.train.policies.with_policy_interface`) and its control rebuilt there:

- ``as trained``: the model itself;
- ``centre at 0``: the model's width, with ``a_c`` set to 0 (the band centred on the hedger's target);
- ``start``: the run's starting point, the constant action of its warm start (``warm_start.json``
  beside the model; ``a = 0`` without one), i.e. what training began from.

and reports the paired differences of the mean-variance objective, ``as trained - centre at 0``
(what the state-dependent centre earns) and ``as trained - start`` (what training earned), with
95 % paired intervals (:func:`hedgegym.train.training.paired_objective_interval`, seeded like
``hedgegym evaluate``). ::

    python docs/centre_ablation.py RUN/model.zip ... --episodes 500 --out OUT

Writes ``OUT/centre_ablation.md`` and ``OUT/centre_ablation.json``. Example (one scenario, few
episodes)::

    python docs/centre_ablation.py runs/ppo_generalist-s0-*/model.zip --scenarios default --episodes 16 --out /tmp/abl
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from hedgegym.envs.config import load_scenario
from hedgegym.train.evaluate import objective, run_policy
from hedgegym.train.io import claim_dir, write_json_atomic, write_text_atomic
from hedgegym.train.policies import PolicyError, load_sb3_policy, with_policy_interface
from hedgegym.train.training import paired_objective_interval
from hedgegym.train.warm_start import constant_policy

ORIGINAL = ("default", "short-gamma-crash", "long-gamma-pin", "zero-dte", "vault-epoch")


def centred(policy):
    """``policy`` (an SB3Policy on a centred band control) with its centre action set to 0."""

    def act(obs, market):
        raw = policy.raw_actions(obs, market)
        raw[:, 1] = 0.0
        return policy.control.actions(raw, market)

    return act


def start_action(model: Path, n_actions: int) -> list[float]:
    """The warm start's constant action beside ``model`` (``warm_start.json``), else zeros."""
    record = model.with_name("warm_start.json")
    if record.is_file():
        action = json.loads(record.read_text())["action"]
        if len(action) == n_actions:
            return [float(x) for x in action]
    return [0.0] * n_actions


def ablate(model: Path, scenario_name: str, seeds: np.ndarray, seed: int) -> dict:
    config, _ = with_policy_interface(load_scenario(scenario_name), [str(model)])
    policy = load_sb3_policy(model, config)
    control = policy.control
    if control is None or getattr(control, "n_actions", None) != 2:
        raise PolicyError(f"{model}: acts through {control!r}, not a band control with a centre")
    start = start_action(model, control.n_actions)
    pnl = {}
    for name, pol in (("as trained", policy), ("centre at 0", centred(policy)), ("start", None)):
        pol = pol if pol is not None else constant_policy(control, start)
        per_episode, _ = run_policy(pol, config, seeds, name=name, n_sample_paths=0)
        pnl[name] = (per_episode["pnl"], objective(per_episode, config))
    row = {"scenario": scenario_name, "start": start}
    row.update({f"objective {k}": v[1] for k, v in pnl.items()})
    for other in ("centre at 0", "start"):
        row[f"as trained - {other}"] = paired_objective_interval(pnl["as trained"][0], pnl[other][0], config, seed=seed)
    return row


def markdown(rows: list[dict], episodes: int, command: str) -> str:
    def cell(d):
        return f"{d[0] / 1e3:+.1f}k [{d[1] / 1e3:+.1f}k, {d[2] / 1e3:+.1f}k]"

    lines = [
        "# Centre ablation",
        "",
        f"{episodes:,} held-out episodes per model and scenario; objective in USD per episode.",
        "",
        f"`{command}`",
        "",
        "| model | scenario | as trained | centre at 0 | start | as trained - centre at 0 | as trained - start |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| `{r['model']}` | {r['scenario']} | {r['objective as trained']:,.0f} | "
            f"{r['objective centre at 0']:,.0f} | {r['objective start']:,.0f} | "
            f"{cell(r['as trained - centre at 0'])} | {cell(r['as trained - start'])} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", type=Path, help="Model zips of `hedgegym train` (a band control).")
    parser.add_argument("--scenarios", nargs="+", default=list(ORIGINAL))
    parser.add_argument("--episodes", type=int, default=500, help="Held-out episodes.")
    parser.add_argument("--seed", type=int, default=1_000_000, help="Seed of held-out episode 0.")
    parser.add_argument("--out", type=Path, required=True, help="Directory for the report; must be new or empty.")
    args = parser.parse_args(argv)
    if args.episodes < 2:
        parser.error(f"--episodes needs at least 2 (got {args.episodes})")
    for model in args.models:
        if not model.is_file():
            parser.error(f"{model}: no such model zip")
    try:
        out = claim_dir(args.out)
        seeds = np.arange(args.seed, args.seed + args.episodes)
        rows = [
            {"model": str(model), **ablate(model, name, seeds, args.seed)}
            for model in args.models
            for name in args.scenarios
        ]
    except (ValueError, OSError) as err:  # an unknown scenario, a model without a band control, a used --out
        print(f"centre_ablation.py: error: {err}", file=sys.stderr)
        return 2
    command = "python docs/centre_ablation.py " + " ".join(
        [*map(str, args.models), "--scenarios", *args.scenarios, f"--episodes {args.episodes}", f"--out {args.out}"]
    )
    write_json_atomic(out / "centre_ablation.json", {"command": command, "episodes": args.episodes, "rows": rows})
    write_text_atomic(out / "centre_ablation.md", markdown(rows, args.episodes, command))
    print(markdown(rows, args.episodes, command))
    return 0


if __name__ == "__main__":
    sys.exit(main())
