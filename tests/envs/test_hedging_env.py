"""HedgingEnv: the spec in its docstring holds (spaces, seeding, reward, episode end, info, bad input)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from gymnasium.error import ResetNeeded
from ledger import pnl_from_parts

from hedgegym.envs import HedgingEnv, Market
from hedgegym.envs.config import ConfigError, resolve_config
from hedgegym.envs.layout import O_REWARD, O_SPOT, OBS_BOUND, OBS_DIM, OBS_NAMES

SHORT = {"episode__horizon_days": 0.25}  # 6 hourly steps, truncated (the book expires in 7 days)
ENDS_AT_EXPIRY = {"agent__lines": [{"strike": 100_000.0, "expiry_days": 0.25, "kind": "call", "quantity": -20.0}]}
STEP_KEYS = {
    "spot",
    "exo_spot",
    "phi",
    "gex",
    "step_pnl",
    "book_pnl",
    "hedge_pnl",
    "fees",
    "slippage",
    "funding",
    "carry",
    "interest",
    "hedge",
    "book_delta",
    "liquidity_crisis",
    "halted",
}
METRIC_KEYS = {
    "pnl",
    "slippage_usd",
    "slippage_bps",
    "fees",
    "funding",
    "turnover_usd",
    "realised_vol",
    "realised_vol_exo",
    "vol_amplification",
    "steps",
    "reward",
}


def run_episode(env: HedgingEnv, actions: np.ndarray, seed: int | None = None):
    """Reset (with ``seed``) and step through ``actions`` until the episode ends; returns the steps."""
    env.reset(seed=seed)
    steps = []
    for a in actions:
        steps.append(env.step(a))
        if steps[-1][2] or steps[-1][3]:
            break
    return steps


def test_spaces_follow_the_enabled_venues():
    env = HedgingEnv(agent__venues=["perp", "spot"])
    assert env.venues == ("spot", "perp")
    assert env.action_space.shape == (2,) and env.action_space.dtype == np.float32
    assert (env.action_space.low == -1).all() and (env.action_space.high == 1).all()
    assert env.observation_space.shape == (OBS_DIM,) == (len(OBS_NAMES),)
    assert env.observation_space.dtype == np.float32 and env.observation_space.high[0] == OBS_BOUND


def test_observations_are_float32_finite_and_in_space():
    env = HedgingEnv(scenario="short-gamma-crash", agent__max_trade=200.0)
    obs, _ = env.reset(seed=1)
    rng = np.random.default_rng(0)
    for _ in range(env.episode_steps):
        assert obs.dtype == np.float32 and obs in env.observation_space and np.isfinite(obs).all()
        obs, reward, terminated, truncated, _ = env.step(rng.uniform(-1, 1, 3))
        assert isinstance(reward, float) and math.isfinite(reward)
    assert terminated and not truncated


def test_same_seed_same_episode_and_later_resets_continue_the_stream():
    env = HedgingEnv(**SHORT)
    actions = np.random.default_rng(0).uniform(-1, 1, (6, 3))
    first = run_episode(env, actions, seed=7)
    second = run_episode(env, actions)  # episode 1 of stream 7
    again = run_episode(env, actions, seed=7)
    spots = lambda steps: [s[4]["spot"] for s in steps]  # noqa: E731
    assert spots(first) == spots(again)
    assert spots(first) != spots(second)
    # Episode 1 of stream 7 is the Market's (seed 7, episode 1) path: same exogenous shocks.
    market = Market(env.config)
    market.reset(7, 1)
    exo = [market.step(market.actions_to_trades(a[None, :]))[0, O_SPOT] for a in actions]
    assert spots(second) == exo


def test_unseeded_first_reset_draws_a_stream_from_np_random():
    a, b = HedgingEnv(**SHORT), HedgingEnv(**SHORT)
    zeros = np.zeros((6, 3))
    assert run_episode(a, zeros)[-1][4]["spot"] != run_episode(b, zeros)[-1][4]["spot"]


def test_info_keys_and_the_pnl_identity():
    env = HedgingEnv(**SHORT)
    _, info = env.reset(seed=3)
    assert set(info) == STEP_KEYS and info["spot"] == info["exo_spot"] == env.config.market.spot0
    assert info["step_pnl"] == 0.0 and info["hedge"].shape == (3,)
    total = 0.0
    for a in np.random.default_rng(1).uniform(-1, 1, (6, 3)):
        _, _, terminated, truncated, info = env.step(a)
        parts = pnl_from_parts(info)
        assert info["step_pnl"] == pytest.approx(parts, rel=1e-12, abs=1e-6)
        assert isinstance(info["liquidity_crisis"], bool) and info["fees"] > 0
        total += info["step_pnl"]
    assert truncated and not terminated
    assert set(info) == STEP_KEYS | {"episode_metrics"}
    metrics = info["episode_metrics"]
    assert METRIC_KEYS <= set(metrics) and all(isinstance(v, float) for v in metrics.values())
    assert metrics["pnl"] == pytest.approx(total) and metrics["steps"] == 6


@pytest.mark.parametrize("reward", ["mean_variance", "pnl", "terminal_pnl"])
def test_reward_modes(reward):
    env = HedgingEnv(agent__reward=reward, agent__risk_aversion=2.0, **SHORT)
    steps = run_episode(env, np.full((6, 3), 0.3), seed=0)
    scale = env.config.pnl_scale
    x = np.array([s[4]["step_pnl"] for s in steps]) / scale
    rewards = np.array([s[1] for s in steps])
    expected = {"mean_variance": x - 0.5 * 2.0 * x**2, "pnl": x, "terminal_pnl": np.r_[np.zeros(5), x.sum()]}[reward]
    np.testing.assert_allclose(rewards, expected, rtol=1e-12, atol=1e-12)


def test_episode_ends_by_termination_at_expiry_and_by_truncation_at_the_horizon():
    steps = run_episode(HedgingEnv(**SHORT, **ENDS_AT_EXPIRY), np.zeros((10, 3)), seed=0)
    assert len(steps) == 6 and steps[-1][2] and not steps[-1][3]
    steps = run_episode(HedgingEnv(**SHORT), np.zeros((10, 3)), seed=0)
    assert len(steps) == 6 and steps[-1][3] and not steps[-1][2]
    assert not any(s[2] or s[3] for s in steps[:-1])


def test_out_of_range_actions_are_clipped():
    env = HedgingEnv(**SHORT)
    env.reset(seed=0)
    clipped = env.step(np.array([5.0, -3.0, 0.5]))
    env.reset(seed=0)
    bounded = env.step(np.array([1.0, -1.0, 0.5]))
    np.testing.assert_array_equal(clipped[0], bounded[0])
    np.testing.assert_array_equal(clipped[4]["hedge"], [20.0, -20.0, 10.0])


def test_target_mode_trades_to_the_position():
    env = HedgingEnv(agent__action_mode="target", agent__venues=["perp"], **SHORT)
    env.reset(seed=0)
    for target in (0.5, 0.5, -0.25):
        info = env.step(np.array([target]))[4]
        np.testing.assert_allclose(info["hedge"], [0.0, target * env.config.agent.max_trade, 0.0])


def test_agent_without_impact_does_not_move_the_price():
    big = np.ones((6, 3))
    passive = run_episode(HedgingEnv(agent_impact=False, **SHORT), big, seed=4)
    idle = run_episode(HedgingEnv(**SHORT), np.zeros((6, 3)), seed=4)
    active = run_episode(HedgingEnv(**SHORT), big, seed=4)
    assert [s[4]["spot"] for s in passive] == [s[4]["spot"] for s in idle]
    assert [s[4]["spot"] for s in active] != [s[4]["spot"] for s in idle]
    assert passive[-1][4]["fees"] > 0


def test_render_ansi_and_none():
    env = HedgingEnv(render_mode="ansi", **SHORT)
    env.reset(seed=0)
    env.step(np.zeros(3))
    text = env.render()
    assert isinstance(text, str) and text.startswith("step 1/6")
    with pytest.warns(UserWarning, match="without a render_mode"):
        assert HedgingEnv(**SHORT).render() is None


# ------------------------------------------------------------------------------------ bad input
@pytest.fixture
def env():
    env = HedgingEnv(**SHORT)
    env.reset(seed=0)
    return env


@pytest.mark.parametrize(
    ("action", "message"),
    [
        (np.zeros(2), r"action must have shape \(3,\).*\['spot', 'perp', 'future'\].*got shape \(2,\)"),
        (np.zeros((1, 3)), r"got shape \(1, 3\)"),
        (0.5, r"got shape \(\)"),
        (np.array([0.0, np.nan, 0.0]), r"action contains NaN at venue 'perp'"),
        (np.array([0.0, 0.0, -np.inf]), r"action contains inf at venue 'future'"),
        (["a", "b", "c"], r"action must be an array of numbers"),
    ],
)
def test_bad_actions_raise_value_error_naming_the_problem(env, action, message):
    with pytest.raises(ValueError, match=message):
        env.step(action)


def test_step_before_reset_and_after_the_end_raise():
    env = HedgingEnv(**SHORT)
    with pytest.raises(ResetNeeded, match="before reset"):
        env.step(np.zeros(3))
    run_episode(env, np.zeros((6, 3)), seed=0)
    with pytest.raises(ResetNeeded, match="after the episode ended"):
        env.step(np.zeros(3))
    env.reset()
    env.step(np.zeros(3))


@pytest.mark.parametrize(
    ("corrupt", "message"),
    [
        (lambda m: m.out.__setitem__((0, O_REWARD), np.inf), r"non-finite reward \(inf\) at step 1"),
        (lambda m: m.state["last_return"].__setitem__(0, np.nan), r"non-finite observation last_return=nan in env 0"),
    ],
)
def test_non_finite_simulator_output_raises_and_the_env_needs_a_reset(env, monkeypatch, corrupt, message):
    market_step = env.market.step

    def corrupted_step(trades, check=True):
        out = market_step(trades, check=check)
        corrupt(env.market)
        return out

    monkeypatch.setattr(env.market, "step", corrupted_step)
    with pytest.raises(RuntimeError, match=message):
        env.step(np.zeros(3))
    with pytest.raises(ResetNeeded, match="after a step that failed"):
        env.step(np.zeros(3))


def test_bad_constructor_arguments_raise_clear_errors():
    with pytest.raises(ConfigError, match=r"market\.sigma.*greater than 0"):
        HedgingEnv(market__sigma=-1.0)
    with pytest.raises(ConfigError, match=r"market\.sigmaa: unknown field"):
        HedgingEnv(market__sigmaa=0.5)
    with pytest.raises(ConfigError, match=r"unknown argument\(s\) 'sigma'.*section__field"):
        HedgingEnv(sigma=0.5)
    with pytest.raises(ConfigError, match="either config= or scenario="):
        HedgingEnv(config={}, scenario="default")
    with pytest.raises(ConfigError, match="unknown scenario 'nope'"):
        HedgingEnv(scenario="nope")
    with pytest.raises(ValueError, match=r"render_mode must be None or one of \['ansi', 'rgb_array', 'human'\]"):
        HedgingEnv(render_mode="video")


def test_unknown_reset_options_raise(env):
    with pytest.raises(ValueError, match=r"unknown reset option\(s\) \['foo'\]"):
        env.reset(options={"foo": 1})


def test_config_sources_agree(tmp_path):
    from hedgegym.envs.config import load_scenario, save_config

    cfg = load_scenario("zero-dte")
    path = tmp_path / "zdte.yaml"
    save_config(cfg, path)
    for env in (
        HedgingEnv(scenario="zero-dte"),
        HedgingEnv(config=cfg),
        HedgingEnv(config=cfg.model_dump()),
        HedgingEnv(config=str(path)),
    ):
        assert env.config == cfg
    assert HedgingEnv(config=cfg, market__sigma="0.7").config.market.sigma == 0.7


def test_observation_tables_are_generated_from_one_list():
    from pathlib import Path

    from hedgegym.envs.layout import OBSERVATION, observation_table

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    assert observation_table("markdown") in readme, "README's observation table differs from layout.OBSERVATION"
    rst = observation_table("rst")
    assert all(line.strip() in HedgingEnv.__doc__ for line in rst.splitlines())
    assert len(OBSERVATION) == HedgingEnv(**SHORT).observation_space.shape[0]


def test_each_observation_entry_is_what_its_name_says():
    # Recomputed by name from the state, the hedge and the config: a reordering of the kernel's
    # observation tuple against layout.OBSERVATION, or a wrong scale, fails here.
    from hedgegym.envs.layout import OBS_UNIT, OBSERVATION

    cfg = resolve_config(
        "default", {"market.impact.circuit_breaker.enabled": True, "market.impact.circuit_breaker.halt_threshold": 0.01}
    )
    market = Market(cfg, n_envs=8)
    market.reset(seeds=np.arange(8))
    rng = np.random.default_rng(5)
    pnl = np.zeros(8)
    for _ in range(30):
        pnl += market.step(rng.uniform(-20.0, 20.0, (8, 3)))[:, 0]  # O_PNL, the step's P&L
    st, hedge = market.state, market.hedge
    gross = sum(abs(line.quantity) for line in cfg.agent.lines)
    weights = np.array([abs(line.quantity) for line in cfg.agent.lines])
    centre = np.exp(np.average(np.log([line.strike for line in cfg.agent.lines]), weights=weights))
    sigma, dt, n = cfg.market.sigma, cfg.episode.dt, cfg.episode_steps
    spot = np.exp(st["log_spot"])
    fut = hedge[:, 2] * np.exp(cfg.market.rate * np.maximum(st["future_expiry"] - st["t"], 0.0))
    want = {
        "time_to_expiry": (n - st["step"]) / n,
        "log_moneyness": np.log(spot / centre) / (sigma * np.sqrt(n * dt)),
        "book_delta": st["book_delta"] / gross,
        "book_gamma": st["book_gamma"] * spot * 0.01 / gross,
        "book_vanna": st["book_vanna"] * 0.1 / gross,
        "book_charm": st["book_charm"] * dt / gross,
        "hedge_spot": hedge[:, 0] / gross,
        "hedge_perp": hedge[:, 1] / gross,
        "hedge_future": fut / gross,
        "net_delta": (st["book_delta"] + hedge[:, 0] + hedge[:, 1] + fut) / gross,
        "last_return": st["last_return"] / (sigma * np.sqrt(dt)),
        "realised_vol": np.sqrt(st["realised_var"]) / sigma,
        "atm_vol": st["atm_vol"] / sigma,
        "perp_premium": st["premium"] / 1e-3,
        "funding_rate": st["funding_rate"] / 1e-4,
        "futures_basis": st["basis"] / 0.1,
        "phi": st["phi"],
        "liquidity_crisis": st["crisis"],
        "halted": (st["halt_left"] > 0).astype(float),
        "pnl_to_date": pnl / (10.0 * cfg.pnl_scale),
    }
    assert [name for name, *_ in OBSERVATION] == list(want)
    assert OBS_UNIT == {
        "book_gamma": 0.01,
        "book_vanna": 0.1,
        "perp_premium": 1e-3,
        "funding_rate": 1e-4,
        "futures_basis": 0.1,
    }
    obs = market.observe()
    for j, name in enumerate(want):
        np.testing.assert_allclose(obs[:, j], np.clip(want[name], -50, 50), rtol=1e-6, atol=1e-6, err_msg=name)
