"""`HedgingEnv`: one dealer desk hedging its options book in a market with reflexive impact.

The Gymnasium environment of one episode stream. It is a thin wrapper over a one-row
:class:`~hedgegym.envs.market.Market`: the numba kernel computes the dynamics, the observation, the
reward and the episode end; this module validates the action, maps it to trades, and packs the
kernel's outputs into Gymnasium's ``(obs, reward, terminated, truncated, info)``. The batched
:class:`~hedgegym.envs.vector_env.HedgingVectorEnv` sits on the same kernel and the same helpers
below, so the two agree bit for bit.
"""

from __future__ import annotations

import math
import os
import textwrap
from collections.abc import Mapping
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.error import ResetNeeded

from hedgegym.envs.config import VENUE_NAMES, ConfigError, ScenarioConfig, resolve_config
from hedgegym.envs.layout import (
    EXT_DTYPE,
    EXT_INFO,
    O_BOOK_PNL,
    O_CARRY,
    O_CRISIS,
    O_EXO_SPOT,
    O_FEES,
    O_FUNDING,
    O_GEX,
    O_HALTED,
    O_HEDGE_PNL,
    O_INTEREST,
    O_PHI,
    O_PNL,
    O_REWARD,
    O_SLIPPAGE,
    O_SPOT,
    O_TERMINATED,
    O_TRUNCATED,
    OBS_BOUND,
    OBS_DIM,
    OBS_NAMES,
    observation_table,
)

# Arrays up to this many entries (or rows of observations) are checked with Python scalars.
_SMALL = 8
RENDER_MODES = ["ansi", "rgb_array", "human"]
# The batched env renders text only (one frame per env would cost more than the step).
VECTOR_RENDER_MODES = ["ansi"]

# The per-step info, shared by HedgingEnv (Python scalars) and HedgingVectorEnv (arrays): (key, out column).
STEP_INFO_FLOATS = (
    ("spot", O_SPOT),
    ("exo_spot", O_EXO_SPOT),
    ("phi", O_PHI),
    ("gex", O_GEX),
    ("step_pnl", O_PNL),
    ("book_pnl", O_BOOK_PNL),
    ("hedge_pnl", O_HEDGE_PNL),
    ("fees", O_FEES),
    ("slippage", O_SLIPPAGE),
    ("funding", O_FUNDING),
    ("carry", O_CARRY),
    ("interest", O_INTEREST),
)
STEP_INFO_FLAGS = (("liquidity_crisis", O_CRISIS), ("halted", O_HALTED))
# The second-order market's per-step info (key, field of ``market.ext``: ``layout.EXT_INFO``), present
# where the scenario turns a second-order feature on (``Market.second_order``); plus ``atm_vol``, the
# step's ATM vol.
SECOND_ORDER_INFO = EXT_INFO
# The same by the field's place in an ``ext`` record's ``.item()`` tuple (one call per step of HedgingEnv).
_SECOND_ORDER_INFO_AT = tuple((name, EXT_DTYPE.names.index(field)) for name, field in SECOND_ORDER_INFO)


