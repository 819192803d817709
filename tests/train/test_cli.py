"""The `hedgegym` console script as a user runs it: bad input, run directories, piped output (issue 11).

Every test runs the installed console script in a subprocess, so what is checked is what a shell
sees: the exit status, the exact lines on stderr and stdout, the files left behind.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from hedgegym.train.io import CLAIM_FILE, RunDirError, RunDirTaken, claim_dir, new_run_dir, release_dir

HEDGEGYM = shutil.which("hedgegym") or pytest.skip(
    "the hedgegym console script is not installed", allow_module_level=True
)
README = Path(__file__).resolve().parents[2] / "README.md"
CONFIGS = Path(__file__).resolve().parents[2] / "configs"
# A 6-hour episode (6 steps) and two paths: each run costs its start-up and little else.
SHORT = ("--set", "episode.horizon_days=0.25")


def hedgegym(*args: str, cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run the console script with stdout and stderr piped (not a terminal), as in a shell pipeline."""
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    return subprocess.run([HEDGEGYM, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout)


def one_line_error(res: subprocess.CompletedProcess) -> str:
    """The single error line of a failed run (exit 2, nothing else on stderr, no traceback)."""
    assert res.returncode == 2, (res.returncode, res.stdout, res.stderr)
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    assert "Traceback" not in res.stdout + res.stderr
    return lines[0]


# ------------------------------------------------------------------------------ --out that cannot be a run
def _bad_outs(tmp_path: Path) -> dict[str, Path]:
    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder")
    outs = {"a file": a_file, "under /dev/null": Path("/dev/null/x"), "under a file": a_file / "run"}
    if Path("/proc").is_dir():
        outs["unwritable (/proc)"] = Path("/proc/hedgegym-test/run")
    if os.geteuid() != 0:  # root writes into a read-only folder anyway
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o555)
        outs["unwritable folder"] = locked / "run"
    return outs


# Each command with enough work that a late check would blow the timeout: the check comes first.
HEAVY = {
    "simulate": ["simulate", "--paths", "1000000"],
    "evaluate": ["evaluate", "--episodes", "1000000"],
    "train": ["train", str(CONFIGS / "ppo_spot.yaml")],
}


@pytest.mark.parametrize("command", sorted(HEAVY))
def test_out_that_cannot_be_a_run_directory_stops_before_any_work(command, tmp_path):
    for what, out in _bad_outs(tmp_path).items():
        res = hedgegym(*HEAVY[command], "--out", str(out), timeout=60)
        line = one_line_error(res)
        assert "--out" in line and (str(out) in line or str(out.parent) in line), (what, line)
        assert res.stdout == "", (what, res.stdout)
    assert (tmp_path / "a_file").read_text() == "not a folder"


def test_out_that_holds_an_earlier_run_is_refused(tmp_path):
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "summary.json").write_text("{}")
    line = one_line_error(hedgegym(*HEAVY["evaluate"], "--out", str(tmp_path / "old"), timeout=60))
    assert "already exists and is not empty" in line
    assert (tmp_path / "old" / "summary.json").read_text() == "{}"


def test_a_run_stopped_by_bad_input_leaves_its_out_reusable(tmp_path):
    out = tmp_path / "run"
    one_line_error(hedgegym("evaluate", *SHORT, "--episodes", "1", "--baselines", "nope", "--out", str(out)))
    assert not out.exists()
    res = hedgegym("simulate", *SHORT, "--paths", "2", "--out", str(out))
    assert res.returncode == 0, res.stderr
    assert (out / "summary.json").is_file()


