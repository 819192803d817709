"""Evaluation matrices: policies x scenarios x seed blocks as Ray tasks, merged as one local run would be.

``hedgegym matrix`` evaluates the same policies on several scenarios. Each (scenario, policy, seed
block) is one Ray task that runs :func:`hedgegym.train.evaluate.evaluate` on that block (the
policy's episodes with and without its own impact); each scenario is then one task that
bootstraps its policies' merged episodes; the driver assembles one
:class:`~hedgegym.train.evaluate.EvaluationResult` per scenario exactly as ``evaluate`` does, and
writes what ``hedgegym evaluate`` writes, per scenario, plus ``matrix.{json,md,csv}`` beside them.

**Common random numbers, bit for bit.** Episode j of every policy is seed ``seed + j``, as in a
local run. A block is a whole number of evaluation batches (``batch_size``,
:data:`hedgegym.train.evaluate.BATCH` rows), and block k covers the seeds of the local run's
batches ``k * block / batch_size ...``: every batch a policy sees — the rows stepped together, the
observations a torch network reads in one forward pass (whose rounding can depend on the batch) —
is the batch it sees in ``hedgegym evaluate``, so the per-episode numbers are the same floating
point numbers, and so are the bootstrap intervals (the same call on the same arrays: the same
resamples, seeded by ``seed``). That holds on one machine, or on a cluster whose nodes have the
same CPU and libraries (numba compiles for the CPU it runs on). ``local=True`` runs the same work
in this process without Ray: the reference the tests compare with.

Example:
    >>> seed_blocks(10_000, seed=7, block=4096, batch_size=4096)
    [(7, 4096), (4103, 4096), (8199, 1808)]
    >>> seed_blocks(100, seed=0, block=100, batch_size=4096)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    hedgegym.envs.config.ConfigError: --block 100: must be a multiple of the evaluation batch (4096 episodes)...
"""

from __future__ import annotations

import csv
import io
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from hedgegym.envs.config import ConfigError, ScenarioConfig
from hedgegym.train import metrics as M
from hedgegym.train.cluster import check_positive, ray_session, require_ray, set_worker_threads
from hedgegym.train.evaluate import BATCH, OBJECTIVE, EvaluationResult, assemble_result
from hedgegym.train.io import claim_dir, git_commit, safe_name, write_json_atomic, write_text_atomic
from hedgegym.train.limits import check_count, check_seed


def seed_blocks(episodes: int, seed: int, block: int = BATCH, batch_size: int = BATCH) -> list[tuple[int, int]]:
    """``(first seed, episodes)`` of each block: ``block`` episodes each, the last one shorter.

    ``block`` must be a multiple of ``batch_size``, so that each block's batches are batches of the
    single-process run (see the module docstring).
    """
    if block < 1 or block % batch_size:
        raise ConfigError(
            f"--block {block}: must be a multiple of the evaluation batch ({batch_size} episodes), so that "
            "every batch of a block is a batch of the single-process run (the same rows stepped together)"
        )
    return [(seed + start, min(block, episodes - start)) for start in range(0, episodes, block)]


@dataclass
class MatrixScenario:
    """One scenario of the matrix: its config (under the models' interface), policy specs by name, notes."""

    config: ScenarioConfig
    specs: dict[str, Any]
    sources: dict[str, str]
    baselines: list[str]
    notes: list[str]


def plan_scenario(config: ScenarioConfig, policies: Sequence[str], baselines: str) -> MatrixScenario:
    """What ``hedgegym evaluate --baselines B --policy P ...`` would run on ``config``, resolved once here
    (bad policies fail before any work) and kept as specs that a Ray worker resolves again."""
    from hedgegym.agents.baselines import Baseline
    from hedgegym.train.policies import expand_baselines, resolve_policies, with_policy_interface

    config, notes = with_policy_interface(config, list(policies))
    items = [*expand_baselines(baselines, config), *policies]
    resolved = resolve_policies(items, config)  # checks the whole list (names given twice, ...)
    specs, kinds = {}, []
    for item in items:
        ((name, (policy, _)),) = resolve_policies([item], config).items()
        specs[name] = item
        if isinstance(policy, Baseline):
            kinds.append(name)
    assert list(specs) == list(resolved)
    return MatrixScenario(config, specs, {n: src for n, (_, src) in resolved.items()}, kinds, notes)


