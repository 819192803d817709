"""BSM greeks (`hedgegym.envs.greeks`) against textbook values, closed forms written here with
scipy, finite differences of the price, parity, and edge cases."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy.stats import norm

from hedgegym.envs.greeks import bsm_greeks

# A grid of (spot, strike, tau, rate, vol, is_call) over moneyness, maturity, vol, rate, calls and puts.
_S, _K, _T, _R, _V, _C = np.meshgrid(
    [60.0, 85.0, 97.0, 100.0, 103.0, 120.0, 160.0],
    [100.0],
    [0.01, 0.1, 0.5, 2.0],
    [-0.02, 0.0, 0.05],
    [0.1, 0.3, 0.8],
    [True, False],
    indexing="ij",
)
GRID = tuple(a.ravel() for a in (_S, _K, _T, _R, _V, _C))


def closed_form(s, k, tau, r, vol, is_call):
    """The BSM greeks derived independently: chain rule on d1 rather than the module's algebra."""
    sqrt_tau = np.sqrt(tau)
    d1 = (np.log(s / k) + (r + vol**2 / 2) * tau) / (vol * sqrt_tau)
    d2 = d1 - vol * sqrt_tau
    disc = np.exp(-r * tau)
    call = s * norm.cdf(d1) - k * disc * norm.cdf(d2)
    price = np.where(is_call, call, call - s + k * disc)  # put by put-call parity
    delta = np.where(is_call, norm.cdf(d1), norm.cdf(d1) - 1.0)
    dd1_dvol = sqrt_tau - d1 / vol
    dd1_dtau = (r + vol**2 / 2) / (vol * sqrt_tau) - d1 / (2 * tau)
    return {
        "price": price,
        "delta": delta,
        "gamma": norm.pdf(d1) / (s * vol * sqrt_tau),
        "vega": s * norm.pdf(d1) * sqrt_tau,
        "vanna": norm.pdf(d1) * dd1_dvol,
        "charm": -norm.pdf(d1) * dd1_dtau,
    }


def test_hull_textbook_values():
    # Hull, Options, Futures and Other Derivatives, Example 15.6: S=42, K=40, r=10 %, vol=20 %, T=0.5.
    call = bsm_greeks(42.0, 40.0, 0.5, 0.1, 0.2, True)
    put = bsm_greeks(42.0, 40.0, 0.5, 0.1, 0.2, False)
    assert round(float(call.price), 2) == 4.76
    assert round(float(put.price), 2) == 0.81
    # Hull ch. 19 (the Greek letters), the 20-week call: S=49, K=50, r=5 %, vol=20 %, T=0.3846:
    # price 2.40, delta 0.522, gamma 0.066, vega 12.1 (per unit of vol).
    g = bsm_greeks(49.0, 50.0, 20 / 52, 0.05, 0.2, True)
    assert round(float(g.price), 2) == 2.40
    assert round(float(g.delta), 3) == 0.522
    assert round(float(g.gamma), 3) == 0.066
    assert round(float(g.vega), 1) == 12.1


def test_matches_independent_closed_forms():
    g = bsm_greeks(*GRID)
    ref = closed_form(*GRID)
    for name, expected in ref.items():
        np.testing.assert_allclose(getattr(g, name), expected, rtol=1e-11, atol=1e-12 * 100.0, err_msg=name)


def test_matches_finite_differences_of_the_price():
    s, k, tau, r, vol, c = GRID
    g = bsm_greeks(*GRID)
    total_vol = vol * np.sqrt(tau)
    # Steps in each variable's natural scale, so that truncation (h^2) and rounding (eps / h) both
    # stay below ~1e-8 of the greek's own scale.
    hs = 1e-3 * s * total_vol
    hv = 1e-4 * vol
    ht = 1e-4 * tau

    def price(ds=0.0, dv=0.0):
        return bsm_greeks(s + ds, k, tau, r, vol + dv, c).price

    def delta(dv=0.0, dt=0.0):
        return bsm_greeks(s, k, tau + dt, r, vol + dv, c).delta

    pdf_scale = 1.0 / math.sqrt(2 * math.pi)
    checks = {
        "delta": ((price(hs) - price(-hs)) / (2 * hs), g.delta, 1.0),
        "gamma": ((price(hs) - 2 * price() + price(-hs)) / hs**2, g.gamma, pdf_scale / (s * total_vol)),
        "vega": ((price(dv=hv) - price(dv=-hv)) / (2 * hv), g.vega, pdf_scale * s * np.sqrt(tau)),
        "vanna": ((delta(dv=hv) - delta(dv=-hv)) / (2 * hv), g.vanna, 1.0 / vol),
        "charm": (-(delta(dt=ht) - delta(dt=-ht)) / (2 * ht), g.charm, 1.0 / tau),
    }
    for name, (fd, analytic, scale) in checks.items():
        err = np.abs(fd - analytic) / scale
        assert err.max() < 1e-6, f"{name}: worst scaled error {err.max():.2e} at {np.argmax(err)}"


def test_put_call_parity():
    s, k, tau, r, vol, _ = GRID
    call = bsm_greeks(s, k, tau, r, vol, True)
    put = bsm_greeks(s, k, tau, r, vol, False)
    np.testing.assert_allclose(call.price - put.price, s - k * np.exp(-r * tau), rtol=0, atol=1e-12 * 160)
    np.testing.assert_allclose(call.delta - put.delta, 1.0, rtol=0, atol=1e-14)
    for name in ("gamma", "vega", "vanna", "charm"):
        np.testing.assert_array_equal(getattr(call, name), getattr(put, name), err_msg=name)


