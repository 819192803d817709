"""Registered ids: make / make_vec with overrides, the env checkers, user scenarios, a cheap import."""

from __future__ import annotations

import subprocess
import sys
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from gymnasium.vector import AutoresetMode
from stable_baselines3.common.env_checker import check_env as sb3_check_env

from hedgegym.envs import HedgingEnv, HedgingVectorEnv, register_scenario
from hedgegym.envs.config import ConfigError, list_scenarios, save_config
from hedgegym.envs.layout import OBS_DIM
from hedgegym.envs.registration import ENTRY_POINT, SCENARIO_IDS, VECTOR_ENTRY_POINT

IDS = list(SCENARIO_IDS.values())


def test_every_named_scenario_has_an_id_with_both_entry_points():
    assert set(SCENARIO_IDS) == set(list_scenarios())
    assert {
        "hedgegym/Hedging-v2",
        "hedgegym/ShortGammaCrash-v2",
        "hedgegym/LongGammaPin-v2",
        "hedgegym/ZeroDTE-v2",
        "hedgegym/VaultEpoch-v2",
        "hedgegym/Frictionless-v2",
        "hedgegym/VannaCrash-v2",
        "hedgegym/CrowdedDealers-v2",
        "hedgegym/LiquidationCascade-v2",
    } == set(IDS)
    for env_id in IDS:
        spec = gym.spec(env_id)
        assert spec.entry_point == ENTRY_POINT and spec.vector_entry_point == VECTOR_ENTRY_POINT


@pytest.mark.parametrize("env_id", IDS)
def test_env_checkers_pass_without_warnings(env_id):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # The checker renders in every mode of the metadata; "human" under the tests' Agg backend
        # says, once, that no window can be shown. That is the one warning allowed.
        warnings.filterwarnings("ignore", message=r".*cannot show a window")
        env = gym.make(env_id)
        check_env(env.unwrapped)  # with the render check: makes the env of every render mode from the spec
        sb3_check_env(gym.make(env_id))


@pytest.mark.parametrize(("env_id", "scenario"), [(v, k) for k, v in SCENARIO_IDS.items()])
def test_make_and_make_vec_build_the_scenario(env_id, scenario):
    from hedgegym.envs.config import load_scenario

    env = gym.make(env_id)
    assert isinstance(env.unwrapped, HedgingEnv) and env.unwrapped.config == load_scenario(scenario)
    vec = gym.make_vec(env_id, num_envs=3, vectorization_mode="vector_entry_point")
    assert isinstance(vec, HedgingVectorEnv) and vec.num_envs == 3 and vec.config == load_scenario(scenario)
    assert vec.metadata["autoreset_mode"] == AutoresetMode.NEXT_STEP
    assert vec.spec.id == env_id


def test_overrides_as_keyword_arguments():
    env = gym.make("hedgegym/ShortGammaCrash-v2", market__sigma=0.8, agent__venues=["spot"], market__heston__xi="1.5")
    config = env.unwrapped.config
    assert config.market.sigma == 0.8 and config.market.heston.xi == 1.5 and config.agent.venues == ["spot"]
    assert env.action_space.shape == (1,)
    vec = gym.make_vec(
        "hedgegym/ShortGammaCrash-v2",
        num_envs=2,
        vectorization_mode="vector_entry_point",
        agent__venues=["perp"],
        autoreset_mode=AutoresetMode.SAME_STEP,
    )
    assert vec.single_action_space.shape == (1,) and vec.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP
    with pytest.raises(ConfigError, match=r"market\.sigma: Input should be greater than 0"):
        gym.make("hedgegym/Hedging-v2", market__sigma=0.0)
    with pytest.raises(ConfigError, match=r"agent\.venuez: unknown field"):
        gym.make_vec("hedgegym/Hedging-v2", num_envs=2, vectorization_mode="vector_entry_point", agent__venuez=[])
    with pytest.raises(ConfigError, match="either config= or scenario="):
        gym.make("hedgegym/ZeroDTE-v2", config={})


def test_config_replaces_the_default_scenario_of_hedging_v0():
    env = gym.make("hedgegym/Hedging-v2", config={"market": {"sigma": 0.4}})
    assert env.unwrapped.config.market.sigma == 0.4


def test_module_prefix_imports_the_package_in_a_fresh_interpreter():
    code = (
        "import gymnasium as gym, sys; env = gym.make('hedgegym.envs:hedgegym/Hedging-v2'); "
        "print(type(env.unwrapped).__name__)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "HedgingEnv"


def test_import_registers_without_loading_numba():
    code = (
        "import sys, gymnasium as gym, hedgegym.envs; "
        "assert 'hedgegym/Hedging-v2' in gym.registry; "
        "print(sorted(m for m in ('numba', 'hedgegym.envs.kernel', 'pydantic') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ------------------------------------------------------------------------------------ user scenarios
def test_register_scenario_from_a_mapping_works_with_make_and_make_vec():
    env_id = register_scenario("calm-week", {"market": {"sigma": 0.3}, "dealers": {"lines": []}})
    assert env_id == "hedgegym/CalmWeek-v2"
    env = gym.make(env_id, agent__venues=["spot"])
    assert env.unwrapped.config.market.sigma == 0.3 and env.action_space.shape == (1,)
    check_env(env.unwrapped, skip_render_check=True)
    vec = gym.make_vec(env_id, num_envs=4, vectorization_mode="vector_entry_point")
    obs, _ = vec.reset(seed=0)
    obs, *_ = vec.step(np.zeros((4, 3)))
    assert obs.shape == (4, OBS_DIM) and vec.config.market.sigma == 0.3


def test_register_scenario_from_a_yaml_path_and_a_config(tmp_path):
    from hedgegym.envs.config import load_scenario

    config = load_scenario("zero-dte", {"market.sigma": 0.9})
    path = tmp_path / "fast.yaml"
    save_config(config, path)
    from_path = register_scenario("FastDay", path)
    assert gym.make(from_path).unwrapped.config == config
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # registering a name again replaces it, silently
        again = register_scenario("FastDay", config.model_copy(update={"description": "again"}))
    assert again == from_path and gym.make(again).unwrapped.config.description == "again"


def test_register_scenario_rejects_bad_names_and_configs():
    with pytest.raises(ValueError, match="scenario name must be letters and digits"):
        register_scenario("my crash!", {})
    with pytest.raises(ValueError, match="is a built-in id"):
        register_scenario("short-gamma-crash", {})
    with pytest.raises(ConfigError, match=r"market\.sigma"):
        register_scenario("Broken", {"market": {"sigma": "high"}})
    with pytest.raises(ConfigError, match="does not exist"):
        register_scenario("Missing", "/no/such/file.yaml")
    assert "hedgegym/Broken-v2" not in gym.registry
