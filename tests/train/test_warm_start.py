"""training.warm_start (hedgegym.train.warm_start): the search, the policy's initial action, the config.

The search is checked against things that do not share its code: the objective it records for
``a = 0`` is the hedger's own, run by the evaluation's compiled path; on a market where trading is
expensive and risk is nearly free, theory (Whalley & Wilmott 1997: the band widens as costs rise
and risk aversion falls) says the widest band wins, and the search finds it; and a warm-started
policy, run by the periodic evaluation through SB3, scores exactly the constant action it was set to.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from hedgegym.agents.baselines import make_baseline
from hedgegym.agents.sb3 import set_mean_action
from hedgegym.envs.config import ConfigError
from hedgegym.envs.layout import OBS_DIM
from hedgegym.train.evaluate import objective, run_policy
from hedgegym.train.experiment import validate_experiment
from hedgegym.train.training import _control, build_env_and_model, train
from hedgegym.train.warm_start import constant_policy, search, seed_range

ONE_DAY = {
    "episode": {"horizon_days": 1.0},
    "agent": {
        "venues": ["spot"],
        "lines": [{"strike": 100_000.0, "expiry_days": 1.0, "kind": "call", "quantity": -20.0}],
    },
}


def experiment(algorithm="ppo", control=None, warm_start=None, scenario=None, **sections):
    data = {
        "scenario": {"name": "default", "overrides": scenario or ONE_DAY},
        "algorithm": {
            "name": algorithm,
            "control": control if control is not None else {"kind": "band", "baseline": "whalley_wilmott@spot"},
            "hyperparameters": {"n_steps": 32, "batch_size": 64, "n_epochs": 1}
            if algorithm == "ppo"
            else {"learning_starts": 32, "batch_size": 16, "buffer_size": 500},
        },
        "env": {"n_envs": 4},
        "training": {"total_timesteps": 128, "checkpoint_every": 0, "warm_start": warm_start},
        "evaluation": {"every": 128, "episodes": 16, "final_episodes": 16, "baselines": []},
    }
    for key, value in sections.items():
        data[key] = {**data.get(key, {}), **value}
    return validate_experiment(data)


# ------------------------------------------------------------------------------------- config
def test_warm_start_needs_a_control():
    with pytest.raises(ConfigError, match=r"training.warm_start: needs algorithm.control"):
        validate_experiment(
            {
                "algorithm": {"name": "ppo"},
                "training": {"total_timesteps": 100, "warm_start": {}},
            }
        )


@pytest.mark.parametrize(
    "warm, field, message",
    [
        ({"values": [0.0, 1.5]}, "training.warm_start.values", r"\[-1, 1\] \(got 1.5\)"),
        ({"values": [0.5, 0.5]}, "training.warm_start.values", "must not repeat"),
        ({"values": []}, "training.warm_start.values", "at least 1"),
        ({"episodes": 3}, "training.warm_start.episodes", "greater than or equal to 10"),
        ({"passes": 0}, "training.warm_start.passes", "greater than or equal to 1"),
        ({"epsiodes": 30}, "training.warm_start.epsiodes", "unknown field"),
    ],
)
def test_bad_warm_start_fields_are_named(warm, field, message):
    with pytest.raises(ConfigError) as err:
        experiment(warm_start=warm)
    assert field in str(err.value) and re.search(message, str(err.value)), str(err.value)


def test_warm_start_seeds_are_kept_apart_from_the_held_out_ones():
    cfg = experiment(warm_start={"episodes": 10})
    warm = seed_range(cfg)
    assert len(warm) == 20 and warm.start >= 2**40
    held_out = range(cfg.evaluation.seed, cfg.evaluation.seed + 16)
    assert not set(warm) & set(held_out)
    with pytest.raises(ConfigError, match=r"evaluation.seed=.*overlap the warm start's seeds"):
        experiment(warm_start={"episodes": 10}, evaluation={"seed": warm.start + 5})


# ------------------------------------------------------------------------------------- search
def test_zero_is_scored_as_the_hedger_itself_and_the_best_is_the_tables_maximum():
    cfg = experiment(warm_start={"episodes": 12, "values": [-0.5, 0.0, 0.5], "passes": 1})
    record = search(cfg, _control(cfg))
    scenario = cfg.scenario.resolved
    # The hedger through its own (compiled, fused) path on the search's seeds.
    seeds = np.asarray(seed_range(cfg))[:12]
    hedger, _ = run_policy(make_baseline("whalley_wilmott@spot", scenario), scenario, seeds, n_sample_paths=0)
    assert record["search_zero_objective"] == pytest.approx(objective(hedger, scenario), rel=1e-12)
    table = record["evaluations"]
    assert table[0]["action"] == [0.0, 0.0]
    assert len({tuple(e["action"]) for e in table}) == len(table)  # each candidate evaluated once
    assert record["search_best_objective"] == max(e["objective"] for e in table)
    assert record["action"] in (record["search_best"], [0.0, 0.0])
    assert record["accepted"] == (record["action"] != [0.0, 0.0])
    # Reproducible: the same config searches the same paths to the same record.
    assert search(cfg, _control(cfg)) == record


def test_on_an_expensive_market_with_cheap_risk_the_widest_band_wins():
    # 1 % fee and half-spread on spot, risk aversion 1e-4 of the default: each trade costs far more
    # than the variance it removes, so a wide band around delta beats rebalancing every step.
    scenario = {
        **ONE_DAY,
        "venues": {"spot": {"fee": 0.01, "half_spread": 0.01}},
        "agent": {**ONE_DAY["agent"], "risk_aversion": 1.0e-4},
    }
    cfg = experiment(
        control={"kind": "band", "baseline": "delta@spot"},
        warm_start={"episodes": 64, "values": [-1.0, 0.0, 1.0], "passes": 1},
        scenario=scenario,
    )
    record = search(cfg, _control(cfg))
    assert record["search_best"][0] == 1.0
    assert record["accepted"] and record["action"][0] == 1.0
    _, lo, _ = record["paired_vs_zero"]
    assert lo > 0.0


def test_values_of_zero_only_keep_the_hedger():
    cfg = experiment(warm_start={"episodes": 10, "values": [0.0]})
    record = search(cfg, _control(cfg))
    assert record["action"] == [0.0, 0.0] and not record["accepted"] and "paired_vs_zero" not in record
    assert len(record["evaluations"]) == 1


# ------------------------------------------------------------------------------ initial action
@pytest.mark.parametrize("algorithm", ["ppo", "sac", "td3"])
def test_the_initial_action_is_the_chosen_constant_in_every_state(algorithm):
    cfg = experiment(algorithm=algorithm)
    env, model = build_env_and_model(cfg)
    x = np.array([0.3, -0.7])
    set_mean_action(model, x)
    obs = np.random.default_rng(0).normal(size=(5, OBS_DIM)).astype(np.float32)
    actions, _ = model.predict(obs, deterministic=True)
    np.testing.assert_allclose(actions, np.tile(x, (5, 1)), atol=1e-6)
    target = getattr(model.policy, "actor_target", None)
    if target is not None:  # TD3: the target actor starts as the actor
        for key, value in model.policy.actor.state_dict().items():
            np.testing.assert_array_equal(target.state_dict()[key].numpy(), value.numpy(), err_msg=key)
    env.close()


def test_a_warm_started_run_starts_its_best_model_at_the_constant(tmp_path):
    cfg = experiment(warm_start={"episodes": 12, "values": [-0.5, 0.0, 0.5]})
    result = train(cfg, out=tmp_path / "run", notify=lambda line: None)
    record = json.loads((result.run_dir / "warm_start.json").read_text())
    x = np.asarray(record["action"])
    history = json.loads((result.run_dir / "history.json").read_text())
    first = history["evaluations"][0]
    assert first["timesteps"] == 0
    # The step-0 evaluation (SB3 policy, normaliser, control) scores the constant policy exactly.
    ev, scenario = cfg.evaluation, cfg.scenario.resolved
    seeds = np.arange(ev.seed + ev.final_episodes, ev.seed + ev.final_episodes + ev.episodes)
    per_episode, _ = run_policy(constant_policy(_control(cfg), x), scenario, seeds, n_sample_paths=0)
    assert first["objective"] == pytest.approx(objective(per_episode, scenario), rel=1e-9)
    assert (result.run_dir / "best_model.zip").is_file()
