"""Per-market advantages: every market of a family weighs the same in a policy update.

A rollout over a family of markets (:mod:`hedgegym.envs.family`, ``scenario.randomize``) holds
several markets side by side, ``n_envs / markets`` envs each. Their rewards differ in scale by
orders of magnitude: on the generalist's family the 5 costliest of 48 markets make 58 % of the
summed objective (``docs/constant_bound.py``), so PPO's update, which normalises advantages over
the whole minibatch, follows the costliest markets and neglects the rest (the family's best
constant band by the summed objective loses 113k USD a week on the default market).
``training.per_market_advantages`` standardises the advantages of each market's envs on their own
after every rollout,

    A~(i, t) = (A(i, t) - mean_k) / std_k,     over the envs i of market k and every step t,

so the update ascends ``sum_k J_k / s_k``, each market's objective in units of its own spread.
For a policy that observes the market (``env.market_context``), and can act differently on each,
the reweighting leaves each market's best policy where it is; what it changes is that the cheap
markets are learned at all. It is the per-task normalisation of multi-task RL (PopArt, Hessel et
al. 2019, normalises each task's targets; here, as PPO already normalises advantages, their
advantages), and the scale-free mean of ``docs/constant_bound.py``.

Example:
    >>> adv = np.array([[1.0, 3.0, 100.0, 300.0], [1.0, 3.0, 100.0, 300.0]])
    >>> per_market_advantages(adv, markets=2).round(6).tolist()
    [[-1.0, 1.0, -1.0, 1.0], [-1.0, 1.0, -1.0, 1.0]]
"""

from __future__ import annotations

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback

_EPS = 1e-8


def per_market_advantages(advantages: np.ndarray, markets: int) -> np.ndarray:
    """``[n_steps, n_envs]`` advantages standardised within each of ``markets`` equal blocks of envs
    (envs ``k * n_envs / markets`` onwards are market ``k``, as the family env lays them out)."""
    adv = np.asarray(advantages)
    if adv.ndim != 2 or markets < 1 or adv.shape[1] % markets:
        raise ValueError(
            f"per-market advantages need [n_steps, n_envs] with n_envs a multiple of {markets} (got shape {adv.shape})"
        )
    blocks = adv.reshape(adv.shape[0], markets, -1)
    mean = blocks.mean(axis=(0, 2), keepdims=True)
    std = blocks.std(axis=(0, 2), keepdims=True)
    return ((blocks - mean) / (std + _EPS)).reshape(adv.shape).astype(adv.dtype, copy=False)


class PerMarketAdvantage(BaseCallback):
    """After each rollout, the rollout buffer's advantages become :func:`per_market_advantages` of
    them (SB3 computes GAE, calls ``on_rollout_end``, then updates: as in
    :class:`hedgegym.agents.paired.PairedAdvantage`)."""

    def __init__(self, markets: int):
        super().__init__()
        self.markets = int(markets)

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        buffer = self.model.rollout_buffer
        buffer.advantages[...] = per_market_advantages(buffer.advantages, self.markets)
