"""The evaluation's tables: terminal (``rich``) and ``report.md``, from an :class:`EvaluationResult`.

Example:
    >>> from hedgegym.train.report import format_value
    >>> format_value("pnl_std", -110_700.0), format_value("pnl_std", 3.42e6), format_value("slippage_bps", 1.234)
    ('-110.7k', '3.42M', '1.23')
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from hedgegym.envs.layout import N_AUTOCORR_LAGS
from hedgegym.train import metrics as M
from hedgegym.train.evaluate import OBJECTIVE

if TYPE_CHECKING:
    from hedgegym.train.evaluate import EvaluationResult

TABLE_COLUMNS = (
    (
        "hedging P&L and risk, USD per episode",
        ("mean_variance", "pnl_mean", "pnl_std", "var_95", "cvar_95", "entropic_risk"),
    ),
    (
        "trading costs per episode",
        ("slippage_usd", "slippage_bps", "fees", "funding", "carry", "turnover_usd", "n_trades"),
    ),
    ("market impact", ("vol_amplification", "agent_vol_amplification", "pin_distance", "crisis_steps")),
)
"""The report's tables: (title, metrics)."""

SECOND_ORDER_TABLES = (
    (
        "second-order market: the dealers' hedge flow per episode, USD",
        ("flow_gamma_usd", "flow_vanna_usd", "flow_charm_usd", "flow_other_usd", "mean_phi_vanna", "max_atm_vol"),
    ),
    (
        "second-order market: dealer cohorts and return autocorrelation",
        ("crowding", "cohort_trade_share", *(f"return_autocorr_{lag}" for lag in range(1, N_AUTOCORR_LAGS + 1))),
    ),
    (
        "second-order market: liquidations on the perp",
        (
            "liquidated_long_usd",
            "liquidated_short_usd",
            "liquidation_steps",
            "max_cascade_rounds",
            "max_cascade_steps",
            "insurance_fund_usd",
            "adl_events",
            "adl_usd",
        ),
    ),
)
"""The tables added where the scenario turns a second-order feature on, each column only where its
feature is (:func:`table_columns`)."""


def table_columns(result: EvaluationResult) -> list[tuple[str, tuple[str, ...]]]:
    """The report's tables for ``result``: :data:`TABLE_COLUMNS`, then the second-order ones whose
    feature the scenario turns on (the flow decomposition and the return autocorrelation with any;
    ``psi`` and the ATM vol with the implied-vol dynamics, crowding with dealer cohorts, the
    liquidation table with the liquidation engine). Only metrics the evaluation has."""
    from hedgegym.envs.market import liquidations_on

    cfg = result.config
    present = result.estimates[result.policies[0]]
    off = set()
    if not cfg.market.implied_vol.enabled:
        off |= {"mean_phi_vanna", "max_atm_vol"}
    if not cfg.dealers.cohorts:
        off |= {"crowding", "cohort_trade_share"}
    if not liquidations_on(cfg):
        off |= set(SECOND_ORDER_TABLES[2][1])
    tables = []
    for title, names in (*TABLE_COLUMNS, *SECOND_ORDER_TABLES):
        names = tuple(m for m in names if m in present and m not in off)
        if names:
            tables.append((title, names))
    return tables


def format_value(metric: str, value: float) -> str:
    """A metric's value for tables: USD compact (``-110.7k``, ``3.42M``), ratios with four decimals."""
    unit = M.METRICS[metric].unit
    if metric in ("vol_amplification", "vol_amplification_no_agent_impact"):
        return f"{value:.4f}"
    if metric == "agent_vol_amplification":
        return f"{value:+.5f}"
    if metric.startswith("return_autocorr_"):
        return f"{value:+.4f}"
    if metric in ("pin_distance", "pin_distance_exo"):
        return f"{value:.2%}"
    if unit == "bps":
        return f"{value:.2f}"
    if unit == "USD":
        size = abs(value)
        if size >= 1e6:
            return f"{value / 1e6:.3g}M" if size < 1e9 else f"{value / 1e9:.3g}B"
        if size >= 1e4:
            return f"{value / 1e3:.4g}k"
        return f"{value:,.0f}"
    if unit == "steps" or metric == "n_trades":
        return f"{value:.1f}"
    return f"{value:.4g}"


