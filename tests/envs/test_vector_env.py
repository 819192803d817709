"""HedgingVectorEnv ≡ N HedgingEnvs, bit for bit, in every autoreset mode; and its SB3 adapter."""

from __future__ import annotations

import numpy as np
import pytest
from gymnasium.error import ResetNeeded
from gymnasium.utils.env_checker import data_equivalence
from gymnasium.vector import AutoresetMode, SyncVectorEnv

from hedgegym.envs import HedgingEnv, HedgingVectorEnv
from hedgegym.envs.layout import OBS_DIM

TRUNCATES = {"episode__horizon_days": 0.25}  # 6 hourly steps, cut at the horizon
TERMINATES = {
    "episode__horizon_days": 0.25,
    "agent__lines": [{"strike": 100_000.0, "expiry_days": 0.25, "kind": "put", "quantity": -20.0}],
}


def assert_identical(a, b, what: str) -> None:
    assert data_equivalence(a, b, exact=True), f"{what} differ"


def bits(x: np.ndarray) -> bytes:
    return np.ascontiguousarray(x).tobytes()


@pytest.mark.parametrize("mode", list(AutoresetMode))
@pytest.mark.parametrize("n", [1, 7, 64])
def test_vector_env_equals_sync_vector_env_of_hedging_envs(mode, n):
    """Same seeds and actions: identical obs, rewards, flags and infos (keys, masks, dtypes), across autoresets."""
    kwargs = TERMINATES if n == 7 else TRUNCATES
    vec = HedgingVectorEnv(n, autoreset_mode=mode, **kwargs)
    ref = SyncVectorEnv([lambda: HedgingEnv(**kwargs) for _ in range(n)], autoreset_mode=mode)
    assert_identical(vec.reset(seed=11), ref.reset(seed=11), "reset")
    rng = np.random.default_rng(n)
    ended = 0
    for k in range(20):  # three episodes and more
        if mode == AutoresetMode.DISABLED and k % 6 == 0 and k:
            mask = np.ones(n, dtype=bool)
            assert_identical(
                vec.reset(options={"reset_mask": mask}),
                ref.reset(options={"reset_mask": mask.copy()}),
                f"masked reset {k}",
            )
        actions = rng.uniform(-1.5, 1.5, vec.action_space.shape).astype(np.float32)
        got, want = vec.step(actions), ref.step(actions)
        for name, x, y in zip(("obs", "rewards", "terminations", "truncations", "infos"), got, want, strict=True):
            assert_identical(x, y, f"{name} at step {k}")
        assert bits(got[0]) == bits(want[0]) and bits(got[1]) == bits(want[1])
        ended += int((got[2] | got[3]).sum())
    assert ended >= 3 * n


def test_row_i_reproduces_hedging_env_seeded_s_plus_i_through_autoreset():
    n, seed = 5, 100
    vec = HedgingVectorEnv(n, **TERMINATES)
    singles = [HedgingEnv(**TERMINATES) for _ in range(n)]
    obs, _ = vec.reset(seed=seed)
    for i, env in enumerate(singles):
        assert bits(env.reset(seed=seed + i)[0]) == bits(obs[i])
    rng = np.random.default_rng(0)
    pending = np.zeros(n, dtype=bool)
    for _ in range(15):
        actions = rng.uniform(-1, 1, (n, 3))
        obs, rewards, terminated, truncated, info = vec.step(actions)
        for i, env in enumerate(singles):
            if pending[i]:  # NEXT_STEP: this step is env i's reset
                o, r = env.reset()[0], 0.0
            else:
                o, r, _, _, info_i = env.step(actions[i])
                assert info_i["spot"] == info["spot"][i] and info_i["fees"] == info["fees"][i]
            assert bits(o) == bits(obs[i]) and r == rewards[i]
        pending = terminated | truncated


def test_parallel_kernel_gives_the_same_bits():
    a = HedgingVectorEnv(9, parallel=True, **TRUNCATES)
    b = HedgingVectorEnv(9, parallel=False, **TRUNCATES)
    assert a.market.parallel and not b.market.parallel
    assert_identical(a.reset(seed=3), b.reset(seed=3), "reset")
    rng = np.random.default_rng(0)
    for _ in range(8):
        actions = rng.uniform(-1, 1, (9, 3))
        assert_identical(a.step(actions), b.step(actions), "step")


def test_seed_list_with_none_continues_those_streams():
    vec = HedgingVectorEnv(3, **TRUNCATES)
    vec.reset(seed=[5, 6, 7])
    obs_a = [vec.step(np.zeros((3, 3)))[4]["spot"] for _ in range(2)]
    vec.reset(seed=[5, None, 7])  # env 1: episode 1 of stream 6
    obs_b = [vec.step(np.zeros((3, 3)))[4]["spot"] for _ in range(2)]
    assert [o[0] for o in obs_a] == [o[0] for o in obs_b] and [o[2] for o in obs_a] == [o[2] for o in obs_b]
    assert [o[1] for o in obs_a] != [o[1] for o in obs_b]
    single = HedgingEnv(**TRUNCATES)
    single.reset(seed=6)
    single.reset()
    assert single.step(np.zeros(3))[4]["spot"] == obs_b[0][1]


