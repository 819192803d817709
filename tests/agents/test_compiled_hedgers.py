"""The compiled hedgers: the fused rollout, the per-step pass and ``policy(obs, market)`` make the
same trades, bit for bit, as the env's own mapping of the policy's actions; the scalar formulas and
their ufuncs agree; the textbook law holds through the fused rollout."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hedgegym.agents.baselines import (
    _band_edge,
    _ww_half_width,
    band_edge,
    band_trade,
    make_baseline,
    whalley_wilmott_half_width,
    ww_half_width,
)
from hedgegym.envs.config import load_scenario
from hedgegym.envs.greeks import bsm_greeks
from hedgegym.envs.market import Market
from hedgegym.train.evaluate import run_policy

HEDGERS = ("no_hedge", "delta", "fixed_band", "whalley_wilmott", "leland")
# Modes, venues and carry that exercise every branch of the mapping; a cost makes Leland differ from delta.
CASES = [
    ("default", {"agent.action_mode": "trade"}),
    ("default", {"agent.action_mode": "target", "market.rate": 0.05, "agent.venues": ["spot", "perp", "future"]}),
    ("default", {"agent.action_mode": "delta", "market.rate": 0.05, "baselines.leland_interval_steps": 3}),
    ("frictionless", {"venues.spot.fee": 0.001}),
]


def python_step(policy, market):
    """One step the way any policy is stepped: actions from policy(obs, market), the env's mapping."""
    market.step(market.actions_to_trades(policy(market.observe(), market)))


def markets(config, n, seeds):
    out = []
    for _ in range(2):
        market = Market(config, n_envs=n)
        market.reset(seeds=seeds, episodes=0)
        out.append(market)
    return out


def assert_same_market(a, b, what):
    for field in ("state", "hedge", "out", "ext", "keys"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field), err_msg=f"{what}: {field}")


@pytest.mark.parametrize(("scenario", "overrides"), CASES)
@pytest.mark.parametrize("n", [3, 300])  # serial and parallel (PARALLEL_THRESHOLD = 256)
def test_rollout_is_the_python_step_loop_bit_for_bit(scenario, overrides, n):
    config = load_scenario(scenario, {**overrides, "episode.horizon_days": 1.0})
    seeds = np.arange(n) + 17
    for name in HEDGERS:
        policy = make_baseline(name, config)
        assert policy.fused
        loop, fused = markets(config, n, seeds)
        steps = config.episode_steps
        for _ in range(steps):
            python_step(policy, loop)
        assert fused.parallel == (n >= 256)
        assert policy.rollout(fused, 5) and policy.rollout(fused, steps - 5)  # chunks of steps
        assert_same_market(loop, fused, f"{name} {overrides} n={n}")
        for key, values in loop.episode_metrics().items():
            np.testing.assert_array_equal(fused.episode_metrics()[key], values, err_msg=key)


@pytest.mark.parametrize(("scenario", "overrides"), CASES)
def test_market_trades_is_the_envs_mapping_of_the_policys_actions(scenario, overrides):
    config = load_scenario(scenario, overrides)
    n = 300
    market = Market(config, n_envs=n)
    market.reset(seeds=np.arange(n), episodes=0)
    rng = np.random.default_rng(1)
    names = [*HEDGERS, *(f"{h}@cheapest" for h in HEDGERS[1:])]
    policies = [make_baseline(name, config) for name in names]
    for k in range(12):
        if k % 4 == 1:  # off-hedge positions, so that bands, limits and the hold tolerance bind
            market.hedge += rng.normal(0.0, 8.0, market.hedge.shape)
        for policy in policies:
            expected = market.actions_to_trades(policy(market.observe(), market))
            for parallel in (False, True):
                market.parallel = parallel
                trades, finite = policy.market_trades(market)
                assert finite
                np.testing.assert_array_equal(trades, expected, err_msg=f"{policy.name} step {k}")
        market.parallel = True
        python_step(policies[1], market)


