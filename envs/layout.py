"""Layout of the simulator's arrays: named records and columns, so no magic numbers leave this file.

The market of N envs is a set of arrays, one row (or record) per env:

* ``state[N]`` of ``STATE_DTYPE`` — one record per env, the fields of ``STATE`` below;
* ``hedge[N, 3]`` float64 — the agent's position per venue (``SPOT``, ``PERP``, ``FUTURE``): coins
  for spot and perp, contracts for the future (a contract's delta is ``exp(r (T_f - t))`` coins);
* ``keys[N]`` uint64 — the episode's random key (from seed and episode index);
* ``out[N, OUT_WIDTH]`` float64 — what the last step booked, the ``O_*`` columns;
* ``ext[N]`` of ``EXT_DTYPE`` — one record per env, the second-order market's measures and state
  (the fields of ``EXT`` below; zeros with every second-order feature off).

Constant inputs shared by all rows: ``params`` (one record of ``PARAMS_DTYPE``, shape (1,)), ``venues[3, VENUE_WIDTH]``
(``V_*``), and two option books ``lines[L, LINE_WIDTH]`` (``L_*``), the dealers' and the agent's.
"""

from __future__ import annotations

import numpy as np

# Venues (rows of `venues`, columns of `hedge` and of the trades input).
SPOT, PERP, FUTURE = 0, 1, 2
N_VENUES = 3

# Option line columns. ``L_EXPIRY_STEP`` is the step at which the line settles, the first whose time
# ``k dt`` reaches ``L_EXPIRY`` (years): decided once, in integers, so no line settles twice.
L_STRIKE, L_EXPIRY, L_IS_CALL, L_QUANTITY, L_EXPIRY_STEP = 0, 1, 2, 3, 4
LINE_WIDTH = 5
# The values of the flag columns L_IS_CALL and V_ENABLED.
CALL, PUT = 1.0, 0.0
ENABLED, DISABLED = 1.0, 0.0

# Venue columns. Depth is stored inverted so that an infinitely deep venue (no impact) is 0.
(V_FEE, V_HALF_SPREAD, V_INV_DEPTH, V_ETA, V_TRANSMISSION, V_MARGIN, V_ENABLED) = range(7)
VENUE_WIDTH = 7

# Sizes of the second-order market's tables: dealer cohorts, the longest reaction lag (steps) a cohort
# may have, buckets of leveraged positions per side, lags of the return autocorrelation measured.
MAX_COHORTS = 8
MAX_LAG = 24
MAX_BUCKETS = 256
N_AUTOCORR_LAGS = 4

