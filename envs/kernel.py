"""The market kernel: one numba step advances N envs over the struct-of-arrays state.

Implements MODEL.md §1–§6 in its order. Each env (row ``i``) advances from ``t_k`` to ``t_k + dt``:

1–2. The agent's trades ``trades[i, v]`` (coins; future: contracts) execute at
     ``mid (1 + sign(q) half_spread + eta 0.01 q mid / D_v)``, pay ``fee |q| exec``, and push the
     venue's log-price by ``0.01 q mid / D_v``: the share ``transmission`` reaches spot (split into
     permanent and transient impact), the rest moves the perp premium or the futures basis.
3.   The exogenous log-price moves: GBM or Heston variance, plus Merton jumps.
4.   Market clearing with the background dealers (Frey & Stremme 1997; Sircar & Papanicolaou
     1998; Schönbucher & Wilmott 2000): solve
     ``y = s_pre + 0.01 (e^y / D_eff) (H_D(e^y) - H_D,k)``, ``H_D(S) = -hedge_ratio Delta_D(t, S)``
     by Newton on the log-price ``y`` from ``s_pre`` (``f'(y) ~ 1 + phi``, plus the smile's share),
     with a bracketed bisection fallback. Linearised, a step's return is ``x / (1 + phi)``,
     ``phi = GEX_D / D_eff``. Where ``1 + phi <= phi_floor`` (or no root exists) the move is capped
     at ``x / phi_floor`` and the step is flagged ``liquidity_crisis``.
5.   Transient impact decays by ``exp(-resilience dt)`` (Obizhaeva & Wang 2013); perp premium and
     futures basis follow exact OU updates; funding is paid at each ``funding_interval`` boundary
     (``position * mark * clamp(premium + interest, -cap, cap)``, longs pay when positive); a
     future at its expiry cash-settles at spot and the next contract is listed.
6.   The agent's book is marked to model (BSM with the smile), lines at expiry settle in cash at
     intrinsic value, and the step P&L and reward are booked.

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

from hedgegym.envs.greeks import _MIN_TOTAL_VOL, norm_cdf, norm_pdf
from hedgegym.envs.layout import (
    FUTURE,
    L_EXPIRY,
    L_IS_CALL,
    L_QUANTITY,
    L_STRIKE,
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
    P_AGENT_IMPACT,
    P_BASIS_MEAN,
    P_BASIS_SPEED,
    P_BASIS_VOL,
    P_BOOK_CENTRE,
    P_BOOK_GROSS,
    P_BREAKER,
    P_COST_OF_CAPITAL,
    P_DEALER_INV_DEPTH,
    P_DT,
    P_EPISODE_STEPS,
    P_FUNDING_CAP,
    P_FUNDING_INTERVAL,
    P_FUTURE_EXPIRY,
    P_FUTURE_ROLL,
    P_HALT_STEPS,
    P_HALT_THRESHOLD,
    P_HEDGE_RATIO,
    P_HESTON,
    P_INITIAL_DELTA_HEDGE,
    P_INTEREST,
    P_JUMP_INTENSITY,
    P_JUMP_MEAN,
    P_JUMP_STD,
    P_JUMPS,
    P_KAPPA_V,
    P_MIX_FUTURE,
    P_MIX_PERP,
    P_MU,
    P_NEWTON_ITERATIONS,
    P_PERMANENT_SHARE,
    P_PHI_FLOOR,
    P_PNL_SCALE,
    P_PREMIUM_SPEED,
    P_PREMIUM_VOL,
    P_RATE,
    P_REBALANCE_EVERY,
    P_RESILIENCE,
    P_REWARD_MODE,
    P_RHO_SV,
    P_RISK_AVERSION,
    P_SIGMA,
    P_SKEW,
    P_SMILE,
    P_SPOT0,
    P_TERMINATES,
    P_THETA_V,
    P_V0,
    P_VOL_FLOOR,
    P_VOL_PREMIUM,
    P_XI,
    PERP,
    REWARD_MEAN_VARIANCE,
    REWARD_TERMINAL_PNL,
    S_ATM_VOL,
    S_BASIS,
    S_BOOK_CHARM,
    S_BOOK_DELTA,
    S_BOOK_GAMMA,
    S_BOOK_SETTLED,
    S_BOOK_VALUE,
    S_BOOK_VANNA,
    S_BOOK_VEGA,
    S_CRISIS,
    S_CRISIS_STEPS,
    S_CUM_BOOK_PNL,
    S_CUM_CARRY,
    S_CUM_FEES,
    S_CUM_FUNDING,
    S_CUM_HEDGE_PNL,
    S_CUM_PNL,
    S_CUM_REWARD,
    S_CUM_SLIPPAGE,
    S_DEALER_HEDGE,
    S_FUNDING_RATE,
    S_FUTURE_EXPIRY,
    S_GEX,
    S_HALT_LEFT,
    S_HALT_STEPS,
    S_I_PERM,
    S_I_TRANS,
    S_LAST_RETURN,
    S_LOG_SPOT,
    S_N_TRADES,
    S_PHI,
    S_PREMIUM,
    S_REALISED_VAR,
    S_STEP,
    S_SUM_PHI,
    S_SUM_R2,
    S_SUM_X2,
    S_T,
    S_TURNOVER_USD,
    S_V,
    S_X,
    S_X0,
    SPOT,
    V_ENABLED,
    V_ETA,
    V_FEE,
    V_HALF_SPREAD,
    V_INV_DEPTH,
    V_MARGIN,
    V_TRANSMISSION,
)

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
# A line (or future) whose expiry is within this many years (~30 us) of the clock has expired: the
# clock is a sum of dt's, so it lands on an expiry only up to rounding, and dealers, the agent's
# book and the future must all see the expiry at the same step whichever way the rounding went.
EXPIRY_TOLERANCE = 1e-12
# Log-prices stay within ln(spot0) +- LOG_PRICE_BAND (a factor e^50 ~ 5e21 either way), a numerical
# guard far outside any meaningful path: a capped crisis step multiplies a large jump by
# 1/phi_floor, and coin-sized trades at the price that results push it further still, until exp()
# overflows or underflows to 0 and `strike / spot` raises ZeroDivisionError inside the kernel.
LOG_PRICE_BAND = 50.0


@njit(cache=True)
def mix64(z):
    """SplitMix64 finaliser (Steele, Lea & Flood 2014): a bijective 64-bit avalanche mix."""
    z = (z ^ (z >> _SH30)) * _MIX1
    z = (z ^ (z >> _SH27)) * _MIX2
    return z ^ (z >> _SH31)


@njit(cache=True)
def episode_key(seed, episode):
    """Random key of episode ``episode`` of the stream seeded ``seed`` (both uint64)."""
    return mix64(mix64(seed * _SEED_SALT + _GOLDEN) ^ (episode * _GOLDEN + _MIX1))


@njit(cache=True)
def uniform(key, counter):
    """U(0, 1), never 0 or 1: the counter-th draw of ``key`` (SplitMix64 at position counter)."""
    h = mix64(key + (counter + np.uint64(1)) * _GOLDEN)
    return (float(h >> _SH11) + 0.5) * _TWO_POW_M53


@njit(cache=True)
def normal(key, counter):
    """N(0, 1) by Box–Muller from draws ``2 counter`` and ``2 counter + 1``."""
    u1 = uniform(key, np.uint64(2) * counter)
    u2 = uniform(key, np.uint64(2) * counter + np.uint64(1))
    return math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2)


# The step's normal shocks by their index among its normals; the jump count's uniform is uniform
# number 12 of the step, after the five normals' ten.
Z_PRICE, Z_VAR, Z_JUMP, Z_PREMIUM, Z_BASIS = 0, 1, 2, 3, 4
U_JUMP_COUNT = 12


@njit(cache=True)
def step_normal(key, step, which):
    """Normal shock ``which`` (``Z_*``) of step ``step``: each is drawn only where the model uses it."""
    return normal(key, np.uint64(step) * np.uint64(SHOCKS_PER_STEP // 2) + np.uint64(which))


@njit(cache=True)
def step_uniform(key, step, which):
    """Uniform shock ``which`` (``U_*``) of step ``step``."""
    return uniform(key, np.uint64(step) * np.uint64(SHOCKS_PER_STEP) + np.uint64(which))


@njit(cache=True)
def draw_shocks(key, step):
    """All the step's shocks (z_price, z_var, u_jump_count, z_jump, z_premium, z_basis)."""
    return (step_normal(key, step, Z_PRICE), step_normal(key, step, Z_VAR), step_uniform(key, step, U_JUMP_COUNT),
            step_normal(key, step, Z_JUMP), step_normal(key, step, Z_PREMIUM), step_normal(key, step, Z_BASIS))


