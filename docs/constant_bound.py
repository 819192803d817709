"""What a band that knows its market could win: the best *constant* band action per named scenario.

The generalist (issue 12) acts through a band control (:class:`hedgegym.agents.residual.BandControl`)
and is judged on five markets against each one's best classical hedger. Suppose a policy could
read the market perfectly and pick, for each scenario, the best constant band action ``(a_w, a_c)``
for it — the most a "contextual constant" policy (a band tuned per market, e.g. by a search per
drawn market distilled into the policy) can reach. This script measures that bound:

1. for each scenario, a grid of constant actions through the control, each run on ``--search``
   episodes of search seeds (``2**41 + j``, apart from the held-out and the training seeds); the
   grid's best is taken;
2. the best, and ``a = 0`` (the control's hedger itself), are judged on ``--episodes`` held-out
   episodes (seeds ``--seed + j``, those of ``docs/robustness.py``) against the scenario's best
   baseline: every classical hedger on each of the agent's venues and routed to the cheapest, the
   best by the objective on those same episodes; paired 95 % interval
   (:func:`hedgegym.train.training.paired_objective_interval` on ``hedgegym evaluate``'s resamples,
   seeded by ``--seed``: the interval the robustness report gives the same episodes).

A scenario the best constant does not win needs a policy whose band moves with the state within
the episode, not only with the market.

``--family CONFIG`` (a training config with ``scenario.randomize``, e.g. ``configs/ppo_generalist.yaml``)
adds the other end: the best constant for the *family* — the mean over ``--markets`` markets drawn
from it (``hedgegym.envs.family``, draws ``2**42 + k``) of each one's objective on ``--per-market``
episodes — which is what a policy that cannot tell the markets apart is pulled toward when trained
on the family, judged on every scenario like the per-scenario best; and the best by a scale-free
mean, each market's objective as a change relative to its ``a = 0`` (the hedger)
``(J_k(x) - J_k(0)) / |J_k(0)|``, so that the costliest markets do not outweigh the rest.

It also fits what a policy that *saw the market's parameters* could learn from the family alone:
for each grid point ``x``, a ridge regression of the markets' relative objectives on their
parameters (:data:`FEATURES`: volatility, the spot venue's depth, fee and half-spread as log
ratios to the base scenario's, the dealers' net quantity as a multiple of the base's, and the
jumps' drift ``intensity * mean``), and picks for each named scenario the ``x`` with the highest
prediction from that scenario's parameters — judged like the others (``context_held``). ::

    python docs/constant_bound.py --control whalley_wilmott@cheapest --out OUT
    python docs/constant_bound.py --control delta@cheapest --out OUT
    python docs/constant_bound.py --control whalley_wilmott@cheapest --family configs/ppo_generalist.yaml --out OUT

Writes ``OUT/constant_bound.md`` and ``OUT/constant_bound.json`` (every grid point's search
objective, the best, the intervals). Example (two scenarios, a small grid, few episodes)::

    python docs/constant_bound.py --scenarios default vault-epoch --widths 0,0.2 --centres 0 \\
        --search 16 --episodes 16 --control delta@cheapest --out /tmp/bound
"""

from __future__ import annotations

import argparse
import itertools
import math
import sys
import time
from pathlib import Path

import numpy as np

from hedgegym.agents.baselines import every_hedger, make_baseline
from hedgegym.agents.residual import make_control
from hedgegym.envs.config import load_scenario
from hedgegym.train.evaluate import objective, run_policy
from hedgegym.train.io import claim_dir, write_json_atomic, write_text_atomic
from hedgegym.train.training import paired_objective_interval
from hedgegym.train.warm_start import constant_policy

ORIGINAL = ("default", "short-gamma-crash", "long-gamma-pin", "zero-dte", "vault-epoch")
SEARCH_SEED = 2**41
FAMILY_SEED = 2**42
SEEDS_PER_MARKET = 4096
GRIDS = {
    # a_w: the band hedgers' width is H * 4 ** a_w; the delta-type hedgers' 2 * max(a_w, 0) * H_ww.
    "band": "-1,-0.7,-0.4,-0.2,0,0.2,0.5",
    "zero": "0,0.05,0.1,0.15,0.2,0.3,0.45,0.7,1",
    "centres": "-0.4,-0.2,-0.1,-0.05,0,0.05,0.1,0.2",
}


def floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",")]


def verdict(low: float, high: float) -> str:
    return "win" if low > 0 else "loss" if high < 0 else "tie"


