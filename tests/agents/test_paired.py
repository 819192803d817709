"""Paired-path training: pairs of envs on one exogenous path, advantages taken against the partner."""

from __future__ import annotations

import numpy as np
import pytest
from stable_baselines3.common.callbacks import BaseCallback, CallbackList

from hedgegym.agents import sb3
from hedgegym.agents.paired import AntitheticExploration, PairedAdvantage, paired_advantages
from hedgegym.envs.config import ConfigError, load_scenario
from hedgegym.envs.hedging_env import HedgingEnv
from hedgegym.envs.sb3_vec_env import make_sb3_vec_env
from hedgegym.train.experiment import validate_experiment


def test_paired_advantages_subtract_the_partner():
    rng = np.random.default_rng(0)
    adv = rng.normal(size=(7, 6)).astype(np.float32)
    got = paired_advantages(adv)
    for i in range(6):
        np.testing.assert_array_equal(got[:, i], adv[:, i] - adv[:, i ^ 1])
    assert got.dtype == np.float32
    with pytest.raises(ValueError, match="even n_envs"):
        paired_advantages(np.zeros((3, 5)))


def test_paired_envs_share_the_exogenous_path_through_autoresets():
    # Episodes of 6 steps, 14 steps: three episodes, two autoresets. Each env trades differently.
    overrides = {"episode__horizon_days": 0.25, "episode__dt_hours": 1.0}
    venv = make_sb3_vec_env("short-gamma-crash", n_envs=4, seed=7, paired=True, **overrides)
    venv.reset()
    rng = np.random.default_rng(1)
    exo, spot = [], []
    for _ in range(14):
        venv.step_async(rng.uniform(-1, 1, size=(4, venv.action_space.shape[0])))
        _, _, _, infos = venv.step_wait()
        exo.append([info["exo_spot"] for info in infos])
        spot.append([info["spot"] for info in infos])
    exo, spot = np.array(exo), np.array(spot)
    np.testing.assert_array_equal(exo[:, 0], exo[:, 1])
    np.testing.assert_array_equal(exo[:, 2], exo[:, 3])
    assert not np.array_equal(exo[:, 0], exo[:, 2])
    assert not np.array_equal(spot[:, 0], spot[:, 1])  # the trades' impact differs, the path does not
    # Pair k is the single env seeded seed + k (its first episode, no actions needed for exo_spot).
    single = HedgingEnv(load_scenario("short-gamma-crash", {"episode.horizon_days": 0.25, "episode.dt_hours": 1.0}))
    single.reset(seed=8)
    first = [single.step(np.zeros(single.action_space.shape))[4]["exo_spot"] for _ in range(6)]
    np.testing.assert_array_equal(exo[:6, 2], first)


def test_paired_envs_need_a_seed_and_an_even_count():
    with pytest.raises(ValueError, match="even n_envs"):
        make_sb3_vec_env("default", n_envs=3, seed=0, paired=True)
    with pytest.raises(ValueError, match="need a seed"):
        make_sb3_vec_env("default", n_envs=2, paired=True)


class _Seen(BaseCallback):
    """Keeps a copy of the advantages PPO will train on."""

    def __init__(self):
        super().__init__()
        self.advantages = []

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        self.advantages.append(self.model.rollout_buffer.advantages.copy())


def test_ppo_trains_on_antisymmetric_pair_advantages():
    config = load_scenario("default", {"episode.horizon_days": 8 / 24, "episode.dt_hours": 1.0})
    env = sb3.make_vec_env(config, 4, seed=0, paired=True)
    model = sb3.build_model("ppo", env, {"n_steps": 8, "batch_size": 16, "n_epochs": 1}, {}, seed=0)
    seen = _Seen()
    model.learn(64, callback=CallbackList([PairedAdvantage(), seen]))
    assert len(seen.advantages) == 2
    for adv in seen.advantages:
        np.testing.assert_array_equal(adv[:, 0::2], -adv[:, 1::2])
        assert np.abs(adv).max() > 0.0


class _FirstActions(BaseCallback):
    """Each rollout's first actions and the policy's mean action in those observations."""

    def __init__(self):
        super().__init__()
        self.first = []

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        import torch as th

        buffer = self.model.rollout_buffer
        with th.no_grad():
            obs = th.as_tensor(buffer.observations[0])
            mean = self.model.policy.get_distribution(obs).distribution.mean.numpy()
        self.first.append((buffer.actions[0].copy(), mean))


