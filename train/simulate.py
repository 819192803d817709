"""`hedgegym simulate`: the market with the dealers hedging and the agent inactive.

Runs ``paths`` episodes of a scenario and measures what the dealers' hedging does to the price:
realised volatility of spot (with feedback) against the exogenous path (without feedback, the
same shocks), their ratio — the volatility amplification — against the Frey–Stremme /
Sircar–Papanicolaou prediction ``1 / (1 + mean phi)``, liquidity-crisis steps and pinning.

Pinning is measured per path at the episode's end (the dealers' expiry in ``long-gamma-pin``) as
the *paired* difference ``|S_T / K - 1| - |X_T / K - 1|`` of the final spot and the final exogenous
price on the same shocks, ``K`` the strike of largest open interest: negative means the dealers'
hedging pulled the price towards the strike. Its interval is a percentile bootstrap over paths.

Every number of the summary is finite or ``None`` (JSON ``null``), with one meaning per field:
``dealer_effective_depth_usd`` is ``None`` when the dealers' flow meets infinite depth (it moves no
price), the two predicted amplifications are ``None`` where ``1 + mean phi <= 0`` (the linearised
law has no meaning there: the market is in the liquidity-crisis regime).

Where the scenario turns on a second-order feature (implied-vol dynamics, dealer cohorts, the perp's
liquidation engine; README "The market model"), ``second_order`` holds their measures pooled over
paths (see :func:`second_order_summary`), the table shows them, and ``--plot`` adds a row of panels:
the dealers' flow split into its gamma, vanna and charm parts, the liquidations and the insurance
fund, and the returns' autocorrelation by lag.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from hedgegym.envs.config import ScenarioConfig
from hedgegym.envs.layout import EXT_INFO, N_AUTOCORR_LAGS
from hedgegym.envs.market import (
    Market,
    dealer_effective_depth,
    liquidations_on,
    pin_strike,
    resilience_decay,
    second_order_on,
)
from hedgegym.train.evaluate import run_policy
from hedgegym.train.limits import check_count, check_seed
from hedgegym.train.metrics import estimate

# Bootstrap resamples over paths; the index matrix is N_RESAMPLES x paths integers.
N_RESAMPLES = 500


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
    pin_effect: float
    pin_effect_ci: tuple[float, float]
    pin_strike: float
    dealer_effective_depth_usd: float
    # The impact parameters of the resilience-adjusted prediction (its curve in simulation.png).
    permanent_share: float = 1.0
    resilience_decay: float = 0.0
    # The second-order market's measures, pooled over paths (empty where every feature is off).
    second_order: dict = field(default_factory=dict)
    per_path: dict[str, np.ndarray] = field(repr=False, default_factory=dict)
    sample: dict[str, np.ndarray] = field(repr=False, default_factory=dict)

    def summary(self) -> dict:
        """JSON-ready summary (no arrays); a non-finite number is ``None`` (see the module docstring)."""
        d = asdict(self)
        d.pop("per_path")
        d.pop("sample")
        d["vol_amplification_ci"] = list(self.vol_amplification_ci)
        d["pin_effect_ci"] = list(self.pin_effect_ci)
        return {k: _finite_or_none(v) for k, v in d.items()}

    def table_rows(self) -> list[tuple[str, str]]:
        """``(measure, value)`` rows of the ``hedgegym simulate`` table."""
        lo, hi = self.vol_amplification_ci
        plo, phi_ = self.pin_effect_ci
        return [
            ("realised vol, with feedback", f"{self.realised_vol:.4f}"),
            ("realised vol, exogenous (no feedback)", f"{self.realised_vol_exo:.4f}"),
            ("volatility amplification [95% CI]", f"{self.vol_amplification:.4f} [{lo:.4f}, {hi:.4f}]"),
            ("predicted 1 / (1 + mean phi), permanent impact", _law(self.predicted_amplification)),
            ("predicted with permanent share and resilience", _law(self.predicted_amplification_resilient)),
            ("mean phi (dealer GEX / depth)", f"{self.mean_phi:+.4f}"),
            ("liquidity-crisis steps per path", f"{self.crisis_steps_per_path:.3f}"),
            ("paths with a crisis step", f"{self.crisis_path_share:.1%}"),
            (f"pin distance to {self.pin_strike:,.0f}, with feedback", f"{self.pin_distance:.4%}"),
            ("pin distance, exogenous", f"{self.pin_distance_exo:.4%}"),
            (
                "pinning: with feedback - exogenous, paired [95% CI]",
                f"{self.pin_effect:+.4%} [{plo:+.4%}, {phi_:+.4%}]",
            ),
            *second_order_rows(self.second_order),
        ]


def _law(value: float) -> str:
    return f"{value:.4f}" if math.isfinite(value) else "n/a (1 + mean phi <= 0)"


def _finite_or_none(value):
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite_or_none(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _usd(value: float) -> str:
    size = abs(value)
    for unit, scale in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if size >= scale:
            return f"{value / scale:.3g}{unit}"
    return f"{value:.3g}"


def second_order_summary(config: ScenarioConfig, arrays: dict[str, np.ndarray]) -> dict:
    """The second-order measures pooled over paths, from ``Market.episode_metrics``' per-path keys.

    Flows: mean per path of each part's gross notional (USD) and its share of their sum; ``mean_psi``
    (the vanna feedback) and the first-order law with it, ``1 / (1 + mean phi + mean psi)`` (and
    with the permanent share and resilience, :func:`predicted_amplification`); return
    autocorrelation by lag pooled as ``sum r_k r_(k-l) / sum r_k^2`` over all paths; cohorts'
    crowding; liquidations: means per path, the share of paths with one, the largest cascade.
    Empty where no second-order feature is on.
    """
    if not second_order_on(config):
        return {}
    parts = ("gamma", "vanna", "charm", "other")
    flows = {name: float(arrays[f"flow_{name}_usd"].mean()) for name in parts}
    total = sum(flows.values()) or 1.0
    phi = float(arrays["mean_phi"].mean())
    psi = float(arrays["mean_phi_vanna"].mean())
    r2 = arrays["sum_r2"]
    out = {
        "flow_usd": flows,
        "flow_share": {name: flows[name] / total for name in parts},
        "mean_psi": psi,
        "predicted_amplification_vanna": predicted_amplification(phi + psi),
        "predicted_amplification_vanna_resilient": predicted_amplification(
            phi + psi, config.market.impact.permanent_share, resilience_decay(config)
        ),
        "max_atm_vol": float(arrays["max_atm_vol"].mean()),
        "return_autocorr": [
            float((arrays[f"return_autocorr_{lag}"] * r2).sum() / max(r2.sum(), 1e-300))
            for lag in range(1, N_AUTOCORR_LAGS + 1)
        ],
        "implied_vol": config.market.implied_vol.enabled,
        "cohorts": len(config.dealers.cohorts),
        "crowding": float(arrays["crowding"].mean()),
        "cohort_trade_share": float(arrays["cohort_trade_share"].mean()),
        "liquidations": liquidations_on(config),
    }
    if liquidations_on(config):
        liquidated = arrays["liquidated_long_usd"] + arrays["liquidated_short_usd"]
        out.update(
            liquidated_long_usd=float(arrays["liquidated_long_usd"].mean()),
            liquidated_short_usd=float(arrays["liquidated_short_usd"].mean()),
            liquidated_median_usd=float(np.median(liquidated)),
            liquidated_p90_usd=float(np.quantile(liquidated, 0.9)),
            liquidation_path_share=float(np.mean(liquidated > 0)),
            cascade_rounds_mean=float(arrays["max_cascade_rounds"].mean()),
            cascade_rounds_max=float(arrays["max_cascade_rounds"].max()),
            cascade_steps_mean=float(arrays["max_cascade_steps"].mean()),
            insurance_fund_usd=float(arrays["insurance_fund_usd"].mean()),
            adl_events=float(arrays["adl_events"].mean()),
            adl_usd=float(arrays["adl_usd"].mean()),
        )
    return out


def second_order_rows(so: dict) -> list[tuple[str, str]]:
    """The ``hedgegym simulate`` table's rows of :func:`second_order_summary` (none where it is empty)."""
    if not so:
        return []
    f, sh = so["flow_usd"], so["flow_share"]
    rows = [
        (
            "dealer flow per path: gamma / vanna / charm / other, USD",
            " / ".join(_usd(f[k]) for k in ("gamma", "vanna", "charm", "other")),
        ),
        (
            "  shares of the dealers' gross flow",
            " / ".join(f"{sh[k]:.1%}" for k in ("gamma", "vanna", "charm", "other")),
        ),
    ]
    if so["implied_vol"]:
        rows += [
            ("mean psi (vanna feedback)", f"{so['mean_psi']:+.4f}"),
            ("predicted 1 / (1 + mean phi + mean psi), permanent impact", _law(so["predicted_amplification_vanna"])),
            (
                "predicted with vanna, permanent share and resilience",
                _law(so["predicted_amplification_vanna_resilient"]),
            ),
            ("highest ATM implied vol per path (mean)", f"{so['max_atm_vol']:.4f}"),
        ]
    rows.append(("return autocorrelation, lags 1 / 2 / 3 / 4", " / ".join(f"{v:+.4f}" for v in so["return_autocorr"])))
    if so["cohorts"]:
        rows += [
            (f"crowding: steps with >= 2 of {so['cohorts']} cohorts trading together", f"{so['crowding']:.1%}"),
            ("steps with some cohort trading", f"{so['cohort_trade_share']:.1%}"),
        ]
    if so["liquidations"]:
        rows += [
            (
                "liquidated per path: longs / shorts, USD",
                f"{_usd(so['liquidated_long_usd'])} / {_usd(so['liquidated_short_usd'])}",
            ),
            (
                "liquidated per path: median / 90th percentile, USD",
                f"{_usd(so['liquidated_median_usd'])} / {_usd(so['liquidated_p90_usd'])}",
            ),
            ("paths with a liquidation", f"{so['liquidation_path_share']:.1%}"),
            (
                "cascade rounds in one step: mean of paths' max / max",
                f"{so['cascade_rounds_mean']:.2f} / {so['cascade_rounds_max']:.0f}",
            ),
            ("longest run of liquidation steps (mean)", f"{so['cascade_steps_mean']:.2f}"),
            ("insurance fund at the end (mean), USD", _usd(so["insurance_fund_usd"])),
            ("ADL events per path / ADL notional, USD", f"{so['adl_events']:.2f} / {_usd(so['adl_usd'])}"),
        ]
    return rows


