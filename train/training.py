"""Training an SB3 agent from an :class:`~hedgegym.train.experiment.ExperimentConfig`: ``train(config)``.

One call runs the whole experiment, top to bottom:

1. a fresh run directory (``output_dir/<run name>-<UTC time>``, or ``out``; never an existing run's)
   with ``config.yaml`` (the resolved config, scenario inlined) and ``run_info.json`` (git commit,
   seed, start time, library versions, and the live process: pid, host, heartbeat), locked for the
   run's lifetime (``.lock``, ``flock``);
2. torch seeded, one thread, deterministic kernels (:func:`hedgegym.agents.sb3.configure_torch`);
3. the batched env through the SB3 adapter, in ``VecNormalize`` when the config normalises;
4. ``model.learn`` with callbacks: progress, TensorBoard means of every ``info["episode_metrics"]``
   key (``episode/pnl``, ``episode/slippage_bps``, ...), a checkpoint every
   ``training.checkpoint_every`` timesteps, a held-out evaluation every ``evaluation.every``
   timesteps keeping ``best_model.zip``, and Ctrl-C, which stops at the next env step, saves a
   checkpoint and returns;
5. ``model.zip`` (+ normaliser statistics), ``training_curve.png``, and the final evaluation of the
   agent against the config's baselines on the held-out seeds, written to ``evaluation/``.

Every model zip (checkpoints, ``best_model.zip``, ``model.zip``) carries the agent interface it was
trained for (:mod:`hedgegym.train.policies`), so ``hedgegym evaluate --policy`` reads its actions
the way training did on any scenario.

**Checkpoints** (``checkpoints/step_<T>.*``) are taken between rollouts, after the policy update:
the model with its optimiser, the normaliser statistics, the replay buffer (SAC/TD3, on by
default), and ``step_<T>_state.pkl``: the env itself (market state, episode streams and counters),
the normaliser's running returns, and the random states of torch, NumPy, Python and the action
space. ``train(resume=RUN_DIR)`` restores all of it, so a run trained to T and resumed to 2T has
bit for bit the parameters of a run trained to 2T straight (PPO, SAC, TD3; a Ctrl-C checkpoint,
taken mid-rollout, resumes correctly but drops the partial rollout). A damaged newest checkpoint
(truncated zip, bad ``latest.json``, missing file, broken normaliser) is skipped for the previous
good one, with one line saying so. A run whose training finished but whose final evaluation did
not is completed by ``--resume`` (the evaluation and the report).

**Interruption.** Ctrl-C before the first checkpoint removes the run directory (nothing worth
keeping was written) and raises :class:`TrainingInterrupted`; later, the run keeps its checkpoint
and can be resumed. :func:`run_status` tells a live run (its lock is held) from a dead one
(``run_info.json`` says running, nobody holds the lock): resuming a live run is refused.

Held-out seeds: the final evaluation's episode j uses seed ``evaluation.seed + j``; the periodic
evaluations that pick the best model use the next block, ``evaluation.seed + final_episodes + j``,
so choosing the best model does not bias the final report. Training env i uses ``training.seed + i``.
Both pick by :func:`hedgegym.train.evaluate.objective`; with ``evaluation.markets``, the periodic
evaluations run on held-out markets of the family and pick by its scale-free score instead
(:mod:`hedgegym.train.selection`).
"""

from __future__ import annotations

import fcntl
import io
import json
import os
import pickle
import platform
import random
import shutil
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback, CallbackList

from hedgegym.agents import sb3
from hedgegym.envs.config import ConfigError, flatten, save_config
from hedgegym.train.experiment import ExperimentConfig, experiment_yaml, load_experiment, validate_experiment
from hedgegym.train.io import (
    claim_dir,
    git_commit,
    interrupt_requested,
    new_run_dir,
    raise_if_interrupted,
    write_bytes_atomic,
    write_json_atomic,
    write_text_atomic,
)
from hedgegym.train.plots import plot_training_curve

MODEL_FILE = "model.zip"
BEST_MODEL_FILE = "best_model.zip"
# The episode P&Ls of best_model.zip's periodic evaluation, the incumbent a paired selection compares with.
BEST_PNL_FILE = "best_pnl.npy"
LATEST_CHECKPOINT = "latest.json"
LOCK_FILE = ".lock"
REPLAY_BUFFER_SUFFIX = "_replay_buffer.pkl"
# run_info.json's heartbeat is refreshed this often while training (seconds).
HEARTBEAT_S = 10.0
# Called with (timesteps done, {"reward": last mean episode reward, "objective": last held-out objective}).
ProgressFn = Callable[[int, dict[str, float]], None]


class TrainingInterrupted(Exception):
    """Ctrl-C stopped a run where it could not save a checkpoint; the message says what was kept."""


@dataclass
class RunResult:
    """What a training run produced. ``interrupted``: training or the final evaluation was stopped."""

    run_dir: Path
    config: ExperimentConfig
    timesteps: int
    interrupted: bool
    model_path: Path
    best_model_path: Path | None
    best_objective: float | None
    resumed_from: int | None
    wall_time_s: float
    evaluation: Any = None
    history: dict[str, list] = field(default_factory=dict, repr=False)
    status: str = "finished"


