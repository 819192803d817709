"""The bootstrap's resamples and its compiled statistics: seeded, chunk-free, multinomial, and equal
to the same statistics computed from the weights in NumPy and from the resampled episodes."""

from __future__ import annotations

import numpy as np
import pytest

from hedgegym.envs.kernel import episode_key
from hedgegym.train import metrics as M


def episodes(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "pnl": rng.standard_t(3, n) * 1e4,
        "slippage_usd": rng.uniform(0, 50, n),
        "turnover_usd": rng.uniform(1e5, 1e6, n),
        "fees": rng.uniform(0, 100, n),
        "funding": rng.normal(0, 10, n),
        "carry": np.zeros(n),
        "n_trades": rng.integers(0, 50, n).astype(float),
        "crisis_steps": np.zeros(n),
        "halt_steps": np.zeros(n),
        "pin_distance": rng.uniform(0, 0.1, n),
        "pin_distance_exo": rng.uniform(0, 0.1, n),
        "reward": rng.normal(0, 1, n),
        "realised_vol": rng.uniform(0.5, 0.8, n),
        "realised_vol_exo": rng.uniform(0.5, 0.7, n),
        "realised_vol_no_agent_impact": rng.uniform(0.5, 0.8, n),
    }


def tail_oracle(loss, w, alpha=0.95):
    """VaR and ES of ``loss`` under weights ``w`` the long way: sort, cumulative sum, the lower
    quantile and the Acerbi-Tasche mass above the level (no code shared with metrics)."""
    order = np.argsort(loss, kind="stable")
    v, ww = loss[order], w[order]
    cum = np.cumsum(ww)
    level = alpha * cum[-1]
    var = v[np.nonzero(cum >= level * (1 - 1e-12))[0][0]]
    take = np.minimum(np.maximum(cum - level, 0.0), ww)
    return var, float(np.sum(take * v) / (cum[-1] - level))


def test_counts_are_n_draws_with_replacement_and_do_not_depend_on_the_chunking():
    n = 1000
    counts = np.concatenate(list(M.bootstrap_counts(n, 250, seed=9)))
    assert counts.shape == (250, n) and np.all(counts.sum(axis=1) == n)
    assert np.all(counts == np.round(counts)) and counts.min() >= 0
    np.testing.assert_array_equal(np.concatenate(list(M.bootstrap_counts(n, 250, seed=9, chunk=7))), counts)
    assert not np.array_equal(np.concatenate(list(M.bootstrap_counts(n, 250, seed=10))), counts)
    # Multinomial(n, 1/n): each count ~ Binomial(n, 1/n), P(0) = (1 - 1/n)^n ~ e^-1, var = 1 - 1/n;
    # 250,000 counts, so the shares are good to ~0.3 % (3 standard errors).
    assert abs(np.mean(counts == 0) - (1 - 1 / n) ** n) < 3 * np.sqrt(0.37 * 0.63 / counts.size)
    assert counts.var() == pytest.approx(1 - 1 / n, rel=0.02)
    # Different resamples draw independently: no episode is favoured across resamples.
    per_episode = counts.sum(axis=0)
    assert abs(per_episode.var() / per_episode.mean() - 1.0) < 0.15  # ~ Poisson(250) across episodes


def test_resample_stream_is_not_a_simulated_episodes_key():
    # Episode j of an evaluation seeded s runs on episode_key(s + j, 0); resample b on
    # episode_key(stream(s), b) with the stream a hash of s under its own constant.
    keys = {int(episode_key(np.uint64(s), np.uint64(0))) for s in range(200)}
    for s in range(100):
        stream = np.uint64(M._resample_stream(np.uint64(s)))
        assert all(int(episode_key(stream, np.uint64(b))) not in keys for b in range(100))


def test_bootstrap_draws_are_the_weighted_statistics_of_its_counts():
    ep = episodes(523)
    point, draws = M.bootstrap(ep, 2.0, 5e4, n_resamples=150, seed=4)
    weights = np.concatenate(list(M.bootstrap_counts(523, 150, seed=4)))
    weighted = M.episode_statistics(ep, 2.0, 5e4, weights=weights)
    for k, v in weighted.items():
        np.testing.assert_allclose(draws[k], v, rtol=1e-12, atol=1e-12, err_msg=k)
    for b in range(3):  # and those of the resampled sample itself
        direct = M.episode_statistics({k: np.repeat(v, weights[b].astype(int)) for k, v in ep.items()}, 2.0, 5e4)
        for k, v in direct.items():
            assert draws[k][b] == pytest.approx(v, rel=1e-9, abs=1e-9), k
    assert point == M.episode_statistics(ep, 2.0, 5e4)


def test_tail_risk_equals_the_long_way_for_any_weights():
    rng = np.random.default_rng(5)
    for n in (1, 2, 19, 20, 37, 1000):
        loss = rng.standard_t(3, n)
        loss[: n // 3] = loss[0]  # ties
        weights = np.vstack(
            [np.ones(n), rng.integers(0, 4, n).astype(float), rng.uniform(0.0, 2.0, n), rng.exponential(1.0, n)]
        )
        weights[1, 0] += 1.0  # a positive total
        var = M.value_at_risk(loss, weights=weights)
        es = M.conditional_value_at_risk(loss, weights=weights)
        for b in range(weights.shape[0]):
            v, e = tail_oracle(loss, weights[b])
            assert var[b] == v, (n, b)
            assert es[b] == pytest.approx(e, rel=1e-12, abs=1e-12), (n, b)


def test_bootstrap_many_is_each_policys_bootstrap_on_common_resamples():
    a, b = episodes(300, 1), episodes(300, 2)
    many = M.bootstrap_many({"a": a, "b": b}, 1.0, 1e4, n_resamples=120, seed=3)
    for name, data in (("a", a), ("b", b)):
        point, draws = M.bootstrap(data, 1.0, 1e4, n_resamples=120, seed=3)
        assert many[name][0] == point
        for k in draws:
            np.testing.assert_array_equal(many[name][1][k], draws[k], err_msg=k)
    with pytest.raises(ValueError, match="different numbers of episodes"):
        M.bootstrap_many({"a": a, "short": episodes(10)}, 1.0, 1e4, n_resamples=10)


def test_summarize_and_paired_difference_are_estimate_of_each_statistic():
    a, b = episodes(200, 1), episodes(200, 2)
    (pa, da), (pb, db) = (M.bootstrap(x, 1.0, 1e4, n_resamples=100, seed=0) for x in (a, b))
    assert M.summarize(pa, da) == {k: M.estimate(pa[k], da[k]) for k in pa}
    assert M.paired_difference(pa, da, pb, db) == {k: M.estimate(pa[k] - pb[k], da[k] - db[k]) for k in pa}
