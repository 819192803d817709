"""docs/centre_ablation.py: a model's objective as trained, with its centre at 0, and at its start,
checked against the control run as constants (code the script does not share)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from docs_script import constant_band_run, load_docs_script

from hedgegym.envs.config import load_scenario
from hedgegym.train.evaluate import objective, run_policy
from hedgegym.train.warm_start import constant_policy

ROOT = Path(__file__).resolve().parents[1]
SHORT = {"episode.horizon_days": 0.25, "episode.dt_hours": 1.0}


@pytest.fixture(scope="module")
def script():
    return load_docs_script("centre_ablation")


@pytest.fixture(scope="module")
def constant_model(tmp_path_factory):
    run_dir, fixed, interface = constant_band_run(tmp_path_factory.mktemp("abl"))
    return fixed, interface


def test_the_three_variants_are_the_control_at_those_constants(script, constant_model, tmp_path):
    model, interface = constant_model
    if interface["normalizer"] is not None:  # the zip's statistics, under the name the copy looks for
        model.with_name("fixed_vecnormalize.pkl").write_bytes(
            model.with_name(interface["normalizer"]["file"]).read_bytes()
        )
    (model.with_name("warm_start.json")).write_text(json.dumps({"action": [-0.5, 0.1]}))
    out = tmp_path / "out"
    assert script.main([str(model), "--scenarios", "vault-epoch", "--episodes", "6", "--out", str(out)]) == 0
    row = json.loads((out / "centre_ablation.json").read_text())["rows"][0]
    config = load_scenario("vault-epoch")
    from hedgegym.agents.residual import make_control

    control = make_control(interface["control"], config)
    seeds = np.arange(1_000_000, 1_000_006)
    for name, x in (("as trained", [0.3, 0.2]), ("centre at 0", [0.3, 0.0]), ("start", [-0.5, 0.1])):
        per_episode, _ = run_policy(constant_policy(control, x), config, seeds, n_sample_paths=0)
        # rel 1e-6: the model's actions are float32
        assert row[f"objective {name}"] == pytest.approx(objective(per_episode, config), rel=1e-6), name
    assert row["start"] == [-0.5, 0.1] and (out / "centre_ablation.md").is_file()


def test_bad_input_is_one_line(script, constant_model, tmp_path, capsys):
    model, _ = constant_model
    with pytest.raises(SystemExit):
        script.main([str(tmp_path / "nope.zip"), "--out", str(tmp_path / "a")])
    assert "no such model zip" in capsys.readouterr().err
    used = tmp_path / "used"
    used.mkdir()
    (used / "x").write_text("x")
    assert script.main([str(model), "--scenarios", "atlantis", "--episodes", "2", "--out", str(tmp_path / "b")]) == 2
    assert "atlantis" in capsys.readouterr().err
    assert script.main([str(model), "--episodes", "2", "--out", str(used)]) == 2
    assert "centre_ablation.py: error:" in capsys.readouterr().err
