"""A family of markets (hedgegym.envs.family): the draws, the env that runs them, the errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
from gymnasium.vector import AutoresetMode

from hedgegym.envs.config import ConfigError, resolve_config
from hedgegym.envs.family import FamilyConfig, check_family, draw_config, draw_values, family_rng
from hedgegym.envs.layout import O_REWARD
from hedgegym.envs.market import Market
from hedgegym.envs.sb3_vec_env import ConcatVecEnv, make_sb3_vec_env
from hedgegym.envs.vector_env import HedgingVectorEnv

FAMILY = {
    "markets": 2,
    "draws": {
        "market.sigma": [0.3, 0.9],
        "dealers.lines.*.quantity": {"low": -1.0, "high": 2.0, "scale": True},
        "venues.*.fee": {"low": 0.5, "high": 2.0, "log": True, "scale": True},
    },
}


def family():
    return check_family(FamilyConfig.model_validate(FAMILY), resolve_config("default"))


def test_draws_follow_their_distributions():
    fam = family()
    draws = [draw_values(fam, family_rng(seed, 0)) for seed in range(4000)]
    sigma = np.array([d["market.sigma"] for d in draws])
    fee = np.array([d["venues.*.fee"] for d in draws])
    assert 0.3 <= sigma.min() and sigma.max() <= 0.9 and 0.5 <= fee.min() and fee.max() <= 2.0
    # Uniform on [0.3, 0.9]: mean 0.6, sd 0.6 / sqrt(12); log-uniform on [0.5, 2]: log mean 0, log sd ln 4 / sqrt(12).
    assert abs(sigma.mean() - 0.6) < 4 * (0.6 / math.sqrt(12)) / math.sqrt(len(sigma))
    assert abs(np.log(fee).mean()) < 4 * (math.log(4.0) / math.sqrt(12)) / math.sqrt(len(fee))
    assert abs(np.log(fee).std() - math.log(4.0) / math.sqrt(12)) < 0.02
    # Different seeds or episodes, different markets; the same, the same.
    assert draw_values(fam, family_rng(1, 0)) != draw_values(fam, family_rng(1, 1))
    assert draw_values(fam, family_rng(1, 3)) == draw_values(fam, family_rng(1, 3))


def test_a_scale_multiplies_every_matched_field_by_one_draw():
    base = resolve_config("default")
    drawn = draw_config(family(), base, family_rng(11, 2))
    ratios = {d.quantity / b.quantity for d, b in zip(drawn.dealers.lines, base.dealers.lines, strict=True)}
    assert len(ratios) == 1 and -1.0 <= ratios.pop() <= 2.0
    fee_ratios = [getattr(drawn.venues, v).fee / getattr(base.venues, v).fee for v in ("spot", "perp", "future")]
    assert np.allclose(fee_ratios, fee_ratios[0]) and 0.5 <= fee_ratios[0] <= 2.0
    assert 0.3 <= drawn.market.sigma <= 0.9 and drawn.agent == base.agent and drawn.episode == base.episode


def test_the_family_env_runs_each_drawn_market_bit_for_bit():
    """Each episode of the family env equals a plain Market of that episode's draw, same seeds."""
    base, fam, n, seed = resolve_config("default"), family(), 3, 5
    env = HedgingVectorEnv(n, config=base, autoreset_mode=AutoresetMode.SAME_STEP, family=fam)
    env.reset(seed=seed)
    steps = env.episode_steps
    rewards = np.zeros((2, steps, n))
    configs = []
    for episode in range(2):
        configs.append(env.market.config)
        for k in range(steps):
            _, rewards[episode, k], *_ = env.step(np.zeros((n, 3)))
    assert configs[0] != configs[1] and configs[0] != base
    for episode in range(2):
        drawn = draw_config(fam, base, family_rng(seed, episode))
        assert drawn == configs[episode]
        market = Market(drawn, n_envs=n)
        market.reset(seeds=np.arange(seed, seed + n), episodes=np.full(n, episode))
        trades = np.zeros((n, 3))
        for k in range(steps):
            trades[:] = market.actions_to_trades(np.zeros((n, 3)))
            assert np.array_equal(market.step(trades)[:, O_REWARD], rewards[episode, k])