@njit(cache=True)
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
@njit(cache=True)
def atm_vol(params, variance):
    """sigma_atm = sqrt(v) (1 + vol_premium), floored (MODEL.md §5)."""
    v = math.sqrt(max(variance, 0.0)) * (1.0 + params[P_VOL_PREMIUM])
    return max(v, params[P_VOL_FLOOR])


@njit(cache=True)
def line_vol_and_slope(params, sigma_atm, strike, spot):
    """Implied vol of a line from the sticky-moneyness smile (MODEL.md §5) and its slope
    d vol / d ln S (0 on the floor), which the clearing's Newton derivative needs."""
    m = math.log(strike / spot)
    v = sigma_atm * (1.0 + params[P_SKEW] * m + params[P_SMILE] * m * m)
    if v > params[P_VOL_FLOOR]:
        return v, -sigma_atm * (params[P_SKEW] + 2.0 * params[P_SMILE] * m)
    return params[P_VOL_FLOOR], 0.0


@njit(cache=True)
def line_vol(params, sigma_atm, strike, spot):
    """Implied vol of a line from the sticky-moneyness smile, MODEL.md §5."""
    return line_vol_and_slope(params, sigma_atm, strike, spot)[0]


@njit(cache=True)
def strike_delta_gamma(spot, strike, tau, rate, vol):
    """(call delta, put delta, gamma, vanna) at one strike and expiry, bit for bit as ``line_greeks``
    gives them.

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
    d1 = (math.log(spot / strike) + (rate + 0.5 * vol * vol) * tau) / total_vol
    pdf = norm_pdf(d1)
    call_delta = norm_cdf(d1)
    return call_delta, call_delta - 1.0, pdf / (spot * total_vol), -pdf * (d1 - total_vol) / vol


@njit(cache=True)
def strike_greeks(spot, strike, tau, rate, vol):
    """(call price, put price, call delta, put delta, gamma, vega, vanna, charm) at one strike and
    expiry, bit for bit as ``line_greeks`` gives them for the call and the put.

    The call and the put of a strike share d1, the density and four greeks; computed together
    they cost four ``erfc`` calls instead of six, and one logarithm instead of two.
    """
    if tau <= 0.0:
        tau = 0.0
    total_vol = vol * math.sqrt(tau)
    disc_strike = strike * math.exp(-rate * tau)
    if total_vol < _MIN_TOTAL_VOL:
        call_itm = spot > disc_strike
        put_itm = spot < disc_strike
        return ((spot - disc_strike if call_itm else 0.0), (disc_strike - spot if put_itm else 0.0),
                (1.0 if call_itm else 0.0), (-1.0 if put_itm else 0.0), 0.0, 0.0, 0.0, 0.0)
    d1 = (math.log(spot / strike) + (rate + 0.5 * vol * vol) * tau) / total_vol
    d2 = d1 - total_vol
    pdf = norm_pdf(d1)
    gamma = pdf / (spot * total_vol)
    vega = spot * pdf * math.sqrt(tau)
    vanna = -pdf * d2 / vol
    charm = -pdf * (2.0 * rate * tau - d2 * total_vol) / (2.0 * tau * total_vol)
    call_delta = norm_cdf(d1)
    call = spot * call_delta - disc_strike * norm_cdf(d2)
    put = disc_strike * norm_cdf(-d2) - spot * norm_cdf(-d1)
    # Far out of the money the two terms cancel to rounding noise below zero.
    if call < 0.0:
        call = 0.0
    if put < 0.0:
        put = 0.0
    return call, put, call_delta, call_delta - 1.0, gamma, vega, vanna, charm


@njit(cache=True)
def dealer_delta_gamma(lines, params, t, spot, sigma_atm):
    """Quantity-weighted delta and gamma of the live lines (expiry > t) of a book, and the smile's
    share of d delta / d ln S: sum of quantity * vanna * (d vol / d ln S)."""
    delta = 0.0
    gamma = 0.0
    smile_vanna = 0.0
    rate = params[P_RATE]
    last_strike = -1.0
    last_expiry = -1.0
    call_delta = put_delta = g = va = slope = 0.0
    for j in range(lines.shape[0]):
        strike = lines[j, L_STRIKE]
        expiry = lines[j, L_EXPIRY]
        tau = expiry - t
        if tau <= EXPIRY_TOLERANCE:
            continue
        # Books list the call and the put of a strike side by side: they share d1 and gamma.
        if strike != last_strike or expiry != last_expiry:
            vol, slope = line_vol_and_slope(params, sigma_atm, strike, spot)
            call_delta, put_delta, g, va = strike_delta_gamma(spot, strike, tau, rate, vol)
            last_strike = strike
            last_expiry = expiry
        q = lines[j, L_QUANTITY]
        delta += q * (call_delta if lines[j, L_IS_CALL] > 0.5 else put_delta)
        gamma += q * g
        smile_vanna += q * va * slope
    return delta, gamma, smile_vanna


@njit(cache=True)
def mark_book(state, i, lines, params, t_prev, t, spot, sigma_atm):
    """Mark the agent's book at (t, spot): settle lines expiring in (t_prev, t], store greeks."""
    rate = params[P_RATE]
    settled = state[i, S_BOOK_SETTLED]
    value = 0.0
    delta = 0.0
    gamma = 0.0
    vega = 0.0
    vanna = 0.0
    charm = 0.0
    last_strike = -1.0
    last_expiry = -1.0
    call_p = put_p = call_d = put_d = g = v = va = ch = 0.0
    for j in range(lines.shape[0]):
        expiry = lines[j, L_EXPIRY]
        if expiry <= t_prev:
            continue
        strike = lines[j, L_STRIKE]
        q = lines[j, L_QUANTITY]
        is_call = lines[j, L_IS_CALL] > 0.5
        if expiry <= t + EXPIRY_TOLERANCE:
            intrinsic = max(spot - strike, 0.0) if is_call else max(strike - spot, 0.0)
            settled += q * intrinsic
            continue
        # As in dealer_delta_gamma: the call and the put of a strike, side by side, share the work.
        if strike != last_strike or expiry != last_expiry:
            vol = line_vol(params, sigma_atm, strike, spot)
            call_p, put_p, call_d, put_d, g, v, va, ch = strike_greeks(spot, strike, expiry - t, rate, vol)
            last_strike = strike
            last_expiry = expiry
        p = call_p if is_call else put_p
        d = call_d if is_call else put_d
        value += q * p
        delta += q * d
        gamma += q * g
        vega += q * v
        vanna += q * va
        charm += q * ch
    state[i, S_BOOK_SETTLED] = settled
    state[i, S_BOOK_VALUE] = settled + value
    state[i, S_BOOK_DELTA] = delta
    state[i, S_BOOK_GAMMA] = gamma
    state[i, S_BOOK_VEGA] = vega
    state[i, S_BOOK_VANNA] = vanna
    state[i, S_BOOK_CHARM] = charm


