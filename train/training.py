"""Training an SB3 agent from an :class:`~hedgegym.train.experiment.ExperimentConfig`: ``train(config)``.

One call runs the whole experiment, top to bottom:

1. a fresh run directory (``output_dir/<run name>-<UTC time>``, or ``out``; never an existing run's)
   with ``config.yaml`` (the resolved config, scenario inlined) and ``run_info.json`` (git commit,
   seed, start time, library versions);
2. torch seeded, one thread, deterministic kernels (:func:`hedgegym.agents.sb3.configure_torch`);
3. the batched env through the SB3 adapter, in ``VecNormalize`` when the config normalises;
4. ``model.learn`` with callbacks: progress, TensorBoard means of every ``info["episode_metrics"]``
   key (``episode/pnl``, ``episode/slippage_bps``, ...), a checkpoint every
   ``training.checkpoint_every`` timesteps, a held-out evaluation every ``evaluation.every``
   timesteps keeping ``best_model.zip``, and Ctrl-C, which stops at the next env step, saves a
   checkpoint and returns;
5. ``model.zip`` (+ normaliser statistics), ``training_curve.png``, and the final evaluation of the
   agent against the config's baselines on the held-out seeds, written to ``evaluation/``.

``train(resume=RUN_DIR)`` continues a run from its newest checkpoint: the model, optimiser and
normaliser statistics are restored and training goes on from the checkpoint's timestep to
``training.total_timesteps`` in the same run directory and TensorBoard run.

Held-out seeds: the final evaluation's episode j uses seed ``evaluation.seed + j``; the periodic
evaluations that pick the best model use the next block, ``evaluation.seed + final_episodes + j``,
so choosing the best model does not bias the final report. Training env i uses ``training.seed + i``.
"""

from __future__ import annotations

import os
import pickle
import platform
import signal
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
from hedgegym.envs.config import ConfigError, save_config
from hedgegym.train.experiment import ExperimentConfig, experiment_yaml, load_experiment, validate_experiment
from hedgegym.train.io import (
    claim_dir,
    git_commit,
    new_run_dir,
    save_figure_atomic,
    write_bytes_atomic,
    write_json_atomic,
    write_text_atomic,
)

MODEL_FILE = "model.zip"
BEST_MODEL_FILE = "best_model.zip"
LATEST_CHECKPOINT = "latest.json"
# Called with (timesteps done, {"reward": last mean episode reward, "objective": last held-out objective}).
ProgressFn = Callable[[int, dict[str, float]], None]


@dataclass
class RunResult:
    """What a training run produced."""

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


def train(config: ExperimentConfig | dict | str | os.PathLike | None = None, out: str | os.PathLike | None = None,
          resume: str | os.PathLike | None = None, progress: ProgressFn | None = None,
          evaluation_progress: Callable[[int, int], None] | None = None, callbacks: list | None = None,
          command: str | None = None) -> RunResult:
    """Train the agent of ``config`` and evaluate it; return the :class:`RunResult`.

    Args:
        config: an :class:`ExperimentConfig`, a mapping, or a YAML path. With ``resume`` it may be
            omitted (the run's saved ``config.yaml`` is used); when given it may differ from the saved
            config only in ``training.total_timesteps``.
        out: run directory to create (must not exist or be empty); default a new
            ``output_dir/<run name>-<UTC time>``.
        resume: run directory to continue from its newest checkpoint.
        progress: called as training advances (see ``ProgressFn``).
        evaluation_progress: called as ``(env steps done, total)`` during the final evaluation.
        callbacks: extra SB3 callbacks, run after the pipeline's own.
        command: the command line that started the run, for the records.
    """
    started = time.monotonic()
    if resume is not None:
        if out is not None:
            raise ConfigError("--out and --resume exclude each other: a resumed run continues in its own directory")
        run_dir = Path(resume)
        config, checkpoint = _resume_state(run_dir, config)
    else:
        config = _as_config(config)
        run_dir = claim_dir(out) if out is not None else new_run_dir(config.output_dir, config.run_name)
        checkpoint = None
        write_text_atomic(run_dir / "config.yaml", experiment_yaml(config))
        # The scenario alone, for `hedgegym evaluate --config RUN/scenario.yaml --policy RUN/best_model.zip`.
        save_config(config.scenario.resolved, run_dir / "scenario.yaml")
        write_json_atomic(run_dir / "run_info.json", _run_info(config, command))

    with _torch_settings(config):
        return _train(config, run_dir, checkpoint, progress, evaluation_progress, callbacks or [], command, started)


