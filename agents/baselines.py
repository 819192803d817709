"""The classical hedgers: no hedge, Black–Scholes delta, fixed band, Whalley–Wilmott, Leland.

Every hedger is a *policy*: a callable ``policy(obs, market) -> actions`` with ``obs[N, OBS_DIM]``
(float32, :meth:`Market.observe`) and ``actions[N, n_enabled_venues]`` in [-1, 1], the envs'
action units (mapped to coins by :meth:`Market.actions_to_trades` under the scenario's
``agent.action_mode``). The same object drives the vector env (``policy(obs, venv.market)``, all
rows at once in NumPy/numba) and :class:`HedgingEnv` (``policy(obs, env.unwrapped.market)`` with a
1-D ``obs``, which returns a 1-D action).

A hedger reads the desk's state from the market (book delta and gamma, hedge positions, spot,
time), decides a trade in coins of delta, executes it on its venue — a fixed one, or split across
venues by :func:`hedgegym.agents.routing.route_cheapest` (``venue="cheapest"``) — and expresses
it as actions clipped to [-1, 1] (:meth:`Market.trades_to_actions`, the inverse of the action
mapping in every ``agent.action_mode``). A baseline is therefore bound by the same limits as the
agent — ``agent.max_trade`` per step in "trade" mode, per position in "target" mode, per deviation
from the full hedge in "delta" mode, and the ``agent.min_trade`` lot size: the comparison is fair,
and a hedger far off its target catches up over several steps.

Net delta (coins) is ``e = Delta_book + h_spot + h_perp + h_future exp(r (T_f - t))``. The hedgers:

===================  ===================================================================
``no_hedge``         never trades.
``delta``            trades ``-e`` every step (Black & Scholes 1973 delta of the book, with
                     the scenario's smile).
``fixed_band``       when ``|e| > w`` trades to the band edge, ``-(e - sign(e) w)``; ``w`` =
                     ``baselines.band_width`` x the gross book quantity (coins).
``whalley_wilmott``  the same with the asymptotically optimal half-width of Whalley & Wilmott
                     (1997), :func:`whalley_wilmott_half_width`.
``leland``           trades ``-e`` computed with the book delta at Leland's (1985) volatility
                     for the rebalancing interval and costs, :func:`leland_volatility`.
===================  ===================================================================

Parameters come from the scenario's ``baselines`` section (:class:`BaselinesConfig`), overridden
by keyword arguments of :func:`make_baseline`.

Each hedger is one compiled row function (:func:`desired_trade_row`, with :func:`net_delta_row`,
:func:`band_edge`, :func:`ww_half_width`, :func:`leland_book_delta_row`, :func:`place_row` and
:func:`trades_to_actions_row`): ``policy(obs, market)`` runs it over the rows, and the evaluation's
rollout (:meth:`Baseline.market_trades`) runs it fused with the env's action mapping, one pass per
step, so the two cannot disagree. The NumPy functions :func:`band_trade` and
:func:`whalley_wilmott_half_width` are ufuncs compiled from the same scalar source.

Example:
    >>> import numpy as np
    >>> from hedgegym.envs.config import ScenarioConfig
    >>> from hedgegym.envs.market import Market
    >>> from hedgegym.agents.baselines import make_baseline
    >>> market = Market(ScenarioConfig(), n_envs=4)
    >>> market.reset(seeds=np.arange(4))
    >>> policy = make_baseline("delta", market.config)
    >>> for _ in range(market.episode_steps):
    ...     _ = market.step(market.actions_to_trades(policy(market.observe(), market)))
    >>> policy.name, bool(np.all(market.episode_metrics()["n_trades"] > 0))
    ('delta@spot', True)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import cached_property
from typing import Any

import numpy as np
from numba import njit, prange, vectorize
from pydantic import ValidationError

from hedgegym.agents.routing import route_cheapest
from hedgegym.envs.config import (
    DAYS_PER_YEAR,
    HOURS_PER_YEAR,
    VENUE_NAMES,
    BaselinesConfig,
    ScenarioConfig,
    format_validation_error,
    validate_config,
)
from hedgegym.envs.greeks import line_greeks
from hedgegym.envs.kernel import (
    ACTION_DELTA,
    ACTION_TARGET,
    ACTION_TRADE,
    actions_to_trades_row,
    future_delta,
    future_enabled,
    line_vol,
    step_serial,
)
from hedgegym.envs.layout import (
    CALL,
    FUTURE,
    L_EXPIRY,
    L_EXPIRY_STEP,
    L_IS_CALL,
    L_QUANTITY,
    L_STRIKE,
    N_VENUES,
    PERP,
    SPOT,
)

DUST = 1e-9
"""Coins: a hedger sends no order smaller than this (float residue of a hedge, not a trade)."""

Policy = Callable[[np.ndarray, Any], np.ndarray]
"""``policy(obs[N, OBS_DIM] float32, market: Market) -> actions[N, n_enabled_venues]`` in [-1, 1]."""

ACTION_MODES = {"trade": ACTION_TRADE, "target": ACTION_TARGET, "delta": ACTION_DELTA}
"""``agent.action_mode`` -> the kernel's code of the action mapping."""