class HedgingEnv(gym.Env):
    """Delta hedging of an options book in a market whose dealers' hedging feeds back on the price.

    ## Description
    The agent is one dealer desk (MODEL.md §6). It holds an options book (by default short a strip
    of calls and puts around the money, expiring at the episode's end) and hedges it on up to three
    venues: spot, a perpetual swap and a dated future (``agent.venues``). Every step (``episode.dt_hours``)
    its trades execute with fees, spread and temporary impact, push the price (permanent and transient
    impact), the exogenous price moves, and the background dealers rebalance their own options hedge at
    the new price: short-gamma dealers (``phi < 0``) amplify moves, long-gamma dealers (``phi > 0``) damp
    and pin them (Frey & Stremme 1997; Sircar & Papanicolaou 1998). The market model is MODEL.md; the
    scenario is a :class:`~hedgegym.envs.config.ScenarioConfig`.

    ## Action Space
    ``Box(-1, 1, (n,), float32)`` with ``n = len(agent.venues)``, one entry per enabled venue in the
    order spot, perp, future (disabled venues are skipped). With ``agent.action_mode``:

    - ``"trade"`` (default): trade ``a * agent.max_trade`` coins of delta on the venue this step.
    - ``"target"``: trade to the position ``a * agent.max_trade`` coins of delta.
    - ``"delta"``: trade ``-net_delta / n + a * agent.max_trade`` coins of delta: ``a = 0`` closes the
      whole net-delta gap, split evenly over the venues, and the action is the deviation from that
      full delta hedge.

    Futures trades in coins of delta become contracts at ``exp(r (T_f - t))`` coins per contract.
    Orders under ``agent.min_trade`` coins are not sent (a lot size; default 0).

    Finite values outside [-1, 1] are **clipped** to [-1, 1] (Gaussian policies emit them; SB3 clips
    too). A wrong shape, NaN or inf raises ``ValueError``. Trades are ignored while the circuit breaker
    halts trading (``info["halted"]``).

    ## Observation Space
    ``Box(-50, 50, (20,), float32)``: every entry is scaled to O(1) and clipped to +-``OBS_BOUND`` = 50,
    so a policy trains without an observation normaliser. Names are ``hedgegym.envs.layout.OBS_NAMES``.
    "Gross" is the book's gross quantity ``sum |quantity|`` (coins), ``sigma`` is ``market.sigma``.

    {observation_table}

    Every entry is clipped to [-50, 50]. Observations are finite always: a non-finite value from
    the simulator raises ``RuntimeError`` rather than reaching the policy.

    ## Rewards
    With ``x = step P&L / pnl_scale`` (``pnl_scale``: ``agent.pnl_scale_usd``, by default 1e-3 of the
    book's gross notional ``sum |quantity| * spot0``), and the step P&L of MODEL.md §6 (book
    mark-to-model change + hedge P&L - fees - slippage - funding - carry of margin capital + interest
    on the cash account),
    ``agent.reward`` selects:

    - ``"mean_variance"`` (default, Kolm & Ritter 2019): ``r = x - (risk_aversion / 2) x^2``;
    - ``"pnl"``: ``r = x``;
    - ``"terminal_pnl"``: 0 until the last step, then the episode's total P&L / pnl_scale (for
      CVaR and other objectives on the episode's P&L distribution);
    - ``"episode_mean_variance"``: ``r = x - (risk_aversion / 2) x^2 - risk_aversion x (c - m)``,
      with ``c`` the episode's P&L before the step / pnl_scale and ``m`` the running mean of
      finished episodes' P&L / pnl_scale (over the last 256 episodes; until one has finished, the
      cross term is 0). An episode's rewards sum to ``C - (risk_aversion / 2) ((C - m)^2 - m^2)``
      for its P&L ``C``: with ``m`` the mean, their expectation is the mean-variance objective of
      the episode's P&L itself, where the per-step form penalises the sum of squared steps, which
      differs from the episode's variance when the steps' P&L is autocorrelated (crash markets).
      The observation's ``pnl_to_date`` carries ``c``, so the reward is Markov in the observation.

    ## Starting State
    Spot at ``market.spot0``, exogenous price equal to spot, no transient impact, variance
    ``sigma^2`` (Heston: ``v0``), hedge positions flat (``agent.initial_hedge="delta"``: short the
    book's delta on spot). Every path is random only through the episode's seed (common random
    numbers: two policies on the same seed meet the same shocks).

    ## Episode End
    Every episode lasts ``config.episode_steps`` steps.

    - Termination: the agent's last option expires (within ``episode.horizon_days``); the book
      settles in cash at intrinsic value on that step.
    - Truncation: ``episode.horizon_days`` is reached before the last expiry.

    ``step()`` after the episode ended, or before the first ``reset()``, raises
    ``gymnasium.error.ResetNeeded``.

    ## Info
    ``reset()`` and every ``step()`` return:

    ====================  ==============================================================
    spot, exo_spot        spot and the exogenous (no-impact) price after the step, USD
    phi, gex              dealer gamma over depth, and dealer GEX (USD per 1 % move)
    step_pnl              the step's P&L, USD (= book_pnl + hedge_pnl - fees - slippage
                          - funding - carry + interest): the change of the agent's wealth
    book_pnl, hedge_pnl   change in the book's mark (settling lines: their payoff), P&L of
                          the hedge positions at the new mids, USD
    interest              interest earned on the cash account over the step, USD
    fees, slippage        the step's trading costs, USD
    funding, carry        perp funding paid and the cost of margin capital, USD
    hedge                 positions after the step, float64 array (3,): spot (coins),
                          perp (coins), future (contracts); disabled venues 0
    book_delta            the book's delta, coins
    liquidity_crisis      True if the clearing had no admissible root this step (none with
                          1 + phi > phi_floor within reach, or the price band was hit): the
                          move was capped at x / phi_floor
    phi (on such a step)  the feedback at the pre-clearing price, where no root was found
    halted                True if the circuit breaker halted trading this step
    ====================  ==============================================================

    Where the scenario turns on a second-order feature (implied-vol dynamics, dealer cohorts,
    liquidations; README "The market model"), also (floats):

    ====================  ==============================================================
    flow_gamma,           the dealers' hedge flow of the step (coins) split into the
    flow_vanna,           gamma, vanna and charm parts of the continuously hedged demand
    flow_charm,           ``-hr (Gamma dS + V_sigma d ln sigma_atm + charm dt)``, and the
    flow_other            rest (schedules, bands, lags, expiries, higher orders)
    phi_vanna             the vanna feedback psi (phi + psi is the effective feedback)
    atm_vol               the ATM implied vol at the step's close
    crowded               1.0 if two or more dealer cohorts traded in the same direction
    liquidated_long_usd,  leveraged perp positions liquidated this step, USD at the mark
    liquidated_short_usd
    cascade_rounds        liquidation rounds this step (each set off by the one before)
    adl_events            auto-deleveraging events this step
    insurance_fund_usd    the liquidation engine's insurance fund after the step, USD
    ====================  ==============================================================

    At ``reset()`` the P&L entries are 0 and the prices are ``spot0``. On the episode's last step
    ``info["episode_metrics"]`` holds the episode's totals (MODEL.md §7), floats: ``pnl``,
    ``book_pnl``, ``hedge_pnl``, ``fees``, ``slippage_usd``, ``slippage_bps`` (of traded notional),
    ``funding``, ``carry``, ``interest``, ``turnover_usd``, ``n_trades``, ``realised_vol`` and
    ``realised_vol_exo`` (annualised), ``vol_amplification`` (their ratio), ``mean_phi``, ``crisis_steps``,
    ``halt_steps``, ``pin_distance``, ``pin_distance_exo``, ``steps``, ``reward``; with a
    second-order feature on, also the keys of ``hedgegym.envs.market.SECOND_ORDER_METRICS`` (the
    flow decomposition, ``mean_phi_vanna``, ``crowding``, ``return_autocorr_1`` to ``_4``, the
    liquidations, the insurance fund and ADL).

    ## Seeding
    ``reset(seed=s)`` starts the stream ``s`` at episode 0; each later ``reset()`` without a seed
    starts the stream's next episode (1, 2, ...). The first ``reset()`` without a seed draws the
    stream's seed from ``self.np_random``. Episode ``e`` of stream ``s`` is the same path whatever
    the actions and whichever env (single or vector) runs it.

    ## Arguments
    - ``config``: a :class:`ScenarioConfig`, a mapping validated into one, or the path of a YAML
      file. Exclusive with ``scenario``.
    - ``scenario``: the name of a built-in scenario (``hedgegym scenarios``; default ``"default"``).
    - ``render_mode``: ``None``; ``"ansi"`` (``render()`` returns a one-line text summary);
      ``"rgb_array"`` (``render()`` returns the frame, ``uint8`` of shape ``(480, 640, 3)``: price
      with and without the dealers' feedback, the hedge by venue and the cumulative P&L over the
      episode so far; for Gymnasium's ``RecordVideo`` and SB3's ``VecVideoRecorder``); ``"human"``
      (the same frame shown in a matplotlib window at every ``reset()`` and ``step()``; with a
      non-interactive backend it warns once and shows nothing). The episode's path is recorded
      only in the two image modes.
    - ``agent_impact``: if False the agent's trades pay their costs but do not move prices (to
      measure the agent's own share of the volatility amplification).
    - ``**overrides``: config fields as ``section__field=value`` keyword arguments, nested fields
      joined by double underscores: ``market__sigma=0.8``, ``market__heston__enabled=True``,
      ``agent__venues=["spot"]``. Validated like a YAML file; a bad one raises
      :class:`~hedgegym.envs.config.ConfigError` naming the field.

    ## Version History
    - v1: time is the step index times dt and each option line settles once; the agent's cash earns
      ``market.rate`` (``info["interest"]``, part of the P&L and the reward); the clearing takes the
      first admissible root in the flow's direction (crisis flags only where none exists); dealers
      unwind the hedge of expiring lines after their settlement, not inside it.
    - v0: initial version.

    Example:
        >>> from hedgegym.envs import HedgingEnv
        >>> env = HedgingEnv(scenario="frictionless", agent__venues=["spot"])
        >>> obs, info = env.reset(seed=0)
        >>> obs.shape, env.action_space.shape
        ((20,), (1,))
        >>> obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        >>> sorted(info)[:4]
        ['book_delta', 'book_pnl', 'carry', 'exo_spot']
    """

    metadata = {"render_modes": RENDER_MODES, "render_fps": 12}

    def __init__(
        self,
        config: ScenarioConfig | Mapping[str, Any] | str | os.PathLike | None = None,
        scenario: str | None = None,
        render_mode: str | None = None,
        agent_impact: bool = True,
        **overrides: Any,
    ):
        # Imported here so that `import hedgegym.envs` loads no numba (registration is by string).
        from hedgegym.envs.market import Market

        agent_impact = check_bool("agent_impact", agent_impact)
        self.config: ScenarioConfig = resolve_env_config(config, scenario, overrides)
        self.render_mode = check_render_mode(render_mode)
        self.market = Market(self.config, n_envs=1, parallel=False, agent_impact=agent_impact)
        self.episode_steps = self.market.episode_steps
        self.venues: tuple[str, ...] = tuple(self.config.agent.venues)
        self.action_space = spaces.Box(-1.0, 1.0, (len(self.venues),), np.float32)
        self.observation_space = spaces.Box(-OBS_BOUND, OBS_BOUND, (OBS_DIM,), np.float32)
        self._action_shape = (len(self.venues),)
        self._stream_seed: int | None = None
        self._episode = 0
        # Why step() must wait for a reset (None: it need not).
        self._needs_reset: str | None = "before reset()"
        # The image modes record the episode's path; the others pay nothing for rendering.
        self._trail = self._frames = self._window = None
        if self.render_mode in ("rgb_array", "human"):
            from hedgegym.envs.render import EpisodeTrail

            self._trail = EpisodeTrail(self.episode_steps)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Start episode 0 of stream ``seed``, or the stream's next episode if ``seed`` is None."""
        super().reset(seed=seed)
        check_no_options(options)
        if seed is not None:
            self._stream_seed, self._episode = int(seed), 0
        elif self._stream_seed is None:
            self._stream_seed, self._episode = draw_stream_seed(self.np_random), 0
        else:
            self._episode += 1
        self.market.reset(self._stream_seed, self._episode)
        self._needs_reset = None
        obs = self.market.observe()
        check_finite_obs(obs, self.market)
        info = reset_info(self.market, 0)
        if self._trail is not None:
            self._trail.start(info["spot"], info["exo_spot"], info["hedge"], 0.0)
            if self.render_mode == "human":
                self.render()
        return obs[0].copy(), info

    def step(self, action):
        """Advance one step; see the class docstring for the action, reward and info."""
        if self._needs_reset:
            raise ResetNeeded(f"HedgingEnv.step() called {self._needs_reset}; call reset() first.")
        actions = check_actions(action, self._action_shape, self.venues)
        # Until this step completes, a failure inside it (non-finite output) leaves the env needing a reset.
        self._needs_reset = "after a step that failed"
        market = self.market
        out = market.step(market.actions_to_trades(actions[None, :]), check=False)
        obs = market.observe()
        check_finite_obs(obs, market)
        vals = out[0].tolist()
        reward = vals[O_REWARD]
        terminated = vals[O_TERMINATED] > 0.5
        truncated = vals[O_TRUNCATED] > 0.5
        info = {name: vals[col] for name, col in STEP_INFO_FLOATS}
        for name, col in STEP_INFO_FLAGS:
            info[name] = vals[col] > 0.5
        info["hedge"] = market.hedge[0].copy()
        info["book_delta"] = market.state["book_delta"][0].item()
        if market.second_order:
            ext = market.ext[0].item()
            for name, at in _SECOND_ORDER_INFO_AT:
                info[name] = ext[at]
            info["atm_vol"] = market.state["atm_vol"][0].item()
        if terminated or truncated:
            info["episode_metrics"] = {k: v[0].item() for k, v in market.episode_metrics().items()}
        if not math.isfinite(reward):
            raise RuntimeError(
                f"the simulator produced a non-finite reward ({reward}) at step "
                f"{int(market.state['step'][0])}; " + _NON_FINITE_HINT
            )
        self._needs_reset = "after the episode ended (terminated or truncated)" if terminated or truncated else None
        if self._trail is not None:
            self._trail.add(info["spot"], info["exo_spot"], info["hedge"], market.state["cum_pnl"][0].item())
            if self.render_mode == "human":
                self.render()
        return obs[0].copy(), reward, terminated, truncated, info

    def render(self):
        """The current state per ``render_mode`` (see Arguments); without a render_mode: warns, returns None."""
        if self.render_mode is None:
            gym.logger.warn(
                "HedgingEnv.render() called without a render_mode; create the env with "
                "render_mode='ansi' (text) or 'rgb_array' (frames)."
            )
            return None
        if self.render_mode == "ansi":
            return render_rows(self.market, [0])[0]
        if self._trail.n == 0:
            raise ResetNeeded("HedgingEnv.render() called before reset(); call reset() first.")
        if self._frames is None:
            from hedgegym.envs.render import FrameRenderer

            self._frames = FrameRenderer(
                self.episode_steps, self.config.episode.dt_hours, self.venues, self.config.name
            )
        frame = self._frames.draw(self._trail)
        if self.render_mode == "rgb_array":
            return frame
        if self._window is None:
            from hedgegym.envs.render import FrameWindow

            self._window = FrameWindow(self.metadata["render_fps"])
        self._window.show(frame)
        return None

    def close(self):
        """Close the human-mode window, if one is open."""
        if self._window is not None:
            self._window.close()
        super().close()