FEATURES = ("sigma", "log_depth", "log_fee", "log_half_spread", "dealer_quantity", "jump_drift")
"""The market parameters of the contextual fit (see the module docstring), after a constant 1."""
RIDGE = 1e-2


def market_features(config, reference: dict) -> list[float]:
    """``[1, *FEATURES]`` of scenario ``config``, the ratios against ``reference`` (:func:`reference_of`)."""
    spot, jumps = config.venues.spot, config.market.jumps
    return [
        1.0,
        config.market.sigma,
        math.log(spot.depth_usd_per_pct / reference["depth"]),
        math.log(spot.fee / reference["fee"]),
        math.log(spot.half_spread / reference["half_spread"]),
        sum(line.quantity for line in config.dealers.lines) / reference["dealer_quantity"],
        jumps.intensity * jumps.mean if jumps.enabled else 0.0,
    ]


def reference_of(base) -> dict:
    spot = base.venues.spot
    quantity = sum(line.quantity for line in base.dealers.lines)
    if min(spot.depth_usd_per_pct, spot.fee, spot.half_spread) <= 0 or quantity == 0:
        raise ValueError("--family: the base scenario needs a positive spot depth, fee, half-spread and dealers")
    return {
        "depth": spot.depth_usd_per_pct,
        "fee": spot.fee,
        "half_spread": spot.half_spread,
        "dealer_quantity": quantity,
    }


