"""Hyperparameter sweeps and seed studies on Ray Tune: ``hedgegym sweep``.

A sweep trains one experiment config (``configs/*.yaml``) many times with fields drawn from a
search space — Optuna's TPE sampler proposes the values, ASHA stops trials whose periodic held-out
objective (``evaluation.every``) falls behind — and each trial is one ordinary
:func:`hedgegym.train.train` run with its own run directory. A seed study trains one config on K
training seeds and reports how often, and by how much, it beats the best classical hedger.

The search space is YAML over dotted config fields, validated like every config
(:class:`SpaceConfig`; ``configs/spaces/ppo_spot.yaml`` is the shipped example)::

    parameters:
      algorithm.hyperparameters.learning_rate: {loguniform: [1.0e-5, 1.0e-3]}
      algorithm.hyperparameters.n_epochs: {int: [3, 10]}
      scenario.overrides.agent.risk_aversion: {choice: [0.5, 1, 2]}
    asha: {grace_evaluations: 1, reduction_factor: 2}   # null: no early stopping
    search: {seed: 0, startup_trials: 10}               # TPE's seed and its random start

A sweep directory holds ``sweep.json`` (what was asked), ``base.yaml`` (the config the trials start
from: CONFIG with ``--set`` applied), ``space.yaml``, ``trials/<trial>/`` (one ``hedgegym train`` run
directory per trial) with ``trials/<trial>.json`` (its parameters and status), Ray Tune's
experiment state (``tune/``), ``leaderboard.{csv,md}`` and ``best_config.yaml``, a config that
``hedgegym train`` runs as is; a seed study adds ``seeds/seed-<s>/``, ``seeds.{json,md,csv}``.

**Reliability.** A trial's run directory is its checkpoint: a trial whose worker died is retried
by Ray (``--max-failures``) and resumes with ``hedgegym train --resume``'s machinery from its newest
checkpoint; a trial whose run is already finished reports its results without training again, so
``--resume`` of an interrupted sweep redoes no finished trial. ASHA reads the periodic evaluations
that training writes to ``history.json`` (an SB3 callback passed to :func:`train` forwards each
new entry to Ray); nothing in the training pipeline knows about Ray.

Example:
    >>> space = validate_space({"parameters": {
    ...     "algorithm.hyperparameters.learning_rate": {"loguniform": ["1e-5", 1e-3]},
    ...     "algorithm.policy_kwargs.net_arch": {"choice": [[64, 64], [128]]}}})
    >>> space.parameters["algorithm.hyperparameters.learning_rate"].kind, space.asha.reduction_factor
    ('loguniform', 2.0)
    >>> space.parameters["algorithm.policy_kwargs.net_arch"].decode(1)
    [128]
    >>> validate_space({"parameters": {"training.seed": {"int": [5, 1]}}})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    hedgegym.envs.config.ConfigError: invalid search space:
      parameters.training.seed: int: [low, high] needs low <= high (got [5, 1])
    >>> round(t_quantile(0.975, 4), 4)
    2.7764
"""

from __future__ import annotations

import csv
import fcntl
import io
import json
import logging
import math
import os
import random
import shutil
import socket
import sys
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError, model_validator

from hedgegym.envs.config import ConfigError, StrictModel, apply_overrides, format_validation_error, read_yaml
from hedgegym.train.cluster import check_positive, ray_session, require_ray, set_worker_threads
from hedgegym.train.experiment import ExperimentConfig, validate_experiment
from hedgegym.train.io import claim_dir, git_commit, new_run_dir, write_json_atomic, write_text_atomic

METRIC = "objective"
"""What the search maximises and ASHA compares: the best periodic held-out objective so far (USD)."""
TIME_ATTR = "timesteps"
MAX_TRIALS = 10_000
MAX_SEEDS = 1_000
# Fields a space may not search: the budget ASHA divides, the held-out evaluation that makes trials
# comparable (its seeds and episodes), and the run's names.
_FIXED = ("training.total_timesteps", "evaluation", "output_dir", "name", "description")
# Settings of the other parameters tried per value when checking that a value can ever be valid.
_PROBES = 16
# A sampled combination that makes an invalid experiment is drawn again, at most this often.
_RESAMPLES = 100
SWEEP_FILE = "sweep.json"


# ------------------------------------------------------------------------------------ the space
class Distribution(StrictModel):
    """One searched field: exactly one of ``uniform``, ``loguniform``, ``int``, ``logint``, ``choice``."""

    uniform: list[float] | None = Field(None, description="[low, high]: a float drawn uniformly.")
    loguniform: list[float] | None = Field(None, description="[low, high], 0 < low: a float drawn log-uniformly.")
    int_: list[int] | None = Field(None, alias="int", description="[low, high]: an integer, both ends included.")
    logint: list[int] | None = Field(None, description="[low, high], 1 <= low: an integer drawn log-uniformly.")
    choice: list[Any] | None = Field(None, description="Values to choose from (numbers, strings, lists, mappings).")

    @model_validator(mode="before")
    @classmethod
    def _numbers_in_yaml(cls, data: Any) -> Any:
        # PyYAML reads 1e-5 (no dot) as a string; a bound spelled as a number is a number.
        if isinstance(data, Mapping):
            data = dict(data)
            for key in ("uniform", "loguniform"):
                if isinstance(data.get(key), list):
                    data[key] = [_number(v) for v in data[key]]
        return data

    @model_validator(mode="after")
    def _one_kind(self) -> Distribution:
        given = [k for k in ("uniform", "loguniform", "int_", "logint", "choice") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of uniform, loguniform, int, logint, choice "
                f"(got {', '.join(k.rstrip('_') for k in given) or 'none'})"
            )
        kind = given[0].rstrip("_")
        value = getattr(self, given[0])
        if kind == "choice":
            if not value:
                raise ValueError("choice: give at least one value (got [])")
            if len({json.dumps(v, sort_keys=True) for v in value}) != len(value):
                raise ValueError(f"choice: values must not repeat (got {value})")
            return self
        if len(value) != 2:
            raise ValueError(f"{kind}: give [low, high] (got {value})")
        low, high = value
        if kind in ("uniform", "loguniform") and not low < high:
            raise ValueError(f"{kind}: [low, high] needs low < high (got {value})")
        if kind in ("int", "logint") and not low <= high:
            raise ValueError(f"{kind}: [low, high] needs low <= high (got {value})")
        if kind == "loguniform" and low <= 0:
            raise ValueError(f"loguniform: low must be > 0 (got {value})")
        if kind == "logint" and low < 1:
            raise ValueError(f"logint: low must be >= 1 (got {value})")
        return self

    @property
    def kind(self) -> str:
        return next(k.rstrip("_") for k in ("uniform", "loguniform", "int_", "logint", "choice") if getattr(self, k))

    @property
    def bounds(self) -> list:
        return getattr(self, "int_" if self.kind == "int" else self.kind)

    def candidates(self) -> list:
        """The values checked before the sweep: both ends of a range, every choice."""
        return list(self.bounds)

    def sample(self, rng: random.Random) -> Any:
        """A value drawn with ``rng`` (the probes of :func:`check_space`; the sweep samples with Optuna)."""
        low, high = (None, None) if self.kind == "choice" else self.bounds
        if self.kind == "uniform":
            return rng.uniform(low, high)
        if self.kind == "loguniform":
            return math.exp(rng.uniform(math.log(low), math.log(high)))
        if self.kind == "int":
            return rng.randint(low, high)
        if self.kind == "logint":
            return int(round(math.exp(rng.uniform(math.log(low), math.log(high)))))
        return rng.choice(self.choice)

    def ray_domain(self):
        """The Ray Tune domain: choices are drawn as indices (Optuna's categories must be scalars)."""
        from ray import tune

        low, high = (None, None) if self.kind == "choice" else self.bounds
        if self.kind == "uniform":
            return tune.uniform(low, high)
        if self.kind == "loguniform":
            return tune.loguniform(low, high)
        if self.kind == "int":
            return tune.randint(low, high + 1)
        if self.kind == "logint":
            return tune.lograndint(low, high + 1)
        return tune.choice(list(range(len(self.choice))))

    def decode(self, drawn: Any) -> Any:
        """The config value of what Ray drew: the choice for an index, a plain int or float otherwise."""
        if self.kind == "choice":
            return self.choice[int(drawn)]
        return int(drawn) if self.kind in ("int", "logint") else float(drawn)