# The compiled hedgers' codes (:func:`desired_trade_row`); each class of the registry has one.
NO_HEDGE, DELTA, FIXED_BAND, WHALLEY_WILMOTT, LELAND = 0, 1, 2, 3, 4
# The venue code of a routed hedger: its trades are split by route_cheapest, in NumPy.
ROUTED = -1


# ------------------------------------------------------------------------------------ formulas
# Each formula is written once, as a scalar numba function; the NumPy functions of the same name
# are ufuncs compiled from the same source, so the compiled hedgers and the array callers agree.
def _band_edge(net_delta, half_width):
    return min(max(net_delta, -half_width), half_width) - net_delta


_band_trade = vectorize(["float64(float64, float64)"], cache=True)(_band_edge)
band_edge = njit(cache=True)(_band_edge)


def band_trade(net_delta, half_width):
    """Trade (coins) back to the edge of the band ``|e| <= H``: ``-(e - clip(e, -H, H))``; 0 inside.

    Element-wise over arrays (broadcast); :func:`band_edge` is the same formula on scalars, for
    numba code.

    Example:
        >>> band_trade(np.array([3.0, -0.5, -2.0]), 1.0).tolist()
        [-2.0, 0.0, 1.0]
    """
    return _band_trade(net_delta, half_width)


def _ww_half_width(gamma, spot, cost, risk_aversion, rate, tau):
    return np.cbrt(1.5 * math.exp(-rate * tau) * cost * spot * gamma * gamma / risk_aversion)


_whalley_wilmott = vectorize(["float64(float64, float64, float64, float64, float64, float64)"], cache=True)(
    _ww_half_width
)
ww_half_width = njit(cache=True)(_ww_half_width)


def whalley_wilmott_half_width(gamma, spot, cost, risk_aversion, rate=0.0, tau=0.0):
    """Half-width of the Whalley–Wilmott no-trade band around the delta hedge, coins.

        H = (3/2 * exp(-r tau) * c * S * Gamma^2 / gamma)^(1/3)

    Whalley & Wilmott (1997), *An asymptotic analysis of an optimal hedging model for option
    pricing with transaction costs*, Math. Finance 7(3), the leading-order band of the
    Hodges–Neuberger exponential-utility problem (also pfhedge's ``WhalleyWilmott``).

    Args:
        gamma: book gamma, coins of delta per USD of spot (``state["book_gamma"]``; any sign).
        spot: spot price S, USD per coin.
        cost: proportional cost c of one trade, fraction of notional (fee + half spread).
        risk_aversion: absolute risk aversion gamma of exp(-gamma W), per USD (> 0).
        rate: carry rate r per year. tau: time to the book's expiry T - t, years.

    Element-wise over arrays (broadcast); :func:`ww_half_width` is the same formula on scalars, for
    numba code.

    Units: Gamma in coins of delta per USD/coin of spot (coins^2/USD), so c S Gamma^2 / gamma is in
    coins^3 and H in coins.

    Example (short 1 ATM call, S = 100, sigma = 20 %, 1 year: Gamma = 0.0198; c = 1 %, gamma = 1):
        >>> round(float(whalley_wilmott_half_width(-0.0198, 100.0, 0.01, 1.0)), 5)
        0.08378
    """
    return _whalley_wilmott(gamma, spot, cost, risk_aversion, rate, tau)


