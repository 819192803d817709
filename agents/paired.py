"""Paired-path advantages: policy gradients with common random numbers between pairs of envs.

With ``training.paired_paths``, training envs ``2k`` and ``2k + 1`` share every episode's
exogenous path (one seed, :func:`hedgegym.envs.sb3_vec_env.make_sb3_vec_env` ``paired=True``):
the same returns, jumps, dealers' books and liquidations, so their P&L differs only through what
the two policies' exploration did differently. After each rollout the advantage of every
transition is replaced by its difference with its partner's at the same step,

    A~(2k, t) = A(2k, t) - A(2k + 1, t),      A~(2k + 1, t) = -A~(2k, t).

This is a valid baseline: the partner's advantage is a function of the shared path and the
partner's own exploration noise, neither of which depends on env ``2k``'s action at ``t``, so
``E[grad log pi(a_t | s_t) A(2k + 1, t)] = 0`` and the policy gradient keeps its expectation
(Williams 1992: any baseline independent of the action). What it removes is the path's noise,
shared by both: on a crash market a week's P&L spreads over hundreds of thousands of USD while
the edge of a better band is a few thousand, and PPO's value function cannot predict the jumps
it would have to subtract. The same idea is the paired comparison of the evaluation (both
policies on the same paths), and the antithetic/common-random-number variance reduction of
Monte-Carlo (Glasserman 2003, §4.2) and of evolution strategies (Salimans et al. 2017).

PPO normalises advantages per minibatch, so their scale is immaterial; the value function is
fitted to the returns as before (they are untouched).

**Antithetic exploration** (``training.antithetic_exploration``, with gSDE drawn once a rollout):
env ``2k + 1`` explores with the negative of env ``2k``'s noise matrix, so with a policy whose
latent features are the same in both (the same path; exactly so for a policy that observes only
the market's context) the pair acts ``mu + eps`` and ``mu - eps``. Each env's noise keeps its
distribution, so each term of the gradient keeps its expectation; the partner's advantage is now a
function of ``-eps``, and ``E[grad log pi(mu + eps) A(mu - eps)] = -E[grad log pi(mu + eps) A(mu +
eps)]``, so subtracting it doubles the gradient instead of leaving it (PPO's normalisation removes
the factor): the pair's term is the central finite difference ``eps (F(mu + eps) - F(mu - eps))`` of
antithetic evolution strategies on common random numbers (Salimans et al. 2017, §2.2), whose
first-order noise from the path and from ``F``'s curvature cancels.
"""

from __future__ import annotations

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback


def paired_advantages(advantages: np.ndarray) -> np.ndarray:
    """``[n_steps, n_envs]`` advantages minus the partner's (env ``i XOR 1``) at the same step.

    Example:
        >>> paired_advantages(np.array([[3.0, 1.0, -2.0, 5.0]])).tolist()
        [[2.0, -2.0, -7.0, 7.0]]
    """
    adv = np.asarray(advantages)
    if adv.ndim != 2 or adv.shape[1] % 2:
        raise ValueError(f"paired advantages need [n_steps, even n_envs] (got shape {adv.shape})")
    pairs = adv.reshape(adv.shape[0], -1, 2)
    diff = pairs[:, :, 0] - pairs[:, :, 1]
    return np.stack([diff, -diff], axis=2).reshape(adv.shape).astype(adv.dtype, copy=False)


class PairedAdvantage(BaseCallback):
    """After each rollout, the rollout buffer's advantages become :func:`paired_advantages` of them.

    SB3's on-policy loop computes the advantages (GAE) and then calls ``on_rollout_end``, before
    the update reads them: the one place to change them without subclassing the algorithm.
    """

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        buffer = self.model.rollout_buffer
        buffer.advantages[...] = paired_advantages(buffer.advantages)


def antithetic(matrices):
    """The exploration matrices ``[n_envs, ...]`` with env ``2k + 1``'s replaced by minus env ``2k``'s.

    Example:
        >>> import torch as th
        >>> antithetic(th.tensor([[1.0, 2.0], [5.0, 6.0], [-3.0, 0.5], [9.0, 9.0]])).tolist()
        [[1.0, 2.0], [-1.0, -2.0], [-3.0, 0.5], [3.0, -0.5]]
    """
    if matrices.shape[0] % 2:
        raise ValueError(f"antithetic exploration needs an even number of envs (got {matrices.shape[0]})")
    out = matrices.detach().clone()
    out[1::2] = -out[0::2]
    return out


class AntitheticExploration(BaseCallback):
    """At every rollout's start, after SB3 drew the rollout's gSDE noise matrices (``reset_noise``
    comes just before ``on_rollout_start``), makes them antithetic in pairs (:func:`antithetic`)."""

    def _on_step(self) -> bool:
        return True

    def _on_rollout_start(self) -> None:
        dist = self.model.policy.action_dist
        dist.exploration_matrices = antithetic(dist.exploration_matrices)
