"""Cheapest-venue routing: split a hedge trade across venues by its expected cost per coin.

A hedger that needs to trade ``Q`` coins of delta can do it on spot, on the perpetual swap or on
the dated future (MODEL.md §4). Trading ``x_v >= 0`` coins of delta (in the direction ``s`` of
``Q``) on venue ``v`` is expected to cost

    cost_v(x) = a_v x + b_v x^2                                                   (USD)
    a_v = P_v (fee_v + half_spread_v) + carry_v(s)                                (USD per coin)
    b_v = eta_v * 0.01 * P_v^2 / D_v                                              (USD per coin^2)

with ``P_v`` the venue's price per coin of delta (spot ``S``; perp ``S (1 + premium)``; future
``F / exp(r tau_f)``, the contract's price over its delta). ``b_v`` is the temporary impact of the
execution price, ``mid (1 + s half_spread + eta 0.01 q mid / D_v)``, integrated over the trade: a
linear price-impact law makes the cost quadratic (Almgren & Chriss 2000). ``carry_v(s)`` is what
holding the coin over the horizon ``H`` is expected to cost:

* capital: ``funding_cost_of_capital * margin_v * P_v * H``, times the change of ``|position_v|``
  per coin traded (+1 when the trade grows the position, -1 when it reduces it);
* perp funding: ``s * rate * P_v * H / funding_interval``, rate = clamp(interest + mean premium
  over the horizon, ±cap) (longs pay when positive: Binance/Deribit convention);
* future basis: ``s * (r + mean basis over the horizon) * P_v * H`` (a long future converges down to
  spot), plus ``(fee + half_spread) P_v`` per roll when the horizon crosses the expiry (the
  position cash-settles at expiry and must be reopened).

The split minimises ``sum_v cost_v(x_v)`` subject to ``sum_v x_v = |Q|``, ``x_v >= 0``. Its KKT
conditions say every used venue trades at the same marginal cost ``lambda`` and no unused venue is
cheaper at the margin: ``x_v = max(0, (lambda - a_v) / (2 b_v))`` — water-filling. A venue of
infinite depth (``b_v = 0``) absorbs everything at its price ``a_v``.

This is the greedy, one-trade-at-a-time heuristic an RL agent must beat: it ignores that impact
feeds back into spot, that the trade may be undone soon, and the basis and premium risk of the
gross positions it builds across venues (long futures bought, perps sold against each other).

Example:
    >>> import numpy as np
    >>> from hedgegym.agents.routing import split_cheapest
    >>> linear = np.array([[10.0, 12.0, np.inf]])      # USD per coin; future disabled
    >>> quadratic = np.array([[1.0, 1.0, 0.0]])        # USD per coin^2
    >>> split_cheapest(np.array([5.0]), linear, quadratic).round(6).tolist()   # equal margins: 10 + 2x = 12 + 2y
    [[3.0, 2.0, 0.0]]
"""

from __future__ import annotations

import numpy as np
from numba import njit

from hedgegym.envs.layout import (
    ENABLED,
    FUTURE,
    N_VENUES,
    PERP,
    SPOT,
    V_ENABLED,
    V_ETA,
    V_FEE,
    V_HALF_SPREAD,
    V_INV_DEPTH,
    V_MARGIN,
)


def delta_prices(market) -> tuple[np.ndarray, np.ndarray]:
    """``(P[N, 3], future_delta[N])``: each venue's price per coin of delta (USD) and the futures
    contract's delta ``exp(r (T_f - t))`` (coins per contract, MODEL.md §4)."""
    st, p = market.state, market.params[0]
    spot = st["spot"]  # the kernel's exp(log_spot), the value the compiled hedgers read
    tau_f = np.maximum(st["future_expiry"] - st["t"], 0.0)
    fut_delta = market.future_delta()
    prices = np.empty((market.n_envs, N_VENUES))
    prices[:, SPOT] = spot
    prices[:, PERP] = spot * (1.0 + st["premium"])
    prices[:, FUTURE] = spot * np.exp((p["rate"] + st["basis"]) * tau_f) / fut_delta
    return prices, fut_delta


def _ou_mean(x0: np.ndarray, mean: float, speed: float, horizon: np.ndarray) -> np.ndarray:
    """Average of E[x_t] over [0, H] for an OU process: mean + (x0 - mean)(1 - e^{-kH}) / (kH)."""
    kh = speed * horizon
    with np.errstate(divide="ignore", invalid="ignore"):
        share = np.where(kh > 1e-8, -np.expm1(-kh) / kh, 1.0)
    return mean + (x0 - mean) * share


def episode_horizon(market) -> np.ndarray:
    """Time left in each row's episode, years (at least one step): the default holding horizon."""
    p = market.params[0]
    return np.maximum(p["episode_steps"] - market.state["step"], 1.0) * p["dt"]