@njit(cache=True)
def leland_number(sigma, cost, dt):
    """Leland's number ``Le = sqrt(2 / pi) * k / (sigma sqrt(dt))`` with the round-trip cost
    ``k = 2 c`` of one-way proportional cost ``c``, for rebalancing every ``dt`` years.

    Leland (1985), *Option pricing and replication with transactions costs*, J. Finance 40(5),
    eq. (9); the expected cost of a rebalance over a random-walk step is c S |Gamma| sigma S
    sqrt(2 dt / pi) (Hoggard, Whalley & Wilmott 1994). Scalars; callable from numba code.

    Example (sigma = 60 %, c = 11 bp, hourly: sqrt(2/pi) * 0.0022 / (0.6 / sqrt(8760))):
        >>> round(leland_number(0.6, 0.0011, 1.0 / 8760.0), 4)
        0.2738
    """
    return math.sqrt(2.0 / math.pi) * 2.0 * cost / (sigma * math.sqrt(dt))


@njit(cache=True)
def leland_volatility(sigma, cost, dt, gamma_sign=-1.0):
    """Leland's adjusted volatility ``sigma_hat = sigma sqrt(max(1 -/+ Le, 0))``.

    A short-gamma book (``gamma_sign <= 0``, the option writer of Leland 1985) hedges at a higher
    volatility, ``sigma^2 (1 + Le)``; a long-gamma one (``gamma_sign > 0``) at ``sigma^2 (1 - Le)``,
    which vanishes when ``Le >= 1`` (Leland's scheme breaks down; the delta becomes the intrinsic
    step). Scalars; callable from numba code (the :class:`Leland` hedger calls it per line).

    Example (Le = 0.2738: short 0.6 sqrt(1.2738), long 0.6 sqrt(0.7262)):
        >>> [round(leland_volatility(0.6, 0.0011, 1.0 / 8760.0, sign), 4) for sign in (-1.0, 1.0)]
        [0.6772, 0.5113]
    """
    le = leland_number(sigma, cost, dt)
    factor = 1.0 - le if gamma_sign > 0.0 else 1.0 + le
    return sigma * math.sqrt(max(factor, 0.0))


# ------------------------------------------------------------------------------------ compiled hedger
# Row functions: row ``i`` of the market's arrays (``state`` records, ``hedge[N, 3]``), ``p`` its
# parameter record. The NumPy-facing methods of :class:`Baseline` and the evaluation's rollout both
# run them, so there is one hedger, whichever loop drives it.
@njit(cache=True, _nrt=False, inline="always")
def net_delta_row(state, hedge, i, p):
    """Net delta of row ``i``, coins: book delta + spot + perp + futures contracts x exp(r (T_f - t))
    (without futures, the exponential is not computed: its term is 0 either way)."""
    futures = hedge[i, FUTURE]
    return (
        state[i].book_delta
        + hedge[i, SPOT]
        + hedge[i, PERP]
        + (futures * future_delta(state, i, p) if futures != 0.0 else futures)
    )


@njit(cache=True, _nrt=False)
def leland_book_delta_row(state, i, agent_lines, p, cost, interval):
    """Book delta of row ``i`` with every live line at its smile vol adjusted by Leland's factor."""
    t = state[i].t
    spot = state[i].spot
    sign = 1.0 if state[i].book_gamma > 0.0 else -1.0
    delta = 0.0
    for j in range(agent_lines.shape[0]):
        if agent_lines[j, L_EXPIRY_STEP] <= state[i].step:
            continue
        tau = agent_lines[j, L_EXPIRY] - t
        vol = line_vol(p, state[i].atm_vol, agent_lines[j, L_STRIKE], spot)
        vol_hat = leland_volatility(vol, cost, interval, sign)
        _, d, _, _, _, _ = line_greeks(
            spot, agent_lines[j, L_STRIKE], tau, p.rate, vol_hat, agent_lines[j, L_IS_CALL] == CALL
        )
        delta += agent_lines[j, L_QUANTITY] * d
    return delta


@njit(cache=True, _nrt=False, inline="always")
def desired_trade_row(code, state, hedge, i, p, agent_lines, hp):
    """The trade hedger ``code`` wants in row ``i``, coins of delta (see the module's table).

    ``hp`` = (band_width, cost, risk_aversion, expiry, leland_interval, leland_interval_steps):
    :attr:`Baseline.compiled_params`.
    """
    if code == NO_HEDGE:
        return 0.0
    net = net_delta_row(state, hedge, i, p)
    if code == DELTA:
        return -net
    if code == FIXED_BAND:
        return band_edge(net, hp[0] * p.book_gross)
    if code == WHALLEY_WILMOTT:
        tau = max(hp[3] - state[i].t, 0.0)
        return band_edge(net, ww_half_width(state[i].book_gamma, state[i].spot, hp[1], hp[2], p.rate, tau))
    # LELAND: rebalance on its grid only.
    if int(state[i].step) % int(hp[5]) != 0:
        return 0.0
    return state[i].book_delta - net - leland_book_delta_row(state, i, agent_lines, p, hp[1], hp[4])


