"""``evaluation.markets``: best_model.zip chosen on held-out markets of the family, by a scale-free score.

The score and its paired interval are recomputed here without the module's formulas (each
resample's episodes written out with ``np.repeat``), the reference objectives with the report's
own ``evaluate``, and the first periodic evaluation of a run against its warm start's constant band
run by hand on the same markets and seeds.
"""

from __future__ import annotations

import numpy as np
import pytest
from test_training import SHORT_EPISODES, config_path, tiny

from hedgegym.envs.config import ConfigError, resolve_config
from hedgegym.train import metrics as M
from hedgegym.train.experiment import load_experiment
from hedgegym.train.selection import (
    family_score,
    market_seeds,
    paired_family_interval,
    reference_name,
    reference_scales,
    selection_markets,
)


def _objective(pnl, kappa, scale, counts=None):
    x = np.repeat(pnl, np.ones(pnl.size, np.int64) if counts is None else counts)
    return x.mean() - kappa / (2.0 * scale) * x.var()


def _markets():
    # Different risk aversions, so each market has its own objective.
    return [resolve_config("default", {"agent.risk_aversion": k}) for k in (0.5, 1.0, 4.0)]


def test_family_score_is_the_mean_relative_change_against_the_reference():
    markets = _markets()
    rng = np.random.default_rng(5)
    pnl = rng.normal(-4e4, 2e4, (3, 40))
    # The reference's P&Ls: a costly market, a cheap and risky one, one where delta hedging earns.
    ref_pnl = np.stack([rng.normal(-6e4, 1e4, 40), rng.normal(-2e3, 5e3, 40), rng.normal(2e3, 4e3, 40)])
    reference = np.array(
        [_objective(r, m.agent.risk_aversion, m.pnl_scale) for r, m in zip(ref_pnl, markets, strict=True)]
    )
    scales = reference_scales(ref_pnl, markets)
    # |J| where the cost dominates, the P&L's standard deviation where it is larger.
    assert scales[0] == pytest.approx(abs(reference[0]), rel=1e-12)
    assert scales[1:] == pytest.approx(ref_pnl[1:].std(axis=1), rel=1e-12)
    want = np.mean(
        [
            (_objective(row, m.agent.risk_aversion, m.pnl_scale) - ref) / s
            for row, m, ref, s in zip(pnl, markets, reference, scales, strict=True)
        ]
    )
    assert family_score(pnl, markets, reference, scales) == pytest.approx(want, rel=1e-12)
    # The reference scores 0 against itself; a constant episode (sd 0, J 0) is floored at 1 USD.
    assert family_score(ref_pnl, markets, reference, scales) == pytest.approx(0.0, abs=1e-12)
    assert reference_scales(np.zeros((3, 4)), markets).tolist() == [1.0, 1.0, 1.0]


def test_paired_family_interval_is_the_bootstrap_of_the_score_difference():
    markets = _markets()
    rng = np.random.default_rng(7)
    b = rng.normal(-5e4, 3e4, (3, 60))
    a = b + rng.normal([[900.0], [-200.0], [3000.0]], 2e3, (3, 60))
    scales = np.array([5e4, 2e4, 9e4])
    point, lo, hi = paired_family_interval(a, b, markets, scales)
    per_market = []
    for k, (ra, rb, m, scale_k) in enumerate(zip(a, b, markets, scales, strict=True)):
        kappa, scale = m.agent.risk_aversion, m.pnl_scale
        per_market.append(
            [
                (_objective(ra, kappa, scale, c) - _objective(rb, kappa, scale, c)) / scale_k
                for chunk in M.bootstrap_counts(60, seed=k)
                for c in chunk.astype(np.int64)
            ]
        )
    draws = np.mean(per_market, axis=0)
    zero = np.zeros(3)
    assert point == pytest.approx(family_score(a, markets, zero, scales) - family_score(b, markets, zero, scales))
    assert (lo, hi) == pytest.approx(tuple(np.quantile(draws, [0.025, 0.975])), rel=1e-6)
    # A shift of c_k USD on every episode of market k: the difference is mean_k c_k / s_k on every resample.
    shift = np.array([[500.0], [100.0], [-900.0]])
    want = float(np.mean(shift[:, 0] / scales))
    assert paired_family_interval(b + shift, b, markets, scales) == pytest.approx((want, want, want))
    with pytest.raises(ValueError, match=r"both be \[markets=3, episodes\]"):
        paired_family_interval(a[:2], b[:2], markets, scales)


