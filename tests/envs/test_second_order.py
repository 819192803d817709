"""The second-order market (README "The market model"): implied-vol dynamics (vanna), dealer cohorts,
the perp's liquidation engine. The four checks of issue 13:

1. vanna: with the agent inactive, all impact permanent and a constant spot-vol beta, each step's
   return is the exogenous one over ``1 + phi + psi`` and the volatility amplification matches the
   first-order law with the vanna term within Monte-Carlo error; short puts with beta < 0 amplify
   beyond the gamma-only law. The law's phi and psi are computed here from the BSM greeks of the
   path's spot and ATM vol (``bsm_greeks``), not from the kernel's clearing;
2. cohorts: lagged short-gamma hedging gives positive return autocorrelation at the lag, none
   without a lag;
3. liquidations: liquidated notional and volatility amplification rise with leverage and with the
   dealers' short gamma;
4. no leveraged open interest, or features off: the market is today's bit for bit.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from hedgegym.envs.config import ConfigError, apply_overrides, load_scenario, validate_config
from hedgegym.envs.greeks import bsm_greeks
from hedgegym.envs.layout import (
    O_DEALER_FLOW,
    O_EXO_RETURN,
    O_RETURN,
)
from hedgegym.envs.market import SECOND_ORDER_METRICS, Market, dealer_effective_depth, liquidation_buckets

SPOT = 100_000.0


def run_market(config, n: int, seed0: int = 0):
    """Step ``n`` paths with the agent inactive; returns (market, returns, exogenous returns, spots
    before each step, ATM vols before each step), arrays [n, steps]."""
    market = Market(config, n_envs=n, parallel=False)
    market.reset(seeds=np.arange(seed0, seed0 + n))
    steps = market.episode_steps
    r, x = np.empty((n, steps)), np.empty((n, steps))
    spot, vol = np.empty((n, steps)), np.empty((n, steps))
    for k in range(steps):
        spot[:, k], vol[:, k] = market.spot, market.state["atm_vol"]
        out = market.step()
        r[:, k], x[:, k] = out[:, O_RETURN], out[:, O_EXO_RETURN]
        assert np.all(np.isfinite(out)) and np.all(np.isfinite(market.ext.view(np.float64)))
    return market, r, x, spot, vol


# ------------------------------------------------------------------------------------------ vanna
VANNA_STRIKE, VANNA_DAYS = 0.9 * SPOT, 30.0


def vanna_scenario(beta: float, phi: float = -0.2):
    """Dealers short one 30-day put 10 % out of the money, sized for ``phi`` at the start; flat smile,
    constant variance, all impact permanent; the ATM vol moves only with spot (kappa = vol of vol = 0)."""
    base = load_scenario(
        "default",
        {
            "market.smile.skew": 0.0,
            "market.smile.smile": 0.0,
            "market.impact.permanent_share": 1.0,
            "market.implied_vol": {"enabled": True, "spot_beta": beta, "kappa": 0.0, "vol_of_vol": 0.0},
        },
    )
    vol = base.market.sigma * (1.0 + base.market.smile.vol_premium)
    gamma = float(bsm_greeks(SPOT, VANNA_STRIKE, VANNA_DAYS / 365.0, 0.0, vol, False).gamma)
    quantity = phi * dealer_effective_depth(base) / (0.01 * base.dealers.hedge_ratio * gamma * SPOT**2)
    line = {"strike": VANNA_STRIKE, "expiry_days": VANNA_DAYS, "kind": "put", "quantity": quantity}
    return validate_config(apply_overrides(base, {"dealers.lines": [line]}))


def first_order_feedback(config, spot, vol):
    """(phi, psi) of each step from the greeks at its start: phi = 0.01 hr q Gamma S^2 / D_eff and
    psi = 0.01 hr S beta q vanna sigma / D_eff (README: d Delta / d ln S = Gamma S + vanna d sigma / d ln S
    with d sigma / d ln S = beta sigma)."""
    (line,) = config.dealers.lines
    steps = spot.shape[1]
    tau = (line.expiry_days / 365.0) - np.arange(steps) * config.episode.dt
    g = bsm_greeks(spot, line.strike, tau[None, :], config.market.rate, vol, False)
    scale = 0.01 * config.dealers.hedge_ratio / dealer_effective_depth(config) * line.quantity
    phi = scale * g.gamma * spot**2
    psi = scale * spot * config.market.implied_vol.spot_beta * g.vanna * vol
    return phi, psi


def test_each_step_return_is_the_exogenous_return_over_one_plus_phi_plus_psi():
    cfg = vanna_scenario(-4.0)
    _, r, x, spot, vol = run_market(cfg, 32)
    phi, psi = first_order_feedback(cfg, spot, vol)
    assert np.median(np.abs(psi / phi)) > 0.2  # the vanna term is a sizeable part of the feedback
    second_order = x**2 + cfg.market.sigma**2 * cfg.episode.dt
    with_vanna = np.abs(r * (1.0 + phi + psi) - x) / second_order
    assert np.max(with_vanna) < 2.5
    # Without the vanna term the first-order relation fails: the check can see it.
    without = np.abs(r * (1.0 + phi) - x) / second_order
    assert np.median(without) > 5.0 * np.median(with_vanna) and np.max(without) > 2.0 * np.max(with_vanna)


def test_volatility_amplification_matches_the_first_order_law_with_the_vanna_term():
    cfg = vanna_scenario(-4.0)
    n = 300
    _, r, x, spot, vol = run_market(cfg, n)
    phi, psi = first_order_feedback(cfg, spot, vol)
    r2, x2 = (r**2).sum(axis=1), (x**2).sum(axis=1)
    law2 = (x**2 / (1.0 + phi + psi) ** 2).sum(axis=1)
    amplification = math.sqrt(r2.sum() / x2.sum())
    predicted = math.sqrt(law2.sum() / x2.sum())
    # Monte-Carlo error of the difference, paired over paths (delta method on sums of ratios).
    se = math.sqrt(((r2 - law2) ** 2).sum()) / x2.sum() / (2.0 * amplification)
    assert abs(amplification - predicted) < 4.0 * se + 1e-3
    # Short puts, beta < 0: the vanna term adds to the gamma feedback, beyond the gamma-only law.
    gamma_only = math.sqrt(((x**2 / (1.0 + phi) ** 2).sum(axis=1)).sum() / x2.sum())
    se_amp = math.sqrt(((r2 - amplification**2 * x2) ** 2).sum()) / x2.sum() / (2.0 * amplification)
    assert amplification > gamma_only + 4.0 * se_amp
    assert amplification > 1.0 / (1.0 + phi.mean()) + 4.0 * se_amp


def test_vanna_feedback_reported_is_the_first_order_psi():
    cfg = vanna_scenario(-4.0)
    market, _, _, spot, vol = run_market(cfg, 8)
    _, psi = first_order_feedback(cfg, spot, vol)
    # ext's psi is at each step's close: the next step's start.
    mean_psi = market.episode_metrics()["mean_phi_vanna"]
    assert np.allclose(mean_psi, np.concatenate([psi[:, 1:], psi[:, -1:]], axis=1).mean(axis=1), rtol=0.02)


def test_flow_decomposition_adds_up_and_the_vanna_part_is_there():
    cfg = vanna_scenario(-4.0)
    market = Market(cfg, n_envs=4, parallel=False)
    market.reset(seeds=np.arange(4))
    flows, parts = [], []
    for _ in range(48):
        out = market.step()
        flows.append(out[:, O_DEALER_FLOW].copy())
        parts.append(
            np.stack([market.ext[f] for f in ("flow_gamma", "flow_vanna", "flow_charm", "flow_other")], axis=1)
        )
    flows, parts = np.array(flows), np.array(parts)
    assert np.allclose(parts.sum(axis=2), flows, rtol=1e-12, atol=1e-9)
    # A continuously hedging block: the three parts are the flow up to second order.
    assert np.abs(parts[..., 3]).sum() < 0.1 * np.abs(flows).sum()
    assert np.abs(parts[..., 1]).sum() > 0.1 * np.abs(parts[..., 0]).sum()
    m = market.episode_metrics()
    assert set(SECOND_ORDER_METRICS) <= set(m)


# ------------------------------------------------------------------------------------------ cohorts
def straddle_scenario(phi: float, **overrides):
    """Dealers hold a one-year at-the-money straddle sized for ``phi``; flat smile; permanent impact."""
    base = load_scenario(
        "default",
        {"market.smile.skew": 0.0, "market.smile.smile": 0.0, "market.impact.permanent_share": 1.0, **overrides},
    )
    vol = base.market.sigma * (1.0 + base.market.smile.vol_premium)
    gamma = float(bsm_greeks(SPOT, SPOT, 1.0, 0.0, vol, True).gamma)
    quantity = phi * dealer_effective_depth(base) / (0.01 * base.dealers.hedge_ratio * 2.0 * gamma * SPOT**2)
    lines = [{"strike": SPOT, "expiry_days": 365.0, "kind": kind, "quantity": quantity} for kind in ("call", "put")]
    return validate_config(apply_overrides(base, {"dealers.lines": lines}))


@pytest.mark.parametrize("lag", [0, 2])
def test_lagged_short_gamma_hedging_gives_positive_autocorrelation_at_the_lag(lag):
    cfg = straddle_scenario(-0.3, **{"dealers.cohorts": [{"share": 1.0, "lag": lag}]})
    n = 200
    market, r, _, _, _ = run_market(cfg, n)
    m = market.episode_metrics()
    # The kernel's measure is the sum of r_k r_(k-l) over the sum of r_k^2: recomputed from the returns.
    for ell in (1, 2, 3):
        expected = (r[:, ell:] * r[:, :-ell]).sum(axis=1) / (r**2).sum(axis=1)
        assert np.allclose(m[f"return_autocorr_{ell}"], expected, rtol=1e-9, atol=1e-12)
    pooled = {ell: (r[:, ell:] * r[:, :-ell]).sum() / (r**2).sum() for ell in (1, 2, 3)}
    se = 1.0 / math.sqrt(r.size)  # the autocorrelation's standard error under no correlation
    if lag == 0:
        assert all(abs(v) < 4.0 * se for v in pooled.values())
    else:
        # r_k ~ x_k - phi r_(k-lag): the coefficient at the lag is about -phi = 0.3.
        assert pooled[lag] > 0.2 and pooled[lag] > 10.0 * se
        assert abs(pooled[1]) < 4.0 * se


def test_one_cohort_with_the_blocks_settings_is_the_uniform_block():
    base = load_scenario("default", {"market.implied_vol.enabled": True})
    one = apply_overrides(base, {"dealers.cohorts": [{"share": 1.0, "venue_mix": base.dealers.venue_mix.model_dump()}]})
    a, ra, _, _, _ = run_market(base, 16)
    b, rb, _, _, _ = run_market(validate_config(one), 16)
    # The same market up to rounding (the cohorts' clearing sums the same flow in another order).
    assert np.allclose(ra, rb, rtol=1e-9, atol=1e-12)
    assert np.allclose(a.state["dealer_hedge"], b.state["dealer_hedge"], rtol=1e-9)


def test_crowding_counts_cohorts_trading_together():
    # Three cohorts on one schedule trade together every 4th step; staggered, never on the same step.
    shared = [
        {"share": 0.4, "rebalance_every": 4},
        {"share": 0.3, "rebalance_every": 4},
        {"share": 0.3, "rebalance_every": 4},
    ]
    staggered = [dict(c, offset=j) for j, c in enumerate(shared)]
    crowd = {}
    for name, cohorts in (("shared", shared), ("staggered", staggered)):
        market, _, _, _, _ = run_market(load_scenario("default", {"dealers.cohorts": cohorts}), 8)
        m = market.episode_metrics()
        crowd[name] = m["crowding"]
        trade_share = m["cohort_trade_share"]
    assert np.all(crowd["shared"] > 0.2) and np.all(crowd["shared"] <= 0.25)
    assert np.all(crowd["staggered"] == 0.0)
    assert np.all(trade_share == 0.75)


def test_cohort_config_errors_name_the_field():
    with pytest.raises(ConfigError, match="cohort shares must sum to 1"):
        load_scenario("default", {"dealers.cohorts": [{"share": 0.5}]})
    with pytest.raises(ConfigError, match="offset=4 must be < rebalance_every=4"):
        load_scenario("default", {"dealers.cohorts": [{"share": 1.0, "rebalance_every": 4, "offset": 4}]})
    with pytest.raises(ConfigError, match="dealers.cohorts.0.lag"):
        load_scenario("default", {"dealers.cohorts": [{"share": 1.0, "lag": 99}]})


# ------------------------------------------------------------------------------------------ liquidations
def cascade_scenario(leverage: float, dealer_scale: float, **overrides):
    base = load_scenario(
        "default",
        {
            # A fall: -2.7 % a day of drift and two jumps of -3 % a day on average, against 3 % of daily vol.
            "market.mu": -10.0,
            "market.jumps": {"enabled": True, "intensity": 730.0, "mean": -0.03, "std": 0.02},
            "episode.horizon_days": 1.0,
            "venues.perp.liquidations": {
                "enabled": True,
                "long_oi_usd": 3.0e9,
                "short_oi_usd": 1.0e9,
                "leverage": leverage,
                "leverage_dispersion": 0.3,
                "entry_dispersion": 0.02,
                "insurance_fund_usd": 1.0e8,
            },
            **overrides,
        },
    )
    lines = [dict(line.model_dump(), quantity=line.quantity * dealer_scale) for line in base.dealers.lines]
    return validate_config(apply_overrides(base, {"dealers.lines": lines}))


def _cascade(leverage, dealer_scale, n=200):
    market, r, x, _, _ = run_market(cascade_scenario(leverage, dealer_scale), n)
    m = market.episode_metrics()
    return m["liquidated_long_usd"].mean() + m["liquidated_short_usd"].mean(), math.sqrt((r**2).sum() / (x**2).sum()), m


def test_liquidations_and_amplification_rise_with_leverage_and_dealers_short_gamma():
    # Up to where the side's open interest runs out (at 20x a day's fall liquidates ~93 % of the
    # longs at 10x's amplification: the engine has nothing left to sell).
    by_leverage = [_cascade(lev, 1.0) for lev in (3.0, 5.0, 10.0)]
    by_gamma = [_cascade(5.0, scale) for scale in (0.0, 1.0, 2.0)]
    for series in (by_leverage, by_gamma):
        liquidated = [s[0] for s in series]
        amplification = [s[1] for s in series]
        assert liquidated[0] < liquidated[1] < liquidated[2], liquidated
        assert amplification[0] < amplification[1] < amplification[2], amplification
    m = by_leverage[2][2]
    # Mostly longs in a fall; the cascade takes rounds; the fund and ADL are reported.
    assert m["liquidated_long_usd"].mean() > 5.0 * m["liquidated_short_usd"].mean()
    assert m["max_cascade_rounds"].max() >= 2.0
    assert np.all(m["insurance_fund_usd"] >= 0.0)


def test_liquidation_prices_follow_the_margin_rule():
    cfg = cascade_scenario(10.0, 1.0)
    liq = cfg.venues.perp.liquidations
    for side, sign in (("long", -1.0), ("short", 1.0)):
        b = liquidation_buckets(cfg, side)
        entry = b["cost"] / b["coins"]
        lev = b["cost"] / b["margin"]
        mm = liq.maintenance_margin
        # At the liquidation price equity = maintenance margin: margin + sign' coins (P - E) = mm coins P.
        equity = b["margin"] - sign * b["coins"] * (b["price"] - entry)
        assert np.allclose(equity, mm * b["coins"] * b["price"], rtol=1e-9)
        assert np.all(lev >= 1.0) and np.all(lev <= liq.max_leverage)
        assert np.isclose(b["cost"].sum(), liq.long_oi_usd if side == "long" else liq.short_oi_usd)
        order = sign * b["price"]
        assert np.all(np.diff(order) >= 0.0)  # in the order the price reaches them


# ------------------------------------------------------------------------------------------ off == today
def _trajectory(config, n=6):
    market = Market(config, n_envs=n, parallel=False)
    market.reset(seeds=np.arange(n))
    rng = np.random.default_rng(7)
    outs = []
    for _ in range(market.episode_steps):
        outs.append(market.step(rng.uniform(-5.0, 5.0, (n, 3))).copy())
    return np.array(outs), market.state.copy(), market.hedge.copy()


@pytest.mark.parametrize(
    "overrides",
    [
        {"venues.perp.liquidations.enabled": True},  # no leveraged open interest
        # Open interest that no price of the week reaches: unlevered longs, shorts at twice their entry.
        {
            "venues.perp.liquidations": {
                "enabled": True,
                "long_oi_usd": 1e9,
                "short_oi_usd": 1e9,
                "leverage": 1.0,
                "leverage_dispersion": 0.0,
                "entry_dispersion": 0.0,
            }
        },
    ],
)
@pytest.mark.parametrize("scenario", ["default", "short-gamma-crash"])
def test_without_liquidations_the_market_is_todays_bit_for_bit(scenario, overrides):
    today = _trajectory(load_scenario(scenario))
    with_engine = _trajectory(load_scenario(scenario, overrides))
    for a, b in zip(today, with_engine, strict=True):
        assert a.tobytes() == b.tobytes()


def test_features_off_leave_ext_untouched_and_add_no_keys():
    market = Market(load_scenario("default"), n_envs=4)
    market.reset(seeds=np.arange(4))
    for _ in range(10):
        market.step()
    assert not market.second_order
    assert not np.any(market.ext.view(np.float64))  # every field of layout.EXT is float64
    assert not set(SECOND_ORDER_METRICS) & set(market.episode_metrics())


@pytest.mark.parametrize(
    "overrides",
    [
        {"market.implied_vol": {"enabled": True, "spot_beta": -3.0}},
        {"dealers.cohorts": [{"share": 0.6}, {"share": 0.4, "lag": 2}]},
        {"market.implied_vol": {"enabled": True, "spot_beta": 2.0}, "dealers.cohorts": [{"share": 1.0}]},
    ],
)
def test_second_order_clearing_derivative_is_the_derivative_of_its_residual(overrides):
    # Newton's f' with the vanna term (and the cohorts' push): a wrong slope would still converge,
    # slower, and the crisis test would look at the wrong one.
    from hedgegym.envs import kernel

    market = Market(load_scenario("short-gamma-crash", overrides), n_envs=1)
    y_ref, step, sigma_atm = math.log(1e5), 12, 0.63
    a, c0 = (2e-9, 3e-7) if market.config.dealers.cohorts else (0.0, 0.0)
    args = (math.log(1e5), 300.0, True, 0.0, market.dealer_lines, market.params[0], step)
    tail = (step * market.config.episode.dt, sigma_atm, y_ref, a, c0)
    for spot in (8e4, 9.5e4, 1e5, 1.07e5):
        y = math.log(spot)
        _, fprime, _, _ = kernel._clearing_residual_second_order(y, *args, *tail)
        eps = 1e-5
        up = kernel._clearing_residual_second_order(y + eps, *args, *tail)[0]
        down = kernel._clearing_residual_second_order(y - eps, *args, *tail)[0]
        assert fprime == pytest.approx((up - down) / (2 * eps), abs=1e-7)


@pytest.mark.parametrize("seed", range(3))
def test_every_feature_at_its_bounds_runs_finite(seed):
    # The config's bounds keep every step finite: the steepest spot-vol beta and vol of vol, cohorts
    # with the longest lag, and the largest leveraged open interest against the thinnest perp book.
    cfg = load_scenario(
        "short-gamma-crash",
        {
            "market.implied_vol": {"enabled": True, "spot_beta": -20.0, "vol_of_vol": 20.0, "kappa": 8760.0},
            "dealers.cohorts": [
                {"share": 0.5, "lag": 24, "rebalance_every": 3, "offset": 2},
                {"share": 0.5, "band": 10.0},
            ],
            "venues.perp.depth_usd_per_pct": 1e3,
            "venues.perp.liquidations": {
                "enabled": True,
                "long_oi_usd": 1e12,
                "short_oi_usd": 1e12,
                "leverage": 200.0,
                "max_leverage": 200.0,
                "entry_dispersion": 1.0,
                "maintenance_margin": 0.5,
                "buckets": 256,
            },
        },
    )
    market, _, _, _, _ = run_market(cfg, 4, seed0=seed)
    assert all(np.all(np.isfinite(v)) for v in market.episode_metrics().values())
    assert np.all(np.isfinite(market.observe()))


@pytest.mark.parametrize("scenario", ["default", "liquidation-cascade", "crowded-dealers", "vanna-crash"])
def test_the_public_step_kernels_step_the_market_the_market_steps(scenario):
    # kernel.step_serial / step_parallel pick the first- or second-order step from params, so a caller
    # stepping a Market's arrays itself (the baselines' rollout, the benchmarks) meets the same market.
    from hedgegym.envs import kernel

    cfg = load_scenario(scenario)
    a, b = Market(cfg, n_envs=6, parallel=False), Market(cfg, n_envs=6, parallel=False)
    trades = np.random.default_rng(1).uniform(-5.0, 5.0, (6, 3))
    for m in (a, b):
        m.reset(seeds=np.arange(6))
    for k in range(a.episode_steps):
        a.step(trades)
        fn = kernel.step_serial if k % 2 else kernel.step_parallel
        fn(b.state, b.hedge, b.keys, trades, b.params, b.venues, b.dealer_lines, b.agent_lines, b.out, b.ext)
    assert a.state.tobytes() == b.state.tobytes() and a.ext.tobytes() == b.ext.tobytes()


def test_info_and_metric_tables_name_ext_fields():
    from hedgegym.envs.layout import EXT_DTYPE, EXT_INFO, EXT_METRICS, STATE_DTYPE

    assert all(field in EXT_DTYPE.names for _, field in EXT_INFO)
    for key, field, entry, divisor, _ in EXT_METRICS:
        shape = EXT_DTYPE[field].shape
        assert (entry is None) == (shape == ()), key
        assert entry is None or 0 <= entry < shape[0], key
        assert divisor in (None, "steps") or divisor in STATE_DTYPE.names, key
    assert len({key for key, *_ in EXT_METRICS}) == len(EXT_METRICS)
