"""The experiment config: one YAML file says what to train, on which market, and how to judge it.

An :class:`ExperimentConfig` has six sections: ``scenario`` (a named scenario or an inline one,
plus overrides), ``algorithm`` (SB3 algorithm, its hyperparameters and policy network), ``env``
(parallel envs, observation/reward normalisation), ``training`` (timesteps, seed, checkpoints,
torch settings), ``evaluation`` (held-out seeds, schedule, baselines) and ``output_dir``. Like the
scenario config it is strict: an unknown key, a wrong type, an out-of-range value, a
hyperparameter the algorithm does not take or a scenario that does not exist is a
:class:`~hedgegym.envs.config.ConfigError` at load time, naming the field, the value and what is
allowed, before any training starts.

Example:
    >>> from hedgegym.train.experiment import validate_experiment
    >>> cfg = validate_experiment({"scenario": "zero-dte", "algorithm": {"name": "ppo"},
    ...                            "training": {"total_timesteps": 100_000}})
    >>> cfg.scenario.resolved.episode_steps, cfg.run_name, cfg.evaluation.seed
    (288, 'ppo-zero-dte-s0', 1000000)
    >>> validate_experiment({"algorithm": {"name": "ppo", "hyperparameters": {"n_step": 64}},
    ...                      "training": {"total_timesteps": 100_000}})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    hedgegym.envs.config.ConfigError: invalid experiment config:
      algorithm.hyperparameters: PPO has no hyperparameter 'n_step'; allowed: batch_size, clip_range, ...
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from functools import cached_property
from typing import Any, Literal

import yaml
from pydantic import ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from hedgegym.agents import sb3
from hedgegym.agents.baselines import BASELINES
from hedgegym.agents.residual import BAND_HEDGERS, make_control
from hedgegym.envs.config import (
    ConfigError,
    ScenarioConfig,
    StrictModel,
    apply_overrides,
    format_validation_error,
    read_yaml,
    resolve_config,
)
from hedgegym.envs.family import FamilyConfig, check_family
from hedgegym.train.limits import MAX_EPISODES, SEED_LIMIT


# --------------------------------------------------------------------------------------- scenario
class ScenarioSpec(StrictModel):
    """The market: a named scenario or an inline scenario config, with dotted or nested overrides.

    In YAML, ``scenario: zero-dte`` is short for ``scenario: {name: zero-dte}``.
    """

    name: str | None = Field(None, description="Named scenario (`hedgegym scenarios`) or YAML path; default 'default'.")
    config: dict[str, Any] | None = Field(None, description="Inline scenario config: the sections of a scenario YAML.")
    overrides: dict[str, Any] = Field(
        default_factory=dict, description="Changes on top, dotted ({market.sigma: 0.8}) or nested."
    )
    randomize: FamilyConfig | None = Field(
        None,
        description="Train on a family of markets: these fields drawn per episode around the scenario "
        "(hedgegym.envs.family); evaluation stays on the scenario itself.",
    )

    @model_validator(mode="before")
    @classmethod
    def _name_shorthand(cls, data: Any) -> Any:
        return {"name": data} if isinstance(data, str) else data

    @model_validator(mode="after")
    def _resolves(self) -> ScenarioSpec:
        if self.name is not None and self.config is not None:
            raise ValueError(f"give either a scenario name or an inline config, not both (name={self.name!r})")
        try:
            self.resolved  # noqa: B018 - resolving here is the check that the scenario exists and validates
            if self.randomize is not None:
                check_family(self.randomize, self.resolved)
        except ConfigError as err:
            raise ValueError(str(err)) from None
        return self

    @cached_property
    def resolved(self) -> ScenarioConfig:
        """The validated :class:`ScenarioConfig` this spec names, overrides applied (nested ones merge)."""
        if self.config is None:
            return resolve_config(self.name, self.overrides)
        return resolve_config(self.config, self.overrides, label=" in scenario.config")


# --------------------------------------------------------------------------------------- limits
# SEED_LIMIT and MAX_EPISODES: hedgegym.train.limits, shared with the CLI and evaluate/simulate.
# SB3 seeds numpy's legacy generator with training.seed, which takes 32 bits.
TRAINING_SEED_MAX = 2**32 - 1
WARM_START_EPISODES_MAX = 2**19
"""Two warm-start evaluations' episodes fit in one training seed's stride of seeds (2**20)."""


# --------------------------------------------------------------------------------------- algorithm
# Allowed values of SB3's numeric hyperparameters, checked at load: SB3 fails late on some (a
# minibatch of 1 with advantage normalisation) and trains nonsense on others (a negative entropy
# coefficient rewards certainty, a learning rate <= 0 climbs the loss). A None (SB3's "off") passes.
_RANGES: dict[str, tuple[str, Callable[[float], bool]]] = {
    "learning_rate": ("> 0", lambda v: v > 0),
    "n_steps": (">= 1", lambda v: v >= 1),
    "batch_size": (">= 1", lambda v: v >= 1),
    "n_epochs": (">= 1", lambda v: v >= 1),
    "gamma": ("in (0, 1]", lambda v: 0 < v <= 1),
    "gae_lambda": ("in [0, 1]", lambda v: 0 <= v <= 1),
    "tau": ("in (0, 1]", lambda v: 0 < v <= 1),
    "clip_range": ("in (0, 1]: the policy ratio is clipped to [1 - clip_range, 1 + clip_range]", lambda v: 0 < v <= 1),
    "clip_range_vf": ("> 0, or null for no value clipping", lambda v: v > 0),
    "ent_coef": (">= 0 (a negative entropy bonus rewards a collapsing policy)", lambda v: v >= 0),
    "vf_coef": (">= 0", lambda v: v >= 0),
    "max_grad_norm": ("> 0", lambda v: v > 0),
    "target_kl": ("> 0, or null for no early stop", lambda v: v > 0),
    "sde_sample_freq": ("-1 (once per rollout) or >= 1", lambda v: v == -1 or v >= 1),
    "stats_window_size": (">= 1", lambda v: v >= 1),
    "buffer_size": (">= 1", lambda v: v >= 1),
    "learning_starts": (">= 0", lambda v: v >= 0),
    "gradient_steps": ("-1 (as many as env steps) or >= 1", lambda v: v == -1 or v >= 1),
    "target_update_interval": (">= 1", lambda v: v >= 1),
    "policy_delay": (">= 1", lambda v: v >= 1),
    "target_policy_noise": (">= 0", lambda v: v >= 0),
    "target_noise_clip": (">= 0", lambda v: v >= 0),
    "target_entropy": ("a finite number or 'auto'", math.isfinite),
}


class PolicyKwargs(StrictModel):
    """The policy network (SB3 ``policy_kwargs``); a field left unset takes SB3's default."""

    net_arch: list[int] | dict[str, list[int]] | None = Field(
        None, description="Hidden layer sizes, shared ([64, 64]) or per head ({pi: [64], vf: [64]} / {pi, qf})."
    )
    activation_fn: Literal["tanh", "relu", "elu", "leaky_relu", "gelu", "silu"] | None = Field(
        None, description="Activation of the hidden layers, by name."
    )
    log_std_init: float | None = Field(None, description="Initial log std of the Gaussian policy (PPO, SAC).")
    ortho_init: bool | None = Field(None, description="Orthogonal weight initialisation (PPO).")
    n_critics: int | None = Field(None, ge=1, le=10, description="Number of Q networks (SAC, TD3).")
    share_features_extractor: bool | None = Field(None, description="Actor and critic share the features extractor.")

    @field_validator("net_arch")
    @classmethod
    def _layers(cls, v):
        layers = v if isinstance(v, list) else [n for head in (v or {}).values() for n in head]
        if any(n < 1 for n in layers):
            raise ValueError(f"layer sizes must be >= 1 (got {v})")
        return v