# ------------------------------------------------------------------------------ shared helpers
_NON_FINITE_HINT = (
    "the scenario's parameters are probably outside the range where the model is "
    "numerically sound (e.g. extreme vol, depth or step); please report it with the "
    "config and seed."
)


# The table is generated from layout.OBSERVATION, like the observation itself and README's table.
HedgingEnv.__doc__ = HedgingEnv.__doc__.replace(
    "{observation_table}", textwrap.indent(observation_table("rst"), "    ").lstrip()
)


def resolve_env_config(config, scenario: str | None, overrides: Mapping[str, Any]) -> ScenarioConfig:
    """The envs' arguments through :func:`~hedgegym.envs.config.resolve_config`.

    ``config``: ScenarioConfig, mapping or YAML path; ``scenario``: a named scenario; neither:
    the ``default`` scenario. Overrides come as keyword arguments ``section__field`` (a keyword
    cannot hold a dot); keyword arguments without ``__`` are an error.
    """
    if config is not None and scenario is not None:
        raise ConfigError(
            f"pass either config= or scenario=, not both (got scenario={scenario!r}); a named id such as "
            "hedgegym/ShortGammaCrash-v2 fixes its scenario: use hedgegym/Hedging-v2 with config=..."
        )
    bad = [k for k in overrides if "__" not in k]
    if bad:
        hint = (
            " (the episode's length is the scenario's: set episode__horizon_days)" if "max_episode_steps" in bad else ""
        )
        raise ConfigError(
            f"unknown argument(s) {', '.join(map(repr, bad))}: config overrides are keyword arguments "
            "named section__field (nested fields joined by '__'), e.g. market__sigma=0.8 or "
            f"agent__venues=['spot']{hint}"
        )
    return resolve_config(
        config if config is not None else scenario, {key.replace("__", "."): value for key, value in overrides.items()}
    )


