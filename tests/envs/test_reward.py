"""The episode mean-variance reward (``agent.reward: episode_mean_variance``), checked against its
closed form: an episode's rewards sum to ``C - (kappa/2)((C - m)^2 - m^2)`` in pnl_scale units,
with ``C`` the episode's P&L summed from ``info["pnl"]`` and ``m`` the mean of the episodes that
finished before it (an exponential average after ``REWARD_REFERENCE_EPISODES``)."""

from __future__ import annotations

import numpy as np
import pytest

from hedgegym.envs import HedgingEnv, HedgingVectorEnv
from hedgegym.envs.config import ConfigError
from hedgegym.envs.layout import OBS_NAMES, REWARD_REFERENCE_EPISODES

PNL_TO_DATE = OBS_NAMES.index("pnl_to_date")


def step_pnl(info):
    """The step's P&L from its parts (README, MODEL.md section 6), not the kernel's sum."""
    return (
        info["book_pnl"]
        + info["hedge_pnl"]
        - info["fees"]
        - info["slippage"]
        - info["funding"]
        - info["carry"]
        + info["interest"]
    )


def _run(scenario, n_envs, batches, overrides, kappa=2.0, seed=3):
    overrides = {"agent.reward": "episode_mean_variance", "agent.risk_aversion": kappa, **overrides}
    envs = HedgingVectorEnv(n_envs, scenario=scenario, **{k.replace(".", "__"): v for k, v in overrides.items()})
    scale = envs.config.pnl_scale
    steps = envs.config.episode_steps
    rng = np.random.default_rng(seed)
    obs, _ = envs.reset(seed=seed)
    episodes = []  # (P&L per env in USD, reward sums) per batch of episodes
    for _ in range(batches):
        pnl = np.zeros(n_envs)
        rewards = np.zeros(n_envs)
        for k in range(steps):
            # The observation before the step carries the P&L so far.
            np.testing.assert_allclose(obs[:, PNL_TO_DATE], np.clip(pnl / (10 * scale), -50, 50), rtol=1e-6, atol=1e-7)
            obs, r, term, trunc, info = envs.step(rng.uniform(-1, 1, envs.action_space.shape))
            pnl += step_pnl(info)
            rewards += r
            assert (term | trunc).all() == (k == steps - 1)
        episodes.append((pnl, rewards))
        obs, *_ = envs.step(np.zeros(envs.action_space.shape))  # NEXT_STEP autoreset: reward 0, new episodes
    return envs, scale, episodes


@pytest.mark.parametrize(
    ("scenario", "overrides"),
    [
        ("short-gamma-crash", {"episode.horizon_days": 0.25}),
        ("default", {"episode.horizon_days": 1.0, "market.rate": 0.05}),
    ],
)
def test_episode_rewards_sum_to_the_mean_variance_of_the_episode_pnl(scenario, overrides):
    kappa = 2.0
    _, scale, episodes = _run(scenario, 8, 4, overrides, kappa)
    m, count = None, 0
    for pnl, rewards in episodes:
        c = pnl / scale
        if m is None:
            # No episode has finished yet: the per-step form, whose sum is not the closed form.
            assert not np.allclose(rewards, c - 0.5 * kappa * c * c)
            m = 0.0
        else:
            want = c - 0.5 * kappa * ((c - m) ** 2 - m**2)
            np.testing.assert_allclose(rewards, want, rtol=1e-9, atol=1e-9 * (1 + np.abs(want).max()))
        count += c.size
        m += min(1.0, c.size / min(count, REWARD_REFERENCE_EPISODES)) * (c.mean() - m)


def test_the_reference_is_the_plain_mean_then_an_exponential_average():
    n_envs, batches = 64, 6  # 384 episodes: past the 256 of the running mean
    envs, scale, episodes = _run("default", n_envs, batches, {"episode.horizon_days": 2 / 24})
    means = [pnl.mean() for pnl, _ in episodes]
    ref = np.mean(means[:4])  # 256 episodes: the plain mean of all of them
    for mean in means[4:]:
        ref += (n_envs / REWARD_REFERENCE_EPISODES) * (mean - ref)
    assert envs.market.params["reward_reference"][0] == pytest.approx(ref, rel=1e-12)
    assert envs.market.reference_episodes == n_envs * batches


def test_the_single_env_keeps_the_reference_across_episodes_and_its_cross_term_is_the_formula():
    env = HedgingEnv(scenario="default", agent__reward="episode_mean_variance", episode__horizon_days=0.25)
    kappa, scale = env.config.agent.risk_aversion, env.config.pnl_scale
    rng = np.random.default_rng(0)
    firsts = []
    for episode in range(3):
        env.reset(seed=11) if episode == 0 else env.reset()
        c_prev, done = 0.0, False
        while not done:
            _, r, term, trunc, info = env.step(rng.uniform(-1, 1, env.action_space.shape))
            x = step_pnl(info) / scale
            m = sum(firsts) / len(firsts) if firsts else None
            cross = 0.0 if m is None else kappa * x * (c_prev - m)
            assert r == pytest.approx(x - 0.5 * kappa * x * x - cross, rel=1e-9, abs=1e-12)
            c_prev += x
            done = term or trunc
        firsts.append(c_prev)


def test_an_unknown_reward_names_the_field_and_the_allowed_values():
    with pytest.raises(ConfigError, match=r"agent\.reward.*episode_mean_variance"):
        HedgingEnv(scenario="default", agent__reward="episode_variance")