# The per-step measures of the sample paths: (info key, field of ``market.ext``), from ``layout.EXT_INFO``.
SECOND_ORDER_SAMPLE = {
    name: dict(EXT_INFO)[name]
    for name in (
        "flow_gamma",
        "flow_vanna",
        "flow_charm",
        "flow_other",
        "crowded",
        "liquidated_long_usd",
        "liquidated_short_usd",
        "insurance_fund_usd",
    )
}


def second_order_sample(config: ScenarioConfig, seeds: np.ndarray) -> dict[str, np.ndarray]:
    """Each step's second-order measures ``[m, steps]`` of the sample paths ``seeds`` (episode 0, the
    agent inactive: the same paths as :func:`hedgegym.train.evaluate.run_policy`'s), and ``atm_vol``."""
    market = Market(config, n_envs=len(seeds), parallel=False)
    market.reset(seeds=seeds, episodes=0)
    steps = market.episode_steps
    out = {name: np.empty((len(seeds), steps)) for name in (*SECOND_ORDER_SAMPLE, "atm_vol")}
    for k in range(steps):
        market.step()
        for name, ext_field in SECOND_ORDER_SAMPLE.items():
            out[name][:, k] = market.ext[ext_field]
        out["atm_vol"][:, k] = market.state["atm_vol"]
    return out