def check_render_mode(render_mode: str | None, allowed: list[str] = RENDER_MODES) -> str | None:
    """``render_mode`` if in ``allowed``, else ``ValueError`` listing the supported ones."""
    if render_mode is not None and render_mode not in allowed:
        raise ValueError(f"render_mode must be None or one of {allowed} (got {render_mode!r})")
    return render_mode


def check_bool(name: str, value: Any, allow_none: bool = False) -> bool | None:
    """``value`` if it is a boolean (Python or NumPy), else a TypeError naming the argument.

    A string such as ``"no"`` is truthy: coercing it would silently mean the opposite.
    """
    if isinstance(value, (bool, np.bool_)) or (allow_none and value is None):
        return None if value is None else bool(value)
    allowed = "True, False or None" if allow_none else "True or False"
    raise TypeError(f"{name} must be {allowed} (got {value!r} of type {type(value).__name__})")


def check_int(name: str, value: Any, minimum: int, allow_none: bool = False) -> int | None:
    """``value`` if it is an integer (Python or NumPy, not a bool) >= ``minimum``; else an error naming it."""
    if allow_none and value is None:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(
            f"{name} must be an integer >= {minimum}{' or None' if allow_none else ''} "
            f"(got {value!r} of type {type(value).__name__})"
        )
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum} (got {value})")
    return int(value)


