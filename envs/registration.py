"""Gymnasium ids of the hedging envs: one per named scenario, plus ``register_scenario`` for yours.

Every id has a string ``entry_point`` (:class:`~hedgegym.envs.hedging_env.HedgingEnv`) and a string
``vector_entry_point`` (:class:`~hedgegym.envs.vector_env.HedgingVectorEnv`), so registering imports
neither numba nor the simulator. Both accept config overrides as ``section__field=value`` keyword
arguments::

    gymnasium.make("hedgegym/ShortGammaCrash-v2", market__sigma=0.8)
    gymnasium.make_vec("hedgegym/Hedging-v2", num_envs=1024, vectorization_mode="vector_entry_point")

Gymnasium 1.x has no plugin entry points: the ids exist once ``hedgegym.envs`` is imported, and
``gymnasium.make("hedgegym.envs:hedgegym/Hedging-v2")`` imports it for you.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import gymnasium as gym

NAMESPACE = "hedgegym"
ENTRY_POINT = "hedgegym.envs.hedging_env:HedgingEnv"
VECTOR_ENTRY_POINT = "hedgegym.envs.vector_env:HedgingVectorEnv"

# Named scenario (hedgegym/envs/scenarios/<name>.yaml) -> env id. Ids are API: bump the version when a
# scenario's observations, actions or rewards change.
SCENARIO_IDS: dict[str, str] = {
    "default": "hedgegym/Hedging-v2",
    "short-gamma-crash": "hedgegym/ShortGammaCrash-v2",
    "long-gamma-pin": "hedgegym/LongGammaPin-v2",
    "zero-dte": "hedgegym/ZeroDTE-v2",
    "vault-epoch": "hedgegym/VaultEpoch-v2",
    "frictionless": "hedgegym/Frictionless-v2",
    "vanna-crash": "hedgegym/VannaCrash-v2",
    "crowded-dealers": "hedgegym/CrowdedDealers-v2",
    "liquidation-cascade": "hedgegym/LiquidationCascade-v2",
}

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9]*(?:[-_][A-Za-z0-9]+)*$")


def register_builtin() -> None:
    """Register the id of every named scenario (idempotent)."""
    for scenario, env_id in SCENARIO_IDS.items():
        # Hedging-v2 passes no scenario, so that `config=` may replace the default one.
        kwargs = {} if scenario == "default" else {"scenario": scenario}
        _register(env_id, kwargs)


def register_scenario(name: str, config: Any) -> str:
    """Register your own scenario as ``hedgegym/<Name>-v2``; returns the id.

    Args:
        name: ``"MyCrash"``, ``"my-crash"`` or ``"my_crash"`` (all give ``hedgegym/MyCrash-v2``):
            letters and digits, words joined by ``-`` or ``_``, starting with a letter.
        config: a :class:`~hedgegym.envs.config.ScenarioConfig`, a mapping of config sections, the
            path of a scenario YAML file or a built-in scenario's name (read by
            :func:`~hedgegym.envs.config.resolve_config`). It is read and validated now, once; a bad one raises
            :class:`~hedgegym.envs.config.ConfigError` naming the field.

    The id works with ``gymnasium.make(id, **overrides)`` and ``gymnasium.make_vec(id, num_envs,
    vectorization_mode="vector_entry_point")`` like the built-in ones. Registering a name again
    replaces your earlier registration; the built-in ids cannot be replaced.

    Example:
        >>> import gymnasium as gym
        >>> from hedgegym.envs import register_scenario
        >>> env_id = register_scenario("CalmWeek", {"market": {"sigma": 0.3}, "dealers": {"lines": []}})
        >>> env_id
        'hedgegym/CalmWeek-v2'
        >>> env = gym.make(env_id, agent__venues=["spot"])
        >>> env.unwrapped.config.market.sigma, env.action_space.shape
        (0.3, (1,))
    """
    from hedgegym.envs.config import resolve_config

    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(
            f"scenario name must be letters and digits, words joined by '-' or '_', starting "
            f"with a letter, e.g. 'MyCrash' or 'my-crash' (got {name!r})"
        )
    env_id = f"{NAMESPACE}/{_camel(name)}-v2"
    if env_id in SCENARIO_IDS.values():
        raise ValueError(f"{env_id} is a built-in id; choose another name for your scenario")
    if config is None:
        raise TypeError("config must be a ScenarioConfig, a mapping or a YAML path (got None)")
    validated = resolve_config(config)
    # Replacing one's own registration is intended: drop it first rather than have Gymnasium warn.
    gym.registry.pop(env_id, None)
    # The validated model itself: HedgingEnv takes it as is, without a second validation.
    _register(env_id, {"config": validated})
    return env_id


def _register(env_id: str, kwargs: Mapping[str, Any]) -> None:
    if env_id in gym.registry:
        return
    gym.register(
        id=env_id,
        entry_point=ENTRY_POINT,
        vector_entry_point=VECTOR_ENTRY_POINT,
        kwargs=dict(kwargs),
        nondeterministic=False,
    )


def _camel(name: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in re.split(r"[-_]", name))