def _train(config: ExperimentConfig, run_dir: Path, checkpoint: dict | None, progress: ProgressFn | None,
           evaluation_progress, extra_callbacks: list, command: str | None, started: float) -> RunResult:
    scenario = config.scenario.resolved
    n_envs = config.env.n_envs
    resumed_from = None if checkpoint is None else int(checkpoint["timesteps"])
    if checkpoint is None:
        env = sb3.make_vec_env(scenario, n_envs, config.training.seed, config.env.normalize.model_dump(),
                               gamma=config.gamma, parallel=config.env.parallel)
        model = sb3.build_model(config.algorithm.name, env, config.algorithm.hyperparameters,
                                config.algorithm.policy_kwargs.model_dump(), seed=config.training.seed,
                                action_noise_std=config.algorithm.action_noise_std,
                                tensorboard_log=str(run_dir / "tb"))
    else:
        ckpt_dir = run_dir / "checkpoints"
        stats = ckpt_dir / checkpoint["vecnormalize"] if checkpoint.get("vecnormalize") else None
        # A resumed run starts fresh episode streams, disjoint from the earlier ones (env i of
        # resume r uses training.seed + r * n_envs + i); the held-out seeds are far above.
        seed = config.training.seed + n_envs * (len(_read_json(run_dir / "run_info.json").get("resumes", [])))
        env = sb3.make_vec_env(scenario, n_envs, seed, stats_path=stats, parallel=config.env.parallel)
        model = sb3.load_model(config.algorithm.name, ckpt_dir / checkpoint["model"], env=env)
        model.tensorboard_log = str(run_dir / "tb")
        env.seed(seed)
        if checkpoint.get("replay_buffer"):
            model.load_replay_buffer(str(ckpt_dir / checkpoint["replay_buffer"]))

    history = _load_history(run_dir, resumed_from)
    stop = threading.Event()
    recorder = _Recorder(config, run_dir, history, progress, stop)
    with _sigint_sets(stop):
        remaining = config.training.total_timesteps - (resumed_from or 0)
        model.learn(remaining, callback=CallbackList([recorder, *extra_callbacks]), log_interval=1,
                    tb_log_name=config.algorithm.name, reset_num_timesteps=checkpoint is None,
                    progress_bar=False)
    interrupted = stop.is_set() and model.num_timesteps < config.training.total_timesteps
    recorder.checkpoint(model)

    vecnorm = sb3.find_vecnormalize(model.get_env())
    _save_model(model, vecnorm, run_dir / MODEL_FILE)
    best_path = run_dir / BEST_MODEL_FILE
    best = best_path if best_path.is_file() else None
    _write_history(run_dir, history)
    plot_training_curve(history, run_dir / "training_curve.png", title=config.run_name)

    evaluation = None
    status = "interrupted" if interrupted else "finished"
    if not interrupted:
        try:
            evaluation = final_evaluation(config, best or run_dir / MODEL_FILE, run_dir / "evaluation",
                                          progress=evaluation_progress, command=command)
        except KeyboardInterrupt:
            # Training is complete and saved; only the report is missing (`hedgegym evaluate` redoes it).
            interrupted, status = True, "evaluation interrupted"
    info = _read_json(run_dir / "run_info.json")
    info.update(status=status, timesteps=int(model.num_timesteps), finished=_now(),
                best_objective=history["best"].get("objective"))
    write_json_atomic(run_dir / "run_info.json", info)
    env.close()
    return RunResult(run_dir=run_dir, config=config, timesteps=int(model.num_timesteps), interrupted=interrupted,
                     model_path=run_dir / MODEL_FILE, best_model_path=best,
                     best_objective=history["best"].get("objective"), resumed_from=resumed_from,
                     wall_time_s=time.monotonic() - started, evaluation=evaluation, history=history)