def predicted_amplification(phi: float, permanent_share: float = 1.0, decay: float = 0.0) -> float:
    """Volatility amplification of the linearised clearing, with impact resilience.

    The clearing adds ``c = g x`` to each exogenous return ``x``, ``g = -phi / (1 + phi)``
    (Frey & Stremme 1997; Sircar & Papanicolaou 1998). A share ``p = permanent_share`` of it stays;
    the transient rest decays by ``d = exp(-resilience dt)`` within the step and the remainder reverts
    over later steps (Obizhaeva & Wang 2013). The return is then an MA(inf) in the shocks:
    ``r_k = (1 + m g) x_k - (1 - d) T_{k-1}``, ``m = p + (1 - p) d``, ``T_k = d T_{k-1} + (1 - p) d g x_k``,
    so with i.i.d. ``x``::

        amplification^2 = (1 + m g)^2 + (1 - d) / (1 + d) ((1 - p) d g)^2

    With ``p = 1`` this is the Frey–Stremme law ``1 / (1 + phi)``. Where ``1 + phi <= 0`` the
    linearisation has no meaning (no stable clearing): NaN.

    >>> round(predicted_amplification(-0.2), 6), round(predicted_amplification(-0.2, 0.5, 0.0), 4)
    (1.25, 1.125)
    """
    if 1.0 + phi <= 0.0:
        return math.nan
    g = -phi / (1.0 + phi)
    m = permanent_share + (1.0 - permanent_share) * decay
    transient = (1.0 - permanent_share) * decay * g
    return float(np.sqrt((1.0 + m * g) ** 2 + (1.0 - decay) / (1.0 + decay) * transient**2))