def check_no_options(options: Mapping[str, Any] | None) -> None:
    """The envs take no reset options (the vector env's ``reset_mask`` is handled before this)."""
    if options:
        raise ValueError(
            f"unknown reset option(s) {sorted(options)}: hedgegym envs take no reset options "
            "(the vector env takes only 'reset_mask')"
        )


def draw_stream_seed(rng: np.random.Generator, size: int | None = None):
    """Stream seed(s) for an unseeded first reset, drawn from the env's Gymnasium RNG."""
    seeds = rng.integers(0, 2**63, size=size, dtype=np.int64)
    return int(seeds) if size is None else seeds.astype(np.uint64)


def check_actions(action, shape: tuple[int, ...], venues: tuple[str, ...]) -> np.ndarray:
    """``action`` as float64 of ``shape``, clipped to [-1, 1]; wrong shape, NaN or inf raise ValueError."""
    try:
        arr = np.asarray(action, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"action must be an array of numbers of shape {shape} (one per venue "
            f"{list(venues)}); could not convert {action!r}: {err}"
        ) from None
    if arr.shape != shape:
        raise ValueError(
            f"action must have shape {shape}, one value in [-1, 1] per enabled venue "
            f"{list(venues)} (got shape {arr.shape})"
        )
    # The common case, every entry in [-1, 1] (NaN fails both comparisons), costs one pass. A single
    # env's few entries are checked in Python: numpy's reductions cost microseconds on tiny arrays.
    if arr.size <= _SMALL:
        in_range = all(-1.0 <= x <= 1.0 for x in arr.ravel().tolist())
    else:
        in_range = bool(((arr >= -1.0) & (arr <= 1.0)).all())
    if in_range:
        return arr
    finite = np.isfinite(arr)
    if not finite.all():
        where = np.argwhere(~finite)[0]
        kind = "NaN" if np.isnan(arr[tuple(where)]) else "inf"
        env = f"env {where[0]}, " if len(shape) == 2 else ""
        raise ValueError(
            f"action contains {kind} at {env}venue {venues[where[-1]]!r} "
            f"(index {tuple(int(i) for i in where)}); actions must be finite numbers in [-1, 1]"
        )
    return np.minimum(np.maximum(arr, -1.0), 1.0)