# --------------------------------------------------------------------------------------- callbacks
class _Recorder(BaseCallback):
    """The pipeline's SB3 callback: progress, episode metrics, checkpoints, held-out evaluation, Ctrl-C."""

    def __init__(self, config: ExperimentConfig, run_dir: Path, history: dict, progress: ProgressFn | None,
                 stop: threading.Event):
        super().__init__()
        self.config = config
        self.run_dir = run_dir
        self.history = history
        self.progress = progress
        self.stop = stop
        self.episode_rewards: list[float] = []
        self.last_progress = 0.0

    def _on_training_start(self) -> None:
        self.next_checkpoint = _next_multiple(self.num_timesteps, self.config.training.checkpoint_every)
        self.next_evaluation = _next_multiple(self.num_timesteps, self.config.evaluation.every)

    def _on_step(self) -> bool:
        for info in self.locals["infos"]:
            metrics = info.get("episode_metrics")
            if metrics is not None:
                for key, value in metrics.items():
                    self.logger.record_mean(f"episode/{key}", float(value))
                self.episode_rewards.append(float(info["episode"]["r"]))
        t = self.num_timesteps
        if self.next_checkpoint and t >= self.next_checkpoint:
            self.checkpoint(self.model)
            self.next_checkpoint = _next_multiple(t, self.config.training.checkpoint_every)
        if self.next_evaluation and t >= self.next_evaluation:
            self.evaluate()
            self.next_evaluation = _next_multiple(t, self.config.evaluation.every)
        now = time.monotonic()
        if self.progress is not None and now - self.last_progress > 0.1:
            self.last_progress = now
            self.progress(t, self.status())
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
        result = held_out_evaluation(self.model, vecnorm, self.config)
        result["timesteps"] = int(self.num_timesteps)
        self.history["evaluations"].append(result)
        for key in ("objective", "mean_pnl", "std_pnl"):
            self.logger.record(f"eval/{key}", result[key])
        best = self.history["best"].get("objective")
        if best is None or result["objective"] > best:
            self.history["best"] = {"objective": result["objective"], "timesteps": int(self.num_timesteps)}
            _save_model(self.model, vecnorm, self.run_dir / BEST_MODEL_FILE)
            write_json_atomic(self.run_dir / "best.json", self.history["best"])
        _write_history(self.run_dir, self.history)

    def checkpoint(self, model) -> None:
        """Save model, normaliser and (optionally) replay buffer; then point latest.json at them."""
        folder = self.run_dir / "checkpoints"
        folder.mkdir(exist_ok=True)
        t = int(model.num_timesteps)
        stem = f"step_{t:012d}"
        vecnorm = sb3.find_vecnormalize(model.get_env())
        _save_model(model, vecnorm, folder / f"{stem}.zip")
        entry = {"timesteps": t, "model": f"{stem}.zip", "time": _now(),
                 "vecnormalize": sb3.vecnormalize_path(folder / f"{stem}.zip").name if vecnorm else None,
                 "replay_buffer": None}
        if self.config.training.save_replay_buffer and hasattr(model, "replay_buffer"):
            # One buffer (the newest) is kept: it can be hundreds of MB.
            tmp = folder / ".replay_buffer.pkl.tmp"
            model.save_replay_buffer(str(tmp))
            os.replace(tmp, folder / "replay_buffer.pkl")
            entry["replay_buffer"] = "replay_buffer.pkl"
        _write_history(self.run_dir, self.history)
        write_json_atomic(folder / LATEST_CHECKPOINT, entry)
        _prune_checkpoints(folder, self.config.training.keep_checkpoints)



