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
from typing import Any

import numpy as np
from numba import njit
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
from hedgegym.envs.kernel import line_vol
from hedgegym.envs.layout import (
    CALL,
    L_EXPIRY,
    L_EXPIRY_STEP,
    L_IS_CALL,
    L_QUANTITY,
    L_STRIKE,
    N_VENUES,
)

DUST = 1e-9
"""Coins: a hedger sends no order smaller than this (float residue of a hedge, not a trade)."""

Policy = Callable[[np.ndarray, Any], np.ndarray]
"""``policy(obs[N, OBS_DIM] float32, market: Market) -> actions[N, n_enabled_venues]`` in [-1, 1]."""


# ------------------------------------------------------------------------------------ formulas
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

    Units: Gamma in coins of delta per USD/coin of spot (coins^2/USD), so c S Gamma^2 / gamma is in
    coins^3 and H in coins.

    Example (short 1 ATM call, S = 100, sigma = 20 %, 1 year: Gamma = 0.0198; c = 1 %, gamma = 1):
        >>> round(float(whalley_wilmott_half_width(-0.0198, 100.0, 0.01, 1.0)), 5)
        0.08378
    """
    gamma = np.asarray(gamma, dtype=np.float64)
    return np.cbrt(1.5 * np.exp(-rate * np.asarray(tau)) * cost * np.asarray(spot) * gamma * gamma / risk_aversion)


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


def band_trade(net_delta, half_width):
    """Trade (coins) back to the edge of the band ``|e| <= H``: ``-(e - clip(e, -H, H))``; 0 inside.

    Example:
        >>> band_trade(np.array([3.0, -0.5, -2.0]), 1.0).tolist()
        [-2.0, 0.0, 1.0]
    """
    net_delta = np.asarray(net_delta, dtype=np.float64)
    return np.clip(net_delta, -half_width, half_width) - net_delta


@njit(cache=True)
def _leland_book_delta(state, agent_lines, params, cost, interval, out):
    """Book delta per row with every live line at its smile vol adjusted by Leland's factor."""
    p = params[0]
    rate = p.rate
    for i in range(state.shape[0]):
        t = state[i].t
        spot = math.exp(state[i].log_spot)
        sign = 1.0 if state[i].book_gamma > 0.0 else -1.0
        delta = 0.0
        for j in range(agent_lines.shape[0]):
            if agent_lines[j, L_EXPIRY_STEP] <= state[i].step:
                continue
            tau = agent_lines[j, L_EXPIRY] - t
            vol = line_vol(p, state[i].atm_vol, agent_lines[j, L_STRIKE], spot)
            vol_hat = leland_volatility(vol, cost, interval, sign)
            _, d, _, _, _, _ = line_greeks(
                spot, agent_lines[j, L_STRIKE], tau, rate, vol_hat, agent_lines[j, L_IS_CALL] == CALL
            )
            delta += agent_lines[j, L_QUANTITY] * d
        out[i] = delta
    return out


# ------------------------------------------------------------------------------------ policies
def venue_cost(config: ScenarioConfig, venue: str) -> float:
    """Proportional cost c of one trade (fee + half spread); for "cheapest" the lowest enabled."""
    names = config.agent.venues if venue == "cheapest" else [venue]
    return min(getattr(config.venues, v).fee + getattr(config.venues, v).half_spread for v in names)


class Baseline:
    """A classical hedger: decide a trade in coins of delta, execute it on the venue(s).

    Subclasses implement :meth:`desired_trade`. ``venue`` is "spot", "perp", "future" or
    "cheapest". Stateless: everything is read from the market each call, so one object serves any
    number of envs and episodes.
    """

    kind = ""
    uses_observation = False
    """The hedgers read the market, not the observation: an evaluation loop need not compute it."""

    def __init__(self, config: ScenarioConfig, params: BaselinesConfig):
        self.config = config
        self.params = params
        self.venue = params.venue or config.agent.venues[0]
        self.cost = venue_cost(config, self.venue)
        self._horizon = None if params.route_horizon_hours is None else params.route_horizon_hours / HOURS_PER_YEAR

    @property
    def name(self) -> str:
        """``kind@venue`` (``no_hedge`` has no venue)."""
        return f"{self.kind}@{self.venue}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"

    def desired_trade(self, market) -> np.ndarray:
        """Trade per row, coins of delta, before venue split and clipping."""
        raise NotImplementedError

    def trades(self, market) -> np.ndarray:
        """``[N, 3]`` coins of delta per venue: the desired trade on the venue, or split; orders
        below :data:`DUST` are dropped (they would count as trades and move nothing)."""
        return self.execute(market, self.desired_trade(market))

    def execute(self, market, demand: np.ndarray) -> np.ndarray:
        """``[N, 3]`` coins of delta per venue for the signed trades ``demand[N]`` (coins of delta):
        on the hedger's venue, or split by :func:`route_cheapest`; orders below :data:`DUST` dropped.
        Also used by :class:`hedgegym.agents.residual.BandControl`, which sets the band itself."""
        if self.venue == "cheapest":
            horizon = None if self._horizon is None else np.full(market.n_envs, self._horizon)
            out = route_cheapest(market, demand, horizon)
        else:
            out = np.zeros((market.n_envs, N_VENUES))
            out[:, VENUE_NAMES.index(self.venue)] = demand
        out[np.abs(out) < DUST] = 0.0
        return out

    def __call__(self, obs: np.ndarray, market) -> np.ndarray:
        actions = market.trades_to_actions(self.trades(market))
        return actions[0] if np.ndim(obs) == 1 else actions