def expected_costs(market, sign: np.ndarray, horizon: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(a[N, 3], b[N, 3])``: linear (USD/coin) and quadratic (USD/coin²) expected cost of trading
    coins of delta in direction ``sign[N]`` (+1 buy, -1 sell) and holding them ``horizon[N]`` years.

    Disabled venues get ``a = inf``. See the module docstring for the terms.
    """
    st, p, venues = market.state, market.params[0], market.venues
    prices, _ = delta_prices(market)
    sign = np.asarray(sign, dtype=np.float64)
    horizon = np.asarray(horizon, dtype=np.float64)

    a = prices * (venues[:, V_FEE] + venues[:, V_HALF_SPREAD])
    b = venues[:, V_ETA] * 0.01 * prices**2 * venues[:, V_INV_DEPTH]

    # Capital: the trade grows |position| unless it goes against the position it adds to.
    position_sign = np.sign(market.hedge)
    grows = np.where(position_sign == 0.0, 1.0, position_sign * sign[:, None])
    a += p["cost_of_capital"] * venues[:, V_MARGIN] * prices * horizon[:, None] * grows

    premium = _ou_mean(st["premium"], 0.0, p["premium_speed"], horizon)
    rate = np.clip(p["interest"] + premium, -p["funding_cap"], p["funding_cap"])
    a[:, PERP] += sign * rate * prices[:, PERP] * horizon / p["funding_interval"]

    basis = _ou_mean(st["basis"], p["basis_mean"], p["basis_speed"], horizon)
    a[:, FUTURE] += sign * (p["rate"] + basis) * prices[:, FUTURE] * horizon
    tau_f = np.maximum(st["future_expiry"] - st["t"], 0.0)
    rolls = np.where(horizon > tau_f, 1.0 + np.floor((horizon - tau_f) / p["future_roll"]), 0.0)
    a[:, FUTURE] += rolls * prices[:, FUTURE] * (venues[FUTURE, V_FEE] + venues[FUTURE, V_HALF_SPREAD])

    a[:, venues[:, V_ENABLED] != ENABLED] = np.inf
    return a, b


@njit(cache=True)
def split_cheapest(demand, linear, quadratic):
    """Water-filling split of ``demand[N]`` (signed coins) over venues, ``[N, 3]`` signed coins.

    Minimises ``sum_v a_v x_v + b_v x_v^2`` subject to ``sum_v x_v = |demand|``, ``x_v >= 0`` per
    row (``a = linear``, ``b = quadratic``; ``a_v = inf`` marks a venue that may not be used).
    Venues are filled cheapest first; the marginal cost ``lambda`` solves
    ``sum_{active} (lambda - a_v) / (2 b_v) = |demand|``; a venue with ``b_v = 0`` caps ``lambda``
    at ``a_v`` and takes the rest.
    """
    n = demand.shape[0]
    out = np.zeros((n, linear.shape[1]))
    for i in range(n):
        q = abs(demand[i])
        if q == 0.0:
            continue
        sign = 1.0 if demand[i] > 0.0 else -1.0
        order = np.argsort(linear[i])
        m = 0
        while m < order.shape[0] and np.isfinite(linear[i, order[m]]):
            m += 1
        inv_sum = 0.0  # sum over the active venues of 1 / (2 b)
        a_sum = 0.0  # sum over the active venues of a / (2 b)
        for k in range(m):
            v = order[k]
            a_v = linear[i, v]
            if quadratic[i, v] <= 0.0:
                # Infinite depth: earlier (cheaper) venues fill up to marginal cost a_v, v takes the rest.
                rest = q
                for j in range(k):
                    u = order[j]
                    x = (a_v - linear[i, u]) / (2.0 * quadratic[i, u])
                    out[i, u] = sign * x
                    rest -= x
                out[i, v] = sign * rest
                break
            inv_sum += 1.0 / (2.0 * quadratic[i, v])
            a_sum += a_v / (2.0 * quadratic[i, v])
            lam = (q + a_sum) / inv_sum
            if k == m - 1 or lam <= linear[i, order[k + 1]]:
                # The dearest active venue takes the remainder, so that the legs sum to the demand
                # exactly (lambda - a loses digits when a venue is very deep: b tiny, a large).
                rest = q
                for j in range(k):
                    u = order[j]
                    x = (lam - linear[i, u]) / (2.0 * quadratic[i, u])
                    out[i, u] = sign * x
                    rest -= x
                out[i, v] = sign * max(rest, 0.0)
                break
    return out


def route_cheapest(market, demand: np.ndarray, horizon: np.ndarray | None = None) -> np.ndarray:
    """Split the signed delta trades ``demand[N]`` (coins) over the enabled venues of ``market`` by
    expected cost per coin; returns ``[N, 3]`` coins of delta per venue (spot, perp, future).

    ``horizon[N]`` (years) is the holding horizon of the carry terms; default the time left in the
    episode (:func:`episode_horizon`).
    """
    demand = np.asarray(demand, dtype=np.float64)
    if horizon is None:
        horizon = episode_horizon(market)
    linear, quadratic = expected_costs(market, np.sign(demand), horizon)
    return split_cheapest(demand, linear, quadratic)
