"""The SB3 glue: names to classes, normaliser file names, the normalised batched env, model building."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from stable_baselines3.common.vec_env import VecNormalize

from hedgegym.agents import sb3
from hedgegym.envs.config import load_scenario


def test_algorithms_and_activations_by_name():
    assert sb3.algorithm_class("ppo").__name__ == "PPO" and sb3.algorithm_class("td3").__name__ == "TD3"
    with pytest.raises(ValueError, match="unknown algorithm 'dqn'; allowed: ppo, sac, td3"):
        sb3.algorithm_class("dqn")
    assert sb3.activation("relu") is torch.nn.ReLU
    with pytest.raises(ValueError, match="allowed: tanh"):
        sb3.activation("sigmoid")


def test_managed_arguments_are_not_hyperparameters():
    names = sb3.hyperparameters_signature("sac")
    assert "buffer_size" in names and "ent_coef" in names
    assert not {"env", "seed", "policy_kwargs", "tensorboard_log", "device", "action_noise"} & set(names)
    assert "ortho_init" in sb3.policy_parameters("ppo") and "ortho_init" not in sb3.policy_parameters("sac")


def test_policy_kwargs_unset_fields_take_sb3_defaults():
    kwargs = sb3.sb3_policy_kwargs({"net_arch": [32], "activation_fn": "tanh", "log_std_init": None})
    assert kwargs == {"net_arch": [32], "activation_fn": torch.nn.Tanh}


def test_vecnormalize_file_sits_beside_the_model(tmp_path):
    assert sb3.vecnormalize_path(tmp_path / "best_model.zip") == tmp_path / "best_model_vecnormalize.pkl"


def test_normalised_env_and_model():
    normalize = {"observations": True, "rewards": True, "clip_observations": 5.0, "clip_rewards": 5.0}
    env = sb3.make_vec_env(load_scenario("default"), n_envs=3, seed=0, normalize=normalize, gamma=0.9)
    assert isinstance(sb3.find_vecnormalize(env), VecNormalize) and env.gamma == 0.9
    model = sb3.build_model(
        "td3", env, {"learning_starts": 8, "batch_size": 8}, {"net_arch": [16]}, seed=0, action_noise_std=0.2
    )
    assert np.allclose(model.action_noise._sigma, 0.2) and model.action_noise._sigma.shape == (3,)
    model.learn(48)
    assert np.abs(env.obs_rms.mean).sum() > 0  # statistics were updated while training
    raw = sb3.make_vec_env(load_scenario("default"), n_envs=2, seed=0)
    assert sb3.find_vecnormalize(raw) is None
