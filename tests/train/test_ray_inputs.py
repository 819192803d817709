"""Sweeps and matrices without starting Ray: the missing extra, the search space's validation, the statistics.

These run whether or not the Ray extra is installed (``tests/train/test_ray.py`` has the cases that
start Ray). The statistics are checked against scipy, which shares no code with them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from scipy import stats

from hedgegym.envs.config import ConfigError
from hedgegym.train.matrix import seed_blocks
from hedgegym.train.sweep import across_seeds, base_data, check_space, load_space, t_quantile, validate_space

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs"
SPACE = CONFIGS / "spaces" / "ppo_spot.yaml"
HEDGEGYM = shutil.which("hedgegym") or str(Path(sys.executable).with_name("hedgegym"))


def one_line_error(res: subprocess.CompletedProcess) -> str:
    assert res.returncode == 2, (res.returncode, res.stdout[-2000:], res.stderr[-2000:])
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    return lines[0]


@pytest.mark.parametrize(
    "args",
    [
        ["sweep", str(CONFIGS / "ppo_spot.yaml"), "--space", str(SPACE), "--trials", "2"],
        ["matrix", "--scenario", "default", "--episodes", "10"],
    ],
    ids=["sweep", "matrix"],
)
def test_without_the_ray_extra_the_command_says_how_to_install_it(args, tmp_path):
    # A folder on the path first whose `ray` package cannot be imported: what a missing extra looks like.
    fake = tmp_path / "site" / "ray"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text('raise ModuleNotFoundError("No module named \'ray\'", name="ray")\n')
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}
    res = subprocess.run([HEDGEGYM, *args], capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path)
    line = one_line_error(res)
    assert "needs the optional Ray extra (ray is not installed)" in line
    assert 'pip install -e ".[ray]"' in line
    assert not (tmp_path / "runs").exists()  # nothing written


def test_the_shipped_space_fits_its_config():
    space = load_space(SPACE)
    base = base_data(CONFIGS / "ppo_spot.yaml", {})
    check_space(space, base)  # every value of every parameter makes a valid experiment
    assert space.asha is not None and space.asha.grace_evaluations * 250_000 < 3_000_000
    assert set(space.parameters) >= {"algorithm.hyperparameters.learning_rate", "algorithm.policy_kwargs.net_arch"}


@pytest.mark.parametrize(
    "data, expected",
    [
        ({"parameters": {"training.seed": {"int": [0, 3]}}, "bogus": 1}, "bogus: unknown field"),
        ({"parameters": {"training.seed": {"integer": [0, 3]}}}, "parameters.training.seed.integer: unknown field"),
        ({"parameters": {"training.seed": {"int": [0, 3], "choice": [1]}}}, "give exactly one of uniform"),
        (
            {"parameters": {"training.seed": {}}},
            "give exactly one of uniform, loguniform, int, logint, choice (got none)",
        ),
        ({"parameters": {"x.y": {"uniform": [1.0, 1.0]}}}, "uniform: [low, high] needs low < high (got [1.0, 1.0])"),
        ({"parameters": {"x.y": {"loguniform": [0, 1]}}}, "loguniform: low must be > 0 (got [0.0, 1.0])"),
        ({"parameters": {"x.y": {"uniform": [1.0]}}}, "uniform: give [low, high] (got [1.0])"),
        ({"parameters": {"x.y": {"uniform": ["a", 1]}}}, "must be a number"),
        ({"parameters": {"x.y": {"choice": []}}}, "choice: give at least one value (got [])"),
        ({"parameters": {"x.y": {"choice": [1, 1]}}}, "choice: values must not repeat (got [1, 1])"),
        ({"parameters": {}}, "parameters: give at least one field to search"),
        ({"parameters": {"training.total_timesteps": {"int": [1, 9]}}}, "cannot be searched: it is the budget"),
        ({"parameters": {"evaluation.episodes": {"int": [1, 9]}}}, "cannot be searched: every trial must meet"),
        ({"parameters": {"x..y": {"int": [1, 9]}}}, "is not a dotted field name"),
        ({"parameters": {"x.y": {"int": [1, 9]}}, "asha": {"reduction_factor": 1}}, "asha.reduction_factor"),
    ],
)
def test_bad_spaces_name_the_field_and_the_value(data, expected):
    with pytest.raises(ConfigError) as err:
        validate_space(data, " in space.yaml")
    assert str(err.value).startswith("invalid search space in space.yaml:")
    assert expected in str(err.value)


def test_a_value_that_never_makes_a_valid_experiment_is_refused_before_the_sweep():
    base = base_data(CONFIGS / "ppo_spot.yaml", {})
    cases = {
        "algorithm.hyperparameters.learning_rat": ({"loguniform": [1e-5, 1e-3]}, "PPO has no hyperparameter"),
        "scenario.overrides.market.sigmaa": ({"uniform": [0.5, 0.9]}, "sigmaa"),
        "algorithm.hyperparameters.ent_coef": ({"uniform": [-1.0, 0.1]}, "ent_coef must be >= 0"),
        "algorithm.policy_kwargs.activation_fn": ({"choice": ["tanh", "relux"]}, "relux"),
    }
    for key, (dist, expected) in cases.items():
        space = validate_space({"parameters": {key: dist}})
        with pytest.raises(ConfigError) as err:
            check_space(space, base, source=" s.yaml")
        message = str(err.value)
        assert message.startswith(f"search space s.yaml: parameters.{key}: the value "), message
        assert expected in message and "\n" not in message
    # Values valid only together are fine: they are drawn again during the sweep when invalid.
    space = validate_space(
        {
            "parameters": {
                "algorithm.hyperparameters.n_steps": {"choice": [168, 96]},
                "algorithm.hyperparameters.batch_size": {"choice": [2688, 1536]},
            }
        }
    )
    check_space(space, base)
    with pytest.raises(ConfigError, match="is both searched and set by --set"):
        check_space(space, base, fixed={"algorithm.hyperparameters.n_steps": "64"})


def test_yaml_bounds_spelled_without_a_dot_are_numbers(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text("parameters:\n  algorithm.hyperparameters.learning_rate: {loguniform: [1e-5, 1e-3]}\n")
    dist = load_space(path).parameters["algorithm.hyperparameters.learning_rate"]
    assert dist.bounds == [1e-5, 1e-3] and dist.kind == "loguniform"


@pytest.mark.parametrize("df", [1, 2, 3, 4, 7, 19, 100, 999])
@pytest.mark.parametrize("p", [0.6, 0.9, 0.975, 0.995])
def test_t_quantile_matches_scipy(p, df):
    assert t_quantile(p, df) == pytest.approx(stats.t.ppf(p, df), rel=1e-9)


def test_across_seeds_is_the_student_t_interval():
    values = [1200.0, -350.0, 410.5, 980.0, 77.0]
    s = across_seeds(values)
    low, high = stats.t.interval(0.95, len(values) - 1, loc=stats.tmean(values), scale=stats.sem(values))
    assert s["mean"] == pytest.approx(sum(values) / 5) and s["n"] == 5
    assert (s["low"], s["high"]) == (pytest.approx(low, rel=1e-9), pytest.approx(high, rel=1e-9))


def test_seed_blocks_cover_the_episodes_in_order():
    blocks = seed_blocks(10_001, seed=3, block=8192, batch_size=4096)
    assert blocks == [(3, 8192), (8195, 1809)]
    assert sum(n for _, n in blocks) == 10_001
    assert seed_blocks(10, seed=0) == [(0, 10)]  # default: one evaluation batch per task
    with pytest.raises(ConfigError, match="--block 5000: must be a multiple of the evaluation batch"):
        seed_blocks(10_000, seed=0, block=5000, batch_size=4096)


def test_the_space_is_saved_as_it_is_read(tmp_path):
    from hedgegym.train.sweep import space_data

    space = load_space(SPACE)
    again = validate_space(json.loads(json.dumps(space_data(space))))
    assert again == space
