"""`hedgegym evaluate`: any policy against the classical hedgers, on the same paths.

:func:`evaluate` runs every policy on the same episodes — episode ``j`` on seed ``seed + j``
(episode index 0, as ``HedgingEnv.reset(seed=seed + j)``), so all policies meet the same exogenous
shocks (MODEL.md §1) — directly on batches of :class:`~hedgegym.envs.market.Market` rows, then
reruns the same seeds with the agent's impact off to measure its own share of the volatility
amplification. It returns an :class:`EvaluationResult`: per-episode values, every metric of
:mod:`hedgegym.train.metrics` with its bootstrap interval, and paired differences against the best
baseline. :meth:`EvaluationResult.write` saves ``metrics.json``, ``episodes.csv``, ``report.md`` and
the plots to a run directory.

A policy is a callable ``policy(obs[N, OBS_DIM], market) -> actions[N, n_enabled_venues]`` in
[-1, 1] (see :mod:`hedgegym.agents.baselines`); actions are clipped to [-1, 1] and mapped by
``market.actions_to_trades``, exactly as the envs do. :func:`load_policy` turns the CLI's
``--policy`` strings into policies: a stable-baselines3 model ``.zip`` (with its ``VecNormalize``
statistics if saved beside it) or a Python callable ``module:function``.

Example:
    >>> from hedgegym.train.evaluate import evaluate
    >>> result = evaluate(["no_hedge", "delta"], "default", episodes=64, seed=0, n_resamples=200)
    >>> result.policies
    ['no_hedge', 'delta@spot']
    >>> result.estimates["delta@spot"]["pnl_std"].value < result.estimates["no_hedge"]["pnl_std"].value
    True
"""

from __future__ import annotations

import csv
import importlib
import importlib.util
import io
import pickle
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from hedgegym.agents.baselines import BASELINES, Baseline, make_baseline
from hedgegym.envs.config import ScenarioConfig, resolve_scenario, save_config, validate_config
from hedgegym.envs.layout import O_EXO_SPOT, O_SPOT, OBS_DIM
from hedgegym.envs.market import Market, pin_strike
from hedgegym.train import metrics as M
from hedgegym.train.io import claim_dir, git_commit, save_figure_atomic, write_json_atomic, write_text_atomic

BATCH = 4096
"""Most Market rows stepped together. All episodes of a scenario have the same length, so a batch
runs exactly one episode per row and needs no autoreset."""

N_SAMPLE_PATHS = 5
# Per-episode columns kept from Market.episode_metrics (episodes.csv order).
_EPISODE_KEYS = ("pnl", "book_pnl", "hedge_pnl", "fees", "slippage_usd", "slippage_bps", "funding", "carry",
                 "turnover_usd", "n_trades", "realised_vol", "realised_vol_exo", "vol_amplification", "mean_phi",
                 "crisis_steps", "halt_steps", "pin_distance", "pin_distance_exo", "reward")


class PolicyError(ValueError):
    """A policy cannot be loaded or returned bad actions; the message says which and why."""


# ------------------------------------------------------------------------------------ policies
OBSERVATION_SHAPE = (OBS_DIM,)
"""Shape of one observation, the same in every scenario (a row of ``Market.observe``)."""


def action_shape(config: ScenarioConfig) -> tuple[int]:
    """Shape of one action: one entry per venue the agent may trade."""
    return (len(config.agent.venues),)


class SB3Policy:
    """A trained stable-baselines3 model as a policy: ``model.predict(obs, deterministic=True)``.

    ``obs_normalizer``: a ``VecNormalize`` loaded from its pickle; its observation statistics
    (frozen) are applied first, as in training.
    """

    def __init__(self, model, obs_normalizer=None, name: str = "sb3", source: str = ""):
        self.model = model
        self.obs_normalizer = obs_normalizer
        self.name = name
        self.source = source or f"stable-baselines3 {type(model).__name__} {name}"

    def __call__(self, obs: np.ndarray, market=None) -> np.ndarray:
        if self.obs_normalizer is not None:
            obs = self.obs_normalizer.normalize_obs(obs)
        actions, _ = self.model.predict(obs, deterministic=True)
        return actions

    def __repr__(self) -> str:
        return f"SB3Policy({self.name!r})"


