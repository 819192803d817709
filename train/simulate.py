"""`hedgegym simulate`: the market with the dealers hedging and the agent inactive.

Runs ``paths`` episodes of a scenario and measures what the dealers' hedging does to the price:
realised volatility of spot (with feedback) against the exogenous path (without feedback, the
same shocks), their ratio — the volatility amplification — against the Frey–Stremme /
Sircar–Papanicolaou prediction ``1 / (1 + mean phi)``, liquidity-crisis steps and pinning.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from hedgegym.envs.config import ScenarioConfig
from hedgegym.envs.layout import O_EXO_SPOT, O_PHI, O_SPOT
from hedgegym.envs.market import Market, dealer_effective_depth, pin_strike

BATCH = 4096


@dataclass
class SimulationResult:
    """Summary of a simulation (per-path arrays in ``per_path``; sample paths in ``sample``)."""

    scenario: str
    paths: int
    seed: int
    steps: int
    realised_vol: float
    realised_vol_exo: float
    vol_amplification: float
    vol_amplification_ci: tuple[float, float]
    predicted_amplification: float
    predicted_amplification_resilient: float
    mean_phi: float
    crisis_steps_per_path: float
    crisis_path_share: float
    pin_distance: float
    pin_distance_exo: float
    pin_strike: float
    dealer_effective_depth_usd: float
    per_path: dict[str, np.ndarray] = field(repr=False, default_factory=dict)
    sample: dict[str, np.ndarray] = field(repr=False, default_factory=dict)

    def summary(self) -> dict:
        """JSON-ready summary (no arrays)."""
        d = asdict(self)
        d.pop("per_path")
        d.pop("sample")
        d["vol_amplification_ci"] = list(self.vol_amplification_ci)
        return d


def predicted_amplification(phi: float, permanent_share: float = 1.0, decay: float = 0.0) -> float:
    """Volatility amplification of the linearised clearing, with impact resilience.

    The clearing adds ``c = g x`` to each exogenous return ``x``, ``g = -phi / (1 + phi)``
    (Frey & Stremme 1997; Sircar & Papanicolaou 1998). A share ``p = permanent_share`` of it stays;
    the transient rest decays by ``d = exp(-resilience dt)`` within the step and the remainder reverts
    over later steps (Obizhaeva & Wang 2013). The return is then an MA(inf) in the shocks:
    ``r_k = (1 + m g) x_k - (1 - d) T_{k-1}``, ``m = p + (1 - p) d``, ``T_k = d T_{k-1} + (1 - p) d g x_k``,
    so with i.i.d. ``x``::

        amplification^2 = (1 + m g)^2 + (1 - d) / (1 + d) ((1 - p) d g)^2

    With ``p = 1`` this is the Frey–Stremme law ``1 / (1 + phi)``.

    >>> round(predicted_amplification(-0.2), 6), round(predicted_amplification(-0.2, 0.5, 0.0), 4)
    (1.25, 1.125)
    """
    g = -phi / (1.0 + phi)
    m = permanent_share + (1.0 - permanent_share) * decay
    transient = (1.0 - permanent_share) * decay * g
    return float(np.sqrt((1.0 + m * g) ** 2 + (1.0 - decay) / (1.0 + decay) * transient ** 2))


def simulate(config: ScenarioConfig, paths: int = 1000, seed: int = 0, n_sample: int = 5,
             progress=None) -> SimulationResult:
    """Run ``paths`` episodes with the agent inactive; path j uses seed ``seed + j`` (episode 0).

    ``progress``: optional callable ``(steps_done)`` for a progress bar, called once per step batch.
    """
    if paths < 1:
        raise ValueError(f"paths must be >= 1 (got {paths})")
    if seed < 0:
        raise ValueError(f"seed must be >= 0 (got {seed})")
    per_path: dict[str, list[np.ndarray]] = {}
    sample: dict[str, np.ndarray] = {}
    steps = config.episode_steps
    done = 0
    while done < paths:
        n = min(BATCH, paths - done)
        market = Market(config, n_envs=n)
        market.reset(seeds=np.arange(seed + done, seed + done + n))
        spot = np.empty((n, steps + 1))
        exo = np.empty((n, steps + 1))
        phi = np.empty((n, steps))
        spot[:, 0] = market.spot
        exo[:, 0] = market.exo_spot
        for k in range(steps):
            out = market.step()
            spot[:, k + 1] = out[:, O_SPOT]
            exo[:, k + 1] = out[:, O_EXO_SPOT]
            phi[:, k] = out[:, O_PHI]
            if progress is not None:
                progress(n)
        metrics = market.episode_metrics()
        for key in ("realised_vol", "realised_vol_exo", "vol_amplification", "mean_phi", "crisis_steps",
                    "pin_distance", "pin_distance_exo"):
            per_path.setdefault(key, []).append(metrics[key])
        per_path.setdefault("sum_r2", []).append(np.sum(np.diff(np.log(spot), axis=1) ** 2, axis=1))
        per_path.setdefault("sum_x2", []).append(np.sum(np.diff(np.log(exo), axis=1) ** 2, axis=1))
        if not sample:
            m = min(n_sample, n)
            sample = {"spot": spot[:m].copy(), "exo_spot": exo[:m].copy(), "phi": phi[:m].copy()}
        done += n
    arrays = {k: np.concatenate(v) for k, v in per_path.items()}
    # Pooled amplification: ratio of total realised variances; CI by bootstrap over paths.
    r2, x2 = arrays["sum_r2"], arrays["sum_x2"]
    amp = float(np.sqrt(r2.sum() / x2.sum()))
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, paths, size=(500, paths))
    boot = np.sqrt(r2[idx].sum(axis=1) / x2[idx].sum(axis=1))
    mean_phi = float(arrays["mean_phi"].mean())
    years = steps * config.episode.dt
    return SimulationResult(
        scenario=config.name,
        paths=paths,
        seed=seed,
        steps=steps,
        realised_vol=float(np.sqrt(r2.mean() / years)),
        realised_vol_exo=float(np.sqrt(x2.mean() / years)),
        vol_amplification=amp,
        vol_amplification_ci=(float(np.quantile(boot, 0.025)), float(np.quantile(boot, 0.975))),
        predicted_amplification=predicted_amplification(mean_phi),
        predicted_amplification_resilient=predicted_amplification(
            mean_phi, config.market.impact.permanent_share,
            float(np.exp(-config.market.impact.resilience * config.episode.dt))),
        mean_phi=mean_phi,
        crisis_steps_per_path=float(arrays["crisis_steps"].mean()),
        crisis_path_share=float(np.mean(arrays["crisis_steps"] > 0)),
        pin_distance=float(arrays["pin_distance"].mean()),
        pin_distance_exo=float(arrays["pin_distance_exo"].mean()),
        pin_strike=pin_strike(config),
        dealer_effective_depth_usd=dealer_effective_depth(config),
        per_path=arrays,
        sample=sample,
    )


def plot_simulation(result: SimulationResult, path: str | Path) -> None:
    """PNG: sample paths with and without feedback, and per-path amplification against mean phi."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from hedgegym.train.io import save_figure_atomic

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    steps = np.arange(result.sample["spot"].shape[1])
    for j in range(result.sample["spot"].shape[0]):
        line, = ax1.plot(steps, result.sample["spot"][j], lw=1.2)
        ax1.plot(steps, result.sample["exo_spot"][j], lw=1.0, ls="--", color=line.get_color(), alpha=0.7)
    ax1.axhline(result.pin_strike, color="grey", lw=0.8, ls=":")
    ax1.set_title(f"{result.scenario}: spot with feedback (solid) vs exogenous (dashed)")
    ax1.set_xlabel("step")
    ax1.set_ylabel("USD")
    phi = result.per_path["mean_phi"]
    amp = result.per_path["vol_amplification"]
    ax2.scatter(phi, amp, s=6, alpha=0.4, label="paths")
    grid = np.linspace(min(phi.min(), -0.01), max(phi.max(), 0.01), 100)
    grid = grid[1.0 + grid > 0.05]
    ax2.plot(grid, 1.0 / (1.0 + grid), color="black", lw=1.2, label="1 / (1 + phi)")
    ax2.axhline(1.0, color="grey", lw=0.8, ls=":")
    ax2.set_xlabel("mean phi of the path (dealer GEX / depth)")
    ax2.set_ylabel("vol amplification")
    ax2.set_title(f"amplification {result.vol_amplification:.3f} vs predicted {result.predicted_amplification:.3f}")
    ax2.legend()
    save_figure_atomic(fig, path)
    plt.close(fig)