def train(
    config: ExperimentConfig | dict | str | os.PathLike | None = None,
    out: str | os.PathLike | None = None,
    resume: str | os.PathLike | None = None,
    progress: ProgressFn | None = None,
    evaluation_progress: Callable[[int, int], None] | None = None,
    callbacks: list | None = None,
    command: str | None = None,
    notify: Callable[[str], None] | None = None,
) -> RunResult:
    """Train the agent of ``config`` and evaluate it; return the :class:`RunResult`.

    Args:
        config: an :class:`ExperimentConfig`, a mapping, or a YAML path. With ``resume`` it may be
            omitted (the run's saved ``config.yaml`` is used); when given it may differ from the saved
            config only in ``training.total_timesteps``.
        out: run directory to create (must not exist or be empty); default a new
            ``output_dir/<run name>-<UTC time>``.
        resume: run directory to continue from its newest good checkpoint (or, if its training is
            complete, to finish its final evaluation).
        progress: called as training advances (see ``ProgressFn``).
        evaluation_progress: called as ``(env steps done, total)`` during the final evaluation.
        callbacks: extra SB3 callbacks, run after the pipeline's own.
        command: the command line that started the run, for the records.
        notify: receives one-line notes (a skipped damaged checkpoint, a dead run resumed);
            default: printed to stderr.

    Raises:
        ConfigError: a bad config, a run that cannot be resumed (live, not a run, nothing to do).
        TrainingInterrupted: Ctrl-C before anything resumable was saved.
    """
    started = time.monotonic()
    notify = notify or (lambda line: print(line, file=sys.stderr))
    if resume is not None:
        if out is not None:
            raise ConfigError("--out and --resume exclude each other: a resumed run continues in its own directory")
        run_dir = Path(resume)
        lock = _lock_run(run_dir, resume=True)
        try:
            config = _resume_config(run_dir, config)
        except BaseException:
            os.close(lock)
            raise
    else:
        config = _as_config(config)
        run_dir = claim_dir(out) if out is not None else new_run_dir(config.output_dir, config.run_name)
        lock = _lock_run(run_dir, resume=False)
    try:
        if resume is None:
            write_text_atomic(run_dir / "config.yaml", experiment_yaml(config))
            # The scenario alone, for `hedgegym evaluate --config RUN/scenario.yaml --policy RUN/best_model.zip`.
            save_config(config.scenario.resolved, run_dir / "scenario.yaml")
            write_json_atomic(run_dir / "run_info.json", _run_info(config, command))
        with _torch_settings(config):
            # Loaded inside the torch settings: they seed torch, and the checkpoint's random states come after.
            checkpoint = None if resume is None else _resume_checkpoint(run_dir, config, notify)
            return _train(config, run_dir, checkpoint, progress, evaluation_progress, callbacks or [], started, notify)
    except KeyboardInterrupt:
        raise _interrupted(run_dir, fresh=resume is None) from None
    except Exception:
        if interrupt_requested():  # numba's compile broken by a swallowed Ctrl-C: the interruption, not an error
            raise _interrupted(run_dir, fresh=resume is None) from None
        raise
    finally:
        os.close(lock)


def build_env_and_model(config: ExperimentConfig, tensorboard_log: str | None = None):
    """The training env (normalised, through the control, over the family of markets) and the fresh
    SB3 model of ``config``, as a new run starts them."""
    env = sb3.make_vec_env(
        config.scenario.resolved,
        config.env.n_envs,
        config.training.seed,
        config.env.normalize.model_dump(),
        gamma=config.gamma,
        parallel=config.env.parallel,
        control=_control(config),
        family=config.scenario.randomize,
        paired=config.training.paired_paths,
        observation=config.env.observation,
    )
    model = sb3.build_model(
        config.algorithm.name,
        env,
        config.algorithm.hyperparameters,
        config.algorithm.policy_kwargs.model_dump(),
        seed=config.training.seed,
        action_noise_std=config.algorithm.action_noise_std,
        tensorboard_log=tensorboard_log,
        start_at_zero=config.algorithm.control is not None,
    )
    return env, model


def _paired(config: ExperimentConfig) -> list:
    """The advantage callbacks: per-market when ``training.per_market_advantages``, paired when
    ``training.paired_paths`` (first: the recorder's rollout statistics and checkpoints then see the
    advantages PPO trains on); with both, the pairing first. With ``training.antithetic_exploration``,
    the callback that makes each pair's exploration noise antithetic."""
    callbacks = []
    if config.training.paired_paths:
        from hedgegym.agents.paired import AntitheticExploration, PairedAdvantage

        callbacks.append(PairedAdvantage())
        if config.training.antithetic_exploration:
            callbacks.append(AntitheticExploration())
    if config.training.per_market_advantages:  # after the pairing: it standardises the paired differences
        from hedgegym.agents.per_market import PerMarketAdvantage

        callbacks.append(PerMarketAdvantage(config.scenario.randomize.markets))
    return callbacks


