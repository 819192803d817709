"""`hedgegym evaluate`: any policy against the classical hedgers, on the same paths.

:func:`evaluate` runs every policy on the same episodes — episode ``j`` on seed ``seed + j``
(episode index 0, as ``HedgingEnv.reset(seed=seed + j)``), so all policies meet the same exogenous
shocks (MODEL.md §1) — directly on batches of :class:`~hedgegym.envs.market.Market` rows, then
reruns the same seeds with the agent's impact off to measure its own share of the volatility
amplification. It returns an :class:`EvaluationResult`: per-episode values, every metric of
:mod:`hedgegym.train.metrics` with its bootstrap interval, and paired differences against the best
baseline. :meth:`EvaluationResult.write` saves ``metrics.json``, ``episodes.csv``, ``report.md``
(:mod:`hedgegym.train.report`) and the plots (:mod:`hedgegym.train.plots`) to a run directory.

Policies and how ``--policy`` strings become policies: :mod:`hedgegym.train.policies`. A trained
model is evaluated with the agent interface it was trained for (its action mode, venues and trade
limits applied to the scenario). Policies are ranked by :func:`objective`, the same function the
training pipeline uses to keep its best model.

Example:
    >>> from hedgegym.train.evaluate import evaluate
    >>> result = evaluate(["no_hedge", "delta"], "default", episodes=64, seed=0, n_resamples=200)
    >>> result.policies
    ['no_hedge', 'delta@spot']
    >>> result.estimates["delta@spot"]["pnl_std"].value < result.estimates["no_hedge"]["pnl_std"].value
    True
    >>> result.objectives["delta@spot"] == objective(result.per_episode["delta@spot"], result.config)
    True
"""

from __future__ import annotations

import csv
import io
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from hedgegym.agents.baselines import Baseline
from hedgegym.envs.config import ScenarioConfig, resolve_config, save_config
from hedgegym.envs.layout import O_EXO_SPOT, O_PHI, O_SPOT
from hedgegym.envs.market import SECOND_ORDER_METRICS, Market
from hedgegym.train import metrics as M
from hedgegym.train.io import claim_dir, git_commit, raise_if_interrupted, write_json_atomic, write_text_atomic
from hedgegym.train.limits import check_count, check_seed
from hedgegym.train.policies import PolicyError, resolve_policies, with_policy_interface

BATCH = 1 << 16
"""Most Market rows stepped together (65,536). All episodes of a scenario have the same length, so a
batch runs exactly one episode per row and needs no autoreset. Memory: a Market row is ~1.3 KB
(state record 352 B, second-order ext 600 B, outputs 192 B, observation, hedge and trades), so a
full batch holds ~85 MB, plus a policy's own arrays of one row per env; 10,000 episodes run as one
batch, which is what the parallel kernel is fastest at."""

N_SAMPLE_PATHS = 5
# Per-episode columns kept from Market.episode_metrics (episodes.csv order).
_EPISODE_KEYS = (
    "pnl",
    "book_pnl",
    "hedge_pnl",
    "fees",
    "slippage_usd",
    "slippage_bps",
    "funding",
    "carry",
    "turnover_usd",
    "n_trades",
    "realised_vol",
    "realised_vol_exo",
    "vol_amplification",
    "mean_phi",
    "crisis_steps",
    "halt_steps",
    "pin_distance",
    "pin_distance_exo",
    "reward",
)
OBJECTIVE = "mean_variance"
"""The metric :func:`objective` computes: policies are ranked, and the best model kept, by it."""


def objective(per_episode: Mapping[str, np.ndarray], config: ScenarioConfig) -> float:
    """The objective a policy is judged by: the mean-variance objective of its episode P&Ls, USD.

    :func:`hedgegym.train.metrics.mean_variance_objective` with the scenario's ``agent.risk_aversion``
    per ``pnl_scale`` USD — what the sum of the env's mean-variance rewards estimates. The one
    function behind the report's best policy and reference baseline and training's ``best_model.zip``.
    """
    pnl = per_episode["pnl"]
    return float(M.mean_variance_objective(pnl, config.agent.risk_aversion, config.pnl_scale))


