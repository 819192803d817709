"""docs/constant_bound.py: the best constant band per scenario, checked against the hedgers it is built on."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from docs_script import load_docs_script

from hedgegym.agents.baselines import make_baseline
from hedgegym.agents.residual import make_control
from hedgegym.envs.config import load_scenario
from hedgegym.train.evaluate import objective, run_policy
from hedgegym.train.warm_start import constant_policy


@pytest.fixture(scope="module")
def script():
    return load_docs_script("constant_bound")


def test_zero_action_is_the_hedger_and_the_reference_is_the_best_baseline(script, tmp_path):
    out = tmp_path / "bound"
    argv = [
        "--scenarios",
        "vault-epoch",
        "--control",
        "delta@cheapest",
        "--widths",
        "0,0.1",
        "--centres",
        "0",
        "--search",
        "6",
        "--episodes",
        "6",
        "--seed",
        "77",
        "--out",
        str(out),
    ]
    assert script.main(argv) == 0
    (row,) = json.loads((out / "constant_bound.json").read_text())["rows"]
    config = load_scenario("vault-epoch")
    held = np.arange(77, 83, dtype=np.int64)

    def baseline(name):
        return objective(
            {"pnl": run_policy(make_baseline(name, config), config, held, n_sample_paths=0)[0]["pnl"]}, config
        )

    # a = 0 on a delta-type hedger's band is a zero-width band: the delta hedger itself, run through
    # its own (compiled) code path here.
    assert row["zero_held"]["objective"] == pytest.approx(baseline("delta@cheapest"), rel=1e-9)
    # The reference is the best of the 17 hedgers on the same episodes.
    others = [baseline(n) for n in ("no_hedge", "delta@spot", "leland@perp", "whalley_wilmott@cheapest")]
    assert row["reference_objective"] == pytest.approx(baseline(row["reference"]), rel=1e-9)
    assert row["reference_objective"] >= max(others) - 1e-6
    assert row["best"] in ([0.0, 0.0], [0.1, 0.0]) and len(row["grid"]) == 2
    assert "Scenarios the best constant wins:" in (out / "constant_bound.md").read_text()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--widths", "0,2"], "must too"),
        (["--widths", "wide"], "comma-separated numbers"),
        (["--control", "no_hedge", "--search", "2", "--episodes", "2"], "band control needs"),
        (["--scenarios", "atlantis", "--search", "2", "--episodes", "2"], "atlantis"),
    ],
)
def test_bad_input_is_one_line_naming_it(script, tmp_path, capsys, argv, message):
    try:
        code = script.main([*argv, "--out", str(tmp_path / "o")])
    except SystemExit as exit_:  # argparse's errors
        code = exit_.code
    assert code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def family_argv(out: Path, markets: int, per_market: int) -> list[str]:
    """A run on ``default`` with a two-point grid and the generalist's family, small enough for a test."""
    return (
        "--scenarios default --control delta@cheapest --widths 0,0.3 --centres 0 --search 4 --episodes 4 "
        f"--family configs/ppo_generalist.yaml --markets {markets} --per-market {per_market} --out {out}"
    ).split()


def test_family_best_is_the_argmax_of_its_grid_and_is_judged_on_each_scenario(script, tmp_path):
    out = tmp_path / "fam"
    argv = family_argv(out, markets=2, per_market=3)
    assert script.main(argv) == 0
    data = json.loads((out / "constant_bound.json").read_text())
    family, (row,) = data["family"], data["rows"]
    assert family["markets"] == 2 and len(family["grid"]) == 2
    assert family["best"] == max(family["grid"], key=lambda g: g["mean_objective"])["action"]
    # The family's constant, judged on the scenario's held-out episodes (seeds 1,000,000...): rerun here.
    config = load_scenario("default")
    control = make_control({"kind": "band", "baseline": "delta@cheapest"}, config)
    held = np.arange(1_000_000, 1_000_004, dtype=np.int64)
    pnl = run_policy(constant_policy(control, np.asarray(family["best"])), config, held, n_sample_paths=0)[0]["pnl"]
    assert row["family_held"]["objective"] == pytest.approx(objective({"pnl": pnl}, config), rel=1e-12)
    assert family["best_relative"] == max(family["grid"], key=lambda g: g["mean_relative"])["action"]
    text = (out / "constant_bound.md").read_text()
    assert "family's best constant by mean objective" in text and "family's best constant by scale-free mean" in text


def test_family_without_randomize_is_an_error_naming_it(script, tmp_path, capsys):
    argv = [
        "--scenarios",
        "default",
        "--family",
        "configs/ppo_spot.yaml",
        "--search",
        "2",
        "--episodes",
        "2",
        "--out",
        str(tmp_path / "o"),
    ]
    assert script.main(argv) == 2
    err = capsys.readouterr().err
    assert "no scenario.randomize" in err and "Traceback" not in err


def test_market_features_of_the_base_are_its_own_ratios_and_the_ridge_recovers_a_linear_law(script):
    from hedgegym.train.experiment import load_experiment

    base = load_experiment("configs/ppo_generalist.yaml").scenario.resolved
    reference = script.reference_of(base)
    assert script.market_features(base, reference) == pytest.approx([1.0, 0.6, 0.0, 0.0, 0.0, 1.0, 0.0])
    crash = load_scenario("short-gamma-crash")  # depth halved, dealers 7,500 of the base's 9,600 short, jumps 24 x -4 %
    want = [1.0, 0.6, np.log(0.5), 0.0, 0.0, 7500.0 / 9600.0, 24.0 * -0.04]
    assert script.market_features(crash, reference) == pytest.approx(want)
    # A linear law of the features, two targets: the ridge's coefficients are that law (a shrinkage
    # of 1e-2 against a design of 500 rows is below 1e-4 here).
    rng = np.random.default_rng(5)
    x = np.column_stack([np.ones(500), rng.normal(size=(500, 6))])
    beta = rng.normal(size=(7, 2))
    assert script.ridge(x, x @ beta) == pytest.approx(beta, abs=1e-4)


def test_the_contextual_pick_is_a_grid_point_judged_on_each_scenario(script, tmp_path):
    out = tmp_path / "ctx"
    argv = family_argv(out, markets=9, per_market=2)
    assert script.main(argv) == 0
    data = json.loads((out / "constant_bound.json").read_text())
    ctx, (row,) = data["family"]["context"], data["rows"]
    assert np.asarray(ctx["coefficients"]).shape == (7, 2) and len(ctx["loo_regret"]) == 2
    assert min(ctx["loo_regret"]) >= 0.0  # a regret against each market's best grid point
    assert row["context_pick"] in ctx["actions"] and "context_held" in row
    assert "The contextual fit" in (out / "constant_bound.md").read_text()