def _train(
    config: ExperimentConfig,
    run_dir: Path,
    checkpoint: dict | None,
    progress: ProgressFn | None,
    evaluation_progress,
    extra_callbacks: list,
    started: float,
    notify: Callable[[str], None],
) -> RunResult:
    resumed_from = None if checkpoint is None else int(checkpoint["timesteps"])
    if checkpoint is None:
        env, model = build_env_and_model(config, tensorboard_log=str(run_dir / "tb"))
        if config.training.warm_start is not None:
            from hedgegym.train import warm_start

            _set_status(run_dir, "running", timesteps=0)
            notify(warm_start.describe(warm_start.warm_start(config, _control(config), model, run_dir)))
    else:
        env, model = checkpoint["loaded"]
        model.tensorboard_log = str(run_dir / "tb")

    history = _load_history(run_dir, resumed_from)
    stop = threading.Event()
    recorder = _Recorder(config, run_dir, history, progress, stop)
    remaining = config.training.total_timesteps - (resumed_from or 0)
    if remaining > 0:
        with _sigint_sets(stop):
            model.learn(
                remaining,
                callback=CallbackList([*_paired(config), recorder, *extra_callbacks]),
                log_interval=1,
                tb_log_name=config.algorithm.name,
                reset_num_timesteps=checkpoint is None,
                progress_bar=False,
            )
    interrupted = stop.is_set() and model.num_timesteps < config.training.total_timesteps
    recorder.checkpoint(model)

    vecnorm = sb3.find_vecnormalize(model.get_env())
    _save_model(model, vecnorm, run_dir / MODEL_FILE, config)
    best_path = run_dir / BEST_MODEL_FILE
    best = best_path if best_path.is_file() else None
    _write_history(run_dir, history)
    plot_training_curve(history, run_dir / "training_curve.png", title=config.run_name)

    evaluation = None
    status = "interrupted" if interrupted else "finished"
    if not interrupted:
        _set_status(run_dir, "evaluating", timesteps=int(model.num_timesteps))
        try:
            evaluation = final_evaluation(
                config,
                best or run_dir / MODEL_FILE,
                run_dir / "evaluation",
                progress=evaluation_progress,
                command=_read_json(run_dir / "run_info.json").get("command"),
            )
        except KeyboardInterrupt:
            # Training is complete and saved; `--resume` redoes the evaluation from scratch.
            shutil.rmtree(run_dir / "evaluation", ignore_errors=True)
            interrupted, status = True, "evaluation interrupted"
    _set_status(
        run_dir,
        status,
        timesteps=int(model.num_timesteps),
        finished=_now(),
        best_objective=history["best"].get("objective"),
    )
    env.close()
    return RunResult(
        run_dir=run_dir,
        config=config,
        timesteps=int(model.num_timesteps),
        interrupted=interrupted,
        model_path=run_dir / MODEL_FILE,
        best_model_path=best,
        best_objective=history["best"].get("objective"),
        resumed_from=resumed_from,
        wall_time_s=time.monotonic() - started,
        evaluation=evaluation,
        history=history,
        status=status,
    )


def _interrupted(run_dir: Path, fresh: bool) -> TrainingInterrupted:
    """The error for a Ctrl-C that escaped the pipeline's handler; removes a fresh run with nothing to keep."""
    latest = run_dir / "checkpoints" / LATEST_CHECKPOINT
    if fresh and not latest.is_file():
        shutil.rmtree(run_dir, ignore_errors=True)
        return TrainingInterrupted(
            f"interrupted before the first checkpoint: removed {run_dir} (nothing was "
            "trained yet); start again with the same command"
        )
    if (run_dir / "run_info.json").is_file():
        _set_status(run_dir, "interrupted")
    where = f"the checkpoint at {_read_json(latest)['timesteps']:,} timesteps" if latest.is_file() else "its files"
    return TrainingInterrupted(
        f"interrupted: {run_dir} keeps {where}; continue with `hedgegym train --resume {run_dir}`"
    )