def _next_multiple(t: int, every: int) -> int:
    """The first multiple of ``every`` above ``t`` (0 when ``every`` is 0: never)."""
    return 0 if every == 0 else (t // every + 1) * every


def _prune_checkpoints(folder: Path, keep: int) -> None:
    zips = sorted(folder.glob("step_*.zip"))
    for old in zips[:-keep]:
        old.unlink()
        sb3.vecnormalize_path(old).unlink(missing_ok=True)


# --------------------------------------------------------------------------------------- evaluation
def held_out_evaluation(model, vecnorm, config: ExperimentConfig) -> dict[str, float]:
    """The current policy on the periodic evaluation's held-out seeds: objective, mean and std of P&L (USD).

    Runs through :func:`hedgegym.train.evaluate.run_policy`, the final evaluation's own loop, with the
    training normaliser's current observation statistics (read, not updated). The objective is
    :func:`hedgegym.train.metrics.mean_variance_objective` of the episode P&Ls.
    """
    from hedgegym.train.evaluate import SB3Policy, run_policy
    from hedgegym.train.metrics import mean_variance_objective

    ev, scenario = config.evaluation, config.scenario.resolved
    seeds = np.arange(ev.seed + ev.final_episodes, ev.seed + ev.final_episodes + ev.episodes)
    per_episode, _ = run_policy(SB3Policy(model, vecnorm, name=config.algorithm.name), scenario, seeds,
                                name=config.algorithm.name, n_sample_paths=0)
    pnl = per_episode["pnl"]
    objective = mean_variance_objective(pnl, scenario.agent.risk_aversion, scenario.pnl_scale)
    return {"objective": float(objective), "mean_pnl": float(pnl.mean()), "std_pnl": float(pnl.std())}


def final_evaluation(config: ExperimentConfig, model_path: Path, out_dir: Path,
                     progress: Callable[[int, int], None] | None = None, command: str | None = None):
    """The trained agent against ``evaluation.baselines`` on the held-out seeds, written to ``out_dir``.

    Episode j uses seed ``evaluation.seed + j`` for the agent and every baseline alike (paired).
    ``progress(done, total)`` counts env steps.
    """
    from hedgegym.train.evaluate import evaluate, load_sb3_policy

    ev, scenario = config.evaluation, config.scenario.resolved
    policies = [(config.name or config.algorithm.name, load_sb3_policy(model_path, scenario)), *ev.baselines]
    # Each policy runs twice: with its impact and without (its own share of the vol amplification).
    total = 2 * len(policies) * ev.final_episodes * scenario.episode_steps
    done = 0

    def advance(n: int) -> None:
        nonlocal done
        done += n
        progress(done, total)

    result = evaluate(policies, scenario, episodes=ev.final_episodes, seed=ev.seed,
                      progress=advance if progress is not None else None)
    result.write(out_dir, command=command)
    return result


# --------------------------------------------------------------------------------------- files
def _save_model(model, vecnorm, path: Path) -> None:
    """Save ``model`` (and its normaliser beside it) atomically: a checkpoint is never half-written."""
    import io

    buf = io.BytesIO()
    model.save(buf)
    write_bytes_atomic(path, buf.getvalue())
    if vecnorm is not None:
        # VecNormalize pickles without its venv (__getstate__), exactly as VecNormalize.save does.
        write_bytes_atomic(sb3.vecnormalize_path(path), pickle.dumps(vecnorm))


def _load_history(run_dir: Path, resumed_from: int | None) -> dict:
    empty = {"rollouts": [], "evaluations": [], "best": {}}
    if resumed_from is None:
        return empty
    path = run_dir / "history.json"
    history = _read_json(path) if path.is_file() else empty
    # Entries past the checkpoint belong to the part of the run that the resume replaces; the best
    # model stays (it is a real model, evaluated on the held-out seeds).
    history["rollouts"] = [r for r in history["rollouts"] if r[0] <= resumed_from]
    history["evaluations"] = [e for e in history["evaluations"] if e["timesteps"] <= resumed_from]
    best = run_dir / "best.json"
    history["best"] = _read_json(best) if best.is_file() else {}
    return history


def _write_history(run_dir: Path, history: dict) -> None:
    write_json_atomic(run_dir / "history.json", history)


def _read_json(path: Path) -> dict:
    import json

    return json.loads(Path(path).read_text())


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


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
        "versions": {"python": platform.python_version(), "numpy": np.__version__, "torch": torch.__version__,
                     "stable_baselines3": stable_baselines3.__version__, "gymnasium": gymnasium.__version__},
        "torch": {"threads": config.training.torch_threads,
                  "deterministic_algorithms": config.training.deterministic_torch},
        "resumes": [],
    }


