"""Warm start: the best *constant* control action, found by search, as the fresh policy's output.

A policy acting through a control (:mod:`hedgegym.agents.residual`) starts at ``a = 0``: the
classical hedger. Often a constant deviation already beats it — a band twice as wide on a market
whose costs the hedger's formula underrates, a net short ahead of a crash the dealers' flow makes
likely — and PPO, whose gradient on a cost-heavy, heavy-tailed reward is noisy, may take most of a
run to find it or never does. ``training.warm_start`` finds it before training:

1. **Coordinate search** over constant actions ``x`` (one value per action dimension, from
   ``warm_start.values``): starting at ``x = 0``, each dimension in turn is set to the value with
   the highest objective (:func:`hedgegym.train.evaluate.objective`), the others held; ``passes``
   sweeps. Each candidate is the control's hedger driven by ``x`` at every step, run by
   :func:`hedgegym.train.evaluate.run_policy` on ``episodes`` episodes of the warm start's own seeds
   (common random numbers: every candidate sees the same paths).
2. **Confirmation** on ``episodes`` fresh seeds: the search's best is kept only if its paired
   95 % interval against ``x = 0`` (:func:`hedgegym.train.training.paired_objective_interval`)
   lies above 0 — a winner of many noisy comparisons is not taken on its search score. Otherwise
   ``x = 0``: the run starts at the hedger, as without a warm start.
3. The policy's output layer is set so that the fresh policy's mean (deterministic) action is
   ``x``: its weights are zero already (``start_at_zero``), its bias becomes ``x`` (PPO's Gaussian
   mean) or ``atanh(x)`` (SAC/TD3's squashed actor, ``x`` clipped to ±0.99 first):
   :func:`hedgegym.agents.sb3.set_mean_action`.

The seeds are ``WARM_START_SEED + training.seed * 2**20 + j``: apart from the training seeds
(< 2**32 + n_envs) and checked apart from the held-out ones. The search's table goes to the run
directory's ``warm_start.json``; the step-0 held-out evaluation (run whenever a control is set)
then makes the warm-started policy the first ``best_model.zip``, so training that never improves
on it returns it. With ``scenario.randomize`` the search runs on the family's base scenario.

This is the "initialise at a good classical solution" of residual policy learning
(Silver et al. 2018) with the classical solution improved first by a cheap derivative-free search;
constant-parameter policies are the class the delta-band literature optimises over
(Whalley & Wilmott 1997; Zakamouline 2006 tunes the band's width by simulation the same way).

Example:
    >>> from hedgegym.train.experiment import validate_experiment
    >>> cfg = validate_experiment({
    ...     "algorithm": {"name": "ppo", "control": {"kind": "band", "baseline": "whalley_wilmott@spot"}},
    ...     "training": {"total_timesteps": 1000, "seed": 3, "warm_start": {"episodes": 10}}})
    >>> seeds = seed_range(cfg)       # 10 search episodes, then 10 confirmation episodes
    >>> seeds.start == WARM_START_SEED + 3 * SEED_STRIDE, len(seeds)
    (True, 20)
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from hedgegym.agents import sb3
from hedgegym.train.io import write_json_atomic

WARM_START_SEED = 2**40
"""First seed of the warm start's episodes (before ``training.seed * 2**20``)."""
SEED_STRIDE = 2**20
"""Seeds of one training seed's warm start: ``2 * warm_start.episodes`` must fit in it."""
FILE = "warm_start.json"


def seed_range(config) -> range:
    """The seeds the warm start of experiment ``config`` uses: search, then confirmation."""
    ws = config.training.warm_start
    start = WARM_START_SEED + config.training.seed * SEED_STRIDE
    return range(start, start + 2 * ws.episodes)


def constant_policy(control, x: np.ndarray):
    """The policy acting ``x`` at every step through ``control`` (a ``policy(obs, market)``)."""
    x = np.asarray(x, dtype=np.float64)

    def policy(obs, market):
        return control.actions(np.tile(x, (market.n_envs, 1)), market)

    return policy


def search(config, control, progress=None) -> dict[str, Any]:
    """Coordinate search and confirmation for experiment ``config`` (see the module docstring).

    Returns the record written to ``warm_start.json``: ``action`` (the chosen ``x``), ``accepted``,
    the confirmation's ``paired_vs_zero`` ``[difference, low, high]`` and every evaluation of the search
    ``{"action", "objective"}`` in the order run.
    """
    from hedgegym.train.evaluate import objective, run_policy
    from hedgegym.train.training import paired_objective_interval

    ws, scenario = config.training.warm_start, config.scenario.resolved
    seeds = np.asarray(seed_range(config), dtype=np.int64)
    search_seeds, confirm_seeds = seeds[: ws.episodes], seeds[ws.episodes :]
    dims = control.n_actions or len(scenario.agent.venues)
    cache: dict[tuple[float, ...], float] = {}
    table: list[dict[str, Any]] = []

    def pnl(x, which) -> np.ndarray:
        per_episode, _ = run_policy(constant_policy(control, x), scenario, which, name="warm_start", n_sample_paths=0)
        return per_episode["pnl"]

    def score(x) -> float:
        key = tuple(float(v) for v in x)
        if key not in cache:
            cache[key] = objective({"pnl": pnl(x, search_seeds)}, scenario)
            table.append({"action": list(key), "objective": cache[key]})
            if progress is not None:
                progress(len(table), key, cache[key])
        return cache[key]

    best = np.zeros(dims)
    best_score = score(best)
    for _ in range(ws.passes):
        moved = False
        for j in range(dims):
            for v in ws.values:
                x = best.copy()
                x[j] = v
                s = score(x)
                if s > best_score:
                    best, best_score, moved = x, s, True
        if not moved:
            break
    record: dict[str, Any] = {
        "episodes": ws.episodes,
        "seeds": [int(seeds[0]), int(seeds[-1])],
        "search_best": best.tolist(),
        "search_best_objective": best_score,
        "search_zero_objective": cache[tuple(0.0 for _ in range(dims))],
        "evaluations": table,
    }
    accepted = False
    if np.any(best != 0.0):
        point, lo, hi = paired_objective_interval(
            pnl(best, confirm_seeds), pnl(np.zeros(dims), confirm_seeds), scenario
        )
        record["paired_vs_zero"] = [point, lo, hi]
        accepted = lo > 0.0
    record["accepted"] = accepted
    record["action"] = best.tolist() if accepted else [0.0] * dims
    return record


def warm_start(config, control, model, run_dir: Path, progress=None) -> dict[str, Any]:
    """Search, set ``model``'s initial action, write ``run_dir/warm_start.json``; returns its record."""
    record = search(config, control, progress)
    sb3.set_mean_action(model, record["action"])
    write_json_atomic(run_dir / FILE, record)
    return record


def describe(record: dict[str, Any]) -> str:
    """One line on a warm start's outcome, for the CLI."""
    x = ", ".join(f"{v:+.2f}" for v in record["action"])
    if not record["accepted"]:
        why = (
            "no constant action beat a = 0 in the search"
            if "paired_vs_zero" not in record
            else f"the search's best did not hold on the confirmation episodes ({_interval(record['paired_vs_zero'])})"
        )
        return f"warm start: a = ({x}), {why}"
    return (
        f"warm start: a = ({x}), {_interval(record['paired_vs_zero'])} vs a = 0 on {record['episodes']} fresh episodes"
    )


def _interval(v) -> str:
    point, lo, hi = v
    return f"{point:+,.0f} [{lo:+,.0f}, {hi:+,.0f}]" if all(map(math.isfinite, v)) else str(v)
