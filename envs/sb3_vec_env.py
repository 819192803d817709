"""Stable-Baselines3 ``VecEnv`` over the batched hedging env, so SB3 needs no ``DummyVecEnv``.

SB3's vectorised API differs from Gymnasium's: ``step`` returns ``(obs, rewards, dones, infos)``
with ``done = terminated | truncated``, an env that ends is reset within the same step, and its
final observation travels in ``infos[i]["terminal_observation"]`` (with
``infos[i]["TimeLimit.truncated"]`` telling a time-out from a true end). :class:`HedgingSB3VecEnv`
implements that contract on a :class:`~hedgegym.envs.vector_env.HedgingVectorEnv` in
``AutoresetMode.SAME_STEP``, and adds Monitor's ``infos[i]["episode"]`` so SB3 logs episode rewards
without a ``Monitor`` wrapper. Stable-Baselines3 is imported only by this module.

Example:
    >>> from stable_baselines3 import PPO
    >>> from hedgegym.envs.sb3_vec_env import make_sb3_vec_env
    >>> venv = make_sb3_vec_env("frictionless", n_envs=4, seed=0, agent__venues=["spot"])
    >>> model = PPO("MlpPolicy", venv, n_steps=32, batch_size=64, n_epochs=1)
    >>> _ = model.learn(128)
"""

from __future__ import annotations

import inspect
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env.base_vec_env import (
    VecEnv,
    VecEnvIndices,
    VecEnvObs,
    VecEnvStepReturn,
    VecEnvWrapper,
)

from hedgegym.envs.config import ScenarioConfig
from hedgegym.envs.context import CONTEXT_DIM, market_context, with_context
from hedgegym.envs.hedging_env import SECOND_ORDER_INFO, STEP_INFO_FLAGS, STEP_INFO_FLOATS, check_bool, check_int
from hedgegym.envs.layout import OBS_BOUND
from hedgegym.envs.vector_env import HedgingVectorEnv

_SCALAR_KEYS = tuple(name for name, _ in STEP_INFO_FLOATS + STEP_INFO_FLAGS) + ("book_delta",)
# HedgingEnv's second-order step keys, where the scenario turns a second-order feature on.
_SECOND_ORDER_KEYS = tuple(name for name, _ in SECOND_ORDER_INFO) + ("atm_vol",)