def test_reset_mask_resets_only_those_envs():
    vec = HedgingVectorEnv(4, **TRUNCATES)
    vec.reset(seed=0)
    before = vec.step(np.ones((4, 3)))[0]
    mask = np.array([False, True, False, True])
    obs, info = vec.reset(options={"reset_mask": mask})
    np.testing.assert_array_equal(obs[~mask], before[~mask])
    np.testing.assert_array_equal(info["_spot"], mask)
    assert (vec.market.step_index == [1, 0, 1, 0]).all()


def test_same_step_mode_reports_final_obs_and_info():
    vec = HedgingVectorEnv(2, autoreset_mode=AutoresetMode.SAME_STEP, **TERMINATES)
    vec.reset(seed=0)
    for _ in range(6):
        obs, rewards, terminated, truncated, info = vec.step(np.zeros((2, 3)))
    assert terminated.all() and not truncated.any()
    assert info["_final_obs"].all() and info["final_obs"][0].shape == (OBS_DIM,)
    assert info["final_obs"][0][0] == 0.0 and obs[0, 0] == 1.0  # time to expiry: end vs fresh start
    final = info["final_info"]
    assert final["episode_metrics"]["steps"].tolist() == [6.0, 6.0]
    assert (info["step_pnl"] == 0).all() and (final["step_pnl"] != 0).all()
    assert "episode_metrics" not in info


def test_disabled_mode_needs_an_explicit_reset():
    vec = HedgingVectorEnv(2, autoreset_mode="Disabled", **TRUNCATES)
    vec.reset(seed=0)
    for _ in range(6):
        vec.step(np.zeros((2, 3)))
    with pytest.raises(ResetNeeded, match=r"envs \[0, 1\] ended and autoreset_mode is DISABLED"):
        vec.step(np.zeros((2, 3)))
    vec.reset(options={"reset_mask": np.array([True, True])})
    vec.step(np.zeros((2, 3)))


@pytest.mark.parametrize(
    ("actions", "message"),
    [
        (np.zeros((3, 3)), r"action must have shape \(2, 3\).*got shape \(3, 3\)"),
        (np.zeros(3), r"got shape \(3,\)"),
        (np.array([[0, 0, 0], [0, np.nan, 0]]), r"action contains NaN at env 1, venue 'perp'"),
        (np.array([[np.inf, 0, 0], [0, 0, 0]]), r"action contains inf at env 0, venue 'spot'"),
    ],
)
def test_bad_actions_raise_value_error_naming_env_and_venue(actions, message):
    vec = HedgingVectorEnv(2, **TRUNCATES)
    vec.reset(seed=0)
    with pytest.raises(ValueError, match=message):
        vec.step(actions)


def test_non_finite_simulator_output_raises_naming_the_env(monkeypatch):
    from hedgegym.envs.layout import O_REWARD

    vec = HedgingVectorEnv(3, **TRUNCATES)
    vec.reset(seed=0)
    market_step = vec.market.step

    def nan_step(trades, check=True):
        out = market_step(trades, check=check)
        vec.market.state["book_delta"][2] = np.nan
        return out

    monkeypatch.setattr(vec.market, "step", nan_step)
    with pytest.raises(RuntimeError, match="non-finite observation book_delta=nan in env 2"):
        vec.step(np.zeros((3, 3)))
    with pytest.raises(ResetNeeded, match="after a step that failed"):
        vec.step(np.zeros((3, 3)))
    vec.reset(seed=0)

    def inf_step(trades, check=True):
        out = market_step(trades, check=check)
        out[1, O_REWARD] = -np.inf
        return out

    monkeypatch.setattr(vec.market, "step", inf_step)
    with pytest.raises(RuntimeError, match="non-finite reward in env 1"):
        vec.step(np.zeros((3, 3)))


def test_bad_vector_arguments_raise_clear_errors():
    vec = HedgingVectorEnv(2, **TRUNCATES)
    with pytest.raises(ResetNeeded, match="before reset"):
        vec.step(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="one entry per env"):
        vec.reset(seed=[1, 2, 3])
    with pytest.raises(ValueError, match="seeds must be ints"):
        vec.reset(seed=[1, -2])
    with pytest.raises(ValueError, match="reset_mask.*bool numpy array of shape"):
        vec.reset(options={"reset_mask": [True, False]})
    with pytest.raises(ValueError, match="autoreset_mode must be an AutoresetMode"):
        HedgingVectorEnv(2, autoreset_mode="sometimes")
    with pytest.raises(ValueError, match="num_envs must be an integer >= 1"):
        HedgingVectorEnv(0)
