"""Where the band hedger leaves money on the table: constant band actions against the hedger itself.

Reproduces README's table in "Acting on top of a classical hedger" (600 episodes per scenario,
seeds 2,000,000..2,000,599, paired with the hedger; mean-variance objective, USD):

    python docs/band_edges.py

A constant action ``(a_w, a_c)`` of :class:`hedgegym.agents.residual.BandControl` is a band
``4 ** a_w`` times the Whalley-Wilmott half-width, centred on ``a_c * 0.25 * G`` coins of net delta.
"""

from __future__ import annotations

import numpy as np

from hedgegym.agents.baselines import make_baseline
from hedgegym.agents.residual import BandControl
from hedgegym.envs.config import resolve_config
from hedgegym.train.evaluate import run_policy
from hedgegym.train.metrics import mean_variance_objective

CASES = (
    ("short-gamma-crash", "whalley_wilmott@spot", {"agent.venues": ["spot"]}),
    ("long-gamma-pin", "whalley_wilmott@cheapest", {}),
    ("vault-epoch", "whalley_wilmott@cheapest", {}),
)
ACTIONS = ((-0.25, 0.0), (0.25, 0.0), (0.0, -0.2), (0.0, 0.2))
SEEDS = np.arange(2_000_000, 2_000_600)


def main() -> None:
    print("| scenario (hedger) | " + " | ".join(f"a_w={w:+g}, a_c={c:+g}" for w, c in ACTIONS) + " |")
    print("|---|" + "---:|" * len(ACTIONS))
    for scenario, hedger, overrides in CASES:
        config = resolve_config(scenario, {"agent.action_mode": "trade", **overrides})
        control = BandControl.build(hedger, config)

        def objective(policy, config=config):
            per_episode, _ = run_policy(policy, config, SEEDS, n_sample_paths=0)
            return mean_variance_objective(per_episode["pnl"], config.agent.risk_aversion, config.pnl_scale)

        base = objective(make_baseline(hedger, config))
        cells = []
        for w, c in ACTIONS:
            value = objective(lambda obs, m, w=w, c=c, k=control: k.actions(np.tile([w, c], (m.n_envs, 1)), m))
            cells.append(f"{(value - base) / 1e3:+.1f}k")
        print(f"| `{scenario}` (`{hedger}`) | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