def simulate(
    config: ScenarioConfig, paths: int = 1000, seed: int = 0, n_sample: int = 5, progress=None
) -> SimulationResult:
    """Run ``paths`` episodes with the agent inactive; path j uses seed ``seed + j`` (episode 0).

    ``paths`` in [1, 1,000,000] and ``seed`` in [0, 2**63 - paths] (every path's seed is an int64),
    else a ValueError naming the argument and its range.

    ``progress``: optional callable ``(steps_done)`` for a progress bar, called once per step batch.
    """
    check_count(paths, "paths", "path")
    check_seed(seed, paths, "seed", "paths")
    steps = config.episode_steps
    arrays, sample = run_policy(
        None,
        config,
        np.arange(seed, seed + paths, dtype=np.int64),
        n_sample_paths=n_sample,
        progress=progress,
    )
    # Pooled amplification: ratio of total realised variances; CI by bootstrap over paths.
    r2, x2 = arrays["sum_r2"], arrays["sum_x2"]
    amp = float(np.sqrt(r2.sum() / x2.sum()))
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, paths, size=(N_RESAMPLES, paths))
    boot = np.sqrt(r2[idx].sum(axis=1) / x2[idx].sum(axis=1))
    # Paired per path: the same shocks with and without the dealers' feedback.
    pin_diff = arrays["pin_distance"] - arrays["pin_distance_exo"]
    pin_effect = float(pin_diff.mean())
    pin_boot = pin_diff[idx].mean(axis=1)
    mean_phi = float(arrays["mean_phi"].mean())
    years = steps * config.episode.dt
    if second_order_on(config) and sample:
        sample.update(second_order_sample(config, np.arange(seed, seed + sample["spot"].shape[0], dtype=np.int64)))
    return SimulationResult(
        scenario=config.name,
        paths=paths,
        seed=seed,
        steps=steps,
        realised_vol=float(np.sqrt(r2.mean() / years)),
        realised_vol_exo=float(np.sqrt(x2.mean() / years)),
        vol_amplification=amp,
        vol_amplification_ci=_interval(boot, amp),
        predicted_amplification=predicted_amplification(mean_phi),
        predicted_amplification_resilient=predicted_amplification(
            mean_phi, config.market.impact.permanent_share, resilience_decay(config)
        ),
        mean_phi=mean_phi,
        crisis_steps_per_path=float(arrays["crisis_steps"].mean()),
        crisis_path_share=float(np.mean(arrays["crisis_steps"] > 0)),
        pin_distance=float(arrays["pin_distance"].mean()),
        pin_distance_exo=float(arrays["pin_distance_exo"].mean()),
        pin_effect=pin_effect,
        pin_effect_ci=_interval(pin_boot, pin_effect),
        pin_strike=pin_strike(config),
        dealer_effective_depth_usd=dealer_effective_depth(config),
        permanent_share=config.market.impact.permanent_share,
        resilience_decay=resilience_decay(config),
        second_order=second_order_summary(config, arrays),
        per_path=arrays,
        sample=sample,
    )