def check_finite_obs(obs: np.ndarray, market) -> None:
    """Raise if the simulator produced a non-finite observation: it must never reach a policy."""
    # The kernel clips to +-OBS_BOUND, so only NaN can get through, and NaN propagates into a sum.
    if obs.size <= _SMALL * OBS_DIM:
        finite = math.isfinite(sum(obs.ravel().tolist()))
    else:
        finite = bool(np.isfinite(obs).all())
    if not finite:
        row, col = (int(i) for i in np.argwhere(~np.isfinite(obs))[0])
        raise RuntimeError(
            f"the simulator produced a non-finite observation {OBS_NAMES[col]}={obs[row, col]} "
            f"in env {row} at step {int(market.state['step'][row])}; " + _NON_FINITE_HINT
        )


def reset_info(market, row: int) -> dict[str, Any]:
    """The info of a freshly reset row, as Python scalars (HedgingEnv)."""
    return {k: v[0].item() if k != "hedge" else v[0] for k, v in reset_info_arrays(market, [row]).items()}


def reset_info_arrays(market, rows) -> dict[str, np.ndarray]:
    """The info of freshly reset ``rows``, one entry per row: prices at spot0, P&L entries 0."""
    rows = np.asarray(rows, dtype=np.int64)
    n = rows.shape[0]
    spot0 = market.params["spot0"][0]
    start = {
        "spot": np.full(n, spot0),
        "exo_spot": np.full(n, spot0),
        "phi": market.state["phi"][rows],
        "gex": market.state["gex"][rows],
    }
    info: dict[str, np.ndarray] = {name: start[name] if name in start else np.zeros(n) for name, _ in STEP_INFO_FLOATS}
    for name, _ in STEP_INFO_FLAGS:
        info[name] = np.zeros(n, dtype=bool)
    info["hedge"] = market.hedge[rows]
    info["book_delta"] = market.state["book_delta"][rows]
    if market.second_order:
        for name, field in SECOND_ORDER_INFO:
            info[name] = market.ext[field][rows]
        info["atm_vol"] = market.state["atm_vol"][rows]
    return info