# The kernel's scalar parameters: one record of a numpy structured dtype, read as ``p.sigma`` inside
# the kernels (times in years, rates per year). Each entry is (name, numpy type, source): the dotted
# path of the validated ScenarioConfig field it is copied from, or None where
# ``hedgegym.envs.market.DERIVED_PARAMS`` computes it (unit conversions, aggregates). A new market
# parameter is one config field and one line here.
PARAMS = (
    ("dt", "f8", None),
    ("mu", "f8", "market.mu"),
    ("sigma", "f8", "market.sigma"),
    ("rate", "f8", "market.rate"),
    ("spot0", "f8", "market.spot0"),
    ("heston", "?", "market.heston.enabled"),
    ("kappa_v", "f8", "market.heston.kappa_v"),
    ("theta_v", "f8", "market.heston.theta_v"),
    ("xi", "f8", "market.heston.xi"),
    ("rho_sv", "f8", "market.heston.rho_sv"),
    ("v0", "f8", None),
    ("jumps", "?", "market.jumps.enabled"),
    ("jump_intensity", "f8", "market.jumps.intensity"),
    ("jump_mean", "f8", "market.jumps.mean"),
    ("jump_std", "f8", "market.jumps.std"),
    ("permanent_share", "f8", "market.impact.permanent_share"),
    ("phi_floor", "f8", "market.impact.phi_floor"),
    ("newton_iterations", "i8", "market.impact.newton_iterations"),
    ("breaker", "?", "market.impact.circuit_breaker.enabled"),
    ("halt_threshold", "f8", "market.impact.circuit_breaker.halt_threshold"),
    ("halt_steps", "i8", "market.impact.circuit_breaker.halt_steps"),
    ("skew", "f8", "market.smile.skew"),
    ("smile", "f8", "market.smile.smile"),
    ("vol_premium", "f8", "market.smile.vol_premium"),
    ("vol_floor", "f8", "market.smile.vol_floor"),
    ("hedge_ratio", "f8", "dealers.hedge_ratio"),
    ("mix_perp", "f8", "dealers.venue_mix.perp"),
    ("mix_future", "f8", "dealers.venue_mix.future"),
    ("dealer_inv_depth", "f8", None),
    ("rebalance_every", "i8", "dealers.rebalance_every"),
    ("premium_speed", "f8", "venues.perp.premium_speed"),
    ("funding_interval", "f8", None),
    ("interest", "f8", "venues.perp.interest"),
    ("funding_cap", "f8", "venues.perp.funding_cap"),
    ("future_expiry", "f8", None),
    ("future_roll", "f8", None),
    ("basis_mean", "f8", "venues.future.basis_mean"),
    ("basis_speed", "f8", "venues.future.basis_speed"),
    ("cost_of_capital", "f8", "agent.funding_cost_of_capital"),
    ("episode_steps", "i8", None),
    ("terminates", "?", None),
    ("agent_impact", "?", None),
    ("reward_mode", "i8", None),
    ("risk_aversion", "f8", "agent.risk_aversion"),
    ("pnl_scale", "f8", None),
    # The episode mean-variance reward's reference P&L (USD): the running mean of finished episodes'
    # P&L, kept by ``Market.step``; ``reward_reference_set`` is False until one has finished.
    ("reward_reference", "f8", None),
    ("reward_reference_set", "?", None),
    ("book_gross", "f8", None),
    ("book_centre", "f8", None),
    ("initial_delta_hedge", "?", None),
    # Constants of the step, computed once (see DERIVED_PARAMS for their formulas).
    ("log_spot0", "f8", None),
    ("resilience_decay", "f8", None),
    ("premium_decay", "f8", None),
    ("premium_sd", "f8", None),
    ("basis_decay", "f8", None),
    ("basis_sd", "f8", None),
    ("rate_growth", "f8", None),
    ("realised_var_weight", "f8", None),
    # The second-order market (README "The market model"): each part opt-in, off by default. With every
    # flag off the kernel runs the first-order step exactly as before (none of the fields below is read).
    ("second_order", "?", None),
    ("iv_dynamics", "?", "market.implied_vol.enabled"),
    ("iv_beta", "f8", "market.implied_vol.spot_beta"),
    ("iv_kappa", "f8", "market.implied_vol.kappa"),
    ("iv_realised_weight", "f8", "market.implied_vol.realised_weight"),
    ("iv_vol_of_vol", "f8", "market.implied_vol.vol_of_vol"),
    ("iv_cap", "f8", "market.implied_vol.vol_cap"),
    ("cohorts_on", "?", None),
    ("n_cohorts", "i8", None),
    ("cohort_share", f"({MAX_COHORTS},)f8", None),
    ("cohort_hedge_ratio", f"({MAX_COHORTS},)f8", None),
    ("cohort_band", f"({MAX_COHORTS},)f8", None),
    ("cohort_every", f"({MAX_COHORTS},)i8", None),
    ("cohort_offset", f"({MAX_COHORTS},)i8", None),
    ("cohort_lag", f"({MAX_COHORTS},)i8", None),
    ("cohort_inv_depth", f"({MAX_COHORTS},)f8", None),
    ("cohort_mix_perp", f"({MAX_COHORTS},)f8", None),
    ("cohort_mix_future", f"({MAX_COHORTS},)f8", None),
    ("dealer_hedge_ratio_eff", "f8", None),
    ("dealer_inv_depth_eff", "f8", None),
    ("dealer_gross", "f8", None),
    ("liquidations", "?", None),
    ("liq_maintenance", "f8", "venues.perp.liquidations.maintenance_margin"),
    ("liq_fund0", "f8", "venues.perp.liquidations.insurance_fund_usd"),
    ("liq_n_long", "i8", None),
    ("liq_n_short", "i8", None),
    # Buckets of leveraged positions, each side sorted in the order the price reaches them (longs by
    # liquidation price descending, shorts ascending): liquidation price, coins, entry notional
    # (coins x entry price), margin (USD), and the coins of that bucket and all after it.
    ("liq_long_price", f"({MAX_BUCKETS},)f8", None),
    ("liq_long_coins", f"({MAX_BUCKETS},)f8", None),
    ("liq_long_cost", f"({MAX_BUCKETS},)f8", None),
    ("liq_long_margin", f"({MAX_BUCKETS},)f8", None),
    ("liq_long_tail", f"({MAX_BUCKETS},)f8", None),
    ("liq_short_price", f"({MAX_BUCKETS},)f8", None),
    ("liq_short_coins", f"({MAX_BUCKETS},)f8", None),
    ("liq_short_cost", f"({MAX_BUCKETS},)f8", None),
    ("liq_short_margin", f"({MAX_BUCKETS},)f8", None),
    ("liq_short_tail", f"({MAX_BUCKETS},)f8", None),
)
PARAMS_DTYPE = np.dtype([(name, kind) for name, kind, _ in PARAMS], align=True)

