"""Env constructor arguments are strictly typed: a truthy string never turns a switch on (issue 11)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from hedgegym.envs import HedgingEnv, HedgingVectorEnv
from hedgegym.envs.sb3_vec_env import HedgingSB3VecEnv, make_sb3_vec_env

SHORT = {"episode__horizon_days": 1}


@pytest.mark.parametrize(
    ("make", "name", "value"),
    [
        (lambda v: HedgingVectorEnv(4, parallel=v, **SHORT), "parallel", "no"),
        (lambda v: HedgingVectorEnv(4, parallel=v, **SHORT), "parallel", 1),
        (lambda v: HedgingVectorEnv(4, agent_impact=v, **SHORT), "agent_impact", "no"),
        (lambda v: HedgingVectorEnv(4, agent_impact=v, **SHORT), "agent_impact", 0),
        (lambda v: HedgingEnv(agent_impact=v, **SHORT), "agent_impact", "no"),
        (lambda v: HedgingEnv(agent_impact=v, **SHORT), "agent_impact", None),
        (lambda v: gym.make("hedgegym/Hedging-v2", agent_impact=v), "agent_impact", "false"),
        (lambda v: make_sb3_vec_env("default", n_envs=2, step_info=v, **SHORT), "step_info", "off"),
        (lambda v: make_sb3_vec_env("default", n_envs=2, parallel=v, **SHORT), "parallel", "yes"),
        (lambda v: HedgingVectorEnv(v, **SHORT), "num_envs", 4.0),
        (lambda v: HedgingVectorEnv(v, **SHORT), "num_envs", "4"),
        (lambda v: HedgingVectorEnv(v, **SHORT), "num_envs", True),
        (lambda v: make_sb3_vec_env("default", n_envs=v, **SHORT), "num_envs", 2.5),
        (lambda v: make_sb3_vec_env("default", n_envs=2, seed=v, **SHORT), "seed", 1.5),
        (lambda v: make_sb3_vec_env("default", n_envs=2, seed=v, **SHORT), "seed", "0"),
    ],
)
def test_wrong_type_is_a_type_error_naming_the_argument(make, name, value):
    with pytest.raises(TypeError, match=rf"^{name} must be .*\(got {value!r:.4} ?.*of type {type(value).__name__}\)"):
        make(value)


@pytest.mark.parametrize(
    ("make", "name"),
    [
        (lambda: HedgingVectorEnv(0, **SHORT), "num_envs"),
        (lambda: make_sb3_vec_env("default", n_envs=2, seed=-1, **SHORT), "seed"),
    ],
)
def test_out_of_range_integer_is_a_value_error(make, name):
    with pytest.raises(ValueError, match=rf"^{name} must be an integer >= "):
        make()


def test_real_booleans_and_numpy_scalars_are_accepted():
    envs = HedgingVectorEnv(np.int64(2), parallel=np.bool_(False), agent_impact=False, **SHORT)
    assert envs.num_envs == 2 and envs.market.parallel is False
    assert HedgingVectorEnv(2, parallel=None, **SHORT).market.parallel is False  # None: by batch size
    venv = HedgingSB3VecEnv(HedgingVectorEnv(2, autoreset_mode="SameStep", **SHORT), step_info=np.True_)
    assert venv.step_info is True


def test_agent_impact_false_really_turns_the_impact_off():
    """The switch that a string "no" used to leave on: with it off, the agent's trade does not move spot."""
    spots = {}
    for impact in (True, False):
        env = HedgingEnv(agent_impact=impact, **SHORT)
        env.reset(seed=3)
        _, _, _, _, info = env.step(np.ones(env.action_space.shape, dtype=np.float32))
        spots[impact] = info["spot"]
    exo = HedgingEnv(agent_impact=False, **SHORT)
    exo.reset(seed=3)
    _, _, _, _, still = exo.step(np.zeros(exo.action_space.shape, dtype=np.float32))
    assert spots[False] == pytest.approx(still["spot"], rel=1e-12) and spots[True] != spots[False]