def test_the_markets_do_not_depend_on_the_actions():
    fam, n = family(), 2
    seen = []
    for actions in (lambda rng: np.zeros((n, 3)), lambda rng: rng.uniform(-1, 1, (n, 3))):
        env = HedgingVectorEnv(n, scenario="default", autoreset_mode=AutoresetMode.SAME_STEP, family=fam)
        env.reset(seed=0)
        rng = np.random.default_rng(0)
        configs = []
        for _ in range(3 * env.episode_steps):
            env.step(actions(rng))
            configs.append(env.market.config.market.sigma)
        seen.append(configs)
    # The reset's market and one per autoreset (the third at the last step).
    assert seen[0] == seen[1] and len(set(seen[0])) == 4


def test_a_partial_reset_keeps_the_market():
    env = HedgingVectorEnv(2, scenario="default", family=family())
    env.reset(seed=0)
    market = env.market.config
    env.reset(options={"reset_mask": np.array([True, False])})
    assert env.market.config is market
    env.reset()
    assert env.market.config is not market


def test_concatenated_batches_equal_one_batch():
    one = make_sb3_vec_env("default", n_envs=4, seed=3, step_info=False)
    parts = ConcatVecEnv([make_sb3_vec_env("default", n_envs=2, step_info=False) for _ in range(2)])
    parts.seed(3)
    assert np.array_equal(one.reset(), parts.reset())
    rng = np.random.default_rng(1)
    for _ in range(one.get_attr("episode_steps")[0] + 5):  # through an autoreset
        actions = rng.uniform(-1, 1, (4, 3)).astype(np.float32)
        a, b = one.step(actions), parts.step(actions)
        for x, y in zip(a[:3], b[:3], strict=True):
            assert np.array_equal(x, y)
        assert [i.get("episode") is None for i in a[3]] == [i.get("episode") is None for i in b[3]]


def test_a_control_is_rebuilt_on_each_drawn_market():
    """The band control's hedger is Whalley-Wilmott's on the market of the episode, not on the base."""
    from hedgegym.agents import sb3
    from hedgegym.agents.baselines import make_baseline
    from hedgegym.agents.residual import BandControl

    base = resolve_config("default")
    control = BandControl.build("whalley_wilmott@cheapest", base)
    venv = sb3.make_vec_env(base, 4, seed=0, control=control, family=family())
    venv.reset()
    for _ in range(base.episode_steps + 1):
        venv.step(np.zeros((4, 2), dtype=np.float32))
    for part in venv.parts:
        market = part.venv.venv.market
        assert market.config != base and part.residual.baseline is not control.baseline
        expected = make_baseline("whalley_wilmott@cheapest", market.config).half_width(market)
        assert np.array_equal(part.residual.half_width(market), expected)
    with pytest.raises(ValueError, match=r"n_envs \(3\) must be a multiple of the family's markets \(2\)"):
        sb3.make_vec_env(base, 3, seed=0, family=family())


@pytest.mark.parametrize(
    ("draws", "message"),
    [
        ({"episode.n_steps": [1, 2]}, r"the episode \(episode\.\*\) cannot be drawn"),
        ({"agent.max_trade": [1, 2]}, r"the agent's book and limits \(agent\.\*\) cannot be drawn"),
        (
            {"market.sigmaa": [0.1, 0.2]},
            r"draws\['market\.sigmaa'\]: no field of the scenario has this path",
        ),
        ({"market.jumps.enabled": [0, 1]}, r"only numeric fields can be drawn; market\.jumps\.enabled holds False"),
        (
            {"market.sigma": [0.3, 20.0]},
            r"(?s)every draw at its high end.*market\.sigma: Input should be less than or equal",
        ),
        ({"market.sigma": [0.9, 0.3]}, r"low must be <= high"),
        ({"market.sigma": {"low": 0.0, "high": 1.0, "log": True}}, r"log-uniform range needs low > 0"),
        ({"market.sigma": [0.1, 0.2, 0.3]}, r"a range is \[low, high\]"),
        ({}, r"draws must name at least one field"),
    ],
)
def test_a_bad_family_names_the_draw(draws, message):
    with pytest.raises((ConfigError, ValueError), match=message):
        check_family(FamilyConfig.model_validate({"draws": draws}), resolve_config("default"))


def test_a_draw_that_switches_a_feature_off_is_refused():
    base = resolve_config("liquidation-cascade")
    draws = {
        f"venues.perp.liquidations.{side}_oi_usd": {"low": 0.0, "high": 1.0, "scale": True}
        for side in ("long", "short")
    }
    with pytest.raises(ConfigError, match="whether a second-order feature is on changes"):
        check_family({"draws": draws}, base)