def format_estimate(metric: str, estimate: M.Estimate, ci: bool = True, sep: str = " ") -> str:
    """``value [low, high]`` (or just the value)."""
    text = format_value(metric, estimate.value)
    if ci:
        text += f"{sep}[{format_value(metric, estimate.low)}, {format_value(metric, estimate.high)}]"
    return text


def rich_tables(result: EvaluationResult) -> list:
    """The report's tables as ``rich`` tables, best value per column in bold green with ``*``."""
    from rich.table import Table

    tables = []
    for title, metric_names in table_columns(result):
        table = Table(
            title=f"{result.config.name}, {result.episodes} episodes, seed {result.seed}: {title} "
            "(value, 95 % CI; * best)",
            show_lines=True,
        )
        table.add_column("policy", style="bold")
        for m in metric_names:
            spec = M.METRICS[m]
            unit = f" ({spec.unit})" if spec.unit in ("bps", "steps") else ""
            table.add_column(f"{spec.label}{unit}", justify="right")
        for name in result.policies:
            cells = []
            for m in metric_names:
                text = format_estimate(m, result.estimates[name][m], sep="\n")
                if result.best.get(m) == name:
                    text = f"[bold green]*{text}[/]"
                cells.append(text)
            table.add_row(name, *cells)
        tables.append(table)
    return tables


def _markdown_table(
    result: EvaluationResult, metric_names: Sequence[str], rows: Mapping[str, Mapping[str, M.Estimate]], mark_best: bool
) -> str:
    header = "| policy | " + " | ".join(M.METRICS[m].label for m in metric_names) + " |"
    lines = [header, "|---|" + "---:|" * len(metric_names)]
    for name, values in rows.items():
        cells = []
        for m in metric_names:
            text = format_estimate(m, values[m])
            cells.append(f"**{text}**" if mark_best and result.best.get(m) == name else text)
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def report_markdown(result: EvaluationResult, command: str | None = None) -> str:
    """``report.md``: setting, the two tables, paired differences against the reference, plots."""
    cfg = result.config
    present = result.estimates[result.policies[0]]
    parts = [
        f"# hedgegym evaluation: {cfg.name}",
        "",
        f"{result.episodes} episodes per policy, episode j on seed {result.seed} + j (the same exogenous paths for "
        f"every policy), {cfg.episode_steps} steps of {cfg.episode.dt_hours:g} h. Mean-variance objective with "
        f"kappa = {cfg.agent.risk_aversion:g} per {cfg.pnl_scale:,.0f} USD. Intervals: 95 % percentile bootstrap "
        f"over episodes ({result.n_resamples} resamples, paired across policies). Best value per column in bold.",
    ]
    if command:
        parts += ["", f"Command: `{command}`"]
    parts += ["", "## Policies", ""]
    parts += [f"- **{name}**: {result.sources[name]}" for name in result.policies]
    if result.notes:
        parts += ["", *(f"Note: {note}." for note in result.notes)]
    for title, metric_names in table_columns(result):
        parts += [
            "",
            f"## {title[0].upper()}{title[1:]}",
            "",
            _markdown_table(result, metric_names, {n: result.estimates[n] for n in result.policies}, True),
        ]
    others = [n for n in result.policies if n != result.reference]
    if others:
        diff_metrics = [
            m
            for m in (
                "mean_variance",
                "pnl_mean",
                "pnl_std",
                "cvar_95",
                "entropic_risk",
                "slippage_usd",
                "fees",
                "n_trades",
                "agent_vol_amplification",
            )
            if m in present
        ]
        parts += [
            "",
            f"## Paired differences: policy - {result.reference}",
            "",
            f"Reference: the best baseline by the mean-variance objective. An interval that excludes 0 "
            f"is a significant difference on these {result.episodes} paths.",
            "",
            _markdown_table(result, diff_metrics, {n: result.paired[n] for n in others}, False),
        ]
    parts += [
        "",
        "## Plots",
        "",
        "![P&L distributions](pnl_distribution.png)",
        "",
        "![Slippage vs volatility amplification](slippage_vs_amplification.png)",
        "",
        f"![Sample paths under {result.best.get(OBJECTIVE, result.reference)}](sample_paths.png)",
        "",
        "## Definitions",
        "",
    ]
    parts += [f"- `{k}` ({s.unit or '-'}): {s.description}" for k, s in M.METRICS.items() if k in present]
    parts += ["", "Per-episode values: `episodes.csv`; all numbers: `metrics.json`; the scenario: `config.yaml`.", ""]
    return "\n".join(parts)
