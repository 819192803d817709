"""A family of markets: scenario fields drawn afresh for every episode (domain randomisation).

A :class:`FamilyConfig` names numeric fields of a scenario and the range each is drawn from; a
batched env with a family draws a new market from it whenever all its envs start an episode
together (hedgegym's episodes have a fixed length, so every episode after the first reset), and
the next episode runs on that market. It is how a *generalist* is trained: one policy over many
markets, to be evaluated on markets it never saw (Tobin et al. 2017; for hedging, the
"train across market regimes" recipe of Buehler et al. 2019 §6).

A draw, ``path: {low, high, log, scale}`` (or the shorthand ``path: [low, high]``):

- ``path``: a dotted field of the scenario (``market.sigma``). ``*`` stands for every key of a
  section or every entry of a list (``venues.*.fee``, ``dealers.lines.*.quantity``); one value
  is drawn per draw and applied to every field it matches.
- ``low``, ``high``: the range, ``low <= high``. ``log``: log-uniform (``low > 0``), else uniform.
- ``scale``: the draw multiplies each field's value in the base scenario (``dealers.lines.*.quantity``
  scaled by a draw in ``[-1, 2]`` turns short-gamma dealers long and back), else it is the value.

Only numbers are drawn: the market's structure (its lines, venues, which features are on, the
horizon and step) is the base scenario's, so every draw is the same kind of market and the same
env (spaces, episode length). The agent's own book and limits (``agent.*``) and the episode
(``episode.*``) cannot be drawn: they define the task, not the market. Each draw is validated
like any scenario; the family is checked once, when it is made, on the corners of its ranges.

Randomness: the market of an episode is drawn from a generator seeded by the first env's stream
seed and episode number, so it depends on nothing the agent does (common random numbers) and a
rerun with the same seeds draws the same markets.

Example:
    >>> from hedgegym.envs.config import resolve_config
    >>> base = resolve_config("default")
    >>> family = FamilyConfig.model_validate({"draws": {"market.sigma": [0.3, 0.9],
    ...     "dealers.lines.*.quantity": {"low": -1.0, "high": 2.0, "scale": True}}})
    >>> family = check_family(family, base)
    >>> drawn = draw_config(family, base, family_rng(seed=7, episode=0))
    >>> 0.3 <= drawn.market.sigma <= 0.9, drawn.dealers.lines[0].quantity / base.dealers.lines[0].quantity == (
    ...     drawn.dealers.lines[1].quantity / base.dealers.lines[1].quantity)
    (True, True)
    >>> drawn == draw_config(family, base, family_rng(seed=7, episode=0))
    True
    >>> check_family(FamilyConfig.model_validate({"draws": {"episode.n_steps": [1, 2]}}), base)
    Traceback (most recent call last):
    hedgegym.envs.config.ConfigError: randomize.draws['episode.n_steps']: the episode (episode.*) cannot be drawn: ...
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from pydantic import Field, model_validator

from hedgegym.envs.config import ConfigError, ScenarioConfig, StrictModel, validate_config

# Sections a family cannot draw, and why (the task and the env's shape, not the market).
FIXED_SECTIONS = {
    "episode": "the episode (episode.*) cannot be drawn: every draw must have the base scenario's horizon and step",
    "agent": "the agent's book and limits (agent.*) cannot be drawn: they are the task the policy is trained for",
}
_FAMILY_SALT = 0xFA111E5


class Draw(StrictModel):
    """One drawn field: uniform (or log-uniform) in ``[low, high]``, set or scaling the base value."""

    low: float = Field(description="Lower end of the range.")
    high: float = Field(description="Upper end of the range (>= low).")
    log: bool = Field(False, description="Draw log-uniformly (needs low > 0); else uniformly.")
    scale: bool = Field(False, description="Multiply the base scenario's value by the draw; else set it.")

    @model_validator(mode="before")
    @classmethod
    def _pair(cls, data: Any) -> Any:
        if isinstance(data, (list, tuple)):
            if len(data) != 2:
                raise ValueError(f"a range is [low, high] or {{low, high, log, scale}} (got {list(data)!r})")
            return {"low": data[0], "high": data[1]}
        return data

    @model_validator(mode="after")
    def _ordered(self) -> Draw:
        if self.low > self.high:
            raise ValueError(f"low must be <= high (got low={self.low:g}, high={self.high:g})")
        if self.log and self.low <= 0.0:
            raise ValueError(f"a log-uniform range needs low > 0 (got low={self.low:g})")
        return self

    def sample(self, rng: np.random.Generator) -> float:
        """One value of the range."""
        if self.log:
            return float(math.exp(rng.uniform(math.log(self.low), math.log(self.high))))
        return float(rng.uniform(self.low, self.high))


class FamilyConfig(StrictModel):
    """The markets a generalist trains on: the base scenario with these fields drawn per episode."""

    draws: dict[str, Draw] = Field(description="Dotted field (with * wildcards) -> its range; see the module.")
    markets: int = Field(
        8,
        ge=1,
        le=4096,
        description="Markets drawn at once: the batch of envs is split into this many groups, each on its own draw.",
    )

    @model_validator(mode="before")
    @classmethod
    def _dotted(cls, data: Any) -> Any:
        # Overrides (`--set scenario.randomize.draws.market.sigma=[0.3, 0.9]`) nest a dotted path
        # into sections: join them back into paths, down to a range (a list, or a mapping of Draw's fields).
        if not isinstance(data, dict) or not isinstance(data.get("draws"), dict):
            return data

        def flat(node: dict, prefix: str) -> dict:
            out = {}
            for key, value in node.items():
                path = f"{prefix}{key}"
                if isinstance(value, dict) and value and not set(value) <= set(Draw.model_fields):
                    out.update(flat(value, path + "."))
                else:
                    out[path] = value
            return out

        return {**data, "draws": flat(data["draws"], "")}

    @model_validator(mode="after")
    def _some(self) -> FamilyConfig:
        if not self.draws:
            raise ValueError("draws must name at least one field to draw")
        return self


def _matches(data: Any, parts: list[str], prefix: str) -> list[tuple[str, Any, Any]]:
    """``(path, container, key)`` of every field of ``data`` that the dotted ``parts`` match."""
    if not parts:
        return []
    head, rest = parts[0], parts[1:]
    if isinstance(data, dict):
        keys = list(data) if head == "*" else [head] if head in data else []
    elif isinstance(data, list):
        keys = (
            list(range(len(data))) if head == "*" else [int(head)] if head.isdigit() and int(head) < len(data) else []
        )
    else:
        keys = []
    out = []
    for key in keys:
        path = f"{prefix}{key}"
        if rest:
            out += _matches(data[key], rest, path + ".")
        else:
            out.append((path, data, key))
    return out


def _fields(path: str, data: dict) -> list[tuple[str, Any, Any]]:
    """The numeric fields ``path`` matches in the scenario data, or a ConfigError saying why none."""
    where = f"randomize.draws[{path!r}]"
    section = path.split(".")[0]
    if section in FIXED_SECTIONS:
        raise ConfigError(f"{where}: {FIXED_SECTIONS[section]}")
    found = _matches(data, path.split("."), "")
    if not found:
        raise ConfigError(f"{where}: no field of the scenario has this path (sections: {', '.join(data)})")
    bad = [p for p, node, key in found if isinstance(node[key], bool) or not isinstance(node[key], (int, float))]
    if bad:
        raise ConfigError(f"{where}: only numeric fields can be drawn; {bad[0]} holds {_value_at(data, bad[0])!r}")
    return found


def _value_at(data: Any, path: str) -> Any:
    for part in path.split("."):
        data = data[int(part)] if isinstance(data, list) else data[part]
    return data


def _apply(family: FamilyConfig, base: ScenarioConfig, values: dict[str, float]) -> dict:
    """The base scenario's data with each draw's value set (or scaling) every field it matches."""
    data = base.model_dump()
    reference = base.model_dump()
    for path, draw in family.draws.items():
        for field_path, node, key in _fields(path, data):
            node[key] = values[path] * _value_at(reference, field_path) if draw.scale else values[path]
    return data


def check_family(family: FamilyConfig | dict, base: ScenarioConfig) -> FamilyConfig:
    """``family`` validated against ``base``: every path matches numeric fields outside ``agent``
    and ``episode``, and the markets at the corners of the ranges (all lows, all highs) are valid
    scenarios with the base's structure. Raises :class:`ConfigError` naming the draw."""
    if not isinstance(family, FamilyConfig):
        family = FamilyConfig.model_validate(family)
    data = base.model_dump()
    for path in family.draws:
        _fields(path, data)
    for corner in ("low", "high"):
        values = {path: getattr(draw, corner) for path, draw in family.draws.items()}
        try:
            drawn = validate_config(
                _apply(family, base, values), source=f" (randomize: every draw at its {corner} end)"
            )
        except ConfigError as err:
            raise ConfigError(f"randomize.draws: {err}") from None
        check_same_structure(base, drawn, f"randomize.draws at their {corner} ends")
    return family