class AshaConfig(StrictModel):
    """ASHA's early stopping: rungs at ``grace_evaluations * evaluation.every * reduction_factor**k`` timesteps."""

    grace_evaluations: int = Field(1, ge=1, description="Periodic evaluations a trial runs before it can be stopped.")
    reduction_factor: float = Field(2.0, gt=1.0, le=100.0, description="1/reduction_factor of trials pass each rung.")


class SearchConfig(StrictModel):
    """Optuna's TPE sampler."""

    seed: int = Field(0, ge=0, le=2**32 - 1, description="Seed of the sampler: the same seed proposes the same values.")
    startup_trials: int = Field(10, ge=1, description="Trials drawn at random before TPE models the results.")


class SpaceConfig(StrictModel):
    """A search space: the searched fields, ASHA's settings (``null``: none) and the sampler's."""

    description: str = Field("", description="One line on what the space explores.")
    parameters: dict[str, Distribution] = Field(description="Dotted config field -> distribution.")
    asha: AshaConfig | None = Field(AshaConfig(), description="Early stopping; null runs every trial to the end.")
    search: SearchConfig = Field(SearchConfig(), description="The TPE sampler.")

    @model_validator(mode="after")
    def _fields(self) -> SpaceConfig:
        if not self.parameters:
            raise ValueError("parameters: give at least one field to search (got {})")
        for key in self.parameters:
            parts = key.split(".")
            if not all(parts):
                raise ValueError(f"parameters: {key!r} is not a dotted field name (e.g. training.seed)")
            for fixed in _FIXED:
                if key == fixed or key.startswith(fixed + "."):
                    raise ValueError(
                        f"parameters: {key} cannot be searched: {_why_fixed(fixed)}; fix it in the config or with --set"
                    )
        return self


def _why_fixed(field_name: str) -> str:
    return {
        "training.total_timesteps": "it is the budget ASHA divides among the trials",
        "evaluation": "every trial must meet the same held-out evaluation, or their objectives are not comparable",
    }.get(field_name, "it names the run, not the experiment")


def _number(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def validate_space(data: Mapping[str, Any], source: str = "") -> SpaceConfig:
    """Validate a mapping into a :class:`SpaceConfig`; any problem is a :class:`ConfigError`."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"invalid search space{source}: expected a mapping, got {type(data).__name__}")
    try:
        return SpaceConfig.model_validate(dict(data))
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, source, "search space", SpaceConfig)) from None


def load_space(path: str | os.PathLike) -> SpaceConfig:
    """Read and validate a search-space YAML file."""
    return validate_space(read_yaml(path), source=f" in {path}")


def space_data(space: SpaceConfig) -> dict[str, Any]:
    """The space as plain data (``int`` under its YAML name), as saved in ``space.yaml``."""
    return space.model_dump(by_alias=True, exclude_none=True)


def check_space(space: SpaceConfig, base: Mapping[str, Any], fixed: Mapping[str, Any] = (), source: str = "") -> None:
    """Every value of every parameter must make a valid experiment with some setting of the others.

    Each end of a range and each choice is tried with :data:`_PROBES` random settings of the other
    parameters (fixed seed); a value that is invalid in all of them is a :class:`ConfigError`
    naming the parameter, the value and the config's own error (an unknown field, a value out of
    range). Combinations that are invalid together (a PPO ``batch_size`` that does not divide the
    rollout) are drawn again during the sweep. A field both searched and set by ``--set`` is refused.
    """
    for key in space.parameters:
        if key in fixed:
            raise ConfigError(f"search space{source}: {key} is both searched and set by --set; drop one of them")
    rng = random.Random(0)
    for key, dist in space.parameters.items():
        for value in dist.candidates():
            problem = None
            for _ in range(_PROBES):
                params = {k: (value if k == key else d.sample(rng)) for k, d in space.parameters.items()}
                problem = experiment_problem(base, params)
                if problem is None:
                    break
            if problem is not None:
                raise ConfigError(
                    f"search space{source}: parameters.{key}: the value {value!r} makes no valid experiment "
                    f"(tried with {_PROBES} settings of the other parameters): {problem}"
                )


def experiment_problem(base: Mapping[str, Any], params: Mapping[str, Any]) -> str | None:
    """Why ``base`` with ``params`` is not a valid experiment (one line), or None when it is."""
    try:
        validate_experiment(apply_overrides(base, params))
    except ConfigError as err:
        return " ".join(line.strip() for line in str(err).splitlines()[1:] or [str(err)])
    return None


def trial_config(base: Mapping[str, Any], params: Mapping[str, Any], source: str = "") -> ExperimentConfig:
    """The experiment of one trial: the base config with the trial's values set."""
    return validate_experiment(apply_overrides(base, params), source=source)


