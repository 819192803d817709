"""`hedgegym sweep` and `hedgegym matrix` on a local Ray, end to end from the console script.

Ray costs seconds to start, so the cases are few and the budgets tiny (one-day episodes, 4 envs,
about a thousand timesteps per trial, a handful of evaluation episodes): a 2-trial sweep on 2
workers during which one trial's worker is killed (the trial resumes from its checkpoint, the sweep
finishes, its best config trains as is and repeats the trial), a sweep interrupted by Ctrl-C and
resumed (the finished trial is not redone) followed by a 2-seed study, and a matrix that equals
`hedgegym evaluate` bit for bit. Numbers are checked against the trials' own files and scipy.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("ray.tune")
pytest.importorskip("optuna")

from scipy import stats  # noqa: E402
from tiny_runs import ONE_DAY_RUN, PPO_SIZES  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "configs" / "ppo_spot.yaml"
SPACE = ROOT / "configs" / "spaces" / "ppo_spot.yaml"
HEDGEGYM = shutil.which("hedgegym") or str(Path(sys.executable).with_name("hedgegym"))
# ppo_spot at a tiny budget: one-day episodes of the one-call book of the recovery tests, 4 envs,
# a checkpoint and a held-out evaluation (4 episodes) every 256 timesteps, 8 final episodes against delta.
SMALL = {
    **ONE_DAY_RUN,
    **PPO_SIZES,
    "training.total_timesteps": 1024,
    "training.checkpoint_every": 256,
    "evaluation.every": 256,
    "evaluation.final_episodes": 8,
    "evaluation.baselines": ["delta"],
}
LIMIT = 420  # seconds a Ray command may take here (Ray's start alone is 5-20 s on a busy 2-core machine)


def sets(**extra) -> list[str]:
    out = []
    for key, value in {**SMALL, **extra}.items():
        out += ["--set", f"{key}={json.dumps(value)}"]
    return out


def run(*args, timeout: float = LIMIT, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([HEDGEGYM, *map(str, args)], capture_output=True, text=True, timeout=timeout, **kwargs)


def read(path: Path):
    return json.loads(Path(path).read_text())


def wait_for(condition, what: str, proc: subprocess.Popen, timeout: float = LIMIT):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the sweep ended (rc {proc.returncode}) before {what}:\n{out[-3000:]}\n{err[-3000:]}")
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


def leaderboard_rows(sweep: Path) -> list[dict]:
    with open(sweep / "leaderboard.csv") as f:
        return list(csv.DictReader(f))


def check_leaderboard(sweep: Path, trials: int) -> list[dict]:
    """The leaderboard against the trials' own files: every number is the one its run wrote."""
    rows = leaderboard_rows(sweep)
    assert len(rows) == trials
    assert [int(r["rank"]) for r in rows] == list(range(1, trials + 1))
    finished = [r for r in rows if r["status"] == "finished"]
    assert finished and {r["status"] for r in rows} <= {"finished", "stopped"}
    for row in rows:
        run_dir = sweep / row["run_dir"]
        record = read(sweep / "trials" / f"{row['trial']}.json")
        for key, value in record["params"].items():
            assert json.loads(row[key]) == value if isinstance(value, list) else float(row[key]) == value
        history = read(run_dir / "history.json")
        assert float(row["held_out_objective"]) == max(e["objective"] for e in history["evaluations"])
        if row["status"] == "finished":
            metrics = read(run_dir / "evaluation" / "metrics.json")
            paired = metrics["paired_differences"]["ppo_spot"]["mean_variance"]
            assert float(row["vs_best_baseline"]) == paired["value"]
            assert [float(row["vs_low"]), float(row["vs_high"])] == paired["ci"]
            assert float(row["final_objective"]) == metrics["objective"]["values"]["ppo_spot"]
            assert row["reference"] == metrics["reference"] == "delta@spot"
    # Finished trials first, best paired difference first.
    values = [float(r["vs_best_baseline"]) for r in finished]
    assert values == sorted(values, reverse=True) and rows[: len(finished)] == finished
    return rows