def test_selection_markets_are_reproducible_held_out_draws_of_the_family():
    from hedgegym.envs.family import draw_config, family_rng

    cfg = load_experiment(config_path("ppo_generalist"))
    family, base = cfg.scenario.randomize, cfg.scenario.resolved
    markets = selection_markets(family, base, cfg.evaluation.seed, 6)
    assert markets == selection_markets(family, base, cfg.evaluation.seed, 6)
    sigmas = [m.market.sigma for m in markets]
    assert len(set(sigmas)) == 6 and all(0.35 <= s <= 0.9 for s in sigmas)
    # Not the markets of any training stream's first episodes (training env 0 seeds the draws).
    for seed in (cfg.training.seed, cfg.evaluation.seed):
        trained = [draw_config(family, base, family_rng(seed, k)).market.sigma for k in range(6)]
        assert not set(trained) & set(sigmas)
    assert reference_name(base) == "delta@cheapest"
    assert reference_name(resolve_config("default", {"agent.venues": ["perp"]})) == "delta@perp"
    blocks = market_seeds(100, 12, 3)
    assert [b.tolist() for b in blocks] == [[100, 101, 102, 103], [104, 105, 106, 107], [108, 109, 110, 111]]


def test_a_family_run_chooses_its_best_model_on_the_held_out_markets(tmp_path):
    from hedgegym.agents.residual import make_control
    from hedgegym.train.evaluate import evaluate, run_policy
    from hedgegym.train.training import train
    from hedgegym.train.warm_start import constant_policy

    cfg = tiny(
        config_path("ppo_generalist"),
        **SHORT_EPISODES["ppo_generalist"],
        **{"evaluation.markets": 2, "evaluation.episodes": 8, "evaluation.baselines": []},
    )
    run = train(cfg, out=tmp_path / "run")
    history = __import__("json").loads((run.run_dir / "history.json").read_text())
    selection = history["selection"]
    assert selection["markets"] == 2 and selection["episodes_per_market"] == 4
    assert selection["reference"] == "delta@cheapest"
    ev = cfg.evaluation
    markets = selection_markets(cfg.scenario.randomize, cfg.scenario.resolved, ev.seed, 2)
    first = ev.seed + ev.final_episodes
    # The reference objectives: the report's evaluate() of delta@cheapest on each market's block of seeds.
    for k, market in enumerate(markets):
        result = evaluate(["delta@cheapest"], market, episodes=4, seed=first + 4 * k, agent_impact_rerun=False)
        pnl = result.per_episode["delta@cheapest"]["pnl"]
        j = _objective(pnl, market.agent.risk_aversion, market.pnl_scale)
        assert selection["reference_objectives"][k] == pytest.approx(j, rel=1e-9)
        assert selection["scales"][k] == pytest.approx(max(abs(j), pnl.std()), rel=1e-9)
    # The evaluation at timestep 0 is the warm start's constant band, run by hand on every market.
    action = __import__("json").loads((run.run_dir / "warm_start.json").read_text())["action"]
    start = history["evaluations"][0]
    assert start["timesteps"] == 0 and len(start["market_objectives"]) == 2
    scores = []
    for k, market in enumerate(markets):
        policy = constant_policy(make_control(cfg.algorithm.control, market), np.array(action))
        per_episode, _ = run_policy(policy, market, np.arange(first + 4 * k, first + 4 * k + 4), n_sample_paths=0)
        j = _objective(per_episode["pnl"], market.agent.risk_aversion, market.pnl_scale)
        assert start["market_objectives"][k] == pytest.approx(j, rel=1e-6, abs=1e-3)
        ref = selection["reference_objectives"][k]
        scores.append((j - ref) / selection["scales"][k])
    assert start["family_score"] == pytest.approx(np.mean(scores), rel=1e-6, abs=1e-9)
    assert history["best"]["family_score"] == max(
        e["family_score"] for e in history["evaluations"] if e["timesteps"] == history["best"]["timesteps"]
    )


@pytest.mark.parametrize(
    "extra, message",
    [
        ({"scenario.randomize": None, "evaluation.markets": 4}, "evaluation.markets=4 needs scenario.randomize"),
        ({"evaluation.markets": 7}, "evaluation.episodes=500 must be a multiple of evaluation.markets=7"),
        ({"evaluation.markets": 500}, "at least 2 episodes a market"),
        ({"evaluation.markets": -1}, "evaluation.markets"),
    ],
)
def test_bad_selection_markets_are_one_line_errors(extra, message):
    with pytest.raises(ConfigError, match=message):
        load_experiment(config_path("ppo_generalist"), extra)