@njit(cache=True)
def venue_mids(state, i, params):
    """(spot, perp, future) mid prices of row i at its current time."""
    spot = math.exp(state[i, S_LOG_SPOT])
    perp = spot * (1.0 + state[i, S_PREMIUM])
    tau_f = max(state[i, S_FUTURE_EXPIRY] - state[i, S_T], 0.0)
    future = spot * math.exp((params[P_RATE] + state[i, S_BASIS]) * tau_f)
    return spot, perp, future


@njit(cache=True)
def future_delta(state, i, params):
    """Coins of delta per futures contract: exp(r (T_f - t)) (MODEL.md §4)."""
    return math.exp(params[P_RATE] * max(state[i, S_FUTURE_EXPIRY] - state[i, S_T], 0.0))


@njit(cache=True)
def clamp_log_price(y, params):
    """``y`` within ln(spot0) +- LOG_PRICE_BAND (see LOG_PRICE_BAND)."""
    centre = math.log(params[P_SPOT0])
    return min(max(y, centre - LOG_PRICE_BAND), centre + LOG_PRICE_BAND)


# ------------------------------------------------------------------------------------ clearing
@njit(cache=True)
def _clearing_residual(y, s_pre, h_prev, dealer_lines, params, t, sigma_atm):
    """f(y) = y - s_pre - 0.01 e^y inv_D_eff (H(e^y) - H_prev) and f'(y); plus H and phi.

    ``f'(y) = 1 - push + phi + 0.01 e^y inv_D_eff hedge_ratio sum(q vanna d vol / d ln S)``: the
    last term is the smile's (vols move with the price), which Newton needs to converge in three
    iterations instead of four or more; phi itself is the BSM-gamma feedback of MODEL.md §3.
    """
    # Newton may overshoot far out when f' is near the floor; the price it evaluates stays finite.
    spot = math.exp(clamp_log_price(y, params))
    delta, gamma, smile_vanna = dealer_delta_gamma(dealer_lines, params, t, spot, sigma_atm)
    hr = params[P_HEDGE_RATIO]
    inv_d = params[P_DEALER_INV_DEPTH]
    h = -hr * delta
    push = 0.01 * spot * inv_d * (h - h_prev)
    phi = 0.01 * hr * gamma * spot * spot * inv_d
    f = y - s_pre - push
    fprime = 1.0 - push + phi + 0.01 * hr * smile_vanna * spot * inv_d
    return f, fprime, h, phi