class ControlConfig(StrictModel):
    """What the policy's action means on top of a classical hedger (:mod:`hedgegym.agents.residual`).

    ``residual``: the market gets ``clip(b + scale * a, -1, 1)``, ``b`` the hedger's action;
    ``band``: the policy sets the width (x 4**a_w) and centre of a band hedger's no-trade band.
    Either way ``a = 0`` is the hedger, so a fresh policy starts at its score.
    """

    kind: Literal["residual", "band"] = Field(
        description="residual (additive correction) or band (band width and centre)."
    )
    baseline: str = Field(description="The hedger: a baseline name, optionally @venue (whalley_wilmott@cheapest).")
    scale: float = Field(1.0, gt=0.0, le=2.0, description="residual: action units of the correction at a = +-1.")
    centre: bool = Field(
        True, description="band: the policy also sets the band's centre (a_c); false: the width only, one action."
    )

    @model_validator(mode="after")
    def _builds(self) -> ControlConfig:
        kind = self.baseline.partition("@")[0]
        if kind not in BASELINES:
            raise ValueError(f"unknown baseline {kind!r}; known baselines: {', '.join(BASELINES)}")
        if self.kind == "band" and kind not in BAND_HEDGERS:
            raise ValueError(
                f"baseline {self.baseline!r}: band control needs a band hedger or one that rebalances fully "
                f"({', '.join(BAND_HEDGERS)})"
            )
        if self.kind != "band" and not self.centre:
            raise ValueError(f"centre=false is a band control's option (kind={self.kind!r} has no centre)")
        return self