def test_sweep_on_two_workers_survives_a_killed_worker_and_its_best_config_trains(tmp_path, popen):
    sweep = tmp_path / "sweep"
    args = [HEDGEGYM, "sweep", CONFIG, "--space", SPACE, "--trials", "2", "--workers", "2", "--out", sweep]
    proc = popen(
        [*map(str, args), *sets()],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    # Kill the worker training the first trial to write a checkpoint, mid-trial (SIGKILL: no clean-up).
    latest = wait_for(lambda: next(iter(sweep.glob("trials/*/checkpoints/latest.json")), None), "a checkpoint", proc)
    victim = latest.parent.parent
    info, checkpoint = read(victim / "run_info.json"), read(latest)["timesteps"]
    assert info["status"] == "running" and checkpoint < 1024
    os.kill(info["pid"], signal.SIGKILL)
    out, err = proc.communicate(timeout=LIMIT)
    assert proc.returncode == 0, err[-3000:]
    assert f"trial {victim.name}: its worker failed; retrying from the run's newest checkpoint" in out

    # The trial was retried in a new worker and resumed from its checkpoint; the sweep finished.
    resumed = read(victim / "run_info.json")
    assert resumed["pid"] != info["pid"]
    # From the newest checkpoint at its death: the one seen before the kill, or one written just after.
    (resume,) = resumed["resumes"]
    assert checkpoint <= resume["from_timesteps"] < 1024
    assert read(sweep / "trials" / f"{victim.name}.json")["attempts"] == 2
    rows = check_leaderboard(sweep, 2)
    assert read(sweep / "sweep.json")["status"] == "finished"
    assert "| rank | trial | status |" in (sweep / "leaderboard.md").read_text()

    # The best config is the sweep's config with the best trial's values, and trains as is.
    best = rows[0]
    text = (sweep / "best_config.yaml").read_text()
    assert text.startswith(f"# The best trial ({best['trial']}) of the sweep ")
    again = run("train", sweep / "best_config.yaml", "--out", tmp_path / "again", timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    # Same config and seed: the same run, to the last digit of its report (the model's path aside).
    mine = read(tmp_path / "again" / "evaluation" / "metrics.json")
    trial = read(sweep / best["run_dir"] / "evaluation" / "metrics.json")
    for report in (mine, trial):
        for entry in report["policies"].values():
            entry.pop("source")
    assert mine == trial


def test_an_interrupted_sweep_resumes_without_redoing_finished_trials_then_studies_seeds(tmp_path, popen):
    sweep = tmp_path / "sweep"
    args = [HEDGEGYM, "sweep", CONFIG, "--space", SPACE, "--trials", "2", "--seeds", "2", "--workers", "1"]
    proc = popen(
        [*map(str, args), "--out", str(sweep), *sets()], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )

    def first_finished():
        for path in sweep.glob("trials/*.json"):
            if read(path).get("status") == "finished":
                return path
        return None

    record = wait_for(first_finished, "a finished trial", proc)
    time.sleep(1.0)
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C in a terminal: the whole foreground group
    out, err = proc.communicate(timeout=LIMIT)
    assert proc.returncode == 130, (out[-2000:], err[-2000:])
    assert f"continue with `hedgegym sweep --resume {sweep}`" in out
    assert read(sweep / "sweep.json")["status"] == "interrupted"
    done = sweep / "trials" / record.stem
    before = {p.name: p.read_bytes() for p in (done / "run_info.json", done / "evaluation" / "metrics.json")}

    res = run("sweep", "--resume", sweep, "--workers", "2")
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"trial {record.stem} started" not in res.stdout  # the finished trial is not run again
    after = {p.name: p.read_bytes() for p in (done / "run_info.json", done / "evaluation" / "metrics.json")}
    assert after == before and read(record)["attempts"] == 1
    check_leaderboard(sweep, 2)

    # The seed study: the best config on the two seeds after the winner's.
    study = read(sweep / "seeds.json")
    assert [r["seed"] for r in study["seeds"]] == [1, 2]
    diffs = []
    for row in study["seeds"]:
        metrics = read(sweep / row["run_dir"] / "evaluation" / "metrics.json")
        config = (sweep / row["run_dir"] / "config.yaml").read_text()
        assert f"seed: {row['seed']}\n" in config
        diffs.append(metrics["paired_differences"]["ppo_spot"]["mean_variance"]["value"])
        assert row["vs_best_baseline"] == diffs[-1] and row["wins"] == (diffs[-1] > 0)
    summary = study["across_seeds"]
    assert summary["mean"] == pytest.approx(sum(diffs) / 2, rel=1e-12)
    if diffs[0] == diffs[1]:
        # Both seeds kept the same policy (the paired rule can keep the untrained hedger): no spread.
        assert summary["low"] == summary["high"] == pytest.approx(diffs[0], rel=1e-12)
    else:
        low, high = stats.t.interval(0.95, 1, loc=sum(diffs) / 2, scale=stats.sem(diffs))
        assert (summary["low"], summary["high"]) == (pytest.approx(low, rel=1e-9), pytest.approx(high, rel=1e-9))
    assert summary["wins"] == sum(d > 0 for d in diffs)
    assert "across 2 seeds" in res.stdout and read(sweep / "sweep.json")["status"] == "finished"
    # A finished sweep has nothing left to resume: one line, exit 2.
    again = run("sweep", "--resume", sweep, timeout=120)
    assert again.returncode == 2 and again.stderr.startswith("error: --resume") and "is finished" in again.stderr


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    """A tiny trained ppo_spot model (library call: no Ray)."""
    from hedgegym.train.experiment import load_experiment
    from hedgegym.train.training import train

    out = tmp_path_factory.mktemp("model") / "run"
    cfg = load_experiment(CONFIG, {**SMALL, "training.total_timesteps": 256, "evaluation.every": 0})
    return train(cfg, out=out).model_path


def test_matrix_equals_local_evaluation_bit_for_bit(model, tmp_path):
    common = ["--set", "episode.horizon_days=1", "--baselines", "delta,no_hedge", "--policy", model]
    common += ["--episodes", "300", "--seed", "11"]
    scenarios = ["default", "short-gamma-crash"]
    matrix_args = [arg for s in scenarios for arg in ("--scenario", s)]
    res = run("matrix", *matrix_args, *common, "--workers", "2", "--out", tmp_path / "ray")
    assert res.returncode == 0, res.stderr[-3000:]
    info = read(tmp_path / "ray" / "run_info.json")
    assert info["mode"] == "ray" and info["tasks"] == 2 * 3 + 2  # a block per scenario x policy, a bootstrap each
    for scenario in scenarios:
        alone = run("evaluate", "--scenario", scenario, *common, "--out", tmp_path / scenario, timeout=300)
        assert alone.returncode == 0, alone.stderr[-3000:]
        for name in ("metrics.json", "episodes.csv", "config.yaml"):
            mine = (tmp_path / "ray" / scenario / name).read_bytes()
            assert mine == (tmp_path / scenario / name).read_bytes(), (scenario, name)
    matrix = read(tmp_path / "ray" / "matrix.json")
    for scenario in scenarios:
        metrics = read(tmp_path / scenario / "metrics.json")
        assert matrix["scenarios"][scenario]["reference"] == metrics["reference"]
        for policy, entry in matrix["scenarios"][scenario]["policies"].items():
            assert entry["objective"] == metrics["objective"]["values"][policy]
    assert "| policy | default | short-gamma-crash |" in (tmp_path / "ray" / "matrix.md").read_text()


def test_matrix_seed_blocks_merge_to_the_single_process_run(model):
    """Several seed blocks per policy (batches of 64 episodes, blocks of 128): merged, the same numbers
    as one ``evaluate`` call with the same batches, to the bit (library call; Ray in this process)."""
    import numpy as np

    from hedgegym.envs.config import resolve_scenario
    from hedgegym.train.evaluate import evaluate
    from hedgegym.train.matrix import evaluate_matrix
    from hedgegym.train.policies import resolve_policies, with_policy_interface

    policies = [str(model), f"{__file__}:lean_hedger"]
    configs = [resolve_scenario(name, None, {"episode.horizon_days": 1}) for name in ("default", "zero-dte")]
    result = evaluate_matrix(configs, policies, "delta", 300, 5, block=128, batch_size=64, workers=2)
    assert result.tasks == 2 * 3 * 3 + 2  # 3 blocks (128, 128, 44) per scenario x policy, a bootstrap each
    local = evaluate_matrix(configs, policies, "delta", 300, 5, block=128, batch_size=64, local=True)
    assert json.dumps(local.matrix_json()) == json.dumps(result.matrix_json())
    for config in configs:
        config, notes = with_policy_interface(config, policies)
        resolved = resolve_policies(["delta@spot", *policies], config)
        alone = evaluate({n: p for n, (p, _) in resolved.items()}, config, episodes=300, seed=5, batch_size=64)
        alone.notes = notes
        mine = result.results[config.name]
        assert json.dumps(mine.metrics_json()) == json.dumps(alone.metrics_json())
        assert json.dumps(local.results[config.name].metrics_json()) == json.dumps(alone.metrics_json())
        assert mine.episodes_csv() == alone.episodes_csv()
        for name in alone.policies:
            for key, values in alone.samples[name].items():
                np.testing.assert_array_equal(mine.samples[name][key], values, err_msg=f"{name} {key}")


def lean_hedger(obs, market):
    """A callable policy (module:function from the driver's folder): hedge half the net delta."""
    import numpy as np

    return np.clip(-0.5 * obs[:, :1], -1.0, 1.0)


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--trials", "0"], ["error: --trials 0: must be an integer in [1, 10,000]"]),
        (["--address", "127.0.0.1:1"], ["error: --address '127.0.0.1:1': cannot connect to a Ray cluster there"]),
        (
            ["--space", "bad.yaml"],
            [
                "error: invalid search space in bad.yaml: ",
                "ashaa: unknown field",  # a field the space does not have
                "loguniform: low must be > 0 (got [0.0, 0.001])",  # a bad distribution
            ],
        ),
    ],
)
def test_bad_sweep_input_is_one_line_and_leaves_no_sweep_directory(args, expected, tmp_path):
    (tmp_path / "bad.yaml").write_text(
        "parameters:\n  algorithm.hyperparameters.learning_rate: {loguniform: [0, 1.0e-3]}\nashaa: {}\n"
    )
    if "--space" not in args:
        args = [*args, "--space", str(SPACE)]
    res = run("sweep", CONFIG, *args, "--out", tmp_path / "sweep", timeout=120, cwd=tmp_path)
    assert res.returncode == 2, res.stderr[-2000:]
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(expected[0]), lines
    assert all(part in lines[0] for part in expected), lines
    assert not (tmp_path / "sweep").exists()