def test_at_expiry_intrinsic_value_and_digital_delta():
    spot = np.array([80.0, 99.999, 100.001, 120.0])
    call = bsm_greeks(spot, 100.0, 0.0, 0.05, 0.6, True)
    put = bsm_greeks(spot, 100.0, 0.0, 0.05, 0.6, False)
    np.testing.assert_array_equal(call.price, np.maximum(spot - 100.0, 0.0))
    np.testing.assert_array_equal(put.price, np.maximum(100.0 - spot, 0.0))
    np.testing.assert_array_equal(call.delta, [0.0, 0.0, 1.0, 1.0])
    np.testing.assert_array_equal(put.delta, [-1.0, -1.0, 0.0, 0.0])
    for name in ("gamma", "vega", "vanna", "charm"):
        assert not np.any(getattr(call, name)) and not np.any(getattr(put, name)), name


@pytest.mark.parametrize("is_call", [True, False])
def test_extremes_are_finite_and_warning_free(is_call):
    spot = np.array([1e-6, 1.0, 50.0, 99.9, 100.0, 100.1, 200.0, 1e6, 1e12])[:, None, None]
    tau = np.array([0.0, 1e-300, 1e-30, 1e-20, 1e-12, 1e-6, 1.0, 50.0])[None, :, None]
    vol = np.array([0.0, 1e-300, 1e-12, 1e-6, 0.5, 5.0])[None, None, :]
    with warnings.catch_warnings(), np.errstate(all="raise"):
        warnings.simplefilter("error")
        g = bsm_greeks(spot, 100.0, tau, 0.03, vol, is_call)
    for name, values in g._asdict().items():
        assert values.shape == (9, 8, 6)
        assert np.all(np.isfinite(values)), name
    # No-arbitrage bounds hold everywhere, down to vanishing total volatility.
    disc_strike = 100.0 * np.exp(-0.03 * tau)
    intrinsic = np.maximum(spot - disc_strike, 0.0) if is_call else np.maximum(disc_strike - spot, 0.0)
    upper = spot if is_call else disc_strike
    assert np.all(g.price >= intrinsic - 1e-9 * (spot + 100.0))
    assert np.all(g.price <= upper * (1 + 1e-12))
    lo, hi = (0.0, 1.0) if is_call else (-1.0, 0.0)
    assert np.all((g.delta >= lo) & (g.delta <= hi))
    assert np.all(g.gamma >= 0.0) and np.all(g.vega >= 0.0)


def test_tau_to_zero_converges_to_intrinsic():
    taus = np.geomspace(1e-2, 1e-16, 15)
    for spot, expected_delta in ((90.0, 0.0), (110.0, 1.0)):
        g = bsm_greeks(spot, 100.0, taus, 0.0, 0.5, True)
        assert np.all(np.diff(np.abs(g.price - max(spot - 100.0, 0.0))) <= 1e-15)
        assert abs(g.delta[-1] - expected_delta) < 1e-12
    # At the money the call's value decays like vol * sqrt(tau / 2 pi) and delta tends to 1/2.
    g = bsm_greeks(100.0, 100.0, taus, 0.0, 0.5, True)
    np.testing.assert_allclose(g.price, 100.0 * 0.5 * np.sqrt(taus / (2 * np.pi)), rtol=1e-2)
    assert abs(g.delta[-1] - 0.5) < 1e-6


def test_deep_in_and_out_of_the_money():
    call = bsm_greeks(np.array([1.0, 1e4]), 100.0, 0.25, 0.05, 0.3, True)
    disc_strike = 100.0 * math.exp(-0.05 * 0.25)
    # The far tail keeps its (tiny, positive) value: erfc, not 1 - erf, which would round to 0.
    assert 0.0 < call.price[0] < 1e-200 and 0.0 < call.delta[0] < 1e-200
    assert call.price[1] == pytest.approx(1e4 - disc_strike, rel=1e-14)
    assert call.delta[1] == 1.0
    assert np.all(call.gamma < 1e-40)


def test_tiny_vol_prices_the_forward_intrinsic():
    for vol in (0.0, 1e-14, 1e-9):
        call = bsm_greeks(100.0, 100.0, 1.0, 0.05, vol, True)
        put = bsm_greeks(100.0, 100.0, 1.0, 0.05, vol, False)
        assert float(call.price) == pytest.approx(100.0 - 100.0 * math.exp(-0.05), rel=1e-9)
        assert float(put.price) == 0.0
        assert float(call.delta) == 1.0 and float(put.delta) == 0.0


def test_shapes_broadcast_and_scalars_give_0d():
    g = bsm_greeks(100.0, 100.0, 0.5, 0.0, 0.4, True)
    assert g.price.shape == () and isinstance(float(g.price), float)
    g = bsm_greeks(np.full((2, 1), 100.0), np.array([90.0, 100.0, 110.0]), 0.5, 0.0, 0.4, [[True], [False]])
    assert g.delta.shape == (2, 3)
    assert np.all(g.delta[0] > 0) and np.all(g.delta[1] < 0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"spot": -1.0}, "spot must be > 0"),
        ({"spot": 0.0}, "spot must be > 0"),
        ({"spot": np.inf}, "spot must be finite"),
        ({"strike": 0.0}, "strike must be > 0"),
        ({"strike": np.nan}, "strike must be finite"),
        ({"tau": -1e-9}, "tau must be >= 0"),
        ({"tau": np.nan}, "tau must be finite"),
        ({"rate": np.inf}, "rate must be finite"),
        ({"vol": -0.1}, "vol must be >= 0"),
        ({"vol": np.nan}, "vol must be finite"),
    ],
)
def test_bad_inputs_raise_naming_the_argument(kwargs, message):
    args = {"spot": 100.0, "strike": 100.0, "tau": 0.5, "rate": 0.0, "vol": 0.4, "is_call": True} | kwargs
    with pytest.raises(ValueError, match=message):
        bsm_greeks(**args)