# --------------------------------------------------------------------------------------- callbacks
class _Recorder(BaseCallback):
    """The pipeline's SB3 callback: progress, episode metrics, checkpoints, held-out evaluation, Ctrl-C.

    Checkpoints are taken at the start of a rollout, after the previous update: a state from which
    the rest of the run replays exactly.
    """

    def __init__(
        self, config: ExperimentConfig, run_dir: Path, history: dict, progress: ProgressFn | None, stop: threading.Event
    ):
        super().__init__()
        self.config = config
        self.run_dir = run_dir
        self.history = history
        self.progress = progress
        self.stop = stop
        self.episode_rewards: list[float] = []
        self.last_progress = 0.0
        self.last_heartbeat = time.monotonic()
        self.selection = None  # the FamilySelection of evaluation.markets, built at the first evaluation

    def _on_training_start(self) -> None:
        self.next_checkpoint = _next_multiple(self.num_timesteps, self.config.training.checkpoint_every)
        self.next_evaluation = _next_multiple(self.num_timesteps, self.config.evaluation.every)
        if self.num_timesteps == 0 and self.config.evaluation.every and self.config.algorithm.control is not None:
            # A policy acting through a control starts as its hedger: the start is a candidate for
            # best_model.zip, so training that never improves on the hedger returns the hedger.
            self.evaluate()

    def _on_rollout_start(self) -> None:
        t = self.num_timesteps
        if self.next_checkpoint and t >= self.next_checkpoint:
            self.checkpoint(self.model)
            self.next_checkpoint = _next_multiple(t, self.config.training.checkpoint_every)

    def _on_step(self) -> bool:
        for info in self.locals["infos"]:
            metrics = info.get("episode_metrics")
            if metrics is not None:
                for key, value in metrics.items():
                    self.logger.record_mean(f"episode/{key}", float(value))
                self.episode_rewards.append(float(info["episode"]["r"]))
        t = self.num_timesteps
        if self.next_evaluation and t >= self.next_evaluation:
            self.evaluate()
            self.next_evaluation = _next_multiple(t, self.config.evaluation.every)
        now = time.monotonic()
        if self.progress is not None and now - self.last_progress > 0.1:
            self.last_progress = now
            self.progress(t, self.status())
        if now - self.last_heartbeat > HEARTBEAT_S:
            self.last_heartbeat = now
            _set_status(self.run_dir, "running", timesteps=int(t))
        return not self.stop.is_set()

    def _on_rollout_end(self) -> None:
        if self.episode_rewards:
            self.history["rollouts"].append([int(self.num_timesteps), float(np.mean(self.episode_rewards))])
            self.episode_rewards.clear()

    def _on_training_end(self) -> None:
        if self.progress is not None:
            self.progress(self.num_timesteps, self.status())

    def status(self) -> dict[str, float]:
        out = {}
        if self.history["rollouts"]:
            out["reward"] = self.history["rollouts"][-1][1]
        if self.history["evaluations"]:
            out["objective"] = self.history["evaluations"][-1]["objective"]
        return out

    def evaluate(self) -> None:
        """Held-out evaluation of the current policy; a new best is saved as best_model.zip."""
        vecnorm = sb3.find_vecnormalize(self.model.get_env())
        if self.config.evaluation.markets and self.selection is None:
            from hedgegym.train.selection import FamilySelection

            self.selection = FamilySelection.from_experiment(self.config)
            self.history["selection"] = self.selection.record()
        result = held_out_evaluation(self.model, vecnorm, self.config, self.selection)
        pnl = result.pop("pnl")
        result["timesteps"] = int(self.num_timesteps)
        self.history["evaluations"].append(result)
        for key in ("objective", "family_score", "mean_pnl", "std_pnl"):
            if key in result:
                self.logger.record(f"eval/{key}", result[key])
        best = self.history["best"]
        better, interval = _replaces_best(pnl, best, self.run_dir, self.config, self.selection)
        if interval is not None:
            result["paired_vs_best"] = interval
        if better:
            self.history["best"] = {"objective": result["objective"], "timesteps": int(self.num_timesteps)}
            if "family_score" in result:
                self.history["best"]["family_score"] = result["family_score"]
            _save_model(self.model, vecnorm, self.run_dir / BEST_MODEL_FILE, self.config)
            write_bytes_atomic(self.run_dir / BEST_PNL_FILE, _npy_bytes(pnl))
            write_json_atomic(self.run_dir / "best.json", self.history["best"])
        _write_history(self.run_dir, self.history)

    def checkpoint(self, model) -> None:
        """Save model, normaliser, resume state and (off-policy) replay buffer; then point latest.json at them."""
        folder = self.run_dir / "checkpoints"
        folder.mkdir(exist_ok=True)
        t = int(model.num_timesteps)
        stem = f"step_{t:012d}"
        vecnorm = sb3.find_vecnormalize(model.get_env())
        _save_model(model, vecnorm, folder / f"{stem}.zip", self.config)
        write_bytes_atomic(folder / f"{stem}_state.pkl", pickle.dumps(_resume_snapshot(model, vecnorm)))
        entry = {
            "timesteps": t,
            "model": f"{stem}.zip",
            "state": f"{stem}_state.pkl",
            "time": _now(),
            "vecnormalize": sb3.vecnormalize_path(folder / f"{stem}.zip").name if vecnorm else None,
            "replay_buffer": None,
        }
        if self.config.training.save_replay_buffer and hasattr(model, "replay_buffer"):
            buffer = f"{stem}{REPLAY_BUFFER_SUFFIX}"
            tmp = folder / f".{buffer}.tmp"
            model.save_replay_buffer(str(tmp))
            os.replace(tmp, folder / buffer)
            entry["replay_buffer"] = buffer
        _write_history(self.run_dir, self.history)
        write_json_atomic(folder / f"{stem}.json", entry)
        write_json_atomic(folder / LATEST_CHECKPOINT, entry)
        # One buffer (the newest checkpoint's) is kept: it can be hundreds of MB.
        for old in folder.glob(f"*{REPLAY_BUFFER_SUFFIX}"):
            if old.name != entry["replay_buffer"]:
                old.unlink()
        _prune_checkpoints(folder, self.config.training.keep_checkpoints)
        _set_status(self.run_dir, "running", timesteps=t)


