"""The market kernel: one numba step advances N envs, each a record of the named per-env state.

Implements MODEL.md §1–§6 in its order, one small ``@njit`` function per phase. Time is exact: at
step k it is ``k dt`` (never a running sum), and each option line settles at one step decided once,
in integers (``L_EXPIRY_STEP``: the first step whose time reaches its expiry). Each env (row ``i``)
advances from step k to k + 1:

1. :func:`agent_trades`: the agent's trades ``trades[i, v]`` (coins; future: contracts) execute at
   ``mid (1 + sign(q) half_spread + eta 0.01 q mid / D_v)``, pay ``fee |q| exec``, and push the
   venue's log-price by ``0.01 q mid / D_v``: the share ``transmission`` reaches spot (split into
   permanent and transient impact), the rest moves the perp premium or the futures basis.
2. :func:`exogenous_move`: the exogenous log-price moves: GBM or Heston variance, plus Merton jumps.
3. :func:`clearing`: market clearing with the background dealers (Frey & Stremme 1997; Sircar &
   Papanicolaou 1998; Schönbucher & Wilmott 2000): solve
   ``y = s_pre + 0.01 (e^y / D_eff) (H_D(e^y) - H_D,k)``, ``H_D(S) = -hedge_ratio Delta_D(t, S)``.
   Linearised, a step's return is ``x / (1 + phi)``, ``phi = GEX_D / D_eff``. The clearing price is
   the first root met from ``s_pre`` in the direction of the dealers' flow; where it has
   ``1 + phi <= phi_floor``, or there is none within reach, the move is capped at
   ``x / phi_floor`` and the step is flagged ``liquidity_crisis`` (see :func:`clear_market`).
   Dealers hold the hedge of lines settling at this step through the settlement, and unwind it at
   their next trading step, through the clearing like any flow.
4. :func:`venue_dynamics`: transient impact decays by ``exp(-resilience dt)`` (Obizhaeva & Wang
   2013); perp premium and futures basis follow exact OU updates.
5. :func:`hedge_and_cash`, then the book: funding is paid at each ``funding_interval`` boundary
   (``position * mark * clamp(premium + interest, -cap, cap)``, longs pay when positive); a future at
   its expiry cash-settles at spot and the next contract is listed; the agent's book is marked to
   model (BSM with the smile), lines settling at this step pay their intrinsic value into cash.
6. :func:`step_reward`: the reward of the step's P&L.
7. Accumulators and the step's outputs.

**Money** is one ledger. The agent starts with zero wealth: the book's premium is cash. Spot trades
pay or receive ``q mid`` in cash; perp and futures positions exchange no cash at entry and are
margined into cash every step (variation margin); fees, slippage, funding and the carry of margin
capital (``funding_cost_of_capital * margin * |position| * mid * dt``, an opportunity cost on top of
the rate) are paid from cash; settled lines pay into cash. Cash earns ``expm1(rate dt)`` a step on
its balance after the step's trades, so a financed Black–Scholes hedge replicates at r != 0. Wealth
is ``cash + spot position * spot + book value``, and the step P&L, its change, is exactly
``book_pnl + hedge_pnl - fees - slippage - funding - carry + interest``.

Randomness is counter-based (SplitMix64 finaliser of key and counter; Steele, Lea & Flood 2014):
shock ``j`` of step ``k`` of an episode is a pure function of (episode key, k, j), so paths do not
depend on the number of envs stepped together nor on the actions (common random numbers).

The kernels trust their inputs: :class:`hedgegym.envs.market.Market` validates everything first.
"""

from __future__ import annotations

import math
import os

import numpy as np
from numba import njit, prange

from hedgegym.envs.greeks import strike_delta_gamma, strike_greeks
from hedgegym.envs.layout import (
    CALL,
    ENABLED,
    FUTURE,
    L_EXPIRY,
    L_EXPIRY_STEP,
    L_IS_CALL,
    L_QUANTITY,
    L_STRIKE,
    MAX_LAG,
    N_AUTOCORR_LAGS,
    N_VENUES,
    O_BOOK_PNL,
    O_CARRY,
    O_CRISIS,
    O_DEALER_FLOW,
    O_EXO_RETURN,
    O_EXO_SPOT,
    O_FEES,
    O_FUNDING,
    O_GEX,
    O_HALTED,
    O_HEDGE_PNL,
    O_INTEREST,
    O_NOTIONAL,
    O_PHI,
    O_PNL,
    O_RETURN,
    O_REWARD,
    O_SLIPPAGE,
    O_SPOT,
    O_TERMINATED,
    O_TRADE_SPOT,
    O_TRUNCATED,
    OBS_BOUND,
    OBS_UNIT,
    PERP,
    REWARD_EPISODE_MEAN_VARIANCE,
    REWARD_MEAN_VARIANCE,
    REWARD_TERMINAL_PNL,
    SPOT,
    V_ENABLED,
    V_ETA,
    V_FEE,
    V_HALF_SPREAD,
    V_INV_DEPTH,
    V_MARGIN,
    V_TRANSMISSION,
)

# Numba options of the kernels. ``_nrt=False``: the kernels allocate nothing and only borrow the
# arrays they are given, so numba's runtime need not reference-count them; with it on, every call of
# a phase increfs and decrefs each array argument (an atomic operation, and a cache line bounced
# between the parallel kernel's threads), which was more than half of a frictionless step.
# ``inline="always"`` on the phases of the step and on small scalar helpers (the smile, the price
# band): numba inlines them into their callers (the phases into ``step_body``), where LLVM
# optimises them together. ``step_body`` is inlined into the serial loop (``step_serial``, what the
# evaluation's rollout runs on its blocks of rows: a fifth off a frictionless step, the per-row call
# with its ~50 scalar arguments gone) and compiled once more as ``step_row``, which the parallel loop
# calls per row (inlined there too, the cold compile time doubled against one copy of the step; one
# inlined copy costs about half that again).
# Neither option changes a result: the same operations run in the same order (the golden
# trajectories replay bit for bit).
# ``reset_row`` keeps the runtime: it allocates.
# ------------------------------------------------------------------------------------ randomness
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_SEED_SALT = np.uint64(0xD1B54A32D192ED03)
_SH30, _SH27, _SH31, _SH11 = np.uint64(30), np.uint64(27), np.uint64(31), np.uint64(11)
_TWO_POW_M53 = 1.0 / 9007199254740992.0
# numba's OpenMP workers spin-wait between parallel regions by default. On a small machine shared
# with anything else (a policy update, a second process) the spinning threads starve the work: at
# N = 1024 on 2 cores next to one busy process, `step_parallel` ran 0.14M env-steps/s spinning and
# 1.78M passive (the serial kernel: 0.96M). The runtime reads this when numba first starts its
# thread pool, so setting it here, before any parallel call, is in time; a user's own setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
SHOCKS_PER_STEP = 16  # uniforms reserved per step; 11 are used (5 normals x 2 uniforms, and number 12)
# A future whose expiry is within this many years (~30 us) of the step's time has expired: the roll
# sums expiry_days / 365, which lands on a step time k dt only up to rounding. (Option lines settle
# at a step decided once, in integers: ``L_EXPIRY_STEP``.)
EXPIRY_TOLERANCE = 1e-12
# Log-prices stay within ln(spot0) +- LOG_PRICE_BAND (a factor e^50 ~ 5e21 either way), a numerical
# guard far outside any meaningful path: a capped crisis step multiplies a large jump by
# 1/phi_floor, and coin-sized trades at the price that results push it further still, until exp()
# overflows or underflows to 0 and `strike / spot` raises ZeroDivisionError inside the kernel.
LOG_PRICE_BAND = 50.0
# The perp premium (a fraction of spot) and the futures basis (per year) stay within these bounds:
# flow pushes them, and a crisis-sized flow would otherwise price the perp at a negative mark.
PREMIUM_BOUND = 0.5
BASIS_BOUND = 5.0
# Funding boundaries are counted on t / interval; this absorbs the rounding of k dt / interval.
FUNDING_EPS = 1e-9


@njit(cache=True, _nrt=False)
def mix64(z):
    """SplitMix64 finaliser (Steele, Lea & Flood 2014): a bijective 64-bit avalanche mix."""
    z = (z ^ (z >> _SH30)) * _MIX1
    z = (z ^ (z >> _SH27)) * _MIX2
    return z ^ (z >> _SH31)


@njit(cache=True, _nrt=False)
def episode_key(seed, episode):
    """Random key of episode ``episode`` of the stream seeded ``seed`` (both uint64)."""
    return mix64(mix64(seed * _SEED_SALT + _GOLDEN) ^ (episode * _GOLDEN + _MIX1))


@njit(cache=True, _nrt=False)
def uniform(key, counter):
    """U(0, 1), never 0 or 1: the counter-th draw of ``key`` (SplitMix64 at position counter)."""
    h = mix64(key + (counter + np.uint64(1)) * _GOLDEN)
    return (float(h >> _SH11) + 0.5) * _TWO_POW_M53


@njit(cache=True, _nrt=False)
def normal(key, counter):
    """N(0, 1) by Box–Muller from draws ``2 counter`` and ``2 counter + 1``."""
    u1 = uniform(key, np.uint64(2) * counter)
    u2 = uniform(key, np.uint64(2) * counter + np.uint64(1))
    return math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2)


# The step's normal shocks by their index among its normals; the jump count's uniform is uniform
# number 12 of the step, after the five normals' ten.
Z_PRICE, Z_VAR, Z_JUMP, Z_PREMIUM, Z_BASIS = 0, 1, 2, 3, 4
U_JUMP_COUNT = 12


