"""Baseline hedgers and cheapest-venue routing: the formulas, the textbook laws, the action mapping."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hedgegym.agents.baselines import (
    BASELINES,
    band_trade,
    leland_number,
    leland_volatility,
    make_baseline,
    whalley_wilmott_half_width,
)
from hedgegym.agents.routing import expected_costs, route_cheapest, split_cheapest
from hedgegym.envs.config import load_scenario
from hedgegym.envs.greeks import bsm_greeks
from hedgegym.envs.layout import FUTURE, PERP, SPOT
from hedgegym.envs.market import Market
from hedgegym.train.evaluate import evaluate, run_policy

ONE_ATM_CALL = [{"strike": 100_000.0, "expiry_days": 7.0, "kind": "call", "quantity": -1.0}]


def run_episodes(config, policy, n: int, seed: int = 0) -> dict[str, np.ndarray]:
    per_episode, _ = run_policy(policy, config, np.arange(seed, seed + n), n_sample_paths=0)
    return per_episode


# ------------------------------------------------------------------------------------ formulas
def test_whalley_wilmott_half_width_hand_computed():
    # (3/2 * 0.01 * 100 * 0.0198^2 / 1)^(1/3) = (5.8806e-4)^(1/3)
    assert whalley_wilmott_half_width(0.0198, 100.0, 0.01, 1.0) == pytest.approx(0.08378004, rel=1e-6)
    # The sign of gamma does not matter (Gamma^2); exp(-r tau) = exp(-0.05 * 0.5) scales the cube.
    assert whalley_wilmott_half_width(-0.0198, 100.0, 0.01, 1.0, rate=0.05, tau=0.5) == pytest.approx(
        0.08378004 * math.exp(-0.025) ** (1.0 / 3.0), rel=1e-6
    )
    # Book units: Gamma = 4e-3 coins^2/USD, S = 1e5, c = 11 bp, gamma = 1/12,000 per USD:
    # 1.5 * 0.0011 * 1e5 * 1.6e-5 * 12,000 = 31.68 coins^3 -> 3.1637 coins.
    assert whalley_wilmott_half_width(-4e-3, 1e5, 0.0011, 1.0 / 12_000) == pytest.approx(31.68 ** (1 / 3), rel=1e-9)
    assert whalley_wilmott_half_width(0.0, 1e5, 0.0011, 1.0) == 0.0


def test_whalley_wilmott_policy_uses_the_scenario_cost_and_risk_aversion():
    cfg = load_scenario("default")
    market = Market(cfg, n_envs=3)
    market.reset(seeds=np.arange(3))
    policy = make_baseline("whalley_wilmott", cfg)
    gamma, spot = market.state["book_gamma"], np.exp(market.state["log_spot"])
    # Spot venue: c = fee 10 bp + half spread 1 bp; gamma = risk_aversion 1 / pnl_scale 12,000 USD.
    expected = np.cbrt(1.5 * 0.0011 * spot * gamma**2 * 12_000.0)
    np.testing.assert_allclose(policy.half_width(market), expected, rtol=1e-12)
    assert 1.0 < expected[0] < 10.0  # a few coins for the 120-coin book: trades rarely, not never
    assert make_baseline("whalley_wilmott", cfg, risk_aversion_usd=8 / 12_000.0).half_width(market) == pytest.approx(
        expected / 2.0
    )


def test_leland_number_and_volatility():
    # sqrt(2/pi) * 2 * 0.0011 / (0.6 * sqrt(1/8760)) = 0.27382
    assert leland_number(0.6, 0.0011, 1.0 / 8760.0) == pytest.approx(0.273819, rel=1e-5)
    assert leland_volatility(0.6, 0.0011, 1.0 / 8760.0, gamma_sign=-1) == pytest.approx(
        0.6 * math.sqrt(1.273819), rel=1e-5
    )
    assert leland_volatility(0.6, 0.0011, 1.0 / 8760.0, gamma_sign=+1) == pytest.approx(
        0.6 * math.sqrt(0.726181), rel=1e-5
    )
    assert leland_volatility(0.6, 0.0, 1.0 / 8760.0) == 0.6
    assert leland_volatility(0.2, 0.01, 1.0 / 8760.0, gamma_sign=+1) == 0.0  # Le > 1: Leland breaks down


@pytest.mark.parametrize(("quantity", "factor"), [(-1.0, 1.0 + 0.273819), (+1.0, 1.0 - 0.273819)])
def test_leland_policy_hedges_at_the_leland_volatility_of_its_gamma_sign(quantity, factor):
    """Leland (1985) with costs: a short call (short gamma) hedges at sigma sqrt(1 + Le), a long one
    at sigma sqrt(1 - Le). Hand-computed Le = sqrt(2/pi) 2 (10 bp + 1 bp) / (0.6 sqrt(1/8760)) =
    0.273819 and the BSM delta from scipy's normal CDF: a sign flip of Le changes the delta by ~0.005."""
    from scipy.stats import norm

    line = [{"strike": 100_000.0, "expiry_days": 7.0, "kind": "call", "quantity": quantity}]
    cfg = load_scenario(
        "frictionless",
        {
            "agent.lines": line,
            "agent.venues": ["spot"],
            "agent.max_trade": 10.0,
            "venues.spot.fee": 0.001,
            "venues.spot.half_spread": 0.0001,
            "market.smile.skew": 0.0,
            "market.smile.smile": 0.0,
            "market.smile.vol_premium": 0.0,
        },
    )
    market = Market(cfg, n_envs=1)
    market.reset(seeds=[0])
    assert np.sign(market.state["book_gamma"][0]) == np.sign(quantity)
    sigma_hat = 0.6 * math.sqrt(factor)
    tau = 7.0 / 365.0
    d1 = 0.5 * sigma_hat * math.sqrt(tau)  # ln(S/K) = 0, r = 0
    expected = -quantity * norm.cdf(d1)  # from flat: buy back the book's Leland delta
    trade = make_baseline("leland", cfg).desired_trade(market)[0]
    assert trade == pytest.approx(expected, rel=1e-9)
    # Not the plain BSM delta: the costs moved it by the Leland adjustment.
    assert abs(trade + quantity * norm.cdf(0.5 * 0.6 * math.sqrt(tau))) > 1e-3