@pytest.mark.parametrize("antithetic", [True, False])
def test_antithetic_exploration_mirrors_each_pairs_noise(antithetic):
    """At a rollout's first step both envs of a pair see the same observation (the same path from
    the same reset), so with antithetic noise their actions are mean + eps and mean - eps."""
    config = load_scenario("default", {"episode.horizon_days": 8 / 24, "episode.dt_hours": 1.0})
    env = sb3.make_vec_env(config, 4, seed=0, paired=True)
    hyper = {"n_steps": 8, "batch_size": 16, "n_epochs": 1, "use_sde": True, "sde_sample_freq": -1}
    model = sb3.build_model("ppo", env, hyper, {"log_std_init": -1.0}, seed=0)
    seen = _FirstActions()
    model.learn(128, callback=CallbackList([PairedAdvantage(), *([AntitheticExploration()] * antithetic), seen]))
    assert len(seen.first) == 4
    for actions, mean in seen.first:
        np.testing.assert_allclose(mean[0::2], mean[1::2], rtol=1e-6)
        eps = actions[0::2] - mean[0::2]
        assert np.abs(eps).min() > 1e-4  # it explores
        mirrored = np.allclose(actions[1::2] - mean[1::2], -eps, rtol=1e-5, atol=1e-7)
        assert mirrored == antithetic


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            {"training": {"total_timesteps": 1000, "antithetic_exploration": True}},
            "antithetic_exploration=true needs training.paired_paths=true",
        ),
        (
            {"training": {"total_timesteps": 1000, "paired_paths": True, "antithetic_exploration": True}},
            r"needs algorithm.hyperparameters.use_sde=true and sde_sample_freq <= 0.*\(got use_sde=False",
        ),
        (
            {
                "algorithm": {"name": "ppo", "hyperparameters": {"use_sde": True, "sde_sample_freq": 4}},
                "training": {"total_timesteps": 1000, "paired_paths": True, "antithetic_exploration": True},
            },
            r"sde_sample_freq=4\)",
        ),
    ],
)
def test_antithetic_exploration_config_errors(change, expected):
    with pytest.raises(ConfigError, match=expected):
        validate_experiment({"algorithm": {"name": "ppo"}, **change})


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"algorithm": {"name": "sac"}}, r"training.paired_paths=true: only for on-policy algorithms \(ppo\), got"),
        ({"env": {"n_envs": 3}}, r"needs an even env.n_envs \(got 3\)"),
    ],
)
def test_paired_paths_config_errors(change, expected):
    data = {"algorithm": {"name": "ppo"}, "training": {"total_timesteps": 1000, "paired_paths": True}, **change}
    if data["algorithm"]["name"] == "ppo" and "env" in change:
        data["algorithm"]["hyperparameters"] = {"n_steps": 8, "batch_size": 24}
    with pytest.raises(ConfigError, match=expected):
        validate_experiment(data)


def test_paired_envs_in_a_family_share_paths_within_each_market():
    """Across a family, each market's batch is paired: the pairs share the path, the markets are
    those the unpaired family draws, and the advantages are paired, then standardised per market."""
    from hedgegym.agents.per_market import PerMarketAdvantage
    from hedgegym.envs.family import FamilyConfig

    config = load_scenario("default", {"episode.horizon_days": 8 / 24, "episode.dt_hours": 1.0})
    family = FamilyConfig.model_validate({"markets": 2, "draws": {"market.sigma": [0.3, 0.9]}})
    env = sb3.make_vec_env(config, 8, seed=3, paired=True, family=family)
    plain = sb3.make_vec_env(config, 8, seed=3, family=family)
    env.reset(), plain.reset()
    assert [p.venv.market.config for p in env.parts] == [p.venv.market.config for p in plain.parts]
    _, rewards, _, _ = env.step(np.zeros((8, 3), dtype=np.float32))
    np.testing.assert_array_equal(rewards[0::2], rewards[1::2])
    assert len(set(rewards[:4].tolist())) == 2  # two pairs of different paths in the first market
    model = sb3.build_model("ppo", env, {"n_steps": 8, "batch_size": 16, "n_epochs": 1}, {}, seed=0)
    seen = _Seen()
    model.learn(64, callback=CallbackList([PairedAdvantage(), PerMarketAdvantage(2), seen]))
    for adv in seen.advantages:
        np.testing.assert_allclose(adv[:, 0::2], -adv[:, 1::2], atol=1e-6)
        for block in (adv[:, :4], adv[:, 4:]):
            assert abs(block.mean()) < 1e-6 and abs(block.std() - 1.0) < 1e-4
