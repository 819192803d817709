"""hedgegym.envs: the market simulator, scenario configs and Gymnasium environments.

Importing this package registers the Gymnasium ids (``hedgegym/Hedging-v2`` and one per named
scenario, see :mod:`hedgegym.envs.registration`) and nothing heavier: the envs, the simulator and
numba load on first use of ``HedgingEnv``, ``HedgingVectorEnv`` or ``Market``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hedgegym.envs.registration import register_builtin, register_scenario

if TYPE_CHECKING:
    from hedgegym.envs.config import ScenarioConfig, load_scenario
    from hedgegym.envs.hedging_env import HedgingEnv
    from hedgegym.envs.market import Market
    from hedgegym.envs.vector_env import HedgingVectorEnv

__all__ = ["HedgingEnv", "HedgingVectorEnv", "Market", "ScenarioConfig", "load_scenario", "register_scenario"]

# Re-exports loaded on first access (PEP 562), so that `import hedgegym.envs` stays cheap.
_LAZY = {
    "HedgingEnv": "hedgegym.envs.hedging_env",
    "HedgingVectorEnv": "hedgegym.envs.vector_env",
    "Market": "hedgegym.envs.market",
    "ScenarioConfig": "hedgegym.envs.config",
    "load_scenario": "hedgegym.envs.config",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'hedgegym.envs' has no attribute {name!r}")


register_builtin()