@pytest.mark.parametrize("mode", ["trade", "target", "delta"])
def test_to_actions_inverts_the_action_mapping_like_market_trades_to_actions(mode):
    config = load_scenario("default", {"agent.action_mode": mode, "market.rate": 0.05, "agent.max_trade": 15.0})
    market = Market(config, n_envs=200)
    market.reset(seeds=np.arange(200), episodes=0)
    for _ in range(3):
        market.step(np.random.default_rng(0).normal(0.0, 2.0, (200, 3)))
    rng = np.random.default_rng(2)
    market.hedge += rng.normal(0.0, 10.0, market.hedge.shape)
    trades = rng.normal(0.0, 10.0, (200, 3)) * (rng.uniform(size=(200, 3)) < 0.7)
    policy = make_baseline("delta", config)
    np.testing.assert_array_equal(policy.to_actions(market, trades), market.trades_to_actions(trades))


def test_formulas_scalar_and_ufunc_agree_and_broadcast():
    rng = np.random.default_rng(3)
    e, h = rng.normal(0.0, 5.0, 1000), rng.uniform(0.0, 4.0, 1000)
    expected = np.clip(e, -h, h) - e  # the band edge by NumPy's own clip
    np.testing.assert_array_equal(band_trade(e, h), expected)
    assert [band_edge(a, b) for a, b in zip(e[:50], h[:50], strict=True)] == expected[:50].tolist()
    assert [_band_edge(a, b) for a, b in zip(e[:50], h[:50], strict=True)] == expected[:50].tolist()
    assert band_trade(e, 0.0).tolist() == (-e).tolist() and band_trade(e[:, None], h[:3]).shape == (1000, 3)
    gamma, spot, tau = rng.normal(0.0, 1e-3, 100), rng.uniform(5e4, 2e5, 100), rng.uniform(0.0, 0.1, 100)
    hw = whalley_wilmott_half_width(gamma, spot, 0.0011, 1e-4, 0.05, tau)
    direct = np.cbrt(1.5 * np.exp(-0.05 * tau) * 0.0011 * spot * gamma**2 / 1e-4)
    np.testing.assert_allclose(hw, direct, rtol=1e-15)
    assert [ww_half_width(g, s, 0.0011, 1e-4, 0.05, t) for g, s, t in zip(gamma, spot, tau, strict=True)] == hw.tolist()
    # The plain-Python formula (libm's exp, NumPy's cbrt) against the compiled one: equal to an ulp
    # or two, not bit for bit on every CPU (LLVM's exp and glibc's round differently on some).
    assert _ww_half_width(gamma[0], spot[0], 0.0011, 1e-4, 0.05, tau[0]) == pytest.approx(hw[0], rel=1e-15)


def test_rollout_stops_at_non_finite_actions_and_evaluation_says_so():
    config = load_scenario("frictionless")
    market = Market(config, n_envs=4)
    market.reset(seeds=np.arange(4), episodes=0)
    market.state["book_delta"][2] = np.nan
    policy = make_baseline("delta", config)
    assert not policy.rollout(market, 3)
    assert not policy.market_trades(market)[1]
    with pytest.raises(ValueError, match="fixed venue"):
        make_baseline("delta@cheapest", config).rollout(market, 1)


def test_the_fused_rollout_follows_the_discrete_hedging_law():
    """Kamal & Derman (1999): std of the frictionless delta hedge of an ATM call over N rebalances
    is ~ sqrt(pi/4) vega sigma / sqrt(N), here through run_policy's fused rollout (10k paths)."""
    config = load_scenario(
        "frictionless",
        {"agent.lines": [{"strike": 100_000.0, "expiry_days": 7.0, "kind": "call", "quantity": -1.0}]},
    )
    n = 10_000
    pnl = run_policy(make_baseline("delta", config), config, np.arange(n), n_sample_paths=0)[0]["pnl"]
    vega = float(bsm_greeks(100_000.0, 100_000.0, 7.0 / 365.0, 0.0, 0.6, True).vega)
    predicted = math.sqrt(math.pi / 4.0) * vega * 0.6 / math.sqrt(config.episode_steps)
    kurtosis = np.mean((pnl - pnl.mean()) ** 4) / pnl.std() ** 4
    se = pnl.std() * math.sqrt((kurtosis - 1.0) / (4.0 * n))
    assert abs(pnl.std() - predicted) < 3.0 * se
