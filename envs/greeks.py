"""Black–Scholes–Merton price and greeks, as numba kernels (MODEL.md §5).

Formulas (Black & Scholes 1973; Merton 1973; Hull, *Options, Futures and Other Derivatives*,
ch. 19), carry rate ``r``, no dividend, time to expiry ``tau`` in years::

    d1 = (ln(S/K) + (r + sigma^2/2) tau) / (sigma sqrt(tau)),   d2 = d1 - sigma sqrt(tau)
    call = S N(d1) - K e^{-r tau} N(d2)            put = K e^{-r tau} N(-d2) - S N(-d1)
    delta_call = N(d1)                             delta_put = N(d1) - 1
    gamma = n(d1) / (S sigma sqrt(tau))            vega = S n(d1) sqrt(tau)      (same for both)
    vanna = d delta / d sigma = -n(d1) d2 / sigma                                 (same for both)
    charm = d delta / d t = -n(d1) (2 r tau - d2 sigma sqrt(tau)) / (2 tau sigma sqrt(tau))

``charm`` is per year, with the sign of calendar time moving forward (``-d delta / d tau``); with
no dividend it is the same for calls and puts. At expiry (``tau = 0``) or zero total volatility
the price is the intrinsic value against the forward strike ``K e^{-r tau}``, delta is 0 or 1
(call; -1 or 0 put) and the other greeks are 0 — no NaN, no warning.

Example:
    >>> from hedgegym.envs.greeks import bsm_greeks
    >>> g = bsm_greeks(100.0, 100.0, 1.0, 0.0, 0.2, True)
    >>> round(float(g.price), 4), round(float(g.delta), 4)
    (7.9656, 0.5398)
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from numba import njit

_SQRT2 = math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
# Below this total volatility sigma*sqrt(tau) the option is priced at intrinsic value: the
# lognormal density is narrower than float64 can resolve around the strike.
_MIN_TOTAL_VOL = 1e-12


class Greeks(NamedTuple):
    """BSM value and sensitivities of one option per element (arrays broadcast together)."""

    price: np.ndarray
    delta: np.ndarray
    gamma: np.ndarray
    vega: np.ndarray
    vanna: np.ndarray
    charm: np.ndarray


@njit(cache=True)
def norm_cdf(x: float) -> float:
    """Standard normal CDF via ``erfc`` (accurate in both tails)."""
    return 0.5 * math.erfc(-x / _SQRT2)


@njit(cache=True)
def norm_pdf(x: float) -> float:
    """Standard normal density."""
    return _INV_SQRT_2PI * math.exp(-0.5 * x * x)


@njit(cache=True)
def bsm_d1(spot, strike, tau, rate, vol, total_vol):
    """d1 = (ln(S/K) + (r + sigma^2/2) tau) / (sigma sqrt(tau)); ``total_vol`` is sigma sqrt(tau)."""
    return (math.log(spot / strike) + (rate + 0.5 * vol * vol) * tau) / total_vol


@njit(cache=True)
def bsm_gamma(pdf_d1, spot, total_vol):
    """gamma = n(d1) / (S sigma sqrt(tau)), the same for a call and a put."""
    return pdf_d1 / (spot * total_vol)


@njit(cache=True)
def bsm_vanna(pdf_d1, d2, vol):
    """vanna = d delta / d sigma = -n(d1) d2 / sigma, the same for a call and a put."""
    return -pdf_d1 * d2 / vol


@njit(cache=True)
def bsm_charm(pdf_d1, d2, tau, rate, total_vol):
    """charm = d delta / d t = -n(d1) (2 r tau - d2 sigma sqrt(tau)) / (2 tau sigma sqrt(tau)), per year."""
    return -pdf_d1 * (2.0 * rate * tau - d2 * total_vol) / (2.0 * tau * total_vol)


@njit(cache=True)
def strike_delta_gamma(spot, strike, tau, rate, vol):
    """(call delta, put delta, gamma, vanna) at one strike and expiry, bit for bit as
    :func:`strike_greeks` gives them.

    The clearing evaluates the dealers' book several times a step and needs no price: skipping
    the price's two ``erfc`` calls, and sharing one ``erfc`` between the call and the put of a
    strike, cuts the cost of a line by two to four.
    """
    if tau <= 0.0:
        tau = 0.0
    total_vol = vol * math.sqrt(tau)
    if total_vol < _MIN_TOTAL_VOL:
        disc_strike = strike * math.exp(-rate * tau)
        return (1.0 if spot > disc_strike else 0.0), (-1.0 if spot < disc_strike else 0.0), 0.0, 0.0
    d1 = bsm_d1(spot, strike, tau, rate, vol, total_vol)
    pdf = norm_pdf(d1)
    call_delta = norm_cdf(d1)
    return call_delta, call_delta - 1.0, bsm_gamma(pdf, spot, total_vol), bsm_vanna(pdf, d1 - total_vol, vol)


# Inlined into its callers (the book's mark in every step): the call, and its eight results passed
# through memory, were ~8 % of a frictionless evaluation.
@njit(cache=True, inline="always")
def strike_greeks(spot, strike, tau, rate, vol, call=True, put=True):
    """(call price, put price, call delta, put delta, gamma, vega, vanna, charm) at one strike and
    expiry; see the module docstring for the formulas. The price of a kind not asked for
    (``call=False`` or ``put=False``) is returned as 0 and costs nothing.

    The call and the put of a strike share d1, the density and four greeks; computed together
    they cost four ``erfc`` calls instead of six, and one logarithm instead of two; a lone call or
    put costs two.
    """
    if tau <= 0.0:
        tau = 0.0
    sqrt_tau = math.sqrt(tau)
    total_vol = vol * sqrt_tau
    # exp(0) is 1 exactly: without carry (r = 0) the strike is its own present value.
    disc_strike = strike * math.exp(-rate * tau) if rate != 0.0 else strike
    if total_vol < _MIN_TOTAL_VOL:
        call_itm = spot > disc_strike
        put_itm = spot < disc_strike
        return (
            (spot - disc_strike if call_itm else 0.0),
            (disc_strike - spot if put_itm else 0.0),
            (1.0 if call_itm else 0.0),
            (-1.0 if put_itm else 0.0),
            0.0,
            0.0,
            0.0,
            0.0,
        )
    d1 = bsm_d1(spot, strike, tau, rate, vol, total_vol)
    d2 = d1 - total_vol
    pdf = norm_pdf(d1)
    vega = spot * pdf * sqrt_tau
    call_delta = norm_cdf(d1)
    call_price = 0.0
    put_price = 0.0
    # Far out of the money the two terms of a price cancel to rounding noise below zero.
    if call:
        call_price = spot * call_delta - disc_strike * norm_cdf(d2)
        if call_price < 0.0:
            call_price = 0.0
    if put:
        put_price = disc_strike * norm_cdf(-d2) - spot * norm_cdf(-d1)
        if put_price < 0.0:
            put_price = 0.0
    return (
        call_price,
        put_price,
        call_delta,
        call_delta - 1.0,
        bsm_gamma(pdf, spot, total_vol),
        vega,
        bsm_vanna(pdf, d2, vol),
        bsm_charm(pdf, d2, tau, rate, total_vol),
    )


@njit(cache=True)
def line_greeks(spot, strike, tau, rate, vol, is_call):
    """(price, delta, gamma, vega, vanna, charm) of one European option: :func:`strike_greeks`' call
    or put."""
    call, put, call_delta, put_delta, gamma, vega, vanna, charm = strike_greeks(
        spot, strike, tau, rate, vol, is_call, not is_call
    )
    if is_call:
        return call, call_delta, gamma, vega, vanna, charm
    return put, put_delta, gamma, vega, vanna, charm


@njit(cache=True)
def _greeks_loop(spot, strike, tau, rate, vol, is_call, out):
    for i in range(spot.shape[0]):
        p, d, g, v, va, ch = line_greeks(spot[i], strike[i], tau[i], rate[i], vol[i], is_call[i])
        out[0, i] = p
        out[1, i] = d
        out[2, i] = g
        out[3, i] = v
        out[4, i] = va
        out[5, i] = ch


def _check(name: str, arr: np.ndarray, lower: float, strict: bool) -> None:
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"bsm_greeks: {name} must be finite (got {arr[~np.isfinite(arr)][:3]})")
    bad = arr <= lower if strict else arr < lower
    if np.any(bad):
        op = ">" if strict else ">="
        raise ValueError(f"bsm_greeks: {name} must be {op} {lower:g} (got {arr[bad][:3]})")


def bsm_greeks(spot, strike, tau, rate, vol, is_call) -> Greeks:
    """BSM price and greeks over arrays of option lines (broadcast together).

    Args:
        spot: underlying price, > 0.
        strike: strike, > 0.
        tau: time to expiry in years, >= 0 (0: at expiry, intrinsic value).
        rate: carry rate r per year (finite).
        vol: implied volatility per sqrt(year), >= 0.
        is_call: True for calls, False for puts.

    Returns:
        :class:`Greeks` of arrays with the broadcast shape (0-d arrays for scalar inputs);
        ``charm`` per year of calendar time.
    """
    arrays = np.broadcast_arrays(
        np.asarray(spot, dtype=np.float64),
        np.asarray(strike, dtype=np.float64),
        np.asarray(tau, dtype=np.float64),
        np.asarray(rate, dtype=np.float64),
        np.asarray(vol, dtype=np.float64),
        np.asarray(is_call, dtype=np.bool_),
    )
    shape = arrays[0].shape
    s, k, t, r, v, c = (np.ascontiguousarray(a).ravel() for a in arrays)
    _check("spot", s, 0.0, True)
    _check("strike", k, 0.0, True)
    _check("tau", t, 0.0, False)
    _check("rate", r, -np.inf, True)
    _check("vol", v, 0.0, False)
    out = np.empty((6, s.shape[0]))
    _greeks_loop(s, k, t, r, v, c, out)
    return Greeks(*(out[j].reshape(shape) for j in range(6)))