def _interrupt_once_claimed(popen, args: list[str], out: Path, delay: float, env: dict | None = None):
    """Start ``hedgegym ARGS --out OUT``, send SIGINT ``delay`` s after it claims OUT; its exit status and output."""
    proc = popen(
        [HEDGEGYM, *args, "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    deadline = time.monotonic() + 60
    while not (out / CLAIM_FILE).exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert (out / CLAIM_FILE).exists(), proc.communicate(timeout=5)
    time.sleep(delay)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)  # a TimeoutExpired fails the test, and popen kills the child
    return proc.returncode, stdout + stderr


def test_ctrl_c_before_the_first_output_releases_the_out(tmp_path, popen):
    """Claimed, then interrupted before writing anything: exit 130 and the folder is gone, so the
    same --out works next time (an unused claim is dropped at exit)."""
    out = tmp_path / "run"
    code, output = _interrupt_once_claimed(popen, HEAVY["evaluate"], out, delay=0.0)
    assert code == 130, output
    assert not out.exists()


# The compile takes a few seconds after the claim; where in it a signal is swallowed depends on the machine.
@pytest.mark.parametrize("delay", [2.0, 3.0])
def test_ctrl_c_during_a_cold_numba_compile_exits_130(delay, tmp_path, popen):
    """With an empty numba cache the first seconds are spent compiling the kernel, inside llvmlite,
    whose ctypes callback swallowed the KeyboardInterrupt: the million-episode run then went on for
    hours. The request is kept and honoured at the first step after the compile."""
    out = tmp_path / "run"
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "numba-cache")}  # new, so cold
    started = time.monotonic()
    # (A signal swallowed by the callback prints Python's "Exception ignored ..." report on stderr.)
    code, output = _interrupt_once_claimed(popen, HEAVY["evaluate"], out, delay=delay, env=env)
    assert code == 130, output
    assert not out.exists()
    assert time.monotonic() - started < 120


# A policy whose first call delivers Ctrl-C inside a ctypes callback, where llvmlite's compile
# callbacks receive it: the KeyboardInterrupt is swallowed there ("Exception ignored on calling
# ctypes callback function") and only the recorded request can stop the run.
_SWALLOWED_CTRL_C = """
import ctypes, os, signal
import numpy as np

_CALLBACK = ctypes.CFUNCTYPE(None)(lambda: os.kill(os.getpid(), signal.SIGINT))

def policy(obs, market):
    if not getattr(policy, "sent", False):
        policy.sent = True
        _CALLBACK()
    return np.zeros((len(obs), 1))
"""


def test_ctrl_c_swallowed_by_a_c_callback_still_stops_the_run(tmp_path):
    """The cold-compile case made deterministic: the signal is lost to a C callback, the run stops anyway."""
    (tmp_path / "swallow.py").write_text(_SWALLOWED_CTRL_C)
    out = tmp_path / "run"
    res = hedgegym(
        "evaluate",
        "--episodes",
        "1000000",
        "--set",
        "agent.venues=[spot]",
        "--baselines",
        "none",
        "--policy",
        "swallow:policy",
        "--out",
        str(out),
        cwd=tmp_path,
        timeout=120,
    )
    assert res.returncode == 130, res.stdout + res.stderr
    assert "Exception ignored" in res.stderr and "KeyboardInterrupt" in res.stderr  # it was swallowed
    assert not out.exists()