class NoHedge(Baseline):
    """Never trades: the unhedged book (the reference for what hedging buys)."""

    kind = "no_hedge"

    @property
    def name(self) -> str:
        return self.kind

    def desired_trade(self, market) -> np.ndarray:
        return np.zeros(market.n_envs)


class DeltaHedge(Baseline):
    """Black–Scholes delta, rebalanced fully every step: trade ``-e`` (Black & Scholes 1973).

    The book delta is the model's (BSM with the scenario's smile, MODEL.md §5). In a frictionless
    market its P&L error has std ~ sqrt(pi / 4) vega sigma / sqrt(N) for N rebalances of an
    at-the-money option (Kamal & Derman 1999; Bertsimas, Kogan & Lo 2000).
    """

    kind = "delta"

    def desired_trade(self, market) -> np.ndarray:
        return -market.net_delta()


class FixedBand(Baseline):
    """Trade to the band edge when ``|e| > w``, ``w = band_width * gross book quantity`` (coins)."""

    kind = "fixed_band"

    def desired_trade(self, market) -> np.ndarray:
        width = self.params.band_width * market.params["book_gross"][0]
        return band_trade(market.net_delta(), width)


class WhalleyWilmott(Baseline):
    """Trade to the edge of the Whalley–Wilmott (1997) band around the delta hedge.

    ``H = (3/2 exp(-r (T - t)) c S Gamma^2 / gamma)^(1/3)`` (:func:`whalley_wilmott_half_width`)
    with Gamma the book's gamma, c the venue's fee + half spread (the lowest enabled one when
    routed), T the book's last expiry and gamma = ``baselines.risk_aversion_usd``, by default
    ``agent.risk_aversion / pnl_scale``: the reward's kappa per USD, so the band is tuned to the
    same mean-variance objective the agent is scored on.
    """

    kind = "whalley_wilmott"

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

    def half_width(self, market) -> np.ndarray:
        """Band half-width per row, coins."""
        st = market.state
        return whalley_wilmott_half_width(
            st["book_gamma"],
            np.exp(st["log_spot"]),
            self.cost,
            self.risk_aversion,
            market.params["rate"][0],
            np.maximum(self.expiry - st["t"], 0.0),
        )

    def desired_trade(self, market) -> np.ndarray:
        return band_trade(market.net_delta(), self.half_width(market))


class Leland(Baseline):
    """Delta at Leland's (1985) volatility, rebalanced every ``leland_interval_steps`` steps.

    Each line's smile vol sigma becomes ``sigma sqrt(1 - sign(Gamma_book) Le)``,
    ``Le = sqrt(2/pi) 2c / (sigma sqrt(dt_rebalance))`` (:func:`leland_volatility`): a short-gamma
    book over-hedges its gamma to pre-pay the costs of the moves it will have to chase.
    """

    kind = "leland"

    def __init__(self, config: ScenarioConfig, params: BaselinesConfig):
        super().__init__(config, params)
        self.interval_steps = params.leland_interval_steps
        self.interval = self.interval_steps * config.episode.dt

    def desired_trade(self, market) -> np.ndarray:
        book_delta = _leland_book_delta(
            market.state, market.agent_lines, market.params, self.cost, self.interval, np.empty(market.n_envs)
        )
        trade = market.state["book_delta"] - market.net_delta() - book_delta
        on_grid = market.state["step"].astype(np.int64) % self.interval_steps == 0
        return np.where(on_grid, trade, 0.0)


BASELINES: dict[str, type[Baseline]] = {
    cls.kind: cls for cls in (NoHedge, DeltaHedge, FixedBand, WhalleyWilmott, Leland)
}
"""The registry: baseline name -> class. Build instances with :func:`make_baseline`."""


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