def _sb3_algorithm(data: Mapping[str, Any], path: Path):
    """The stable-baselines3 class that saved ``data`` (from its policy class)."""
    import stable_baselines3 as sb3

    policy_class = data.get("policy_class")
    module = getattr(policy_class, "__module__", "")
    if module.startswith("stable_baselines3.common.policies"):
        # PPO and A2C share the actor-critic policy; PPO alone saves a clip range.
        return sb3.PPO if "clip_range" in data else sb3.A2C
    for algo in ("sac", "td3", "ddpg"):
        if module.startswith(f"stable_baselines3.{algo}."):
            return {"sac": sb3.SAC, "td3": sb3.TD3, "ddpg": sb3.DDPG}[algo]
    raise PolicyError(f"{path}: unsupported stable-baselines3 policy class {policy_class!r} "
                      "(PPO, A2C, SAC, TD3 and DDPG are supported; wrap anything else as module:function)")


def _vecnormalize_path(path: Path) -> Path | None:
    for candidate in (path.with_name(f"{path.stem}_vecnormalize.pkl"), path.with_name("vecnormalize.pkl")):
        if candidate.is_file():
            return candidate
    return None


def load_sb3_policy(path: str | Path, config: ScenarioConfig) -> SB3Policy:
    """Load a stable-baselines3 model zip as a policy for ``config``'s spaces.

    Looks for ``<stem>_vecnormalize.pkl`` or ``vecnormalize.pkl`` beside the zip and applies its
    observation statistics. Raises :class:`PolicyError` if the file is missing or not a model, or
    its observation or action space does not match the scenario's.
    """
    path = Path(path)
    if not path.is_file():
        raise PolicyError(f"policy file {str(path)!r} does not exist")
    from stable_baselines3.common.save_util import load_from_zip_file

    try:
        data, _, _ = load_from_zip_file(path, device="cpu", load_data=True)
    except Exception as err:  # whatever fails in reading it, the file is not a model SB3 can load
        raise PolicyError(f"{path} is not a stable-baselines3 model zip ({type(err).__name__}: {err})") from None
    if not data or "observation_space" not in data:
        raise PolicyError(f"{path} is not a stable-baselines3 model zip (no saved observation space)")
    _check_spaces(path, data["observation_space"], data["action_space"], config)
    model = _sb3_algorithm(data, path).load(path, device="cpu")
    normalizer = None
    stats = _vecnormalize_path(path)
    if stats is not None:
        with stats.open("rb") as f:
            normalizer = pickle.load(f)
        mean = getattr(getattr(normalizer, "obs_rms", None), "mean", None)
        if mean is None or np.shape(mean) != OBSERVATION_SHAPE:
            raise PolicyError(f"{stats}: observation statistics of shape {np.shape(mean)} do not match the "
                              f"scenario's observations {OBSERVATION_SHAPE}")
        normalizer.training = False
    source = f"stable-baselines3 {type(model).__name__} {path}" + (f" with {stats.name}" if stats else "")
    return SB3Policy(model, normalizer, name=path.stem, source=source)


def _check_spaces(path: Path, obs_space, act_space, config: ScenarioConfig) -> None:
    want_obs, want_act = OBSERVATION_SHAPE, action_shape(config)
    obs_shape = getattr(obs_space, "shape", None)
    if obs_shape != want_obs:
        raise PolicyError(
            f"{path}: the model was trained on a different observation space ({obs_space}); scenario "
            f"{config.name!r} observes {want_obs} (hedgegym.envs.layout.OBS_NAMES). Retrain on this "
            "hedgegym version or evaluate it on the scenario it was trained on")
    act_shape = getattr(act_space, "shape", None)
    if act_shape != want_act:
        raise PolicyError(
            f"{path}: the model acts on {act_space}, but scenario {config.name!r} expects one action per "
            f"venue of agent.venues {config.agent.venues}, shape {want_act}")