def _next_multiple(t: int, every: int) -> int:
    """The first multiple of ``every`` above ``t`` (0 when ``every`` is 0: never)."""
    return 0 if every == 0 else (t // every + 1) * every


def _prune_checkpoints(folder: Path, keep: int) -> None:
    zips = sorted(folder.glob("step_*[0-9].zip"))
    for old in zips[:-keep]:
        stem = old.name.removesuffix(".zip")
        for path in (old, sb3.vecnormalize_path(old), folder / f"{stem}_state.pkl", folder / f"{stem}.json"):
            path.unlink(missing_ok=True)


# --------------------------------------------------------------------------------------- resume state
def _resume_snapshot(model, vecnorm) -> dict[str, Any]:
    """What a model zip leaves out and an exact continuation needs: the env and every random state."""
    import torch

    env = model.get_env()
    return {
        "env": vecnorm.venv if vecnorm is not None else env,
        "vecnormalize_returns": None if vecnorm is None else vecnorm.returns.copy(),
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),  # noqa: NPY002 - SB3 draws minibatches from the legacy global RNG
        "python": random.getstate(),
        "action_space": model.action_space.np_random.bit_generator.state,
    }


def _restore(config: ExperimentConfig, ckpt_dir: Path, entry: dict[str, Any]):
    """``(env, model)`` of checkpoint ``entry``, exactly as they were; raises on any damaged part."""
    import torch

    for key in ("model", "state"):
        if not isinstance(entry.get(key), str):
            raise ValueError(f"the entry has no {key!r} file")
    snapshot = pickle.loads((ckpt_dir / entry["state"]).read_bytes())
    base_env = snapshot["env"]
    stats = ckpt_dir / entry["vecnormalize"] if entry.get("vecnormalize") else None
    env = sb3.make_vec_env(
        config.scenario.resolved,
        config.env.n_envs,
        config.training.seed,
        stats_path=stats,
        parallel=config.env.parallel,
        base_env=base_env,
    )
    vecnorm = sb3.find_vecnormalize(env)
    if vecnorm is not None:
        vecnorm.returns = snapshot["vecnormalize_returns"].copy()
    # force_reset=False keeps the model's last observation: the restored env continues from it.
    model = sb3.load_model(config.algorithm.name, ckpt_dir / entry["model"], env=env, force_reset=False)
    if entry.get("replay_buffer"):
        model.load_replay_buffer(str(ckpt_dir / entry["replay_buffer"]))
    # Loading re-seeds every generator from the config's seed; put back the ones of the checkpoint.
    torch.set_rng_state(snapshot["torch"])
    np.random.set_state(snapshot["numpy"])  # noqa: NPY002
    random.setstate(snapshot["python"])
    model.action_space.np_random.bit_generator.state = snapshot["action_space"]
    return env, model


def _checkpoint_entries(ckpt_dir: Path, notes: list[str]) -> list[dict[str, Any]]:
    """Checkpoint entries, newest first: latest.json, then each step's own record."""
    entries = []
    latest = ckpt_dir / LATEST_CHECKPOINT
    try:
        entries.append(_read_json(latest))
    except (OSError, ValueError) as err:
        if latest.exists():
            notes.append(f"{LATEST_CHECKPOINT} is unreadable ({type(err).__name__})")
    for path in sorted(ckpt_dir.glob("step_*[0-9].json"), reverse=True):
        try:
            entry = _read_json(path)
        except (OSError, ValueError):
            continue
        if isinstance(entry, dict) and entry not in entries:
            entries.append(entry)
    return [e for e in entries if isinstance(e, dict) and isinstance(e.get("timesteps"), int)]


def _load_checkpoint(config: ExperimentConfig, run_dir: Path, notify: Callable[[str], None]) -> dict[str, Any]:
    """The newest checkpoint that loads whole, with its restored ``(env, model)`` under ``"loaded"``."""
    ckpt_dir = run_dir / "checkpoints"
    problems: list[str] = []
    entries = _checkpoint_entries(ckpt_dir, problems)
    for entry in sorted(entries, key=lambda e: -e["timesteps"]):
        if entry.get("replay_buffer") and not (ckpt_dir / entry["replay_buffer"]).is_file():
            # Only the newest checkpoint's buffer is kept: an older one resumes with an empty buffer.
            problems.append(f"the replay buffer of step {entry['timesteps']:,} was not kept (it starts empty)")
            entry = {**entry, "replay_buffer": None}
        try:
            entry["loaded"] = _restore(config, ckpt_dir, entry)
        except Exception as err:  # a damaged file fails in many ways; each means: try the previous one
            problems.append(f"step {entry['timesteps']:,} is damaged ({type(err).__name__}: {str(err)[:80]})")
            continue
        if problems:
            notify(
                f"{run_dir}: {'; '.join(problems)}: resuming from the checkpoint at {entry['timesteps']:,} timesteps"
            )
        return entry
    detail = f" ({'; '.join(problems)})" if problems else ""
    raise ConfigError(f"--resume {str(run_dir)!r}: no usable checkpoint in {ckpt_dir}{detail}")


# --------------------------------------------------------------------------------------- evaluation
def _control(config: ExperimentConfig):
    """The control the policy acts through (``algorithm.control``), built for the training scenario, or None."""
    from hedgegym.agents.residual import make_control

    control = config.algorithm.control
    return None if control is None else make_control(control, config.scenario.resolved)