@njit(cache=True, _nrt=False, inline="always")
def place_row(demand, venue, trades, i):
    """Row ``i`` of ``trades[N, 3]``: ``demand`` coins of delta on ``venue``, nothing elsewhere;
    an order below :data:`DUST` is dropped."""
    for v in range(N_VENUES):
        trades[i, v] = 0.0
    trades[i, venue] = 0.0 if abs(demand) < DUST else demand


@njit(cache=True, _nrt=False, inline="always")
def trades_to_actions_row(trades, state, hedge, i, p, mode, enabled, max_trade, actions):
    """Row ``i`` of ``actions[N, n_enabled]``: the actions whose mapping (``actions_to_trades_rows``)
    gives the trades ``trades[i]`` (coins of delta per venue), clipped to [-1, 1].

    Mode "trade": ``q / max_trade``; "target": the position after the trade (futures in delta:
    contracts x exp(r (T_f - t))); "delta": the deviation from the full hedge, ``q + e / n``."""
    n_enabled = enabled.shape[0]
    gap = net_delta_row(state, hedge, i, p) / n_enabled if mode == ACTION_DELTA else 0.0
    fut_delta = future_delta(state, i, p) if mode == ACTION_TARGET else 1.0
    for j in range(n_enabled):
        v = enabled[j]
        units = trades[i, v]
        if mode == ACTION_TARGET:
            units += hedge[i, v]
            if v == FUTURE:
                units += hedge[i, FUTURE] * (fut_delta - 1.0)
        elif mode == ACTION_DELTA:
            units += gap
        actions[i, j] = min(max(units / max_trade, -1.0), 1.0)


@njit(cache=True, _nrt=False)
def _desired_trades(code, state, hedge, params, agent_lines, hp, out):
    p = params[0]
    for i in range(state.shape[0]):
        out[i] = desired_trade_row(code, state, hedge, i, p, agent_lines, hp)
    return out


@njit(cache=True, _nrt=False)
def _drop_dust(trades):
    for i in range(trades.shape[0]):
        for v in range(trades.shape[1]):
            if abs(trades[i, v]) < DUST:
                trades[i, v] = 0.0
    return trades


@njit(cache=True, _nrt=False)
def _place(demand, venue, trades):
    for i in range(demand.shape[0]):
        place_row(demand[i], venue, trades, i)
    return trades


@njit(cache=True, _nrt=False)
def _trades_to_actions(trades, state, hedge, params, mode, enabled, max_trade, actions):
    p = params[0]
    for i in range(state.shape[0]):
        trades_to_actions_row(trades, state, hedge, i, p, mode, enabled, max_trade, actions)
    return actions


# The evaluation's passes take three tuples, so that each pass names them once:
#   hedger = (code, venue, hp, mode, enabled, max_trade, min_trade)  (:meth:`Baseline._hedger`);
#   market = (state, hedge, keys, params, venues, dealer_lines, agent_lines, out, ext), the
#            arguments of ``kernel.step_serial`` but the trades;
#   buffers = (venue_trades[N, 3], actions[N, n_enabled], trades[N, 3]), written by the pass.
@njit(cache=True, _nrt=False, inline="always")
def _hedge_row(hedger, state, hedge, i, p, agent_lines, venue_trades, actions):
    """The hedger's actions in row ``i`` (fixed venue): desired trade, placed, as actions."""
    code, venue, hp, mode, enabled, max_trade, _ = hedger
    place_row(desired_trade_row(code, state, hedge, i, p, agent_lines, hp), venue, venue_trades, i)
    trades_to_actions_row(venue_trades, state, hedge, i, p, mode, enabled, max_trade, actions)


@njit(cache=True, _nrt=False)
def _actions(hedger, state, hedge, params, agent_lines, venue_trades, actions):
    """Every row's actions (the hedger's placed trades in ``venue_trades``)."""
    p = params[0]
    for i in range(state.shape[0]):
        _hedge_row(hedger, state, hedge, i, p, agent_lines, venue_trades, actions)
    return actions