def load_callable(spec: str) -> Callable:
    """``module:function`` (or ``path/to/file.py:function``) -> the callable."""
    module_name, sep, attr = spec.rpartition(":")
    if not sep or not module_name or not attr:
        raise PolicyError(f"policy {spec!r}: expected a model .zip or module:function")
    try:
        if module_name.endswith(".py"):
            file = Path(module_name)
            if not file.is_file():
                raise PolicyError(f"policy {spec!r}: file {module_name!r} does not exist")
            module_spec = importlib.util.spec_from_file_location(file.stem, file)
            module = importlib.util.module_from_spec(module_spec)
            module_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(module_name)
    except ImportError as err:
        raise PolicyError(f"policy {spec!r}: cannot import {module_name!r} ({err})") from None
    fn = getattr(module, attr, None)
    if fn is None:
        raise PolicyError(f"policy {spec!r}: module {module_name!r} has no attribute {attr!r}")
    if not callable(fn):
        raise PolicyError(f"policy {spec!r}: {attr!r} is not callable")
    return fn


def load_policy(spec: str, config: ScenarioConfig) -> Callable:
    """A ``--policy`` string as a policy: an SB3 ``.zip`` or ``module:function``."""
    if spec.endswith(".zip") or Path(spec).is_file():
        return load_sb3_policy(spec, config)
    if ":" in spec:
        return load_callable(spec)
    raise PolicyError(f"policy {spec!r}: no such file; expected a stable-baselines3 model .zip or "
                      "module:function")


def expand_baselines(spec: str | None, config: ScenarioConfig) -> list[str]:
    """Baseline names of ``--baselines``: ``all``, ``none`` or a comma list (``delta,leland@perp``).

    ``all``: every baseline on the configured venue, and — when the agent has several venues — the
    hedgers again with ``@cheapest`` routing.
    """
    if spec is None or spec.strip() == "all":
        names = list(BASELINES)
        if len(config.agent.venues) > 1 and config.baselines.venue != "cheapest":
            names += [f"{kind}@cheapest" for kind in BASELINES if kind != "no_hedge"]
        return names
    if spec.strip() == "none":
        return []
    names = [s.strip() for s in spec.split(",") if s.strip()]
    if not names:
        raise PolicyError("--baselines is empty; give all, none or names separated by commas")
    return names


def resolve_policies(policies, config: ScenarioConfig) -> dict[str, tuple[Callable, str]]:
    """``{name: (policy, source)}`` from a mapping of names to policies or a list whose items are
    baseline names, ``--policy`` strings, policies, or ``(name, policy)`` pairs."""
    items = list(policies.items()) if isinstance(policies, Mapping) else list(policies)
    out: dict[str, tuple[Callable, str]] = {}
    for item in items:
        if isinstance(item, tuple):
            name, policy = item
            source = _describe(policy)
        elif isinstance(item, str):
            if item.partition("@")[0] in BASELINES:
                policy = make_baseline(item, config)
                name, source = policy.name, f"baseline {policy.name}"
            elif item.endswith(".zip") or ":" in item or Path(item).exists():
                policy = load_policy(item, config)
                name, source = item, _describe(policy)
            else:
                raise PolicyError(f"unknown baseline or policy {item!r}; known baselines: "
                                  f"{', '.join(BASELINES)} (optionally @spot, @perp, @future, @cheapest); "
                                  "policies: a model .zip or module:function")
        elif callable(item):
            policy = item
            name = getattr(item, "name", None) or getattr(item, "__name__", None) or type(item).__name__
            source = _describe(item)
        else:
            raise PolicyError(f"not a policy: {item!r}")
        if name in out:
            raise PolicyError(f"policy {name!r} is given twice")
        out[name] = (policy, source)
    if not out:
        raise PolicyError("nothing to evaluate: give at least one policy or baseline")
    return out


def _describe(policy) -> str:
    if isinstance(policy, Baseline):
        return f"baseline {policy.name}"
    if isinstance(getattr(policy, "source", None), str):
        return policy.source
    module = getattr(policy, "__module__", None) or type(policy).__module__
    return f"{module}:{getattr(policy, '__qualname__', type(policy).__qualname__)}"


