"""The `hedgegym` command: simulate, scenarios, evaluate, train, sweep, matrix. A thin layer over the library."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import NoReturn

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text
from typer.core import TyperGroup

from hedgegym.envs.config import ConfigError, list_scenarios, resolve_scenario
from hedgegym.train import limits
from hedgegym.train.io import RunDirError, install_sigint_handler, interrupt_requested

try:  # recent typer vendors click, and raises its own copy's exceptions
    from typer._click import exceptions as click_errors
except ImportError:  # typer < 0.26 uses click itself
    from click import exceptions as click_errors


class _OneLineErrors(TyperGroup):
    """The command group: every error is one line on stderr and exit status 2, usage errors included.

    Click and Typer print usage errors as a usage line, a hint and a boxed message; this prints
    ``error: <message> (see hedgegym CMD --help)`` instead. Bad input that reaches the library
    (a config, a run directory) is reported the same way.
    """

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        install_sigint_handler()
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click_errors.NoArgsIsHelpError as err:  # the help is already printed
            sys.exit(err.exit_code)
        except click_errors.UsageError as err:
            where = f" (see {err.ctx.command_path} --help)" if err.ctx is not None else ""
            _print_error(err.format_message() + where)
            sys.exit(2)
        except click_errors.ClickException as err:
            _print_error(err.format_message())
            sys.exit(2)
        except typer.Abort:
            sys.exit(130)
        except (ConfigError, RunDirError) as err:
            _print_error(str(err))
            sys.exit(2)
        except OSError as err:  # the machine refused (disk full, permissions): its words, one line
            _print_error(f"{err.strerror or err}{f': {err.filename}' if err.filename else ''}")
            sys.exit(2)
        except Exception:
            if interrupt_requested():  # the failure a swallowed Ctrl-C left behind (see interrupt_requested)
                sys.exit(130)
            raise
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(
    cls=_OneLineErrors,
    add_completion=False,
    no_args_is_help=True,
    help="hedgegym: delta hedging with reflexive market impact.",
)
# Piped or redirected output is not cut to 80 columns: tables and names print in full.
console = Console() if sys.stdout.isatty() or "COLUMNS" in os.environ else Console(width=1000)
_stderr = Console(stderr=True, soft_wrap=True, highlight=False)

ScenarioOpt = typer.Option(None, "--scenario", "-s", help="Named scenario (see `hedgegym scenarios`).")
ConfigOpt = typer.Option(None, "--config", "-c", help="Scenario YAML file (instead of --scenario).")
SetOpt = typer.Option(None, "--set", help="Override a config field: --set market.sigma=0.8 (repeatable).")


def parse_sets(sets: list[str] | None) -> dict[str, str]:
    """``["a.b=1", ...]`` -> ``{"a.b": "1"}``; a malformed item is a usage error naming it."""
    out = {}
    for item in sets or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"--set {item!r}: expected key=value, e.g. market.sigma=0.8")
        out[key.strip()] = value
    return out


def fail(message: str) -> None:
    """Print an error as one line on stderr (no traceback) and exit with status 2."""
    _print_error(message)
    raise typer.Exit(2)


def one_line(message: str) -> str:
    r"""A possibly multi-line message (a config error lists each field on its own line) on one line.

    >>> one_line("invalid config in x.yaml:\n  market.sigma: must be > 0\n  episode.dt_hours: must be > 0")
    'invalid config in x.yaml: market.sigma: must be > 0; episode.dt_hours: must be > 0'
    """
    out = ""
    for line in (part.strip() for part in message.splitlines()):
        if line:
            out += line if not out else (" " if out.endswith(":") else "; ") + line
    return out


def _print_error(message: str) -> None:
    # Text, not markup: messages quote config values such as [spot] that rich would eat as tags.
    _stderr.print(Text.assemble(("error:", "bold red"), " ", one_line(message)))


def say(line: str) -> None:
    """Print a line of the library's (a note, a progress line) as it is: no highlighting, no cut."""
    console.print(line, highlight=False, soft_wrap=True)


def stop_interrupted(err: Exception) -> NoReturn:
    """After Ctrl-C: print what was saved and how to resume (the exception's message); exit 130."""
    say(str(err))
    raise typer.Exit(130) from None


def command_line() -> str:
    """This process's command as typed, for a run's records."""
    return " ".join(["hedgegym", *sys.argv[1:]])


