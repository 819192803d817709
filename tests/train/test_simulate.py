"""`hedgegym simulate` and `hedgegym scenarios`: the feedback statistics and the command line."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from hedgegym.envs.config import list_scenarios, load_scenario
from hedgegym.train.cli import app
from hedgegym.train.simulate import predicted_amplification, simulate

runner = CliRunner()


def test_amplification_matches_the_resilient_law():
    # default: permanent_share 0.5, transient impact e-folds in one step; phi ~ -0.11 and nearly
    # constant, so the linearised MA law must hold within Monte-Carlo error and second-order terms.
    cfg = load_scenario("default")
    res = simulate(cfg, paths=400, seed=3)
    assert res.vol_amplification > 1.05
    assert res.vol_amplification == pytest.approx(res.predicted_amplification_resilient, abs=0.004)
    # ... and clearly below the permanent-impact law, which it must not be confused with.
    assert res.predicted_amplification - res.vol_amplification > 0.02


def test_permanent_impact_gives_frey_stremme():
    cfg = load_scenario("default", {"market.impact.permanent_share": 1.0})
    res = simulate(cfg, paths=400, seed=3)
    assert res.predicted_amplification_resilient == pytest.approx(res.predicted_amplification)
    assert res.vol_amplification == pytest.approx(1.0 / (1.0 + res.mean_phi), abs=0.005)


def test_long_gamma_damps_and_frictionless_is_exogenous():
    pin = simulate(load_scenario("long-gamma-pin"), paths=300, seed=0)
    assert pin.mean_phi > 0 and pin.vol_amplification < 0.97
    flat = simulate(load_scenario("frictionless"), paths=50, seed=0)
    assert flat.vol_amplification == 1.0 and flat.mean_phi == 0.0
    assert flat.realised_vol == flat.realised_vol_exo


def test_long_gamma_pins_at_expiry_with_an_interval_that_excludes_zero():
    # Dealers long 4,000 coins of 100k straddles expiring with the episode: their hedging pulls the
    # final price towards the strike, path by path against the same exogenous shocks.
    res = simulate(load_scenario("long-gamma-pin"), paths=400, seed=0)
    diff = res.per_path["pin_distance"] - res.per_path["pin_distance_exo"]
    assert res.pin_effect == pytest.approx(diff.mean())
    assert res.pin_effect == pytest.approx(res.pin_distance - res.pin_distance_exo)
    lo, hi = res.pin_effect_ci
    assert lo <= res.pin_effect <= hi < 0.0
    # Short-gamma dealers do the opposite: no pin.
    assert simulate(load_scenario("default"), paths=100, seed=0).pin_effect_ci[0] > 0.0


def test_summary_is_finite_or_null_with_infinite_depth():
    summary = simulate(load_scenario("frictionless"), paths=5, seed=0).summary()
    assert summary["dealer_effective_depth_usd"] is None
    json.dumps(summary, allow_nan=False)
    # The linear law has no meaning at or beyond the black hole (1 + phi <= 0).
    assert np.isnan(predicted_amplification(-1.0)) and np.isnan(predicted_amplification(-1.5, 0.5, 0.3))


def test_predicted_amplification_limits():
    assert predicted_amplification(0.0, 0.3, 0.5) == 1.0
    assert predicted_amplification(-0.5) == pytest.approx(2.0)
    # Transient impact that vanishes within the step leaves only the permanent share.
    assert predicted_amplification(-0.5, 0.0, 0.0) == pytest.approx(1.0)


def test_simulate_is_deterministic_and_seeded():
    cfg = load_scenario("default")
    a, b, c = simulate(cfg, 20, seed=5), simulate(cfg, 20, seed=5), simulate(cfg, 20, seed=6)
    assert a.summary() == b.summary()
    assert a.vol_amplification != c.vol_amplification
    assert np.array_equal(a.sample["spot"], b.sample["spot"])


def test_cli_simulate_writes_summary_and_plot(tmp_path):
    out = tmp_path / "sim"
    result = runner.invoke(app, ["simulate", "--scenario", "zero-dte", "--paths", "30", "--out", str(out), "--plot"])
    assert result.exit_code == 0, result.output
    assert "volatility amplification" in result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["scenario"] == "zero-dte" and summary["paths"] == 30 and summary["steps"] == 288
    assert (out / "simulation.png").stat().st_size > 10_000
    # A second run never writes into the first one's directory.
    again = runner.invoke(app, ["simulate", "--scenario", "zero-dte", "--paths", "5", "--out", str(out)])
    assert again.exit_code == 2
    assert "already exists and is not empty" in again.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--scenario", "nope"], "unknown scenario 'nope'"),
        (["--set", "market.sigma=-1"], "market.sigma"),
        (["--set", "market.sigmaa=1"], "unknown field"),
        (["--scenario", "default", "--config", "x.yaml"], "not both"),
    ],
)
def test_cli_simulate_bad_input(args, message):
    result = runner.invoke(app, ["simulate", "--paths", "2", *args])
    assert result.exit_code == 2
    assert message in result.output


def test_cli_scenarios_lists_every_scenario():
    result = runner.invoke(app, ["scenarios"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for name in list_scenarios():
        assert name in result.output