class AlgorithmConfig(StrictModel):
    """The stable-baselines3 algorithm, its hyperparameters and its policy network."""

    name: Literal["ppo", "sac", "td3"] = Field(description="Algorithm: ppo (on-policy), sac or td3 (off-policy).")
    policy: Literal["MlpPolicy"] = Field("MlpPolicy", description="SB3 policy class (observations are a flat vector).")
    hyperparameters: dict[str, Any] = Field(
        default_factory=dict, description="Keyword arguments of the SB3 algorithm (n_steps, learning_rate, ...)."
    )
    policy_kwargs: PolicyKwargs = Field(PolicyKwargs(), description="The policy network.")
    action_noise_std: float | None = Field(
        None, gt=0.0, le=1.0, description="Gaussian exploration noise std, fraction of the action range (sac, td3)."
    )
    control: ControlConfig | None = Field(
        None, description="Act on top of a classical hedger (residual or band); none: the market's actions."
    )

    @field_validator("hyperparameters")
    @classmethod
    def _known_and_typed(cls, v: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        name = info.data.get("name")
        if name is None:  # the name itself failed; that error is reported
            return v
        from pydantic import TypeAdapter

        allowed = sb3.hyperparameters_signature(name)
        out = {}
        for key, value in v.items():
            if key not in allowed:
                raise ValueError(
                    f"{sb3.ALGORITHMS[name]} has no hyperparameter {key!r}; allowed: {', '.join(sorted(allowed))}"
                )
            param = allowed[key]
            if isinstance(value, bool) != isinstance(param.default, bool):
                # Strict both ways: YAML reads yes/no/true/false as booleans, so a string or number
                # given for a boolean (or a boolean for a number) is a mistake, not a spelling.
                got = "a boolean" if isinstance(value, bool) else f"a {type(value).__name__}"
                raise ValueError(f"{key}={value!r}: expected {_type_name(param)}, got {got}")
            try:
                # Lax mode on purpose: YAML reads 3e-4 (no dot) as a string; the adapter parses it.
                value = TypeAdapter(param.annotation, config=ConfigDict(arbitrary_types_allowed=True)).validate_python(
                    value
                )
            except ValidationError as err:
                raise ValueError(f"{key}={value!r}: expected {_type_name(param)} ({err.errors()[0]['msg']})") from None
            _check_range(key, value)
            out[key] = value
        return out

    @model_validator(mode="after")
    def _policy_and_noise(self) -> AlgorithmConfig:
        accepted = sb3.policy_parameters(self.name)
        for key, value in self.policy_kwargs:
            if value is not None and key not in accepted:
                raise ValueError(
                    f"policy_kwargs.{key}: the {sb3.ALGORITHMS[self.name]} policy does not take it; "
                    f"allowed: {', '.join(sorted(k for k in PolicyKwargs.model_fields if k in accepted))}"
                )
        heads = {"pi", "vf"} if self.name in sb3.ON_POLICY else {"pi", "qf"}
        arch = self.policy_kwargs.net_arch
        if isinstance(arch, dict) and set(arch) - heads:
            raise ValueError(
                f"policy_kwargs.net_arch: unknown head(s) {sorted(set(arch) - heads)} for "
                f"{self.name}; allowed: {sorted(heads)}"
            )
        if self.action_noise_std is not None and self.name in sb3.ON_POLICY:
            raise ValueError(
                f"action_noise_std={self.action_noise_std}: only off-policy algorithms (sac, td3) "
                "take exploration noise; ppo explores through its Gaussian policy (log_std_init)"
            )
        return self

    def hyperparameter(self, key: str) -> Any:
        """The value of hyperparameter ``key``: the config's, else SB3's default."""
        return self.hyperparameters.get(key, sb3.hyperparameter_default(self.name, key))


def _type_name(param) -> str:
    ann = param.annotation
    return getattr(ann, "__name__", None) or str(ann).replace("collections.abc.", "").replace("typing.", "")


def _check_range(key: str, value: Any) -> None:
    """``value`` within :data:`_RANGES` for ``key``; SAC's ``ent_coef`` and ``train_freq`` take strings too."""
    if key == "train_freq":
        freq, unit = value if isinstance(value, tuple) else (value, "step")
        if not (isinstance(freq, int) and freq >= 1 and unit in ("step", "episode")):
            raise ValueError(f"train_freq must be an integer >= 1 or [n >= 1, 'step' | 'episode'] (got {value!r})")
        return
    if isinstance(value, str):
        _check_auto(key, value)
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    if not math.isfinite(value):
        raise ValueError(f"{key} must be finite (got {value!r})")
    if key in _RANGES and not _RANGES[key][1](value):
        raise ValueError(f"{key} must be {_RANGES[key][0]} (got {value!r})")


def _check_auto(key: str, value: str) -> None:
    """SAC's ``ent_coef``: ``auto`` or ``auto_<initial value > 0>``; ``target_entropy``: ``auto``."""
    allowed = "'auto', 'auto_<initial value > 0>' (e.g. auto_0.1) or a number >= 0"
    if key == "ent_coef" and value.startswith("auto_"):
        try:
            initial = float(value[len("auto_") :])
        except ValueError:
            initial = math.nan
        if not (math.isfinite(initial) and initial > 0):
            raise ValueError(f"ent_coef must be {allowed} (got {value!r})")
    elif value != "auto":
        raise ValueError(f"{key} must be {allowed if key == 'ent_coef' else 'a number or auto'} (got {value!r})")


# --------------------------------------------------------------------------------------- env, training
class NormalizeConfig(StrictModel):
    """Running normalisation of observations and rewards (SB3 ``VecNormalize``), saved with the model."""

    observations: bool = Field(True, description="Standardise observations by running mean and std.")
    rewards: bool = Field(True, description="Scale rewards by the running std of the discounted return.")
    clip_observations: float = Field(10.0, gt=0.0, description="Clip normalised observations to +-this.")
    clip_rewards: float = Field(10.0, gt=0.0, description="Clip normalised rewards to +-this.")


class EnvConfig(StrictModel):
    """The batched training env."""

    n_envs: int = Field(64, ge=1, le=65536, description="Parallel envs, stepped together by the numba kernel.")
    parallel: bool = Field(False, description="Numba-parallel kernel over the cores (see agents.sb3.make_vec_env).")
    normalize: NormalizeConfig = Field(NormalizeConfig(), description="Observation and reward normalisation.")
    market_context: bool = Field(
        False,
        description="Append the market's parameters to every observation (hedgegym.envs.context): "
        "the policy can tell the family's markets apart. Needs scenario.randomize.",
    )
    observe_state: bool = Field(
        True,
        description="false (with market_context): the policy observes the market's context alone, "
        "so it acts per market, not per state.",
    )

    @property
    def observation(self) -> str:
        """The layout of what the policy observes (a key of hedgegym.train.policies.LAYOUTS)."""
        if not self.market_context:
            return "state"
        return "state+context" if self.observe_state else "context"


class WarmStartConfig(StrictModel):
    """Before training, search constant control actions and start the policy at the best
    (:mod:`hedgegym.train.warm_start`). Needs ``algorithm.control``."""

    episodes: int = Field(
        256,
        ge=10,
        le=WARM_START_EPISODES_MAX,
        description="Episodes of each search evaluation, and of the confirmation.",
    )
    values: list[float] = Field(
        default_factory=lambda: [-1.0, -0.6, -0.4, -0.2, -0.1, 0.0, 0.1, 0.2, 0.4, 0.6, 1.0],
        min_length=1,
        description="Values tried for each action dimension, each in [-1, 1].",
    )
    passes: int = Field(2, ge=1, le=10, description="Sweeps of the coordinate search over the action dimensions.")

    @field_validator("values")
    @classmethod
    def _in_range(cls, v: list[float]) -> list[float]:
        bad = [x for x in v if not (math.isfinite(x) and -1.0 <= x <= 1.0)]
        if bad:
            raise ValueError(f"each value must be in [-1, 1] (got {bad[0]!r})")
        if len(set(v)) != len(v):
            raise ValueError(f"values must not repeat (got {v})")
        return v


class TrainingConfig(StrictModel):
    """Length, seed, checkpoints and torch settings of the training run."""

    total_timesteps: int = Field(gt=0, description="Env steps to train for, summed over the parallel envs.")
    seed: int = Field(
        0,
        ge=0,
        le=TRAINING_SEED_MAX,
        description="Seed of torch, SB3 and the training envs (env i starts at seed + i); < 2**32.",
    )
    checkpoint_every: int = Field(100_000, ge=0, description="Timesteps between checkpoints (0: only at the end).")
    keep_checkpoints: int = Field(3, ge=1, description="Newest checkpoints kept; older ones are deleted.")
    torch_threads: int = Field(1, ge=1, le=256, description="torch.set_num_threads; 1 is fastest for small MLPs.")
    deterministic_torch: bool = Field(True, description="torch.use_deterministic_algorithms: reproducible runs.")
    save_replay_buffer: bool = Field(
        True, description="Checkpoint the replay buffer too (sac, td3; ppo has none), so --resume continues it."
    )
    paired_paths: bool = Field(
        False,
        description="ppo: envs 2k and 2k+1 share each episode's exogenous path (seed + k), and each advantage "
        "becomes its difference with its partner's (hedgegym.agents.paired): common random numbers.",
    )
    antithetic_exploration: bool = Field(
        False,
        description="With paired_paths and gSDE drawn once a rollout: env 2k+1 explores with minus env 2k's noise "
        "matrix, so each pair's paired advantage is a central finite difference (hedgegym.agents.paired).",
    )
    per_market_advantages: bool = Field(
        False,
        description="Standardise each drawn market's advantages on their own after every rollout, so every "
        "market of the family weighs the same in an update (hedgegym.agents.per_market). On-policy; needs "
        "scenario.randomize.",
    )
    warm_start: WarmStartConfig | None = Field(
        None,
        description="Search constant control actions first and start the policy at the best "
        "(hedgegym.train.warm_start); needs algorithm.control.",
    )


class EvaluationConfig(StrictModel):
    """Held-out evaluation: periodically to keep the best model, and at the end against the baselines."""

    seed: int = Field(1_000_000, ge=0, description="First held-out seed; episode j uses seed + j.")
    every: int = Field(50_000, ge=0, description="Timesteps between periodic evaluations (0: none).")
    episodes: int = Field(
        200, ge=1, le=MAX_EPISODES, description="Episodes of each periodic evaluation (best model by objective)."
    )
    final_episodes: int = Field(
        2000, ge=1, le=MAX_EPISODES, description="Episodes of the final evaluation against the baselines."
    )
    baselines: list[str] = Field(default_factory=list, description="Baseline hedgers evaluated with the agent.")
    select: Literal["best", "paired"] = Field(
        "best",
        description=(
            "How a periodic evaluation replaces best_model.zip: 'best', a higher objective; 'paired', an objective"
            " whose paired 95 % bootstrap interval against the incumbent's on the same episodes lies above 0."
        ),
    )

    markets: int = Field(
        0,
        ge=0,
        le=4096,
        description=(
            "Periodic evaluations on this many held-out markets drawn from scenario.randomize, episodes split"
            " evenly among them; best_model.zip is then chosen by the scale-free family score (each market's"
            " objective relative to the delta hedger's; hedgegym.train.selection). 0: on the scenario itself."
        ),
    )

    @model_validator(mode="after")
    def _markets_split(self) -> EvaluationConfig:
        if self.markets and (self.episodes % self.markets or self.episodes // self.markets < 2):
            raise ValueError(
                f"evaluation.episodes={self.episodes} must be a multiple of evaluation.markets={self.markets} "
                "with at least 2 episodes a market"
            )
        return self

    @field_validator("baselines")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError(f"baselines must not repeat (got {v})")
        return v


class ExperimentConfig(StrictModel):
    """A whole experiment: what ``hedgegym train CONFIG`` runs."""

    name: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="Experiment name, prefix of the run directory; default algorithm-scenario.",
    )
    description: str = Field("", description="One line on what the experiment is for.")
    scenario: ScenarioSpec = Field(default_factory=ScenarioSpec, description="The market: a named or inline scenario.")
    algorithm: AlgorithmConfig = Field(description="Algorithm, hyperparameters, policy network.")
    env: EnvConfig = Field(EnvConfig(), description="Parallel envs and normalisation.")
    training: TrainingConfig = Field(description="Timesteps, seed, checkpoints, torch settings.")
    evaluation: EvaluationConfig = Field(EvaluationConfig(), description="Held-out evaluation and baselines.")
    output_dir: str = Field("runs", min_length=1, description="Parent folder of the run directories.")

    @model_validator(mode="after")
    def _cross_sections(self) -> ExperimentConfig:
        algo = self.algorithm
        if algo.name in sb3.ON_POLICY:
            rollout = algo.hyperparameter("n_steps") * self.env.n_envs
            batch = algo.hyperparameter("batch_size")
            if batch > rollout:
                raise ValueError(
                    f"algorithm.hyperparameters.batch_size={batch} exceeds the rollout of n_steps * "
                    f"env.n_envs = {rollout} transitions; lower it or raise n_steps"
                )
            if rollout % batch:
                # SB3 would train on a truncated last minibatch each epoch (and only warn).
                divisor = max(d for d in range(1, batch + 1) if rollout % d == 0)
                raise ValueError(
                    f"algorithm.hyperparameters.batch_size={batch} must divide the rollout of "
                    f"n_steps * env.n_envs = {rollout} transitions (e.g. {divisor})"
                )
            if algo.hyperparameter("normalize_advantage") and batch < 2:
                raise ValueError(
                    f"algorithm.hyperparameters.batch_size={batch}: must be >= 2 with "
                    "normalize_advantage (the advantages of one transition have no std)"
                )
        else:
            buffer = algo.hyperparameter("buffer_size")
            if buffer < self.env.n_envs:
                raise ValueError(
                    f"algorithm.hyperparameters.buffer_size={buffer}: must be >= env.n_envs = "
                    f"{self.env.n_envs} (SB3 keeps buffer_size // n_envs transitions per env)"
                )
        for flag in ("paired_paths", "per_market_advantages"):  # both rewrite the rollout's advantages
            if getattr(self.training, flag) and algo.name not in sb3.ON_POLICY:
                raise ValueError(
                    f"training.{flag}=true: only for on-policy algorithms ({', '.join(sorted(sb3.ON_POLICY))}), "
                    f"got algorithm.name={algo.name!r}"
                )
        if self.training.paired_paths:
            if self.env.n_envs % 2:
                raise ValueError(f"training.paired_paths=true needs an even env.n_envs (got {self.env.n_envs})")
            family = self.scenario.randomize
            if family is not None and (self.env.n_envs // family.markets) % 2:
                raise ValueError(
                    f"training.paired_paths=true with scenario.randomize needs an even number of envs per market "
                    f"(env.n_envs={self.env.n_envs} / scenario.randomize.markets={family.markets})"
                )
        if self.training.antithetic_exploration:
            if not self.training.paired_paths:
                raise ValueError("training.antithetic_exploration=true needs training.paired_paths=true (its pairs)")
            if not algo.hyperparameter("use_sde") or algo.hyperparameter("sde_sample_freq") > 0:
                raise ValueError(
                    "training.antithetic_exploration=true needs algorithm.hyperparameters.use_sde=true and "
                    f"sde_sample_freq <= 0, one noise draw a rollout (got use_sde={algo.hyperparameter('use_sde')}, "
                    f"sde_sample_freq={algo.hyperparameter('sde_sample_freq')})"
                )
        if self.training.per_market_advantages and self.scenario.randomize is None:
            raise ValueError("training.per_market_advantages=true needs scenario.randomize (a family of markets)")
        if self.evaluation.markets and self.scenario.randomize is None:
            raise ValueError(
                f"evaluation.markets={self.evaluation.markets} needs scenario.randomize (the family its markets "
                "are drawn from); set 0 to evaluate on the scenario itself"
            )
        train_seeds = range(self.training.seed, self.training.seed + self.env.n_envs)
        # The final evaluation's seeds, then the periodic evaluations' block.
        held_out = range(
            self.evaluation.seed, self.evaluation.seed + self.evaluation.final_episodes + self.evaluation.episodes
        )
        if held_out.stop > SEED_LIMIT:
            raise ValueError(
                f"evaluation.seed={self.evaluation.seed}: must be <= 2**63 - {len(held_out)} "
                f"= {SEED_LIMIT - len(held_out)}, so the held-out seeds seed + j fit in 64-bit "
                "integers"
            )
        if train_seeds.start < held_out.stop and held_out.start < train_seeds.stop:
            raise ValueError(
                f"evaluation.seed={self.evaluation.seed}: held-out seeds {held_out.start}.."
                f"{held_out.stop - 1} overlap the training seeds {train_seeds.start}.."
                f"{train_seeds.stop - 1}; keep them apart"
            )
        _check_baselines(self.evaluation.baselines, self.scenario.resolved)
        family = self.scenario.randomize
        if not self.env.observe_state and not self.env.market_context:
            raise ValueError("env.observe_state=false needs env.market_context=true: the policy would observe nothing")
        if self.env.market_context and family is None:
            raise ValueError(
                "env.market_context=true needs scenario.randomize: on one market the context is a constant, "
                "which the observation normaliser would blow up wherever the policy meets another market"
            )
        if family is not None and self.env.n_envs % family.markets:
            raise ValueError(
                f"env.n_envs={self.env.n_envs}: must be a multiple of scenario.randomize.markets = "
                f"{family.markets} (the envs are split evenly over the markets drawn at once)"
            )
        if algo.control is not None:
            try:
                make_control(algo.control, self.scenario.resolved)
            except ValueError as err:
                raise ValueError(f"algorithm.control: {err}") from None
        if self.training.warm_start is not None:
            if algo.control is None:
                raise ValueError(
                    "training.warm_start: needs algorithm.control (it searches constant actions of a control "
                    "on a classical hedger); set algorithm.control or remove training.warm_start"
                )
            from hedgegym.train.warm_start import seed_range

            warm = seed_range(self)
            if warm.start < held_out.stop and held_out.start < warm.stop:
                raise ValueError(
                    f"evaluation.seed={self.evaluation.seed}: held-out seeds {held_out.start}..{held_out.stop - 1} "
                    f"overlap the warm start's seeds {warm.start}..{warm.stop - 1}; keep them apart"
                )
        return self

    @property
    def run_name(self) -> str:
        """Prefix of the run directory: ``<name>-s<seed>``, name defaulting to ``<algorithm>-<scenario>``."""
        return f"{self.name or f'{self.algorithm.name}-{self.scenario.resolved.name}'}-s{self.training.seed}"

    @property
    def gamma(self) -> float:
        """The discount: the algorithm's, shared with the reward normaliser."""
        return float(self.algorithm.hyperparameter("gamma"))

    def resolved_dict(self) -> dict[str, Any]:
        """The config as plain data with the scenario inlined and overrides applied.

        Saved as each run's ``config.yaml``: loading it gives the same experiment even after the
        named scenario's YAML changes.
        """
        data = self.model_dump()
        data["scenario"] = {"config": self.scenario.resolved.model_dump()}
        if self.scenario.randomize is not None:
            data["scenario"]["randomize"] = self.scenario.randomize.model_dump()
        return data


def _check_baselines(names: list[str], scenario: ScenarioConfig) -> None:
    """Each baseline must build for the scenario: a known name, a venue the agent may trade."""
    from hedgegym.agents.baselines import make_baseline

    for name in names:
        try:
            make_baseline(name, scenario)
        except ValueError as err:
            raise ValueError(f"evaluation.baselines: {err}") from None


# --------------------------------------------------------------------------------------- loading
def validate_experiment(data: Mapping[str, Any] | ExperimentConfig, source: str = "") -> ExperimentConfig:
    """Validate a mapping into an :class:`ExperimentConfig`; any problem is a :class:`ConfigError`."""
    if isinstance(data, ExperimentConfig):
        return data
    if not isinstance(data, Mapping):
        raise ConfigError(f"invalid experiment config{source}: expected a mapping, got {type(data).__name__}")
    try:
        return ExperimentConfig.model_validate(dict(data))
    except ValidationError as err:
        message = format_validation_error(err, source, "experiment config", ExperimentConfig)
        raise ConfigError(message) from None


def load_experiment(path: str | os.PathLike, overrides: Mapping[str, Any] | None = None) -> ExperimentConfig:
    """Load an experiment YAML and apply dotted ``overrides`` (``training.total_timesteps``).

    Override values that are strings are parsed as YAML (``--set training.seed=3`` gives an int).
    """
    data = read_yaml(path)
    if isinstance(data.get("scenario"), str):
        # The shorthand `scenario: NAME` becomes a section, so `scenario.overrides.*` can be set on it.
        data["scenario"] = {"name": data["scenario"]}
    if overrides:
        data = apply_overrides(data, overrides)
    return validate_experiment(data, source=f" in {path}")


def experiment_yaml(config: ExperimentConfig) -> str:
    """The resolved config (:meth:`ExperimentConfig.resolved_dict`) as YAML text."""
    return yaml.safe_dump(config.resolved_dict(), sort_keys=False)