class HedgingSB3VecEnv(VecEnv):
    """SB3 ``VecEnv`` over a :class:`HedgingVectorEnv` (which must use ``AutoresetMode.SAME_STEP``).

    ``step_wait`` returns observations ``(num_envs, 20)`` float32, rewards ``(num_envs,)`` float32
    (as ``DummyVecEnv``), dones ``(num_envs,)`` bool and a list of ``num_envs`` info dicts. Each info
    holds the keys of :class:`~hedgegym.envs.hedging_env.HedgingEnv`'s step info as Python scalars
    (``hedge``: an array ``(3,)``; with a second-order feature on, its second-order keys too:
    ``flow_gamma``, ..., ``atm_vol``) and ``"TimeLimit.truncated"``; an env that ended also gets
    ``"terminal_observation"``, ``"episode_metrics"`` (dict of floats) and Monitor's
    ``"episode": {"r": episode reward, "l": episode length, "t": seconds since this adapter was
    made}``; its reset info goes to ``self.reset_infos``.

    The envs of the batch share one simulator, so:

    - ``get_attr(name)`` returns the batch's attribute for each requested index
      (``observation_space`` and ``action_space`` are the single env's);
    - ``set_attr`` and ``env_method`` act on the batch once and need ``indices=None`` (all envs);
      ``env_method`` returns the method's result for each env;
    - ``env_is_wrapped(Monitor)`` is True, as the adapter writes Monitor's ``"episode"`` info
      itself (so ``evaluate_policy`` reads episode rewards from it); every other wrapper: False.

    Args:
        vector_env: the batched env, created with ``autoreset_mode=AutoresetMode.SAME_STEP``.
        step_info: False leaves the per-step info keys out (only ``"TimeLimit.truncated"`` and, for
            envs that ended, the episode keys remain), saving the per-env dicts' cost at large N.
    """

    def __init__(self, vector_env: HedgingVectorEnv, step_info: bool = True):
        if not isinstance(vector_env, HedgingVectorEnv):
            raise TypeError(
                f"vector_env must be a HedgingVectorEnv (got {type(vector_env).__name__}); "
                "for other envs use stable_baselines3's DummyVecEnv"
            )
        if vector_env.autoreset_mode != AutoresetMode.SAME_STEP:
            raise ValueError(
                "SB3 resets an env in the step on which it ends: create the vector env with "
                "HedgingVectorEnv(..., autoreset_mode=AutoresetMode.SAME_STEP) or use make_sb3_vec_env() "
                f"(got {vector_env.autoreset_mode})"
            )
        # Set before VecEnv.__init__, which calls get_attr("render_mode").
        self.venv = vector_env
        self.step_info = check_bool("step_info", step_info)
        self._scalar_keys = _SCALAR_KEYS + (_SECOND_ORDER_KEYS if vector_env.market.second_order else ())
        super().__init__(vector_env.num_envs, vector_env.single_observation_space, vector_env.single_action_space)
        self.metadata = dict(vector_env.metadata)
        self._actions: np.ndarray | None = None
        self._t_start = time.time()

    # ------------------------------------------------------------------------------ reset / step
    def reset(self) -> VecEnvObs:
        """Reset every env, with the seeds set by ``seed()`` if any (used once), else the next episodes."""
        if any(self._options):
            raise ValueError(f"hedgegym envs take no reset options (got {self._options[:1]} from set_options)")
        seeds = None if all(s is None for s in self._seeds) else list(self._seeds)
        obs, info = self.venv.reset(seed=seeds)
        self.reset_infos = self._info_dicts(info, np.zeros(self.num_envs, dtype=bool))
        self._reset_seeds()
        self._reset_options()
        return obs

    def seed_pairs(self, seed: int) -> list[int]:
        """Seed envs ``2k`` and ``2k + 1`` with ``seed + k`` at the next ``reset()``: pairs of envs
        on the same exogenous paths, episode after episode (the seeds are used once, like ``seed()``)."""
        self._seeds = [int(seed) + i // 2 for i in range(self.num_envs)]
        return list(self._seeds)

    def step_async(self, actions: np.ndarray) -> None:
        """Store the actions ``(num_envs, n_venues)`` for ``step_wait``."""
        self._actions = actions

    def step_wait(self) -> VecEnvStepReturn:
        """Step the batch once; ended envs are reset in this step (see the class docstring)."""
        if self._actions is None:
            raise RuntimeError("step_wait() called without step_async(actions)")
        actions, self._actions = self._actions, None
        obs, rewards, terminated, truncated, info = self.venv.step(actions)
        dones = terminated | truncated
        infos = self._info_dicts(info, dones, (truncated & ~terminated).tolist())
        if dones.any():
            final_obs = info["final_obs"]
            metrics = info["final_info"]["episode_metrics"]
            names = [k for k in metrics if not k.startswith("_")]
            elapsed = round(time.time() - self._t_start, 6)
            reset_infos = self._info_dicts(info, np.zeros(self.num_envs, dtype=bool))
            for i in np.flatnonzero(dones).tolist():
                ep = {k: metrics[k][i].item() for k in names}
                infos[i]["terminal_observation"] = final_obs[i]
                infos[i]["episode_metrics"] = ep
                infos[i]["episode"] = {"r": ep["reward"], "l": int(ep["steps"]), "t": elapsed}
                self.reset_infos[i] = reset_infos[i]
        return obs, rewards.astype(np.float32), dones, infos

    def _info_dicts(
        self, info: dict[str, Any], ended: np.ndarray, time_limit: list[bool] | None = None
    ) -> list[dict[str, Any]]:
        """Per-env dicts of the step keys (for ``ended`` envs the final step's, from ``final_info``),
        plus ``"TimeLimit.truncated"`` when ``time_limit`` is given."""
        keys: tuple[str, ...] = ()
        columns: list[list[Any]] = []
        if self.step_info:
            if ended.any():
                final = info["final_info"]
                info = {
                    k: np.where(ended if info[k].ndim == 1 else ended[:, None], final[k], info[k])
                    for k in self._scalar_keys + ("hedge",)
                }
            keys = self._scalar_keys + ("hedge",)
            columns = [info[k].tolist() for k in self._scalar_keys] + [list(info["hedge"])]
        if time_limit is not None:
            keys += ("TimeLimit.truncated",)
            columns.append(time_limit)
        if not keys:
            return [{} for _ in range(self.num_envs)]
        # One dict per env is SB3's info API; this loop builds them (the step itself is batched).
        return [dict(zip(keys, values, strict=True)) for values in zip(*columns, strict=True)]

    def close(self) -> None:
        """Close the batched env."""
        self.venv.close()

    # ------------------------------------------------------------------------------ attributes
    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        """The batch's attribute once per requested env (spaces: the single env's)."""
        single = {"observation_space": "single_observation_space", "action_space": "single_action_space"}
        value = getattr(self.venv, single.get(attr_name, attr_name))
        return [value for _ in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        """Set an attribute of the batch (all envs: they share one simulator)."""
        self._require_all(indices, "set_attr")
        setattr(self.venv, attr_name, value)

    def env_method(self, method_name: str, *method_args, indices: VecEnvIndices = None, **method_kwargs) -> list[Any]:
        """Call a method of the batch once (all envs) and return its result for each env."""
        self._require_all(indices, "env_method")
        result = getattr(self.venv, method_name)(*method_args, **method_kwargs)
        return [result for _ in range(self.num_envs)]

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        """True for ``Monitor`` (the adapter writes its ``"episode"`` info), False for any other wrapper."""
        return [wrapper_class is Monitor for _ in self._get_indices(indices)]

    def get_images(self) -> Sequence[np.ndarray | None]:
        """The hedging envs render text, not images: warns and returns ``None`` per env (as DummyVecEnv)."""
        warnings.warn(f"The render mode is {self.render_mode}; hedgegym envs have no rgb_array images.", stacklevel=2)
        return [None for _ in range(self.num_envs)]

    def _require_all(self, indices: VecEnvIndices, what: str) -> None:
        idx = list(self._get_indices(indices))
        if sorted(idx) != list(range(self.num_envs)):
            raise ValueError(
                f"{what}: the {self.num_envs} envs of a HedgingSB3VecEnv share one simulator, so "
                f"{what} applies to all of them; pass indices=None (got {idx[:10]})"
            )


class ConcatVecEnv(VecEnv):
    """SB3 ``VecEnv`` of several VecEnvs side by side: env ``k`` of part ``j`` is env ``offset_j + k``.

    For a family of markets (:mod:`hedgegym.envs.family`): each part is a batch on its own drawn
    market, so one rollout holds several markets at once. The parts must share observation and
    action spaces. ``seed(s)`` seeds part ``j`` with ``s + offset_j`` (env ``i`` gets ``s + i``, as
    in one batch); ``get_attr``, ``set_attr``, ``env_method`` and ``env_is_wrapped`` go to the
    parts that hold the requested envs.

    Example:
        >>> parts = [make_sb3_vec_env("frictionless", n_envs=2, agent__venues=["spot"]) for _ in range(2)]
        >>> venv = ConcatVecEnv(parts)
        >>> venv.seed(0)
        [0, 2]
        >>> venv.num_envs, venv.reset().shape
        (4, (4, 20))
    """

    def __init__(self, parts: Sequence[VecEnv]):
        parts = list(parts)
        if not parts:
            raise ValueError("ConcatVecEnv needs at least one VecEnv")
        first = parts[0]
        for j, part in enumerate(parts[1:], 1):
            if part.observation_space != first.observation_space or part.action_space != first.action_space:
                raise ValueError(
                    f"ConcatVecEnv: part {j} has spaces {part.observation_space}, {part.action_space}; "
                    f"part 0 has {first.observation_space}, {first.action_space}"
                )
        self.parts = parts
        self.offsets = np.cumsum([0] + [p.num_envs for p in parts]).tolist()
        super().__init__(self.offsets[-1], first.observation_space, first.action_space)
        self.metadata = dict(getattr(first, "metadata", {}))

    def reset(self) -> VecEnvObs:
        """Reset every part (with the seeds of ``seed()`` if any, used once)."""
        obs = [part.reset() for part in self.parts]
        self.reset_infos = [info for part in self.parts for info in part.reset_infos]
        return np.concatenate(obs)

    def seed(self, seed: int | None = None) -> list[int | None]:
        """Seed part ``j`` with ``seed + offset_j``; returns each part's first seed."""
        out = []
        for part, offset in zip(self.parts, self.offsets, strict=False):
            part.seed(None if seed is None else seed + offset)
            out.append(None if seed is None else seed + offset)
        return out

    def step_async(self, actions: np.ndarray) -> None:
        """Send each part its slice of ``actions``."""
        for part, a, b in zip(self.parts, self.offsets, self.offsets[1:], strict=False):
            part.step_async(actions[a:b])

    def step_wait(self) -> VecEnvStepReturn:
        """Step every part; observations, rewards, dones and infos concatenated in env order."""
        results = [part.step_wait() for part in self.parts]
        obs, rewards, dones, infos = zip(*results, strict=True)
        self.reset_infos = [info for part in self.parts for info in part.reset_infos]
        return np.concatenate(obs), np.concatenate(rewards), np.concatenate(dones), [i for x in infos for i in x]

    def close(self) -> None:
        """Close every part."""
        for part in self.parts:
            part.close()

    def _by_part(self, indices: VecEnvIndices) -> list[tuple[VecEnv, list[int]]]:
        """The parts that hold ``indices``, each with its local indices."""
        out = []
        wanted = list(self._get_indices(indices))
        for part, a, b in zip(self.parts, self.offsets, self.offsets[1:], strict=False):
            local = [i - a for i in wanted if a <= i < b]
            if local:
                out.append((part, local))
        return out

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        """The attribute of each requested env, from its part."""
        return [v for part, local in self._by_part(indices) for v in part.get_attr(attr_name, local)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        """Set the attribute in every part that holds a requested env (a part acts on all its envs)."""
        for part, local in self._by_part(indices):
            part.set_attr(attr_name, value, None if len(local) == part.num_envs else local)

    def env_method(self, method_name: str, *method_args, indices: VecEnvIndices = None, **method_kwargs) -> list[Any]:
        """Call the method in every part that holds a requested env; its results, per env."""
        out = []
        for part, local in self._by_part(indices):
            where = None if len(local) == part.num_envs else local
            out += part.env_method(method_name, *method_args, indices=where, **method_kwargs)
        return out

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        """Whether each requested env is wrapped, from its part."""
        return [v for part, local in self._by_part(indices) for v in part.env_is_wrapped(wrapper_class, local)]

    def get_images(self) -> Sequence[np.ndarray | None]:
        """Every part's images, in env order."""
        return [img for part in self.parts for img in part.get_images()]


class PicklableVecEnvWrapper(VecEnvWrapper):
    """A ``VecEnvWrapper`` that pickles: a checkpoint pickles the env mid-episode, and SB3's wrapper
    caches its class members (``class_attributes``, a mappingproxy that does not pickle); they are
    dropped on pickling and rebuilt on unpickling."""

    def __getstate__(self):
        state = self.__dict__.copy()
        state.pop("class_attributes", None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.class_attributes = dict(inspect.getmembers(self.__class__))


class MarketContextVecEnv(PicklableVecEnvWrapper):
    """SB3 ``VecEnvWrapper``: every observation gets the market's context appended
    (:func:`hedgegym.envs.context.market_context`, :data:`~hedgegym.envs.context.CONTEXT_NAMES`).

    ``venv``: a :class:`HedgingSB3VecEnv`, or a wrapper chain over one (the control's
    ``ResidualVecEnv``); the context is that of the market its batch runs on. When a family env
    draws a new market at an episode's end, the first observation of the next episode carries the
    new market's context and ``infos[i]["terminal_observation"]`` the old one's. ``state=False``:
    the context alone (a policy that picks its action per market, not per state).

    Example:
        >>> venv = MarketContextVecEnv(make_sb3_vec_env("default", n_envs=2, seed=0))
        >>> obs = venv.reset()
        >>> obs.shape, round(float(obs[0, -7]), 6)   # 20 entries of the state, then 7 of the context: sigma
        ((2, 27), 0.6)
    """

    def __init__(self, venv: VecEnv, state: bool = True):
        inner = venv
        while not isinstance(inner, HedgingSB3VecEnv):
            if not hasattr(inner, "venv"):
                raise TypeError(f"MarketContextVecEnv wraps a HedgingSB3VecEnv or a wrapper over one (got {venv!r})")
            inner = inner.venv
        self._vector_env = inner.venv
        self.state = bool(state)
        (dim,) = venv.observation_space.shape
        space = gym.spaces.Box(-OBS_BOUND, OBS_BOUND, ((dim if self.state else 0) + CONTEXT_DIM,), np.float32)
        super().__init__(venv, observation_space=space)
        self._stepped_on = None

    def _context(self) -> np.ndarray:
        config = self._vector_env.market.config
        if getattr(self, "_context_of", None) is not config:  # a new market: once per draw, not per step
            self._context_of, self._context_value = config, market_context(config)
        return self._context_value

    def _with(self, obs: np.ndarray, context: np.ndarray) -> np.ndarray:
        return with_context(obs, context, self.state)

    def reset(self) -> VecEnvObs:
        return self._with(self.venv.reset(), self._context())

    def step_async(self, actions: np.ndarray) -> None:
        self._stepped_on = self._context()  # the market this step runs on, before any reset draws anew
        self.venv.step_async(actions)

    def step_wait(self) -> VecEnvStepReturn:
        obs, rewards, dones, infos = self.venv.step_wait()
        for i in np.flatnonzero(dones).tolist():
            infos[i]["terminal_observation"] = self._with(infos[i]["terminal_observation"], self._stepped_on)
        return self._with(obs, self._context()), rewards, dones, infos


def make_sb3_vec_env(
    scenario_or_config: str | ScenarioConfig | dict | Path = "default",
    n_envs: int = 8,
    seed: int | None = None,
    step_info: bool = True,
    paired: bool = False,
    **kwargs: Any,
) -> HedgingSB3VecEnv:
    """An SB3 ``VecEnv`` of ``n_envs`` hedging envs, ready for ``PPO("MlpPolicy", venv)``.

    Args:
        scenario_or_config: a named scenario (``"short-gamma-crash"``), a YAML path (a string
            ending in ``.yaml``/``.yml`` or a ``Path``), a ``ScenarioConfig`` or a mapping: anything
            :func:`~hedgegym.envs.config.resolve_config` takes.
        n_envs: number of envs in the batch.
        seed: if given, env ``i`` is seeded ``seed + i`` at the first ``reset()``.
        step_info: see :class:`HedgingSB3VecEnv`.
        paired: envs ``2k`` and ``2k + 1`` share one seed, ``seed + k``, hence every episode's
            exogenous path (common random numbers): what one does differently from the other is
            the only difference between their P&L. Needs an even ``n_envs`` and a ``seed``.
        **kwargs: ``HedgingVectorEnv`` arguments (``parallel``, ``agent_impact``, ``render_mode``)
            and config overrides ``section__field=value``.
    """
    seed = check_int("seed", seed, 0, allow_none=True)
    paired = check_bool("paired", paired)
    if paired and (seed is None or n_envs % 2):
        raise ValueError(f"paired envs need a seed and an even n_envs (got seed={seed}, n_envs={n_envs})")
    # config= takes every kind of source (resolve_config tells a scenario name from a YAML path).
    venv = HedgingVectorEnv(n_envs, config=scenario_or_config, autoreset_mode=AutoresetMode.SAME_STEP, **kwargs)
    sb3_env = HedgingSB3VecEnv(venv, step_info=step_info)
    if paired:
        sb3_env.seed_pairs(seed)
    elif seed is not None:
        sb3_env.seed(seed)
    return sb3_env