def check_count(option: str, value: int, unit: str) -> None:
    """``--paths``/``--episodes`` within [1, MAX_EPISODES] (:mod:`hedgegym.train.limits`), else a one-line error."""
    try:
        limits.check_count(value, option, unit)
    except ValueError as err:
        fail(str(err))


def check_seed(seed: int, count: int, what: str) -> None:
    """Seeds ``seed .. seed + count - 1`` must be int64: ``0 <= seed <= 2**63 - count``, else a one-line error."""
    try:
        limits.check_seed(seed, count, "--seed", what)
    except ValueError as err:
        fail(str(err))


def check_out(out: Path | None) -> None:
    """``--out`` can become a new run directory (checked before any work; the claim comes later)."""
    from hedgegym.train.io import check_new_dir

    if out is not None:
        try:
            check_new_dir(out)
        except RunDirError as err:
            fail(str(err))


def progress_bar() -> Progress:
    """The progress bar used by every long-running command; none when the output is not a terminal."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    )


@app.command()
def scenarios(
    name: str = typer.Argument(None, help="Print this scenario's YAML, comments included (> my.yaml to start yours)."),
    export: Path = typer.Option(None, "--export", help="Copy every scenario's YAML into this folder (new files only)."),
) -> None:
    """List the named scenarios, one line each; print one (NAME) or copy them all (--export DIR)."""
    from hedgegym.envs.config import export_scenarios, scenario_text

    if name is not None:
        sys.stdout.write(scenario_text(name))
        return
    if export is not None:
        for path in export_scenarios(export):
            console.print(f"wrote {path}", highlight=False)
        return
    table = Table(title="hedgegym scenarios")
    table.add_column("name", style="bold")
    table.add_column("description")
    for name, description in list_scenarios().items():
        table.add_row(name, description)
    console.print(table)


@app.command()
def simulate(
    scenario: str = ScenarioOpt,
    config: Path = ConfigOpt,
    paths: int = typer.Option(1000, "--paths", "-n", help="Number of paths (episodes).", min=1),
    seed: int = typer.Option(0, "--seed", help="Seed of path 0 (path j uses seed + j).", min=0),
    out: Path = typer.Option(None, "--out", help="Directory for summary.json (and the plot); must be new."),
    plot: bool = typer.Option(False, "--plot", help="Write simulation.png: paths and amplification vs phi."),
    sets: list[str] = SetOpt,
) -> None:
    """Run the market with the dealers hedging and the agent inactive; print the feedback statistics."""
    from hedgegym.train.io import claim_dir, new_run_dir, write_json_atomic
    from hedgegym.train.simulate import plot_simulation
    from hedgegym.train.simulate import simulate as run_simulation

    check_count("--paths", paths, "path")
    check_seed(seed, paths, "paths")
    check_out(out)
    try:
        cfg = resolve_scenario(scenario, config, parse_sets(sets))
    except ConfigError as err:
        fail(str(err))
    run_dir = None
    if out is not None or plot:
        # Claim the directory before the work, so a clash costs nothing.
        try:
            run_dir = claim_dir(out) if out is not None else new_run_dir("runs", f"simulate-{cfg.name}")
        except RunDirError as err:
            fail(str(err))
    steps = cfg.episode_steps
    with progress_bar() as bar:
        task = bar.add_task(f"simulating {cfg.name}", total=paths * steps)
        result = run_simulation(cfg, paths=paths, seed=seed, progress=lambda n: bar.advance(task, n))

    table = Table(title=f"{cfg.name}: {paths} paths x {steps} steps, seed {seed}")
    table.add_column("measure")
    table.add_column("value", justify="right")
    for name, value in result.table_rows():
        table.add_row(name, value)
    console.print(table)
    if run_dir is not None:
        write_json_atomic(run_dir / "summary.json", result.summary())
        if plot:
            plot_simulation(result, run_dir / "simulation.png")
        console.print(f"wrote {run_dir}")


@app.command()
def train(
    config: Path = typer.Argument(None, help="Experiment YAML (configs/*.yaml); optional with --resume."),
    sets: list[str] = typer.Option(
        None,
        "--set",
        help="Override a field: --set training.total_timesteps=50000, "
        "--set scenario.overrides.market.sigma=0.8 (repeatable).",
    ),
    out: Path = typer.Option(None, "--out", help="Run directory to create (must be new); default runs/<name>-<time>."),
    resume: Path = typer.Option(None, "--resume", help="Continue this run directory from its newest checkpoint."),
) -> None:
    """Train an agent from an experiment config, then evaluate it against the baselines on held-out seeds.

    Ctrl-C stops at the next env step, saves a checkpoint and exits; --resume RUN_DIR continues.
    """
    from hedgegym.train.experiment import load_experiment

    check_out(out)
    overrides = parse_sets(sets)
    try:
        if config is None and resume is None:
            fail("give an experiment config (e.g. configs/ppo_multi.yaml) or --resume RUN_DIR")
        if config is not None:
            cfg = load_experiment(config, overrides)
        elif resume is not None:
            cfg = load_experiment(resume / "config.yaml", overrides) if (resume / "config.yaml").is_file() else None
    except ConfigError as err:
        fail(str(err))
    from hedgegym.train.training import TrainingInterrupted
    from hedgegym.train.training import train as run_training

    total = cfg.training.total_timesteps if cfg is not None else None
    with progress_bar() as bar:
        task = bar.add_task("training", total=total)
        evaluating = None

        def advance(timesteps: int, status: dict[str, float]) -> None:
            shown = ", ".join(f"{k} {v:,.1f}" for k, v in status.items())
            bar.update(task, completed=timesteps, description=f"training{f' ({shown})' if shown else ''}")

        def advance_evaluation(done: int, steps: int) -> None:
            nonlocal evaluating
            if evaluating is None:
                evaluating = bar.add_task("evaluating on held-out seeds", total=steps)
            bar.update(evaluating, completed=done)

        try:
            result = run_training(
                cfg,
                out=out,
                resume=resume,
                progress=advance,
                evaluation_progress=advance_evaluation,
                command=command_line(),
                notify=say,
            )
        except (ConfigError, RunDirError) as err:
            fail(str(err))
        except TrainingInterrupted as err:
            stop_interrupted(err)
    _print_run(result)
    if result.interrupted:  # 130, as for any command stopped by Ctrl-C
        raise typer.Exit(130)


def _print_run(result) -> None:
    table = Table(title=f"{result.config.run_name}: {result.timesteps:,} timesteps in {result.wall_time_s:,.0f} s")
    table.add_column("item")
    table.add_column("value", justify="right")
    table.add_row("run directory", str(result.run_dir))
    table.add_row("model", str(result.model_path))
    if result.best_model_path is not None:
        table.add_row("best model (held-out objective, USD)", f"{result.best_objective:,.1f}")
    if result.resumed_from is not None:
        table.add_row("resumed from timestep", f"{result.resumed_from:,}")
    console.print(table)
    if result.interrupted and result.timesteps < result.config.training.total_timesteps:
        console.print(f"interrupted: checkpoint saved; continue with `hedgegym train --resume {result.run_dir}`")
    elif result.interrupted:
        console.print(
            f"training finished and saved; the final evaluation was interrupted: finish it with "
            f"`hedgegym train --resume {result.run_dir}`",
            highlight=False,
            soft_wrap=True,
        )
    elif result.evaluation is not None:
        from hedgegym.train.report import rich_tables

        for eval_table in rich_tables(result.evaluation):
            console.print(eval_table)
        console.print(
            f"best by the mean-variance objective: [bold]{result.evaluation.best.get('mean_variance')}[/]; "
            f"report: {result.run_dir / 'evaluation' / 'report.md'}",
            highlight=False,
        )


def evaluation_command(name, sources, sets, baselines, policy, episodes, seed, run_dir) -> str:
    """The command line that repeats an evaluation (``evaluate``, ``matrix``), for its report.

    >>> evaluation_command("matrix", ["--scenario a", "--scenario b"], ["x.y=1"], "delta", None, 10, 0, "out")
    'hedgegym matrix --scenario a --scenario b --set x.y=1 --baselines delta --episodes 10 --seed 0 --out out'
    """
    return " ".join(
        [
            f"hedgegym {name}",
            *sources,
            *(f"--set {s}" for s in sets or []),
            f"--baselines {baselines}",
            *(f"--policy {p}" for p in policy or []),
            f"--episodes {episodes}",
            f"--seed {seed}",
            f"--out {run_dir}",
        ]
    )


@app.command()
def evaluate(
    scenario: str = ScenarioOpt,
    config: Path = ConfigOpt,
    policy: list[str] = typer.Option(
        None, "--policy", "-p", help="A stable-baselines3 model .zip or a module:function (repeatable)."
    ),
    baselines: str = typer.Option(
        "all",
        "--baselines",
        "-b",
        help="all, none, or names separated by commas: no_hedge, delta, fixed_band, "
        "whalley_wilmott, leland, each optionally @spot/@perp/@future/@cheapest.",
    ),
    episodes: int = typer.Option(1000, "--episodes", "-n", help="Episodes per policy.", min=1),
    seed: int = typer.Option(0, "--seed", help="Seed of episode 0 (episode j uses seed + j).", min=0),
    out: Path = typer.Option(None, "--out", help="Directory for the results; must be new or empty."),
    sets: list[str] = SetOpt,
) -> None:
    """Run policies and the delta-band hedgers on the same paths; print and save the metrics."""
    from hedgegym.train.evaluate import evaluate as run_evaluation
    from hedgegym.train.io import claim_dir, new_run_dir
    from hedgegym.train.policies import PolicyError, expand_baselines, resolve_policies, with_policy_interface
    from hedgegym.train.report import rich_tables

    check_count("--episodes", episodes, "episode")
    check_seed(seed, episodes, "episodes")
    check_out(out)
    try:
        cfg = resolve_scenario(scenario, config, parse_sets(sets))
    except ConfigError as err:
        fail(str(err))
    # `--policy my_hedgers:fn` imports from the current folder, as `python -m` would (the console
    # script's sys.path starts at its own folder instead).
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        # A trained model is evaluated with the agent interface it was trained for (its action mode, venues, limits).
        cfg, notes = with_policy_interface(cfg, policy or [])
        resolved = resolve_policies([*expand_baselines(baselines, cfg), *(policy or [])], cfg)
    except (PolicyError, ValueError) as err:
        fail(str(err))
    for note in notes:
        say(note)
    # Claim the directory before the work, so a clash costs nothing (an unused claim is dropped at exit).
    try:
        run_dir = claim_dir(out) if out is not None else new_run_dir("runs", f"evaluate-{cfg.name}")
    except RunDirError as err:
        fail(str(err))

    steps = cfg.episode_steps
    with progress_bar() as bar:
        # Each policy runs twice: as is, and with its impact off (its own share of the amplification).
        task = bar.add_task(
            f"evaluating {len(resolved)} policies on {cfg.name}", total=2 * len(resolved) * episodes * steps
        )
        try:
            result = run_evaluation(
                {name: p for name, (p, _) in resolved.items()},
                cfg,
                episodes=episodes,
                seed=seed,
                progress=lambda n: bar.advance(task, n),
            )
        except (PolicyError, ValueError) as err:
            fail(str(err))
    # The notes printed above, about the models as given (the library saw them loaded): the run's record.
    result.notes = notes

    for table in rich_tables(result):
        console.print(table)
    best = result.best.get("mean_variance")
    console.print(
        f"best by the mean-variance objective: [bold]{best}[/]; reference for paired differences: "
        f"{result.reference}; {result.seconds:.1f} s",
        highlight=False,
    )
    source = f"--config {config}" if config is not None else f"--scenario {cfg.name}"
    command = evaluation_command("evaluate", [source], sets, baselines, policy, episodes, seed, run_dir)
    result.write(run_dir, command=command)
    console.print(f"wrote {run_dir}")


# ------------------------------------------------------------------------------------ Ray: sweep, matrix
@app.command()
def sweep(
    config: Path = typer.Argument(None, help="Experiment YAML (configs/*.yaml); omitted with --resume."),
    space: Path = typer.Option(None, "--space", help="Search space YAML over dotted config fields (configs/spaces/)."),
    trials: int = typer.Option(16, "--trials", "-n", help="Trials of the sweep (TPE proposals)."),
    seeds: int = typer.Option(
        None, "--seeds", help="Train K seeds of the sweep's best config (or of CONFIG, without --space)."
    ),
    address: str = typer.Option(None, "--address", help="An existing Ray cluster (auto, HOST:6379); default local."),
    workers: int = typer.Option(None, "--workers", "-w", help="Trials at once; default: CPUs / --cpus-per-trial."),
    cpus_per_trial: int = typer.Option(1, "--cpus-per-trial", help="CPUs per trial: its numba and torch threads."),
    max_failures: int = typer.Option(3, "--max-failures", help="Retries of a trial whose worker failed."),
    out: Path = typer.Option(None, "--out", help="Sweep directory to create (must be new); default runs/sweep-..."),
    resume: Path = typer.Option(None, "--resume", help="Continue an interrupted sweep directory."),
    sets: list[str] = typer.Option(None, "--set", help="Override a field of CONFIG for every trial (repeatable)."),
) -> None:
    """Tune CONFIG on Ray: Optuna TPE proposals, ASHA early stopping on the periodic held-out objective.

    Each trial is one `hedgegym train` run in SWEEP/trials/; the leaderboard ranks them against the
    best baseline and SWEEP/best_config.yaml trains as is. --seeds K reports the win across seeds.
    """
    from hedgegym.train.sweep import SweepInterrupted, run_sweep

    check_out(out)
    try:
        result = run_sweep(
            config,
            space,
            sets=parse_sets(sets),
            trials=trials,
            seeds=seeds,
            address=address,
            workers=workers,
            cpus_per_trial=cpus_per_trial,
            max_failures=max_failures,
            out=out,
            resume=resume,
            command=command_line(),
            notify=say,
        )
    except SweepInterrupted as err:
        stop_interrupted(err)
    if result.leaderboard:
        _print_leaderboard(result)
    if result.seed_summary is not None or result.seeds:
        _print_seeds(result)
    console.print(f"wrote {result.sweep_dir}", highlight=False)


def _print_leaderboard(result) -> None:
    table = Table(title=f"sweep {result.sweep_dir.name}: {len(result.leaderboard)} trials, {result.seconds:,.0f} s")
    for column in ("rank", "trial", "status", *(p.rsplit(".", 1)[-1] for p in result.parameters)):
        table.add_column(column)
    for column in ("timesteps", "held-out objective", "final objective", "vs best baseline [95 % CI]"):
        table.add_column(column, justify="right")
    for row in result.leaderboard:
        vs = (
            f"{row['vs_best_baseline']:+,.0f} [{row['vs_low']:+,.0f}, {row['vs_high']:+,.0f}]"
            if row["vs_best_baseline"] is not None
            else "-"
        )
        table.add_row(
            str(row["rank"]),
            row["trial"],
            row["status"],
            *(_value(row.get(p)) for p in result.parameters),
            f"{row['timesteps']:,}",
            _value(row["held_out_objective"], ",.0f"),
            _value(row["final_objective"], ",.0f"),
            vs,
        )
    console.print(table)
    if result.best_config is not None:
        best = result.leaderboard[0]
        console.print(
            f"best: trial {best['trial']}, {best['vs_best_baseline']:+,.0f} USD against {best['reference']}; "
            f"config: {result.best_config} (hedgegym train {result.best_config})",
            highlight=False,
            soft_wrap=True,
        )
    else:
        console.print("no trial finished: no best config", highlight=False)


def _print_seeds(result) -> None:
    table = Table(title=f"seed study: {len(result.seeds)} seeds")
    table.add_column("seed", justify="right")
    for column in ("final objective", "vs best baseline [95 % CI]"):
        table.add_column(column, justify="right")
    table.add_column("wins")
    for row in result.seeds:
        vs = (
            f"{row['vs_best_baseline']:+,.0f} [{row['vs_low']:+,.0f}, {row['vs_high']:+,.0f}]"
            if row["vs_best_baseline"] is not None
            else "-"
        )
        table.add_row(str(row["seed"]), _value(row["final_objective"], ",.0f"), vs, "yes" if row["wins"] else "no")
    console.print(table)
    s = result.seed_summary
    if s is not None:
        console.print(
            f"across {s['n']} seeds: {s['mean']:+,.0f} USD [{s['low']:+,.0f}, {s['high']:+,.0f}] against "
            f"{s['reference']} (mean of the paired differences, 95 % t-interval); {s['wins']} of {s['n']} seeds "
            f"win, {s['significant_wins']} with an interval above zero",
            highlight=False,
            soft_wrap=True,
        )


def _value(value, spec: str = ".4g") -> str:
    if value is None:
        return "-"
    return format(value, spec) if isinstance(value, float) else str(value)


@app.command()
def matrix(
    scenario: list[str] = typer.Option(None, "--scenario", "-s", help="A named scenario (repeatable)."),
    config: list[Path] = typer.Option(None, "--config", "-c", help="A scenario YAML file (repeatable)."),
    policy: list[str] = typer.Option(None, "--policy", "-p", help="A model .zip or module:function (repeatable)."),
    baselines: str = typer.Option("all", "--baselines", "-b", help="all, none, or names separated by commas."),
    episodes: int = typer.Option(1000, "--episodes", "-n", help="Episodes per policy and scenario."),
    seed: int = typer.Option(0, "--seed", help="Seed of episode 0 (episode j uses seed + j)."),
    block: int = typer.Option(
        None, "--block", help="Episodes per Ray task, a multiple of the evaluation batch (default: one batch)."
    ),
    address: str = typer.Option(None, "--address", help="An existing Ray cluster (auto, HOST:6379); default local."),
    workers: int = typer.Option(None, "--workers", "-w", help="Tasks at once; default: CPUs / --cpus-per-task."),
    cpus_per_task: int = typer.Option(1, "--cpus-per-task", help="CPUs per task: its numba and torch threads."),
    local: bool = typer.Option(False, "--local", help="Run the same work in this process, without Ray."),
    out: Path = typer.Option(None, "--out", help="Directory for the results; must be new or empty."),
    sets: list[str] = SetOpt,
) -> None:
    """Evaluate policies x scenarios x seed blocks as Ray tasks: per scenario the report of `hedgegym evaluate`
    (bit for bit), and the matrix of objectives against each scenario's best baseline."""
    from hedgegym.train.io import claim_dir, new_run_dir
    from hedgegym.train.matrix import evaluate_matrix
    from hedgegym.train.policies import PolicyError

    check_count("--episodes", episodes, "episode")
    check_seed(seed, episodes, "episodes")
    check_out(out)
    overrides = parse_sets(sets)
    try:
        configs = [resolve_scenario(name, None, overrides) for name in scenario or []]
        configs += [resolve_scenario(None, path, overrides) for path in config or []]
    except ConfigError as err:
        fail(str(err))
    if not configs:
        configs = [resolve_scenario(None, None, overrides)]
    if os.getcwd() not in sys.path:  # `--policy my_hedgers:fn` from the current folder, as in evaluate
        sys.path.insert(0, os.getcwd())
    if not local:
        from hedgegym.train.cluster import require_ray

        require_ray("matrix")
    try:
        run_dir = claim_dir(out) if out is not None else new_run_dir("runs", "matrix")
    except RunDirError as err:
        fail(str(err))
    with progress_bar() as bar:
        task = bar.add_task(f"evaluating {len(configs)} scenarios", total=None)
        try:
            result = evaluate_matrix(
                configs,
                policy or [],
                baselines,
                episodes,
                seed,
                block=block,
                local=local,
                address=address,
                workers=workers,
                cpus_per_task=cpus_per_task,
                progress=lambda done, total: bar.update(task, completed=done, total=total),
            )
        except (PolicyError, ValueError) as err:
            fail(str(err))
    for res in result.results.values():
        for note in res.notes:
            say(note)
    table = Table(title=f"matrix: {episodes:,} episodes, seed {seed}, {result.mode} ({result.seconds:.1f} s)")
    table.add_column("policy")
    policies = []
    for res in result.results.values():
        policies += [p for p in res.policies if p not in policies]
    for name in result.results:
        table.add_column(f"{name}: objective / vs best baseline", justify="right")
    for p in policies:
        cells = []
        for res in result.results.values():
            if p not in res.objectives:
                cells.append("-")
                continue
            diff = res.paired[p]["mean_variance"]
            vs = "reference" if p == res.reference else f"{diff.value:+,.0f} [{diff.low:+,.0f}, {diff.high:+,.0f}]"
            cells.append(f"{res.objectives[p]:,.0f} / {vs}")
        table.add_row(p, *cells)
    console.print(table)
    sources = [*(f"--scenario {s}" for s in scenario or []), *(f"--config {c}" for c in config or [])]
    command = evaluation_command("matrix", sources, sets, baselines, policy, episodes, seed, run_dir)
    result.write(run_dir, command=command)
    console.print(f"wrote {run_dir}")


def main() -> None:  # pragma: no cover - console entry point alias
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