def _as_config(config) -> ExperimentConfig:
    if config is None:
        raise ConfigError("no experiment config given (a YAML path, a mapping or an ExperimentConfig)")
    if isinstance(config, (str, os.PathLike)):
        return load_experiment(config)
    return validate_experiment(config)


def _resume_state(run_dir: Path, config) -> tuple[ExperimentConfig, dict]:
    """The run's config (checked against ``config`` when given) and its newest checkpoint."""
    if not (run_dir / "config.yaml").is_file():
        raise ConfigError(f"--resume {str(run_dir)!r}: not a run directory (no config.yaml)")
    latest = run_dir / "checkpoints" / LATEST_CHECKPOINT
    if not latest.is_file():
        raise ConfigError(f"--resume {str(run_dir)!r}: the run has no checkpoint yet "
                          f"(no checkpoints/{LATEST_CHECKPOINT})")
    saved = load_experiment(run_dir / "config.yaml")
    if config is not None:
        config = _as_config(config)
        a, b = _flat(saved.resolved_dict()), _flat(config.resolved_dict())
        differ = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k) and k != "training.total_timesteps")
        if differ:
            raise ConfigError(f"--resume continues a run with its saved config; these fields differ from it: "
                              f"{', '.join(differ)} (only training.total_timesteps may change)")
    else:
        config = saved
    checkpoint = _read_json(latest)
    if checkpoint["timesteps"] >= config.training.total_timesteps:
        raise ConfigError(f"--resume {str(run_dir)!r}: the checkpoint is at {checkpoint['timesteps']} timesteps, "
                          f"training.total_timesteps={config.training.total_timesteps}: nothing left to train "
                          "(raise it with --set training.total_timesteps=N)")
    write_text_atomic(run_dir / "config.yaml", experiment_yaml(config))
    info = _read_json(run_dir / "run_info.json")
    if (run_dir / "evaluation").exists():
        # A finished run being extended: its report stays, under the timestep it describes.
        (run_dir / "evaluation").rename(run_dir / f"evaluation-{info.get('timesteps', checkpoint['timesteps'])}")
    info["resumes"].append({"from_timesteps": checkpoint["timesteps"], "time": _now(), "git_commit": git_commit()})
    info["status"] = "running"
    write_json_atomic(run_dir / "run_info.json", info)
    return config, checkpoint


def _flat(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for k, v in data.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: data}


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


# --------------------------------------------------------------------------------------- plot
def plot_training_curve(history: dict, path: Path, title: str = "") -> None:
    """Mean episode reward (training) and the held-out mean-variance objective vs timesteps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_r, ax_o) = plt.subplots(1, 2, figsize=(11, 4))
    if history["rollouts"]:
        t, r = np.array(history["rollouts"]).T
        ax_r.plot(t, r, lw=1.2)
        # Early episodes are orders of magnitude worse; a symlog axis keeps the late ones readable.
        ax_r.set_yscale("symlog", linthresh=max(float(np.median(np.abs(r))), 1e-6))
    ax_r.set(xlabel="timesteps", ylabel="mean episode reward (symlog)", title="training episodes")
    if history["evaluations"]:
        t = [e["timesteps"] for e in history["evaluations"]]
        o = [e["objective"] for e in history["evaluations"]]
        ax_o.plot(t, o, marker="o", lw=1.2)
        best = history["best"]
        if best:
            ax_o.plot([best["timesteps"]], [best["objective"]], marker="*", ms=14, color="tab:red", label="best")
            ax_o.legend()
    ax_o.set(xlabel="timesteps", ylabel="mean-variance objective (USD)", title="held-out evaluation")
    for ax in (ax_r, ax_o):
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    save_figure_atomic(fig, path)
    plt.close(fig)