# ------------------------------------------------------------------------------------ running
def _actions(policy, obs: np.ndarray, market: Market, name: str, n_act: int) -> np.ndarray:
    actions = np.asarray(policy(obs, market), dtype=np.float64)
    if actions.shape == (market.n_envs,) and n_act == 1:
        actions = actions[:, None]
    if actions.shape != (market.n_envs, n_act):
        raise PolicyError(
            f"policy {name!r} returned actions of shape {actions.shape}; expected "
            f"({market.n_envs}, {n_act}): one row per env, one column per venue of agent.venues"
        )
    if not np.all(np.isfinite(actions)):
        raise PolicyError(f"policy {name!r} returned NaN or inf actions")
    return np.clip(actions, -1.0, 1.0)


def run_policy(
    policy,
    config: ScenarioConfig,
    seeds: np.ndarray,
    *,
    name: str = "policy",
    agent_impact: bool = True,
    batch_size: int = BATCH,
    n_sample_paths: int = N_SAMPLE_PATHS,
    progress: Callable[[int], None] | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Run one episode per seed (episode index 0) under ``policy``; returns ``(per_episode, sample)``.

    The one loop that steps a :class:`Market` for evaluation and for ``simulate`` (``policy=None``:
    the agent is inactive). A classical hedger on a fixed venue (:attr:`Baseline.fused`) runs its
    rows' steps in compiled chunks (:meth:`Baseline.rollout`: the same trades and kernel step as
    the Python round, bit for bit); every other policy, and the recorded sample episodes, one
    Python round per step. ``per_episode``: the columns of ``Market.episode_metrics`` plus
    ``spot_final`` and ``exo_spot_final``; ``sample``, of the first ``n_sample_paths`` episodes:
    ``spot`` and ``exo_spot`` ``[m, steps + 1]`` (USD), ``hedge`` ``[m, steps + 1, 3]`` (spot and
    perp in coins, future in contracts), ``pnl``, the cumulative P&L ``[m, steps + 1]`` (USD), and
    ``phi`` ``[m, steps]``, the dealers' feedback of each step.
    """
    steps = config.episode_steps
    n_act = len(config.agent.venues)
    compiled = isinstance(policy, Baseline)
    fused = compiled and policy.fused
    n_sample = min(n_sample_paths, len(seeds))
    # A compiled hedger on a fixed venue steps its rows in compiled chunks of steps (Baseline.rollout);
    # the sample episodes, whose every step is recorded, then go first as a batch of their own.
    # Rows are independent, so how episodes are batched changes no result.
    if fused and n_sample:
        bounds = [0, *range(n_sample, len(seeds), batch_size), len(seeds)]
    else:
        bounds = [*range(0, len(seeds), batch_size), len(seeds)]
    per_batch: dict[str, list[np.ndarray]] = {}
    sample: dict[str, np.ndarray] = {}
    for start, stop in zip(bounds[:-1], bounds[1:], strict=True):
        batch = seeds[start:stop]
        market = Market(config, n_envs=len(batch), agent_impact=agent_impact)
        market.reset(seeds=batch, episodes=0)
        m = min(n_sample, len(batch)) if start == 0 else 0
        if fused and not m:
            _rollout(policy, market, steps, name, progress)
        else:
            sample = _step_loop(policy, market, steps, name, n_act, m, compiled, fused, progress) or sample
        ep = market.episode_metrics()
        ep["spot_final"] = market.spot.copy()
        ep["exo_spot_final"] = market.exo_spot.copy()
        for key, values in ep.items():
            per_batch.setdefault(key, []).append(values)
    return {k: np.concatenate(v) for k, v in per_batch.items()}, sample


ROLLOUT_ROW_STEPS = 1 << 21
"""Row-steps per compiled rollout call (~0.2 s): progress and Ctrl-C are seen between calls."""


def _rollout(policy: Baseline, market: Market, steps: int, name: str, progress) -> None:
    """All ``steps`` of ``market`` under a fused hedger, in compiled chunks of steps."""
    chunk = max(1, ROLLOUT_ROW_STEPS // market.n_envs)
    for done in range(0, steps, chunk):
        k = min(chunk, steps - done)
        if not policy.rollout(market, k):
            raise PolicyError(f"policy {name!r} returned NaN or inf actions")
        if progress is not None:
            progress(market.n_envs * k)
        raise_if_interrupted()


def _step_loop(
    policy, market: Market, steps: int, name: str, n_act: int, m: int, compiled: bool, fused: bool, progress
) -> dict:
    """All ``steps`` of ``market``, one Python round per step; records the first ``m`` rows' paths
    (the ``sample`` of :func:`run_policy`; empty when ``m`` is 0)."""
    spot, exo, pnl = np.empty((m, steps + 1)), np.empty((m, steps + 1)), np.empty((m, steps + 1))
    hedge = np.empty((m, steps + 1, market.hedge.shape[1]))
    phi = np.empty((m, steps))
    spot[:, 0], exo[:, 0] = market.spot[:m], market.exo_spot[:m]
    hedge[:, 0], pnl[:, 0] = market.hedge[:m], market.state["cum_pnl"][:m]
    trades = np.empty((market.n_envs, market.hedge.shape[1]))
    for k in range(steps):
        if policy is None:
            out = market.step()
        elif fused:
            if not policy.rollout(market, 1):
                raise PolicyError(f"policy {name!r} returned NaN or inf actions")
            out = market.out
        elif compiled:
            # A routed hedger: its actions (routing in NumPy) and their mapping to the kernel's trades.
            trades, finite = policy.market_trades(market, out=trades)
            if not finite:
                raise PolicyError(f"policy {name!r} returned NaN or inf actions")
            out = market.step(trades, check=False)
        else:
            # A policy that declares it does not read observations is spared them.
            obs = market.observe() if getattr(policy, "uses_observation", True) else market.obs
            actions = _actions(policy, obs, market, name, n_act)
            out = market.step(market.actions_to_trades(actions), check=False)
        if m:
            spot[:, k + 1], exo[:, k + 1], phi[:, k] = out[:m, O_SPOT], out[:m, O_EXO_SPOT], out[:m, O_PHI]
            hedge[:, k + 1], pnl[:, k + 1] = market.hedge[:m], market.state["cum_pnl"][:m]
        if progress is not None:
            progress(market.n_envs)
        raise_if_interrupted()
    return {"spot": spot, "exo_spot": exo, "hedge": hedge, "pnl": pnl, "phi": phi} if m else {}


@dataclass
class EvaluationResult:
    """Everything one evaluation measured. Names of policies in run order in ``policies``.

    ``per_episode[name][column]``: one value per episode (episode j on seed ``seed + j``);
    ``estimates[name][metric]``: :class:`~hedgegym.train.metrics.Estimate` with its 95 % interval;
    ``paired[name][metric]``: ``name - reference`` on the same episodes, paired-bootstrap interval;
    ``reference``: the best baseline by the mean-variance objective (or the best policy, if no
    baseline ran); ``best[metric]``: the best policy per metric (where a direction is defined);
    ``samples[name]``: ``spot``, ``exo_spot``, ``hedge``, ``pnl`` and ``spot_no_agent_impact`` of
    the first episodes (see :func:`run_policy`); ``objectives[name]``: :func:`objective`;
    ``point[name][metric]`` and ``draws[name][metric]``: each statistic and its bootstrap
    replicates (the same resamples for every policy, which is what pairs them).
    """

    config: ScenarioConfig
    episodes: int
    seed: int
    n_resamples: int
    policies: list[str]
    sources: dict[str, str]
    per_episode: dict[str, dict[str, np.ndarray]]
    estimates: dict[str, dict[str, M.Estimate]]
    paired: dict[str, dict[str, M.Estimate]]
    reference: str
    best: dict[str, str]
    samples: dict[str, dict[str, np.ndarray]] = field(repr=False)
    objectives: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    point: dict[str, dict[str, float]] = field(default_factory=dict, repr=False)
    draws: dict[str, dict[str, np.ndarray]] = field(default_factory=dict, repr=False)

    def compare(self, a: str, b: str) -> dict[str, M.Estimate]:
        """``a - b`` for every metric, with paired-bootstrap intervals (same episodes, same resamples)."""
        for name in (a, b):
            if name not in self.point:
                raise KeyError(f"no policy {name!r} in this evaluation (policies: {', '.join(self.policies)})")
        return M.paired_difference(self.point[a], self.draws[a], self.point[b], self.draws[b])

    def metrics_json(self) -> dict:
        """The content of ``metrics.json``: deterministic for a given seed (no timestamps)."""
        return {
            "scenario": self.config.name,
            "episodes": self.episodes,
            "seed": self.seed,
            "seeds": [self.seed, self.seed + self.episodes - 1],
            "steps_per_episode": self.config.episode_steps,
            "risk_aversion": self.config.agent.risk_aversion,
            "pnl_scale_usd": self.config.pnl_scale,
            "bootstrap": {
                "method": "percentile, paired over episodes",
                "resamples": self.n_resamples,
                "confidence": M.CONFIDENCE,
                "seed": self.seed,
            },
            "metrics": {
                k: {"label": s.label, "unit": s.unit, "better": s.better, "description": s.description}
                for k, s in M.METRICS.items()
                if k in self.estimates[self.policies[0]]
            },
            "policies": {
                name: {
                    "source": self.sources[name],
                    "metrics": {k: e.as_dict() for k, e in self.estimates[name].items()},
                }
                for name in self.policies
            },
            "objective": {"metric": OBJECTIVE, "values": self.objectives},
            "best": self.best,
            "reference": self.reference,
            "notes": self.notes,
            "paired_differences": {
                name: {k: e.as_dict() for k, e in self.paired[name].items()}
                for name in self.policies
                if name != self.reference
            },
        }

    def episodes_csv(self) -> str:
        """``episodes.csv``: one row per policy x episode; with a second-order feature on, its
        measures (:data:`~hedgegym.envs.market.SECOND_ORDER_METRICS`) in the last columns."""
        columns = [
            c
            for c in (
                *_EPISODE_KEYS,
                "vol_amplification_no_agent_impact",
                "agent_vol_amplification",
                "spot_final",
                "exo_spot_final",
                *SECOND_ORDER_METRICS,  # where a second-order feature is on
            )
            if c in self.per_episode[self.policies[0]]
        ]
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["policy", "episode", "seed", *columns])
        for name in self.policies:
            data = self.per_episode[name]
            for j in range(self.episodes):
                writer.writerow([name, j, self.seed + j, *(repr(float(data[c][j])) for c in columns)])
        return buf.getvalue()

    def write(self, run_dir: str | Path, command: str | None = None) -> Path:
        """Write metrics.json, episodes.csv, report.md, config.yaml, run_info.json and the PNG plots
        into ``run_dir``, created if missing; an existing non-empty directory is refused
        (:func:`hedgegym.train.io.claim_dir`), so no earlier run is overwritten."""
        from hedgegym.train.plots import plot_pnl_distributions, plot_sample_paths, plot_slippage_vs_amplification
        from hedgegym.train.report import report_markdown

        run_dir = claim_dir(run_dir)
        write_json_atomic(run_dir / "metrics.json", self.metrics_json())
        write_text_atomic(run_dir / "episodes.csv", self.episodes_csv())
        save_config(self.config, run_dir / "config.yaml")
        plot_pnl_distributions(self, run_dir / "pnl_distribution.png")
        plot_slippage_vs_amplification(self, run_dir / "slippage_vs_amplification.png")
        plot_sample_paths(self, run_dir / "sample_paths.png")
        write_text_atomic(run_dir / "report.md", report_markdown(self, command))
        write_json_atomic(
            run_dir / "run_info.json",
            {
                "finished_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "seconds": round(self.seconds, 3),
                "command": command,
                "git_commit": git_commit(),
                "python": sys.version.split()[0],
            },
        )
        return run_dir


def evaluate(
    policies,
    scenario="default",
    episodes: int = 1000,
    seed: int = 0,
    *,
    batch_size: int = BATCH,
    n_resamples: int = M.N_RESAMPLES,
    n_sample_paths: int = N_SAMPLE_PATHS,
    agent_impact_rerun: bool = True,
    progress: Callable[[int], None] | None = None,
) -> EvaluationResult:
    """Evaluate ``policies`` on ``episodes`` episodes of ``scenario`` (episode j on seed ``seed + j``).

    Args:
        policies: ``{name: policy}``, or a list of baseline names (``"delta"``, ``"leland@perp"``),
            ``--policy`` strings (model ``.zip``, ``module:function``), policies and
            ``(name, policy)`` pairs.
        scenario: a :class:`ScenarioConfig`, a scenario name, or a mapping validated into one.
        episodes: number of episodes per policy, in [1, 1,000,000].
        seed: seed of episode 0, in [0, 2**63 - episodes] (every episode's seed is an int64); also
            seeds the bootstrap.
        batch_size: Market rows per batch, at most :data:`BATCH` (~85 MB).
        n_resamples: bootstrap resamples per interval.
        agent_impact_rerun: rerun every policy with the agent's impact off, for its own share of the
            volatility amplification (doubles the simulation cost).
        progress: optional ``progress(env_steps_done)`` callback.
    """
    config = load_scenario_arg(scenario)
    check_count(episodes, "episodes", "episode")
    check_seed(seed, episodes, "seed", "episodes")
    if not 1 <= batch_size <= BATCH:
        raise ValueError(f"batch_size must be in [1, {BATCH}] (got {batch_size})")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1 (got {n_resamples})")
    if n_sample_paths < 1:
        raise ValueError(f"n_sample_paths must be >= 1, for the sample-paths plot (got {n_sample_paths})")
    # A trained model is judged on the interface it was trained for: its agent fields override the
    # scenario's for every policy (the baselines invert any action mapping, so they meet the same market).
    items = list(policies.items()) if isinstance(policies, Mapping) else list(policies)
    config, notes = with_policy_interface(config, items)
    resolved = resolve_policies(items, config)
    seeds = np.arange(seed, seed + episodes, dtype=np.int64)
    started = time.perf_counter()

    per_episode: dict[str, dict[str, np.ndarray]] = {}
    samples: dict[str, dict[str, np.ndarray]] = {}
    for name, (policy, _) in resolved.items():
        data, sample = run_policy(
            policy, config, seeds, name=name, batch_size=batch_size, n_sample_paths=n_sample_paths, progress=progress
        )
        if agent_impact_rerun:
            without, sample_without = run_policy(
                policy,
                config,
                seeds,
                name=name,
                agent_impact=False,
                batch_size=batch_size,
                n_sample_paths=n_sample_paths,
                progress=progress,
            )
            data["realised_vol_no_agent_impact"] = without["realised_vol"]
            data["vol_amplification_no_agent_impact"] = without["vol_amplification"]
            data["agent_vol_amplification"] = data["vol_amplification"] - without["vol_amplification"]
            sample["spot_no_agent_impact"] = sample_without["spot"]
        per_episode[name] = data
        samples[name] = sample

    # One set of resamples weighs every policy: the bootstraps are paired across policies.
    boots = M.bootstrap_many(per_episode, config.agent.risk_aversion, config.pnl_scale, n_resamples, seed)
    names = list(resolved)
    return assemble_result(
        config,
        per_episode,
        samples,
        {n: boots[n][0] for n in names},
        {n: boots[n][1] for n in names},
        baselines=[n for n in names if isinstance(resolved[n][0], Baseline)],
        episodes=episodes,
        seed=seed,
        n_resamples=n_resamples,
        sources={n: src for n, (_, src) in resolved.items()},
        notes=notes,
        seconds=time.perf_counter() - started,
    )


def assemble_result(
    config: ScenarioConfig,
    per_episode: Mapping[str, dict[str, np.ndarray]],
    samples: Mapping[str, dict[str, np.ndarray]],
    point: Mapping[str, dict[str, float]],
    draws: Mapping[str, dict[str, np.ndarray]],
    *,
    baselines: Sequence[str],
    episodes: int,
    seed: int,
    n_resamples: int,
    sources: Mapping[str, str],
    notes: Sequence[str],
    seconds: float = 0.0,
) -> EvaluationResult:
    """The :class:`EvaluationResult` of the policies of ``point`` (in its order) from their episodes
    and bootstraps: objectives, intervals, the reference (the best of ``baselines`` by the objective,
    or of every policy when none is a baseline), paired differences against it, the best per metric.

    The tail of :func:`evaluate`, and of ``hedgegym matrix`` (:func:`hedgegym.train.matrix.assemble`),
    which merges Ray blocks: one function, so the two agree bit for bit.
    """
    names = list(point)
    objectives = {n: objective(per_episode[n], config) for n in names}
    estimates = {n: M.summarize(point[n], draws[n]) for n in names}
    candidates = [n for n in names if n in set(baselines)] or names
    reference = M.best_of({n: objectives[n] for n in candidates}, "max") or names[0]
    paired = {n: M.paired_difference(point[n], draws[n], point[reference], draws[reference]) for n in names}
    best = {}
    for metric, spec in M.METRICS.items():
        if metric in point[names[0]]:
            values = objectives if metric == OBJECTIVE else {n: point[n][metric] for n in names}
            winner = M.best_of(values, spec.better)
            if winner is not None:
                best[metric] = winner
    return EvaluationResult(
        config=config,
        episodes=int(episodes),
        seed=int(seed),
        n_resamples=n_resamples,
        policies=names,
        sources=dict(sources),
        per_episode=dict(per_episode),
        estimates=estimates,
        paired=paired,
        reference=reference,
        best=best,
        samples=dict(samples),
        objectives=objectives,
        notes=list(notes),
        seconds=seconds,
        point=dict(point),
        draws=dict(draws),
    )


def load_scenario_arg(scenario) -> ScenarioConfig:
    """A :class:`ScenarioConfig` from a config, a mapping, a scenario name or a YAML path."""
    return resolve_config(scenario)
