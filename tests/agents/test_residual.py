"""Controls on top of a classical hedger (hedgegym.agents.residual): residual and band.

The band control is checked against the Whalley–Wilmott hedger built independently: a band 4x as
wide is the hedger at 1/64 of the risk aversion (H ~ gamma^(-1/3), Whalley & Wilmott 1997), and after
a trade the net delta lies in the band around the chosen centre. A policy whose network outputs 0
is the hedger bit for bit, through training's wrapper and through evaluation's SB3Policy.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from hedgegym.agents.baselines import make_baseline
from hedgegym.agents.residual import BandControl, Residual, make_control
from hedgegym.envs.config import resolve_config
from hedgegym.envs.market import Market
from hedgegym.train.evaluate import run_policy

SEEDS = np.arange(100, 132)


def market_at(config, steps: int = 5, n: int = 16) -> Market:
    """A market stepped a few times by the delta hedger at half size (a book off its hedge)."""
    market = Market(config, n_envs=n)
    market.reset(np.arange(n))
    delta = make_baseline("delta@spot", config)
    for _ in range(steps):
        market.step(market.actions_to_trades(0.5 * delta(market.observe(), market)))
    return market


def pnl(policy, config) -> np.ndarray:
    per_episode, _ = run_policy(policy, config, SEEDS, n_sample_paths=0)
    return per_episode["pnl"]


@pytest.fixture(scope="module")
def config():
    return resolve_config("default")


def test_zero_band_action_is_the_hedger(config):
    control = BandControl.build("whalley_wilmott@cheapest", config)
    hedger = make_baseline("whalley_wilmott@cheapest", config)
    market = market_at(config)
    assert np.array_equal(control.actions(np.zeros((16, 2)), market), hedger(market.observe(), market))
    zero = pnl(lambda obs, m: control.actions(np.zeros((m.n_envs, 2)), m), config)
    assert np.array_equal(zero, pnl(hedger, config))


@pytest.mark.parametrize("hedger", ["delta@cheapest", "leland@future", "leland@spot"])
def test_zero_band_on_a_full_rebalancer_is_that_hedger(config, hedger):
    control = BandControl.build(hedger, config)
    baseline = make_baseline(hedger, config)
    market = market_at(config)
    assert np.array_equal(control.actions(np.zeros((16, 2)), market), baseline(market.observe(), market))
    # a_w <= 0 is the zero-width band: the hedger, whatever a_w's value.
    assert np.array_equal(control.actions(np.tile([-0.7, 0.0], (16, 1)), market), baseline(market.observe(), market))
    zero = pnl(lambda obs, m: control.actions(np.zeros((m.n_envs, 2)), m), config)
    assert np.array_equal(zero, pnl(baseline, config))


def test_band_on_delta_at_half_width_is_whalley_wilmott(config):
    # a_w = 1/2 on delta: half-width 2 x 1/2 x H_ww around the model's net delta, i.e. WW's band.
    control = BandControl.build("delta@spot", config)
    got = pnl(lambda obs, m: control.actions(np.tile([0.5, 0.0], (m.n_envs, 1)), m), config)
    np.testing.assert_array_equal(got, pnl(make_baseline("whalley_wilmott@spot", config), config))


def test_a_width_only_band_is_one_action_and_at_half_width_on_delta_is_whalley_wilmott(config):
    """``centre=False``: one action; on delta's band a_w = 1/2 is Whalley–Wilmott (its own code)."""
    control = make_control({"kind": "band", "baseline": "delta@spot", "centre": False}, config)
    assert control.n_actions == 1 and control.record == {"kind": "band", "baseline": "delta@spot", "centre": False}
    got = pnl(lambda obs, m: control.actions(np.full((m.n_envs, 1), 0.5), m), config)
    np.testing.assert_array_equal(got, pnl(make_baseline("whalley_wilmott@spot", config), config))
    assert make_control(control.record, config).n_actions == 1  # what a saved model records rebuilds it
    assert BandControl.build("delta@spot", config).record == {"kind": "band", "baseline": "delta@spot"}


