"""Experiment configs: every shipped config loads; bad input is a ConfigError naming field, value, allowed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from hedgegym.envs.config import ConfigError
from hedgegym.train.experiment import ExperimentConfig, experiment_yaml, load_experiment, validate_experiment

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))
MINIMAL = {"algorithm": {"name": "ppo"}, "training": {"total_timesteps": 1000}}


def with_(**sections) -> dict:
    """MINIMAL with sections replaced or added."""
    return {**MINIMAL, **sections}


def error_of(data) -> str:
    with pytest.raises(ConfigError) as info:
        validate_experiment(data)
    return str(info.value)


def test_the_issue_configs_are_shipped():
    names = {p.stem for p in CONFIGS}
    assert {"ppo_spot", "ppo_multi", "sac_multi", "ppo_short_gamma_crash", "ppo_zero_dte"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_shipped_config_loads_and_round_trips(path):
    cfg = load_experiment(path)
    assert cfg.name == path.stem
    assert cfg.evaluation.baselines, "every shipped config names the baselines it must beat"
    # The saved (resolved) form loads back to the same experiment, scenario included.
    again = validate_experiment(yaml.safe_load(experiment_yaml(cfg)))
    assert again.scenario.resolved == cfg.scenario.resolved
    assert again.resolved_dict() == cfg.resolved_dict()


def test_spot_and_multi_venue_configs_trade_what_the_issue_says():
    configs = {p.stem: load_experiment(p) for p in CONFIGS}
    assert configs["ppo_spot"].scenario.resolved.agent.venues == ["spot"]
    assert configs["ppo_multi"].scenario.resolved.agent.venues == ["spot", "perp", "future"]
    assert configs["ppo_multi"].scenario.resolved.name == "default"
    assert configs["ppo_short_gamma_crash"].scenario.resolved.name == "short-gamma-crash"
    assert configs["ppo_zero_dte"].scenario.resolved.name == "zero-dte"
    assert configs["sac_multi"].algorithm.name == "sac"


def test_unknown_algorithm_lists_the_allowed_ones():
    msg = error_of(with_(algorithm={"name": "dqn"}))
    assert "algorithm.name" in msg and "'dqn'" in msg and "'ppo', 'sac' or 'td3'" in msg


@pytest.mark.parametrize(("algo", "key"), [("ppo", "buffer_size"), ("sac", "n_epochs"), ("ppo", "n_step")])
def test_hyperparameter_the_algorithm_does_not_take(algo, key):
    msg = error_of(with_(algorithm={"name": algo, "hyperparameters": {key: 10}}))
    assert "algorithm.hyperparameters" in msg and repr(key) in msg and "allowed:" in msg
    assert "learning_rate" in msg  # the allowed ones are listed


@pytest.mark.parametrize(
    ("key", "value", "expect"),
    [
        ("gamma", 1.5, "must be in (0, 1]"),
        ("learning_rate", -1e-3, "must be > 0"),
        ("n_epochs", "ten", "expected int"),
        ("n_steps", 3.5, "expected int"),
        ("normalize_advantage", "maybe", "expected bool"),
        ("n_epochs", True, "got a boolean"),
    ],
)
def test_bad_hyperparameter_values(key, value, expect):
    msg = error_of(with_(algorithm={"name": "ppo", "hyperparameters": {key: value}}))
    assert (f"{key}={value!r}" in msg or f"{key} must be" in msg and f"(got {value!r})" in msg) and expect in msg


def test_yaml_exponent_without_dot_is_a_number():
    # YAML 1.1 reads 3e-4 as a string; the config takes it as the float it means.
    cfg = validate_experiment(
        yaml.safe_load(
            "algorithm: {name: ppo, hyperparameters: {learning_rate: 3e-4}}\ntraining: {total_timesteps: 10}"
        )
    )
    assert cfg.algorithm.hyperparameters["learning_rate"] == pytest.approx(3e-4)


@pytest.mark.parametrize("timesteps", [-5, 0])
def test_non_positive_timesteps(timesteps):
    msg = error_of(with_(training={"total_timesteps": timesteps}))
    assert "training.total_timesteps" in msg and f"got {timesteps}" in msg and "greater than 0" in msg


def test_missing_timesteps_is_named():
    assert "training.total_timesteps" in error_of(with_(training={}))


def test_scenario_that_does_not_exist():
    msg = error_of(with_(scenario="no-such-market"))
    assert "scenario" in msg and "'no-such-market'" in msg and "default" in msg and "zero-dte" in msg


def test_bad_scenario_override_names_the_field():
    msg = error_of(with_(scenario={"name": "default", "overrides": {"market.sigmaa": 0.8}}))
    assert "market.sigmaa" in msg and "unknown field" in msg


@pytest.mark.parametrize(
    ("data", "field"),
    [
        (with_(trainig={"total_timesteps": 1}), "trainig"),
        (with_(env={"n_env": 4}), "env.n_env"),
        (with_(algorithm={"name": "ppo", "policy_kwargs": {"netarch": [64]}}), "algorithm.policy_kwargs.netarch"),
    ],
)
def test_typod_key_is_named(data, field):
    msg = error_of(data)
    assert field in msg and "unknown field" in msg


def test_policy_kwargs_checked_against_the_algorithms_policy():
    msg = error_of(with_(algorithm={"name": "ppo", "policy_kwargs": {"n_critics": 2}}))
    assert "policy_kwargs.n_critics" in msg and "PPO" in msg and "ortho_init" in msg
    msg = error_of(with_(algorithm={"name": "sac", "policy_kwargs": {"net_arch": {"pi": [8], "vf": [8]}}}))
    assert "vf" in msg and "qf" in msg
    msg = error_of(with_(algorithm={"name": "ppo", "policy_kwargs": {"activation_fn": "sigmoid"}}))
    assert "activation_fn" in msg and "'tanh'" in msg


def test_action_noise_is_for_off_policy_only():
    assert "action_noise_std" in error_of(with_(algorithm={"name": "ppo", "action_noise_std": 0.1}))
    cfg = validate_experiment(with_(algorithm={"name": "td3", "action_noise_std": 0.1}))
    assert cfg.algorithm.action_noise_std == 0.1


def test_batch_larger_than_rollout():
    msg = error_of(
        with_(algorithm={"name": "ppo", "hyperparameters": {"n_steps": 8, "batch_size": 64}}, env={"n_envs": 4})
    )
    assert "batch_size=64" in msg and "32" in msg


def test_unknown_baseline_and_venue_the_agent_cannot_trade():
    msg = error_of(with_(evaluation={"baselines": ["delta", "bogus"]}))
    assert "evaluation.baselines" in msg and "'bogus'" in msg and "whalley_wilmott" in msg
    spot_only = {"name": "default", "overrides": {"agent.venues": ["spot"]}}
    msg = error_of(with_(scenario=spot_only, evaluation={"baselines": ["delta@perp"]}))
    assert "delta@perp" in msg and "agent.venues" in msg


def test_held_out_seeds_must_not_overlap_training_seeds():
    msg = error_of(with_(training={"total_timesteps": 10, "seed": 999_990}, env={"n_envs": 64}))
    assert "evaluation.seed" in msg and "overlap" in msg


def test_overrides_are_dotted_typed_and_merge_into_the_scenario(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("algorithm: {name: ppo}\ntraining: {total_timesteps: 100}\nscenario: zero-dte\n")
    cfg = load_experiment(
        path,
        {
            "training.seed": "7",
            "scenario.overrides.market.sigma": "0.9",
            "algorithm.hyperparameters.learning_rate": "1e-3",
        },
    )
    assert cfg.training.seed == 7
    assert cfg.algorithm.hyperparameters["learning_rate"] == pytest.approx(1e-3)
    scenario = cfg.scenario.resolved
    # The override changes sigma only: the rest of zero-dte's market section stays.
    assert scenario.market.sigma == 0.9 and scenario.market.impact.resilience == 52560.0
    assert scenario.name == "zero-dte"


def test_inline_scenario_config():
    cfg = validate_experiment(
        with_(
            scenario={
                "config": {"name": "mine", "market": {"sigma": 0.3}},
                "overrides": {"agent": {"venues": ["perp"]}},
            }
        )
    )
    assert cfg.scenario.resolved.market.sigma == 0.3 and cfg.scenario.resolved.agent.venues == ["perp"]
    assert "not both" in error_of(with_(scenario={"name": "default", "config": {}}))


def test_config_is_frozen_and_run_name_is_derived():
    cfg = validate_experiment(MINIMAL)
    with pytest.raises(Exception, match="frozen"):
        cfg.training = None
    assert cfg.run_name == "ppo-default-s0"
    assert isinstance(cfg, ExperimentConfig) and cfg.gamma == 0.99


def test_importing_the_train_package_loads_no_torch():
    code = (
        "import sys, hedgegym.train, hedgegym.train.experiment, hedgegym.agents.sb3; "
        "assert 'torch' not in sys.modules and 'stable_baselines3' not in sys.modules; "
        "from hedgegym.train import train; print(train.__name__)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "train"


# ------------------------------------------------------------------ hyperparameter ranges (issue 11)
@pytest.mark.parametrize(
    ("algo", "key", "value", "allowed"),
    [
        ("ppo", "ent_coef", -5, ">= 0"),
        ("ppo", "learning_rate", 0, "> 0"),
        ("sac", "learning_rate", -3e-4, "> 0"),
        ("ppo", "clip_range", 1.5, "in (0, 1]"),
        ("ppo", "clip_range", 0.0, "in (0, 1]"),
        ("ppo", "clip_range_vf", -0.2, "> 0, or null"),
        ("ppo", "n_steps", 0, ">= 1"),
        ("ppo", "n_epochs", 0, ">= 1"),
        ("ppo", "gamma", 0.0, "in (0, 1]"),
        ("ppo", "gae_lambda", 1.01, "in [0, 1]"),
        ("ppo", "vf_coef", -0.5, ">= 0"),
        ("ppo", "max_grad_norm", 0, "> 0"),
        ("ppo", "target_kl", -0.01, "> 0"),
        ("ppo", "sde_sample_freq", 0, "-1 (once per rollout) or >= 1"),
        ("sac", "tau", 0.0, "in (0, 1]"),
        ("td3", "tau", 2.0, "in (0, 1]"),
        ("sac", "batch_size", 0, ">= 1"),
        ("sac", "buffer_size", 0, ">= 1"),
        ("sac", "learning_starts", -1, ">= 0"),
        ("sac", "gradient_steps", 0, "-1 (as many as env steps) or >= 1"),
        ("sac", "ent_coef", -0.1, ">= 0"),
        ("sac", "ent_coef", "auto_-1", "'auto', 'auto_<initial value > 0>'"),
        ("sac", "ent_coef", "sometimes", "'auto', 'auto_<initial value > 0>'"),
        ("sac", "target_entropy", "high", "a number or auto"),
        ("sac", "target_update_interval", 0, ">= 1"),
        ("td3", "policy_delay", 0, ">= 1"),
        ("td3", "target_policy_noise", -0.2, ">= 0"),
        ("td3", "target_noise_clip", -0.5, ">= 0"),
        ("td3", "train_freq", 0, "an integer >= 1 or [n >= 1, 'step' | 'episode']"),
        ("td3", "train_freq", [1, "fortnight"], "an integer >= 1 or [n >= 1, 'step' | 'episode']"),
        ("ppo", "learning_rate", float("inf"), "finite"),
    ],
)
def test_hyperparameters_get_the_algorithms_ranges(algo, key, value, allowed):
    msg = error_of(with_(algorithm={"name": algo, "hyperparameters": {key: value}}))
    assert f"algorithm.hyperparameters: {key} must be " in msg and allowed in msg, msg
    assert msg.count("(got ") == 1 and "(got {" not in msg, msg  # the value, not the whole section


@pytest.mark.parametrize(
    ("algo", "key", "value"),
    [
        ("ppo", "ent_coef", 0.01),
        ("ppo", "gae_lambda", 0.0),
        ("ppo", "clip_range", 1.0),
        ("ppo", "target_kl", None),
        ("ppo", "sde_sample_freq", -1),
        ("sac", "ent_coef", "auto"),
        ("sac", "ent_coef", "auto_0.1"),
        ("sac", "ent_coef", 0.05),
        ("sac", "target_entropy", -2.0),
        ("sac", "gradient_steps", -1),
        ("td3", "train_freq", [1, "episode"]),
        ("sac", "learning_rate", "3e-4"),
    ],
)
def test_hyperparameters_inside_the_ranges_load(algo, key, value):
    cfg = validate_experiment(with_(algorithm={"name": algo, "hyperparameters": {key: value}}, env={"n_envs": 4}))
    assert key in cfg.algorithm.hyperparameters


def test_a_string_for_a_boolean_hyperparameter_is_an_error():
    msg = error_of(with_(algorithm={"name": "ppo", "hyperparameters": {"normalize_advantage": "false"}}))
    assert "normalize_advantage='false'" in msg and "got a str" in msg


def test_batch_size_must_divide_the_rollout():
    msg = error_of(
        with_(algorithm={"name": "ppo", "hyperparameters": {"n_steps": 32, "batch_size": 100}}, env={"n_envs": 4})
    )
    assert "batch_size=100 must divide" in msg and "= 128 transitions" in msg and "(e.g. 64)" in msg
    ok = validate_experiment(
        with_(algorithm={"name": "ppo", "hyperparameters": {"n_steps": 32, "batch_size": 64}}, env={"n_envs": 4})
    )
    assert ok.algorithm.hyperparameters["batch_size"] == 64


def test_minibatch_of_one_with_advantage_normalisation():
    msg = error_of(
        with_(algorithm={"name": "ppo", "hyperparameters": {"n_steps": 8, "batch_size": 1}}, env={"n_envs": 1})
    )
    assert "batch_size=1" in msg and "normalize_advantage" in msg


def test_replay_buffer_must_hold_a_transition_per_env():
    msg = error_of(with_(algorithm={"name": "sac", "hyperparameters": {"buffer_size": 8}}, env={"n_envs": 16}))
    assert "buffer_size=8" in msg and "env.n_envs = 16" in msg


def test_cli_override_of_a_hyperparameter_is_range_checked(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("algorithm: {name: ppo}\ntraining: {total_timesteps: 100}\n")
    with pytest.raises(ConfigError, match=r"ent_coef must be >= 0 .*\(got -5(\.0)?\)"):
        load_experiment(path, {"algorithm.hyperparameters.ent_coef": "-5"})


def test_seed_and_episode_limits():
    assert "training.seed" in error_of(with_(training={"total_timesteps": 10, "seed": 2**32}))
    # The final evaluation's 2000 seeds and the periodic evaluations' 200 after them must all fit.
    msg = error_of(with_(evaluation={"seed": 2**63 - 100, "final_episodes": 2000}))
    assert "evaluation.seed" in msg and "2**63 - 2200" in msg
    assert "evaluation.seed" in error_of(with_(evaluation={"seed": 2**63 - 2100, "final_episodes": 2000}))
    msg = error_of(with_(evaluation={"final_episodes": 10**9}))
    assert "evaluation.final_episodes" in msg and "1000000" in msg


@pytest.mark.parametrize(
    ("control", "expected"),
    [
        ({"kind": "band", "baseline": "gamma_scalp"}, r"unknown baseline 'gamma_scalp'; known baselines: no_hedge, "),
        ({"kind": "band", "baseline": "no_hedge"}, r"baseline 'no_hedge': band control needs a band hedger"),
        ({"kind": "residual", "baseline": "delta", "scale": 3.0}, r"scale"),
        ({"kind": "residual", "baseline": "delta", "centre": False}, r"centre=false is a band control's option"),
    ],
)
def test_control_errors_name_the_field_and_what_is_allowed(control, expected):
    path = next(p for p in CONFIGS if p.stem == "ppo_spot")
    with pytest.raises(ConfigError, match=r"algorithm\.control.*" + expected):
        load_experiment(path, {"algorithm.control": control})