@njit(cache=True)
def clear_market(s_pre, y_prev, h_prev, dealer_lines, params, t, sigma_atm):
    """Solve the clearing equation of MODEL.md §3 for the log-price; returns (y, H, phi, crisis).

    Newton from ``s_pre``; if it does not converge, or the solution sits where
    ``1 + phi <= phi_floor``, bisection on a bracket found by expanding around ``s_pre``; if no
    root or the root is in the crisis region, the move is capped at ``(s_pre - y_prev) / phi_floor``
    and ``crisis`` is set.
    """
    floor = params[P_PHI_FLOOR]
    y = s_pre
    converged = False
    moved = False
    for _ in range(int(params[P_NEWTON_ITERATIONS])):
        f, fp, h, phi = _clearing_residual(y, s_pre, h_prev, dealer_lines, params, t, sigma_atm)
        moved = False
        if fp < floor:
            break
        dy = f / fp
        y -= dy
        moved = True
        if abs(dy) < 1e-13:
            converged = True
            break
    # Converged, H and phi of the last evaluation stand: it was < 1e-13 away in log-price.
    if not converged:
        if moved:
            f, fp, h, phi = _clearing_residual(y, s_pre, h_prev, dealer_lines, params, t, sigma_atm)
        converged = abs(f) < 1e-10 and fp >= floor
    if not converged:
        # Bracket the root nearest s_pre: f(s_pre) = -push(s_pre); expand away from s_pre in the
        # direction that changes the sign.
        f0, _, _, _ = _clearing_residual(s_pre, s_pre, h_prev, dealer_lines, params, t, sigma_atm)
        width = abs(s_pre - y_prev) + 1e-4
        lo = s_pre
        hi = s_pre
        found = False
        for _ in range(30):
            cand = s_pre + width if f0 < 0.0 else s_pre - width
            fc, _, _, _ = _clearing_residual(cand, s_pre, h_prev, dealer_lines, params, t, sigma_atm)
            if (fc > 0.0) == (f0 < 0.0):
                lo, hi = (s_pre, cand) if f0 < 0.0 else (cand, s_pre)
                found = True
                break
            width *= 2.0
            if width > 5.0:
                break
        if found:
            for _ in range(60):
                mid = 0.5 * (lo + hi)
                fm, _, _, _ = _clearing_residual(mid, s_pre, h_prev, dealer_lines, params, t, sigma_atm)
                if fm < 0.0:
                    lo = mid
                else:
                    hi = mid
            y = 0.5 * (lo + hi)
            f, fp, h, phi = _clearing_residual(y, s_pre, h_prev, dealer_lines, params, t, sigma_atm)
            converged = True
    if converged and 1.0 + phi > floor:
        return y, h, phi, False
    y = y_prev + (s_pre - y_prev) / floor
    _, _, h, phi = _clearing_residual(y, s_pre, h_prev, dealer_lines, params, t, sigma_atm)
    return y, h, phi, True