# ------------------------------------------------------------------------------ claiming a run directory
def test_two_runs_on_the_same_empty_out_at_once_one_wins(tmp_path, popen):
    out = tmp_path / "shared"
    out.mkdir()
    cmd = [HEDGEGYM, "simulate", *SHORT, "--paths", "2", "--out", str(out)]
    procs = {
        seed: popen([*cmd, "--seed", str(seed)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for seed in (11, 22)
    }
    results = []
    for seed, proc in procs.items():
        _, err = proc.communicate(timeout=120)
        results.append((seed, proc.returncode, err))
    winners = [r for r in results if r[1] == 0]
    losers = [r for r in results if r[1] != 0]
    assert len(winners) == 1 and len(losers) == 1, results
    _, code, err = losers[0]
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "claimed by another run" in err or "already exists and is not empty" in err
    # The outputs are the winner's alone: nothing mixed in from the loser's seed.
    summary = json.loads((out / "summary.json").read_text())
    assert summary["seed"] == winners[0][0]
    assert sorted(p.name for p in out.iterdir()) == sorted([CLAIM_FILE, "summary.json"])


def test_claim_is_atomic_under_threads(tmp_path):
    """Many claimers released together on one empty folder: exactly one gets it, the rest RunDirTaken."""
    out = tmp_path / "contested"
    out.mkdir()
    n = 16
    barrier = threading.Barrier(n)
    outcomes: list[str] = []

    def claim() -> None:
        barrier.wait()
        try:
            claim_dir(out)
            outcomes.append("won")
        except RunDirTaken:
            outcomes.append("taken")

    threads = [threading.Thread(target=claim) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["taken"] * (n - 1) + ["won"]
    release_dir(out)


def test_claim_file_of_another_run_makes_the_folder_taken(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / CLAIM_FILE).write_text("{}")
    with pytest.raises(RunDirTaken, match="already exists and is not empty"):
        claim_dir(tmp_path / "x")
    with pytest.raises(RunDirError, match="is not a directory"):
        claim_dir(tmp_path / "x" / CLAIM_FILE)


def test_new_run_dirs_never_collide_and_names_are_one_path_component(tmp_path):
    first = new_run_dir(tmp_path, "evaluate-crash/2020 v2")
    second = new_run_dir(tmp_path, "evaluate-crash/2020 v2")
    assert first != second and first.parent == tmp_path == second.parent
    assert first.name.startswith("evaluate-crash_2020_v2-") and second.name == f"{first.name}-1"
    assert new_run_dir(tmp_path, "../..").parent == tmp_path


def test_scenario_name_with_a_slash_makes_a_valid_default_run_directory(tmp_path):
    res = hedgegym(
        "evaluate", *SHORT, "--set", "name=crash/2020 (v2)", "--episodes", "2", "--baselines", "delta", cwd=tmp_path
    )
    assert res.returncode == 0, res.stderr
    (run,) = (tmp_path / "runs").iterdir()
    assert re.fullmatch(r"evaluate-crash_2020_v2-\d{8}-\d{6}", run.name), run.name
    assert (run / "metrics.json").is_file()


# ------------------------------------------------------------------------------ limits on seeds and sizes
@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("simulate", "--seed", str(2**63 - 1), "--paths", "2"), "[0, 9223372036854775806]"),
        (("evaluate", "--seed", str(2**63), "--episodes", "10"), "[0, 9223372036854775798]"),
        (("evaluate", "--seed", str(2**64 + 5)), "--seed"),
        (("simulate", "--seed", "-1"), "--seed"),
        (("evaluate", "--episodes", "1000000000"), "must be in [1, 1,000,000]"),
        (("simulate", "--paths", "1000000000"), "must be in [1, 1,000,000]"),
        (("simulate", "--paths", "0"), "--paths"),
        (("evaluate", "--episodes", "-3"), "--episodes"),
    ],
)
def test_seed_and_size_limits_are_one_line_before_any_work(args, expected):
    line = one_line_error(hedgegym(*args, timeout=60))
    assert expected in line, line


@pytest.mark.parametrize(
    ("command", "count", "what"),
    [
        ("simulate", ["--paths", "20"], "paths"),
        ("evaluate", ["--episodes", "20", "--baselines", "delta"], "episodes"),
    ],
)
def test_the_largest_seed_readme_allows_runs_and_the_next_is_refused(command, count, what, tmp_path):
    """README: --seed in [0, 2**63 - N]; the last episode then runs on seed 2**63 - 1, the largest int64."""
    largest = 2**63 - 20
    res = hedgegym(command, *count, "--seed", str(largest), "--out", str(tmp_path / "run"))
    assert res.returncode == 0 and "Traceback" not in res.stderr, res.stdout + res.stderr
    line = one_line_error(hedgegym(command, *count, "--seed", str(largest + 1)))
    assert line == (
        f"error: --seed {largest + 1}: must be in [0, 2**63 - {what}] = [0, {largest}] so that the "
        f"seeds seed + j of all 20 {what} fit in 64-bit integers"
    )


