"""Golden trajectories: every named scenario replays its stored paths bit for bit (all info fields).

A failure means the dynamics changed. If that is intended, regenerate with
``python tests/golden/make_golden.py``, commit the ``.npz`` files, and bump the env ids' version.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from hedgegym.envs.config import list_scenarios

HERE = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("make_golden", HERE / "make_golden.py")
make_golden = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_golden)


@pytest.mark.parametrize("scenario", sorted(list_scenarios()))
def test_scenario_replays_its_golden_trajectories(scenario):
    path = HERE / f"{scenario}.npz"
    if not path.is_file():
        pytest.fail(
            f"no golden file {path.name}: generate it with `python tests/golden/make_golden.py {scenario}`"
            " and commit it"
        )
    with np.load(path) as stored:
        golden = {k: stored[k] for k in stored.files}
    fresh = make_golden.trajectories(scenario)
    assert sorted(fresh) == sorted(golden), "the info fields changed"
    for key, value in golden.items():
        assert fresh[key].dtype == value.dtype and fresh[key].shape == value.shape, key
        assert np.array_equal(fresh[key], value, equal_nan=True), (
            f"{scenario}: {key!r} differs from the golden file at "
            f"{np.argwhere(fresh[key] != value)[:3].tolist()} (path, step, ...)"
        )


def test_generator_is_deterministic():
    a, b = make_golden.trajectories("frictionless"), make_golden.trajectories("frictionless")
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert {"spot", "exo_spot", "step_pnl", "interest", "hedge", "obs", "reward"} <= set(a)
