"""Metrics on hand-built episodes equal hand-computed values; the bootstrap is right and paired."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hedgegym.train import metrics as M


def episodes(**columns) -> dict[str, np.ndarray]:
    """Hand-built per-episode values; unspecified columns are zeros like a policy that never trades."""
    n = len(next(iter(columns.values())))
    base = {
        k: np.zeros(n)
        for k in (
            "pnl",
            "slippage_usd",
            "turnover_usd",
            "fees",
            "funding",
            "carry",
            "n_trades",
            "crisis_steps",
            "halt_steps",
            "pin_distance",
            "pin_distance_exo",
            "reward",
        )
    }
    base["realised_vol"] = base["realised_vol_exo"] = np.full(n, 0.6)
    base.update({k: np.asarray(v, dtype=np.float64) for k, v in columns.items()})
    return base


# ------------------------------------------------------------------------------------ tail risk
def test_var_and_cvar_hand_computed():
    rng = np.random.default_rng(1)
    losses = rng.permutation(np.arange(1.0, 21.0))  # order must not matter
    # n = 20: VaR = the ceil(19) = 19th smallest loss; the worst 5 % is exactly one episode.
    assert M.value_at_risk(losses) == 19.0
    assert M.conditional_value_at_risk(losses) == 20.0
    # n = 40: the worst two, (39 + 40) / 2.
    assert M.conditional_value_at_risk(np.arange(1.0, 41.0)) == 39.5
    # n = 30: tail mass 1.5 episodes -> (30 + 0.5 * 29) / 1.5 (Acerbi-Tasche boundary term); VaR the 29th.
    assert M.conditional_value_at_risk(np.arange(1.0, 31.0)) == pytest.approx((30.0 + 0.5 * 29.0) / 1.5)
    assert M.value_at_risk(np.arange(1.0, 31.0)) == 29.0
    assert M.conditional_value_at_risk(np.full(7, -3.0)) == pytest.approx(-3.0)


def test_statistics_of_pnl_are_of_the_loss():
    pnl = np.array([100.0, -100.0, 50.0, -400.0] + [0.0] * 16)
    stats = M.episode_statistics(episodes(pnl=pnl), risk_aversion=1.0, pnl_scale=1000.0)
    assert stats["cvar_95"] == pytest.approx(400.0) and stats["var_95"] == 100.0
    assert stats["pnl_mean"] == pytest.approx(-17.5)
    var = np.mean((pnl + 17.5) ** 2)
    assert stats["pnl_std"] == pytest.approx(math.sqrt(var))
    assert stats["mean_variance"] == pytest.approx(-17.5 - var / 2000.0)
    # Entropic risk >= -mean (Jensen), and -> -mean as lambda -> 0.
    assert stats["entropic_risk"] > 17.5
    assert M.entropic_risk(pnl, 1e-9) == pytest.approx(17.5, rel=1e-6)
    assert M.entropic_risk(pnl, 0.0) == pytest.approx(17.5)


def test_mean_variance_and_entropic_hand_computed():
    assert M.mean_variance_objective([100.0, -100.0], 1.0, 1000.0) == pytest.approx(-5.0)
    assert M.entropic_risk([0.0, -100.0], 0.01) == pytest.approx(math.log((1.0 + math.e) / 2.0) / 0.01)
    # No overflow for losses far beyond exp's range: ~ the worst loss minus log(n) / lambda.
    assert M.entropic_risk([0.0, -1e7], 1e-3) == pytest.approx(1e7 - math.log(2.0) / 1e-3)
    # ...nor underflow in a resample that leaves the worst episode out: its risk is its own worst loss.
    weights = np.array([[2.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    risk = M.entropic_risk([-10.0, -1e7, 0.0], 1e-3, weights=weights)
    assert risk[0] == pytest.approx(10.0) and np.all(np.isfinite(risk))


# ------------------------------------------------------------------------------------ costs and market
def test_slippage_bps_is_notional_weighted():
    # 10 USD on 10k USD traded and 0 on 90k: 10 / 100k = 1 bp (the per-episode mean would say 5 bp).
    stats = M.episode_statistics(
        episodes(pnl=[0.0, 0.0], slippage_usd=[10.0, 0.0], turnover_usd=[1e4, 9e4]), 1.0, 1000.0
    )
    assert stats["slippage_bps"] == pytest.approx(1.0)
    assert stats["slippage_usd"] == pytest.approx(5.0)
    assert M.episode_statistics(episodes(pnl=[0.0]), 1.0, 1.0)["slippage_bps"] == 0.0  # nothing traded


def test_vol_amplification_and_the_agents_share_hand_computed():
    ep = episodes(
        pnl=[0.0, 0.0], realised_vol=[0.66, 0.5], realised_vol_exo=[0.6, 0.5], realised_vol_no_agent_impact=[0.63, 0.5]
    )
    stats = M.episode_statistics(ep, 1.0, 1000.0)
    total = math.sqrt((0.66**2 + 0.25) / (0.36 + 0.25))
    without = math.sqrt((0.63**2 + 0.25) / (0.36 + 0.25))
    assert stats["vol_amplification"] == pytest.approx(total)
    assert stats["vol_amplification_no_agent_impact"] == pytest.approx(without)
    assert stats["agent_vol_amplification"] == pytest.approx(total - without)
    assert "agent_vol_amplification" not in M.episode_statistics(episodes(pnl=[0.0]), 1.0, 1.0)


# ------------------------------------------------------------------------------------ bootstrap
def test_weighted_statistics_equal_the_resampled_sample():
    rng = np.random.default_rng(7)
    n = 37
    ep = episodes(
        pnl=rng.standard_t(3, n) * 1e4,
        slippage_usd=rng.uniform(0, 50, n),
        turnover_usd=rng.uniform(1e5, 1e6, n),
        realised_vol=rng.uniform(0.5, 0.8, n),
        realised_vol_exo=rng.uniform(0.5, 0.7, n),
        realised_vol_no_agent_impact=rng.uniform(0.5, 0.8, n),
        fees=rng.uniform(0, 100, n),
    )
    counts = next(M.bootstrap_counts(n, 3, seed=5))
    weighted = M.episode_statistics(ep, 2.0, 5e4, weights=counts)
    for b in range(3):
        resampled = {k: np.repeat(v, counts[b].astype(int)) for k, v in ep.items()}
        direct = M.episode_statistics(resampled, 2.0, 5e4)
        for k, v in direct.items():
            assert weighted[k][b] == pytest.approx(v, rel=1e-9, abs=1e-9), k


def test_bootstrap_is_seeded_and_pairs_the_resamples():
    rng = np.random.default_rng(3)
    common = rng.normal(0.0, 1e4, 500)  # the paths' luck, shared by both policies
    a = episodes(pnl=common + 100.0)
    b = episodes(pnl=common)
    pa, da = M.bootstrap(a, 1.0, 1e4, n_resamples=300, seed=11)
    pb, db = M.bootstrap(b, 1.0, 1e4, n_resamples=300, seed=11)
    again = M.bootstrap(a, 1.0, 1e4, n_resamples=300, seed=11)[1]
    np.testing.assert_array_equal(da["cvar_95"], again["cvar_95"])
    est = M.summarize(pa, da)
    assert est["pnl_mean"].low < pa["pnl_mean"] < est["pnl_mean"].high
    # Unpaired, the means' intervals overlap widely; paired, the difference is exactly +100 on every resample.
    assert est["pnl_mean"].low < pb["pnl_mean"]
    diff = M.paired_difference(pa, da, pb, db)
    assert diff["pnl_mean"].value == pytest.approx(100.0)
    assert diff["pnl_mean"].low == pytest.approx(100.0) and diff["pnl_mean"].high == pytest.approx(100.0)
    assert diff["pnl_std"].high == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="same seed and n_resamples"):
        M.paired_difference(pa, da, pb, M.bootstrap(b, 1.0, 1e4, n_resamples=100, seed=11)[1])


def test_bootstrap_interval_covers_the_mean_at_its_nominal_rate():
    # 200 experiments of 100 normal episodes: the 95 % interval of the mean covers the truth ~95 % of the time.
    rng = np.random.default_rng(0)
    covered = 0
    for trial in range(200):
        point, draws = M.bootstrap(episodes(pnl=rng.normal(5.0, 1.0, 100)), 1.0, 1.0, n_resamples=200, seed=trial)
        lo, hi = M.percentile_interval(draws["pnl_mean"])
        covered += lo <= 5.0 <= hi
    assert 0.88 <= covered / 200 <= 0.99


def test_best_of_respects_direction_and_ties():
    assert M.best_of({"a": 1.0, "b": 2.0}, "max") == "b"
    assert M.best_of({"a": 1.0, "b": 2.0}, "min") == "a"
    assert M.best_of({"a": 1.0, "b": 2.0}, None) is None
    assert M.best_of({"a": 0.0, "b": 0.0}, "min") is None
    with pytest.raises(ValueError, match="at least one episode"):
        next(M.bootstrap_counts(0))
