"""Interruption and recovery of `hedgegym train`: exact resume, damaged checkpoints, Ctrl-C, dead runs.

The CLI cases run the installed ``hedgegym`` console script in a subprocess, with real signals.
Runs are tiny: a few hundred timesteps, one-day episodes, a handful of evaluation episodes.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from tiny_runs import ONE_DAY_RUN, PPO_SIZES

import hedgegym.train.training as training
from hedgegym.agents import sb3
from hedgegym.envs.config import ConfigError
from hedgegym.train.experiment import load_experiment
from hedgegym.train.io import CLAIM_FILE
from hedgegym.train.training import TrainingInterrupted, run_status, train

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
HEDGEGYM = shutil.which("hedgegym") or str(Path(sys.executable).with_name("hedgegym"))
# One-day episodes (24 steps), 4 envs, no baselines: each run is about a second of training.
SMALL = {
    **ONE_DAY_RUN,
    "training.checkpoint_every": 128,
    "evaluation.every": 0,
    "evaluation.final_episodes": 4,
    "evaluation.baselines": [],
}
SIZES = {
    "ppo": {**PPO_SIZES, "algorithm.hyperparameters.n_epochs": 1},
    "sac": {
        "algorithm.hyperparameters.learning_starts": 64,
        "algorithm.hyperparameters.batch_size": 32,
        "algorithm.hyperparameters.buffer_size": 2000,
    },
}


def small(name: str, **extra):
    algo = "ppo" if name.startswith("ppo") else "sac"
    return load_experiment(CONFIGS / f"{name}.yaml", {**SMALL, **SIZES[algo], **extra})


def sets(config_name: str, **extra) -> list[str]:
    algo = "ppo" if config_name.startswith("ppo") else "sac"
    out = []
    for key, value in {**SMALL, **SIZES[algo], **extra}.items():
        out += ["--set", f"{key}={json.dumps(value)}"]
    return out


def start_train(popen, out: Path, env: dict | None = None, **extra) -> subprocess.Popen:
    """``hedgegym train configs/ppo_spot.yaml --out OUT`` with the tests' small settings and ``extra``."""
    args = [HEDGEGYM, "train", CONFIGS / "ppo_spot.yaml", "--out", out, *sets("ppo_spot", **extra)]
    return popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def parameters(path: Path, algo: str) -> dict[str, np.ndarray]:
    model = sb3.load_model(algo, path)
    return {k: v.detach().numpy().copy() for k, v in model.policy.state_dict().items()}


