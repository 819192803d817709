"""Every command on every shipped scenario runs from the CLI and writes finite numbers (or null).

Tiny runs (a few paths or episodes): what is checked is that nothing crashes or leaks inf/NaN into
the files, with ``--out`` and ``--plot``, including the one-step episode whose bootstrap intervals
used to miss their point by rounding.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hedgegym.envs.config import list_scenarios
from hedgegym.train.cli import app

runner = CliRunner()
SCENARIOS = sorted(list_scenarios())
ONE_STEP = ["--set", "episode.dt_hours=24", "--set", "episode.horizon_days=1"]
ROOT = Path(__file__).resolve().parents[2]


def _reject_constant(name: str):
    raise ValueError(f"non-finite number {name} in JSON")


def finite_json(path: Path):
    """The file's JSON, refusing NaN/Infinity; every number in it is finite."""
    return json.loads(path.read_text(), parse_constant=_reject_constant)


def all_json_finite(run_dir: Path) -> int:
    files = sorted(run_dir.rglob("*.json"))
    for path in files:
        finite_json(path)
    return len(files)


def intervals_hold_their_point(node) -> int:
    """Every ``{"value": v, "ci": [lo, hi]}`` in a JSON tree has lo <= v <= hi; returns how many."""
    n = 0
    if isinstance(node, dict):
        if "value" in node and "ci" in node and node["value"] is not None:
            lo, hi = node["ci"]
            assert lo <= node["value"] <= hi, node
            n += 1
        for v in node.values():
            n += intervals_hold_their_point(v)
    elif isinstance(node, list):
        for v in node:
            n += intervals_hold_their_point(v)
    return n


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_simulate_every_scenario_with_out_and_plot(scenario, tmp_path):
    out = tmp_path / "sim"
    result = runner.invoke(app, ["simulate", "--scenario", scenario, "--paths", "3", "--out", str(out), "--plot"])
    assert result.exit_code == 0, result.output
    summary = finite_json(out / "summary.json")
    assert (out / "simulation.png").stat().st_size > 5_000
    for key, value in summary.items():
        if isinstance(value, float):
            assert math.isfinite(value), key
    # null has one meaning per field (train.simulate's docstring): infinite depth, or no linear law.
    if summary["dealer_effective_depth_usd"] is None:
        assert scenario == "frictionless"
    lo, hi = summary["pin_effect_ci"]
    assert lo <= summary["pin_effect"] <= hi
    lo, hi = summary["vol_amplification_ci"]
    assert lo <= summary["vol_amplification"] <= hi


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_evaluate_every_scenario_with_out(scenario, tmp_path):
    out = tmp_path / "ev"
    # A band hedger, the cheapest router and Leland's vol: every kind of policy; `all` runs in the one-step test.
    result = runner.invoke(
        app,
        [
            "evaluate",
            "--scenario",
            scenario,
            "--episodes",
            "3",
            "--baselines",
            "no_hedge,delta@cheapest,leland",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert all_json_finite(out) >= 1
    assert intervals_hold_their_point(finite_json(out / "metrics.json")) > 0


def test_evaluate_one_step_episode(tmp_path):
    # 200 episodes of one step: the delta hedger's only trade is the same on every path, so its cost
    # statistics are constant and their weighted bootstrap replicates differ from the point by rounding.
    out = tmp_path / "ev1"
    result = runner.invoke(
        app,
        ["evaluate", "--scenario", "default", *ONE_STEP, "--episodes", "200", "--baselines", "all", "--out", str(out)],
    )
    assert result.exit_code == 0, result.output
    assert intervals_hold_their_point(finite_json(out / "metrics.json")) > 0


def test_simulate_one_step_episode(tmp_path):
    out = tmp_path / "sim1"
    result = runner.invoke(
        app, ["simulate", "--scenario", "default", *ONE_STEP, "--paths", "50", "--out", str(out), "--plot"]
    )
    assert result.exit_code == 0, result.output
    assert finite_json(out / "summary.json")["steps"] == 1


@pytest.mark.parametrize("scenario", ["default", "frictionless"])
def test_train_one_step_episode(scenario, tmp_path):
    out = tmp_path / "train"
    args = [
        "train",
        str(ROOT / "configs" / "ppo_spot.yaml"),
        "--out",
        str(out),
        "--set",
        f"scenario.name={scenario}",
        "--set",
        "scenario.overrides={agent.venues: [spot], episode.dt_hours: 24, episode.horizon_days: 1}",
        "--set",
        "training.total_timesteps=64",
        "--set",
        "env.n_envs=2",
        "--set",
        "algorithm.hyperparameters.n_steps=32",
        "--set",
        "algorithm.hyperparameters.batch_size=32",
        "--set",
        "algorithm.hyperparameters.n_epochs=1",
        "--set",
        "training.checkpoint_every=0",
        "--set",
        "evaluation.every=0",
        "--set",
        "evaluation.episodes=2",
        "--set",
        "evaluation.final_episodes=50",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert all_json_finite(out) >= 1
    assert intervals_hold_their_point(finite_json(out / "evaluation" / "metrics.json")) > 0