# ------------------------------------------------------------------------------------ running
def _actions(policy, obs: np.ndarray, market: Market, name: str, n_act: int) -> np.ndarray:
    actions = np.asarray(policy(obs, market), dtype=np.float64)
    if actions.shape == (market.n_envs,) and n_act == 1:
        actions = actions[:, None]
    if actions.shape != (market.n_envs, n_act):
        raise PolicyError(f"policy {name!r} returned actions of shape {actions.shape}; expected "
                          f"({market.n_envs}, {n_act}): one row per env, one column per venue of agent.venues")
    if not np.all(np.isfinite(actions)):
        raise PolicyError(f"policy {name!r} returned NaN or inf actions")
    return np.clip(actions, -1.0, 1.0)


def run_policy(policy, config: ScenarioConfig, seeds: np.ndarray, *, name: str = "policy",
               agent_impact: bool = True, batch_size: int = BATCH, n_sample_paths: int = N_SAMPLE_PATHS,
               progress: Callable[[int], None] | None = None) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Run one episode per seed (episode index 0) under ``policy``; returns ``(per_episode, sample)``.

    ``per_episode``: the columns of ``Market.episode_metrics`` plus ``spot_final`` and
    ``exo_spot_final``; ``sample``: ``spot`` and ``exo_spot`` ``[n_sample_paths, steps + 1]`` of the
    first episodes.
    """
    steps = config.episode_steps
    n_act = len(config.agent.venues)
    per_batch: dict[str, list[np.ndarray]] = {}
    sample: dict[str, np.ndarray] = {}
    for start in range(0, len(seeds), batch_size):
        batch = seeds[start:start + batch_size]
        market = Market(config, n_envs=len(batch), agent_impact=agent_impact)
        market.reset(seeds=batch, episodes=0)
        m = min(n_sample_paths, len(batch)) if start == 0 else 0
        spot = np.empty((m, steps + 1))
        exo = np.empty((m, steps + 1))
        spot[:, 0], exo[:, 0] = market.spot[:m], market.exo_spot[:m]
        for k in range(steps):
            actions = _actions(policy, market.observe(), market, name, n_act)
            out = market.step(market.actions_to_trades(actions), check=False)
            spot[:, k + 1], exo[:, k + 1] = out[:m, O_SPOT], out[:m, O_EXO_SPOT]
            if progress is not None:
                progress(len(batch))
        ep = market.episode_metrics()
        ep["spot_final"] = market.spot.copy()
        ep["exo_spot_final"] = market.exo_spot.copy()
        for key, values in ep.items():
            per_batch.setdefault(key, []).append(values)
        if m:
            sample = {"spot": spot, "exo_spot": exo}
    return {k: np.concatenate(v) for k, v in per_batch.items()}, sample


@dataclass
class EvaluationResult:
    """Everything one evaluation measured. Names of policies in run order in ``policies``.

    ``per_episode[name][column]``: one value per episode (episode j on seed ``seed + j``);
    ``estimates[name][metric]``: :class:`~hedgegym.train.metrics.Estimate` with its 95 % interval;
    ``paired[name][metric]``: ``name - reference`` on the same episodes, paired-bootstrap interval;
    ``reference``: the best baseline by the mean-variance objective (or the best policy, if no
    baseline ran); ``best[metric]``: the best policy per metric (where a direction is defined);
    ``samples[name]``: ``spot``, ``exo_spot``, ``spot_no_agent_impact`` of the first episodes;
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
            "bootstrap": {"method": "percentile, paired over episodes", "resamples": self.n_resamples,
                          "confidence": M.CONFIDENCE, "seed": self.seed},
            "metrics": {k: {"label": s.label, "unit": s.unit, "better": s.better, "description": s.description}
                        for k, s in M.METRICS.items() if k in self.estimates[self.policies[0]]},
            "policies": {name: {"source": self.sources[name],
                                "metrics": {k: e.as_dict() for k, e in self.estimates[name].items()}}
                         for name in self.policies},
            "best": self.best,
            "reference": self.reference,
            "paired_differences": {name: {k: e.as_dict() for k, e in self.paired[name].items()}
                                   for name in self.policies if name != self.reference},
        }

    def episodes_csv(self) -> str:
        """``episodes.csv``: one row per policy x episode."""
        columns = [c for c in (*_EPISODE_KEYS, "vol_amplification_no_agent_impact", "agent_vol_amplification",
                               "spot_final", "exo_spot_final") if c in self.per_episode[self.policies[0]]]
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
        run_dir = claim_dir(run_dir)
        write_json_atomic(run_dir / "metrics.json", self.metrics_json())
        write_text_atomic(run_dir / "episodes.csv", self.episodes_csv())
        save_config(self.config, run_dir / "config.yaml")
        plot_pnl_distributions(self, run_dir / "pnl_distribution.png")
        plot_slippage_vs_amplification(self, run_dir / "slippage_vs_amplification.png")
        plot_sample_paths(self, run_dir / "sample_paths.png")
        write_text_atomic(run_dir / "report.md", report_markdown(self, command))
        write_json_atomic(run_dir / "run_info.json", {
            "finished_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "seconds": round(self.seconds, 3),
            "command": command,
            "git_commit": git_commit(),
            "python": sys.version.split()[0],
        })
        return run_dir