# ------------------------------------------------------------------------------------ reset
@njit(cache=True)
def reset_row(i, seed, episode, state, hedge, keys, params, venues, dealer_lines, agent_lines):
    """Start episode ``episode`` of the stream ``seed`` in row ``i`` (MODEL.md initial state)."""
    keys[i] = episode_key(np.uint64(seed), np.uint64(episode))
    for c in range(state.shape[1]):
        state[i, c] = 0.0
    for v in range(N_VENUES):
        hedge[i, v] = 0.0
    x0 = math.log(params[P_SPOT0])
    v0 = params[P_V0]
    state[i, S_X] = x0
    state[i, S_X0] = x0
    state[i, S_V] = v0
    state[i, S_LOG_SPOT] = x0
    state[i, S_BASIS] = params[P_BASIS_MEAN]
    state[i, S_FUTURE_EXPIRY] = params[P_FUTURE_EXPIRY]
    state[i, S_REALISED_VAR] = v0
    state[i, S_FUNDING_RATE] = min(max(params[P_INTEREST], -params[P_FUNDING_CAP]), params[P_FUNDING_CAP])
    spot = params[P_SPOT0]
    sigma_atm = atm_vol(params, v0)
    state[i, S_ATM_VOL] = sigma_atm
    d_delta, d_gamma, _ = dealer_delta_gamma(dealer_lines, params, 0.0, spot, sigma_atm)
    state[i, S_DEALER_HEDGE] = -params[P_HEDGE_RATIO] * d_delta
    state[i, S_PHI] = 0.01 * params[P_HEDGE_RATIO] * d_gamma * spot * spot * params[P_DEALER_INV_DEPTH]
    state[i, S_GEX] = 0.01 * params[P_HEDGE_RATIO] * d_gamma * spot * spot
    mark_book(state, i, agent_lines, params, -1.0, 0.0, spot, sigma_atm)
    if params[P_INITIAL_DELTA_HEDGE] > 0.5:
        hedge[i, SPOT] = -state[i, S_BOOK_DELTA]


@njit(cache=True)
def reset_rows(rows, seeds, episodes, state, hedge, keys, params, venues, dealer_lines, agent_lines):
    """Reset the listed rows; ``seeds`` and ``episodes`` (uint64) are per listed row."""
    for n in range(rows.shape[0]):
        reset_row(rows[n], seeds[n], episodes[n], state, hedge, keys, params, venues, dealer_lines,
                  agent_lines)