# ------------------------------------------------------------------------------------ tasks (Ray workers)
def simulate_block(
    config: ScenarioConfig,
    spec: Any,
    name: str,
    seed: int,
    episodes: int,
    n_sample_paths: int,
    batch_size: int,
    cwd: str,
    cpus: int,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """One (scenario, policy, block): ``evaluate``'s per-episode columns and sample paths of the block.

    Runs :func:`hedgegym.train.evaluate.evaluate` itself (one bootstrap resample, whose result is
    dropped), so the columns are computed by the same code as a local run's.
    """
    from hedgegym.train.evaluate import evaluate
    from hedgegym.train.policies import resolve_policies

    set_worker_threads(cpus)
    if os.path.isdir(cwd):  # relative policy paths and module:function mean the driver's folder
        os.chdir(cwd)
        if cwd not in sys.path:
            sys.path.insert(0, cwd)
    ((resolved_name, (policy, _)),) = resolve_policies([spec], config).items()
    assert resolved_name == name, (resolved_name, name)
    result = evaluate(
        {name: policy},
        config,
        episodes=episodes,
        seed=seed,
        batch_size=batch_size,
        n_resamples=1,
        n_sample_paths=max(1, n_sample_paths),
    )
    return result.per_episode[name], (result.samples[name] if n_sample_paths else {})


def bootstrap_scenario(
    names: Sequence[str], n_blocks: int, risk_aversion: float, pnl_scale: float, n_resamples: int, seed: int, *blocks
) -> dict[str, tuple[dict[str, float], dict[str, np.ndarray]]]:
    """One scenario: the bootstraps of its policies' merged episodes, ``{name: (point, draws)}``.

    ``blocks``: each policy's ``n_blocks`` blocks in seed order, policy after policy. The same call
    as ``evaluate``'s, on the same arrays: one set of resamples weighs every policy.
    """
    per_episode = {name: merge_blocks(blocks[i * n_blocks : (i + 1) * n_blocks]) for i, name in enumerate(names)}
    return bootstrap_all(per_episode, risk_aversion, pnl_scale, n_resamples, seed)


def bootstrap_all(per_episode, risk_aversion: float, pnl_scale: float, n_resamples: int, seed: int) -> dict:
    """What :func:`hedgegym.train.evaluate.evaluate` bootstraps: every policy on one set of resamples."""
    many = getattr(M, "bootstrap_many", None)
    if many is not None:
        return dict(many(per_episode, risk_aversion, pnl_scale, n_resamples, seed))
    return {n: M.bootstrap(v, risk_aversion, pnl_scale, n_resamples, seed) for n, v in per_episode.items()}


def merge_blocks(blocks: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The blocks' columns end to end, in seed order."""
    return {k: np.concatenate([b[k] for b in blocks]) for k in blocks[0]}


# ------------------------------------------------------------------------------------ the driver
@dataclass
class MatrixResult:
    """One :class:`EvaluationResult` per scenario (by scenario name), and how they were computed."""

    results: dict[str, EvaluationResult]
    episodes: int
    seed: int
    block: int
    mode: str
    tasks: int = 0
    seconds: float = 0.0
    dirs: dict[str, Path] = field(default_factory=dict)

    def matrix_json(self) -> dict:
        """``matrix.json``: per scenario and policy the objective and the paired difference against the
        scenario's reference (best baseline). No timestamps or mode: identical for Ray and local runs."""
        out = {"episodes": self.episodes, "seed": self.seed, "objective": OBJECTIVE, "scenarios": {}}
        for name, result in self.results.items():
            out["scenarios"][name] = {
                "reference": result.reference,
                "best": result.best.get(OBJECTIVE),
                "policies": {
                    p: {
                        "objective": result.objectives[p],
                        "vs_reference": result.paired[p][OBJECTIVE].as_dict(),
                    }
                    for p in result.policies
                },
            }
        return out

    def rows(self) -> list[dict]:
        """One row per scenario x policy (``matrix.csv``)."""
        rows = []
        for name, result in self.results.items():
            for p in result.policies:
                diff = result.paired[p][OBJECTIVE]
                rows.append(
                    {
                        "scenario": name,
                        "policy": p,
                        "objective": result.objectives[p],
                        "vs_reference": diff.value,
                        "vs_low": diff.low,
                        "vs_high": diff.high,
                        "reference": result.reference,
                    }
                )
        return rows

    def markdown(self, command: str | None = None) -> str:
        """``matrix.md``: the mean-variance objective of every policy on every scenario, and against the
        scenario's best baseline."""
        scenarios = list(self.results)
        policies: list[str] = []
        for result in self.results.values():
            policies += [p for p in result.policies if p not in policies]
        out = [
            "# Evaluation matrix",
            "",
            f"{self.episodes:,} episodes per policy and scenario (episode j on seed {self.seed} + j, the same for "
            "every policy); mean-variance objective in USD, higher is better; below it, the paired difference "
            "against the scenario's best baseline with its 95 % paired-bootstrap interval.",
            "",
        ]
        if command:
            out += [f"`{command}`", ""]
        out += ["| policy | " + " | ".join(scenarios) + " |", "|---|" + "---:|" * len(scenarios)]
        for p in policies:
            cells = []
            for s in scenarios:
                result = self.results[s]
                if p not in result.objectives:
                    cells.append("-")
                    continue
                diff = result.paired[p][OBJECTIVE]
                mark = "**" if result.best.get(OBJECTIVE) == p else ""
                vs = (
                    "reference"
                    if p == result.reference
                    else f"{diff.value:+,.0f} [{diff.low:+,.0f}, {diff.high:+,.0f}]"
                )
                cells.append(f"{mark}{result.objectives[p]:,.0f}{mark}<br>{vs}")
            out.append(f"| {p} | " + " | ".join(cells) + " |")
        out += ["", "Per scenario, the full report: " + ", ".join(f"`{safe_name(s)}/report.md`" for s in scenarios)]
        return "\n".join(out) + "\n"

    def write(self, out_dir: Path, command: str | None = None) -> Path:
        """Each scenario's files (what ``hedgegym evaluate`` writes) in ``out_dir/<scenario>/``, and the matrix."""
        out_dir = claim_dir(out_dir)
        for name, result in self.results.items():
            self.dirs[name] = result.write(out_dir / safe_name(name), command=command)
        write_json_atomic(out_dir / "matrix.json", self.matrix_json())
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        columns = ["scenario", "policy", "objective", "vs_reference", "vs_low", "vs_high", "reference"]
        writer.writerow(columns)
        for row in self.rows():
            writer.writerow([repr(row[c]) if isinstance(row[c], float) else row[c] for c in columns])
        write_text_atomic(out_dir / "matrix.csv", buf.getvalue())
        write_text_atomic(out_dir / "matrix.md", self.markdown(command))
        write_json_atomic(
            out_dir / "run_info.json",
            {
                "finished_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "seconds": round(self.seconds, 3),
                "mode": self.mode,
                "tasks": self.tasks,
                "block": self.block,
                "command": command,
                "git_commit": git_commit(),
            },
        )
        return out_dir


def evaluate_matrix(
    scenarios: Sequence[ScenarioConfig],
    policies: Sequence[str] = (),
    baselines: str = "all",
    episodes: int = 1000,
    seed: int = 0,
    *,
    block: int | None = None,
    batch_size: int = BATCH,
    n_resamples: int = M.N_RESAMPLES,
    local: bool = False,
    address: str | None = None,
    workers: int | None = None,
    cpus_per_task: int = 1,
    progress: Callable[[int, int], None] | None = None,
) -> MatrixResult:
    """Evaluate ``policies`` and ``baselines`` on every scenario: as Ray tasks, or ``local``ly in this process.

    ``policies``: ``--policy`` strings (model zips, ``module:function``); ``baselines`` as for
    ``hedgegym evaluate``. Each scenario's result equals ``evaluate(...)`` of the same policies on
    it with the same ``episodes``, ``seed`` and ``batch_size``, bit for bit. ``progress(done, total)``
    counts tasks (scenarios when ``local``). ``block``: episodes per task, a multiple of
    ``batch_size`` (default: one batch).
    """
    started = time.perf_counter()
    check_count(episodes, "--episodes", "episode")
    check_seed(seed, episodes, "--seed", "episodes")
    if not 1 <= batch_size <= BATCH:
        raise ConfigError(f"batch_size must be in [1, {BATCH}] (got {batch_size})")
    check_positive("--cpus-per-task", cpus_per_task, 256)
    if workers is not None:
        check_positive("--workers", workers, 1024)
    block = batch_size if block is None else block
    blocks = seed_blocks(episodes, seed, block, batch_size)
    names = [c.name for c in scenarios]
    if not names:
        raise ConfigError("give at least one scenario (--scenario NAME or --config FILE, repeatable)")
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ConfigError(f"scenario {twice[0]!r} is given twice; each scenario of a matrix must have its own name")
    plans = {c.name: plan_scenario(c, policies, baselines) for c in scenarios}
    if local:
        results = _run_local(plans, episodes, seed, batch_size, n_resamples, progress)
        return MatrixResult(results, episodes, seed, block, "local", 0, time.perf_counter() - started)
    require_ray("matrix")
    with ray_session(address, workers or max(1, (os.cpu_count() or 1) // cpus_per_task), cpus_per_task):
        results, tasks = _run_ray(plans, blocks, episodes, seed, batch_size, n_resamples, cpus_per_task, progress)
    return MatrixResult(results, episodes, seed, block, "ray", tasks, time.perf_counter() - started)


def _run_local(plans, episodes, seed, batch_size, n_resamples, progress) -> dict[str, EvaluationResult]:
    """The same work in this process: ``evaluate`` per scenario, as ``hedgegym evaluate`` runs it."""
    from hedgegym.train.evaluate import evaluate
    from hedgegym.train.policies import resolve_policies

    results = {}
    for i, (name, plan) in enumerate(plans.items()):
        resolved = resolve_policies(list(plan.specs.values()), plan.config)
        result = evaluate(
            {n: p for n, (p, _) in resolved.items()},
            plan.config,
            episodes=episodes,
            seed=seed,
            batch_size=batch_size,
            n_resamples=n_resamples,
        )
        result.notes = plan.notes  # as the CLI records them: about the models as given
        results[name] = result
        if progress is not None:
            progress(i + 1, len(plans))
    return results


def _run_ray(plans, blocks, episodes, seed, batch_size, n_resamples, cpus, progress):
    import ray

    from hedgegym.train.evaluate import N_SAMPLE_PATHS

    # Two returns: the block's per-episode columns (what the bootstrap needs) and its sample paths.
    simulate = ray.remote(simulate_block).options(num_cpus=cpus, num_returns=2)
    boot = ray.remote(bootstrap_scenario).options(num_cpus=cpus)
    cwd = os.getcwd()
    block_refs: dict[tuple[str, str], list] = {}
    for name, plan in plans.items():
        config = ray.put(plan.config)
        for policy, spec in plan.specs.items():
            block_refs[name, policy] = [
                simulate.remote(
                    config, spec, policy, first, count, N_SAMPLE_PATHS if k == 0 else 0, batch_size, cwd, cpus
                )
                for k, (first, count) in enumerate(blocks)
            ]
    boot_refs = {}
    for name, plan in plans.items():
        config = plan.config
        # The blocks' refs as arguments of their own: Ray hands the task their values.
        columns = [columns for policy in plan.specs for columns, _ in block_refs[name, policy]]
        boot_refs[name] = boot.remote(
            list(plan.specs), len(blocks), config.agent.risk_aversion, config.pnl_scale, n_resamples, seed, *columns
        )
    # One ref per task: a block's columns (its sample paths come with them), each scenario's bootstrap.
    pending = [columns for refs in block_refs.values() for columns, _ in refs] + list(boot_refs.values())
    total, done = len(pending), 0
    while pending:
        ready, pending = ray.wait(pending, num_returns=1)
        done += len(ready)
        if progress is not None:
            progress(done, total)
    results = {}
    for name, plan in plans.items():
        per_episode, samples, point, draws = {}, {}, {}, {}
        boots = ray.get(boot_refs[name])
        for policy in plan.specs:
            refs = block_refs[name, policy]
            per_episode[policy] = merge_blocks(ray.get([columns for columns, _ in refs]))
            samples[policy] = ray.get(refs[0][1])
            point[policy], draws[policy] = boots[policy]
        # The end of evaluate() itself, so that the two agree bit for bit (tests/train/test_ray.py).
        results[name] = assemble_result(
            plan.config,
            per_episode,
            samples,
            point,
            draws,
            baselines=plan.baselines,
            episodes=episodes,
            seed=seed,
            n_resamples=n_resamples,
            sources=plan.sources,
            notes=plan.notes,
        )
    return results, total