def evaluate(policies, scenario="default", episodes: int = 1000, seed: int = 0, *, batch_size: int = BATCH,
             n_resamples: int = M.N_RESAMPLES, n_sample_paths: int = N_SAMPLE_PATHS, agent_impact_rerun: bool = True,
             progress: Callable[[int], None] | None = None) -> EvaluationResult:
    """Evaluate ``policies`` on ``episodes`` episodes of ``scenario`` (episode j on seed ``seed + j``).

    Args:
        policies: ``{name: policy}``, or a list of baseline names (``"delta"``, ``"leland@perp"``),
            ``--policy`` strings (model ``.zip``, ``module:function``), policies and
            ``(name, policy)`` pairs.
        scenario: a :class:`ScenarioConfig`, a scenario name, or a mapping validated into one.
        episodes: number of episodes per policy, >= 1.
        seed: seed of episode 0, >= 0; also seeds the bootstrap.
        batch_size: Market rows per batch (<= 4096 keeps memory flat).
        n_resamples: bootstrap resamples per interval.
        agent_impact_rerun: rerun every policy with the agent's impact off, for its own share of the
            volatility amplification (doubles the simulation cost).
        progress: optional ``progress(env_steps_done)`` callback.
    """
    config = load_scenario_arg(scenario)
    if isinstance(episodes, bool) or not isinstance(episodes, (int, np.integer)) or episodes < 1:
        raise ValueError(f"episodes must be an integer >= 1 (got {episodes!r})")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0 (got {seed!r})")
    if not 1 <= batch_size <= BATCH:
        raise ValueError(f"batch_size must be in [1, {BATCH}] (got {batch_size})")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1 (got {n_resamples})")
    if n_sample_paths < 1:
        raise ValueError(f"n_sample_paths must be >= 1, for the sample-paths plot (got {n_sample_paths})")
    resolved = resolve_policies(policies, config)
    seeds = np.arange(seed, seed + episodes, dtype=np.int64)
    started = time.perf_counter()

    per_episode: dict[str, dict[str, np.ndarray]] = {}
    samples: dict[str, dict[str, np.ndarray]] = {}
    for name, (policy, _) in resolved.items():
        data, sample = run_policy(policy, config, seeds, name=name, batch_size=batch_size,
                                  n_sample_paths=n_sample_paths, progress=progress)
        if agent_impact_rerun:
            without, sample_without = run_policy(policy, config, seeds, name=name, agent_impact=False,
                                                 batch_size=batch_size, n_sample_paths=n_sample_paths,
                                                 progress=progress)
            data["realised_vol_no_agent_impact"] = without["realised_vol"]
            data["vol_amplification_no_agent_impact"] = without["vol_amplification"]
            data["agent_vol_amplification"] = data["vol_amplification"] - without["vol_amplification"]
            sample["spot_no_agent_impact"] = sample_without["spot"]
        per_episode[name] = data
        samples[name] = sample

    kappa, scale = config.agent.risk_aversion, config.pnl_scale
    point, draws, estimates = {}, {}, {}
    for name in resolved:
        # The same bootstrap seed for every policy: the resamples are paired across policies.
        point[name], draws[name] = M.bootstrap(per_episode[name], kappa, scale, n_resamples, seed)
        estimates[name] = M.summarize(point[name], draws[name])

    names = list(resolved)
    baselines = [n for n in names if isinstance(resolved[n][0], Baseline)] or names
    reference = M.best_of({n: point[n]["mean_variance"] for n in baselines}, "max") or names[0]
    paired = {n: M.paired_difference(point[n], draws[n], point[reference], draws[reference]) for n in names}
    best = {}
    for metric, spec in M.METRICS.items():
        if metric in point[names[0]]:
            winner = M.best_of({n: point[n][metric] for n in names}, spec.better)
            if winner is not None:
                best[metric] = winner
    return EvaluationResult(
        config=config, episodes=int(episodes), seed=int(seed), n_resamples=n_resamples, policies=names,
        sources={n: src for n, (_, src) in resolved.items()}, per_episode=per_episode, estimates=estimates,
        paired=paired, reference=reference, best=best, samples=samples, seconds=time.perf_counter() - started,
        point=point, draws=draws,
    )


