"""Property-based tests (hypothesis): random valid configs run finite, the action mapping inverts,
and a step's P&L is the sum of its parts for random books and actions.

Configs are drawn from the ranges the config allows (``hedgegym.envs.config``), near their edges
too; the draws the config rejects are discarded: what validates must run.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from ledger import pnl_from_parts

from hedgegym.envs import HedgingEnv
from hedgegym.envs.config import ConfigError, load_scenario, validate_config
from hedgegym.envs.market import Market

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
PARTS = ("book_pnl", "hedge_pnl", "fees", "slippage", "funding", "carry", "interest")


def log_uniform(lo: float, hi: float):
    return st.floats(math.log(lo), math.log(hi)).map(math.exp)


depth = st.one_of(log_uniform(1e3, 1e12), st.just(math.inf))
dt_hours = st.sampled_from([1.0 / 3600.0, 1.0 / 12.0, 1.0, 8.0, 24.0, 24.0 * 30])


@st.composite
def lines(draw, spot0: float, step_days: float, min_size: int, on_grid: bool):
    n = draw(st.integers(min_size, 4))
    out = []
    for _ in range(n):
        steps = draw(st.integers(1, 40))
        expiry = steps * step_days if on_grid else draw(st.floats(1e-3, 36500.0))
        out.append(
            {
                "strike": spot0 * draw(log_uniform(0.2, 5.0)),
                "expiry_days": expiry,
                "kind": draw(st.sampled_from(["call", "put"])),
                "quantity": draw(st.one_of(st.floats(-1e5, 1e5), st.just(0.0))),
            }
        )
    return out


@st.composite
def scenario(draw):
    dt = draw(dt_hours)
    step_days = dt / 24.0
    spot0 = draw(log_uniform(1e-6, 1e12))
    agent_lines = draw(lines(spot0, step_days, 1, True))
    gross = sum(abs(line["quantity"]) for line in agent_lines)
    data = {
        "market": {
            "spot0": spot0,
            "mu": draw(st.floats(-10.0, 10.0)),
            "sigma": draw(log_uniform(1e-3, 10.0)),
            "rate": draw(st.floats(-1.0, 1.0)),
            "heston": {
                "enabled": draw(st.booleans()),
                "kappa_v": draw(st.floats(0.0, 1e4)),
                "theta_v": draw(log_uniform(1e-4, 100.0)),
                "xi": draw(st.floats(0.0, 10.0)),
                "rho_sv": draw(st.floats(-1.0, 1.0)),
            },
            "jumps": {
                "enabled": draw(st.booleans()),
                "intensity": draw(st.floats(0.0, 1e5)),
                "mean": draw(st.floats(-1.0, 1.0)),
                "std": draw(st.floats(0.0, 1.0)),
            },
            "impact": {
                "permanent_share": draw(st.floats(0.0, 1.0)),
                "resilience": draw(st.floats(0.0, 1e6)),
                "phi_floor": draw(st.floats(0.01, 0.99)),
                "circuit_breaker": {"enabled": draw(st.booleans()), "halt_threshold": draw(log_uniform(1e-4, 1.0))},
            },
            "smile": {
                "skew": draw(st.floats(-10.0, 10.0)),
                "smile": draw(st.floats(-10.0, 100.0)),
                "vol_premium": draw(st.floats(-0.99, 5.0)),
                "vol_floor": draw(log_uniform(1e-3, 5.0)),
            },
        },
        "venues": {
            v: {
                "depth_usd_per_pct": draw(depth),
                "fee": draw(st.floats(0.0, 0.5)),
                "half_spread": draw(st.floats(0.0, 0.5)),
                "eta": draw(st.floats(0.0, 100.0)),
            }
            for v in ("spot", "perp", "future")
        },
        "dealers": {
            "lines": draw(lines(spot0, step_days, 0, False)),
            "hedge_ratio": draw(st.floats(0.0, 5.0)),
            "rebalance_every": draw(st.integers(1, 10)),
        },
        "agent": {
            "lines": agent_lines,
            "max_trade": draw(st.floats(1e-6, 1e3)) * max(gross, 1.0),
            "action_mode": draw(st.sampled_from(["trade", "target", "delta"])),
            "risk_aversion": draw(st.floats(0.0, 1e4)),
            "funding_cost_of_capital": draw(st.floats(0.0, 1.0)),
        },
        "episode": {"dt_hours": dt, "horizon_days": step_days * draw(st.integers(1, 50))},
    }
    data["venues"]["perp"].update(
        premium_vol=draw(st.floats(0.0, 10.0)),
        premium_speed=draw(st.floats(0.0, 1e7)),
        funding_interval_hours=draw(st.floats(1.0 / 60.0, 8760.0)),
    )
    data["venues"]["future"].update(
        basis_vol=draw(st.floats(0.0, 50.0)),
        basis_speed=draw(st.floats(0.0, 1e7)),
        expiry_days=draw(st.floats(1e-3, 3650.0)),
        roll_days=draw(st.floats(1e-3, 3650.0)),
    )
    try:
        return validate_config(data)
    except ConfigError:
        assume(False)


def finite_info(info) -> bool:
    return all(np.all(np.isfinite(v)) for k, v in info.items() if k != "episode_metrics") and all(
        math.isfinite(v) for v in info.get("episode_metrics", {}).values()
    )


@settings(SETTINGS, max_examples=50)
@given(cfg=scenario(), seed=st.integers(0, 2**32), data=st.data())
def test_random_valid_configs_run_finite(cfg, seed, data):
    env = HedgingEnv(config=cfg)
    obs, info = env.reset(seed=seed)
    assert np.all(np.isfinite(obs)) and finite_info(info)
    for _ in range(min(env.episode_steps, 6)):
        action = np.array(
            data.draw(
                st.lists(st.floats(-1.0, 1.0), min_size=env.action_space.shape[0], max_size=env.action_space.shape[0])
            )
        )
        obs, reward, terminated, truncated, info = env.step(action)
        assert np.all(np.isfinite(obs)) and math.isfinite(reward) and finite_info(info), info
        total = info["step_pnl"]
        parts = pnl_from_parts(info)
        assert total == parts or abs(total - parts) <= 1e-9 * max(abs(p) for p in (info[k] for k in PARTS))
        if terminated or truncated:
            break


@SETTINGS
@given(cfg=scenario(), seed=st.integers(0, 2**32), data=st.data())
def test_pnl_is_the_sum_of_its_parts_over_an_episode(cfg, seed, data):
    n = 3
    market = Market(cfg, n_envs=n)
    market.reset(seeds=np.arange(seed, seed + n))
    k = market.enabled_venues.size
    for _ in range(min(cfg.episode_steps, 8)):
        acts = np.array(data.draw(st.lists(st.floats(-1.0, 1.0), min_size=n * k, max_size=n * k))).reshape(n, k)
        assert np.all(np.isfinite(market.step(market.actions_to_trades(acts))))
    metrics = market.episode_metrics()
    total = sum(
        metrics[k] * (1.0 if k in ("book_pnl", "hedge_pnl", "interest") else -1.0)
        for k in ("book_pnl", "hedge_pnl", "fees", "slippage_usd", "funding", "carry", "interest")
    )
    scale = (
        np.maximum.reduce(
            [
                np.abs(metrics[k])
                for k in ("book_pnl", "hedge_pnl", "fees", "slippage_usd", "funding", "carry", "interest")
            ]
        )
        + 1e-9
    )
    assert np.all(np.abs(metrics["pnl"] - total) <= 1e-9 * scale)


@SETTINGS
@given(
    cfg=scenario(),
    seed=st.integers(0, 2**32),
    mode=st.sampled_from(["trade", "target", "delta"]),
    warmup=st.integers(0, 3),
    data=st.data(),
)
def test_actions_to_trades_round_trips(cfg, seed, mode, warmup, data):
    cfg = validate_config(cfg.model_dump() | {"agent": cfg.agent.model_dump() | {"min_trade": 0.0}})
    n = 4
    market = Market(cfg, n_envs=n)
    market.reset(seeds=np.arange(seed, seed + n))
    k = market.enabled_venues.size
    for _ in range(min(warmup, cfg.episode_steps - 1)):
        market.step(market.actions_to_trades(np.full((n, k), 0.3)))
    actions = np.array(data.draw(st.lists(st.floats(-0.99, 0.99), min_size=n * k, max_size=n * k))).reshape(n, k)
    trades = market.actions_to_trades(actions, mode=mode)
    assert np.all(np.isfinite(trades))
    delta_trades = trades.copy()
    delta_trades[:, 2] *= market.future_delta()
    back = market.trades_to_actions(delta_trades, mode=mode)
    tol = 1e-9 * (
        1.0
        + np.abs(market.net_delta())[:, None] / cfg.agent.max_trade
        + np.abs(market.hedge[:, market.enabled_venues]) * 3.0 / cfg.agent.max_trade
    )
    assert np.all(np.abs(back - actions) <= tol), (back, actions)


# What would not run finite is rejected at load, naming the field, the value and the allowed range.
@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"venues.spot.depth_usd_per_pct": 1e-300}, ["venues.spot.depth_usd_per_pct", ">= 1000 USD per 1 %", "1e-300"]),
        ({"agent.pnl_scale_usd": 1e-300}, ["agent.pnl_scale_usd=1e-300", "below 1e-06 x", "= 12 USD"]),
        ({"agent.max_trade": 1e300}, ["agent.max_trade=1e+300", "more than 1000 x", "= 120000 coins"]),
        (
            {"market.jumps.enabled": True, "market.jumps.intensity": 1e5, "market.jumps.mean": 2.0},
            ["market.jumps.mean", "less than or equal to 1", "(got 2.0)"],
        ),
        (
            {"market.jumps.enabled": True, "market.jumps.intensity": 1e5, "market.jumps.mean": 0.5},
            ["market.jumps.intensity=100000", "expected jumps per step; at most 10"],
        ),
        (
            {"market.jumps.enabled": True, "market.jumps.intensity": 5e4, "market.jumps.mean": 0.5},
            ["exogenous log-price's drift", "exceed 50"],
        ),
        ({"market.heston.enabled": True, "market.heston.kappa_v": 9000.0}, ["market.heston.kappa_v=9000", "<= 1"]),
        ({"episode.dt_hours": 1e-300}, ["episode.dt_hours", "at least one second", "1e-300"]),
    ],
)
def test_configs_that_cannot_run_are_rejected(overrides, expected):
    with pytest.raises(ConfigError) as err:
        load_scenario("default", overrides)
    for text in expected:
        assert text in str(err.value)