# ------------------------------------------------------------------------------------ step
@njit(cache=True)
def step_row(i, state, hedge, keys, trades, params, venues, dealer_lines, agent_lines, out):
    """Advance row ``i`` by one step (MODEL.md §1, items 1-6). See the module docstring."""
    dt = params[P_DT]
    t = state[i, S_T]
    step = int(state[i, S_STEP])
    key = keys[i]
    halted = state[i, S_HALT_LEFT] > 0.0
    y_prev = state[i, S_LOG_SPOT]
    x_prev = state[i, S_X]
    ps = params[P_PERMANENT_SHARE]
    agent_impact = params[P_AGENT_IMPACT]
    tau_f_prev = max(state[i, S_FUTURE_EXPIRY] - t, 0.0)

    # 1-2. Agent's trades: execution, costs, impact.
    mids_prev = venue_mids(state, i, params)
    fees = 0.0
    slippage = 0.0
    notional = 0.0
    n_trades = 0.0
    for v in range(N_VENUES):
        q = trades[i, v]
        if halted or venues[v, V_ENABLED] < 0.5:
            q = 0.0
        out[i, O_TRADE_SPOT + v] = q
        if q == 0.0:
            continue
        mid = mids_prev[v]
        inv_depth = venues[v, V_INV_DEPTH]
        sign = 1.0 if q > 0.0 else -1.0
        execution = mid * (1.0 + sign * venues[v, V_HALF_SPREAD] + venues[v, V_ETA] * 0.01 * q * mid * inv_depth)
        slippage += abs(q) * abs(execution - mid)
        fees += venues[v, V_FEE] * abs(q) * abs(execution)
        notional += abs(q) * mid
        n_trades += 1.0
        hedge[i, v] += q
        push = 0.01 * q * mid * inv_depth * agent_impact
        tr = venues[v, V_TRANSMISSION]
        state[i, S_I_PERM] += ps * tr * push
        state[i, S_I_TRANS] += (1.0 - ps) * tr * push
        if v == PERP:
            state[i, S_PREMIUM] += (1.0 - tr) * push
        elif v == FUTURE:
            state[i, S_BASIS] += (1.0 - tr) * push / max(tau_f_prev, dt)

    # 3. Exogenous dynamics.
    z_price = step_normal(key, step, Z_PRICE)
    var = state[i, S_V] if params[P_HESTON] > 0.5 else params[P_SIGMA] * params[P_SIGMA]
    x_new = x_prev + (params[P_MU] - 0.5 * var) * dt + math.sqrt(var * dt) * z_price
    if params[P_JUMPS] > 0.5:
        n_jumps = poisson_inverse(params[P_JUMP_INTENSITY] * dt, step_uniform(key, step, U_JUMP_COUNT))
        if n_jumps > 0:
            x_new += (n_jumps * params[P_JUMP_MEAN]
                      + math.sqrt(n_jumps) * params[P_JUMP_STD] * step_normal(key, step, Z_JUMP))
    if params[P_HESTON] > 0.5:
        rho = params[P_RHO_SV]
        w = rho * z_price + math.sqrt(max(1.0 - rho * rho, 0.0)) * step_normal(key, step, Z_VAR)
        var_new = var + params[P_KAPPA_V] * (params[P_THETA_V] - var) * dt + params[P_XI] * math.sqrt(var * dt) * w
        var_new = max(var_new, 0.0)
    else:
        var_new = var
    state[i, S_X] = x_new
    state[i, S_V] = var_new

    # 4. Market clearing with the dealers' hedge flow.
    t_new = t + dt
    sigma_atm = atm_vol(params, var_new)
    s_pre = x_new + state[i, S_I_PERM] + state[i, S_I_TRANS]
    # Outside the price band (see LOG_PRICE_BAND) the price is pinned to its edge and all of the impact
    # becomes permanent, so that s = X + I_perm + I_trans still holds without I_perm and I_trans
    # cancelling each other from huge values; the step is flagged as a liquidity crisis.
    s_band = clamp_log_price(s_pre, params)
    crisis = s_band != s_pre
    if crisis:
        state[i, S_I_PERM] = s_band - x_new
        state[i, S_I_TRANS] = 0.0
        s_pre = s_band
    h_prev = state[i, S_DEALER_HEDGE]
    rebalance = (not halted) and dealer_lines.shape[0] > 0 and (step + 1) % int(params[P_REBALANCE_EVERY]) == 0
    if rebalance and params[P_DEALER_INV_DEPTH] > 0.0 and params[P_HEDGE_RATIO] > 0.0:
        y, h_new, phi, capped = clear_market(s_pre, y_prev, h_prev, dealer_lines, params, t_new, sigma_atm)
        crisis = crisis or capped
        clearing = y - s_pre
        state[i, S_I_PERM] += ps * clearing
        state[i, S_I_TRANS] += (1.0 - ps) * clearing
    else:
        spot_pre = math.exp(s_pre)
        d_delta, d_gamma, _ = dealer_delta_gamma(dealer_lines, params, t_new, spot_pre, sigma_atm)
        phi = 0.01 * params[P_HEDGE_RATIO] * d_gamma * spot_pre * spot_pre * params[P_DEALER_INV_DEPTH]
        h_new = -params[P_HEDGE_RATIO] * d_delta if rebalance else h_prev
    dealer_flow = h_new - h_prev
    state[i, S_DEALER_HEDGE] = h_new

    # 5. Resilience, venue spreads, funding, futures expiry.
    state[i, S_I_TRANS] *= math.exp(-params[P_RESILIENCE] * dt)
    y_new = x_new + state[i, S_I_PERM] + state[i, S_I_TRANS]
    y_band = clamp_log_price(y_new, params)
    if y_band != y_new:
        state[i, S_I_PERM] = y_band - x_new
        state[i, S_I_TRANS] = 0.0
        y_new = y_band
        crisis = True
    state[i, S_LOG_SPOT] = y_new
    spot_new = math.exp(y_new)
    # Dealer flow routed to perp / future moves their premium / basis by the untransmitted share.
    flow_usd = 0.01 * dealer_flow * spot_new
    decay_p = math.exp(-params[P_PREMIUM_SPEED] * dt)
    sd_p = params[P_PREMIUM_VOL] * math.sqrt(
        dt if params[P_PREMIUM_SPEED] * dt < 1e-8 else (1.0 - decay_p * decay_p) / (2.0 * params[P_PREMIUM_SPEED]))
    premium = state[i, S_PREMIUM] * decay_p
    if sd_p > 0.0:
        premium += sd_p * step_normal(key, step, Z_PREMIUM)
    premium += (1.0 - venues[PERP, V_TRANSMISSION]) * params[P_MIX_PERP] * flow_usd * venues[PERP, V_INV_DEPTH]
    state[i, S_PREMIUM] = min(max(premium, -0.5), 0.5)
    decay_b = math.exp(-params[P_BASIS_SPEED] * dt)
    sd_b = params[P_BASIS_VOL] * math.sqrt(
        dt if params[P_BASIS_SPEED] * dt < 1e-8 else (1.0 - decay_b * decay_b) / (2.0 * params[P_BASIS_SPEED]))
    basis = params[P_BASIS_MEAN] + (state[i, S_BASIS] - params[P_BASIS_MEAN]) * decay_b
    if sd_b > 0.0:
        basis += sd_b * step_normal(key, step, Z_BASIS)
    basis += ((1.0 - venues[FUTURE, V_TRANSMISSION]) * params[P_MIX_FUTURE] * flow_usd
              * venues[FUTURE, V_INV_DEPTH] / max(tau_f_prev, dt))
    state[i, S_BASIS] = min(max(basis, -5.0), 5.0)
    state[i, S_T] = t_new

    mids_new = venue_mids(state, i, params)
    hedge_pnl = 0.0
    carry = 0.0
    for v in range(N_VENUES):
        h = hedge[i, v]
        hedge_pnl += h * (mids_new[v] - mids_prev[v])
        carry += params[P_COST_OF_CAPITAL] * dt * venues[v, V_MARGIN] * abs(h) * mids_prev[v]

    interval = params[P_FUNDING_INTERVAL]
    n_funding = math.floor(t_new / interval + 1e-9) - math.floor(t / interval + 1e-9)
    funding_rate = min(max(state[i, S_PREMIUM] + params[P_INTEREST], -params[P_FUNDING_CAP]),
                       params[P_FUNDING_CAP])
    state[i, S_FUNDING_RATE] = funding_rate
    funding = hedge[i, PERP] * mids_new[PERP] * funding_rate * n_funding

    if t_new >= state[i, S_FUTURE_EXPIRY] - EXPIRY_TOLERANCE:
        # Cash settlement at spot: the mark above already converged to spot, so only close.
        hedge[i, FUTURE] = 0.0
        state[i, S_FUTURE_EXPIRY] += params[P_FUTURE_ROLL]

    # Circuit breaker.
    ret = y_new - y_prev
    if halted:
        state[i, S_HALT_LEFT] -= 1.0
        state[i, S_HALT_STEPS] += 1.0
    elif params[P_BREAKER] > 0.5 and abs(ret) > params[P_HALT_THRESHOLD]:
        state[i, S_HALT_LEFT] = params[P_HALT_STEPS]

    # 6. Book and P&L.
    value_prev = state[i, S_BOOK_VALUE]
    mark_book(state, i, agent_lines, params, t, t_new, spot_new, sigma_atm)
    book_pnl = state[i, S_BOOK_VALUE] - value_prev
    pnl = book_pnl + hedge_pnl - fees - slippage - funding - carry

    step += 1
    state[i, S_STEP] = step
    done = step >= int(params[P_EPISODE_STEPS])
    terminated = done and params[P_TERMINATES] > 0.5
    truncated = done and not terminated

    scale = params[P_PNL_SCALE]
    mode = int(params[P_REWARD_MODE])
    state[i, S_CUM_PNL] += pnl
    if mode == REWARD_MEAN_VARIANCE:
        x = pnl / scale
        reward = x - 0.5 * params[P_RISK_AVERSION] * x * x
    elif mode == REWARD_TERMINAL_PNL:
        reward = state[i, S_CUM_PNL] / scale if done else 0.0
    else:
        reward = pnl / scale

    exo_ret = x_new - x_prev
    gex = phi / params[P_DEALER_INV_DEPTH] if params[P_DEALER_INV_DEPTH] > 0.0 else 0.0
    if params[P_DEALER_INV_DEPTH] == 0.0:
        # Infinite depth: phi is 0 whatever the book; report the book's GEX anyway.
        _, d_gamma, _ = dealer_delta_gamma(dealer_lines, params, t_new, spot_new, sigma_atm)
        gex = 0.01 * params[P_HEDGE_RATIO] * d_gamma * spot_new * spot_new
    state[i, S_PHI] = phi
    state[i, S_GEX] = gex
    state[i, S_ATM_VOL] = sigma_atm
    state[i, S_CRISIS] = 1.0 if crisis else 0.0
    state[i, S_LAST_RETURN] = ret
    lam = 1.0 - math.exp(-dt * 365.0)  # EWMA with a one-day time constant
    state[i, S_REALISED_VAR] += lam * (ret * ret / dt - state[i, S_REALISED_VAR])
    state[i, S_CUM_BOOK_PNL] += book_pnl
    state[i, S_CUM_HEDGE_PNL] += hedge_pnl
    state[i, S_CUM_FEES] += fees
    state[i, S_CUM_SLIPPAGE] += slippage
    state[i, S_CUM_FUNDING] += funding
    state[i, S_CUM_CARRY] += carry
    state[i, S_TURNOVER_USD] += notional
    state[i, S_N_TRADES] += n_trades
    state[i, S_SUM_R2] += ret * ret
    state[i, S_SUM_X2] += exo_ret * exo_ret
    state[i, S_SUM_PHI] += phi
    state[i, S_CRISIS_STEPS] += 1.0 if crisis else 0.0
    state[i, S_CUM_REWARD] += reward

    out[i, O_PNL] = pnl
    out[i, O_BOOK_PNL] = book_pnl
    out[i, O_HEDGE_PNL] = hedge_pnl
    out[i, O_FEES] = fees
    out[i, O_SLIPPAGE] = slippage
    out[i, O_FUNDING] = funding
    out[i, O_CARRY] = carry
    out[i, O_REWARD] = reward
    out[i, O_PHI] = phi
    out[i, O_GEX] = gex
    out[i, O_CRISIS] = 1.0 if crisis else 0.0
    out[i, O_HALTED] = 1.0 if halted else 0.0
    out[i, O_NOTIONAL] = notional
    out[i, O_SPOT] = spot_new
    out[i, O_EXO_SPOT] = math.exp(x_new)
    out[i, O_TERMINATED] = 1.0 if terminated else 0.0
    out[i, O_TRUNCATED] = 1.0 if truncated else 0.0
    out[i, O_DEALER_FLOW] = dealer_flow
    out[i, O_RETURN] = ret
    out[i, O_EXO_RETURN] = exo_ret


