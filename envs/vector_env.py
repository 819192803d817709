"""`HedgingVectorEnv`: N hedging envs stepped together by one numba call.

A ``gymnasium.vector.VectorEnv`` over an N-row :class:`~hedgegym.envs.market.Market`. Each ``step()``
validates the batch of actions, maps it to trades, makes one kernel call for all rows, and
assembles the batch's observations, rewards, flags and info with vectorised numpy: there is no
Python loop over envs. Row ``i`` reproduces a :class:`~hedgegym.envs.hedging_env.HedgingEnv` seeded
``seed + i`` bit for bit, through autoresets too.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.error import ResetNeeded
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import batch_space

from hedgegym.envs.config import ScenarioConfig
from hedgegym.envs.hedging_env import (
    _NON_FINITE_HINT,
    VECTOR_RENDER_MODES,
    check_actions,
    check_bool,
    check_finite_obs,
    check_int,
    check_no_options,
    check_render_mode,
    draw_stream_seed,
    render_rows,
    reset_info_arrays,
    resolve_env_config,
    step_info_arrays,
)
from hedgegym.envs.layout import O_REWARD, O_TERMINATED, O_TRUNCATED, OBS_BOUND, OBS_DIM

_UINT64_MAX = 2**64 - 1


class HedgingVectorEnv(gym.vector.VectorEnv):
    """``num_envs`` copies of :class:`~hedgegym.envs.hedging_env.HedgingEnv` in one batched simulator.

    The envs share one scenario; each has its own seed stream and episode counter. Spaces, reward,
    episode end and the meaning of every observation entry and info key are those of
    :class:`~hedgegym.envs.hedging_env.HedgingEnv` (see its docstring), batched: observations
    ``(num_envs, 19)`` float32, actions ``(num_envs, n_venues)`` in [-1, 1] (finite values outside
    are clipped; a wrong shape, NaN or inf raises ``ValueError`` naming the env and venue), rewards
    ``(num_envs,)`` float64, terminations and truncations ``(num_envs,)`` bool.

    ## Autoreset
    ``autoreset_mode`` (``metadata["autoreset_mode"]``) is one of Gymnasium's modes, implemented
    exactly as ``gymnasium.vector.SyncVectorEnv`` does for a list of ``HedgingEnv``:

    - ``AutoresetMode.NEXT_STEP`` (default, Gymnasium's convention): the step on which env ``i``
      ends returns its final observation; the *next* ``step()`` ignores env ``i``'s action, resets
      it (its next episode) and returns the reset observation, reward 0, ``terminated = truncated
      = False`` and the reset info.
    - ``AutoresetMode.SAME_STEP``: the step on which env ``i`` ends resets it at once and returns
      the reset observation and reset info; the final observation and info are in
      ``info["final_obs"]`` (object array, ``None`` for other envs) and ``info["final_info"]``.
      This is the mode of SB3's ``VecEnv`` (see :mod:`hedgegym.envs.sb3_vec_env`).
    - ``AutoresetMode.DISABLED``: nothing is reset; stepping an env that ended raises
      ``ResetNeeded`` until ``reset(options={"reset_mask": mask})`` resets it.

    ## Info
    A dict of arrays, Gymnasium's convention: each key of ``HedgingEnv``'s info holds one entry per
    env (``info["spot"]``: ``(num_envs,)``, ``info["hedge"]``: ``(num_envs, 3)``), with a boolean mask
    ``info["_key"]`` of the envs that have the key. ``info["episode_metrics"]`` (a dict of arrays with
    its own masks) is present on steps where at least one env ended; ``info["_episode_metrics"]``
    marks those envs. Values of envs outside a mask are 0.

    ## Seeding
    ``reset(seed=s)`` seeds env ``i`` with ``s + i`` (episode 0); ``reset(seed=[s_0, ..., s_N-1])``
    seeds each env (``None`` entries: next episode of that env's stream). ``reset()`` without a seed
    and every autoreset start the env's next episode. The first reset without a seed draws seeds
    from ``self.np_random``. Results do not depend on ``num_envs`` nor on ``parallel``.

    ## Arguments
    - ``num_envs``: number of envs, >= 1.
    - ``config``, ``scenario``, ``render_mode``, ``agent_impact``, ``**overrides``: as for
      ``HedgingEnv`` (overrides are ``section__field=value``).
    - ``autoreset_mode``: an ``AutoresetMode`` or its value (``"NextStep"``, ``"SameStep"``,
      ``"Disabled"``).
    - ``parallel``: step rows on numba threads; default: when ``num_envs >= 256``.
    - ``family``: a :class:`~hedgegym.envs.family.FamilyConfig` (or its mapping): whenever all envs
      start an episode together (every reset of all envs; in fixed-length episodes, every
      autoreset), the market is drawn afresh from the family around ``config``, from a generator
      seeded by env 0's stream seed and episode number (see :mod:`hedgegym.envs.family`). A reset of
      some envs only keeps the market. ``self.config`` stays the base; ``self.market.config`` is the
      market of the current episodes.

    Example:
        >>> import numpy as np
        >>> from hedgegym.envs import HedgingVectorEnv
        >>> envs = HedgingVectorEnv(4, scenario="frictionless")
        >>> obs, info = envs.reset(seed=0)
        >>> obs.shape, envs.action_space.shape
        ((4, 20), (4, 3))
        >>> obs, rewards, terminated, truncated, info = envs.step(np.zeros((4, 3)))
        >>> info["spot"].shape, bool(info["_spot"].all())
        ((4,), True)
    """

    metadata = {"render_modes": VECTOR_RENDER_MODES, "render_fps": 4, "autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(
        self,
        num_envs: int = 1,
        config: ScenarioConfig | Mapping[str, Any] | str | os.PathLike | None = None,
        scenario: str | None = None,
        render_mode: str | None = None,
        autoreset_mode: AutoresetMode | str = AutoresetMode.NEXT_STEP,
        parallel: bool | None = None,
        agent_impact: bool = True,
        family: Any = None,
        **overrides: Any,
    ):
        # Imported here so that `import hedgegym.envs` loads no numba (registration is by string).
        from hedgegym.envs.market import Market

        num_envs = check_int("num_envs", num_envs, 1)
        parallel = check_bool("parallel", parallel, allow_none=True)
        agent_impact = check_bool("agent_impact", agent_impact)
        try:
            self.autoreset_mode = AutoresetMode(autoreset_mode)
        except ValueError:
            raise ValueError(
                f"autoreset_mode must be an AutoresetMode or one of "
                f"{[m.value for m in AutoresetMode]} (got {autoreset_mode!r})"
            ) from None
        self.config: ScenarioConfig = resolve_env_config(config, scenario, overrides)
        self.render_mode = check_render_mode(render_mode, VECTOR_RENDER_MODES)
        self.market = Market(self.config, n_envs=num_envs, parallel=parallel, agent_impact=agent_impact)
        self.family = None
        if family is not None:
            from hedgegym.envs.family import check_family

            self.family = check_family(family, self.config)
        self.num_envs = self.market.n_envs
        self.episode_steps = self.market.episode_steps
        self.metadata = {**type(self).metadata, "autoreset_mode": self.autoreset_mode}
        self.venues: tuple[str, ...] = tuple(self.config.agent.venues)
        self.single_action_space = spaces.Box(-1.0, 1.0, (len(self.venues),), np.float32)
        self.single_observation_space = spaces.Box(-OBS_BOUND, OBS_BOUND, (OBS_DIM,), np.float32)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self._action_shape = (self.num_envs, len(self.venues))
        # Per env: its stream's seed, its episode index, whether it has a stream yet.
        self._seeds = np.zeros(self.num_envs, dtype=np.uint64)
        self._episodes = np.zeros(self.num_envs, dtype=np.uint64)
        self._seeded = np.zeros(self.num_envs, dtype=bool)
        # Envs whose last step ended their episode (NEXT_STEP: reset on the next step).
        self._ended = np.zeros(self.num_envs, dtype=bool)
        # Why step() must wait for a reset (None: it need not).
        self._needs_reset: str | None = "before reset()"

    # ------------------------------------------------------------------------------ reset
    def reset(self, *, seed: int | Sequence[int | None] | None = None, options: dict[str, Any] | None = None):
        """Reset all envs, or those of ``options["reset_mask"]`` (bool array ``(num_envs,)``)."""
        options = dict(options or {})
        mask = self._reset_mask(options.pop("reset_mask", None))
        check_no_options(options)
        seeds, given = self._seed_list(seed)
        if seed is None or isinstance(seed, (int, np.integer)):
            super().reset(seed=None if seed is None else int(seed))
        rows = np.flatnonzero(mask)
        self._start_episodes(rows, seeds[rows], given[rows])
        self._ended[rows] = False
        self._needs_reset = None
        obs = self.market.observe()
        check_finite_obs(obs, self.market)
        return obs.copy(), _batched(reset_info_arrays(self.market, rows), rows, self.num_envs)

    def _reset_mask(self, mask) -> np.ndarray:
        if mask is None:
            return np.ones(self.num_envs, dtype=bool)
        if not isinstance(mask, np.ndarray) or mask.dtype != np.bool_ or mask.shape != (self.num_envs,):
            raise ValueError(
                f"options['reset_mask'] must be a bool numpy array of shape ({self.num_envs},) "
                f"(got {type(mask).__name__} {getattr(mask, 'dtype', '')} {np.shape(mask)})"
            )
        if not mask.any():
            raise ValueError("options['reset_mask'] must select at least one env")
        return mask

    def _seed_list(self, seed) -> tuple[np.ndarray, np.ndarray]:
        """Per-env seeds (uint64) and whether each was given, from None, an int or a list."""
        n = self.num_envs
        if seed is None:
            return np.zeros(n, dtype=np.uint64), np.zeros(n, dtype=bool)
        if isinstance(seed, (int, np.integer)):
            if seed < 0 or int(seed) + n - 1 > _UINT64_MAX:
                raise ValueError(f"seed must be an int in [0, 2**64 - num_envs] (got {seed})")
            return np.uint64(seed) + np.arange(n, dtype=np.uint64), np.ones(n, dtype=bool)
        seed = list(seed)
        if len(seed) != n:
            raise ValueError(f"a list of seeds must have one entry per env ({n}), got {len(seed)}")
        bad = [s for s in seed if s is not None and (not isinstance(s, (int, np.integer)) or not 0 <= s <= _UINT64_MAX)]
        if bad:
            raise ValueError(f"seeds must be ints in [0, 2**64) or None (got {bad[:3]})")
        given = np.array([s is not None for s in seed])
        return np.array([0 if s is None else s for s in seed], dtype=np.uint64), given

    def _start_episodes(self, rows: np.ndarray, seeds: np.ndarray | None = None, given: np.ndarray | None = None):
        """Start the next episode of ``rows``: episode 0 of the ``given`` seeds, else the stream's next one."""
        given = np.zeros(rows.shape[0], dtype=bool) if given is None else given
        if given.any():
            self._seeds[rows[given]] = seeds[given]
            self._episodes[rows[given]] = 0
        cont = rows[~given]
        fresh = cont[~self._seeded[cont]]
        if fresh.size:
            self._seeds[fresh] = draw_stream_seed(self.np_random, fresh.size)
            self._episodes[fresh] = 0
        self._episodes[cont[self._seeded[cont]]] += np.uint64(1)
        self._seeded[rows] = True
        if self.family is not None and rows.shape[0] == self.num_envs:
            from hedgegym.envs.family import draw_config, family_rng

            rng = family_rng(self._seeds[0], self._episodes[0])
            self.market.rebuild(draw_config(self.family, self.config, rng))
        self.market.reset(self._seeds[rows], self._episodes[rows], rows=rows)

    # ------------------------------------------------------------------------------ step
    def step(self, actions):
        """Step every env once (autoresetting per ``autoreset_mode``); see the class docstring."""
        if self._needs_reset:
            raise ResetNeeded(f"HedgingVectorEnv.step() called {self._needs_reset}; call reset() first.")
        actions = check_actions(actions, self._action_shape, self.venues)
        mode = self.autoreset_mode
        market = self.market
        pending = self._ended if mode == AutoresetMode.NEXT_STEP else None
        if mode == AutoresetMode.DISABLED and self._ended.any():
            raise ResetNeeded(
                f"envs {np.flatnonzero(self._ended)[:10].tolist()} ended and autoreset_mode is "
                "DISABLED: reset them with reset(options={'reset_mask': mask}) before stepping."
            )
        # Until this step completes, a failure inside it (non-finite output) leaves the envs needing a reset.
        self._needs_reset = "after a step that failed"
        trades = market.actions_to_trades(actions)
        if pending is not None and pending.any():
            # NEXT_STEP ignores the actions of envs that reset on this step; their kernel row is
            # stepped (one batched call) and then overwritten by the reset below.
            trades[pending] = 0.0
        out = market.step(trades, check=False)
        rewards = out[:, O_REWARD].copy()
        terminated = out[:, O_TERMINATED] > 0.5
        truncated = out[:, O_TRUNCATED] > 0.5
        info = step_info_arrays(market)
        if pending is not None and pending.any():
            rows = np.flatnonzero(pending)
            self._start_episodes(rows)
            rewards[rows] = 0.0
            terminated[rows] = False
            truncated[rows] = False
            for key, values in reset_info_arrays(market, rows).items():
                info[key][rows] = values
        ended = terminated | truncated
        all_rows = np.ones(self.num_envs, dtype=bool)
        info = _masked(info, all_rows)
        if ended.any():
            metrics = _masked(_zero_outside(market.episode_metrics(), ended), ended)
            if mode == AutoresetMode.SAME_STEP:
                info = self._same_step_reset(info, metrics, ended)
            else:
                info["episode_metrics"], info["_episode_metrics"] = metrics, ended.copy()
        if not np.isfinite(rewards).all():
            row = int(np.flatnonzero(~np.isfinite(rewards))[0])
            raise RuntimeError(f"the simulator produced a non-finite reward in env {row}; " + _NON_FINITE_HINT)
        obs = market.observe()
        check_finite_obs(obs, market)
        self._ended = ended if mode != AutoresetMode.SAME_STEP else np.zeros(self.num_envs, dtype=bool)
        self._needs_reset = None
        return obs.copy(), rewards, terminated, truncated, info

    def _same_step_reset(self, info: dict, metrics: dict, ended: np.ndarray) -> dict:
        """SAME_STEP: move the ended envs' final obs and info aside, reset them, put their reset info."""
        market = self.market
        rows = np.flatnonzero(ended)
        final_info = _zero_outside({k: v for k, v in info.items() if not k.startswith("_")}, ended)
        final_info = _masked(final_info, ended)
        final_info["episode_metrics"], final_info["_episode_metrics"] = metrics, ended.copy()
        obs = market.observe()
        check_finite_obs(obs, market)
        final_obs_rows = obs[rows].copy()
        # Gymnasium's final_obs is an object array of per-env observations; only ended envs (which
        # all end together in fixed-length episodes) pass through this loop, once per episode.
        final_obs = np.full(self.num_envs, None, dtype=object)
        for n, row in enumerate(rows):
            final_obs[row] = final_obs_rows[n]
        self._start_episodes(rows)
        for key, values in reset_info_arrays(market, rows).items():
            info[key][rows] = values
        info["final_obs"], info["_final_obs"] = final_obs, ended.copy()
        info["final_info"], info["_final_info"] = final_info, ended.copy()
        return info

    # ------------------------------------------------------------------------------ misc
    def render(self) -> tuple[str, ...] | None:
        """``"ansi"``: one line of text per env; ``None``: warns and returns None."""
        if self.render_mode is None:
            gym.logger.warn(
                "HedgingVectorEnv.render() called without a render_mode; create the env with "
                "render_mode='ansi' to get a text summary per env."
            )
            return None
        return tuple(render_rows(self.market, range(self.num_envs)))

    def episode_metrics(self) -> dict[str, np.ndarray]:
        """The current episode's totals so far, per env (keys as ``info["episode_metrics"]``)."""
        return self.market.episode_metrics()


def _zero_outside(values: dict[str, np.ndarray], keep: np.ndarray) -> dict[str, np.ndarray]:
    """Copies of ``values`` with the rows outside ``keep`` zeroed (Gymnasium's info convention)."""
    out = {}
    for key, v in values.items():
        v = v.copy()
        v[~keep] = 0
        out[key] = v
    return out


def _masked(values: dict[str, np.ndarray], present: np.ndarray) -> dict[str, Any]:
    """Gymnasium's batched info: each key followed by its ``_key`` mask of the envs that have it."""
    out: dict[str, Any] = {}
    for key, v in values.items():
        out[key] = v
        out[f"_{key}"] = present.copy()
    return out


def _batched(values: dict[str, np.ndarray], rows: np.ndarray, n: int) -> dict[str, Any]:
    """Per-row ``values`` of ``rows`` spread into arrays of ``n`` envs (0 elsewhere), with masks."""
    present = np.zeros(n, dtype=bool)
    present[rows] = True
    full = {}
    for key, v in values.items():
        arr = np.zeros((n, *v.shape[1:]), dtype=v.dtype)
        arr[rows] = v
        full[key] = arr
    return _masked(full, present)