def load_scenario_arg(scenario) -> ScenarioConfig:
    """A :class:`ScenarioConfig` from a config, a mapping or a scenario name."""
    if isinstance(scenario, str):
        return resolve_scenario(scenario)
    return validate_config(scenario)


# ------------------------------------------------------------------------------------ reporting
TABLE_COLUMNS = (
    ("hedging P&L and risk, USD per episode", ("mean_variance", "pnl_mean", "pnl_std", "var_95", "cvar_95",
                                               "entropic_risk")),
    ("trading costs per episode", ("slippage_usd", "slippage_bps", "fees", "funding", "carry", "turnover_usd",
                                   "n_trades")),
    ("market impact", ("vol_amplification", "agent_vol_amplification", "pin_distance", "crisis_steps")),
)
"""The report's tables: (title, metrics)."""


def format_value(metric: str, value: float) -> str:
    """A metric's value for tables: USD compact (``-110.7k``, ``3.42M``), ratios with four decimals."""
    unit = M.METRICS[metric].unit
    if metric in ("vol_amplification", "vol_amplification_no_agent_impact"):
        return f"{value:.4f}"
    if metric == "agent_vol_amplification":
        return f"{value:+.5f}"
    if metric in ("pin_distance", "pin_distance_exo"):
        return f"{value:.2%}"
    if unit == "bps":
        return f"{value:.2f}"
    if unit == "USD":
        size = abs(value)
        if size >= 1e6:
            return f"{value / 1e6:.3g}M" if size < 1e9 else f"{value / 1e9:.3g}B"
        if size >= 1e4:
            return f"{value / 1e3:.4g}k"
        return f"{value:,.0f}"
    if unit == "steps" or metric == "n_trades":
        return f"{value:.1f}"
    return f"{value:.4g}"


def format_estimate(metric: str, estimate: M.Estimate, ci: bool = True, sep: str = " ") -> str:
    """``value [low, high]`` (or just the value)."""
    text = format_value(metric, estimate.value)
    if ci:
        text += f"{sep}[{format_value(metric, estimate.low)}, {format_value(metric, estimate.high)}]"
    return text


