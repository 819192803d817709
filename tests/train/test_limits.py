"""Seeds and run sizes: exact limits, the same for the CLI and the library (hedgegym.train.limits)."""

from __future__ import annotations

import numpy as np
import pytest

from hedgegym.envs.config import load_scenario
from hedgegym.train.evaluate import evaluate
from hedgegym.train.limits import MAX_EPISODES, SEED_LIMIT
from hedgegym.train.simulate import simulate

# A 6-hour episode: each call costs little beyond its start.
SHORT = {"episode.horizon_days": 0.25}


@pytest.fixture(scope="module")
def short():
    return load_scenario("default", SHORT)


def test_the_largest_seed_works_and_its_episodes_are_the_last_int64_seeds(short):
    result = evaluate(["delta"], short, episodes=3, seed=SEED_LIMIT - 3, n_resamples=10, agent_impact_rerun=False)
    assert result.metrics_json()["seeds"] == [2**63 - 3, 2**63 - 1]
    # Episode j is seed + j: the last episode is the one run alone on seed 2**63 - 1.
    last = evaluate(["delta"], short, episodes=1, seed=SEED_LIMIT - 1, n_resamples=10, agent_impact_rerun=False)
    assert result.per_episode["delta@spot"]["pnl"][-1] == last.per_episode["delta@spot"]["pnl"][0]
    sim = simulate(short, paths=20, seed=SEED_LIMIT - 20)
    assert sim.paths == 20 and np.isfinite(sim.vol_amplification)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda c: evaluate(["delta"], c, episodes=5, seed=2**63),
            r"^seed 9223372036854775808: must be in \[0, 2\*\*63 - episodes\] = \[0, 9223372036854775803\]",
        ),
        (lambda c: evaluate(["delta"], c, episodes=5, seed=2**63 - 4), r"^seed 9223372036854775804: must be in"),
        (lambda c: evaluate(["delta"], c, episodes=2, seed=-1), r"^seed -1: must be in \[0, 2\*\*63 - episodes\]"),
        (lambda c: evaluate(["delta"], c, episodes=2, seed=1.5), r"^seed must be an integer \(got 1.5\)"),
        (lambda c: evaluate(["delta"], c, episodes=0), r"^episodes 0: must be in \[1, 1,000,000\]"),
        (
            lambda c: evaluate(["delta"], c, episodes=MAX_EPISODES + 1),
            r"^episodes 1000001: must be in \[1, 1,000,000\]",
        ),
        (lambda c: evaluate(["delta"], c, episodes=True), r"^episodes must be an integer \(got True\)"),
        (
            lambda c: simulate(c, paths=20, seed=2**63 - 19),
            r"^seed 9223372036854775789: must be in \[0, 2\*\*63 - paths\] = \[0, 9223372036854775788\]",
        ),
        (lambda c: simulate(c, paths=2, seed=-3), r"^seed -3: must be in"),
        (lambda c: simulate(c, paths=0), r"^paths 0: must be in \[1, 1,000,000\]"),
        (lambda c: simulate(c, paths=10**9), r"^paths 1000000000: must be in \[1, 1,000,000\]"),
        (lambda c: simulate(c, paths=2.0), r"^paths must be an integer \(got 2.0\)"),
    ],
)
def test_library_limits_are_a_value_error_naming_the_argument_and_range(call, message, short):
    with pytest.raises(ValueError, match=message):
        call(short)