def held_out_evaluation(model, vecnorm, config: ExperimentConfig, selection=None) -> dict[str, float]:
    """The current policy on the periodic evaluation's held-out seeds: objective, mean and std of P&L (USD).

    Runs through :func:`hedgegym.train.evaluate.run_policy`, the final evaluation's own loop, with the
    training normaliser's current observation statistics (read, not updated). The objective is
    :func:`hedgegym.train.evaluate.objective`, the one the final report ranks policies by.

    With a :class:`hedgegym.train.selection.FamilySelection` (``evaluation.markets``), on its markets
    instead (the control rebuilt on each): ``objective`` is then the markets' mean objective (USD),
    ``family_score`` the scale-free score the selection uses, ``market_objectives`` each market's, and
    ``pnl`` is ``[markets, episodes a market]``.
    """
    from hedgegym.agents.residual import make_control
    from hedgegym.train.evaluate import objective, run_policy
    from hedgegym.train.policies import SB3Policy
    from hedgegym.train.selection import market_objectives

    ev, scenario = config.evaluation, config.scenario.resolved
    if selection is not None:
        record = config.algorithm.control

        def policy_for(market):
            control = None if record is None else make_control(record, market)
            return SB3Policy(
                model, vecnorm, name=config.algorithm.name, control=control, observation=config.env.observation
            )

        pnl = selection.evaluate(policy_for, name=config.algorithm.name)
        objectives = market_objectives(pnl, selection.markets)
        return {
            "objective": float(objectives.mean()),
            "family_score": selection.score(pnl),
            "market_objectives": [float(x) for x in objectives],
            "mean_pnl": float(pnl.mean()),
            "std_pnl": float(pnl.std()),
            "pnl": pnl,
        }
    seeds = np.arange(ev.seed + ev.final_episodes, ev.seed + ev.final_episodes + ev.episodes)
    per_episode, _ = run_policy(
        SB3Policy(
            model,
            vecnorm,
            name=config.algorithm.name,
            control=_control(config),
            observation=config.env.observation,
        ),
        scenario,
        seeds,
        name=config.algorithm.name,
        n_sample_paths=0,
    )
    pnl = per_episode["pnl"]
    return {
        "objective": objective(per_episode, scenario),
        "mean_pnl": float(pnl.mean()),
        "std_pnl": float(pnl.std()),
        "pnl": pnl,
    }


def paired_objective_interval(
    pnl_a, pnl_b, scenario, confidence: float = 0.95, seed: int = 0
) -> tuple[float, float, float]:
    """``(difference, low, high)``: the objective of ``pnl_a`` minus that of ``pnl_b`` (episode i of
    both on the same seed) with its paired percentile-bootstrap interval, on the report's
    resamples (:func:`hedgegym.train.metrics.bootstrap_counts`) and objective
    (:func:`hedgegym.train.metrics.mean_variance_objective`). ``seed`` seeds the resamples:
    :func:`hedgegym.train.evaluate.evaluate` seeds its bootstrap with the seed of the evaluation's
    episode 0, so passing that seed gives the report's interval of the same episodes to the bit;
    training's selection and the warm start keep ``seed = 0`` (their intervals then differ from a
    report's by the bootstrap's own Monte-Carlo noise, the same point).
    """
    from hedgegym.train import metrics as M

    a, b = np.asarray(pnl_a, dtype=np.float64), np.asarray(pnl_b, dtype=np.float64)
    kappa, scale = scenario.agent.risk_aversion, scenario.pnl_scale
    draws = np.concatenate(
        [
            M.mean_variance_objective(a, kappa, scale, counts) - M.mean_variance_objective(b, kappa, scale, counts)
            for counts in M.bootstrap_counts(a.size, seed=seed)
        ]
    )
    point = float(M.mean_variance_objective(a, kappa, scale) - M.mean_variance_objective(b, kappa, scale))
    lo, hi = M.percentile_interval(draws, confidence)
    return point, min(lo, point), max(hi, point)


def _replaces_best(pnl: np.ndarray, best: dict, run_dir: Path, config: ExperimentConfig, selection=None):
    """``(better, interval)``: whether an evaluation with episode P&Ls ``pnl`` becomes best_model.zip
    under ``evaluation.select``, and (``paired``) its paired interval against the incumbent, or None.

    ``best``: a higher objective than the incumbent's. ``paired``: an interval that lies above 0 — a
    checkpoint that only looks better on these episodes by chance (the maximum of many noisy
    evaluations) does not replace the incumbent, so the run's best is one that holds on new paths.
    With a family ``selection``, the same rules on its scale-free family score.
    """
    from hedgegym.train.evaluate import objective

    if not best:
        return True, None
    if selection is not None:

        def higher() -> bool:
            return "family_score" not in best or selection.score(pnl) > best["family_score"]
    else:

        def higher() -> bool:
            return objective({"pnl": pnl}, config.scenario.resolved) > best["objective"]

    if config.evaluation.select == "best":
        return higher(), None
    try:
        incumbent = np.load(run_dir / BEST_PNL_FILE, allow_pickle=False)
    except (OSError, ValueError):
        incumbent = None
    if incumbent is None or incumbent.shape != pnl.shape:
        # A best model from before this rule (or another episode count): judged by the objective alone.
        return higher(), None
    if selection is not None:
        point, lo, hi = selection.interval(pnl, incumbent)
    else:
        point, lo, hi = paired_objective_interval(pnl, incumbent, config.scenario.resolved)
    return lo > 0.0, [point, lo, hi]