def rich_tables(result: EvaluationResult) -> list:
    """The report's tables as ``rich`` tables, best value per column in bold green with ``*``."""
    from rich.table import Table

    tables = []
    for title, metric_names in TABLE_COLUMNS:
        metric_names = [m for m in metric_names if m in result.estimates[result.policies[0]]]
        table = Table(title=f"{result.config.name}, {result.episodes} episodes, seed {result.seed}: {title} "
                            "(value, 95 % CI; * best)", show_lines=True)
        table.add_column("policy", style="bold")
        for m in metric_names:
            spec = M.METRICS[m]
            unit = f" ({spec.unit})" if spec.unit in ("bps", "steps") else ""
            table.add_column(f"{spec.label}{unit}", justify="right")
        for name in result.policies:
            cells = []
            for m in metric_names:
                text = format_estimate(m, result.estimates[name][m], sep="\n")
                if result.best.get(m) == name:
                    text = f"[bold green]*{text}[/]"
                cells.append(text)
            table.add_row(name, *cells)
        tables.append(table)
    return tables


def _markdown_table(result: EvaluationResult, metric_names: Sequence[str],
                    rows: Mapping[str, Mapping[str, M.Estimate]], mark_best: bool) -> str:
    header = "| policy | " + " | ".join(M.METRICS[m].label for m in metric_names) + " |"
    lines = [header, "|---|" + "---:|" * len(metric_names)]
    for name, values in rows.items():
        cells = []
        for m in metric_names:
            text = format_estimate(m, values[m])
            cells.append(f"**{text}**" if mark_best and result.best.get(m) == name else text)
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def report_markdown(result: EvaluationResult, command: str | None = None) -> str:
    """``report.md``: setting, the two tables, paired differences against the reference, plots."""
    cfg = result.config
    present = result.estimates[result.policies[0]]
    parts = [
        f"# hedgegym evaluation: {cfg.name}",
        "",
        f"{result.episodes} episodes per policy, episode j on seed {result.seed} + j (the same exogenous paths for "
        f"every policy), {cfg.episode_steps} steps of {cfg.episode.dt_hours:g} h. Mean-variance objective with "
        f"kappa = {cfg.agent.risk_aversion:g} per {cfg.pnl_scale:,.0f} USD. Intervals: 95 % percentile bootstrap "
        f"over episodes ({result.n_resamples} resamples, paired across policies). Best value per column in bold.",
    ]
    if command:
        parts += ["", f"Command: `{command}`"]
    parts += ["", "## Policies", ""]
    parts += [f"- **{name}**: {result.sources[name]}" for name in result.policies]
    for title, metric_names in TABLE_COLUMNS:
        metric_names = [m for m in metric_names if m in present]
        parts += ["", f"## {title[0].upper()}{title[1:]}", "",
                  _markdown_table(result, metric_names, {n: result.estimates[n] for n in result.policies}, True)]
    others = [n for n in result.policies if n != result.reference]
    if others:
        diff_metrics = [m for m in ("mean_variance", "pnl_mean", "pnl_std", "cvar_95", "entropic_risk",
                                    "slippage_usd", "fees", "n_trades", "agent_vol_amplification") if m in present]
        parts += ["", f"## Paired differences: policy - {result.reference}", "",
                  f"Reference: the best baseline by the mean-variance objective. An interval that excludes 0 "
                  f"is a significant difference on these {result.episodes} paths.", "",
                  _markdown_table(result, diff_metrics, {n: result.paired[n] for n in others}, False)]
    parts += ["", "## Plots", "",
              "![P&L distributions](pnl_distribution.png)", "",
              "![Slippage vs volatility amplification](slippage_vs_amplification.png)", "",
              f"![Sample paths under {result.best.get('mean_variance', result.reference)}](sample_paths.png)", "",
              "## Definitions", ""]
    parts += [f"- `{k}` ({s.unit or '-'}): {s.description}" for k, s in M.METRICS.items() if k in present]
    parts += ["", "Per-episode values: `episodes.csv`; all numbers: `metrics.json`; the scenario: `config.yaml`.", ""]
    return "\n".join(parts)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_pnl_distributions(result: EvaluationResult, path: str | Path) -> None:
    """Histogram of the episode P&L per policy (one panel each, shared axis), with the mean and the
    95 % VaR of the loss marked."""
    plt = _pyplot()
    names = result.policies
    data = {n: result.per_episode[n]["pnl"] for n in names}
    # Bins over the bulk of the typical policy: an unhedged book is often 10x wider than the rest,
    # and would squash every other histogram into one bin.
    lo = float(np.median([np.quantile(d, 0.005) for d in data.values()]))
    hi = float(np.median([np.quantile(d, 0.995) for d in data.values()]))
    pad = 0.25 * (hi - lo) if hi > lo else 1.0
    bins = np.linspace(lo - pad, hi + pad, 61)
    fig, axes = plt.subplots(len(names), 1, figsize=(9, 0.9 * len(names) + 1.2), sharex=True, squeeze=False)
    for ax, name in zip(axes[:, 0], names, strict=True):
        pnl = np.clip(data[name], bins[0], bins[-1])
        ax.hist(pnl, bins=bins, color="tab:blue", alpha=0.7)
        ax.axvline(data[name].mean(), color="black", lw=1.2)
        ax.axvline(-result.estimates[name]["var_95"].value, color="red", lw=1.2, ls="--")
        ax.set_yticks([])
        ax.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=8)
    axes[-1, 0].set_xlabel("episode P&L (USD); black: mean, red dashed: -VaR95; tails piled at the edges")
    axes[0, 0].set_title(f"{result.config.name}: P&L per episode, {result.episodes} episodes")
    save_figure_atomic(fig, path)
    plt.close(fig)


