"""The sweep's searcher (``ValidSearch``) without a Ray cluster: a draw that is not a valid experiment is
told to Optuna as failed and drawn again, and the trial's results reach the ask that was valid.

Checked through Optuna's own public record of the study (``optuna.load_study`` on the storage the
searcher was given), not through the searcher's state.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("ray.tune")
optuna = pytest.importorskip("optuna")

from hedgegym.train import sweep  # noqa: E402

SPACE = Path(__file__).resolve().parents[2] / "configs" / "spaces" / "ppo_spot.yaml"


def searcher(storage, name: str):
    space = sweep.space_data(sweep.load_space(SPACE))
    param_space = {k: d.ray_domain() for k, d in sweep.validate_space(space).parameters.items()}
    search = sweep._make_valid_search()(
        sampler=optuna.samplers.TPESampler(seed=0), study_name=name, storage=storage, base={}, space=space
    )
    assert search.set_search_properties(sweep.METRIC, "max", param_space)
    return search


def test_invalid_draws_fail_in_optuna_and_the_trial_reports_to_its_valid_ask(monkeypatch, tmp_path):
    verdicts = iter(["n_epochs too large", "clip_range too small", None, None])
    seen = []

    def problem(base, values):
        seen.append(values)
        return next(verdicts)

    monkeypatch.setattr(sweep, "experiment_problem", problem)
    # A journal file: the restored searcher's unpickled storage writes to the same study.
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(tmp_path / "study.log")))
    search = searcher(storage, "s")
    params = search.suggest("trial_a")
    assert len(seen) == 3 and sweep.decode_params(search.hedgegym_space, params) == seen[-1]
    search.on_trial_result("trial_a", {sweep.METRIC: 1.5, "training_iteration": 1})
    search.on_trial_complete("trial_a", {sweep.METRIC: 2.5, "training_iteration": 2})
    # Saved and restored (what a resumed sweep does), the next trial's results reach its own ask too.
    search.save(str(tmp_path / "searcher.pkl"))
    again = searcher(storage, "s")
    again.restore(str(tmp_path / "searcher.pkl"))
    again.suggest("trial_b")
    again.on_trial_complete("trial_b", {sweep.METRIC: -1.0, "training_iteration": 1})

    trials = optuna.load_study(study_name="s", storage=storage).get_trials(deepcopy=False)
    states = [t.state.name for t in trials]
    assert states == ["FAIL", "FAIL", "COMPLETE", "COMPLETE"]
    valid = trials[2]
    assert valid.value == 2.5 and valid.intermediate_values == {1: 1.5}
    assert sweep.decode_params(search.hedgegym_space, valid.params) == seen[2]
    assert trials[3].value == -1.0 and sweep.decode_params(search.hedgegym_space, trials[3].params) == seen[3]


def test_a_space_with_no_valid_experiment_is_a_config_error(monkeypatch):
    monkeypatch.setattr(sweep, "experiment_problem", lambda base, values: "never valid")
    monkeypatch.setattr(sweep, "_RESAMPLES", 3)
    search = searcher(optuna.storages.InMemoryStorage(), "t")
    with pytest.raises(sweep.ConfigError, match="no valid experiment in 3 draws; the last: never valid"):
        search.suggest("trial_a")