def test_plain_simulate_writes_nothing(tmp_path):
    """README: simulate writes files only with --out or --plot (here: the largest seed, the reviewer's case)."""
    res = hedgegym("simulate", "--paths", "20", "--seed", str(2**63 - 20), cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "volatility amplification" in res.stdout
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            b"market:\n  sigma: 0.5\n  sigma: 0.7\n",
            "duplicate key 'sigma' at line 3 (first at line 2): a repeated key would replace the first; merge them",
        ),
        (
            b"market:\n  sigma: 0.5\nepisode:\n  horizon_days: 1\nmarket:\n  kappa: 1\n",
            "duplicate key 'market' at line 5 (first at line 1)",
        ),
        (
            b"name: default\nmarket:\n  sigma: 0.5 # caf\xe9\n",
            "is not UTF-8 text: byte 0xe9 at line 3 cannot be decoded (save the file as UTF-8)",
        ),
    ],
)
@pytest.mark.parametrize("command", ["simulate", "train"])
def test_duplicate_keys_and_invalid_utf8_are_one_line(command, text, expected, tmp_path):
    (tmp_path / "bad.yaml").write_bytes(text)
    args = ["simulate", "--config", "bad.yaml"] if command == "simulate" else ["train", "bad.yaml"]
    line = one_line_error(hedgegym(*args, cwd=tmp_path))
    assert line.startswith("error: bad.yaml") and expected in line, line


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["simulate", "--config", "/etc"], "config file '/etc' is a directory, not a YAML file"),
        (["evaluate", "--config", "."], "config file '.' is a directory, not a YAML file"),
        (["train", "."], "config file '.' is a directory, not a YAML file"),
        (["simulate", "--config", "/dev/null"], "config file '/dev/null' is not a regular file"),
        (["train", "/dev/null"], "config file '/dev/null' is not a regular file"),
        (["simulate", "--config", "missing.yaml"], "config file 'missing.yaml' does not exist"),
    ],
)
def test_a_config_that_is_not_a_file_says_what_it_is(args, expected, tmp_path):
    assert one_line_error(hedgegym(*args, cwd=tmp_path)) == f"error: {expected}"


# ------------------------------------------------------------------------------ one line, exit 2
@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("simulate", "--bogus"), "No such option: --bogus"),
        (("simulate", "--set", "foo"), "expected key=value"),
        (("simulate", "--scenario", "atlantis"), "unknown scenario 'atlantis'"),
        (("simulate", "--set", "market.sigma=-1", "--set", "episode.dt_hours=-1"), "market.sigma"),
        (("evaluate", "--baselines", "delta,gamma_scalp"), "unknown baseline or policy 'gamma_scalp'"),
        (("evaluate", "--set", "agent.venues=[spot]", "--baselines", "delta@perp"), "agent.venues = ['spot']"),
        (("train",), "give an experiment config"),
        (("train", "missing.yaml"), "missing.yaml"),
        (
            ("train", str(CONFIGS / "ppo_spot.yaml"), "--set", "algorithm.hyperparameters.ent_coef=-5"),
            "ent_coef must be >= 0 (a negative entropy bonus rewards a collapsing policy) (got -5.0)",
        ),
        (
            ("train", str(CONFIGS / "ppo_spot.yaml"), "--set", "algorithm.hyperparameters.batch_size=1000"),
            "batch_size=1000 must divide",
        ),
        (("nosuchcommand",), "No such command"),
    ],
)
def test_every_error_is_one_line_with_exit_status_2(args, expected, tmp_path):
    line = one_line_error(hedgegym(*args, cwd=tmp_path, timeout=60))
    assert expected in line, line
    assert not (tmp_path / "runs").exists()