def plot_slippage_vs_amplification(result: EvaluationResult, path: str | Path) -> None:
    """One point per policy: slippage per episode against the volatility amplification, and against
    the agent's own share of it (with 95 % intervals)."""
    plt = _pyplot()
    has_share = "agent_vol_amplification" in result.estimates[result.policies[0]]
    fig, axes = plt.subplots(1, 2 if has_share else 1, figsize=(12 if has_share else 6.5, 4.8), squeeze=False)
    panels = [("vol_amplification", "vol amplification (spot vol / exogenous vol)")]
    if has_share:
        panels.append(("agent_vol_amplification", "agent's own share of the amplification"))
    for ax, (metric, label) in zip(axes[0], panels, strict=True):
        for name in result.policies:
            x, y = result.estimates[name]["slippage_usd"], result.estimates[name][metric]
            ax.errorbar(x.value, y.value, xerr=[[x.value - x.low], [x.high - x.value]],
                        yerr=[[y.value - y.low], [y.high - y.value]], fmt="o", ms=5, capsize=2, label=name)
            ax.annotate(name, (x.value, y.value), textcoords="offset points", xytext=(4, 4), fontsize=7)
        ax.set_xlabel("slippage per episode (USD)")
        ax.set_ylabel(label)
    axes[0][0].set_title(f"{result.config.name}: slippage vs volatility amplification")
    save_figure_atomic(fig, path)
    plt.close(fig)


def plot_sample_paths(result: EvaluationResult, path: str | Path) -> None:
    """Spot with feedback (solid), the exogenous price (dashed) and spot with the agent's impact off
    (dotted) on the first episodes, under the best policy by the mean-variance objective."""
    plt = _pyplot()
    name = result.best.get("mean_variance", result.reference)
    sample = result.samples[name]
    fig, ax = plt.subplots(figsize=(10, 4.8))
    steps = np.arange(sample["spot"].shape[1])
    for j in range(sample["spot"].shape[0]):
        line, = ax.plot(steps, sample["spot"][j], lw=1.2, label="spot (with feedback)" if j == 0 else None)
        ax.plot(steps, sample["exo_spot"][j], lw=1.0, ls="--", color=line.get_color(), alpha=0.8,
                label="exogenous (no feedback)" if j == 0 else None)
        if "spot_no_agent_impact" in sample:
            ax.plot(steps, sample["spot_no_agent_impact"][j], lw=0.9, ls=":", color=line.get_color(),
                    label="spot, agent's impact off" if j == 0 else None)
    ax.axhline(pin_strike(result.config), color="grey", lw=0.8, ls=":")
    ax.set_xlabel("step")
    ax.set_ylabel("USD")
    ax.set_title(f"{result.config.name}: sample paths under {name}")
    ax.legend(fontsize=8)
    save_figure_atomic(fig, path)
    plt.close(fig)