def _npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.asarray(array, dtype=np.float64), allow_pickle=False)
    return buf.getvalue()


def final_evaluation(
    config: ExperimentConfig,
    model_path: Path,
    out_dir: Path,
    progress: Callable[[int, int], None] | None = None,
    command: str | None = None,
):
    """The trained agent against ``evaluation.baselines`` on the held-out seeds, written to ``out_dir``.

    Episode j uses seed ``evaluation.seed + j`` for the agent and every baseline alike (paired).
    ``progress(done, total)`` counts env steps.
    """
    from hedgegym.train.evaluate import evaluate
    from hedgegym.train.policies import load_sb3_policy

    ev, scenario = config.evaluation, config.scenario.resolved
    policies = [(config.name or config.algorithm.name, load_sb3_policy(model_path, scenario)), *ev.baselines]
    # Each policy runs twice: with its impact and without (its own share of the vol amplification).
    total = 2 * len(policies) * ev.final_episodes * scenario.episode_steps
    done = 0

    def advance(n: int) -> None:
        nonlocal done
        done += n
        progress(done, total)

    result = evaluate(
        policies, scenario, episodes=ev.final_episodes, seed=ev.seed, progress=advance if progress is not None else None
    )
    result.write(out_dir, command=command)
    return result


# --------------------------------------------------------------------------------------- files
def _save_model(model, vecnorm, path: Path, config: ExperimentConfig) -> None:
    """Save ``model`` with its agent interface (and its normaliser beside it) atomically."""
    from hedgegym.train.policies import embed_interface, policy_interface

    buf = io.BytesIO()
    model.save(buf)
    # VecNormalize pickles without its venv (__getstate__), exactly as VecNormalize.save does.
    stats = pickle.dumps(vecnorm) if vecnorm is not None else None
    stats_path = sb3.vecnormalize_path(path)
    control = _control(config)
    interface = policy_interface(
        config.scenario.resolved,
        config.algorithm.name,
        stats,
        config.env.normalize.observations,
        stats_path.name,
        control=None if control is None else control.record,
        observation=config.env.observation,
    )
    if stats is not None:
        write_bytes_atomic(stats_path, stats)
    write_bytes_atomic(path, embed_interface(buf.getvalue(), interface))


def _load_history(run_dir: Path, resumed_from: int | None) -> dict:
    empty = {"rollouts": [], "evaluations": [], "best": {}}
    if resumed_from is None:
        return empty
    path = run_dir / "history.json"
    try:
        history = _read_json(path)
    except (OSError, ValueError):
        history = empty
    # Entries past the checkpoint belong to the part of the run that the resume replaces; the best
    # model stays (it is a real model, evaluated on the held-out seeds).
    history["rollouts"] = [r for r in history["rollouts"] if r[0] <= resumed_from]
    history["evaluations"] = [e for e in history["evaluations"] if e["timesteps"] <= resumed_from]
    best = run_dir / "best.json"
    history["best"] = _read_json(best) if best.is_file() and (run_dir / BEST_MODEL_FILE).is_file() else {}
    return history


def _write_history(run_dir: Path, history: dict) -> None:
    write_json_atomic(run_dir / "history.json", history)


def _read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _set_status(run_dir: Path, status: str, **fields: Any) -> None:
    """Update run_info.json: status, the live process and its heartbeat, and ``fields``."""
    info = _read_json(run_dir / "run_info.json")
    info.update(status=status, pid=os.getpid(), host=socket.gethostname(), heartbeat=_now(), **fields)
    write_json_atomic(run_dir / "run_info.json", info)


def _run_info(config: ExperimentConfig, command: str | None) -> dict:
    import gymnasium
    import stable_baselines3
    import torch

    return {
        "run_name": config.run_name,
        "command": command,
        "git_commit": git_commit(),
        "seed": config.training.seed,
        "evaluation_seed": config.evaluation.seed,
        "started": _now(),
        "status": "running",
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "heartbeat": _now(),
        "versions": {
            "python": platform.python_version(),
            "numpy": np.__version__,
            "torch": torch.__version__,
            "stable_baselines3": stable_baselines3.__version__,
            "gymnasium": gymnasium.__version__,
        },
        "torch": {
            "threads": config.training.torch_threads,
            "deterministic_algorithms": config.training.deterministic_torch,
        },
        "resumes": [],
    }


def _as_config(config) -> ExperimentConfig:
    if config is None:
        raise ConfigError("no experiment config given (a YAML path, a mapping or an ExperimentConfig)")
    if isinstance(config, (str, os.PathLike)):
        return load_experiment(config)
    return validate_experiment(config)