def test_a_config_error_on_several_fields_is_still_one_line():
    line = one_line_error(hedgegym("simulate", "--set", "market.sigma=-1", "--set", "episode.dt_hours=-1"))
    assert "market.sigma" in line and "episode.dt_hours" in line


# ------------------------------------------------------------------------------ --policy module:function
def _readme_policy_module() -> str:
    text = README.read_text()
    match = re.search(r"```python\n(# my_hedgers\.py.*?)```", text, re.S)
    assert match, "README shows my_hedgers.py"
    return match.group(1)


def test_readme_policy_example_runs_as_written(tmp_path):
    (tmp_path / "my_hedgers.py").write_text(_readme_policy_module())
    command = next(line for line in README.read_text().splitlines() if "--policy my_hedgers:gamma_scalper" in line)
    args = command.split("#")[0].split()[1:]  # as in the README, plus a short episode
    res = hedgegym(*args, *SHORT, "--episodes", "2", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "gamma_scalper" in res.stdout
    assert (tmp_path / "results" / "gamma-scalper" / "metrics.json").is_file()


def test_policy_from_a_file_path(tmp_path):
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "hedgers.py").write_text(_readme_policy_module())
    res = hedgegym(
        "evaluate",
        *SHORT,
        "--episodes",
        "2",
        "--baselines",
        "none",
        "--policy",
        "lib/hedgers.py:gamma_scalper",
        "--out",
        str(tmp_path / "out"),
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr


def test_a_policy_file_imports_the_modules_beside_it(tmp_path):
    """As ``python lib/hedgers.py`` would: its folder is on the path while it loads (and only then)."""
    import sys

    from hedgegym.train.policies import load_callable

    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "helpers_beside.py").write_text("HALF = 0.5\n")
    (tmp_path / "lib" / "hedgers.py").write_text(
        "from helpers_beside import HALF\n\ndef half(obs, market):\n    return -HALF * obs[:, :1]\n"
    )
    before = list(sys.path)
    fn = load_callable(f"{tmp_path / 'lib' / 'hedgers.py'}:half")
    assert fn.__name__ == "half" and sys.path == before


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("my_hedgers:nope", "has no attribute 'nope'"),
        ("not_a_module_here:fn", "cannot import 'not_a_module_here'"),
        ("missing.py:fn", "does not exist"),
        ("broken:fn", "importing 'broken' failed (SyntaxError"),
        ("broken.py:fn", "importing 'broken.py' failed (SyntaxError"),
        ("raises:fn", "importing 'raises' failed (RuntimeError: no market data here)"),
    ],
)
def test_bad_policy_module_or_function_is_one_line(spec, expected, tmp_path):
    (tmp_path / "my_hedgers.py").write_text(_readme_policy_module())
    (tmp_path / "broken.py").write_text("def fn(:\n")
    (tmp_path / "raises.py").write_text("raise RuntimeError('no market data here')\n")
    line = one_line_error(
        hedgegym("evaluate", *SHORT, "--episodes", "2", "--baselines", "none", "--policy", spec, cwd=tmp_path)
    )
    assert expected in line, line


# ------------------------------------------------------------------------------ piped output
def test_piped_tables_are_not_cut_to_80_columns(tmp_path):
    res = hedgegym("evaluate", *SHORT, "--episodes", "2", "--out", str(tmp_path / "run"))
    assert res.returncode == 0, res.stderr
    assert "whalley_wilmott@cheapest" in res.stdout and "…" not in res.stdout
    assert max(len(line) for line in res.stdout.splitlines()) > 80
    listing = hedgegym("scenarios")
    assert "…" not in listing.stdout
    from hedgegym.envs.config import list_scenarios

    for description in list_scenarios().values():
        assert description in listing.stdout


def test_help_and_no_arguments():
    assert hedgegym("--help").returncode == 0
    res = hedgegym()
    assert res.returncode == 2 and "simulate" in res.stdout and res.stderr == ""
