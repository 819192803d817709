"""docs/robustness.py --model: the zip of each run it evaluates, checked against the control run as
the constant that zip acts (code the script does not share)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from docs_script import CONSTANT, constant_band_run, load_docs_script

from hedgegym.agents.residual import make_control
from hedgegym.envs.config import load_scenario
from hedgegym.train.evaluate import objective, run_policy
from hedgegym.train.warm_start import constant_policy


def test_model_picks_the_zip_that_is_evaluated(tmp_path, capsys):
    script = load_docs_script("robustness")
    run_dir, fixed, interface = constant_band_run(tmp_path)
    out = tmp_path / "out"
    argv = ["--episodes", "3", "--scenarios", "vault-epoch", "--model", fixed.name, "--out", str(out), str(run_dir)]
    assert script.main(argv) == 0
    cell = next(iter(json.loads((out / "robustness.json").read_text())["cells"].values()))["vault-epoch"]
    config = load_scenario("vault-epoch")
    control = make_control(interface["control"], config)
    per_episode, _ = run_policy(constant_policy(control, CONSTANT), config, np.arange(1_000_000, 1_000_003))
    assert cell["objective"] == pytest.approx(objective(per_episode, config), rel=1e-6)  # float32 actions
    assert f"--model {fixed.name}" in (out / "robustness.md").read_text()
    with pytest.raises(SystemExit):
        script.main(["--model", "nope.zip", "--out", str(tmp_path / "b"), str(run_dir)])
    assert "no nope.zip" in capsys.readouterr().err
