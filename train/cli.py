"""The `hedgegym` command: simulate, scenarios, evaluate, train. A thin layer over the library."""

from __future__ import annotations

from pathlib import Path

import typer
from hedgegym.envs.config import ConfigError, list_scenarios, resolve_scenario
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

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
    console.print(f"[bold red]error:[/] {message}", markup=True, highlight=False)
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
    steps = cfg.episode_steps
    with progress_bar() as bar:
        task = bar.add_task(f"simulating {cfg.name}", total=paths * steps)
        result = run_simulation(cfg, paths=paths, seed=seed, progress=lambda n: bar.advance(task, n))

    table = Table(title=f"{cfg.name}: {paths} paths x {steps} steps, seed {seed}")
    table.add_column("measure")
    table.add_column("value", justify="right")
    lo, hi = result.vol_amplification_ci
    rows = [
        ("realised vol, with feedback", f"{result.realised_vol:.4f}"),
        ("realised vol, exogenous (no feedback)", f"{result.realised_vol_exo:.4f}"),
        ("volatility amplification [95% CI]", f"{result.vol_amplification:.4f} [{lo:.4f}, {hi:.4f}]"),
        ("predicted 1 / (1 + mean phi)", f"{result.predicted_amplification:.4f}"),
        ("mean phi (dealer GEX / depth)", f"{result.mean_phi:+.4f}"),
        ("liquidity-crisis steps per path", f"{result.crisis_steps_per_path:.3f}"),
        ("paths with a crisis step", f"{result.crisis_path_share:.1%}"),
        (f"pin distance to {result.pin_strike:,.0f}, with feedback", f"{result.pin_distance:.4%}"),
        ("pin distance, exogenous", f"{result.pin_distance_exo:.4%}"),
    ]
    for name, value in rows:
        table.add_row(name, value)
    console.print(table)
    if out is not None or plot:
        try:
            run_dir = claim_dir(out) if out is not None else new_run_dir("runs", f"simulate-{cfg.name}")
        except FileExistsError as err:
            fail(str(err))
        write_json_atomic(run_dir / "summary.json", result.summary())
        if plot:
            plot_simulation(result, run_dir / "simulation.png")
        console.print(f"wrote {run_dir}")


def main() -> None:  # pragma: no cover - console entry point alias
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