def _plot_second_order(result: SimulationResult, axes) -> None:
    """The second-order panels of simulation.png: the first sample path's dealer flow by part (USD),
    its liquidations and insurance fund (or ATM vol without liquidations), return autocorrelation."""
    so, sample = result.second_order, result.sample
    ax_flow, ax_liq, ax_ac = axes
    spot = sample["spot"][0, 1:]
    steps = np.arange(1, spot.shape[0] + 1)
    bottom_pos, bottom_neg = np.zeros_like(spot), np.zeros_like(spot)
    for name, color in (("gamma", "tab:blue"), ("vanna", "tab:purple"), ("charm", "tab:green"), ("other", "tab:grey")):
        usd = sample[f"flow_{name}"][0] * spot
        base = np.where(usd >= 0, bottom_pos, bottom_neg)
        ax_flow.bar(steps, usd, bottom=base, width=1.0, color=color, label=name, lw=0)
        bottom_pos += np.maximum(usd, 0.0)
        bottom_neg += np.minimum(usd, 0.0)
    ax_flow.axhline(0.0, color="black", lw=0.6)
    ax_flow.set_title("dealer hedge flow of path 0 by part, USD (+ buys)", fontsize=9)
    ax_flow.set_xlabel("step")
    ax_flow.legend(fontsize=7, ncol=4)
    if so["liquidations"]:
        ax_liq.bar(
            steps, -sample["liquidated_long_usd"][0], width=1.0, color="tab:red", label="longs liquidated (sold)"
        )
        ax_liq.bar(steps, sample["liquidated_short_usd"][0], width=1.0, color="tab:green", label="shorts liquidated")
        twin = ax_liq.twinx()
        twin.plot(steps, sample["insurance_fund_usd"][0], color="black", lw=1.0, label="insurance fund")
        twin.set_ylabel("insurance fund, USD", fontsize=8)
        ax_liq.set_title(
            f"liquidations of path 0, USD; per path {_usd(so['liquidated_long_usd'])} longs / "
            f"{_usd(so['liquidated_short_usd'])} shorts",
            fontsize=9,
        )
        ax_liq.legend(fontsize=7, loc="lower left")
    else:
        for j in range(sample["atm_vol"].shape[0]):
            ax_liq.plot(steps, sample["atm_vol"][j], lw=1.0)
        ax_liq.set_title(f"ATM implied vol of the sample paths (mean max {so['max_atm_vol']:.3f})", fontsize=9)
    ax_liq.set_xlabel("step")
    lags = np.arange(1, len(so["return_autocorr"]) + 1)
    ax_ac.bar(lags, so["return_autocorr"], color="tab:blue")
    se = 1.0 / math.sqrt(max(result.paths * result.steps, 1))
    ax_ac.axhspan(-2 * se, 2 * se, color="grey", alpha=0.3, label="+-2 se of no correlation")
    ax_ac.axhline(0.0, color="black", lw=0.6)
    ax_ac.set_xticks(lags)
    ax_ac.set_xlabel("lag (steps)")
    title = "return autocorrelation, pooled"
    if so["cohorts"]:
        title += f"; crowding {so['crowding']:.1%} of steps"
    ax_ac.set_title(title, fontsize=9)
    ax_ac.legend(fontsize=7)


