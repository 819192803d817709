"""The SB3 wrapper that trains a policy through a control (:mod:`hedgegym.agents.residual`).

Its own module because it imports stable-baselines3 (the control itself does not), and a
checkpoint pickles it, so it must be importable by name.

Example:
    >>> import numpy as np
    >>> from hedgegym.agents.residual import BandControl
    >>> from hedgegym.envs.config import resolve_config
    >>> from hedgegym.envs.sb3_vec_env import make_sb3_vec_env
    >>> config = resolve_config("default")
    >>> venv = ResidualVecEnv(make_sb3_vec_env(config, n_envs=2, seed=0), BandControl.build("whalley_wilmott", config))
    >>> venv.action_space.shape, venv.reset().shape
    ((2,), (2, 20))
    >>> obs, rewards, dones, infos = venv.step(np.zeros((2, 2), dtype=np.float32))
    >>> bool(np.isfinite(rewards).all())
    True
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env import VecEnvWrapper

from hedgegym.agents.residual import BandControl, Residual, make_control
from hedgegym.envs.sb3_vec_env import PicklableVecEnvWrapper


class ResidualVecEnv(PicklableVecEnvWrapper):
    """SB3 ``VecEnvWrapper`` over a :class:`~hedgegym.envs.sb3_vec_env.HedgingSB3VecEnv`: the
    policy's actions are corrections on ``residual.baseline``.

    Observations, rewards and infos pass through unchanged; ``step_async(a)`` sends
    ``residual.actions(a, market)``, computed on the state the policy observed. When the market
    changes under it (a family env draws a new market per episode, :mod:`hedgegym.envs.family`),
    the control is rebuilt for the new market, as it is for any market it is evaluated on.
    """

    def __init__(self, venv, residual: Residual | BandControl):
        n = getattr(residual, "n_actions", None)
        space = None if n is None else gym.spaces.Box(-1.0, 1.0, (n,), dtype=np.float32)
        super().__init__(venv, action_space=space)
        self.residual = residual
        self._built_for = venv.venv.market.config

    def reset(self):
        return self.venv.reset()

    def step_async(self, actions: np.ndarray) -> None:
        market = self.venv.venv.market
        if market.config is not getattr(self, "_built_for", None):  # (a checkpoint of an older version has none)
            self.residual = make_control(self.residual.record, market.config)
            self._built_for = market.config
        self.venv.step_async(self.residual.actions(actions, market))

    def step_wait(self):
        return self.venv.step_wait()


def find_residual(env):
    """The residual wrapper's :class:`Residual` in ``env``'s wrapper chain, or None."""
    while isinstance(env, VecEnvWrapper):
        if hasattr(env, "residual"):
            return env.residual
        env = env.venv
    return None
