"""docs/results_table.py: README's results rows from run directories, and its error on an unfinished one."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

SCRIPT = Path(__file__).resolve().parents[1] / "docs" / "results_table.py"


def fake_run(tmp_path: Path, agent_slippage: float) -> Path:
    """A run directory of a future-only agent with the three files the script reads (numbers typed here)."""
    run = tmp_path / f"run-{agent_slippage:g}"
    (run / "evaluation").mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump({"name": "ppo_crowded_dealers"}))
    info = {"seed": 1, "started": "2026-12-03T12:00:00", "finished": "2026-12-03T12:02:45"}
    (run / "run_info.json").write_text(json.dumps(info))

    def policy(slippage):
        return {"metrics": {"slippage_usd": {"value": slippage}}}

    metrics = {
        "scenario": "crowded-dealers",
        "reference": "leland@future",
        "objective": {"values": {"ppo_crowded_dealers": -52830.0, "leland@future": -54261.0}},
        "paired_differences": {"ppo_crowded_dealers": {"mean_variance": {"value": 1431.0, "ci": [780.0, 2090.0]}}},
        "policies": {
            "ppo_crowded_dealers": policy(agent_slippage),
            "no_hedge": policy(0.0),
            "delta@future": policy(8352.0),
            "leland@future": policy(8015.0),
        },
    }
    (run / "evaluation" / "metrics.json").write_text(json.dumps(metrics))
    return run


def table(*runs: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, runs)], capture_output=True, text=True)


@pytest.mark.parametrize("slippage, verdict", [(6407.0, "**win**"), (9000.0, "objective only (slips more than delta)")])
def test_single_venue_agent_is_judged_against_delta_on_its_venue(tmp_path, slippage, verdict):
    out = table(fake_run(tmp_path, slippage))
    assert out.returncode == 0, out.stderr
    row = out.stdout.strip().splitlines()[-1]
    expected = (
        f"| `ppo_crowded_dealers` | 1 | leland@future | -52.8k | -54.3k | +1.4k [+0.8k, +2.1k] | "
        f"{slippage:,.0f} / 8,352 | {verdict} | 165 s |"
    )
    assert row == expected


def test_unfinished_run_directory_is_named_with_what_it_lacks(tmp_path):
    run = fake_run(tmp_path, 6407.0)
    (run / "evaluation" / "metrics.json").unlink()
    out = table(run)
    assert out.returncode == 1
    assert "Traceback" not in out.stderr
    assert f"{run}: no evaluation/metrics.json" in out.stderr
