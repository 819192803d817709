"""The `hedgegym` command: simulate, scenarios, evaluate, train. A thin layer over the library."""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from hedgegym.envs.config import ConfigError, list_scenarios, resolve_scenario

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="hedgegym: delta hedging with reflexive market impact.")
console = Console()

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
    """Print an error (no traceback) and exit with status 2."""
    console.print(f"[bold red]error:[/] {message}", markup=True, highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def progress_bar() -> Progress:
    """The progress bar used by every long-running command."""
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console, transient=True)


@app.command()
def scenarios() -> None:
    """List the named scenarios, one line each."""
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

    try:
        cfg = resolve_scenario(scenario, config, parse_sets(sets))
    except ConfigError as err:
        fail(str(err))
    run_dir = None
    if out is not None or plot:
        # Claim the directory before the work, so a clash costs nothing.
        try:
            run_dir = claim_dir(out) if out is not None else new_run_dir("runs", f"simulate-{cfg.name}")
        except FileExistsError as err:
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
    sets: list[str] = typer.Option(None, "--set", help="Override a field: --set training.total_timesteps=50000, "
                                                       "--set scenario.overrides.market.sigma=0.8 (repeatable)."),
    out: Path = typer.Option(None, "--out", help="Run directory to create (must be new); default runs/<name>-<time>."),
    resume: Path = typer.Option(None, "--resume", help="Continue this run directory from its newest checkpoint."),
) -> None:
    """Train an agent from an experiment config, then evaluate it against the baselines on held-out seeds.

    Ctrl-C stops at the next env step, saves a checkpoint and exits; --resume RUN_DIR continues.
    """
    from hedgegym.train.experiment import load_experiment

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
            result = run_training(cfg, out=out, resume=resume, progress=advance,
                                  evaluation_progress=advance_evaluation, command=" ".join(["hedgegym", *sys.argv[1:]]))
        except (ConfigError, FileExistsError) as err:
            fail(str(err))
    _print_run(result)


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
        ev = result.config.evaluation
        model = result.best_model_path or result.model_path
        baselines = ",".join(ev.baselines) or "none"
        console.print(f"training finished and saved; the final evaluation was interrupted. Redo it with: hedgegym "
                      f"evaluate --config {result.run_dir / 'scenario.yaml'} --policy {model} --baselines {baselines} "
                      f"--episodes {ev.final_episodes} --seed {ev.seed}", highlight=False)
    elif result.evaluation is not None:
        from hedgegym.train.evaluate import rich_tables

        for eval_table in rich_tables(result.evaluation):
            console.print(eval_table)
        console.print(f"best by the mean-variance objective: [bold]{result.evaluation.best.get('mean_variance')}[/]; "
                      f"report: {result.run_dir / 'evaluation' / 'report.md'}", highlight=False)


@app.command()
def evaluate(
    scenario: str = ScenarioOpt,
    config: Path = ConfigOpt,
    policy: list[str] = typer.Option(None, "--policy", "-p",
                                     help="A stable-baselines3 model .zip or a module:function (repeatable)."),
    baselines: str = typer.Option("all", "--baselines", "-b",
                                  help="all, none, or names separated by commas: no_hedge, delta, fixed_band, "
                                       "whalley_wilmott, leland, each optionally @spot/@perp/@future/@cheapest."),
    episodes: int = typer.Option(1000, "--episodes", "-n", help="Episodes per policy.", min=1),
    seed: int = typer.Option(0, "--seed", help="Seed of episode 0 (episode j uses seed + j).", min=0),
    out: Path = typer.Option(None, "--out", help="Directory for the results; must be new or empty."),
    sets: list[str] = SetOpt,
) -> None:
    """Run policies and the delta-band hedgers on the same paths; print and save the metrics."""
    from hedgegym.train.evaluate import PolicyError, expand_baselines, resolve_policies, rich_tables
    from hedgegym.train.evaluate import evaluate as run_evaluation
    from hedgegym.train.io import claim_dir, new_run_dir

    try:
        cfg = resolve_scenario(scenario, config, parse_sets(sets))
    except ConfigError as err:
        fail(str(err))
    if out is not None and out.exists() and (not out.is_dir() or any(out.iterdir())):
        fail(f"output directory {str(out)!r} already exists and is not empty; choose another --out "
             "(runs never overwrite an earlier run)")
    try:
        resolved = resolve_policies([*expand_baselines(baselines, cfg), *(policy or [])], cfg)
    except (PolicyError, ValueError) as err:
        fail(str(err))

    steps = cfg.episode_steps
    with progress_bar() as bar:
        # Each policy runs twice: as is, and with its impact off (its own share of the amplification).
        task = bar.add_task(f"evaluating {len(resolved)} policies on {cfg.name}",
                            total=2 * len(resolved) * episodes * steps)
        try:
            result = run_evaluation({name: p for name, (p, _) in resolved.items()}, cfg, episodes=episodes,
                                    seed=seed, progress=lambda n: bar.advance(task, n))
        except (PolicyError, ValueError) as err:
            fail(str(err))

    for table in rich_tables(result):
        console.print(table)
    best = result.best.get("mean_variance")
    console.print(f"best by the mean-variance objective: [bold]{best}[/]; reference for paired differences: "
                  f"{result.reference}; {result.seconds:.1f} s", highlight=False)
    try:
        run_dir = claim_dir(out) if out is not None else new_run_dir("runs", f"evaluate-{cfg.name}")
    except FileExistsError as err:
        fail(str(err))
    source = f"--config {config}" if config is not None else f"--scenario {cfg.name}"
    command = " ".join(["hedgegym evaluate", source, *(f"--set {s}" for s in sets or []),
                        f"--baselines {baselines}", *(f"--policy {p}" for p in policy or []),
                        f"--episodes {episodes}", f"--seed {seed}", f"--out {run_dir}"])
    result.write(run_dir, command=command)
    console.print(f"wrote {run_dir}")


def main() -> None:  # pragma: no cover - console entry point alias
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