def test_band_trade_goes_to_the_band_edge():
    np.testing.assert_array_equal(band_trade(np.array([10.0, -10.0, 3.0, -6.0]), 6.0), [-4.0, 4.0, 0.0, 0.0])


# ------------------------------------------------------------------------------------ policies on the market
def test_fixed_band_actions_in_every_action_mode():
    for mode in ("trade", "target", "delta"):
        cfg = load_scenario("default", {"agent.action_mode": mode, "agent.venues": ["spot"]})
        market = Market(cfg, n_envs=2)
        market.reset(seeds=np.arange(2))
        # Net delta +10 and +3 coins; the band is 0.05 * 120 = 6 coins wide each side.
        market.hedge[:, SPOT] = np.array([10.0, 3.0]) - market.state["book_delta"]
        assert market.net_delta() == pytest.approx([10.0, 3.0])
        actions = make_baseline("fixed_band", cfg)(market.observe(), market)
        trades = market.actions_to_trades(actions)
        np.testing.assert_allclose(trades[:, SPOT], [-4.0, 0.0], atol=1e-12)
        assert trades[1, SPOT] == 0.0  # exactly: a hold is not a 1e-16-coin rounding residue


def test_baseline_is_bound_by_max_trade():
    cfg = load_scenario("default", {"agent.venues": ["spot"], "agent.max_trade": 5.0})
    market = Market(cfg, n_envs=1)
    market.reset(seeds=[0])
    market.hedge[:, SPOT] = 30.0 - market.state["book_delta"]  # 30 coins long: delta wants to sell 30
    actions = make_baseline("delta", cfg)(market.observe(), market)
    assert actions.tolist() == [[-1.0]] and market.actions_to_trades(actions)[0, SPOT] == -5.0