@njit(cache=True, _nrt=False)
def step_normal(key, step, which):
    """Normal shock ``which`` (``Z_*``) of step ``step``: each is drawn only where the model uses it."""
    return normal(key, np.uint64(step) * np.uint64(SHOCKS_PER_STEP // 2) + np.uint64(which))


@njit(cache=True, _nrt=False)
def step_uniform(key, step, which):
    """Uniform shock ``which`` (``U_*``) of step ``step``."""
    return uniform(key, np.uint64(step) * np.uint64(SHOCKS_PER_STEP) + np.uint64(which))


@njit(cache=True, _nrt=False)
def poisson_inverse(lam, u):
    """Poisson(lam) by CDF inversion of ``u`` (exact; ``lam * dt`` is small here), at most 200."""
    p = math.exp(-lam)
    cdf = p
    n = 0
    while u > cdf and n < 200:
        n += 1
        p *= lam / n
        cdf += p
    return n


# ------------------------------------------------------------------------------------ books
@njit(cache=True, _nrt=False, inline="always")
def atm_vol(p, variance):
    """sigma_atm = sqrt(v) (1 + vol_premium), floored (MODEL.md §5)."""
    v = math.sqrt(max(variance, 0.0)) * (1.0 + p.vol_premium)
    return max(v, p.vol_floor)


@njit(cache=True, _nrt=False, inline="always")
def line_vol_and_slope(p, sigma_atm, strike, spot):
    """Implied vol of a line from the sticky-moneyness smile (MODEL.md §5) and its slope
    d vol / d ln S (0 on the floor), which the clearing's Newton derivative needs."""
    m = math.log(strike / spot)
    v = sigma_atm * (1.0 + p.skew * m + p.smile * m * m)
    if v > p.vol_floor:
        return v, -sigma_atm * (p.skew + 2.0 * p.smile * m)
    return p.vol_floor, 0.0


@njit(cache=True, _nrt=False, inline="always")
def line_vol(p, sigma_atm, strike, spot):
    """Implied vol of a line from the sticky-moneyness smile, MODEL.md §5."""
    if p.skew == 0.0 and p.smile == 0.0:
        # A flat smile: sigma_atm (1 + 0 m + 0 m^2) is sigma_atm exactly for any finite m; no log.
        return sigma_atm if sigma_atm > p.vol_floor else p.vol_floor
    return line_vol_and_slope(p, sigma_atm, strike, spot)[0]


@njit(cache=True, _nrt=False, inline="always")
def line_at(lines, j, step, last_strike, last_expiry):
    """(settled, strike, expiry, new strike) of line ``j`` at step ``step``: whether it has settled (by
    step ``step``: only the lines that settle later are live), and whether its strike and expiry
    differ from the line before's (``last_strike``, ``last_expiry``). Books list the call and the put
    of a strike side by side: they share d1 and gamma, so the greeks are evaluated once per strike."""
    strike = lines[j, L_STRIKE]
    expiry = lines[j, L_EXPIRY]
    return lines[j, L_EXPIRY_STEP] <= step, strike, expiry, strike != last_strike or expiry != last_expiry


@njit(cache=True, _nrt=False)
def dealer_delta_gamma(lines, p, step, t, spot, sigma_atm, iv_slope=0.0):
    """Quantity-weighted delta and gamma of the lines still live at step ``step`` (those that settle
    at a later step) of a book at time ``t``, and the smile's share of d delta / d ln S: the sum of
    quantity * vanna * (d vol / d ln S). ``iv_slope``: d ln sigma_atm / d ln S where the ATM vol moves
    with spot (implied-vol dynamics), adding ``iv_slope * vol`` to each unfloored line's slope."""
    delta = 0.0
    gamma = 0.0
    smile_vanna = 0.0
    rate = p.rate
    last_strike = -1.0
    last_expiry = -1.0
    call_delta = put_delta = g = va = slope = 0.0
    for j in range(lines.shape[0]):
        settled, strike, expiry, new_strike = line_at(lines, j, step, last_strike, last_expiry)
        if settled:
            continue
        if new_strike:
            vol, slope = line_vol_and_slope(p, sigma_atm, strike, spot)
            if iv_slope != 0.0 and vol > p.vol_floor:
                slope += iv_slope * vol
            call_delta, put_delta, g, va = strike_delta_gamma(spot, strike, expiry - t, rate, vol)
            last_strike = strike
            last_expiry = expiry
        q = lines[j, L_QUANTITY]
        delta += q * (call_delta if lines[j, L_IS_CALL] == CALL else put_delta)
        gamma += q * g
        smile_vanna += q * va * slope
    return delta, gamma, smile_vanna


@njit(cache=True, _nrt=False)
def settling_delta(lines, p, settle_step, t, spot, sigma_atm):
    """Quantity-weighted delta at time ``t`` of the lines that settle at step ``settle_step``."""
    delta = 0.0
    for j in range(lines.shape[0]):
        if lines[j, L_EXPIRY_STEP] != settle_step:
            continue
        strike = lines[j, L_STRIKE]
        vol = line_vol(p, sigma_atm, strike, spot)
        call_delta, put_delta, _, _ = strike_delta_gamma(spot, strike, lines[j, L_EXPIRY] - t, p.rate, vol)
        delta += lines[j, L_QUANTITY] * (call_delta if lines[j, L_IS_CALL] == CALL else put_delta)
    return delta


@njit(cache=True, _nrt=False, inline="always")
def next_rebalance_step(step, p):
    """The first step after ``step`` at which the dealers rebalance (every ``rebalance_every``)."""
    every = p.rebalance_every
    return (step // every + 1) * every


@njit(cache=True, _nrt=False, inline="always")
def strike_kinds(lines, j, step):
    """(call, put): whether the lines that share line ``j``'s strike and expiry from ``j`` on, and so
    reuse its one :func:`strike_greeks` evaluation in :func:`mark_book`, hold a call, a put. Lines
    settled by step ``step`` are skipped there, so they do not end the run."""
    strike = lines[j, L_STRIKE]
    expiry = lines[j, L_EXPIRY]
    call = False
    put = False
    for k in range(j, lines.shape[0]):
        if lines[k, L_EXPIRY_STEP] <= step:
            continue
        if lines[k, L_STRIKE] != strike or lines[k, L_EXPIRY] != expiry:
            break
        if lines[k, L_IS_CALL] == CALL:
            call = True
        else:
            put = True
    return call, put


@njit(cache=True, _nrt=False, inline="always")
def mark_book(state, i, lines, p, step, t, spot, sigma_atm):
    """Mark the agent's book at step ``step`` (time ``t``, price ``spot``): store the value and greeks
    of the live lines and return the cash paid by the lines settling now, at intrinsic value on
    ``spot``. A line settles at its ``L_EXPIRY_STEP`` only, so exactly once."""
    rate = p.rate
    payoff = 0.0
    value = 0.0
    delta = 0.0
    gamma = 0.0
    vanna = 0.0
    charm = 0.0
    last_strike = -1.0
    last_expiry = -1.0
    call_p = put_p = call_d = put_d = g = va = ch = 0.0
    for j in range(lines.shape[0]):
        expiry_step = lines[j, L_EXPIRY_STEP]
        if expiry_step < step:
            continue
        strike = lines[j, L_STRIKE]
        q = lines[j, L_QUANTITY]
        is_call = lines[j, L_IS_CALL] == CALL
        if expiry_step == step:
            payoff += q * (max(spot - strike, 0.0) if is_call else max(strike - spot, 0.0))
            continue
        expiry = lines[j, L_EXPIRY]
        # As in dealer_delta_gamma: the call and the put of a strike, side by side, share the work,
        # and only the prices that its lines hold are computed (a lone call needs no put).
        if strike != last_strike or expiry != last_expiry:
            vol = line_vol(p, sigma_atm, strike, spot)
            want_call, want_put = strike_kinds(lines, j, step)
            call_p, put_p, call_d, put_d, g, _, va, ch = strike_greeks(
                spot, strike, expiry - t, rate, vol, want_call, want_put
            )
            last_strike = strike
            last_expiry = expiry
        value += q * (call_p if is_call else put_p)
        delta += q * (call_d if is_call else put_d)
        gamma += q * g
        vanna += q * va
        charm += q * ch
    state[i].book_value = value
    state[i].book_delta = delta
    state[i].book_gamma = gamma
    state[i].book_vanna = vanna
    state[i].book_charm = charm
    return payoff


@njit(cache=True, _nrt=False, inline="always")
def venue_mids(state, i, p):
    """(spot, perp, future) mid prices of row i at its current time."""
    return venue_mids_at(state, i, p, state[i].spot)


@njit(cache=True, _nrt=False, inline="always")
def venue_mids_at(state, i, p, spot):
    """:func:`venue_mids` at the spot price ``spot`` (``state[i].spot``, or the step's new price)."""
    perp = spot * (1.0 + state[i].premium)
    tau_f = max(state[i].future_expiry - state[i].t, 0.0)
    growth = (p.rate + state[i].basis) * tau_f
    # exp(0) is 1 exactly: a future without carry (r + basis = 0, or at expiry) is priced at spot.
    future = spot * math.exp(growth) if growth != 0.0 else spot
    return spot, perp, future


@njit(cache=True, _nrt=False, inline="always")
def future_delta(state, i, p):
    """Coins of delta per futures contract: exp(r (T_f - t)) (MODEL.md §4)."""
    return math.exp(p.rate * max(state[i].future_expiry - state[i].t, 0.0))


@njit(cache=True, _nrt=False, inline="always")
def clamp_log_price(y, p):
    """``y`` within ln(spot0) +- LOG_PRICE_BAND (see LOG_PRICE_BAND)."""
    centre = p.log_spot0
    return min(max(y, centre - LOG_PRICE_BAND), centre + LOG_PRICE_BAND)


# ------------------------------------------------------------------------------------ clearing
@njit(cache=True, _nrt=False)
def _clearing_residual(y, s_pre, h_prev, hedging, hold, dealer_lines, p, step, t, sigma_atm):
    """f(y) = y - s_pre - 0.01 e^y inv_D_eff (H(e^y) - H_prev), f'(y), H and phi, where the dealers'
    target is ``H(S) = hold - hedge_ratio Delta_live(t, S)`` when ``hedging`` (a rebalance), else the
    constant ``hold``.

    ``f'(y) = 1 - push + phi + 0.01 e^y inv_D_eff hedge_ratio sum(q vanna d vol / d ln S)``: the
    last term is the smile's (vols move with the price); phi is the BSM-gamma feedback of MODEL.md §3.
    """
    # Newton may overshoot far out when f' is near the floor; the price it evaluates stays finite.
    spot = math.exp(clamp_log_price(y, p))
    inv_d = p.dealer_inv_depth
    h = hold
    phi = 0.0
    smile_term = 0.0
    if hedging:
        delta, gamma, smile_vanna = dealer_delta_gamma(dealer_lines, p, step, t, spot, sigma_atm)
        hr = p.hedge_ratio
        h = hold - hr * delta
        phi = 0.01 * hr * gamma * spot * spot * inv_d
        smile_term = 0.01 * hr * smile_vanna * spot * inv_d
    push = 0.01 * spot * inv_d * (h - h_prev)
    f = y - s_pre - push
    return f, 1.0 - push + phi + smile_term, h, phi


@njit(cache=True, _nrt=False, inline="always")
def _residual(y, s_pre, h_prev, hedging, hold, dealer_lines, p, step, t, sigma_atm, y_ref, a, c0, second_order):
    """The clearing's residual: :func:`_clearing_residual`, or, where ``second_order`` (implied-vol
    dynamics or cohorts shape the clearing), :func:`_clearing_residual_second_order`. ``second_order``
    is a compile-time constant of each :func:`clear_market` specialisation (omitted: False), so the
    first-order clearing compiles to the first-order residual alone."""
    if second_order:
        return _clearing_residual_second_order(
            y, s_pre, h_prev, hedging, hold, dealer_lines, p, step, t, sigma_atm, y_ref, a, c0
        )
    return _clearing_residual(y, s_pre, h_prev, hedging, hold, dealer_lines, p, step, t, sigma_atm)


@njit(cache=True, _nrt=False)
def _clearing_residual_second_order(y, s_pre, h_prev, hedging, hold, dealer_lines, p, step, t, sigma_atm, y_ref, a, c0):
    """:func:`_clearing_residual` with implied-vol dynamics and/or dealer cohorts.

    With implied-vol dynamics the ATM vol at ``y`` is ``sigma_atm exp(spot_beta (y - y_ref))``
    (:func:`iv_at`), whose slope joins the smile's in f' (the vanna term); with dealer cohorts the
    dealers' push is ``0.01 e^y (c0 - a Delta(e^y))`` (``a``: the sum of ``share hedge_ratio / D`` of
    the cohorts trading at the clearing price, ``c0`` the rest of their flow, see
    :func:`clearing_cohorts`) and the third value returned is ``Delta``, not a hedge."""
    yc = clamp_log_price(y, p)
    spot = math.exp(yc)
    sig = sigma_atm
    iv_slope = 0.0
    if p.iv_dynamics:
        sig, iv_slope = iv_at(p, sigma_atm, yc - y_ref)
    if p.cohorts_on:
        delta = 0.0
        phi = 0.0
        smile_term = 0.0
        if hedging:
            delta, gamma, smile_vanna = dealer_delta_gamma(dealer_lines, p, step, t, spot, sig, iv_slope)
            phi = 0.01 * a * gamma * spot * spot
            smile_term = 0.01 * a * smile_vanna * spot
        push = 0.01 * spot * (c0 - a * delta)
        return y - s_pre - push, 1.0 - push + phi + smile_term, delta, phi
    inv_d = p.dealer_inv_depth
    h = hold
    phi = 0.0
    smile_term = 0.0
    if hedging:
        delta, gamma, smile_vanna = dealer_delta_gamma(dealer_lines, p, step, t, spot, sig, iv_slope)
        hr = p.hedge_ratio
        h = hold - hr * delta
        phi = 0.01 * hr * gamma * spot * spot * inv_d
        smile_term = 0.01 * hr * smile_vanna * spot * inv_d
    push = 0.01 * spot * inv_d * (h - h_prev)
    return y - s_pre - push, 1.0 - push + phi + smile_term, h, phi


@njit(cache=True, _nrt=False, inline="always")
def iv_at(p, sigma_base, dy):
    """ATM implied vol after a log-price move ``dy`` within a step, ``sigma_base exp(spot_beta dy)``
    within [vol_floor, vol_cap], and its d ln sigma / d ln S (0 where it is held at a bound)."""
    v = sigma_base * math.exp(p.iv_beta * dy)
    if v <= p.vol_floor:
        return p.vol_floor, 0.0
    if v >= p.iv_cap:
        return p.iv_cap, 0.0
    return v, p.iv_beta


# Newton's root is taken as the clearing price when the residual's slope f' is at least this at
# every iterate: a pair of roots between s_pre and Newton's root needs f' to fall below 0 within the
# move, which cannot happen from slopes this high over a step's move. Otherwise the root is found
# by the scan below.
NEWTON_TRUST_SLOPE = 0.5
# Newton stops when its step in log-price is below this (1e-13: a relative price change of 1e-13).
NEWTON_STEP_TOLERANCE = 1e-13
# The scan for the first root divides the search window into this many cells. A pair of roots inside
# one cell is found too, from the turn of the residual between them (its slope changes sign); only a
# residual whose slope changes sign twice within one cell (window / 128) could hide a pair.
CLEARING_SCAN_CELLS = 128
CLEARING_BISECTIONS = 60


@njit(cache=True, _nrt=False)
def clear_market(
    s_pre,
    y_prev,
    h_prev,
    hedging,
    hold,
    dealer_lines,
    p,
    step,
    t,
    sigma_atm,
    y_ref=0.0,
    a=0.0,
    c0=0.0,
    second_order=False,
):
    """Solve the clearing equation of MODEL.md §3 for the log-price; returns (y, H, phi, crisis).

    The equation ``f(y) = 0`` (see :func:`_clearing_residual`) may have several roots in a stressed
    market. The clearing price is the **first root met moving from the pre-clearing price s_pre in
    the direction the dealers' flow pushes** (up if ``f(s_pre) < 0``, i.e. the flow buys): the price
    the market reaches as it absorbs the flow. The root is **admissible** when ``1 + phi > phi_floor``
    there and it lies within ``(|s_pre - y_prev| + |f(s_pre)|) / phi_floor`` of s_pre (the move the
    floor allows). When no admissible root exists the step is a liquidity crisis: the move is capped
    at ``y_prev + (s_pre - y_prev) / phi_floor``, the dealers hedge at the capped price, and
    ``phi`` reports the feedback at the pre-clearing price, where no admissible root could be found.

    Numerics: Newton from s_pre, trusted when ``f' >= NEWTON_TRUST_SLOPE`` at every iterate (the
    ordinary market); otherwise a scan of the window in ``CLEARING_SCAN_CELLS`` cells finds the first
    sign change, or the first turn of ``f`` (``f'`` changing sign) that reaches zero, as a pair of roots
    within one cell does; the root is then refined by bisection.
    """
    floor = p.phi_floor
    f0, fp0, h0, phi0 = _residual(
        s_pre, s_pre, h_prev, hedging, hold, dealer_lines, p, step, t, sigma_atm, y_ref, a, c0, second_order
    )
    if f0 == 0.0:
        if 1.0 + phi0 > floor:
            return s_pre, h0, phi0, False
    else:
        y = s_pre
        f, fp, h, phi = f0, fp0, h0, phi0
        trusted = True
        converged = False
        for _ in range(p.newton_iterations):
            if fp < NEWTON_TRUST_SLOPE:
                trusted = False
                break
            dy = f / fp
            y -= dy
            if abs(dy) < NEWTON_STEP_TOLERANCE:
                # H and phi of the last evaluation stand: it was that close in log-price.
                converged = True
                break
            f, fp, h, phi = _residual(
                y, s_pre, h_prev, hedging, hold, dealer_lines, p, step, t, sigma_atm, y_ref, a, c0, second_order
            )
        if trusted and converged and 1.0 + phi > floor:
            return y, h, phi, False
        # The scan for the first root, in the direction of the flow.
        up = f0 < 0.0
        window = (abs(s_pre - y_prev) + abs(f0)) / floor
        cell = window / CLEARING_SCAN_CELLS
        lo = s_pre
        fp_lo = fp0
        hi = s_pre
        found = False
        for j in range(1, CLEARING_SCAN_CELLS + 1):
            cand = s_pre + cell * j if up else s_pre - cell * j
            fc, fpc, _, _ = _residual(
                cand, s_pre, h_prev, hedging, hold, dealer_lines, p, step, t, sigma_atm, y_ref, a, c0, second_order
            )
            if (fc >= 0.0) == up:
                hi = cand
                found = True
                break
            if fp_lo > 0.0 and fpc < 0.0:
                # f moved toward 0 and turned back inside the cell: a pair of roots may lie between
                # the ends without a sign change at them. Find the turning point (f' = 0) and look.
                a = lo
                b = cand
                for _ in range(CLEARING_BISECTIONS):
                    m = 0.5 * (a + b)
                    _, fpm, _, _ = _residual(
                        m, s_pre, h_prev, hedging, hold, dealer_lines, p, step, t, sigma_atm, y_ref, a, c0, second_order
                    )
                    if fpm > 0.0:
                        a = m
                    else:
                        b = m
                turn = 0.5 * (a + b)
                ft, _, _, _ = _residual(
                    turn, s_pre, h_prev, hedging, hold, dealer_lines, p, step, t, sigma_atm, y_ref, a, c0, second_order
                )
                if (ft >= 0.0) == up:
                    hi = turn
                    found = True
                    break
            lo = cand
            fp_lo = fpc
        if found:
            # f(lo) has the sign of f0, f(hi) the other one.
            for _ in range(CLEARING_BISECTIONS):
                mid = 0.5 * (lo + hi)
                fm, _, _, _ = _residual(
                    mid, s_pre, h_prev, hedging, hold, dealer_lines, p, step, t, sigma_atm, y_ref, a, c0, second_order
                )
                if (fm >= 0.0) == up:
                    hi = mid
                else:
                    lo = mid
            y = 0.5 * (lo + hi)
            f, fp, h, phi = _residual(
                y, s_pre, h_prev, hedging, hold, dealer_lines, p, step, t, sigma_atm, y_ref, a, c0, second_order
            )
            if 1.0 + phi > floor:
                return y, h, phi, False
    y = y_prev + (s_pre - y_prev) / floor
    _, _, h, _ = _residual(
        y, s_pre, h_prev, hedging, hold, dealer_lines, p, step, t, sigma_atm, y_ref, a, c0, second_order
    )
    return y, h, phi0, True


# ------------------------------------------------------------------------------------ reset
@njit(cache=True, _nrt=False)
def dealer_hedge_at(row_state, i, dealer_lines, p, step, t, spot, sigma_atm):
    """Set the dealers' hedge of row i to ``-hedge_ratio Delta`` of their live book at (t, spot) and
    the part of it they will hold through the settlement at their next rebalance; returns
    (delta, gamma) of the live book."""
    hr = p.hedge_ratio
    d_delta, d_gamma, _ = dealer_delta_gamma(dealer_lines, p, step, t, spot, sigma_atm)
    row_state[i].dealer_hedge = -hr * d_delta
    nxt = next_rebalance_step(step, p)
    row_state[i].dealer_hold_step = nxt
    row_state[i].dealer_hold = -hr * settling_delta(dealer_lines, p, nxt, t, spot, sigma_atm)
    return d_delta, d_gamma


@njit(cache=True)
def reset_row(i, seed, episode, state, hedge, keys, p, venues, dealer_lines, agent_lines, ext):
    """Start episode ``episode`` of the stream ``seed`` in row ``i`` (MODEL.md initial state).

    The agent starts with zero wealth: the premium of its book (``-book value``) is cash, and an
    initial delta hedge on spot is bought or sold from that cash.
    """
    keys[i] = episode_key(np.uint64(seed), np.uint64(episode))
    state[i] = np.zeros(1, dtype=state.dtype)[0]
    for v in range(N_VENUES):
        hedge[i, v] = 0.0
    x0 = math.log(p.spot0)
    v0 = p.v0
    state[i].x = x0
    state[i].v = v0
    state[i].log_spot = x0
    state[i].spot = math.exp(x0)
    state[i].basis = p.basis_mean
    state[i].future_expiry = p.future_expiry
    state[i].realised_var = v0
    state[i].funding_rate = min(max(p.interest, -p.funding_cap), p.funding_cap)
    spot = p.spot0
    sigma_atm = atm_vol(p, v0)
    state[i].atm_vol = sigma_atm
    _, d_gamma = dealer_hedge_at(state, i, dealer_lines, p, 0, 0.0, spot, sigma_atm)
    state[i].gex = 0.01 * p.hedge_ratio * d_gamma * spot * spot
    state[i].phi = state[i].gex * p.dealer_inv_depth
    if p.second_order:
        ext[i] = np.zeros(1, dtype=ext.dtype)[0]
        reset_second_order(i, state, ext, p, dealer_lines, spot, sigma_atm)
    mark_book(state, i, agent_lines, p, 0, 0.0, spot, sigma_atm)
    if p.initial_delta_hedge:
        hedge[i, SPOT] = -state[i].book_delta
    state[i].cash = -state[i].book_value - hedge[i, SPOT] * spot


@njit(cache=True)
def reset_rows(rows, seeds, episodes, state, hedge, keys, params, venues, dealer_lines, agent_lines, ext):
    """Reset the listed rows; ``seeds`` and ``episodes`` (uint64) are per listed row."""
    p = params[0]
    for n in range(rows.shape[0]):
        reset_row(rows[n], seeds[n], episodes[n], state, hedge, keys, p, venues, dealer_lines, agent_lines, ext)


# ------------------------------------------------------------------------------------ step phases
@njit(cache=True, _nrt=False, inline="always")
def agent_trades(i, state, hedge, trades, p, venues, halted, mids, out):
    """Phase 1: the agent's trades execute at ``mid (1 + sign(q) half_spread + eta 0.01 q mid / D_v)``,
    pay ``fee |q| exec`` and push prices (MODEL.md §3–§4). Cash pays ``q mid`` on spot (derivative
    venues exchange no cash at entry) plus slippage and fees. Returns (fees, slippage, notional, n)."""
    ps = p.permanent_share
    agent_impact = p.agent_impact
    tau_f = max(state[i].future_expiry - state[i].t, 0.0)
    fees = 0.0
    slippage = 0.0
    notional = 0.0
    n_trades = 0.0
    for v in range(N_VENUES):
        q = trades[i, v]
        if halted or venues[v, V_ENABLED] != ENABLED:
            q = 0.0
        out[i, O_TRADE_SPOT + v] = q
        if q == 0.0:
            continue
        mid = mids[v]
        inv_depth = venues[v, V_INV_DEPTH]
        sign = 1.0 if q > 0.0 else -1.0
        execution = mid * (1.0 + sign * venues[v, V_HALF_SPREAD] + venues[v, V_ETA] * 0.01 * q * mid * inv_depth)
        slippage += abs(q) * abs(execution - mid)
        fees += venues[v, V_FEE] * abs(q) * abs(execution)
        notional += abs(q) * mid
        n_trades += 1.0
        hedge[i, v] += q
        if v == SPOT:
            state[i].cash -= q * mid
        push = 0.01 * q * mid * inv_depth * agent_impact
        tr = venues[v, V_TRANSMISSION]
        state[i].i_perm += ps * tr * push
        state[i].i_trans += (1.0 - ps) * tr * push
        if v == PERP:
            state[i].premium += (1.0 - tr) * push
        elif v == FUTURE:
            state[i].basis += (1.0 - tr) * push / max(tau_f, p.dt)
    state[i].cash -= slippage + fees
    return fees, slippage, notional, n_trades


@njit(cache=True, _nrt=False, inline="always")
def exogenous_move(i, state, p, key, step):
    """Phase 2 (MODEL.md §2): the fundamental log-price X and the variance move by one step: GBM or
    Heston (full truncation), plus Merton jumps. Returns the new X."""
    dt = p.dt
    z_price = step_normal(key, step, Z_PRICE)
    heston = p.heston
    var = state[i].v if heston else p.sigma * p.sigma
    x_new = state[i].x + (p.mu - 0.5 * var) * dt + math.sqrt(var * dt) * z_price
    if p.jumps:
        n_jumps = poisson_inverse(p.jump_intensity * dt, step_uniform(key, step, U_JUMP_COUNT))
        if n_jumps > 0:
            x_new += n_jumps * p.jump_mean + math.sqrt(n_jumps) * p.jump_std * step_normal(key, step, Z_JUMP)
    if heston:
        rho = p.rho_sv
        w = rho * z_price + math.sqrt(max(1.0 - rho * rho, 0.0)) * step_normal(key, step, Z_VAR)
        var_new = var + p.kappa_v * (p.theta_v - var) * dt + p.xi * math.sqrt(var * dt) * w
        state[i].v = max(var_new, 0.0)
    state[i].x = x_new
    return x_new


@njit(cache=True, _nrt=False, inline="always")
def impacted_log_price(i, state, p):
    """``X + I_perm + I_trans`` of row i, and whether it hit the price band. Outside the band (see
    LOG_PRICE_BAND) the price is pinned to its edge and all of the impact becomes permanent, so that
    ``s = X + I_perm + I_trans`` still holds without I_perm and I_trans cancelling each other from
    huge values; the step is then flagged as a liquidity crisis."""
    x = state[i].x
    y = x + state[i].i_perm + state[i].i_trans
    y_band = clamp_log_price(y, p)
    if y_band == y:
        return y, False
    state[i].i_perm = y_band - x
    state[i].i_trans = 0.0
    return y_band, True


@njit(cache=True, _nrt=False, inline="always")
def clearing(i, state, p, dealer_lines, halted, step_new, t_new, y_prev, sigma_atm):
    """Phase 3 (MODEL.md §3): the dealers trade to their new hedge at the price their own flow makes.

    At a rebalance step they hedge ``-hedge_ratio Delta`` of their live lines, and keep the hedge of
    lines settling at this very step (``dealer_hold``): options settle on the price before their
    hedges are unwound. That hedge becomes ``dealer_unwind`` and is traded away at the next step
    the dealers trade, through the clearing like any flow (at once, not spread). Returns
    (dealer flow, phi, crisis)."""
    ps = p.permanent_share
    s_pre, crisis = impacted_log_price(i, state, p)
    h_prev = state[i].dealer_hedge
    trading = (not halted) and p.hedge_ratio > 0.0 and dealer_lines.shape[0] > 0
    rebalance = trading and step_new % p.rebalance_every == 0
    inv_d = p.dealer_inv_depth
    # With implied-vol dynamics the ATM vol moves with the price within the step (iv_at).
    sig_pre = sigma_atm
    if p.iv_dynamics:
        sig_pre = iv_at(p, sigma_atm, s_pre - y_prev)[0]
    if rebalance:
        hold = state[i].dealer_hold if state[i].dealer_hold_step == step_new else 0.0
        if inv_d > 0.0:
            if p.iv_dynamics:
                y, h_new, phi, capped = clear_market(
                    s_pre,
                    y_prev,
                    h_prev,
                    True,
                    hold,
                    dealer_lines,
                    p,
                    step_new,
                    t_new,
                    sigma_atm,
                    y_prev,
                    0.0,
                    0.0,
                    True,
                )
            else:
                y, h_new, phi, capped = clear_market(
                    s_pre, y_prev, h_prev, True, hold, dealer_lines, p, step_new, t_new, sigma_atm
                )
        else:
            spot_pre = math.exp(s_pre)
            d_delta, d_gamma, _ = dealer_delta_gamma(dealer_lines, p, step_new, t_new, spot_pre, sig_pre)
            y, h_new, phi, capped = s_pre, hold - p.hedge_ratio * d_delta, 0.0, False
        # The part of the new hedge that hedges lines settling at the next rebalance.
        nxt = next_rebalance_step(step_new, p)
        state[i].dealer_hold_step = nxt
        sig_y = sigma_atm
        if p.iv_dynamics:
            sig_y = iv_at(p, sigma_atm, y - y_prev)[0]
        state[i].dealer_hold = -p.hedge_ratio * settling_delta(dealer_lines, p, nxt, t_new, math.exp(y), sig_y)
        state[i].dealer_unwind = hold
    else:
        # Without dealer lines phi is 0 (their gamma is): the price and the empty book are skipped.
        phi = 0.0
        if dealer_lines.shape[0] > 0:
            spot_pre = math.exp(s_pre)
            _, d_gamma, _ = dealer_delta_gamma(dealer_lines, p, step_new, t_new, spot_pre, sig_pre)
            phi = 0.01 * p.hedge_ratio * d_gamma * spot_pre * spot_pre * inv_d
        y, h_new, capped = s_pre, h_prev, False
        unwind = state[i].dealer_unwind if trading else 0.0
        if unwind != 0.0:
            state[i].dealer_unwind = 0.0
            if inv_d > 0.0:
                y, h_new, _, capped = clear_market(
                    s_pre, y_prev, h_prev, False, h_prev - unwind, dealer_lines, p, step_new, t_new, sigma_atm
                )
            else:
                h_new = h_prev - unwind
    clearing_move = y - s_pre
    state[i].i_perm += ps * clearing_move
    state[i].i_trans += (1.0 - ps) * clearing_move
    state[i].dealer_hedge = h_new
    return h_new - h_prev, phi, crisis or capped


@njit(cache=True, _nrt=False, inline="always")
def venue_dynamics(i, state, p, venues, key, step, dealer_flow, tau_f_prev, flow_perp=0.0, flow_future=0.0):
    """Phase 4 (MODEL.md §3–§4): transient impact decays by ``exp(-resilience dt)`` (Obizhaeva & Wang
    2013); the spot log-price is set; perp premium and futures basis follow exact OU updates and take
    the untransmitted share of the dealers' flow on their venue. Returns (new log-price, its price,
    crisis). With dealer cohorts, ``flow_perp`` and ``flow_future`` are their flows on those venues
    (each cohort's own venue mix)."""
    dt = p.dt
    state[i].i_trans *= p.resilience_decay
    y_new, crisis = impacted_log_price(i, state, p)
    state[i].log_spot = y_new
    spot_new = math.exp(y_new)
    state[i].spot = spot_new
    flow_usd = 0.01 * dealer_flow * spot_new
    premium = state[i].premium * p.premium_decay
    if p.premium_sd > 0.0:
        premium += p.premium_sd * step_normal(key, step, Z_PREMIUM)
    if p.cohorts_on:
        premium += (1.0 - venues[PERP, V_TRANSMISSION]) * 0.01 * flow_perp * spot_new * venues[PERP, V_INV_DEPTH]
    else:
        premium += (1.0 - venues[PERP, V_TRANSMISSION]) * p.mix_perp * flow_usd * venues[PERP, V_INV_DEPTH]
    state[i].premium = min(max(premium, -PREMIUM_BOUND), PREMIUM_BOUND)
    basis = p.basis_mean + (state[i].basis - p.basis_mean) * p.basis_decay
    if p.basis_sd > 0.0:
        basis += p.basis_sd * step_normal(key, step, Z_BASIS)
    if p.cohorts_on:
        basis += (
            (1.0 - venues[FUTURE, V_TRANSMISSION])
            * 0.01
            * flow_future
            * spot_new
            * venues[FUTURE, V_INV_DEPTH]
            / max(tau_f_prev, dt)
        )
    else:
        basis += (
            (1.0 - venues[FUTURE, V_TRANSMISSION])
            * p.mix_future
            * flow_usd
            * venues[FUTURE, V_INV_DEPTH]
            / max(tau_f_prev, dt)
        )
    state[i].basis = min(max(basis, -BASIS_BOUND), BASIS_BOUND)
    return y_new, spot_new, crisis


@njit(cache=True, _nrt=False, inline="always")
def hedge_and_cash(i, state, hedge, p, venues, mids_prev, spot_new, t, t_new, cash_before_interest):
    """Phase 5a: the hedge positions' P&L at the new mids, funding, carry and the cash account.

    Cash earns ``expm1(rate dt)`` over the step on its balance after the step's trades; perp and
    futures P&L is variation margin paid into cash; funding and the carry of margin capital are paid
    from it; a future at its expiry cash-settles at spot (its mark has converged to spot) and the next
    contract is listed. Returns (hedge_pnl, funding, carry, interest)."""
    dt = p.dt
    interest = cash_before_interest * p.rate_growth
    mids_new = venue_mids_at(state, i, p, spot_new)
    hedge_pnl = 0.0
    carry = 0.0
    # Without a cost of capital every venue's carry is +0 (finite positions and prices): not computed.
    charged = p.cost_of_capital != 0.0
    for v in range(N_VENUES):
        h = hedge[i, v]
        hedge_pnl += h * (mids_new[v] - mids_prev[v])
        if charged:
            carry += p.cost_of_capital * dt * venues[v, V_MARGIN] * abs(h) * mids_prev[v]
    interval = p.funding_interval
    # Without a perp position funding is a signed zero whatever the (non-negative) count of boundaries.
    n_funding = 0
    if hedge[i, PERP] != 0.0:
        n_funding = math.floor(t_new / interval + FUNDING_EPS) - math.floor(t / interval + FUNDING_EPS)
    funding_rate = min(max(state[i].premium + p.interest, -p.funding_cap), p.funding_cap)
    state[i].funding_rate = funding_rate
    funding = hedge[i, PERP] * mids_new[PERP] * funding_rate * n_funding
    variation = hedge[i, PERP] * (mids_new[PERP] - mids_prev[PERP]) + hedge[i, FUTURE] * (
        mids_new[FUTURE] - mids_prev[FUTURE]
    )
    state[i].cash += interest + variation - funding - carry
    if t_new >= state[i].future_expiry - EXPIRY_TOLERANCE:
        hedge[i, FUTURE] = 0.0
        state[i].future_expiry += p.future_roll
    return hedge_pnl, funding, carry, interest


@njit(cache=True, _nrt=False, inline="always")
def step_reward(pnl, cum_pnl, done, p):
    """Phase 6: the reward of a step's P&L (Kolm & Ritter 2019 mean-variance by default), in units
    of the book's notional scale. ``cum_pnl`` is the episode's P&L including this step's.

    The episode form telescopes ``C - (kappa/2) (C - m)^2`` over the cumulative P&L ``C`` (reference
    ``m``): ``r = x - (kappa/2) x^2 - kappa x (C_prev - m)``, the per-step form plus the cross term
    that makes the rewards' sum penalise the episode's variance, not the sum of squared steps."""
    scale = p.pnl_scale
    mode = p.reward_mode
    if mode == REWARD_MEAN_VARIANCE or mode == REWARD_EPISODE_MEAN_VARIANCE:
        x = pnl / scale
        r = x - 0.5 * p.risk_aversion * x * x
        if mode == REWARD_EPISODE_MEAN_VARIANCE and p.reward_reference_set:
            r -= p.risk_aversion * x * ((cum_pnl - pnl) - p.reward_reference) / scale
        return r
    if mode == REWARD_TERMINAL_PNL:
        return cum_pnl / scale if done else 0.0
    return pnl / scale


# ------------------------------------------------------------------------------------ second order
# The second-order market (README "The market model"): implied-vol dynamics (vanna), dealer cohorts and
# the perp's liquidation engine. Each phase runs only under its flag in ``params`` (read once per step);
# with every flag off :func:`step_body` runs the first-order step alone, and ``ext`` is never touched.
Z_IV = 7  # the ATM vol's shock: normal number 7 of the step (uniforms 14 and 15, unused before)
DELTA_RING = MAX_LAG + 1


@njit(cache=True, _nrt=False, inline="always")
def iv_base(i, state, p, key, step):
    """The ATM vol of the step before the price moves: ``ln sigma`` reverts at ``kappa`` toward
    ``ln((1 + vol_premium) sqrt((1 - w) v + w RV))`` and takes a shock ``vol_of_vol sqrt(dt) Z``."""
    w = p.iv_realised_weight
    level = (1.0 + p.vol_premium) * math.sqrt(max((1.0 - w) * state[i].v + w * state[i].realised_var, 0.0))
    level = min(max(level, p.vol_floor), p.iv_cap)
    log_vol = math.log(state[i].atm_vol)
    log_vol += p.iv_kappa * p.dt * (math.log(level) - log_vol)
    if p.iv_vol_of_vol > 0.0:
        log_vol += p.iv_vol_of_vol * math.sqrt(p.dt) * step_normal(key, step, Z_IV)
    return min(max(math.exp(log_vol), p.vol_floor), p.iv_cap)


@njit(cache=True, _nrt=False)
def dealer_book_greeks(lines, p, step, t, spot, sigma_atm):
    """(delta, gamma, sum of quantity x vanna x line vol, charm) of the dealers' lines live at step
    ``step``: the greeks of the flow decomposition (delta per unit of ln sigma_atm for the vanna).
    As in :func:`dealer_delta_gamma`, the call and the put of a strike side by side share one
    evaluation (gamma, vanna and charm are the same for both; their deltas differ by one)."""
    delta = 0.0
    gamma = 0.0
    vanna_vol = 0.0
    charm = 0.0
    last_strike = -1.0
    last_expiry = -1.0
    vol = call_d = put_d = g = va = ch = 0.0
    for j in range(lines.shape[0]):
        settled, strike, expiry, new_strike = line_at(lines, j, step, last_strike, last_expiry)
        if settled:
            continue
        if new_strike:
            vol = line_vol(p, sigma_atm, strike, spot)
            _, _, call_d, put_d, g, _, va, ch = strike_greeks(spot, strike, expiry - t, p.rate, vol, False, False)
            last_strike = strike
            last_expiry = expiry
        q = lines[j, L_QUANTITY]
        delta += q * (call_d if lines[j, L_IS_CALL] == CALL else put_d)
        gamma += q * g
        vanna_vol += q * va * vol
        charm += q * ch
    return delta, gamma, vanna_vol, charm


@njit(cache=True, _nrt=False)
def clearing_cohorts(i, state, ext, p, dealer_lines, halted, step_new, t_new, y_prev, sigma_atm):
    """Phase 3 with dealer cohorts: each cohort on its schedule step trades to ``-hr_c share_c Delta``,
    Delta at the clearing price (lag 0) or from ``lag`` steps ago (the ring of past deltas), when
    that is beyond its band; all of them clear together (:func:`clear_market`, the lag-0 cohorts'
    delta at the clearing price). An expiring line's hedge is traded away in its settlement step's
    clearing. Returns (flow, perp flow, future flow, phi, crisis, crowded, any traded)."""
    x = ext[i]
    ps = p.permanent_share
    s_pre, crisis = impacted_log_price(i, state, p)
    trading = (not halted) and dealer_lines.shape[0] > 0
    spot_pre = math.exp(s_pre)
    sig_pre = sigma_atm
    if p.iv_dynamics:
        sig_pre = iv_at(p, sigma_atm, s_pre - y_prev)[0]
    delta_pre = 0.0
    gamma_pre = 0.0
    if dealer_lines.shape[0] > 0:
        delta_pre, gamma_pre, _ = dealer_delta_gamma(dealer_lines, p, step_new, t_new, spot_pre, sig_pre)
    phi = 0.01 * p.dealer_hedge_ratio_eff * gamma_pre * spot_pre * spot_pre * p.dealer_inv_depth_eff
    a = 0.0
    c0 = 0.0
    mask = 0
    for c in range(p.n_cohorts):
        if not trading or step_new % p.cohort_every[c] != p.cohort_offset[c]:
            continue
        share = p.cohort_share[c]
        hr = p.cohort_hedge_ratio[c]
        lag = p.cohort_lag[c]
        hc = x.cohort_hedge[c]
        past = delta_pre if lag == 0 else x.delta_ring[(step_new - lag) % DELTA_RING]
        target = -hr * share * past
        if abs(target - hc) <= p.cohort_band[c] * share * p.dealer_gross:
            continue
        mask |= 1 << c
        inv_c = p.cohort_inv_depth[c]
        if lag == 0:
            a += hr * share * inv_c
            c0 -= inv_c * hc
        else:
            c0 += inv_c * (target - hc)
    y = s_pre
    capped = False
    delta_y = delta_pre
    if mask != 0 and (a != 0.0 or c0 != 0.0):
        y, d_root, phi_c, capped = clear_market(
            s_pre, y_prev, 0.0, a != 0.0, 0.0, dealer_lines, p, step_new, t_new, sigma_atm, y_prev, a, c0, True
        )
        if a != 0.0:
            delta_y = d_root
        elif dealer_lines.shape[0] > 0:
            sig_y = iv_at(p, sigma_atm, y - y_prev)[0] if p.iv_dynamics else sigma_atm
            delta_y = dealer_delta_gamma(dealer_lines, p, step_new, t_new, math.exp(y), sig_y)[0]
    flow = 0.0
    flow_perp = 0.0
    flow_future = 0.0
    n_buy = 0
    n_sell = 0
    for c in range(p.n_cohorts):
        if not (mask >> c) & 1:
            continue
        lag = p.cohort_lag[c]
        past = delta_y if lag == 0 else x.delta_ring[(step_new - lag) % DELTA_RING]
        h_new = -p.cohort_hedge_ratio[c] * p.cohort_share[c] * past
        fl = h_new - x.cohort_hedge[c]
        x.cohort_hedge[c] = h_new
        flow += fl
        flow_perp += p.cohort_mix_perp[c] * fl
        flow_future += p.cohort_mix_future[c] * fl
        if fl > 0.0:
            n_buy += 1
        elif fl < 0.0:
            n_sell += 1
    x.delta_ring[step_new % DELTA_RING] = delta_y
    clearing_move = y - s_pre
    state[i].i_perm += ps * clearing_move
    state[i].i_trans += (1.0 - ps) * clearing_move
    state[i].dealer_hedge += flow
    return flow, flow_perp, flow_future, phi, crisis or capped, max(n_buy, n_sell) >= 2, mask != 0


@njit(cache=True, _nrt=False)
def liquidation_cascade(i, state, ext, p, venues):
    """The perp's liquidation engine after the clearing: every leveraged bucket whose liquidation
    price the perp mark has reached is closed by a market order on the perp (execution as for any
    perp order; its push reaches spot by the perp's transmission, the rest moves the premium), which
    moves the mark toward the next bucket: rounds repeat until no new bucket is reached. What margin
    is left at execution goes to the insurance fund, a shortfall is paid from it; when the fund cannot
    pay, the rest of the position is auto-deleveraged: opposite positions of the same size are closed
    off the book, pro rata. Returns (long USD liquidated, short USD liquidated, rounds, ADL events)."""
    x = ext[i]
    ps = p.permanent_share
    tr = venues[PERP, V_TRANSMISSION]
    inv = venues[PERP, V_INV_DEPTH]
    half_spread = venues[PERP, V_HALF_SPREAD]
    eta = venues[PERP, V_ETA]
    nl = int(x.next_long)
    ns = int(x.next_short)
    long_usd = 0.0
    short_usd = 0.0
    rounds = 0
    adl = 0
    while nl < p.liq_n_long or ns < p.liq_n_short:
        y = clamp_log_price(state[i].x + state[i].i_perm + state[i].i_trans, p)
        mid = math.exp(y) * (1.0 + min(max(state[i].premium, -PREMIUM_BOUND), PREMIUM_BOUND))
        scale_l = x.scale_long
        scale_s = x.scale_short
        coins_l = cost_l = margin_l = 0.0
        coins_s = cost_s = margin_s = 0.0
        while nl < p.liq_n_long and mid <= p.liq_long_price[nl]:
            coins_l += p.liq_long_coins[nl] * scale_l
            cost_l += p.liq_long_cost[nl] * scale_l
            margin_l += p.liq_long_margin[nl] * scale_l
            nl += 1
        while ns < p.liq_n_short and mid >= p.liq_short_price[ns]:
            coins_s += p.liq_short_coins[ns] * scale_s
            cost_s += p.liq_short_cost[ns] * scale_s
            margin_s += p.liq_short_margin[ns] * scale_s
            ns += 1
        if coins_l == 0.0 and coins_s == 0.0:
            break
        rounds += 1
        q = coins_s - coins_l  # longs are sold, shorts bought back
        impact = eta * 0.01 * q * mid * inv
        fund = x.fund
        for side in range(2):
            coins = coins_l if side == 0 else coins_s
            if coins == 0.0:
                continue
            if side == 0:
                execution = mid * (1.0 - half_spread + impact)
                equity = margin_l + coins * execution - cost_l
                long_usd += coins * mid
            else:
                execution = mid * (1.0 + half_spread + impact)
                equity = margin_s - coins * execution + cost_s
                short_usd += coins * mid
            fund += equity
            if fund < 0.0:
                # The fund is empty: the opposite side's positions take over the bankrupt ones.
                fund = 0.0
                adl += 1
                x.adl_usd += coins * mid
                if side == 0 and ns < p.liq_n_short:
                    left = p.liq_short_tail[ns] * x.scale_short
                    x.scale_short *= max(1.0 - coins / left, 0.0) if left > 0.0 else 0.0
                elif side == 1 and nl < p.liq_n_long:
                    left = p.liq_long_tail[nl] * x.scale_long
                    x.scale_long *= max(1.0 - coins / left, 0.0) if left > 0.0 else 0.0
        x.fund = fund
        push = 0.01 * q * mid * inv
        state[i].i_perm += ps * tr * push
        state[i].i_trans += (1.0 - ps) * tr * push
        state[i].premium += (1.0 - tr) * push
    x.next_long = nl
    x.next_short = ns
    return long_usd, short_usd, rounds, adl


@njit(cache=True, _nrt=False)
def second_order_measures(
    i,
    state,
    ext,
    p,
    dealer_lines,
    step_new,
    t_new,
    spot_prev,
    spot_new,
    sigma_prev,
    sigma_new,
    flow,
    ret,
    crowded,
    traded,
):
    """The second-order measures of the step into ``ext``: the dealers' flow split into the gamma,
    vanna and charm parts of the continuously hedged demand, ``-hr (Gamma dS + V_sigma d ln sigma_atm
    + charm dt)`` with the book's greeks at the start of the step (V_sigma: delta per unit of
    ln sigma_atm), and the rest; the vanna feedback psi; crowding; the returns' autocorrelation sums;
    the liquidation run."""
    x = ext[i]
    hr = p.dealer_hedge_ratio_eff
    f_gamma = -hr * x.d_gamma * (spot_new - spot_prev)
    f_vanna = -hr * x.d_vanna_vol * (math.log(sigma_new) - math.log(sigma_prev))
    f_charm = -hr * x.d_charm * p.dt
    f_other = flow - f_gamma - f_vanna - f_charm
    x.flow_gamma = f_gamma
    x.flow_vanna = f_vanna
    x.flow_charm = f_charm
    x.flow_other = f_other
    x.sum_flow_gamma_usd += abs(f_gamma) * spot_new
    x.sum_flow_vanna_usd += abs(f_vanna) * spot_new
    x.sum_flow_charm_usd += abs(f_charm) * spot_new
    x.sum_flow_other_usd += abs(f_other) * spot_new
    _, gamma, vanna_vol, charm = dealer_book_greeks(dealer_lines, p, step_new, t_new, spot_new, sigma_new)
    x.d_gamma = gamma
    x.d_vanna_vol = vanna_vol
    x.d_charm = charm
    psi = 0.0
    if p.iv_dynamics:
        psi = 0.01 * hr * p.dealer_inv_depth_eff * p.iv_beta * vanna_vol * spot_new
    x.phi_vanna = psi
    x.sum_phi_vanna += psi
    x.crowded = 1.0 if crowded else 0.0
    x.crowded_steps += 1.0 if crowded else 0.0
    x.cohort_trade_steps += 1.0 if traded else 0.0
    x.max_atm_vol = max(x.max_atm_vol, sigma_new)
    for lag in range(1, N_AUTOCORR_LAGS + 1):
        if step_new - lag >= 1:
            x.sum_rr[lag - 1] += ret * x.ret_ring[(step_new - lag) % N_AUTOCORR_LAGS]
    x.ret_ring[step_new % N_AUTOCORR_LAGS] = ret
    liquidated = x.liq_long_usd + x.liq_short_usd
    x.sum_liq_long_usd += x.liq_long_usd
    x.sum_liq_short_usd += x.liq_short_usd
    x.adl_events += x.adl_events_step
    x.max_rounds = max(x.max_rounds, x.liq_rounds)
    if liquidated > 0.0:
        x.liq_steps += 1.0
        x.run += 1.0
        x.max_run = max(x.max_run, x.run)
    else:
        x.run = 0.0


@njit(cache=True, _nrt=False)
def reset_second_order(i, state, ext, p, dealer_lines, spot, sigma_atm):
    """The second-order state of a fresh episode (``ext[i]`` zeroed by :func:`reset_row`): the book's
    greeks, the cohorts' hedges at ``-hr_c share_c Delta_0`` (their past deltas all Delta_0), the
    liquidation engine at its first buckets with the insurance fund full."""
    x = ext[i]
    delta, gamma, vanna_vol, charm = dealer_book_greeks(dealer_lines, p, 0, 0.0, spot, sigma_atm)
    x.d_gamma = gamma
    x.d_vanna_vol = vanna_vol
    x.d_charm = charm
    x.max_atm_vol = sigma_atm
    x.scale_long = 1.0
    x.scale_short = 1.0
    x.fund = p.liq_fund0
    if p.cohorts_on:
        total = 0.0
        for c in range(p.n_cohorts):
            h = -p.cohort_hedge_ratio[c] * p.cohort_share[c] * delta
            x.cohort_hedge[c] = h
            total += h
        for k in range(DELTA_RING):
            x.delta_ring[k] = delta
        state[i].dealer_hedge = total
        state[i].dealer_hold = 0.0
        state[i].gex = 0.01 * p.dealer_hedge_ratio_eff * gamma * spot * spot
        state[i].phi = state[i].gex * p.dealer_inv_depth_eff


# ------------------------------------------------------------------------------------ step
@njit(cache=True, _nrt=False, inline="always")
def step_body(i, state, hedge, keys, trades, p, venues, dealer_lines, agent_lines, out, ext):
    """Advance row ``i`` by one step (MODEL.md §1, items 1-6), phase by phase. See the module docstring.
    Inlined into :func:`step_serial`; :func:`step_row` is the same step as a function of its own.

    The second-order market's phases (README "The market model") run under their flags: the ATM vol's
    own dynamics (``iv_dynamics``), the cohorts' clearing (``cohorts_on``), the liquidation cascade
    (``liquidations``), and the measures into ``ext`` (``second_order``)."""
    dt = p.dt
    step = int(state[i].step)
    step_new = step + 1
    t = step * dt
    t_new = step_new * dt
    key = keys[i]
    halted = state[i].halt_left > 0.0
    y_prev = state[i].log_spot
    x_prev = state[i].x
    tau_f_prev = max(state[i].future_expiry - t, 0.0)

    mids_prev = venue_mids(state, i, p)
    fees, slippage, notional, n_trades = agent_trades(i, state, hedge, trades, p, venues, halted, mids_prev, out)
    cash_after_trades = state[i].cash
    x_new = exogenous_move(i, state, p, key, step)
    second_order = p.second_order
    sigma_prev = state[i].atm_vol
    if p.iv_dynamics:
        sigma_atm = iv_base(i, state, p, key, step)
    else:
        sigma_atm = atm_vol(p, state[i].v)
    crowded = False
    cohorts_traded = False
    flow_perp = 0.0
    flow_future = 0.0
    if p.cohorts_on:
        dealer_flow, flow_perp, flow_future, phi, crisis, crowded, cohorts_traded = clearing_cohorts(
            i, state, ext, p, dealer_lines, halted, step_new, t_new, y_prev, sigma_atm
        )
    else:
        dealer_flow, phi, crisis = clearing(i, state, p, dealer_lines, halted, step_new, t_new, y_prev, sigma_atm)
    if p.liquidations:
        long_usd, short_usd, rounds, adl = liquidation_cascade(i, state, ext, p, venues)
        ext[i].liq_long_usd = long_usd
        ext[i].liq_short_usd = short_usd
        ext[i].liq_rounds = rounds
        ext[i].adl_events_step = adl
    y_new, spot_new, band_hit = venue_dynamics(
        i, state, p, venues, key, step, dealer_flow, tau_f_prev, flow_perp, flow_future
    )
    crisis = crisis or band_hit
    if p.iv_dynamics:
        # The ATM vol of the step's close: it moved with the whole step's return (spot_beta).
        sigma_atm = iv_at(p, sigma_atm, y_new - y_prev)[0]
    state[i].t = t_new
    state[i].step = step_new
    hedge_pnl, funding, carry, interest = hedge_and_cash(
        i, state, hedge, p, venues, mids_prev, spot_new, t, t_new, cash_after_trades
    )

    # Circuit breaker.
    ret = y_new - y_prev
    if halted:
        state[i].halt_left -= 1.0
        state[i].halt_steps += 1.0
    elif p.breaker and abs(ret) > p.halt_threshold:
        state[i].halt_left = p.halt_steps

    # Phase 5b: the book, marked at the new price; settling lines pay into cash.
    value_prev = state[i].book_value
    payoff = mark_book(state, i, agent_lines, p, step_new, t_new, spot_new, sigma_atm)
    state[i].cash += payoff
    book_pnl = payoff + state[i].book_value - value_prev
    pnl = book_pnl + hedge_pnl - fees - slippage - funding - carry + interest

    done = step_new >= p.episode_steps
    terminated = done and p.terminates
    truncated = done and not terminated
    state[i].cum_pnl += pnl
    reward = step_reward(pnl, state[i].cum_pnl, done, p)

    # Phase 7: accumulators and the step's outputs.
    exo_ret = x_new - x_prev
    inv_d = p.dealer_inv_depth_eff if p.cohorts_on else p.dealer_inv_depth
    if inv_d > 0.0:
        gex = phi / inv_d
    elif dealer_lines.shape[0] == 0:
        gex = 0.0
    else:
        # Infinite depth: phi is 0 whatever the book; report the book's GEX anyway.
        _, d_gamma, _ = dealer_delta_gamma(dealer_lines, p, step_new, t_new, spot_new, sigma_atm)
        gex = 0.01 * (p.dealer_hedge_ratio_eff if p.cohorts_on else p.hedge_ratio) * d_gamma * spot_new * spot_new
    state[i].phi = phi
    state[i].gex = gex
    state[i].atm_vol = sigma_atm
    state[i].crisis = 1.0 if crisis else 0.0
    state[i].last_return = ret
    state[i].realised_var += p.realised_var_weight * (ret * ret / dt - state[i].realised_var)
    state[i].cum_book_pnl += book_pnl
    state[i].cum_hedge_pnl += hedge_pnl
    state[i].cum_fees += fees
    state[i].cum_slippage += slippage
    state[i].cum_funding += funding
    state[i].cum_carry += carry
    state[i].cum_interest += interest
    state[i].turnover_usd += notional
    state[i].n_trades += n_trades
    state[i].sum_r2 += ret * ret
    state[i].sum_x2 += exo_ret * exo_ret
    state[i].sum_phi += phi
    state[i].crisis_steps += 1.0 if crisis else 0.0
    state[i].cum_reward += reward
    if second_order:
        second_order_measures(
            i,
            state,
            ext,
            p,
            dealer_lines,
            step_new,
            t_new,
            mids_prev[SPOT],
            spot_new,
            sigma_prev,
            sigma_atm,
            dealer_flow,
            ret,
            crowded,
            cohorts_traded,
        )

    out[i, O_PNL] = pnl
    out[i, O_BOOK_PNL] = book_pnl
    out[i, O_HEDGE_PNL] = hedge_pnl
    out[i, O_FEES] = fees
    out[i, O_SLIPPAGE] = slippage
    out[i, O_FUNDING] = funding
    out[i, O_CARRY] = carry
    out[i, O_INTEREST] = interest
    out[i, O_REWARD] = reward
    out[i, O_PHI] = phi
    out[i, O_GEX] = gex
    out[i, O_CRISIS] = 1.0 if crisis else 0.0
    out[i, O_HALTED] = 1.0 if halted else 0.0
    out[i, O_NOTIONAL] = notional
    out[i, O_SPOT] = spot_new
    # Without impact the spot log-price is the exogenous one, and so is its exp. The exp reads X back
    # from the state: of ``math.exp(x_new)`` LLVM made an exp on every step and a select.
    out[i, O_EXO_SPOT] = spot_new if x_new == y_new else math.exp(state[i].x)
    out[i, O_TERMINATED] = 1.0 if terminated else 0.0
    out[i, O_TRUNCATED] = 1.0 if truncated else 0.0
    out[i, O_DEALER_FLOW] = dealer_flow
    out[i, O_RETURN] = ret
    out[i, O_EXO_RETURN] = exo_ret


@njit(cache=True, _nrt=False)
def step_row(i, state, hedge, keys, trades, p, venues, dealer_lines, agent_lines, out, ext):
    """Advance row ``i`` by one step: :func:`step_body`, compiled once as a function of its own (the
    parallel kernel calls it per row)."""
    step_body(i, state, hedge, keys, trades, p, venues, dealer_lines, agent_lines, out, ext)


@njit(cache=True, _nrt=False)
def step_serial(state, hedge, keys, trades, params, venues, dealer_lines, agent_lines, out, ext):
    """Step every row, single-threaded: the step inlined into the loop over rows (what the
    evaluation's rollout runs on each block of rows)."""
    p = params[0]
    for i in range(state.shape[0]):
        step_body(i, state, hedge, keys, trades, p, venues, dealer_lines, agent_lines, out, ext)


@njit(cache=True, parallel=True, _nrt=False)
def step_parallel(state, hedge, keys, trades, params, venues, dealer_lines, agent_lines, out, ext):
    """Step every row, rows spread over threads (same results as :func:`step_serial`)."""
    # The record is taken inside the loop: numba's parallel lowering cannot pass a record variable
    # from outside a prange into its body.
    for i in prange(state.shape[0]):
        step_row(i, state, hedge, keys, trades, params[0], venues, dealer_lines, agent_lines, out, ext)


# ------------------------------------------------------------------------------------ actions
ACTION_TRADE, ACTION_TARGET, ACTION_DELTA = 0, 1, 2
# A trade within this fraction of the quantities it was computed from is rounding, not an order:
# a target already reached, a delta gap already closed.
HOLD_TOLERANCE = 1e-12


@njit(cache=True, _nrt=False, inline="always")
def future_enabled(enabled):
    """Whether the futures venue is among the enabled venues ``enabled``."""
    found = False
    for j in range(enabled.shape[0]):
        found = found or enabled[j] == FUTURE
    return found


@njit(cache=True, _nrt=False, inline="always")
def actions_to_trades_row(i, actions, enabled, futures, mode, max_trade, min_trade, state, hedge, p, trades):
    """Row ``i`` of :func:`actions_to_trades_rows` (``futures``: :func:`future_enabled` of ``enabled``),
    for a caller that steps its own rows."""
    n_enabled = enabled.shape[0]
    # exp(r (T_f - t)) only where it is read: a futures venue, or a futures position in the gap
    # (otherwise the gap's term is 0 x a finite positive number, 0 either way: |r| <= 1 and
    # T_f - t <= 10 years).
    fut_delta = future_delta(state, i, p) if futures or hedge[i, FUTURE] != 0.0 else 1.0
    gap = 0.0
    if mode == ACTION_DELTA:
        net = state[i].book_delta + hedge[i, SPOT] + hedge[i, PERP] + hedge[i, FUTURE] * fut_delta
        gap = net / n_enabled
    for v in range(N_VENUES):
        trades[i, v] = 0.0
    for j in range(n_enabled):
        v = enabled[j]
        q = actions[i, j] * max_trade
        if mode == ACTION_DELTA:
            q -= gap
            if abs(q) <= HOLD_TOLERANCE * max(abs(gap), max_trade):
                q = 0.0
        if v == FUTURE:
            q /= fut_delta
        if mode == ACTION_TARGET:
            q -= hedge[i, v]
            if abs(q) <= HOLD_TOLERANCE * max(abs(hedge[i, v]), max_trade):
                q = 0.0
        coins = abs(q) * fut_delta if v == FUTURE else abs(q)
        trades[i, v] = 0.0 if coins < min_trade else q


@njit(cache=True, _nrt=False)
def actions_to_trades_rows(actions, enabled, mode, max_trade, min_trade, state, hedge, params, trades):
    """Map actions ``[N, n_enabled]`` to trades ``[N, 3]`` (see ``Market.actions_to_trades``).

    One call for all rows: at N = 1 the NumPy version of this mapping cost three times the step.
    A trade that differs from a hold only by rounding (target reached, delta gap cancelled) is a hold.
    """
    p = params[0]
    futures = future_enabled(enabled)
    for i in range(actions.shape[0]):
        actions_to_trades_row(i, actions, enabled, futures, mode, max_trade, min_trade, state, hedge, p, trades)


# ------------------------------------------------------------------------------------ observation
_GAMMA_MOVE = OBS_UNIT["book_gamma"]
_VANNA_MOVE = OBS_UNIT["book_vanna"]
_PREMIUM_UNIT = OBS_UNIT["perp_premium"]
_FUNDING_UNIT = OBS_UNIT["funding_rate"]
_BASIS_UNIT = OBS_UNIT["futures_basis"]
_PNL_TO_DATE_UNIT = 10.0


@njit(cache=True, _nrt=False, inline="always")
def observe_row(i, state, hedge, p, obs):
    """Write row i's observation (float32, every entry clipped to +-OBS_BOUND), in the order and with
    the scales of ``layout.OBSERVATION``."""
    gross = p.book_gross
    sigma = p.sigma
    dt = p.dt
    n_steps = p.episode_steps
    spot = state[i].spot
    fut_delta = future_delta(state, i, p)
    net = state[i].book_delta + hedge[i, SPOT] + hedge[i, PERP] + hedge[i, FUTURE] * fut_delta
    values = (
        (n_steps - state[i].step) / n_steps,
        math.log(spot / p.book_centre) / (sigma * math.sqrt(n_steps * dt)),
        state[i].book_delta / gross,
        state[i].book_gamma * spot * _GAMMA_MOVE / gross,
        state[i].book_vanna * _VANNA_MOVE / gross,
        state[i].book_charm * dt / gross,
        hedge[i, SPOT] / gross,
        hedge[i, PERP] / gross,
        hedge[i, FUTURE] * fut_delta / gross,
        net / gross,
        state[i].last_return / (sigma * math.sqrt(dt)),
        math.sqrt(max(state[i].realised_var, 0.0)) / sigma,
        state[i].atm_vol / sigma,
        state[i].premium / _PREMIUM_UNIT,
        state[i].funding_rate / _FUNDING_UNIT,
        state[i].basis / _BASIS_UNIT,
        state[i].phi,
        state[i].crisis,
        1.0 if state[i].halt_left > 0.0 else 0.0,
        state[i].cum_pnl / (_PNL_TO_DATE_UNIT * p.pnl_scale),
    )
    for j in range(len(values)):
        obs[i, j] = min(max(values[j], -OBS_BOUND), OBS_BOUND)


@njit(cache=True, _nrt=False)
def observe_rows(state, hedge, params, obs):
    """Observation of every row into ``obs[N, OBS_DIM]``."""
    p = params[0]
    for i in range(state.shape[0]):
        observe_row(i, state, hedge, p, obs)