REWARD_MEAN_VARIANCE, REWARD_PNL, REWARD_TERMINAL_PNL, REWARD_EPISODE_MEAN_VARIANCE = 0, 1, 2, 3
# Episodes in the running mean of ``reward_reference`` (a plain mean until then, an EMA after).
REWARD_REFERENCE_EPISODES = 256

# The per-env state: one record per env (row) of ``STATE_DTYPE``, float64 fields read as
# ``state[i].log_spot`` in the kernels and ``market.state["log_spot"]`` (a view, one value per env)
# in Python. (name, meaning): add a field here and the kernel can use it.
STATE = (
    ("t", "time, years: step * dt, set from the step index, never summed"),
    ("step", "steps taken in the episode"),
    ("x", "exogenous (fundamental) log-price X"),
    ("v", "variance (Heston; sigma^2 otherwise)"),
    ("i_perm", "permanent impact in log-price"),
    ("i_trans", "transient impact in log-price, decaying at the resilience"),
    ("log_spot", "spot log-price s = X + i_perm + i_trans"),
    ("spot", "spot price exp(log_spot), USD: written with log_spot, so a step reads it instead of an exp"),
    ("premium", "perp premium over spot (fraction)"),
    ("basis", "futures basis over r, per year"),
    ("future_expiry", "expiry of the listed future, years"),
    ("dealer_hedge", "the dealers' hedge position H_D, coins"),
    ("dealer_hold", "the part of H_D hedging lines that settle at step dealer_hold_step"),
    ("dealer_hold_step", "the step of that settlement (the dealers' next rebalance)"),
    ("dealer_unwind", "the expired lines' hedge the dealers still have to trade away, coins"),
    ("halt_left", "steps of circuit-breaker halt left"),
    ("funding_rate", "funding rate of the current interval"),
    ("book_value", "mark of the agent's live lines, USD"),
    ("book_delta", "the book's delta, coins"),
    ("book_gamma", "the book's gamma, coins per USD"),
    ("book_vanna", "the book's vanna (d delta / d sigma)"),
    ("book_charm", "the book's charm (d delta / d t, per year)"),
    ("cash", "the agent's cash account (premiums, spot proceeds, margin flows, payoffs), USD"),
    ("atm_vol", "ATM implied vol"),
    ("phi", "dealer feedback phi of the last step"),
    ("gex", "dealer GEX, USD per 1 % move"),
    ("crisis", "1 if the last step was a liquidity crisis"),
    ("last_return", "the last step's spot log-return"),
    ("realised_var", "EWMA of r^2 / dt (one-day time constant)"),
    ("cum_pnl", "episode P&L so far, USD"),
    ("cum_book_pnl", "its book part"),
    ("cum_hedge_pnl", "its hedge part"),
    ("cum_fees", "fees paid"),
    ("cum_slippage", "slippage paid"),
    ("cum_funding", "funding paid"),
    ("cum_carry", "carry of margin capital paid"),
    ("cum_interest", "interest earned on cash"),
    ("turnover_usd", "traded notional at mid"),
    ("n_trades", "orders sent (one per venue and step)"),
    ("sum_r2", "sum of squared spot log-returns"),
    ("sum_x2", "sum of squared exogenous log-returns"),
    ("sum_phi", "sum of phi over steps"),
    ("crisis_steps", "liquidity-crisis steps"),
    ("halt_steps", "halted steps"),
    ("cum_reward", "sum of rewards"),
)
STATE_DTYPE = np.dtype([(name, "f8") for name, _ in STATE])