@njit(cache=True)
def step_serial(state, hedge, keys, trades, params, venues, dealer_lines, agent_lines, out):
    """Step every row, single-threaded."""
    for i in range(state.shape[0]):
        step_row(i, state, hedge, keys, trades, params, venues, dealer_lines, agent_lines, out)


@njit(cache=True, parallel=True)
def step_parallel(state, hedge, keys, trades, params, venues, dealer_lines, agent_lines, out):
    """Step every row, rows spread over threads (same results as :func:`step_serial`)."""
    for i in prange(state.shape[0]):
        step_row(i, state, hedge, keys, trades, params, venues, dealer_lines, agent_lines, out)


# ------------------------------------------------------------------------------------ actions
ACTION_TRADE, ACTION_TARGET, ACTION_DELTA = 0, 1, 2


@njit(cache=True)
def actions_to_trades_rows(actions, enabled, mode, max_trade, min_trade, state, hedge, params, trades):
    """Map actions ``[N, n_enabled]`` to trades ``[N, 3]`` (see ``Market.actions_to_trades``).

    One call for all rows: at N = 1 the NumPy version of this mapping cost three times the step.
    A trade that differs from a hold only by rounding (target reached, delta gap cancelled) is a hold.
    """
    n_enabled = enabled.shape[0]
    for i in range(actions.shape[0]):
        fut_delta = math.exp(params[P_RATE] * max(state[i, S_FUTURE_EXPIRY] - state[i, S_T], 0.0))
        gap = 0.0
        if mode == ACTION_DELTA:
            net = state[i, S_BOOK_DELTA] + hedge[i, SPOT] + hedge[i, PERP] + hedge[i, FUTURE] * fut_delta
            gap = net / n_enabled
        for v in range(N_VENUES):
            trades[i, v] = 0.0
        for j in range(n_enabled):
            v = enabled[j]
            q = actions[i, j] * max_trade
            if mode == ACTION_DELTA:
                q -= gap
                if abs(q) <= 1e-12 * max(abs(gap), max_trade):
                    q = 0.0
            if v == FUTURE:
                q /= fut_delta
            if mode == ACTION_TARGET:
                q -= hedge[i, v]
                if abs(q) <= 1e-12 * max(abs(hedge[i, v]), max_trade):
                    q = 0.0
            coins = abs(q) * fut_delta if v == FUTURE else abs(q)
            trades[i, v] = 0.0 if coins < min_trade else q