def step_info_arrays(market) -> dict[str, np.ndarray]:
    """The per-step info of every row as arrays (copies: the market's buffers are reused)."""
    out = market.out
    info: dict[str, np.ndarray] = {name: out[:, col].copy() for name, col in STEP_INFO_FLOATS}
    for name, col in STEP_INFO_FLAGS:
        info[name] = out[:, col] > 0.5
    info["hedge"] = market.hedge.copy()
    info["book_delta"] = market.state["book_delta"].copy()
    if market.second_order:
        for name, field in SECOND_ORDER_INFO:
            info[name] = market.ext[field].copy()
        info["atm_vol"] = market.state["atm_vol"].copy()
    return info


def render_rows(market, rows) -> list[str]:
    """One line of text per row: step, prices, phi, positions, P&L so far."""
    lines = []
    st, hedge = market.state, market.hedge
    for i in rows:
        positions = " ".join(f"{v} {hedge[i, j]:+.2f}" for j, v in enumerate(VENUE_NAMES))
        lines.append(
            f"step {int(st['step'][i])}/{market.episode_steps}  spot {math.exp(st['log_spot'][i]):,.1f}  "
            f"phi {st['phi'][i]:+.3f}  book delta {st['book_delta'][i]:+.2f}  hedge {positions}  "
            f"P&L {st['cum_pnl'][i]:+,.0f} USD"
        )
    return lines