# Per-step outputs.
(
    O_PNL,
    O_BOOK_PNL,
    O_HEDGE_PNL,
    O_FEES,
    O_SLIPPAGE,
    O_FUNDING,
    O_CARRY,
    O_REWARD,
    O_PHI,
    O_GEX,
    O_CRISIS,
    O_HALTED,
    O_NOTIONAL,
    O_SPOT,
    O_EXO_SPOT,
    O_TERMINATED,
    O_TRUNCATED,
    O_DEALER_FLOW,
    O_RETURN,
    O_EXO_RETURN,
    O_TRADE_SPOT,
    O_TRADE_PERP,
    O_TRADE_FUTURE,
    O_INTEREST,
) = range(24)
OUT_WIDTH = 24

# The second-order market's per-env state: one record per env (row) of ``EXT_DTYPE``, float64 fields
# (some of them small arrays: rings and per-cohort tables), read as ``ext[i].fund`` and
# ``ext[i].ret_ring[k]`` in the kernels and ``market.ext["fund"]`` (a view, one value per env) in
# Python. All zeros when every second-order feature is off: the kernel then never reads or writes it.
# (name, shape, meaning): the last step's measures (read into ``info``, see ``EXT_INFO``), the
# episode's accumulators (``Market.episode_metrics``, see ``EXT_METRICS``), and the state of the
# cohorts and of the liquidation engine. Add a field here and the kernel can use it.
EXT = (
    # The last step: dealer hedge flow (coins) split into the gamma, vanna and charm parts of the
    # continuously hedged demand, and the rest (schedules, bands, lags, expiries, higher orders).
    ("flow_gamma", (), "the dealers' flow of the last step, its gamma part, coins"),
    ("flow_vanna", (), "its vanna part (the ATM vol's move), coins"),
    ("flow_charm", (), "its charm part (time), coins"),
    ("flow_other", (), "the rest (schedules, bands, lags, expiries, higher orders), coins"),
    ("phi_vanna", (), "the vanna feedback psi of the last step"),
    ("crowded", (), "1 if two or more dealer cohorts traded in the same direction in the last step"),
    ("liq_long_usd", (), "leveraged longs liquidated in the last step, USD at the mark"),
    ("liq_short_usd", (), "leveraged shorts liquidated in the last step, USD at the mark"),
    ("liq_rounds", (), "liquidation rounds in the last step"),
    ("adl_events_step", (), "auto-deleveraging events in the last step"),
    # The dealers' book at the end of the last step.
    ("d_gamma", (), "the dealers' book gamma"),
    ("d_vanna_vol", (), "sum of quantity x vanna x line vol (delta per unit of ln sigma_atm)"),
    ("d_charm", (), "the dealers' book charm, per year"),
    # Episode accumulators.
    ("sum_flow_gamma_usd", (), "sum over steps of |flow_gamma| x spot, USD"),
    ("sum_flow_vanna_usd", (), "sum over steps of |flow_vanna| x spot, USD"),
    ("sum_flow_charm_usd", (), "sum over steps of |flow_charm| x spot, USD"),
    ("sum_flow_other_usd", (), "sum over steps of |flow_other| x spot, USD"),
    ("sum_phi_vanna", (), "sum of psi over steps"),
    ("crowded_steps", (), "crowded steps"),
    ("cohort_trade_steps", (), "steps on which some dealer cohort traded"),
    ("sum_liq_long_usd", (), "longs liquidated in the episode, USD"),
    ("sum_liq_short_usd", (), "shorts liquidated in the episode, USD"),
    ("liq_steps", (), "steps with a liquidation"),
    ("max_rounds", (), "most liquidation rounds in one step"),
    ("run", (), "consecutive steps with liquidations up to the last step"),
    ("max_run", (), "longest such run"),
    ("adl_events", (), "auto-deleveraging events in the episode"),
    ("adl_usd", (), "notional closed by auto-deleveraging, USD"),
    ("max_atm_vol", (), "highest ATM implied vol of the episode"),
    # Liquidation engine state.
    ("next_long", (), "the next bucket of leveraged longs (index into params' liq_long_*)"),
    ("next_short", (), "the next bucket of leveraged shorts"),
    ("scale_long", (), "the share of the longs' remaining positions left after auto-deleveraging"),
    ("scale_short", (), "the same for the shorts"),
    ("fund", (), "the insurance fund, USD"),
    # Rings and per-cohort tables.
    ("ret_ring", (N_AUTOCORR_LAGS,), "the last N_AUTOCORR_LAGS spot log-returns, at step % N_AUTOCORR_LAGS"),
    ("sum_rr", (N_AUTOCORR_LAGS,), "sum of r_k r_(k-l), l = 1..N_AUTOCORR_LAGS (entry l - 1)"),
    ("cohort_hedge", (MAX_COHORTS,), "each dealer cohort's hedge, coins"),
    ("delta_ring", (MAX_LAG + 1,), "the dealers' book delta at step s, at s % (MAX_LAG + 1)"),
)
EXT_DTYPE = np.dtype([(name, "f8", shape) for name, shape, _ in EXT])