def ridge(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Coefficients ``[features, targets]`` of the ridge regression of ``y`` on ``x`` (:data:`RIDGE`)."""
    return np.linalg.solve(x.T @ x + RIDGE * np.eye(x.shape[1]), x.T @ y)


def family_best(path: Path, control_name: str, widths, centres, n_markets: int, per_market: int) -> dict:
    """The constant with the best mean objective over ``n_markets`` markets of the family in ``path``."""
    from hedgegym.envs.family import draw_config, family_rng
    from hedgegym.train.experiment import load_experiment

    experiment = load_experiment(path)
    family, base = experiment.scenario.randomize, experiment.scenario.resolved
    if family is None:
        raise ValueError(f"--family {path}: the config has no scenario.randomize (no family of markets to draw)")
    if per_market > SEEDS_PER_MARKET:
        raise ValueError(f"--per-market {per_market}: at most {SEEDS_PER_MARKET}")
    markets = [draw_config(family, base, family_rng(seed=FAMILY_SEED, episode=k)) for k in range(n_markets)]
    controls = [make_control({"kind": "band", "baseline": control_name}, m) for m in markets]

    def score(x) -> np.ndarray:
        objectives = []
        for k, (market, control) in enumerate(zip(markets, controls, strict=True)):
            first = FAMILY_SEED + k * SEEDS_PER_MARKET
            seeds = np.arange(first, first + per_market, dtype=np.int64)
            p = run_policy(constant_policy(control, np.asarray(x)), market, seeds, n_sample_paths=0)[0]["pnl"]
            objectives.append(objective({"pnl": p}, market))
        return np.asarray(objectives)

    zero = score((0.0, 0.0))
    scores = {(w, c): score((w, c)) for w, c in itertools.product(widths, centres)}
    grid = {k: float(v.mean()) for k, v in scores.items()}
    relative = {k: float(np.mean((v - zero) / np.abs(zero))) for k, v in scores.items()}
    # The contextual fit: relative objective of every market (rows) at every grid point (columns).
    reference = reference_of(base)
    x = np.array([market_features(m, reference) for m in markets])
    r = np.column_stack([(v - zero) / np.abs(zero) for v in scores.values()])
    coefficients = ridge(x, r)
    # Leave-one-market-out: the relative objective lost against each market's best grid point, by
    # the fit's pick (fitted without that market) and by the scale-free mean's constant.
    keys, fixed = list(scores), list(scores).index(max(relative, key=relative.get))
    loo = []
    for k in range(n_markets):
        keep = np.arange(n_markets) != k
        pick = int(np.argmax(x[k] @ ridge(x[keep], r[keep]))) if n_markets > x.shape[1] else fixed
        loo.append((r[k].max() - r[k, pick], r[k].max() - r[k, fixed]))
    return {
        "config": str(path),
        "markets": n_markets,
        "per_market": per_market,
        "grid": [{"action": list(k), "mean_objective": grid[k], "mean_relative": relative[k]} for k in grid],
        "best": list(max(grid, key=grid.get)),
        "best_relative": list(max(relative, key=relative.get)),
        "zero_objectives": zero.tolist(),  # each market's objective at a = 0 (the hedger), draw order
        "context": {
            "features": ["constant", *FEATURES],
            "reference": reference,
            "ridge": RIDGE,
            "actions": [list(k) for k in keys],
            "coefficients": coefficients.tolist(),  # [1 + len(FEATURES), grid points]
            "loo_regret": np.mean(loo, axis=0).tolist() if n_markets > 1 else None,  # [fit, scale-free constant]
        },
    }


def bound(
    scenario: str, control_name: str, widths, centres, n_search: int, n_held: int, seed: int, family=None
) -> dict:
    """The grid, its best and the held-out judgement of ``scenario`` (see the module docstring);
    with ``family`` (a :func:`family_best` record), that constant judged too."""
    config = load_scenario(scenario)
    control = make_control({"kind": "band", "baseline": control_name}, config)
    search = np.arange(SEARCH_SEED, SEARCH_SEED + n_search, dtype=np.int64)
    held = np.arange(seed, seed + n_held, dtype=np.int64)

    def pnl(x, seeds):
        return run_policy(constant_policy(control, np.asarray(x)), config, seeds, n_sample_paths=0)[0]["pnl"]

    grid = {(w, c): objective({"pnl": pnl((w, c), search)}, config) for w, c in itertools.product(widths, centres)}
    best = max(grid, key=grid.get)
    refs = {
        name: run_policy(make_baseline(name, config), config, held, n_sample_paths=0)[0]["pnl"]
        for name in every_hedger(config.agent.venues)
    }
    ref_obj = {name: objective({"pnl": p}, config) for name, p in refs.items()}
    reference = max(ref_obj, key=ref_obj.get)
    out = {
        "scenario": scenario,
        "reference": reference,
        "reference_objective": ref_obj[reference],
        "grid": [{"action": list(k), "search_objective": v} for k, v in grid.items()],
        "best": list(best),
    }
    judged = [("best_held", best), ("zero_held", (0.0, 0.0))]
    if family is not None:
        judged += [("family_held", tuple(family["best"])), ("family_relative_held", tuple(family["best_relative"]))]
        ctx = family["context"]
        f = np.asarray(market_features(config, ctx["reference"]))
        judged += [("context_held", tuple(ctx["actions"][int(np.argmax(f @ np.asarray(ctx["coefficients"])))]))]
    out["context_pick"] = list(judged[-1][1]) if family is not None else None
    for label, x in judged:
        p = pnl(x, held)
        d, lo, hi = paired_objective_interval(p, refs[reference], config, seed=seed)
        out[label] = {
            "objective": objective({"pnl": p}, config),
            "paired": d,
            "low": lo,
            "high": hi,
            "verdict": verdict(lo, hi),
        }
    return out


def markdown(rows: list[dict], control: str, command: str, n_search: int, n_held: int, family=None) -> str:
    fam = family is not None
    lines = [
        f"# The best constant band per scenario: control `band` on `{control}`",
        "",
        f"Grid best on {n_search:,} search episodes; judged on {n_held:,} held-out episodes against the "
        "scenario's best baseline (paired difference of the mean-variance objective, USD per episode, 95 % interval).",
        "",
        f"`{command}`",
        "",
        "| scenario | best baseline | best constant (a_w, a_c) | best constant vs baseline | a = 0 vs baseline |"
        + (
            " the family's best (mean) vs baseline | the family's best (scale-free) vs baseline |"
            " the contextual fit's pick: vs baseline |"
            if fam
            else ""
        ),
        "|---|---|---|---:|---:|" + ("---:|---:|---:|" if fam else ""),
    ]

    def cell(c):
        return f"{c['paired'] / 1e3:+.1f}k [{c['low'] / 1e3:+.1f}k, {c['high'] / 1e3:+.1f}k] {c['verdict']}"

    for r in rows:
        a = ", ".join(f"{v:+g}" for v in r["best"])
        line = f"| {r['scenario']} | {r['reference']} | ({a}) | {cell(r['best_held'])} | {cell(r['zero_held'])} |"
        if fam:
            pick = ", ".join(f"{v:+g}" for v in r["context_pick"])
            line += (
                f" {cell(r['family_held'])} | {cell(r['family_relative_held'])} | ({pick}): {cell(r['context_held'])} |"
            )
        lines.append(line)
    wins = sum(r["best_held"]["verdict"] == "win" for r in rows)
    lines += ["", f"Scenarios the best constant wins: {wins} of {len(rows)}."]
    if fam:
        for key, held, what in (
            ("best", "family_held", "mean objective"),
            ("best_relative", "family_relative_held", "scale-free mean"),
        ):
            a = ", ".join(f"{v:+g}" for v in family[key])
            wins = sum(r[held]["verdict"] == "win" for r in rows)
            lines += [
                "",
                f"The family's best constant by {what} over {family['markets']} markets of `{family['config']}` "
                f"({family['per_market']} episodes each): ({a}); it wins {wins} of {len(rows)}.",
            ]
        wins = sum(r["context_held"]["verdict"] == "win" for r in rows)
        loo = family["context"]["loo_regret"]
        lines += [
            "",
            f"The contextual fit (ridge on {', '.join(FEATURES)}, fitted on the family's markets only) wins {wins} of "
            f"{len(rows)}."
            + (
                f" Left one market out, it loses {loo[0]:.1%} of that market's objective against the market's best "
                f"grid point, the scale-free constant {loo[1]:.1%}."
                if loo
                else ""
            ),
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--control", default="whalley_wilmott@cheapest", help="The band control's hedger.")
    parser.add_argument("--scenarios", nargs="+", default=list(ORIGINAL))
    parser.add_argument("--widths", default=None, help="a_w grid, comma-separated (default by the hedger's kind).")
    parser.add_argument("--centres", default=GRIDS["centres"], help="a_c grid, comma-separated.")
    parser.add_argument("--search", type=int, default=500, help="Search episodes per grid point.")
    parser.add_argument("--episodes", type=int, default=1000, help="Held-out episodes.")
    parser.add_argument("--seed", type=int, default=1_000_000, help="Seed of held-out episode 0.")
    parser.add_argument("--family", type=Path, default=None, help="A training config with scenario.randomize.")
    parser.add_argument("--markets", type=int, default=48, help="Markets drawn from --family.")
    parser.add_argument("--per-market", type=int, default=64, help="Episodes per market drawn from --family.")
    parser.add_argument("--out", type=Path, required=True, help="Directory for the report; must be new or empty.")
    args = parser.parse_args(argv)
    kind = args.control.split("@")[0]
    try:
        widths = floats(args.widths or GRIDS["zero" if kind in ("delta", "leland") else "band"])
        centres = floats(args.centres)
    except ValueError:
        parser.error(f"--widths and --centres are comma-separated numbers (got {args.widths!r}, {args.centres!r})")
    if any(abs(v) > 1 for v in widths + centres):
        parser.error("band actions lie in [-1, 1]: every --widths and --centres value must too")
    if min(args.search, args.episodes, args.per_market) < 2 or args.markets < 1:
        parser.error("--search, --episodes and --per-market need at least 2 episodes each, --markets at least 1")
    if args.family is not None and not args.family.is_file():
        parser.error(f"--family {args.family}: no such file")
    try:
        rows, family = [], None
        out = claim_dir(args.out)
        if args.family is not None:
            started = time.perf_counter()
            family = family_best(args.family, args.control, widths, centres, args.markets, args.per_market)
            print(f"family: best {family['best']}, {time.perf_counter() - started:.0f} s", file=sys.stderr)
        for scenario in args.scenarios:
            started = time.perf_counter()
            rows.append(bound(scenario, args.control, widths, centres, args.search, args.episodes, args.seed, family))
            print(f"{scenario}: {time.perf_counter() - started:.0f} s", file=sys.stderr)
    except (ValueError, OSError) as err:  # unknown scenario/hedger, a non-band control, a used --out: no traceback
        print(f"constant_bound.py: error: {err}", file=sys.stderr)
        return 2
    parts = [f"--control {args.control}", f"--search {args.search}", f"--episodes {args.episodes}"]
    if family is not None:
        parts += [f"--family {args.family}", f"--markets {args.markets}", f"--per-market {args.per_market}"]
    command = "python docs/constant_bound.py " + " ".join([*parts, f"--out {args.out}"])
    record = {"control": args.control, "search": args.search, "episodes": args.episodes, "seed": args.seed}
    write_json_atomic(out / "constant_bound.json", {**record, "family": family, "rows": rows})
    text = markdown(rows, args.control, command, args.search, args.episodes, family)
    write_text_atomic(out / "constant_bound.md", text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