def base_data(config_path: str | os.PathLike, sets: Mapping[str, Any]) -> dict[str, Any]:
    """CONFIG as data with ``--set`` applied (``scenario: NAME`` made a section): what the trials start from."""
    data = read_yaml(config_path)
    if isinstance(data.get("scenario"), str):
        data["scenario"] = {"name": data["scenario"]}
    data = apply_overrides(data, sets) if sets else data
    validate_experiment(data, source=f" in {config_path}")
    return data


# ------------------------------------------------------------------------------------ statistics
def t_quantile(p: float, df: int) -> float:
    """The ``p`` quantile of Student's t with ``df`` degrees of freedom (bisection on its CDF).

    The CDF is ``1 - I_x(df/2, 1/2) / 2`` for ``t >= 0`` with ``x = df / (df + t^2)`` and ``I`` the
    regularised incomplete beta function (continued fraction, Numerical Recipes 6.4).
    """
    if not 0.5 <= p < 1 or df < 1:
        raise ValueError(f"t_quantile needs 0.5 <= p < 1 and df >= 1 (got p={p}, df={df})")
    low, high = 0.0, 1.0
    while _t_cdf(high, df) < p:
        high *= 2.0
    for _ in range(200):
        mid = 0.5 * (low + high)
        low, high = (mid, high) if _t_cdf(mid, df) < p else (low, mid)
    return 0.5 * (low + high)


def _t_cdf(t: float, df: int) -> float:
    x = df / (df + t * t)
    return 1.0 - 0.5 * _incomplete_beta(x, 0.5 * df, 0.5)


def _incomplete_beta(x: float, a: float, b: float) -> float:
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _beta_fraction(x, a, b) / a
    return 1.0 - front * _beta_fraction(1.0 - x, b, a) / b


def _beta_fraction(x: float, a: float, b: float) -> float:
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        for num in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def across_seeds(values: list[float], confidence: float = 0.95) -> dict[str, float]:
    """Mean of per-seed differences and its Student-t interval across seeds (``len(values) >= 2``).

    >>> s = across_seeds([1.0, 2.0, 3.0])
    >>> s["mean"], round(s["low"], 4), round(s["high"], 4)
    (2.0, -0.4841, 4.4841)
    """
    n = len(values)
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = t_quantile(0.5 + confidence / 2.0, n - 1) * sd / math.sqrt(n)
    return {"mean": mean, "low": mean - half, "high": mean + half, "std": sd, "n": n}


# ------------------------------------------------------------------------------------ a trial (in a Ray worker)
def run_trial(
    params: dict,
    *,
    base: dict,
    space: dict | None,
    sweep_dir: str,
    group: str,
    cwd: str,
    cpus: int,
) -> None:
    """One trial, inside a Ray worker: train (or resume, or read back) its run and report to Tune.

    Reports after every new periodic evaluation (``objective`` = best so far, ``timesteps``), then
    once at the end with the final evaluation's numbers. The run directory is
    ``sweep_dir/group/<trial id>`` (``seed-<s>`` in a seed study): fresh, resumed from its newest
    checkpoint (a retry after a worker died), or already finished (reported as it is).
    """
    from ray import tune

    from hedgegym.train.training import run_status, train

    set_worker_threads(cpus)
    if os.path.isdir(cwd):  # relative scenario paths in the config mean the driver's folder
        os.chdir(cwd)
    trial_id = tune.get_context().get_trial_id()
    values = decode_params(space, params)
    config = trial_config(base, values, source=f" (trial {trial_id})")
    run_dir = Path(sweep_dir) / group / run_name(group, trial_id, values)
    reporter = _Reporter(run_dir, config)
    if not _finished(run_dir):
        resume = None
        if (run_dir / "config.yaml").is_file() and (run_dir / "checkpoints" / "latest.json").is_file():
            if run_status(run_dir) == "live":
                raise RuntimeError(f"{run_dir} is still trained by another process; retry later")
            resume = run_dir
        elif run_dir.exists():  # a start that died before its first checkpoint: nothing to keep
            shutil.rmtree(run_dir)
        reporter.start(resume is not None)

        def note(line: str) -> None:
            print(line, file=sys.stderr)

        result = train(
            config,
            out=None if resume else run_dir,
            resume=resume,
            callbacks=[reporter.callback()],
            command=f"hedgegym sweep (trial {trial_id} of {sweep_dir})",
            notify=note,
        )
        if result.interrupted:
            raise RuntimeError(f"trial {trial_id}: training was interrupted ({result.status}); retrying resumes it")
    reporter.final()


def run_name(group: str, trial_id: str, values: Mapping[str, Any]) -> str:
    """The trial's run directory name: the Ray trial id, or ``seed-<s>`` in a seed study."""
    return f"seed-{values['training.seed']}" if group == "seeds" else trial_id


def decode_params(space: Mapping[str, Any] | None, params: Mapping[str, Any]) -> dict[str, Any]:
    """Config values of what Ray drew (``space``: the saved space data; None in a seed study)."""
    if space is None:
        return dict(params)
    parameters = validate_space(space).parameters
    return {key: parameters[key].decode(params[key]) for key in parameters}


def _finished(run_dir: Path) -> bool:
    info = _read_json(run_dir / "run_info.json", {})
    return info.get("status") == "finished" and (run_dir / "evaluation" / "metrics.json").is_file()