# --------------------------------------------------------------------------------------- live or dead
def _lock_run(run_dir: Path, resume: bool) -> int:
    """Hold the run's lock (``flock`` on ``RUN/.lock``) for this process's lifetime; the kernel drops
    it when the process dies, however it dies. Returns the descriptor; a held lock is a ConfigError."""
    if resume and not (run_dir / "config.yaml").is_file():
        raise ConfigError(f"--resume {str(run_dir)!r}: not a run directory (no config.yaml)")
    fd = os.open(run_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        info = _run_info_or_empty(run_dir)
        raise ConfigError(
            f"--resume {str(run_dir)!r}: the run is live (pid {info.get('pid')} on "
            f"{info.get('host')}, heartbeat {info.get('heartbeat')}); wait for it or stop it "
            "first"
        ) from None
    return fd


def _run_info_or_empty(run_dir: Path) -> dict:
    try:
        return _read_json(run_dir / "run_info.json")
    except (OSError, ValueError):
        return {}


def run_status(run_dir: str | os.PathLike) -> str:
    """The run's status: ``"live"`` while a process holds its lock, ``"dead"`` if run_info.json says
    it runs but no process holds the lock (killed), else run_info.json's status (``"finished"``,
    ``"interrupted"``, ``"evaluation interrupted"``)."""
    run_dir = Path(run_dir)
    status = _run_info_or_empty(run_dir).get("status", "unknown")
    lock = run_dir / LOCK_FILE
    if not lock.is_file():
        return "dead" if status in ("running", "evaluating") else status
    fd = os.open(lock, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return "live"
    finally:
        os.close(fd)
    return "dead" if status in ("running", "evaluating") else status


def _resume_config(run_dir: Path, config) -> ExperimentConfig:
    """The run's config, checked against ``config`` when given; refuses a run with nothing left to do."""
    saved = load_experiment(run_dir / "config.yaml")
    if config is not None:
        config = _as_config(config)
        a, b = flatten(saved.resolved_dict()), flatten(config.resolved_dict())
        differ = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k) and k != "training.total_timesteps")
        if differ:
            raise ConfigError(
                f"--resume continues a run with its saved config; these fields differ from it: "
                f"{', '.join(differ)} (only training.total_timesteps may change)"
            )
    else:
        config = saved
    ckpt_dir = run_dir / "checkpoints"
    if not ckpt_dir.is_dir():
        raise ConfigError(
            f"--resume {str(run_dir)!r}: the run has no checkpoint yet (no checkpoints/); "
            "start it again with a new --out"
        )
    # A record whose files are gone counts for nothing (the resume falls back to an older checkpoint).
    latest = max(
        (
            e["timesteps"]
            for e in _checkpoint_entries(ckpt_dir, [])
            if all(isinstance(e.get(k), str) and (ckpt_dir / e[k]).is_file() for k in ("model", "state"))
        ),
        default=None,
    )
    total = config.training.total_timesteps
    if latest is not None and total < latest and total != saved.training.total_timesteps:
        raise ConfigError(
            f"--resume {str(run_dir)!r}: training.total_timesteps={total} is below the "
            f"{latest} timesteps of its newest checkpoint; a run cannot be trained back: give "
            f"at least {latest}"
        )
    if (
        _run_info_or_empty(run_dir).get("status") == "finished"
        and latest is not None
        and latest >= config.training.total_timesteps
    ):
        raise ConfigError(
            f"--resume {str(run_dir)!r}: the checkpoint is at {latest} timesteps, "
            f"training.total_timesteps={config.training.total_timesteps}, and its evaluation is "
            "done: nothing left to train (raise it with --set training.total_timesteps=N)"
        )
    return config


def _resume_checkpoint(run_dir: Path, config: ExperimentConfig, notify: Callable[[str], None]) -> dict:
    """Load the newest good checkpoint and record the resume in the run's files."""
    info = _run_info_or_empty(run_dir)
    checkpoint = _load_checkpoint(config, run_dir, notify)
    if info.get("status") in ("running", "evaluating"):
        notify(
            f"{run_dir}: its process (pid {info.get('pid')} on {info.get('host')}, last heartbeat "
            f"{info.get('heartbeat')}) is gone; resuming from the checkpoint at {checkpoint['timesteps']:,} "
            "timesteps"
        )
    write_text_atomic(run_dir / "config.yaml", experiment_yaml(config))
    if (run_dir / "evaluation").exists():
        if info.get("status") == "finished":
            # A finished run being extended: its report stays, under the timestep it describes.
            (run_dir / "evaluation").rename(run_dir / f"evaluation-{info.get('timesteps', checkpoint['timesteps'])}")
        else:
            shutil.rmtree(run_dir / "evaluation")  # a report cut short: it is redone
    info.setdefault("resumes", []).append(
        {"from_timesteps": checkpoint["timesteps"], "time": _now(), "git_commit": git_commit()}
    )
    write_json_atomic(run_dir / "run_info.json", info)
    _set_status(run_dir, "running")
    return checkpoint


@contextmanager
def _torch_settings(config: ExperimentConfig) -> Iterator[None]:
    """Apply the config's torch settings for the run; restore the process's afterwards."""
    import torch

    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    sb3.configure_torch(config.training.seed, config.training.torch_threads, config.training.deterministic_torch)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)


@contextmanager
def _sigint_sets(stop: threading.Event) -> Iterator[None]:
    """Ctrl-C sets ``stop`` (training then checkpoints and returns); a second Ctrl-C interrupts at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    # A Ctrl-C during the setup's numba compilation may have been swallowed: honour it now.
    raise_if_interrupted()
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum, frame):
        if stop.is_set():
            signal.signal(signal.SIGINT, previous)
            raise KeyboardInterrupt
        stop.set()

    signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
