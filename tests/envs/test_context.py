"""The market's context (hedgegym.envs.context) and the wrapper that appends it (MarketContextVecEnv)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hedgegym.envs.config import resolve_config
from hedgegym.envs.context import CONTEXT_DIM, CONTEXT_NAMES, market_context
from hedgegym.envs.family import FamilyConfig
from hedgegym.envs.layout import OBS_DIM
from hedgegym.envs.sb3_vec_env import MarketContextVecEnv, make_sb3_vec_env


def test_the_crash_context_from_its_scenario_file():
    """Typed in from envs/scenarios/short-gamma-crash.yaml, not from the code."""
    ctx = dict(zip(CONTEXT_NAMES, market_context(resolve_config("short-gamma-crash")).tolist(), strict=True))
    inv_depth = (1 / 5e7 + 1 / 1e8 + 1 / 2.5e7) / 3  # spot, perp, future of the crash
    gross = 30 + 30 + 20 + 20
    assert ctx["sigma"] == pytest.approx(0.60)
    assert ctx["fee_bp"] == pytest.approx(math.log(1 + (10 + 4 + 5) / 3), rel=1e-6)
    assert ctx["impact_bp"] == pytest.approx(math.log(1 + 100 * gross * 1e5 * inv_depth), rel=1e-6)
    assert ctx["dealer_notional"] == pytest.approx(math.asinh(-7500 * 1e5 * inv_depth), rel=1e-6)
    assert ctx["jump_rate"] == pytest.approx(2.0) and ctx["jump_mean"] == pytest.approx(-4.0)


def test_frictionless_and_long_gamma_contexts():
    assert market_context(resolve_config("frictionless"))[1:].tolist() == [0.0] * (CONTEXT_DIM - 1)
    pin = dict(zip(CONTEXT_NAMES, market_context(resolve_config("long-gamma-pin")).tolist(), strict=True))
    assert pin["dealer_notional"] > 0 and pin["jump_rate"] == 0.0  # long gamma dealers: positive


def test_the_wrapper_appends_each_markets_context_and_the_old_one_at_an_episode_end():
    base = resolve_config("default")
    family = FamilyConfig.model_validate({"markets": 1, "draws": {"market.sigma": [0.3, 0.9]}})
    inner = make_sb3_vec_env(base, n_envs=2, seed=4, step_info=False, family=family)
    venv = MarketContextVecEnv(inner)
    assert venv.observation_space.shape == (OBS_DIM + CONTEXT_DIM,)
    obs = venv.reset()
    first = inner.venv.market.config
    assert np.array_equal(obs[:, OBS_DIM:], np.tile(market_context(first), (2, 1)))
    for _ in range(inner.venv.episode_steps):
        obs, _, dones, infos = venv.step(np.zeros((2, 3), dtype=np.float32))
    second = inner.venv.market.config
    assert dones.all() and second != first
    assert obs[0, OBS_DIM] == np.float32(second.market.sigma)  # the next episode's market
    assert infos[0]["terminal_observation"][OBS_DIM] == np.float32(first.market.sigma)  # the one that ended
    assert infos[0]["terminal_observation"].shape == (OBS_DIM + CONTEXT_DIM,)


def test_the_wrapper_needs_a_hedging_env():
    import gymnasium as gym
    from stable_baselines3.common.vec_env import DummyVecEnv

    with pytest.raises(TypeError, match="HedgingSB3VecEnv"):
        MarketContextVecEnv(DummyVecEnv([lambda: gym.make("CartPole-v1")]))