class _Reporter:
    """Forwards a run's periodic evaluations (``history.json``) and final evaluation to Ray Tune."""

    def __init__(self, run_dir: Path, config: ExperimentConfig):
        self.run_dir = run_dir
        self.config = config
        self.last = 0
        self.best: float | None = None

    def start(self, resumed: bool) -> None:
        if resumed:
            # The evaluations up to the checkpoint were reported before the worker died; go on from there.
            latest = _read_json(self.run_dir / "checkpoints" / "latest.json", {})
            self.last = int(latest.get("timesteps", 0))

    def callback(self):
        from stable_baselines3.common.callbacks import BaseCallback

        reporter = self
        every = self.config.evaluation.every
        total = self.config.training.total_timesteps

        class ReportEvaluations(BaseCallback):
            # Runs after the pipeline's own callback, which has just written any new evaluation.
            def _on_training_start(self) -> None:
                self.next = (self.num_timesteps // every + 1) * every if every else 0

            def _on_step(self) -> bool:
                if self.next and self.num_timesteps >= self.next:
                    self.next = (self.num_timesteps // every + 1) * every
                    reporter.flush(total)
                return True

        return ReportEvaluations()

    def flush(self, total: int) -> None:
        from ray import tune

        for entry in _read_json(self.run_dir / "history.json", {}).get("evaluations", []):
            t = int(entry["timesteps"])
            # The best so far counts every evaluation the run has made (one at timestep 0 too): it is
            # the objective of the best_model.zip the run keeps.
            self.best = entry["objective"] if self.best is None else max(self.best, entry["objective"])
            # Reported: the evaluations after the last report and before the end. The one at the end
            # comes with the final results: ASHA stops a trial that reaches its budget, and this one
            # still has its final evaluation to run. Timestep 0 is no rung.
            if t <= self.last or t >= total:
                continue
            self.last = t
            tune.report({METRIC: self.best, "last_objective": entry["objective"], TIME_ATTR: t})

    def final(self) -> None:
        from ray import tune

        summary = run_summary(self.run_dir, self.config)
        best = summary["held_out_objective"]
        tune.report(
            {
                METRIC: best if best is not None else summary["final_objective"],
                TIME_ATTR: summary["timesteps"],
                "final_objective": summary["final_objective"],
                "vs_best_baseline": summary["vs_best_baseline"],
                "finished": True,
            }
        )


def run_summary(run_dir: Path, config: ExperimentConfig | None = None) -> dict[str, Any]:
    """What the leaderboard shows of one run directory: timesteps, held-out and final objectives,
    the paired difference against the best baseline (``None`` where the run has not got that far)."""
    info = _read_json(run_dir / "run_info.json", {})
    history = _read_json(run_dir / "history.json", {})
    metrics = _read_json(run_dir / "evaluation" / "metrics.json", None)
    evaluations = history.get("evaluations", [])
    # run_info's count is refreshed at checkpoints and heartbeats; a trial stopped between them got further.
    reached = max([int(info.get("timesteps", 0)), *(int(e["timesteps"]) for e in evaluations)])
    out = {
        "timesteps": reached,
        "held_out_objective": max((e["objective"] for e in evaluations), default=None),
        "final_objective": None,
        "vs_best_baseline": None,
        "vs_low": None,
        "vs_high": None,
        "reference": None,
        "agent": None,
    }
    if metrics is not None:
        agents = [n for n, p in metrics["policies"].items() if not p["source"].startswith("baseline")]
        agent = agents[0] if agents else None
        out["agent"], out["reference"] = agent, metrics["reference"]
        if agent is not None:
            out["final_objective"] = metrics["objective"]["values"][agent]
            paired = metrics["paired_differences"].get(agent, {}).get("mean_variance")
            if paired is not None:
                out["vs_best_baseline"] = paired["value"]
                out["vs_low"], out["vs_high"] = paired["ci"]
    return out


def _read_json(path: Path, default: Any) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return default


# ------------------------------------------------------------------------------------ Ray classes
def _make_valid_search():
    """``ValidSearch``: Optuna's TPE through Ray, drawing again any combination that is not a valid experiment.

    Each draw is an Optuna ask under an id of its own (``<trial id>~rejected<k>``, k counting every
    draw of the sweep); a draw that is not a valid experiment is told to Optuna as failed (TPE then
    avoids it), and the trial's results go to the ask that was valid, through ``hedgegym_asks``
    (trial id -> its ask's id). Only OptunaSearch's public methods (``suggest``,
    ``on_trial_result``, ``on_trial_complete``) see the asks' ids: no private state of Ray's is
    read or written, and ``save``/``restore`` (which pickle the searcher's attributes) keep the map.
    """
    from ray.tune.search.optuna import OptunaSearch

    class ValidSearch(OptunaSearch):
        def __init__(self, *args, base: dict, space: dict, **kwargs):
            super().__init__(*args, **kwargs)
            self.hedgegym_base = base
            self.hedgegym_space = space
            self.hedgegym_rejected = 0
            self.hedgegym_asks: dict[str, str] = {}

        def suggest(self, trial_id: str):
            problem = None
            for _ in range(_RESAMPLES):
                probe = f"{trial_id}~rejected{self.hedgegym_rejected}"
                params = super().suggest(probe)
                if not isinstance(params, dict):
                    return params
                problem = experiment_problem(self.hedgegym_base, decode_params(self.hedgegym_space, params))
                if problem is None:
                    # The trial's ask from now on (a searcher pickled before the map existed has none yet).
                    self.__dict__.setdefault("hedgegym_asks", {})[trial_id] = probe
                    return params
                self.hedgegym_rejected += 1
                super().on_trial_complete(probe, None, error=True)  # told to Optuna as failed: TPE avoids it
            raise ConfigError(f"the search space gave no valid experiment in {_RESAMPLES} draws; the last: {problem}")

        def ask_id(self, trial_id: str) -> str:
            """The id of the Optuna ask behind ``trial_id`` (itself for a trial of an older sweep)."""
            return self.__dict__.get("hedgegym_asks", {}).get(trial_id, trial_id)

        def on_trial_result(self, trial_id: str, result: dict) -> None:
            super().on_trial_result(self.ask_id(trial_id), result)

        def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
            super().on_trial_complete(self.ask_id(trial_id), result, error)

    ValidSearch.__module__ = __name__
    ValidSearch.__qualname__ = "ValidSearch"
    return ValidSearch


def _make_progress():
    """``SweepProgress``: the driver's Tune callback; one line per trial event and each trial's record file."""
    from ray.tune import Callback

    class SweepProgress(Callback):
        def __init__(self, sweep_dir: str, group: str, space: dict | None):
            self.sweep_dir, self.group, self.space = sweep_dir, group, space

        def print(self, line: str) -> None:
            # The printer is this process's (the CLI's console), never pickled with the experiment state.
            _PRINTERS.get(self.sweep_dir, print)(line)

        def _record(self, trial, **fields) -> dict:
            path = Path(self.sweep_dir) / self.group / f"{self._name(trial)}.json"
            record = _read_json(path, {}) or {
                "trial": trial.trial_id,
                "params": decode_params(self.space, _flat(trial.config)),
                "started": _now(),
                "attempts": 0,
            }
            record.update(fields)
            write_json_atomic(path, record)
            return record

        def _name(self, trial) -> str:
            return run_name(self.group, trial.trial_id, decode_params(self.space, _flat(trial.config)))

        def on_trial_start(self, iteration, trials, trial, **info):
            record = self._record(trial, status="running")
            record = self._record(trial, attempts=record["attempts"] + 1)
            shown = ", ".join(f"{k.rsplit('.', 1)[-1]}={_show(v)}" for k, v in record["params"].items())
            self.print(f"trial {self._name(trial)} started ({shown})")

        def on_trial_recover(self, iteration, trials, trial, **info):
            self._record(trial, status="retrying")
            self.print(f"trial {self._name(trial)}: its worker failed; retrying from the run's newest checkpoint")

        def on_trial_complete(self, iteration, trials, trial, **info):
            result = trial.last_result or {}
            finished = bool(result.get("finished"))
            self._record(trial, status="finished" if finished else "stopped", ended=_now())
            if finished:
                vs = result.get("vs_best_baseline")
                self.print(
                    f"trial {self._name(trial)} finished: held-out objective {_usd(result.get(METRIC))}"
                    + (f", {_usd(vs, sign=True)} vs the best baseline" if vs is not None else "")
                )
            else:
                self.print(
                    f"trial {self._name(trial)} stopped early by ASHA at {result.get(TIME_ATTR, 0):,} timesteps "
                    f"(held-out objective {_usd(result.get(METRIC))})"
                )

        def on_trial_error(self, iteration, trials, trial, **info):
            message = _error_message(trial)
            self._record(trial, status="error", error=message, ended=_now())
            self.print(f"trial {self._name(trial)} failed: {message}")

    SweepProgress.__module__ = __name__
    SweepProgress.__qualname__ = "SweepProgress"
    return SweepProgress


# Where each sweep directory's driver prints its trial lines (set by the driver, per process).
_PRINTERS: dict[str, Callable[[str], None]] = {}
_RAY_CLASSES: dict[str, Callable[[], type]] = {"ValidSearch": _make_valid_search, "SweepProgress": _make_progress}


def __getattr__(name: str):
    # The Ray classes are made on first use (Ray is an optional extra); pickle finds them by name here.
    if name in _RAY_CLASSES:
        cls = _RAY_CLASSES[name]()
        globals()[name] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def trial_dirname(trial) -> str:
    """Ray Tune's folder for a trial: its id (the parameters would make unreadable names)."""
    return trial.trial_id


def _flat(config: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if not k.startswith("__")}


def _error_message(trial) -> str:
    text = ""
    for attr in ("error_file", "error_msg"):
        value = getattr(trial, attr, None)
        if isinstance(value, str) and value:
            text = Path(value).read_text() if attr == "error_file" and os.path.isfile(value) else value
            break
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else "the trial failed (see its Ray log)"


def _show(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else json.dumps(value) if not isinstance(value, str) else value


def _usd(value: float | None, sign: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+,.0f} USD" if sign else f"{value:,.0f} USD"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# ------------------------------------------------------------------------------------ the driver
class SweepInterrupted(Exception):
    """The sweep stopped before every trial ended (Ctrl-C); the message says how to resume it."""


@dataclass
class SweepResult:
    """What a sweep (and its seed study) produced; rows as in ``leaderboard.csv`` and ``seeds.csv``."""

    sweep_dir: Path
    leaderboard: list[dict] = field(default_factory=list)
    parameters: list[str] = field(default_factory=list)
    best_config: Path | None = None
    seeds: list[dict] = field(default_factory=list)
    seed_summary: dict | None = None
    seconds: float = 0.0


def run_sweep(
    config: str | os.PathLike | None = None,
    space: str | os.PathLike | None = None,
    *,
    sets: Mapping[str, Any] | None = None,
    trials: int = 16,
    seeds: int | None = None,
    address: str | None = None,
    workers: int | None = None,
    cpus_per_trial: int = 1,
    max_failures: int = 3,
    out: str | os.PathLike | None = None,
    resume: str | os.PathLike | None = None,
    command: str | None = None,
    notify: Callable[[str], None] | None = None,
) -> SweepResult:
    """Run a sweep of ``config`` over ``space`` (``trials`` trials), then, with ``seeds``, a seed study
    of its best config; or, without ``space``, a seed study of ``config``. ``resume``: continue an
    interrupted sweep directory (the other arguments but ``address``/``workers`` come from it).

    Raises :class:`ConfigError` for bad input (before Ray starts) and :class:`SweepInterrupted`.
    """
    started = time.monotonic()
    notify = notify or print
    require_ray("sweep")
    if workers is not None:
        check_positive("--workers", workers, 1024)
    if resume is not None:
        if any(v is not None for v in (config, space, seeds, out)) or sets:
            raise ConfigError(
                "--resume continues a sweep with its saved settings: give only --resume DIR (and --address, --workers)"
            )
        sweep_dir = Path(resume)
        options = _read_json(sweep_dir / SWEEP_FILE, None)
        if not isinstance(options, dict):
            raise ConfigError(f"--resume {str(sweep_dir)!r}: not a sweep directory (no readable {SWEEP_FILE})")
        if options.get("status") == "finished":
            raise ConfigError(
                f"--resume {str(sweep_dir)!r}: the sweep is finished; its leaderboard is {sweep_dir / 'leaderboard.md'}"
            )
        lock = _lock(sweep_dir)
    else:
        options = _new_options(config, space, sets or {}, trials, seeds, cpus_per_trial, max_failures, command)
        name = options["base"].get("name") or "sweep"
        prefix = f"sweep-{name}" if space is not None else f"seeds-{name}"
        parent = validate_experiment(options["base"]).output_dir
        sweep_dir = claim_dir(out) if out is not None else new_run_dir(parent, prefix)
        lock = _lock(sweep_dir)
        write_text_atomic(sweep_dir / "base.yaml", yaml.safe_dump(options["base"], sort_keys=False))
        if options["space"] is not None:
            write_text_atomic(sweep_dir / "space.yaml", yaml.safe_dump(options["space"], sort_keys=False))
        write_json_atomic(sweep_dir / SWEEP_FILE, options)
    sweep_dir = sweep_dir.absolute()
    cpus = int(options["cpus_per_trial"])
    try:
        local_workers = workers or max(1, (os.cpu_count() or 1) // cpus)
        with ray_session(address, local_workers, cpus):
            import ray

            concurrency = workers or max(1, int(ray.cluster_resources().get("CPU", cpus)) // cpus)
            _update(sweep_dir, status="running", host=socket.gethostname(), pid=os.getpid(), resumed=resume is not None)
            result = SweepResult(sweep_dir)
            if options["space"] is not None:
                if options.get("sweep_done"):
                    result.leaderboard, result.parameters = leaderboard(sweep_dir)
                else:
                    _run_phase(sweep_dir, options, "trials", concurrency, notify)
                    result.leaderboard, result.parameters = write_leaderboard(sweep_dir, options)
                    options = _update(sweep_dir, sweep_done=True)
                result.best_config = sweep_dir / "best_config.yaml"
                if not result.best_config.is_file():
                    result.best_config = None
            if options["seeds"]:
                if options["space"] is not None and result.best_config is None:
                    notify("no trial finished, so there is no best config for the seed study")
                else:
                    _run_phase(sweep_dir, options, "seeds", concurrency, notify)
                    result.seeds, result.seed_summary = write_seed_study(sweep_dir, options)
            _update(sweep_dir, status="finished", finished=_now())
    except SweepInterrupted:
        _update(sweep_dir, status="interrupted")
        raise
    except ConfigError:
        # Refused before any trial started (no cluster at --address, a space with no valid draw): a
        # fresh sweep directory holds nothing worth keeping, and the same --out works again at once.
        if resume is None and not any((sweep_dir / "trials").glob("*.json")):
            shutil.rmtree(sweep_dir, ignore_errors=True)
        raise
    finally:
        os.close(lock)
    result.seconds = time.monotonic() - started
    return result


def _new_options(config, space, sets, trials, seeds, cpus, max_failures, command) -> dict[str, Any]:
    if config is None:
        raise ConfigError("give an experiment config (e.g. configs/ppo_spot.yaml), or --resume SWEEP_DIR")
    if space is None and seeds is None:
        raise ConfigError("give --space SPACE.yaml (a sweep), --seeds K (a seed study), or both")
    check_positive("--trials", trials, MAX_TRIALS)
    check_positive("--cpus-per-trial", cpus, 256)
    if seeds is not None:
        check_positive("--seeds", seeds, MAX_SEEDS)
        if seeds < 2:
            raise ConfigError(f"--seeds {seeds}: give at least 2 seeds (an interval across seeds needs two)")
    if isinstance(max_failures, bool) or not isinstance(max_failures, int) or not 0 <= max_failures <= 100:
        raise ConfigError(f"--max-failures {max_failures}: must be an integer in [0, 100]")
    base = base_data(config, sets)
    experiment = validate_experiment(base)
    if experiment.training.torch_threads > cpus:
        raise ConfigError(
            f"training.torch_threads={experiment.training.torch_threads} exceeds --cpus-per-trial {cpus}: "
            "the trials would oversubscribe their cores; lower it or raise --cpus-per-trial"
        )
    space_config = None
    if space is not None:
        space_config = load_space(space)
        check_space(space_config, base, sets, source=f" {space}")
        every, total = experiment.evaluation.every, experiment.training.total_timesteps
        if space_config.asha is not None:
            grace = space_config.asha.grace_evaluations * every
            if every == 0 or grace >= total:
                raise ConfigError(
                    f"search space {space}: asha stops trials on the periodic held-out evaluation, so it needs "
                    f"evaluation.every > 0 and grace_evaluations * evaluation.every < training.total_timesteps "
                    f"(got every={every}, grace_evaluations={space_config.asha.grace_evaluations}, "
                    f"total_timesteps={total}); set asha: null in the space for no early stopping"
                )
    return {
        "config": str(config),
        "sets": {k: v for k, v in sets.items()},
        "base": base,
        "space": None if space_config is None else space_data(space_config),
        "space_file": None if space is None else str(space),
        "trials": trials,
        "seeds": seeds,
        "cpus_per_trial": cpus,
        "max_failures": max_failures,
        "command": command,
        "cwd": os.getcwd(),
        "git_commit": git_commit(),
        "created": _now(),
        "status": "created",
    }


def _update(sweep_dir: Path, **fields) -> dict:
    options = _read_json(sweep_dir / SWEEP_FILE, {})
    options.update(fields)
    write_json_atomic(sweep_dir / SWEEP_FILE, options)
    return options


def _lock(sweep_dir: Path) -> int:
    fd = os.open(sweep_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        info = _read_json(sweep_dir / SWEEP_FILE, {})
        raise ConfigError(
            f"--resume {str(sweep_dir)!r}: the sweep is live (pid {info.get('pid')} on {info.get('host')}); "
            "wait for it or stop it first"
        ) from None
    return fd


def _phase_base(sweep_dir: Path, options: Mapping[str, Any]) -> dict:
    """The config a seed study trains: the sweep's best (``best_config.yaml``) or the base."""
    if options["space"] is not None:
        return read_yaml(sweep_dir / "best_config.yaml")
    return options["base"]


def _seed_values(base: Mapping[str, Any], options: Mapping[str, Any]) -> list[int]:
    """Training seeds of the study: the config's seed and the next K - 1; after a sweep, the K seeds
    after the winner's (the seed it was selected on would bias the study)."""
    first = validate_experiment(base).training.seed + (1 if options["space"] is not None else 0)
    return list(range(first, first + int(options["seeds"])))


def _run_phase(sweep_dir: Path, options: Mapping[str, Any], group: str, concurrency: int, notify) -> None:
    """Run (or restore and finish) one Ray Tune experiment: the sweep's trials or the seed study."""
    import optuna
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    from hedgegym.train import sweep as this

    (sweep_dir / group).mkdir(exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # A retried trial counts its reports from 1 again; Optuna keeps the first report of each step.
    warnings.filterwarnings("ignore", message="The reported value is ignored because this `step=")
    # Tune logs each trial's failure with its traceback; the progress callback says it in one line
    # (the traceback stays in the trial's error.txt under tune/).
    logging.getLogger("ray.tune").setLevel(logging.CRITICAL)
    # Experiment state is saved at least every second, so a killed sweep loses at most that much.
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "1")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    base = options["base"] if group == "trials" else _phase_base(sweep_dir, options)
    space = options["space"] if group == "trials" else None
    cpus = int(options["cpus_per_trial"])
    trainable = tune.with_resources(
        tune.with_parameters(
            run_trial, base=base, space=space, sweep_dir=str(sweep_dir), group=group, cwd=options["cwd"], cpus=cpus
        ),
        {"cpu": cpus},
    )
    path = sweep_dir / ("tune" if group == "trials" else "tune-seeds")
    progress = this.SweepProgress(str(sweep_dir), group, space)
    _PRINTERS[str(sweep_dir)] = notify
    if path.is_dir() and tune.Tuner.can_restore(str(path)):
        tuner = tune.Tuner.restore(str(path), trainable, resume_unfinished=True, resume_errored=True)
    else:
        if group == "trials":
            parameters = validate_space(space).parameters
            param_space = {key: dist.ray_domain() for key, dist in parameters.items()}
            from optuna.samplers import TPESampler

            search = space["search"]
            searcher = this.ValidSearch(
                sampler=TPESampler(seed=search["seed"], n_startup_trials=search["startup_trials"]),
                base=base,
                space=space,
            )
            experiment = validate_experiment(base)
            asha = space.get("asha")
            scheduler = (
                ASHAScheduler(
                    time_attr=TIME_ATTR,
                    max_t=experiment.training.total_timesteps,
                    grace_period=asha["grace_evaluations"] * experiment.evaluation.every,
                    reduction_factor=asha["reduction_factor"],
                )
                if asha
                else FIFOScheduler()
            )
            tune_config = tune.TuneConfig(
                metric=METRIC,
                mode="max",
                search_alg=searcher,
                scheduler=scheduler,
                num_samples=int(options["trials"]),
                max_concurrent_trials=concurrency,
                reuse_actors=False,
                trial_dirname_creator=trial_dirname,
            )
        else:
            param_space = {"training.seed": tune.grid_search(_seed_values(base, options))}
            tune_config = tune.TuneConfig(
                metric=METRIC,
                mode="max",
                num_samples=1,
                max_concurrent_trials=concurrency,
                reuse_actors=False,
                trial_dirname_creator=trial_dirname,
            )
        tuner = tune.Tuner(
            trainable,
            param_space=param_space,
            tune_config=tune_config,
            run_config=tune.RunConfig(
                name=path.name,
                storage_path=str(sweep_dir),
                failure_config=tune.FailureConfig(max_failures=int(options["max_failures"])),
                callbacks=[progress],
                verbose=0,
            ),
        )
    tuner.fit()
    records = [_read_json(p, {}) for p in sorted((sweep_dir / group).glob("*.json"))]
    expected = int(options["trials"]) if group == "trials" else int(options["seeds"])
    ended = [r for r in records if r.get("status") in ("finished", "stopped", "error")]
    if len(ended) < expected:
        raise SweepInterrupted(
            f"interrupted: {sweep_dir} keeps {len(ended)} of {expected} {'trials' if group == 'trials' else 'seeds'} "
            f"ended; continue with `hedgegym sweep --resume {sweep_dir}`"
        )


# ------------------------------------------------------------------------------------ outputs
LEADERBOARD_COLUMNS = (
    "rank",
    "trial",
    "status",
    "timesteps",
    "held_out_objective",
    "final_objective",
    "vs_best_baseline",
    "vs_low",
    "vs_high",
    "reference",
    "run_dir",
)


def leaderboard(sweep_dir: Path, group: str = "trials") -> tuple[list[dict], list[str]]:
    """The trials' rows, best first, and the searched parameters' names.

    Finished trials are ranked by their paired difference against the best baseline on the final
    held-out episodes (the same episodes for every trial and baseline); trials ASHA stopped follow,
    by their best periodic held-out objective; then those that failed or did not end.
    """
    rows = []
    parameters: list[str] = []
    for path in sorted((sweep_dir / group).glob("*.json")):
        record = _read_json(path, None)
        if not isinstance(record, dict) or "params" not in record:
            continue
        run_dir = sweep_dir / group / path.stem
        summary = run_summary(run_dir)
        status = record.get("status", "pending")
        if status == "finished" and summary["final_objective"] is None:
            status = "error"
        row = {"trial": path.stem, "status": status, **summary, "run_dir": str(run_dir.relative_to(sweep_dir))}
        for key, value in record["params"].items():
            if key not in parameters:
                parameters.append(key)
            row[key] = value
        if record.get("error"):
            row["error"] = record["error"]
        rows.append(row)
    order = {"finished": 0, "stopped": 1}

    def key(row):
        score = row["vs_best_baseline"] if row["status"] == "finished" else row["held_out_objective"]
        return (order.get(row["status"], 2), -(score if score is not None else -math.inf))

    rows.sort(key=key)
    for rank, row in enumerate(rows, start=1):
        row["rank"] = rank
    return rows, parameters


def write_leaderboard(sweep_dir: Path, options: Mapping[str, Any]) -> tuple[list[dict], list[str]]:
    """Write ``leaderboard.csv``, ``leaderboard.md`` and, if a trial finished, ``best_config.yaml``."""
    rows, parameters = leaderboard(sweep_dir)
    columns = [*LEADERBOARD_COLUMNS[:3], *parameters, *LEADERBOARD_COLUMNS[3:]]
    write_text_atomic(sweep_dir / "leaderboard.csv", csv_text(rows, columns))
    best = rows[0] if rows and rows[0]["status"] == "finished" else None
    if best is not None:
        write_text_atomic(sweep_dir / "best_config.yaml", best_config_text(sweep_dir, options, best, parameters))
    write_text_atomic(sweep_dir / "leaderboard.md", leaderboard_markdown(sweep_dir, options, rows, parameters))
    return rows, parameters


def best_config_text(sweep_dir: Path, options: Mapping[str, Any], best: dict, parameters: list[str]) -> str:
    """``best_config.yaml``: the sweep's config with the best trial's values, and a header saying so."""
    params = {k: best[k] for k in parameters if k in best}
    data = apply_overrides(options["base"], params)
    validate_experiment(data)  # it is a trial's config: valid, or the sweep has a bug
    lines = [
        f"# The best trial ({best['trial']}) of the sweep {sweep_dir}:",
        f"# {_usd(best['vs_best_baseline'], sign=True)} [{_usd(best['vs_low'], sign=True)}, "
        f"{_usd(best['vs_high'], sign=True)}] mean-variance objective against {best['reference']} on the final "
        f"held-out episodes (final objective {_usd(best['final_objective'])}).",
        f"# It is {options['config']}",
        *(f"#   --set {k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in options["sets"].items()),
        "# with the trial's values:",
        *(f"#   {k}: {json.dumps(v)}" for k, v in params.items()),
        "# Train it: hedgegym train best_config.yaml",
        "",
    ]
    return "\n".join(lines) + yaml.safe_dump(data, sort_keys=False)


def leaderboard_markdown(sweep_dir: Path, options: Mapping[str, Any], rows: list[dict], parameters: list[str]) -> str:
    """The leaderboard as a markdown report."""
    short = [p.rsplit(".", 1)[-1] for p in parameters]
    out = [
        f"# Sweep of {options['config']}",
        "",
        f"Space: `{options.get('space_file')}`; {options['trials']} trials; `{options.get('command') or ''}`.",
        "Finished trials are ranked by the paired difference of the mean-variance objective against the best "
        "baseline on the final held-out episodes (95 % paired-bootstrap interval); trials stopped early by ASHA "
        "follow, by their best periodic held-out objective.",
        "",
        "| rank | trial | status | " + " | ".join(short) + " | timesteps | held-out objective | final objective "
        "| vs best baseline [95 % CI] | run |",
        "|---:|---|---|" + "---:|" * len(short) + "---:|---:|---:|---:|---|",
    ]
    for row in rows:
        vs = (
            f"{_usd(row['vs_best_baseline'], sign=True)} [{row['vs_low']:+,.0f}, {row['vs_high']:+,.0f}]"
            if row["vs_best_baseline"] is not None
            else "-"
        )
        cells = [
            str(row["rank"]),
            row["trial"],
            row["status"],
            *(_show(row.get(p)) for p in parameters),
            f"{row['timesteps']:,}",
            _usd(row["held_out_objective"]),
            _usd(row["final_objective"]),
            vs,
            f"`{row['run_dir']}`",
        ]
        out.append("| " + " | ".join(cells) + " |")
    if rows and rows[0]["status"] == "finished":
        out += ["", f"Best config: `{sweep_dir / 'best_config.yaml'}` (`hedgegym train` runs it as is)."]
    errors = [r for r in rows if r.get("error")]
    for row in errors:
        out.append(f"- trial {row['trial']} failed: {row['error']}")
    return "\n".join(out) + "\n"


def write_seed_study(sweep_dir: Path, options: Mapping[str, Any]) -> tuple[list[dict], dict | None]:
    """Write ``seeds.{json,csv,md}``: per seed the paired difference against the best baseline; across
    seeds their mean with a Student-t interval and how many seeds win."""
    rows = []
    records = {p: _read_json(p, None) for p in (sweep_dir / "seeds").glob("*.json")}
    records = {p: r for p, r in records.items() if isinstance(r, dict) and "params" in r}
    for path, record in sorted(records.items(), key=lambda item: item[1]["params"]["training.seed"]):
        summary = run_summary(sweep_dir / "seeds" / path.stem)
        rows.append(
            {
                "seed": record["params"]["training.seed"],
                "status": record.get("status"),
                **summary,
                "wins": summary["vs_best_baseline"] is not None and summary["vs_best_baseline"] > 0,
                "significant": summary["vs_low"] is not None and summary["vs_low"] > 0,
                "run_dir": f"seeds/{path.stem}",
            }
        )
    done = [r for r in rows if r["vs_best_baseline"] is not None]
    summary = None
    if len(done) >= 2:
        summary = across_seeds([r["vs_best_baseline"] for r in done])
        summary.update(
            wins=sum(r["wins"] for r in done),
            significant_wins=sum(r["significant"] for r in done),
            reference=done[0]["reference"],
            seeds=[r["seed"] for r in done],
        )
    write_json_atomic(sweep_dir / "seeds.json", {"seeds": rows, "across_seeds": summary})
    columns = ["seed", "status", "timesteps", "final_objective", "vs_best_baseline", "vs_low", "vs_high", "wins"]
    columns.append("run_dir")
    write_text_atomic(sweep_dir / "seeds.csv", csv_text(rows, columns))
    config = "best_config.yaml" if options["space"] is not None else options["config"]
    md = [
        f"# Seed study of {config}",
        "",
        "Each seed is one training run; its paired difference of the mean-variance objective against the best "
        "baseline is measured on the same final held-out episodes (95 % paired-bootstrap interval).",
        "",
        "| seed | final objective | vs best baseline [95 % CI] | wins |",
        "|---:|---:|---:|---|",
    ]
    for r in rows:
        vs = "-"
        if r["vs_best_baseline"] is not None:
            vs = f"{r['vs_best_baseline']:+,.0f} [{r['vs_low']:+,.0f}, {r['vs_high']:+,.0f}]"
        md.append(f"| {r['seed']} | {_usd(r['final_objective'])} | {vs} | {'yes' if r['wins'] else 'no'} |")
    if summary is not None:
        md += [
            "",
            f"**Across {summary['n']} seeds:** {summary['mean']:+,.0f} USD [{summary['low']:+,.0f}, "
            f"{summary['high']:+,.0f}] (mean of the per-seed differences, 95 % Student-t interval across seeds) "
            f"against {summary['reference']}; {summary['wins']} of {summary['n']} seeds win, "
            f"{summary['significant_wins']} with an interval above zero.",
        ]
    write_text_atomic(sweep_dir / "seeds.md", "\n".join(md) + "\n")
    return rows, summary


def csv_text(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """A CSV of ``rows`` (dicts) in ``columns``: a missing value or None empty, floats by ``repr``
    (every digit), lists and dicts as JSON.

    >>> print(csv_text([{"a": 0.1, "b": [1, 2]}, {"a": None}], ["a", "b"]), end="")
    a,b
    0.1,"[1, 2]"
    ,
    """
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_csv(row.get(c)) for c in columns])
    return buf.getvalue()


def _csv(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)