# The second-order per-step info (``HedgingEnv`` / ``HedgingVectorEnv``, where the scenario turns a
# second-order feature on; plus ``atm_vol`` from the state): (info key, ``EXT`` field).
EXT_INFO = (
    ("flow_gamma", "flow_gamma"),
    ("flow_vanna", "flow_vanna"),
    ("flow_charm", "flow_charm"),
    ("flow_other", "flow_other"),
    ("phi_vanna", "phi_vanna"),
    ("crowded", "crowded"),
    ("liquidated_long_usd", "liq_long_usd"),
    ("liquidated_short_usd", "liq_short_usd"),
    ("cascade_rounds", "liq_rounds"),
    ("adl_events", "adl_events_step"),
    ("insurance_fund_usd", "fund"),
)
# The keys ``Market.episode_metrics`` adds where a second-order feature is on: (key, ``EXT`` field,
# entry of an array field or None, divisor, meaning). Divisor None: the field as it is; ``"steps"``:
# per step taken; a ``STATE`` field (``"sum_r2"``): over it, 0 where it is 0.
EXT_METRICS = (
    (
        "flow_gamma_usd",
        "sum_flow_gamma_usd",
        None,
        None,
        "dealer hedge flow's gamma part, sum over steps of |coins| x spot, USD",
    ),
    ("flow_vanna_usd", "sum_flow_vanna_usd", None, None, "its vanna part (the ATM vol's move), USD"),
    ("flow_charm_usd", "sum_flow_charm_usd", None, None, "its charm part (time), USD"),
    (
        "flow_other_usd",
        "sum_flow_other_usd",
        None,
        None,
        "the rest of the dealers' flow (schedules, bands, lags, expiries, higher orders), USD",
    ),
    (
        "mean_phi_vanna",
        "sum_phi_vanna",
        None,
        "steps",
        "mean vanna feedback psi = 0.01 hr S beta sum(q vanna vol) / D_eff",
    ),
    ("max_atm_vol", "max_atm_vol", None, None, "highest ATM implied vol of the episode"),
    (
        "crowding",
        "crowded_steps",
        None,
        "steps",
        "share of steps on which two or more dealer cohorts traded in the same direction",
    ),
    ("cohort_trade_share", "cohort_trade_steps", None, "steps", "share of steps on which some dealer cohort traded"),
    *(
        (
            f"return_autocorr_{lag}",
            "sum_rr",
            lag - 1,
            "sum_r2",
            f"sum of r_k r_(k-{lag}) / sum of r_k^2 (spot log-returns)",
        )
        for lag in range(1, N_AUTOCORR_LAGS + 1)
    ),
    ("liquidated_long_usd", "sum_liq_long_usd", None, None, "leveraged longs liquidated on the perp, USD at the mark"),
    ("liquidated_short_usd", "sum_liq_short_usd", None, None, "leveraged shorts liquidated, USD"),
    ("liquidation_steps", "liq_steps", None, None, "steps with a liquidation"),
    (
        "max_cascade_rounds",
        "max_rounds",
        None,
        None,
        "most liquidation rounds in one step (each set off by the one before)",
    ),
    ("max_cascade_steps", "max_run", None, None, "longest run of consecutive steps with liquidations"),
    ("insurance_fund_usd", "fund", None, None, "the insurance fund at the episode's end, USD"),
    ("adl_events", "adl_events", None, None, "auto-deleveraging events (the fund could not cover a bankrupt position)"),
    ("adl_usd", "adl_usd", None, None, "notional closed by auto-deleveraging, USD"),
)