def test_band_on_leland_is_a_band_around_lelands_target(config):
    control = BandControl.build("leland@spot", config)
    market = market_at(config)
    leland = make_baseline("leland@spot", config)
    # Leland's exposure: what it trades away in full, -desired trade (its own formula, not the control's).
    e = -leland.desired_trade(market)
    ww = make_baseline("whalley_wilmott@spot", config).half_width(market)
    for a_w in (0.25, 1.0):
        trades = market.actions_to_trades(control.actions(np.tile([a_w, 0.0], (16, 1)), market))[:, 0]
        half = BandControl.ZERO_WIDTH_RANGE * a_w * ww
        was_inside = np.abs(e) <= half
        assert np.all(trades[was_inside] == 0.0)
        capped = np.isclose(np.abs(trades), config.agent.max_trade)
        assert np.all((np.isclose(np.abs(e + trades), half[...]) | capped)[~was_inside])


def test_band_on_leland_needs_every_step_rebalancing(config):
    coarse = resolve_config("default", {"baselines.leland_interval_steps": 4})
    with pytest.raises(ValueError, match="leland_interval_steps = 1"):
        BandControl.build("leland@spot", coarse)
    neutral = resolve_config("default", {"agent.risk_aversion": 0.0})
    with pytest.raises(ValueError, match=r"band control on 'delta@spot' sizes its band by .*agent.risk_aversion"):
        BandControl.build("delta@spot", neutral)


def test_band_width_is_whalley_wilmott_at_another_risk_aversion(config):
    control = BandControl.build("whalley_wilmott@spot", config)
    gamma = config.agent.risk_aversion / config.pnl_scale
    # Half-width x 4 <=> risk aversion / 64; x 1/2 (a_w = -1/2) <=> risk aversion x 8.
    for a_w, factor in ((1.0, 4.0**-3), (-0.5, 8.0)):
        wide = make_baseline("whalley_wilmott@spot", config, risk_aversion_usd=gamma * factor)
        got = pnl(lambda obs, m, a_w=a_w: control.actions(np.tile([a_w, 0.0], (m.n_envs, 1)), m), config)
        np.testing.assert_allclose(got, pnl(wide, config), rtol=1e-9, atol=1e-6)


def test_band_centre_moves_the_target(config):
    spot = resolve_config("default", {"agent.venues": ["spot"]})
    control = BandControl.build("whalley_wilmott@spot", spot)
    market = market_at(spot)
    gross, limit = market.params["book_gross"][0], spot.agent.max_trade
    e, half = market.net_delta(), control.half_width(market)
    for a_c in (-1.0, -0.3, 0.0, 0.6):
        trades = market.actions_to_trades(control.actions(np.tile([0.0, a_c], (16, 1)), market))[:, 0]
        after = e + trades
        centre = a_c * BandControl.CENTRE_RANGE * gross
        inside = np.abs(after - centre) <= half + 1e-9
        # Where the band is out of reach in one step, the trade is the largest allowed, towards it.
        capped = np.isclose(np.abs(trades), limit) & (np.sign(trades) == np.sign(centre - e))
        assert np.all(inside | capped), (a_c, after - centre, half)
        # Inside the band it does not trade; outside it trades to the nearer edge.
        was_inside = np.abs(e - centre) <= half
        assert np.all(trades[was_inside] == 0.0)
        edge = np.isclose(np.abs(after - centre), half) | capped
        assert np.all(edge[~was_inside])


def test_residual_adds_and_clips(config):
    residual = Residual.build("delta@spot", config, scale=0.5)
    market = market_at(config)
    base = make_baseline("delta@spot", config)(market.observe(), market)
    a = np.linspace(-1, 1, 16 * 3).reshape(16, 3)
    np.testing.assert_array_equal(residual.actions(a, market), np.clip(base + 0.5 * a, -1, 1))