def test_every_action_mode_reproduces_trade_mode():
    # With max_trade large enough never to bind, a trade, a target and a deviation from the full
    # delta hedge are the same hedge: the same P&L and the same trades. A carry rate makes a futures
    # contract worth exp(r (T_f - t)) coins of delta, which every mapping must account for.
    base = {"agent.max_trade": 500.0, "market.rate": 0.05}
    names = ("no_hedge", "delta@perp", "leland@future", "whalley_wilmott@cheapest")
    results = {}
    for mode in ("trade", "target", "delta"):
        cfg = load_scenario("default", {**base, "agent.action_mode": mode})
        for name in names:
            results[mode, name] = run_episodes(cfg, make_baseline(name, cfg), 8)
    for mode in ("target", "delta"):
        for name in names:
            np.testing.assert_allclose(
                results[mode, name]["pnl"],
                results["trade", name]["pnl"],
                rtol=1e-9,
                atol=1e-6,
                err_msg=f"{mode} {name}",
            )
            np.testing.assert_array_equal(
                results[mode, name]["n_trades"], results["trade", name]["n_trades"], err_msg=f"{mode} {name}"
            )
        assert np.all(results[mode, "no_hedge"]["n_trades"] == 0)


def test_policy_on_a_single_env_takes_and_returns_one_row():
    cfg = load_scenario("default")
    market = Market(cfg, n_envs=1)
    market.reset(seeds=[3])
    policy = make_baseline("leland@cheapest", cfg)
    obs = market.observe()
    assert policy(obs[0], market).shape == (3,)
    np.testing.assert_array_equal(policy(obs[0], market), policy(obs, market)[0])


def test_make_baseline_errors_name_the_problem():
    cfg = load_scenario("default", {"agent.venues": ["spot", "perp"]})
    with pytest.raises(ValueError, match="unknown baseline 'gamma_scalp'.*no_hedge, delta, fixed_band"):
        make_baseline("gamma_scalp", cfg)
    with pytest.raises(ValueError, match="venue 'future' is not one the agent may trade"):
        make_baseline("delta@future", cfg)
    with pytest.raises(ValueError, match="bandwidth.*allowed: venue, band_width"):
        make_baseline("fixed_band", cfg, bandwidth=0.1)
    with pytest.raises(ValueError, match="band_width"):
        make_baseline("fixed_band", cfg, band_width=-1.0)
    assert make_baseline("delta@perp", cfg).name == "delta@perp"
    assert make_baseline("delta", cfg, venue="cheapest").name == "delta@cheapest"
    assert set(BASELINES) == {"no_hedge", "delta", "fixed_band", "whalley_wilmott", "leland"}


# ------------------------------------------------------------------------------------ textbook laws
def test_delta_hedging_error_follows_the_discrete_hedging_law():
    """Kamal & Derman (1999), Bertsimas, Kogan & Lo (2000): std ~ sqrt(pi/4) vega sigma / sqrt(N)."""
    n_episodes = 2000
    vega = float(bsm_greeks(100_000.0, 100_000.0, 7.0 / 365.0, 0.0, 0.6, True).vega)
    stds = {}
    for dt_hours in (1.0, 0.25):
        cfg = load_scenario("frictionless", {"agent.lines": ONE_ATM_CALL, "episode.dt_hours": dt_hours})
        pnl = run_episodes(cfg, make_baseline("delta", cfg), n_episodes)["pnl"]
        n_steps = cfg.episode_steps
        predicted = math.sqrt(math.pi / 4.0) * vega * 0.6 / math.sqrt(n_steps)
        std = pnl.std()
        # Standard error of a sample std: std sqrt((kurtosis - 1) / (4 n)) (the P&L is fat-tailed).
        kurtosis = np.mean((pnl - pnl.mean()) ** 4) / std**4
        se = std * math.sqrt((kurtosis - 1.0) / (4.0 * n_episodes))
        assert abs(std - predicted) < 3.0 * se, (n_steps, std, predicted, se)
        assert abs(pnl.mean()) < 3.0 * std / math.sqrt(n_episodes)  # unbiased without costs
        stds[n_steps] = (std, se)
    # Four times the rebalances: half the error.
    (s1, e1), (s4, e4) = stds[168], stds[672]
    assert s1 / s4 == pytest.approx(2.0, abs=3.0 * 2.0 * math.hypot(e1 / s1, e4 / s4))