def cli(*args, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([HEDGEGYM, *map(str, args)], capture_output=True, text=True, timeout=120, **kwargs)


def one_line(text: str) -> str:
    return " ".join(text.split())


# ------------------------------------------------------------------------------------ exact resume
@pytest.mark.parametrize("name", ["ppo_multi", "sac_multi"])
def test_resume_continues_bit_identically(name, tmp_path):
    algo = name.partition("_")[0]
    straight = train(small(name, **{"training.total_timesteps": 256}), out=tmp_path / "straight")
    half = train(small(name, **{"training.total_timesteps": 128}), out=tmp_path / "half")
    assert half.timesteps == 128
    if algo == "sac":  # the replay buffer is checkpointed by default for off-policy algorithms
        latest = json.loads((tmp_path / "half" / "checkpoints" / "latest.json").read_text())
        assert (tmp_path / "half" / "checkpoints" / latest["replay_buffer"]).is_file()
    resumed = train(small(name, **{"training.total_timesteps": 256}), resume=tmp_path / "half")
    assert resumed.resumed_from == 128 and resumed.timesteps == straight.timesteps == 256
    a, b = parameters(straight.model_path, algo), parameters(resumed.model_path, algo)
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


# ------------------------------------------------------------------------------------ damaged checkpoints
def _damage(kind: str, ckpt: Path, newest: str) -> None:
    if kind == "truncated zip":
        data = (ckpt / f"{newest}.zip").read_bytes()
        (ckpt / f"{newest}.zip").write_bytes(data[: len(data) // 2])
    elif kind == "bad latest.json":
        (ckpt / "latest.json").write_text("{not json")
        (ckpt / f"{newest}.json").write_text('{"timesteps": "many"}')
    elif kind == "missing file":
        (ckpt / f"{newest}_state.pkl").unlink()
    elif kind == "broken normaliser":
        (ckpt / f"{newest}_vecnormalize.pkl").write_bytes(b"\x80\x04garbage")


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A finished ppo_multi run with checkpoints at 128, 256 and 384 timesteps."""
    run = tmp_path_factory.mktemp("runs") / "run"
    train(small("ppo_multi", **{"training.total_timesteps": 384}), out=run)
    return run


@pytest.mark.parametrize("kind", ["truncated zip", "bad latest.json", "missing file", "broken normaliser"])
def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_good_one(kind, finished_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    ckpt = run / "checkpoints"
    assert sorted(p.name for p in ckpt.glob("step_*[0-9].zip"))[-1] == "step_000000000384.zip"
    _damage(kind, ckpt, "step_000000000384")
    notes = []
    entry = training._load_checkpoint(small("ppo_multi", **{"training.total_timesteps": 512}), run, notes.append)
    assert entry["timesteps"] == 256
    (note,) = notes
    assert "damaged" in note or "unreadable" in note
    assert note.endswith("resuming from the checkpoint at 256 timesteps") and "\n" not in note
    # Nothing usable at all: one clear error, no traceback.
    for path in ckpt.glob("step_*_state.pkl"):
        path.unlink()
    with pytest.raises(ConfigError, match="no usable checkpoint"):
        training._load_checkpoint(small("ppo_multi"), run, notes.append)


def test_cli_resume_of_a_truncated_checkpoint_says_so_and_continues(finished_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    _damage("truncated zip", run / "checkpoints", "step_000000000384")
    res = cli("train", "--resume", run, "--set", "training.total_timesteps=512")
    assert res.returncode == 0, res.stdout + res.stderr
    out = one_line(res.stdout + res.stderr)
    assert "step 384 is damaged (" in out and "resuming from the checkpoint at 256 timesteps" in out
    assert "Traceback" not in res.stdout + res.stderr
    info = json.loads((run / "run_info.json").read_text())
    assert info["status"] == "finished" and info["timesteps"] == 512
    assert [r["from_timesteps"] for r in info["resumes"]] == [256]


def test_resume_when_latest_json_names_a_missing_checkpoint_falls_back(finished_run, tmp_path):
    """latest.json parses and says 384 timesteps (= total: "nothing left to train"), but its files are
    gone: the resume trusts only checkpoints whose files exist, so it redoes 256 -> 384."""
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    ckpt = run / "checkpoints"
    assert json.loads((ckpt / "latest.json").read_text())["model"] == "step_000000000384.zip"
    (ckpt / "step_000000000384.zip").unlink()
    notes = []
    resumed = train(resume=run, notify=notes.append)
    assert resumed.resumed_from == 256 and resumed.timesteps == 384 and not resumed.interrupted
    assert any(
        "step 384 is damaged (FileNotFoundError" in n and n.endswith("resuming from the checkpoint at 256 timesteps")
        for n in notes
    ), notes
    assert (run / "evaluation" / "report.md").is_file() and (run / "evaluation-384" / "report.md").is_file()


def test_resume_below_the_checkpoints_timesteps_is_refused(finished_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    before = sorted(p.name for p in run.rglob("*"))
    res = cli("train", "--resume", run, "--set", "training.total_timesteps=200")
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stdout + res.stderr
    (line,) = res.stderr.splitlines()
    assert line == (
        f"error: --resume {str(run)!r}: training.total_timesteps=200 is below the 384 timesteps of "
        "its newest checkpoint; a run cannot be trained back: give at least 384"
    )
    assert sorted(p.name for p in run.rglob("*")) == before  # nothing touched


# ------------------------------------------------------------------------------------ Ctrl-C
def test_ctrl_c_before_the_first_checkpoint_removes_the_run(tmp_path, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(sb3, "build_model", interrupted)
    with pytest.raises(TrainingInterrupted, match="interrupted before the first checkpoint: removed"):
        train(small("ppo_spot", **{"training.total_timesteps": 128}), out=tmp_path / "run")
    assert not (tmp_path / "run").exists()
    monkeypatch.undo()
    # ... so the same --out works at once.
    assert not train(small("ppo_spot", **{"training.total_timesteps": 128}), out=tmp_path / "run").interrupted


def _wait_for(predicate, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert proc.poll() is None, proc.communicate(timeout=5)
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_cli_ctrl_c_in_the_first_moments_exits_130_with_one_line(tmp_path, popen):
    out = tmp_path / "run"
    proc = start_train(popen, out, **{"training.total_timesteps": 100_000})
    _wait_for(lambda: (out / "config.yaml").is_file(), proc)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stdout + stderr
    assert "Traceback" not in stdout + stderr
    text = one_line(stdout)
    if "removed" in text:  # the signal came during the setup: nothing kept, the folder is reusable
        assert "interrupted before the first checkpoint: removed" in text and not out.exists()
    else:  # it came once training ran: a checkpoint was kept
        assert f"continue with `hedgegym train --resume {out}`" in text
        assert json.loads((out / "run_info.json").read_text())["status"] == "interrupted"
        assert (out / "checkpoints" / "latest.json").is_file()


def test_cli_ctrl_c_during_a_cold_numba_compile_exits_130(tmp_path, popen):
    """An empty numba cache: the first seconds compile the kernel (the reset in the setup, the step at
    the first env step), inside llvmlite's callbacks, which swallow a KeyboardInterrupt. The Ctrl-C is
    still honoured at once: exit 130, and the run is either removed or resumable."""
    out = tmp_path / "run"
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "numba-cache")}  # new, so cold
    started = time.monotonic()
    proc = start_train(popen, out, env=env, **{"training.total_timesteps": 100_000})
    _wait_for(lambda: (out / CLAIM_FILE).is_file(), proc)
    time.sleep(2.0)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stdout + stderr
    assert time.monotonic() - started < 120
    if "removed" in one_line(stdout):  # during the setup: nothing kept, the folder is reusable
        assert "interrupted before the first checkpoint: removed" in one_line(stdout) and not out.exists()
    else:  # during the first step's compile: stopped after that step, with a checkpoint
        assert f"continue with `hedgegym train --resume {out}`" in one_line(stdout)
        assert json.loads((out / "checkpoints" / "latest.json").read_text())["timesteps"] <= 4


def test_cli_ctrl_c_during_the_final_evaluation_exits_130_and_resume_finishes_it(tmp_path, popen):
    out = tmp_path / "run"
    # A long final evaluation (2,000 episodes x the agent and a baseline) leaves time to interrupt it.
    proc = start_train(
        popen,
        out,
        **{"training.total_timesteps": 128, "evaluation.final_episodes": 2000, "evaluation.baselines": ["delta"]},
    )

    def evaluating() -> bool:
        try:
            return json.loads((out / "run_info.json").read_text())["status"] == "evaluating"
        except (OSError, ValueError):
            return False

    _wait_for(evaluating, proc)
    time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stdout + stderr
    assert f"final evaluation was interrupted: finish it with `hedgegym train --resume {out}`" in one_line(stdout)
    assert json.loads((out / "run_info.json").read_text())["status"] == "evaluation interrupted"
    assert not (out / "evaluation").exists()
    # The resume (the library call behind `hedgegym train --resume`) only finishes the evaluation.
    finished = train(resume=out)
    assert finished.timesteps == finished.resumed_from == 128 and not finished.interrupted
    assert (out / "evaluation" / "report.md").is_file()
    info = json.loads((out / "run_info.json").read_text())
    assert info["status"] == "finished" and info["timesteps"] == 128
    # Now there is nothing left to do.
    with pytest.raises(ConfigError, match="nothing left to train"):
        train(resume=out)


# ------------------------------------------------------------------------------------ live or dead
def test_a_killed_run_is_dead_a_running_one_live(tmp_path, popen):
    out = tmp_path / "run"
    proc = start_train(popen, out, **{"training.total_timesteps": 10_000_000})
    try:
        _wait_for(lambda: (out / "checkpoints" / "latest.json").is_file(), proc)
        assert run_status(out) == "live"
        info = json.loads((out / "run_info.json").read_text())
        assert info["pid"] == proc.pid and info["status"] == "running" and info["heartbeat"]
        res = cli("train", "--resume", out)
        assert res.returncode == 2 and f"the run is live (pid {proc.pid}" in one_line(res.stdout + res.stderr)
    finally:
        proc.kill()
        proc.communicate()
    assert json.loads((out / "run_info.json").read_text())["status"] == "running"  # what a kill leaves
    assert run_status(out) == "dead"
    latest = json.loads((out / "checkpoints" / "latest.json").read_text())["timesteps"]
    notes = []
    resumed = train(
        load_experiment(out / "config.yaml", {"training.total_timesteps": latest + 128}),
        resume=out,
        notify=notes.append,
    )
    assert resumed.resumed_from == latest and not resumed.interrupted
    assert any(f"is gone; resuming from the checkpoint at {latest:,} timesteps" in n for n in notes), notes
    assert run_status(out) == "finished"