@njit(cache=True, _nrt=False)
def _market_trades_block(lo, hi, hedger, state, hedge, params, agent_lines, buffers):
    """Rows ``lo:hi``: the hedger's actions, then the env's mapping of them to the kernel's trades
    (``kernel.actions_to_trades_row``, row by row: a row's mapping reads only that row). Over all
    rows (``lo, hi = 0, N``) it is the serial pass."""
    venue_trades, actions, trades = buffers
    _, _, _, mode, enabled, max_trade, min_trade = hedger
    p = params[0]
    futures = future_enabled(enabled)
    for i in range(lo, hi):
        _hedge_row(hedger, state, hedge, i, p, agent_lines, venue_trades, actions)
        actions_to_trades_row(i, actions, enabled, futures, mode, max_trade, min_trade, state, hedge, p, trades)


_BLOCK = 128
"""Rows per block of the parallel passes: a block's state stays in a core's cache over a rollout's steps."""


@njit(cache=True, parallel=True, _nrt=False)
def _market_trades_parallel(hedger, state, hedge, params, agent_lines, buffers):
    n = state.shape[0]
    for b in prange((n + _BLOCK - 1) // _BLOCK):
        _market_trades_block(b * _BLOCK, min((b + 1) * _BLOCK, n), hedger, state, hedge, params, agent_lines, buffers)


@njit(cache=True, _nrt=False)
def _finite(actions, lo, hi):
    for i in range(lo, hi):
        for j in range(actions.shape[1]):
            if not math.isfinite(actions[i, j]):
                return False
    return True


@njit(cache=True, _nrt=False)
def _rollout_block(lo, hi, steps, hedger, market, buffers):
    """Rows ``lo:hi`` through ``steps`` steps: each step the hedger's trades, then the kernel's step
    (``kernel.step_serial``, what :meth:`Market.step` runs) on the block. False, with the block
    stopped before that step, when an action is not finite."""
    state, hedge, keys, params, venues, dealer_lines, agent_lines, out, ext = market
    _, actions, trades = buffers
    for _ in range(steps):
        _market_trades_block(lo, hi, hedger, state, hedge, params, agent_lines, buffers)
        if not _finite(actions, lo, hi):
            return False
        step_serial(
            state[lo:hi],
            hedge[lo:hi],
            keys[lo:hi],
            trades[lo:hi],
            params,
            venues,
            dealer_lines,
            agent_lines,
            out[lo:hi],
            ext[lo:hi],
        )
    return True


@njit(cache=True, parallel=True, _nrt=False)
def _rollout_parallel(steps, hedger, market, buffers, finite):
    """:func:`_rollout_block` over blocks of :data:`_BLOCK` rows spread over threads; ``finite[b]``
    is block b's result. Rows are independent (the kernel's contract), so blocks may run ahead."""
    n = market[0].shape[0]
    for b in prange((n + _BLOCK - 1) // _BLOCK):
        finite[b] = _rollout_block(b * _BLOCK, min((b + 1) * _BLOCK, n), steps, hedger, market, buffers)


# ------------------------------------------------------------------------------------ policies
def venue_cost(config: ScenarioConfig, venue: str) -> float:
    """Proportional cost c of one trade (fee + half spread); for "cheapest" the lowest enabled."""
    names = config.agent.venues if venue == "cheapest" else [venue]
    return min(getattr(config.venues, v).fee + getattr(config.venues, v).half_spread for v in names)


class Baseline:
    """A classical hedger: decide a trade in coins of delta, execute it on the venue(s).

    ``venue`` is "spot", "perp", "future" or "cheapest". Stateless: everything is read from the
    market each call, so one object serves any number of envs and episodes. The hedgers of the
    registry run compiled (:func:`desired_trade_row` with their ``code``); a subclass may instead
    implement :meth:`desired_trade` in NumPy (``code = None``).
    """

    kind = ""
    code: int | None = None
    """The compiled hedger's code (:func:`desired_trade_row`), or None for a NumPy hedger."""
    uses_observation = False
    """The hedgers read the market, not the observation: an evaluation loop need not compute it."""

    def __init__(self, config: ScenarioConfig, params: BaselinesConfig):
        self.config = config
        self.params = params
        self.venue = params.venue or config.agent.venues[0]
        self.cost = venue_cost(config, self.venue)
        self._horizon = None if params.route_horizon_hours is None else params.route_horizon_hours / HOURS_PER_YEAR
        self._venue_code = ROUTED if self.venue == "cheapest" else VENUE_NAMES.index(self.venue)
        self._mode = ACTION_MODES[config.agent.action_mode]

    @property
    def name(self) -> str:
        """``kind@venue`` (``no_hedge`` has no venue)."""
        return f"{self.kind}@{self.venue}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"

    @property
    def compiled_params(self) -> np.ndarray:
        """``hp`` of :func:`desired_trade_row`: (band_width, cost, risk_aversion, expiry,
        leland_interval, leland_interval_steps); entries a hedger does not use are 0."""
        return np.array([self.params.band_width, self.cost, 0.0, 0.0, 0.0, 1.0])

    @property
    def compiled(self) -> bool:
        """Whether this hedger's trade is the compiled :func:`desired_trade_row` (not a NumPy override)."""
        return self.code is not None and type(self).desired_trade is Baseline.desired_trade

    def desired_trade(self, market) -> np.ndarray:
        """Trade per row, coins of delta, before venue split and clipping."""
        if self.code is None:
            raise NotImplementedError(f"{type(self).__name__} sets no compiled code: implement desired_trade")
        return _desired_trades(
            self.code, market.state, market.hedge, market.params, market.agent_lines, self._hp, np.empty(market.n_envs)
        )

    @cached_property
    def _hp(self) -> np.ndarray:
        return self.compiled_params

    def trades(self, market) -> np.ndarray:
        """``[N, 3]`` coins of delta per venue: the desired trade on the venue, or split; orders
        below :data:`DUST` are dropped (they would count as trades and move nothing)."""
        return self.execute(market, self.desired_trade(market))

    def execute(self, market, demand: np.ndarray) -> np.ndarray:
        """``[N, 3]`` coins of delta per venue for the signed trades ``demand[N]`` (coins of delta):
        on the hedger's venue, or split by :func:`route_cheapest`; orders below :data:`DUST` dropped.
        Also used by :class:`hedgegym.agents.residual.BandControl`, which sets the band itself."""
        demand = np.asarray(demand, dtype=np.float64).reshape(market.n_envs)
        if self._venue_code == ROUTED:
            horizon = None if self._horizon is None else np.full(market.n_envs, self._horizon)
            return _drop_dust(route_cheapest(market, demand, horizon))
        return _place(demand, self._venue_code, np.empty((market.n_envs, N_VENUES)))

    def to_actions(self, market, trades: np.ndarray) -> np.ndarray:
        """The actions ``[N, n_enabled]`` that the env maps to ``trades[N, 3]`` (coins of delta per
        venue) under ``agent.action_mode``, clipped to [-1, 1]: a trade beyond ``agent.max_trade`` is
        cut to it (the hedgers are bound by the agent's limits)."""
        return _trades_to_actions(
            np.asarray(trades, dtype=np.float64),
            market.state,
            market.hedge,
            market.params,
            self._mode,
            market.enabled_venues,
            self.config.agent.max_trade,
            np.empty((market.n_envs, market.enabled_venues.size)),
        )

    def actions(self, market) -> np.ndarray:
        """The hedger's actions ``[N, n_enabled]`` in the market's current state."""
        if self.fused:
            n = market.n_envs
            return _actions(
                self._hedger(market),
                market.state,
                market.hedge,
                market.params,
                market.agent_lines,
                np.empty((n, N_VENUES)),
                np.empty((n, market.enabled_venues.size)),
            )
        return self.to_actions(market, self.trades(market))

    def _hedger(self, market) -> tuple:
        """The compiled passes' ``hedger`` tuple for ``market``: (code, venue, hp, mode, enabled,
        max_trade, min_trade)."""
        agent = self.config.agent
        return (
            self.code,
            self._venue_code,
            self._hp,
            self._mode,
            market.enabled_venues,
            float(agent.max_trade),
            float(agent.min_trade),
        )

    @staticmethod
    def _buffers(market) -> tuple:
        """The compiled passes' ``buffers``: (venue_trades[N, 3], actions[N, n_enabled], trades[N, 3])."""
        n = market.n_envs
        return np.empty((n, N_VENUES)), np.empty((n, market.enabled_venues.size)), np.empty((n, N_VENUES))

    def __call__(self, obs: np.ndarray, market) -> np.ndarray:
        actions = self.actions(market)
        return actions[0] if np.ndim(obs) == 1 else actions

    @cached_property
    def fused(self) -> bool:
        """Whether :meth:`rollout` can step a market: a compiled hedger on a fixed venue."""
        return self.compiled and self._venue_code != ROUTED

    def rollout(self, market, steps: int) -> bool:
        """Advance every row of ``market`` by ``steps`` steps under this hedger in one compiled call:
        the same trades and the same kernel step as ``steps`` rounds of
        ``market.step(market.actions_to_trades(self(obs, market)))``, with the loop over steps out
        of Python (rows in blocks of :data:`_BLOCK`, spread over threads when ``market.parallel``;
        rows are independent, so the order of blocks and steps does not change a result).

        Returns False when an action was not finite (the rows concerned stop before that step).
        Only for a :attr:`fused` hedger; the last step's ``market.out`` holds each row's outputs.
        """
        if not self.fused:
            raise ValueError(f"{self.name}: rollout needs a compiled hedger on a fixed venue (see Baseline.fused)")
        n = market.n_envs
        hedger, buffers = self._hedger(market), self._buffers(market)
        arrays = (
            market.state,
            market.hedge,
            market.keys,
            market.params,
            market.venues,
            market.dealer_lines,
            market.agent_lines,
            market.out,
            market.ext,
        )
        if not market.parallel:
            return bool(_rollout_block(0, n, int(steps), hedger, arrays, buffers))
        finite = np.ones((n + _BLOCK - 1) // _BLOCK, dtype=np.bool_)
        _rollout_parallel(int(steps), hedger, arrays, buffers, finite)
        return bool(finite.all())

    def market_trades(self, market, out: np.ndarray | None = None) -> tuple[np.ndarray, bool]:
        """``(trades[N, 3], finite)``: what ``market.actions_to_trades(self(obs, market))`` gives —
        the kernel's trades of this step (coins; future: contracts), written into ``out`` when
        given — and whether every action was finite. A hedger of the registry on a fixed venue does
        it in one compiled pass over the rows (the evaluation's rollout calls it every step)."""
        n = market.n_envs
        if not self.fused:
            actions = self.actions(market)
            trades = market.actions_to_trades(actions)
            if out is not None:
                out[:] = trades
                trades = out
            return trades, bool(np.all(np.isfinite(actions)))
        venue_trades, actions, trades = self._buffers(market)
        if out is not None:
            trades = out
        hedger, buffers = self._hedger(market), (venue_trades, actions, trades)
        if market.parallel:
            _market_trades_parallel(hedger, market.state, market.hedge, market.params, market.agent_lines, buffers)
        else:
            _market_trades_block(0, n, hedger, market.state, market.hedge, market.params, market.agent_lines, buffers)
        return trades, bool(np.isfinite(actions).all())


class NoHedge(Baseline):
    """Never trades: the unhedged book (the reference for what hedging buys)."""

    kind = "no_hedge"
    code = NO_HEDGE

    @property
    def name(self) -> str:
        return self.kind


class DeltaHedge(Baseline):
    """Black–Scholes delta, rebalanced fully every step: trade ``-e`` (Black & Scholes 1973).

    The book delta is the model's (BSM with the scenario's smile, MODEL.md §5). In a frictionless
    market its P&L error has std ~ sqrt(pi / 4) vega sigma / sqrt(N) for N rebalances of an
    at-the-money option (Kamal & Derman 1999; Bertsimas, Kogan & Lo 2000).
    """

    kind = "delta"
    code = DELTA


class FixedBand(Baseline):
    """Trade to the band edge when ``|e| > w``, ``w = band_width * gross book quantity`` (coins)."""

    kind = "fixed_band"
    code = FIXED_BAND


class WhalleyWilmott(Baseline):
    """Trade to the edge of the Whalley–Wilmott (1997) band around the delta hedge.

    ``H = (3/2 exp(-r (T - t)) c S Gamma^2 / gamma)^(1/3)`` (:func:`whalley_wilmott_half_width`)
    with Gamma the book's gamma, c the venue's fee + half spread (the lowest enabled one when
    routed), T the book's last expiry and gamma = ``baselines.risk_aversion_usd``, by default
    ``agent.risk_aversion / pnl_scale``: the reward's kappa per USD, so the band is tuned to the
    same mean-variance objective the agent is scored on.
    """

    kind = "whalley_wilmott"
    code = WHALLEY_WILMOTT

    def __init__(self, config: ScenarioConfig, params: BaselinesConfig):
        super().__init__(config, params)
        if params.risk_aversion_usd is not None:
            self.risk_aversion = params.risk_aversion_usd
        elif config.agent.risk_aversion > 0.0:
            self.risk_aversion = config.agent.risk_aversion / config.pnl_scale
        else:
            raise ValueError(
                "whalley_wilmott needs a risk aversion > 0: set baselines.risk_aversion_usd or agent.risk_aversion"
            )
        self.expiry = max(line.expiry_days for line in config.agent.lines) / DAYS_PER_YEAR

    @property
    def compiled_params(self) -> np.ndarray:
        return np.array([self.params.band_width, self.cost, self.risk_aversion, self.expiry, 0.0, 1.0])

    def half_width(self, market) -> np.ndarray:
        """Band half-width per row, coins."""
        st = market.state
        return whalley_wilmott_half_width(
            st["book_gamma"],
            st["spot"],  # the kernel's exp(log_spot): the compiled hedger reads the same value
            self.cost,
            self.risk_aversion,
            market.params["rate"][0],
            np.maximum(self.expiry - st["t"], 0.0),
        )


class Leland(Baseline):
    """Delta at Leland's (1985) volatility, rebalanced every ``leland_interval_steps`` steps.

    Each line's smile vol sigma becomes ``sigma sqrt(1 - sign(Gamma_book) Le)``,
    ``Le = sqrt(2/pi) 2c / (sigma sqrt(dt_rebalance))`` (:func:`leland_volatility`): a short-gamma
    book over-hedges its gamma to pre-pay the costs of the moves it will have to chase.
    """

    kind = "leland"
    code = LELAND

    def __init__(self, config: ScenarioConfig, params: BaselinesConfig):
        super().__init__(config, params)
        self.interval_steps = params.leland_interval_steps
        self.interval = self.interval_steps * config.episode.dt

    @property
    def compiled_params(self) -> np.ndarray:
        return np.array([self.params.band_width, self.cost, 0.0, 0.0, self.interval, float(self.interval_steps)])


BASELINES: dict[str, type[Baseline]] = {
    cls.kind: cls for cls in (NoHedge, DeltaHedge, FixedBand, WhalleyWilmott, Leland)
}
"""The registry: baseline name -> class. Build instances with :func:`make_baseline`."""


def every_hedger(venues) -> list[str]:
    """The standard a trained agent is judged by: ``no_hedge``, every classical hedger on each of
    ``venues``, and, with several venues, each routed to the cheapest.

    >>> every_hedger(["spot"])
    ['no_hedge', 'delta@spot', 'fixed_band@spot', 'whalley_wilmott@spot', 'leland@spot']
    >>> len(every_hedger(["spot", "perp", "future"]))
    17
    """
    venues = list(venues)
    kinds = [kind for kind in BASELINES if kind != "no_hedge"]
    names = ["no_hedge", *(f"{kind}@{venue}" for venue in venues for kind in kinds)]
    return names + ([f"{kind}@cheapest" for kind in kinds] if len(venues) > 1 else [])


def make_baseline(name: str, config, **params) -> Baseline:
    """The baseline ``name`` for the scenario ``config``.

    ``name`` is a key of :data:`BASELINES`, optionally with a venue: ``"delta@perp"``,
    ``"whalley_wilmott@cheapest"``. ``params`` override the scenario's ``baselines`` section
    (``band_width=0.1``, ``venue="perp"``, ``risk_aversion_usd=1e-4``, ...).

    Raises:
        ValueError: unknown name (the message lists the known ones), unknown or invalid parameter,
            or a venue the agent may not trade.
    """
    config = validate_config(config)
    kind, _, venue = name.partition("@")
    if kind not in BASELINES:
        raise ValueError(
            f"unknown baseline {kind!r}; known baselines: {', '.join(BASELINES)} "
            "(optionally with @spot, @perp, @future or @cheapest)"
        )
    if venue:
        params = {**params, "venue": venue}
    try:
        merged = BaselinesConfig.model_validate({**config.baselines.model_dump(), **params})
    except ValidationError as err:
        problems = format_validation_error(err, what=f"parameter of baseline {name!r}", model=BaselinesConfig)
        raise ValueError(f"{' '.join(problems.split())}; allowed: {', '.join(BaselinesConfig.model_fields)}") from None
    if merged.venue not in (None, "cheapest") and merged.venue not in config.agent.venues:
        raise ValueError(
            f"baseline {name!r}: venue {merged.venue!r} is not one the agent may trade "
            f"(agent.venues = {config.agent.venues})"
        )
    return BASELINES[kind](config, merged)