# ------------------------------------------------------------------------------------ observation
@njit(cache=True)
def observe_row(i, state, hedge, params, obs):
    """Write row i's observation (float32, every entry clipped to +-OBS_BOUND). Scales:

    ==  ================  ==================================================================
    0   time_to_expiry    steps left / episode steps, in [0, 1]
    1   log_moneyness     ln(S / book centre strike) / (sigma sqrt(horizon))
    2   book_delta        book delta (coins) / gross book quantity
    3   book_gamma        book gamma * S * 1 % (delta change per 1 % move) / gross quantity
    4   book_vanna        book vanna * 0.1 (delta change per 10 vol points) / gross quantity
    5   book_charm        book charm * dt (delta change over one step) / gross quantity
    6   hedge_spot        spot position (coins) / gross quantity
    7   hedge_perp        perp position (coins) / gross quantity
    8   hedge_future      futures position in delta coins / gross quantity
    9   net_delta         (book delta + hedge deltas) / gross quantity
    10  last_return       last spot log-return / (sigma sqrt(dt))
    11  realised_vol      EWMA (1 day) realised vol / sigma
    12  atm_vol           ATM implied vol / sigma
    13  perp_premium      perp premium / 0.001 (10 bp)
    14  funding_rate      funding rate per interval / 0.0001 (1 bp)
    15  futures_basis     annualised basis / 0.1
    16  phi               dealer GEX / dealer depth (phi), as is
    17  liquidity_crisis  1 if the last step hit the phi floor, else 0
    18  halted            1 while the circuit breaker halts trading, else 0
    ==  ================  ==================================================================
    """
    gross = params[P_BOOK_GROSS]
    sigma = params[P_SIGMA]
    dt = params[P_DT]
    n_steps = params[P_EPISODE_STEPS]
    spot = math.exp(state[i, S_LOG_SPOT])
    fut_delta = future_delta(state, i, params)
    net = state[i, S_BOOK_DELTA] + hedge[i, SPOT] + hedge[i, PERP] + hedge[i, FUTURE] * fut_delta
    values = (
        (n_steps - state[i, S_STEP]) / n_steps,
        math.log(spot / params[P_BOOK_CENTRE]) / (sigma * math.sqrt(n_steps * dt)),
        state[i, S_BOOK_DELTA] / gross,
        state[i, S_BOOK_GAMMA] * spot * 0.01 / gross,
        state[i, S_BOOK_VANNA] * 0.1 / gross,
        state[i, S_BOOK_CHARM] * dt / gross,
        hedge[i, SPOT] / gross,
        hedge[i, PERP] / gross,
        hedge[i, FUTURE] * fut_delta / gross,
        net / gross,
        state[i, S_LAST_RETURN] / (sigma * math.sqrt(dt)),
        math.sqrt(max(state[i, S_REALISED_VAR], 0.0)) / sigma,
        state[i, S_ATM_VOL] / sigma,
        state[i, S_PREMIUM] / 0.001,
        state[i, S_FUNDING_RATE] / 0.0001,
        state[i, S_BASIS] / 0.1,
        state[i, S_PHI],
        state[i, S_CRISIS],
        1.0 if state[i, S_HALT_LEFT] > 0.0 else 0.0,
    )
    for j in range(len(values)):
        obs[i, j] = min(max(values[j], -OBS_BOUND), OBS_BOUND)


@njit(cache=True)
def observe_rows(state, hedge, params, obs):
    """Observation of every row into ``obs[N, OBS_DIM]``."""
    for i in range(state.shape[0]):
        observe_row(i, state, hedge, params, obs)
