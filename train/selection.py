"""Choosing ``best_model.zip`` across a family of markets (``evaluation.markets``).

A generalist (``scenario.randomize``) is meant for every market of its family, but the periodic
evaluation that picks its ``best_model.zip`` runs by default on the base scenario alone, so a
checkpoint that gains on a crash market and loses a little on the base one is never kept. With
``evaluation.markets: N`` each periodic evaluation instead runs on ``N`` markets drawn from the
family once, before training, from a generator of their own (:func:`selection_markets`: held-out
draws, not the training episodes' markets), each on its own block of the periodic evaluation's
held-out seeds (``evaluation.episodes / N`` episodes a market).

The markets' objectives are in USD and differ by orders of magnitude (a thin, jumpy market costs
ten times the base one), so their plain mean would be decided by the costliest few. The score is
scale-free: each market's mean-variance objective as a change relative to the textbook delta
hedger's on the same episodes (:func:`reference_name`: ``delta@cheapest``, or ``delta@VENUE`` for a
one-venue agent),

    score = (1/N) sum_k (J_k(policy) - J_k(delta)) / s_k,    s_k = max(|J_k(delta)|, sd_k(delta)),

so ``+0.05`` is a policy that is on average 5 % of the delta hedger's cost better than it (the
scale-free mean of ``docs/constant_bound.py --family``). The scale is the delta hedger's cost, or
the standard deviation of its episode P&L where that is larger: on a market where delta hedging
costs almost nothing, or earns (long-gamma dealers pinning the price), ``|J_k|`` is near 0 and
would turn that market's noise into the whole score; there the change is measured in units of the
hedged P&L's risk instead. ``evaluation.select: paired``
replaces the incumbent when the paired 95 % bootstrap interval of ``score(policy) - score(incumbent)``
lies above 0: every market's episodes are resampled on their own (:func:`hedgegym.train.metrics.
bootstrap_counts`, keyed by the market's index), the same resamples for both (common random numbers).

Example:
    >>> import numpy as np
    >>> from hedgegym.envs.config import resolve_config
    >>> markets = [resolve_config("default")] * 2
    >>> a = np.array([[1.0, -1.0], [2.0, 0.0]])           # two markets x two episodes (USD)
    >>> [round(float(j), 3) for j in market_objectives(a, markets)]   # mean - kappa/(2 scale) var
    [-0.0, 1.0]
    >>> reference, scales = np.array([-10.0, -4.0]), np.array([10.0, 4.0])
    >>> round(family_score(a, markets, reference, scales), 4)   # (0 + 10) / 10 and (1 + 4) / 4, averaged
    1.125
    >>> paired_family_interval(a, a, markets, scales)
    (0.0, 0.0, 0.0)
    >>> reference_scales(np.array([[-1.0, -3.0], [4.0, -4.0]]), markets).round(3).tolist()   # |J| (2), sd (4)
    [2.0, 4.0]
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from hedgegym.envs.config import ScenarioConfig
from hedgegym.envs.family import FamilyConfig, draw_config, family_rng

SELECTION_KEY = 0x5E1EC7
"""Mixed into the seed of the selection markets' generator: its draws are not any training episode's."""


def selection_markets(family: FamilyConfig, base: ScenarioConfig, seed: int, n: int) -> list[ScenarioConfig]:
    """The ``n`` held-out markets of the selection: market ``k`` is drawn from ``family_rng(seed ^ key, k)``.

    Training draws the market of episode ``e`` from ``family_rng(seed of the first env, e)``, with the
    envs' seeds from ``training.seed``; ``seed`` here is ``evaluation.seed`` under a key of its own.
    """
    return [draw_config(family, base, family_rng(int(seed) ^ SELECTION_KEY, k)) for k in range(int(n))]


def reference_name(config: ScenarioConfig) -> str:
    """The hedger the score is relative to: the delta hedger on the agent's venues."""
    venues = config.agent.venues
    return f"delta@{venues[0]}" if len(venues) == 1 else "delta@cheapest"


def market_seeds(first: int, episodes: int, n: int) -> list[np.ndarray]:
    """Market ``k``'s held-out seeds: block ``k`` of ``episodes`` seeds from ``first``, split evenly."""
    per = episodes // n
    return [np.arange(first + k * per, first + (k + 1) * per) for k in range(n)]


def market_objectives(pnl: np.ndarray, markets: Sequence[ScenarioConfig]) -> np.ndarray:
    """Each market's mean-variance objective (USD) from its row of episode P&Ls ``pnl[N, m]``."""
    from hedgegym.train.metrics import mean_variance_objective

    return np.array(
        [
            float(mean_variance_objective(row, m.agent.risk_aversion, m.pnl_scale))
            for row, m in zip(np.asarray(pnl, dtype=np.float64), markets, strict=True)
        ]
    )