def check_same_structure(base: ScenarioConfig, drawn: ScenarioConfig, what: str) -> None:
    """A drawn market must be the same kind of market as the base: the features that are on (the
    kernel's flags) and so the env's measures. ConfigError naming what changed."""
    from hedgegym.envs.market import liquidations_on, second_order_on

    for name, flag in (("a second-order feature", second_order_on), ("the liquidation engine", liquidations_on)):
        if flag(base) != flag(drawn):
            raise ConfigError(
                f"{what}: whether {name} is on changes ({flag(base)} in the base scenario, {flag(drawn)} drawn); "
                "draw within ranges that keep it as the base has it"
            )


def family_rng(seed: int, episode: int) -> np.random.Generator:
    """The generator of the market drawn for episode ``episode`` of the stream seeded ``seed``."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(episode), _FAMILY_SALT]))


def draw_values(family: FamilyConfig, rng: np.random.Generator) -> dict[str, float]:
    """One value per draw, in the order of ``family.draws``."""
    return {path: draw.sample(rng) for path, draw in family.draws.items()}


def draw_config(family: FamilyConfig, base: ScenarioConfig, rng: np.random.Generator) -> ScenarioConfig:
    """A market of the family: ``base`` with every draw applied (validated; same structure)."""
    values = draw_values(family, rng)
    try:
        drawn = validate_config(_apply(family, base, values), source=" (a market drawn by randomize)")
    except ConfigError as err:
        shown = ", ".join(f"{p}={v:.6g}" for p, v in values.items())
        raise ConfigError(f"{err}\n  drawn: {shown}; narrow the ranges in randomize.draws") from None
    check_same_structure(base, drawn, "a drawn market")
    return drawn