def _interval(draws: np.ndarray, point: float) -> tuple[float, float]:
    """95 % percentile interval of the bootstrap ``draws``, containing ``point``."""
    est = estimate(point, draws)
    return est.low, est.high


def plot_simulation(result: SimulationResult, path: str | Path) -> None:
    """PNG: sample paths with and without feedback, and per-path amplification against mean phi."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from hedgegym.train.io import save_figure_atomic

    so = result.second_order
    if so and "flow_gamma" in result.sample:
        fig = plt.figure(figsize=(15, 9))
        grid = fig.add_gridspec(2, 6)
        ax1, ax2 = fig.add_subplot(grid[0, :3]), fig.add_subplot(grid[0, 3:])
        _plot_second_order(result, [fig.add_subplot(grid[1, 2 * j : 2 * j + 2]) for j in range(3)])
    else:
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    steps = np.arange(result.sample["spot"].shape[1])
    for j in range(result.sample["spot"].shape[0]):
        (line,) = ax1.plot(steps, result.sample["spot"][j], lw=1.2)
        ax1.plot(steps, result.sample["exo_spot"][j], lw=1.0, ls="--", color=line.get_color(), alpha=0.7)
    ax1.axhline(result.pin_strike, color="grey", lw=0.8, ls=":")
    ax1.set_title(f"{result.scenario}: spot with feedback (solid) vs exogenous (dashed)", fontsize=9)
    ax1.set_xlabel("step")
    ax1.set_ylabel("USD")
    phi = result.per_path["mean_phi"]
    amp = result.per_path["vol_amplification"]
    ax2.scatter(phi, amp, s=6, alpha=0.4, label="paths")
    grid = np.linspace(min(phi.min(), -0.01), max(phi.max(), 0.01), 100)
    grid = grid[1.0 + grid > 0.05]
    ax2.plot(grid, 1.0 / (1.0 + grid), color="black", lw=1.0, ls="--", label="1 / (1 + phi), permanent impact only")
    resilient = [predicted_amplification(g, result.permanent_share, result.resilience_decay) for g in grid]
    ax2.plot(
        grid,
        resilient,
        color="tab:red",
        lw=1.6,
        label=f"with permanent share {result.permanent_share:g} and resilience "
        f"(decay {result.resilience_decay:.3g} per step)",
    )
    ax2.plot(
        [result.mean_phi],
        [result.vol_amplification],
        marker="*",
        ms=14,
        color="tab:red",
        ls="none",
        label="measured, pooled over paths",
    )
    ax2.axhline(1.0, color="grey", lw=0.8, ls=":")
    ax2.set_xlabel("mean phi of the path (dealer GEX / depth)")
    ax2.set_ylabel("vol amplification")
    ax2.set_title(
        f"amplification {result.vol_amplification:.4f}; predicted "
        f"{_law(result.predicted_amplification_resilient)} (resilience), "
        f"{_law(result.predicted_amplification)} (permanent only)",
        fontsize=9,
    )
    if so and so["implied_vol"]:
        law = [
            predicted_amplification(g + so["mean_psi"], result.permanent_share, result.resilience_decay) for g in grid
        ]
        ax2.plot(
            grid,
            law,
            color="tab:purple",
            lw=1.2,
            ls="-.",
            label=f"with the vanna term (mean psi {so['mean_psi']:+.3f})",
        )
    ax2.legend(fontsize=7)
    fig.tight_layout()
    save_figure_atomic(fig, path)
    plt.close(fig)
