"""The SB3 VecEnv adapter: DummyVecEnv's contract on the batched env, and PPO trains on it."""

from __future__ import annotations

import numpy as np
import pytest
from gymnasium.utils.env_checker import data_equivalence
from gymnasium.vector import AutoresetMode
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv

from hedgegym.envs import HedgingEnv, HedgingVectorEnv
from hedgegym.envs.layout import OBS_DIM
from hedgegym.envs.sb3_vec_env import HedgingSB3VecEnv, make_sb3_vec_env

SHORT = {"episode__horizon_days": 0.25}


# Six-step episodes of the default scenario and of one per second-order feature (their info has
# HedgingEnv's second-order keys: the adapter must pass them through).
SIX_STEPS = {
    "default": SHORT,
    "vanna-crash": SHORT,
    "crowded-dealers": SHORT,
    "liquidation-cascade": {"episode__horizon_days": 0.0625},
}


@pytest.mark.parametrize("scenario", list(SIX_STEPS))
def test_adapter_equals_dummy_vec_env_of_hedging_envs(scenario):
    n = 4
    short = SIX_STEPS[scenario]
    ours = make_sb3_vec_env(scenario, n_envs=n, seed=21, **short)
    ref = DummyVecEnv([lambda: HedgingEnv(scenario=scenario, **short) for _ in range(n)])
    ref.seed(21)
    assert data_equivalence(ours.reset(), ref.reset(), exact=True)
    assert data_equivalence(ours.reset_infos, ref.reset_infos, exact=True)
    rng = np.random.default_rng(0)
    episodes = 0
    for k in range(14):
        actions = rng.uniform(-1, 1, (n, 3)).astype(np.float32)
        obs, rewards, dones, infos = ours.step(actions)
        r_obs, r_rewards, r_dones, r_infos = ref.step(actions)
        assert data_equivalence((obs, rewards, dones), (r_obs, r_rewards, r_dones), exact=True), k
        for info, r_info in zip(infos, r_infos, strict=True):
            episode = info.pop("episode", None)
            assert data_equivalence(info, r_info, exact=True), k
            assert ("flow_gamma" in info and "atm_vol" in info) == (scenario != "default")
            if r_dones.any():
                assert episode["l"] == 6 and episode["r"] == pytest.approx(info["episode_metrics"]["reward"])
                assert info["TimeLimit.truncated"] and info["terminal_observation"].shape == (OBS_DIM,)
        assert data_equivalence(ours.reset_infos, ref.reset_infos, exact=True)
        episodes += int(dones.sum())
    assert episodes == 2 * n


def test_adapter_needs_same_step_autoreset():
    with pytest.raises(ValueError, match="autoreset_mode=AutoresetMode.SAME_STEP"):
        HedgingSB3VecEnv(HedgingVectorEnv(2))
    with pytest.raises(TypeError, match="must be a HedgingVectorEnv"):
        HedgingSB3VecEnv(HedgingEnv())


def test_attribute_and_method_access():
    venv = make_sb3_vec_env("frictionless", n_envs=3, agent__venues=["spot"], render_mode="ansi")
    assert venv.get_attr("render_mode") == ["ansi"] * 3
    assert venv.get_attr("observation_space", indices=[1])[0].shape == (OBS_DIM,)
    assert venv.get_attr("action_space")[0].shape == (1,)
    assert venv.env_is_wrapped(Monitor) == [True] * 3 and venv.env_is_wrapped(DummyVecEnv) == [False] * 3
    venv.reset()
    frames = venv.env_method("render")
    assert len(frames) == 3 and frames[0][2].startswith("step 0/168")
    venv.set_attr("note", "x")
    assert venv.get_attr("note") == ["x"] * 3
    with pytest.raises(ValueError, match="share one simulator.*indices=None"):
        venv.env_method("render", indices=[0])
    with pytest.raises(ValueError, match="share one simulator"):
        venv.set_attr("note", "y", indices=0)
    with pytest.raises(AttributeError):
        venv.get_attr("no_such_attribute")
    venv.set_options({"foo": 1})
    with pytest.raises(ValueError, match="take no reset options"):
        venv.reset()


def test_step_info_off_keeps_only_what_sb3_reads():
    venv = make_sb3_vec_env("default", n_envs=2, seed=0, step_info=False, **SHORT)
    venv.reset()
    for _ in range(6):
        _, _, dones, infos = venv.step(np.zeros((2, 3), dtype=np.float32))
    assert dones.all()
    assert set(infos[0]) == {"TimeLimit.truncated", "terminal_observation", "episode", "episode_metrics"}


def test_ppo_learns_on_the_adapter_and_predicts_on_hedging_env():
    torch = pytest.importorskip("torch")
    from stable_baselines3 import PPO
    from stable_baselines3.common.evaluation import evaluate_policy

    # Two torch threads on a small CPU box are slower than one for this tiny net.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        venv = make_sb3_vec_env("default", n_envs=8, seed=0, episode__horizon_days=1.0)
        model = PPO(
            "MlpPolicy",
            venv,
            n_steps=64,
            batch_size=128,
            n_epochs=2,
            seed=0,
            policy_kwargs={"net_arch": [32, 32]},
            device="cpu",
        )
        model.learn(total_timesteps=3072)
        assert model.num_timesteps == 3072
        assert len(model.ep_info_buffer) > 0 and {"r", "l", "t"} <= set(model.ep_info_buffer[0])
        env = HedgingEnv(episode__horizon_days=1.0)
        obs, _ = env.reset(seed=0)
        action, _ = model.predict(obs, deterministic=True)
        assert action.shape == (3,)
        env.step(action)
        mean, _ = evaluate_policy(model, venv, n_eval_episodes=8, warn=True)
        assert np.isfinite(mean)
    finally:
        torch.set_num_threads(threads)


def test_make_sb3_vec_env_accepts_configs_and_paths(tmp_path):
    from hedgegym.envs.config import load_scenario, save_config

    cfg = load_scenario("vault-epoch")
    save_config(cfg, tmp_path / "v.yaml")
    for source in ("vault-epoch", cfg, str(tmp_path / "v.yaml"), tmp_path / "v.yaml"):
        venv = make_sb3_vec_env(source, n_envs=2)
        assert venv.venv.config == cfg and venv.venv.autoreset_mode == AutoresetMode.SAME_STEP
