"""`hedgegym simulate` on the second-order scenarios: the measures in the table, summary.json and
the plot; the scenarios run from the CLI and through gymnasium.make."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest
from typer.testing import CliRunner

import hedgegym.envs  # noqa: F401  (registers the ids)
from hedgegym.envs.config import load_scenario
from hedgegym.envs.registration import SCENARIO_IDS
from hedgegym.train.cli import app
from hedgegym.train.simulate import simulate

runner = CliRunner()


@pytest.mark.parametrize(
    ("scenario", "rows"),
    [
        ("vanna-crash", ["dealer flow per path", "mean psi (vanna feedback)", "return autocorrelation"]),
        ("crowded-dealers", ["crowding: steps with >= 2 of 4 cohorts", "return autocorrelation"]),
        ("liquidation-cascade", ["liquidated per path: longs / shorts", "cascade rounds", "insurance fund"]),
    ],
)
def test_cli_simulate_shows_and_plots_the_second_order_measures(tmp_path, scenario, rows):
    out = tmp_path / "sim"
    result = runner.invoke(app, ["simulate", "--scenario", scenario, "--paths", "12", "--out", str(out), "--plot"])
    assert result.exit_code == 0, result.output
    for row in rows:
        assert row in result.output, row
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["second_order"]["flow_usd"]) == {"gamma", "vanna", "charm", "other"}
    assert (out / "simulation.png").stat().st_size > 30_000


def test_first_order_scenarios_show_no_second_order_rows():
    result = simulate(load_scenario("default"), paths=4)
    assert result.second_order == {}
    assert not any("dealer flow" in name for name, _ in result.table_rows())


def test_pooled_measures_are_recomputed_from_the_paths():
    cfg = load_scenario("liquidation-cascade")
    result = simulate(cfg, paths=40, seed=3)
    so, per = result.second_order, result.per_path
    assert so["liquidated_long_usd"] == pytest.approx(per["liquidated_long_usd"].mean())
    assert so["liquidated_long_usd"] > 5.0 * so["liquidated_short_usd"]  # mostly longs, as on 10 Oct 2025
    r2 = per["sum_r2"]
    assert so["return_autocorr"][0] == pytest.approx((per["return_autocorr_1"] * r2).sum() / r2.sum())
    # The sample's per-step liquidations sum to the path's total.
    total = result.sample["liquidated_long_usd"].sum(axis=1)
    assert np.allclose(total, per["liquidated_long_usd"][: total.shape[0]])


@pytest.mark.parametrize("scenario", ["vanna-crash", "crowded-dealers", "liquidation-cascade"])
def test_new_scenarios_through_gymnasium_make(scenario):
    env = gym.make(SCENARIO_IDS[scenario])
    obs, info = env.reset(seed=0)
    assert "flow_gamma" in info and "insurance_fund_usd" in info
    for _ in range(env.unwrapped.episode_steps):
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
    assert terminated or truncated
    assert "liquidated_long_usd" in info["episode_metrics"] and np.isfinite(reward)