def test_make_control_and_its_errors(config):
    assert isinstance(make_control({"kind": "band", "baseline": "fixed_band@spot"}, config), BandControl)
    assert make_control({"kind": "residual", "baseline": "leland", "scale": 2.0}, config).scale == 2.0
    with pytest.raises(ValueError, match="band control needs a band hedger"):
        make_control({"kind": "band", "baseline": "no_hedge"}, config)
    with pytest.raises(ValueError, match="unknown control kind 'bands'"):
        make_control({"kind": "bands", "baseline": "delta"}, config)
    with pytest.raises(ValueError, match="residual scale must be in"):
        Residual.build("delta", config, scale=3.0)


def test_wrapper_pickles_and_a_zero_policy_evaluates_as_the_hedger(config, tmp_path):
    import torch
    from stable_baselines3 import PPO

    from hedgegym.agents import sb3
    from hedgegym.agents.residual_vec_env import ResidualVecEnv, find_residual
    from hedgegym.train.policies import SB3Policy, embed_interface, load_sb3_policy, policy_interface

    control = BandControl.build("whalley_wilmott@cheapest", config)
    env = sb3.make_vec_env(config, 4, 0, control=control)
    assert isinstance(env, ResidualVecEnv) and env.action_space.shape == (2,)
    env.reset()
    env.step(np.zeros((4, 2), dtype=np.float32))
    clone = pickle.loads(pickle.dumps(env))  # a checkpoint pickles the env mid-episode
    assert find_residual(clone).baseline.name == "whalley_wilmott@cheapest"
    assert np.array_equal(clone.venv.venv.market.state, env.venv.venv.market.state)

    model = PPO("MlpPolicy", env, n_steps=8, batch_size=16, seed=0, device="cpu")
    with torch.no_grad():  # the mean action is exactly 0: the policy is the hedger
        model.policy.action_net.weight.zero_()
        model.policy.action_net.bias.zero_()
    hedger = make_baseline("whalley_wilmott@cheapest", config)
    policy = SB3Policy(model, control=control)
    assert np.array_equal(pnl(policy, config), pnl(hedger, config))

    # Saved with its control in the interface, loaded for another market: rebuilt for that market.
    import io

    buf = io.BytesIO()
    model.save(buf)
    record = policy_interface(config, "ppo", None, False, None, control=control.record)
    (tmp_path / "m.zip").write_bytes(embed_interface(buf.getvalue(), record))
    crash = resolve_config("short-gamma-crash")
    loaded = load_sb3_policy(tmp_path / "m.zip", crash)
    assert isinstance(loaded.control, BandControl) and loaded.control.baseline.config.name == "short-gamma-crash"
    assert np.array_equal(pnl(loaded, crash), pnl(make_baseline("whalley_wilmott@cheapest", crash), crash))


@pytest.mark.parametrize("algorithm", ["ppo", "sac", "td3"])
def test_a_fresh_actor_under_a_control_is_the_hedger(config, algorithm):
    from hedgegym.agents import sb3
    from hedgegym.train.policies import SB3Policy

    control = BandControl.build("whalley_wilmott@cheapest", config)
    env = sb3.make_vec_env(config, 2, 0, control=control)
    sizes = (
        {"n_steps": 8, "batch_size": 8}
        if algorithm == "ppo"
        else {"learning_starts": 16, "buffer_size": 64, "batch_size": 8}
    )
    drifted = sb3.build_model(algorithm, env, sizes, {}, seed=0)
    obs = env.reset()
    assert np.abs(drifted.predict(obs, deterministic=True)[0]).max() > 0.0  # SB3's own start is not the hedger
    model = sb3.build_model(algorithm, env, sizes, {}, seed=0, start_at_zero=True)
    assert np.array_equal(model.predict(obs, deterministic=True)[0], np.zeros((2, 2), dtype=np.float32))
    hedger = make_baseline("whalley_wilmott@cheapest", config)
    assert np.array_equal(pnl(SB3Policy(model, control=control), config), pnl(hedger, config))
    model.learn(32)  # and it learns from there: the zeroed layer gets gradients
    assert np.abs(model.predict(obs, deterministic=True)[0]).max() > 0.0