def reference_scales(pnl: np.ndarray, markets: Sequence[ScenarioConfig]) -> np.ndarray:
    """``s_k = max(|J_k|, sd_k, 1 USD)`` of the reference's episode P&Ls ``pnl[N, m]`` (module docstring)."""
    pnl = np.asarray(pnl, dtype=np.float64)
    return np.maximum(np.maximum(np.abs(market_objectives(pnl, markets)), pnl.std(axis=1)), 1.0)


def family_score(
    pnl: np.ndarray, markets: Sequence[ScenarioConfig], reference: np.ndarray, scales: np.ndarray
) -> float:
    """Mean over the markets of ``(J_k - reference_k) / scales_k`` (module docstring)."""
    ref = np.asarray(reference, dtype=np.float64)
    return float(np.mean((market_objectives(pnl, markets) - ref) / np.asarray(scales, dtype=np.float64)))


def paired_family_interval(
    pnl_a: np.ndarray,
    pnl_b: np.ndarray,
    markets: Sequence[ScenarioConfig],
    scales: np.ndarray,
    confidence: float = 0.95,
) -> tuple[float, float, float]:
    """``(difference, low, high)``: ``score(pnl_a) - score(pnl_b)`` (row k of both on market k's same
    episodes) with its paired percentile-bootstrap interval; each market resampled on its own."""
    from hedgegym.train import metrics as M

    a, b = np.asarray(pnl_a, dtype=np.float64), np.asarray(pnl_b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2 or a.shape[0] != len(markets):
        raise ValueError(
            f"paired family P&Ls must both be [markets={len(markets)}, episodes] (got {a.shape}, {b.shape})"
        )
    scales = np.asarray(scales, dtype=np.float64)
    total = None
    for k, (row_a, row_b, market) in enumerate(zip(a, b, markets, strict=True)):
        kappa, scale = market.agent.risk_aversion, market.pnl_scale
        draws = np.concatenate(
            [
                M.mean_variance_objective(row_a, kappa, scale, counts)
                - M.mean_variance_objective(row_b, kappa, scale, counts)
                for counts in M.bootstrap_counts(row_a.size, seed=k)
            ]
        )
        total = draws / scales[k] if total is None else total + draws / scales[k]
    draws = total / len(markets)
    point = float(np.mean((market_objectives(a, markets) - market_objectives(b, markets)) / scales))
    lo, hi = M.percentile_interval(draws, confidence)
    return point, min(lo, point), max(hi, point)


class FamilySelection:
    """The selection markets of an experiment with ``evaluation.markets``, their seeds, and the delta
    hedger's objective and scale on each (run once, when the selection is built: constants of the run).

    ``evaluate(policy_for)`` runs a policy on every market (``policy_for(market)``: the policy built
    for that market, its control rebuilt there) and returns the ``[N, m]`` episode P&Ls.
    """

    def __init__(self, markets: list[ScenarioConfig], seeds: list[np.ndarray], reference_name: str):
        from hedgegym.agents.baselines import make_baseline

        self.markets, self.seeds, self.reference_name = markets, seeds, reference_name
        pnl = self.evaluate(lambda market: make_baseline(reference_name, market), name=reference_name)
        self.reference = market_objectives(pnl, markets)
        self.scales = reference_scales(pnl, markets)

    @classmethod
    def from_experiment(cls, config) -> FamilySelection:
        """The selection of an :class:`~hedgegym.train.experiment.ExperimentConfig` (``evaluation.markets > 0``)."""
        ev, base = config.evaluation, config.scenario.resolved
        markets = selection_markets(config.scenario.randomize, base, ev.seed, ev.markets)
        return cls(markets, market_seeds(ev.seed + ev.final_episodes, ev.episodes, ev.markets), reference_name(base))

    def evaluate(self, policy_for, name: str = "policy") -> np.ndarray:
        from hedgegym.train.evaluate import run_policy

        rows = [
            run_policy(policy_for(market), market, seeds, name=name, n_sample_paths=0)[0]["pnl"]
            for market, seeds in zip(self.markets, self.seeds, strict=True)
        ]
        return np.stack(rows)

    def score(self, pnl: np.ndarray) -> float:
        return family_score(pnl, self.markets, self.reference, self.scales)

    def interval(self, pnl_a: np.ndarray, pnl_b: np.ndarray) -> tuple[float, float, float]:
        return paired_family_interval(pnl_a, pnl_b, self.markets, self.scales)

    def record(self) -> dict:
        """What history.json keeps of the selection: the reference and its objective on each market."""
        return {
            "markets": len(self.markets),
            "episodes_per_market": int(self.seeds[0].size),
            "reference": self.reference_name,
            "reference_objectives": [float(x) for x in self.reference],
            "scales": [float(x) for x in self.scales],
        }
