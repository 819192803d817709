"""The PNG plots of an evaluation and of a training run, each made to be read at a glance.

- ``pnl_distribution.png`` (:func:`plot_pnl_distributions`): one histogram of the episode P&L per
  policy, each on its own axis so that its mean and its -VaR95 are inside it.
- ``slippage_vs_amplification.png`` (:func:`plot_slippage_vs_amplification`): slippage against the
  volatility amplification and against the agent's own share of it, one marker per policy.
- ``sample_paths.png`` (:func:`plot_sample_paths`): the best policy's first episodes: price with
  and without feedback, the agent's own price impact, its hedge by venue and its cumulative P&L.
- ``training_curve.png`` (:func:`plot_training_curve`): training episodes' reward and the held-out
  objective against timesteps.

Matplotlib runs on its Agg backend (files only); figures are written atomically.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from hedgegym.envs.config import VENUE_NAMES
from hedgegym.envs.market import pin_strike
from hedgegym.train.io import save_figure_atomic

if TYPE_CHECKING:
    from hedgegym.train.evaluate import EvaluationResult

# Markers x colours: up to 40 policies stay distinguishable in one legend.
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def usd(value: float, _pos=None) -> str:
    """Compact USD for axis ticks: ``-12.5k``, ``3.1M``.

    >>> usd(-12_500.0), usd(3_100_000.0), usd(250.0)
    ('-12.5k', '3.1M', '250')
    """
    size = abs(value)
    if size >= 1e6:
        return f"{value / 1e6:.3g}M"
    if size >= 1e3:
        return f"{value / 1e3:.3g}k"
    return f"{value:.3g}"


def _usd_axis(axis) -> None:
    from matplotlib.ticker import FuncFormatter

    axis.set_major_formatter(FuncFormatter(usd))


def _style(k: int) -> dict:
    return {"marker": _MARKERS[(k // 10) % len(_MARKERS)], "color": f"C{k % 10}"}


def plot_pnl_distributions(result: EvaluationResult, path: str | Path) -> None:
    """Histogram of the episode P&L per policy, each panel on its own P&L axis, with the mean (black)
    and the 95 % VaR of the loss (red, dashed) marked.

    Each panel spans its policy's 0.5-99.5 % quantiles widened to include the mean and -VaR95;
    episodes beyond are counted in the panel's corner rather than piled at the edge.
    """
    plt = _pyplot()
    names = result.policies
    fig, axes = plt.subplots(len(names), 1, figsize=(9, 1.25 * len(names) + 1.0), squeeze=False)
    for ax, name in zip(axes[:, 0], names, strict=True):
        pnl = result.per_episode[name]["pnl"]
        mean, minus_var = float(pnl.mean()), -result.estimates[name]["var_95"].value
        lo = min(float(np.quantile(pnl, 0.005)), mean, minus_var)
        hi = max(float(np.quantile(pnl, 0.995)), mean, minus_var)
        pad = 0.05 * (hi - lo) if hi > lo else max(abs(hi), 1.0)
        lo, hi = lo - pad, hi + pad
        inside = pnl[(pnl >= lo) & (pnl <= hi)]
        ax.hist(inside, bins=50, range=(lo, hi), color="tab:blue", alpha=0.7)
        ax.axvline(mean, color="black", lw=1.2)
        ax.axvline(minus_var, color="red", lw=1.2, ls="--")
        ax.set_xlim(lo, hi)
        _usd_axis(ax.xaxis)
        ax.tick_params(axis="x", labelsize=7)
        ax.set_yticks([])
        ax.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=8)
        below, above = int((pnl < lo).sum()), int((pnl > hi).sum())
        if below or above:
            ax.text(
                0.99,
                0.92,
                f"outside the axis: {below} below, {above} above",
                transform=ax.transAxes,
                ha="right",
                va="top",
                fontsize=7,
                color="dimgrey",
            )
    axes[-1, 0].set_xlabel("episode P&L (USD); black: mean, red dashed: -VaR95; each panel has its own axis")
    axes[0, 0].set_title(f"{result.config.name}: P&L per episode, {result.episodes} episodes")
    fig.tight_layout()
    save_figure_atomic(fig, path)
    plt.close(fig)


def plot_slippage_vs_amplification(result: EvaluationResult, path: str | Path) -> None:
    """One marker per policy (legend, no labels on the points): slippage per episode against the
    volatility amplification, and against the agent's own share of it, with 95 % intervals.

    The amplification axis is written in full (no offset), so values 1e-4 apart read as such; the
    title gives the spread across policies next to the widest interval, which says whether the
    policies differ at all.
    """
    plt = _pyplot()
    has_share = "agent_vol_amplification" in result.estimates[result.policies[0]]
    # No line at 1 on the amplification panel: it would stretch the axis over a range no policy reaches.
    panels = [("vol_amplification", "vol amplification (spot vol / exogenous vol)", None)]
    if has_share:
        panels.append(("agent_vol_amplification", "agent's own share of the amplification", 0.0))
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels) + 3.0, 5.0), squeeze=False)
    for ax, (metric, label, neutral) in zip(axes[0], panels, strict=True):
        values, widths = [], []
        for k, name in enumerate(result.policies):
            x, y = result.estimates[name]["slippage_usd"], result.estimates[name][metric]
            ax.errorbar(
                x.value,
                y.value,
                xerr=[[x.value - x.low], [x.high - x.value]],
                yerr=[[y.value - y.low], [y.high - y.value]],
                ms=6,
                capsize=2,
                ls="none",
                label=name,
                **_style(k),
            )
            values.append(y.value)
            widths.append(y.high - y.low)
        if neutral is not None:
            ax.axhline(neutral, color="grey", lw=0.8, ls=":")
        ax.ticklabel_format(axis="y", useOffset=False, style="plain")
        _usd_axis(ax.xaxis)
        ax.set_xlabel("slippage per episode (USD)")
        ax.set_ylabel(label)
        ax.set_title(
            f"spread across policies {max(values) - min(values):.2g}, widest 95 % CI {max(widths):.2g}", fontsize=9
        )
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5), frameon=False)
    fig.suptitle(f"{result.config.name}: slippage vs volatility amplification ({result.episodes} episodes)")
    fig.tight_layout()
    save_figure_atomic(fig, path)
    plt.close(fig)


def plot_sample_paths(result: EvaluationResult, path: str | Path) -> None:
    """The first episodes under the best policy by the objective, one colour per episode, in four
    panels on one time axis: spot with feedback (solid) and the exogenous price (dashed); the
    agent's own impact on spot (spot minus spot with the agent's impact off); the hedge by venue;
    the cumulative P&L."""
    from hedgegym.train.evaluate import OBJECTIVE

    plt = _pyplot()
    name = result.best.get(OBJECTIVE, result.reference)
    sample = result.samples[name]
    has_share = "spot_no_agent_impact" in sample
    rows = 4 if has_share else 3
    fig, axes = plt.subplots(rows, 1, figsize=(10, 2.6 * rows), sharex=True, squeeze=False)
    ax_price, *rest = axes[:, 0]
    ax_impact = rest.pop(0) if has_share else None
    ax_hedge, ax_pnl = rest
    hours = np.arange(sample["spot"].shape[1]) * result.config.episode.dt_hours
    venues = [VENUE_NAMES.index(v) for v in result.config.agent.venues]
    styles = ("-", "--", ":")
    for j in range(sample["spot"].shape[0]):
        colour = f"C{j % 10}"
        first = j == 0
        ax_price.plot(hours, sample["spot"][j], lw=1.2, color=colour, label="spot (with feedback)" if first else None)
        ax_price.plot(
            hours,
            sample["exo_spot"][j],
            lw=1.0,
            ls="--",
            color=colour,
            alpha=0.8,
            label="exogenous (no feedback)" if first else None,
        )
        if ax_impact is not None:
            ax_impact.plot(hours, sample["spot"][j] - sample["spot_no_agent_impact"][j], lw=1.0, color=colour)
        for v in venues:
            unit = "contracts" if VENUE_NAMES[v] == "future" else "coins"
            ax_hedge.plot(
                hours,
                sample["hedge"][j, :, v],
                lw=1.0,
                ls=styles[v],
                color=colour,
                label=f"{VENUE_NAMES[v]} ({unit})" if first else None,
            )
        ax_pnl.plot(hours, sample["pnl"][j], lw=1.1, color=colour)
    ax_price.axhline(pin_strike(result.config), color="grey", lw=0.8, ls=":", label="pin strike")
    ax_price.set_ylabel("price (USD)")
    ax_price.legend(fontsize=8, loc="upper left")
    ax_price.set_title(f"{result.config.name}: first {sample['spot'].shape[0]} episodes under {name}")
    if ax_impact is not None:
        ax_impact.axhline(0.0, color="grey", lw=0.8)
        ax_impact.set_ylabel("agent's impact on spot\n(USD: spot - spot with\nthe agent's impact off)", fontsize=8)
    ax_hedge.axhline(0.0, color="grey", lw=0.8)
    ax_hedge.set_ylabel("hedge position")
    ax_hedge.legend(fontsize=8, loc="upper left", title="venue (line style)", title_fontsize=8)
    ax_pnl.axhline(0.0, color="grey", lw=0.8)
    _usd_axis(ax_pnl.yaxis)
    ax_pnl.set_ylabel("cumulative P&L (USD)")
    ax_pnl.set_xlabel("hours")
    for ax in axes[:, 0]:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure_atomic(fig, path)
    plt.close(fig)


def plot_training_curve(history: dict, path: str | Path, title: str = "") -> None:
    """Mean episode reward of the training rollouts and the held-out objective (USD) against timesteps.

    The reward axis is linear and spans the last 80 % of the rollouts: the first ones, often orders
    of magnitude worse, are counted in the corner instead of flattening the rest.
    """
    plt = _pyplot()
    fig, (ax_r, ax_o) = plt.subplots(1, 2, figsize=(11, 4))
    if history["rollouts"]:
        t, r = np.array(history["rollouts"], dtype=np.float64).T
        ax_r.plot(t, r, lw=1.2)
        late = r[len(r) // 5 :]
        lo, hi = float(late.min()), float(late.max())
        pad = 0.08 * (hi - lo) if hi > lo else max(abs(hi), 1.0) * 0.1
        ax_r.set_ylim(lo - pad, hi + pad)
        hidden = int(((r < lo - pad) | (r > hi + pad)).sum())
        if hidden:
            ax_r.text(
                0.98,
                0.04,
                f"{hidden} early rollout(s) off the axis (min {r.min():.3g})",
                transform=ax_r.transAxes,
                ha="right",
                fontsize=8,
                color="dimgrey",
            )
    ax_r.set(xlabel="timesteps", ylabel="mean episode reward", title="training episodes")
    if history["evaluations"]:
        t = [e["timesteps"] for e in history["evaluations"]]
        o = [e["objective"] for e in history["evaluations"]]
        ax_o.plot(t, o, marker="o", lw=1.2)
        best = history["best"]
        if best:
            ax_o.plot(
                [best["timesteps"]],
                [best["objective"]],
                marker="*",
                ms=14,
                color="tab:red",
                ls="none",
                label=f"best ({usd(best['objective'])} at {best['timesteps']:,})",
            )
            ax_o.legend(fontsize=8)
    _usd_axis(ax_o.yaxis)
    ax_o.set(xlabel="timesteps", ylabel="mean-variance objective (USD)", title="held-out evaluation")
    for ax in (ax_r, ax_o):
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    save_figure_atomic(fig, path)
    plt.close(fig)