def test_leland_without_costs_is_delta():
    cfg = load_scenario("frictionless")
    delta = run_episodes(cfg, make_baseline("delta", cfg), 16)
    leland = run_episodes(cfg, make_baseline("leland", cfg), 16)
    np.testing.assert_allclose(leland["pnl"], delta["pnl"], rtol=1e-12)


def test_whalley_wilmott_beats_delta_under_proportional_costs():
    cfg = load_scenario("frictionless", {"venues.spot.fee": 0.001, "venues.spot.half_spread": 0.0001})
    result = evaluate(
        ["delta", "whalley_wilmott"], cfg, episodes=800, seed=0, n_resamples=400, agent_impact_rerun=False
    )
    ww, delta = result.estimates["whalley_wilmott@spot"], result.estimates["delta@spot"]
    assert ww["n_trades"].value < 0.6 * delta["n_trades"].value
    assert ww["fees"].value + ww["slippage_usd"].value < 0.6 * (delta["fees"].value + delta["slippage_usd"].value)
    # A smaller mean-variance loss, significantly: the paired interval of the difference excludes 0.
    assert result.compare("whalley_wilmott@spot", "delta@spot")["mean_variance"].low > 0.0


# ------------------------------------------------------------------------------------ routing
def test_split_cheapest_equalises_marginal_costs():
    linear = np.array([[10.0, 12.0, np.inf], [10.0, 12.0, 11.0], [5.0, 20.0, 8.0], [1.0, 2.0, 3.0]])
    quadratic = np.array([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0], [1.0, 1.0, 1.0], [1.0, 1.0, 1.0]])
    demand = np.array([5.0, -5.0, 0.5, 0.0])
    out = split_cheapest(demand, linear, quadratic)
    # Row 0: 10 + 2x = 12 + 2y, x + y = 5 -> (3, 2); the disabled future gets nothing.
    np.testing.assert_allclose(out[0], [3.0, 2.0, 0.0])
    # Row 1: the infinitely deep future caps the marginal cost at 11: spot fills to (11-10)/2, future the rest.
    np.testing.assert_allclose(out[1], [-0.5, 0.0, -4.5])
    # Row 2: a small trade stays on the cheapest venue (5 + 2 * 0.5 = 6 < 8).
    np.testing.assert_allclose(out[2], [0.5, 0.0, 0.0])
    np.testing.assert_array_equal(out[3], 0.0)
    rng = np.random.default_rng(0)
    demand = rng.normal(0.0, 20.0, 200)
    out = split_cheapest(demand, rng.uniform(-50, 200, (200, 3)), rng.uniform(0.0, 5.0, (200, 3)))
    np.testing.assert_allclose(out.sum(axis=1), demand, rtol=1e-12, atol=1e-9)
    assert np.all(out * np.sign(demand)[:, None] >= -1e-12)


def test_routing_prices_funding_and_keeps_the_hedge_size():
    cfg = load_scenario("default")
    market = Market(cfg, n_envs=4)
    market.reset(seeds=np.arange(4))
    buy, _ = expected_costs(market, np.ones(4), np.full(4, 7.0 / 365.0))
    sell, _ = expected_costs(market, -np.ones(4), np.full(4, 7.0 / 365.0))
    # Positive funding (1 bp per 8 h): longs pay ~21 bp over a week on the perp, shorts earn it.
    assert np.all(buy[:, PERP] - sell[:, PERP] > 2 * 0.002 * 100_000 * 0.9)
    # The dated future carries its 5 % basis: a long pays it as the future converges to spot.
    assert np.all(buy[:, FUTURE] > sell[:, FUTURE])
    demand = np.array([30.0, -30.0, 0.1, -0.1])
    routed = route_cheapest(market, demand)
    np.testing.assert_allclose(routed.sum(axis=1), demand, rtol=1e-12)
    assert routed[1, PERP] == pytest.approx(-30.0, rel=0.2)  # a sale goes (mostly) to the perp, earning funding
    # Back through the env's action mapping: the routed trades, clipped at max_trade = 20 coins.
    trades = market.actions_to_trades(market.trades_to_actions(routed))
    np.testing.assert_allclose(trades, np.clip(routed, -20.0, 20.0), rtol=1e-12, atol=1e-12)