# The observation vector (float32), entry by entry: (name, unit, meaning, range). ``unit`` is the
# constant the kernel scales that entry with (None where the scale is per env: sigma, the horizon, the
# book's gross quantity); ``meaning`` names it as ``{unit}``. The observation (kernel.observe_row), the
# HedgingEnv docstring and README's table are all generated from this list.
OBS_BOUND = 50.0
OBSERVATION = (
    ("time_to_expiry", None, "steps left / episode steps", "[0, 1]"),
    ("log_moneyness", None, "ln(S / book's centre strike) / (sigma sqrt(horizon))", "~ N(0, 1)"),
    ("book_delta", None, "book delta (coins) / gross", "[-1, 1]"),
    ("book_gamma", 0.01, "book gamma * S * {unit} (delta change per 1 % move) / gross", "~ [-1, 1]"),
    ("book_vanna", 0.1, "book vanna * {unit} (delta change per 10 vol points) / gross", "~ [-1, 1]"),
    ("book_charm", None, "book charm * dt (delta change over one step) / gross", "~ [-1, 1]"),
    ("hedge_spot", None, "spot position (coins) / gross", "[-50, 50]"),
    ("hedge_perp", None, "perp position (coins) / gross", "[-50, 50]"),
    ("hedge_future", None, "futures position in delta coins / gross", "[-50, 50]"),
    ("net_delta", None, "(book delta + hedge deltas) / gross", "[-50, 50]"),
    ("last_return", None, "last spot log-return / (sigma sqrt(dt))", "~ N(0, 1)"),
    ("realised_vol", None, "EWMA (1 day) realised vol / sigma", "~ 1"),
    ("atm_vol", None, "ATM implied vol / sigma", "~ 1"),
    ("perp_premium", 0.001, "perp premium / {unit} (10 bp)", "~ [-5, 5]"),
    ("funding_rate", 0.0001, "funding rate per interval / {unit} (1 bp)", "[-50, 50] (clipped)"),
    ("futures_basis", 0.1, "annualised basis / {unit}", "~ [-5, 5]"),
    ("phi", None, "dealer GEX / dealer depth (phi), as is", "~ [-1, 1]"),
    ("liquidity_crisis", None, "1 if the last step had no admissible clearing root, else 0", "{0, 1}"),
    ("halted", None, "1 while the circuit breaker halts trading, else 0", "{0, 1}"),
    ("pnl_to_date", None, "episode P&L so far / (10 pnl_scale)", "~ [-1, 1]"),
)
OBS_NAMES = tuple(name for name, _, _, _ in OBSERVATION)
OBS_DIM = len(OBS_NAMES)
OBS_UNIT = {name: unit for name, unit, _, _ in OBSERVATION if unit is not None}


def observation_table(style: str = "rst") -> str:
    """The observation table, as reStructuredText (docstrings) or Markdown (README).

    >>> print(observation_table("markdown").splitlines()[2])
    | 0 | `time_to_expiry` | steps left / episode steps | [0, 1] |
    """
    rows = [
        (str(j), name, meaning.format(unit=f"{unit:g}" if unit is not None else ""), rng)
        for j, (name, unit, meaning, rng) in enumerate(OBSERVATION)
    ]
    if style == "markdown":
        lines = ["| idx | name | meaning and scale | range |", "|---:|---|---|---|"]
        return "\n".join(lines + [f"| {j} | `{n}` | {m} | {r} |" for j, n, m, r in rows])
    if style != "rst":
        raise ValueError(f"style must be 'rst' or 'markdown' (got {style!r})")
    header = ("idx", "name", "meaning and scale", "range")
    widths = [max(len(col), *(len(row[c]) for row in rows)) for c, col in enumerate(header)]
    rule = "  ".join("=" * w for w in widths)
    head = "  ".join(col.ljust(w) for col, w in zip(header, widths, strict=True))
    body = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    return "\n".join([rule, head.rstrip(), rule, *body, rule])
