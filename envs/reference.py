"""A plain-NumPy reference of one kernel step, to check :mod:`hedgegym.envs.kernel` against.

:func:`reference_step` is a second, independent implementation of
:func:`hedgegym.envs.kernel.step_row` (MODEL.md §1–§6): the same equations, the same counter-based
random numbers (SplitMix64, reimplemented in ``numpy.uint64`` arithmetic, which wraps like the
kernel's) and the same struct-of-arrays layout, but written with whole-column NumPy operations over
the envs — loops run only over venues, option lines, Newton and bisection iterations. It is what
the kernel tests compare the numba kernel with (to ~1e-9 relative) and the benchmark's baseline;
it is far too slow for training.

It implements all of the clearing (Newton, the bracketed-bisection fallback and the
``phi_floor`` cap) with masks over the rows that need each stage, so the cross-check holds in
every regime, liquidity crises included. The normal CDF comes from ``scipy.special.erfc`` (scipy
is in the ``dev`` extra), an implementation independent of the kernel's ``math.erfc``.

Example:
    >>> import numpy as np
    >>> from hedgegym.envs.config import ScenarioConfig
    >>> from hedgegym.envs.market import Market
    >>> from hedgegym.envs.reference import reference_step
    >>> m = Market(ScenarioConfig(), n_envs=3)
    >>> m.reset(seeds=np.arange(3))
    >>> arrays = [a.copy() for a in (m.state, m.hedge, m.keys)]
    >>> trades = np.full((3, 3), 2.0)
    >>> _ = m.step(trades)
    >>> out = np.zeros_like(m.out)
    >>> reference_step(*arrays, trades, m.params, m.venues, m.dealer_lines, m.agent_lines, out)
    >>> bool(np.allclose(arrays[0], m.state, rtol=1e-9, atol=0) and np.allclose(out, m.out, rtol=1e-9))
    True
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import erfc

from hedgegym.envs.kernel import EXPIRY_TOLERANCE, LOG_PRICE_BAND, SHOCKS_PER_STEP
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
    P_AGENT_IMPACT,
    P_BASIS_MEAN,
    P_BASIS_SPEED,
    P_BASIS_VOL,
    P_BREAKER,
    P_COST_OF_CAPITAL,
    P_DEALER_INV_DEPTH,
    P_DT,
    P_EPISODE_STEPS,
    P_FUNDING_CAP,
    P_FUNDING_INTERVAL,
    P_FUTURE_ROLL,
    P_HALT_STEPS,
    P_HALT_THRESHOLD,
    P_HEDGE_RATIO,
    P_HESTON,
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
_TWO_POW_M53 = 1.0 / 9007199254740992.0
_MIN_TOTAL_VOL = 1e-12  # as in hedgegym.envs.greeks: below it a line is worth its intrinsic value


def mix64(z: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser (Steele, Lea & Flood 2014) over a uint64 array; products wrap mod 2^64."""
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * _MIX1
        z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


def uniform(key: np.ndarray, counter: np.ndarray) -> np.ndarray:
    """U(0, 1), never 0 or 1: the ``counter``-th draw of ``key`` (uint64 arrays, broadcast)."""
    with np.errstate(over="ignore"):
        h = mix64(key + (counter + np.uint64(1)) * _GOLDEN)
    return ((h >> np.uint64(11)).astype(np.float64) + 0.5) * _TWO_POW_M53


def normal(key: np.ndarray, counter: np.ndarray) -> np.ndarray:
    """N(0, 1) by Box–Muller from draws ``2 counter`` and ``2 counter + 1``."""
    u1 = uniform(key, np.uint64(2) * counter)
    u2 = uniform(key, np.uint64(2) * counter + np.uint64(1))
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)


def draw_shocks(key: np.ndarray, step: np.ndarray):
    """The step's shocks (z_price, z_var, u_jump_count, z_jump, z_premium, z_basis), one per row."""
    base = step.astype(np.uint64) * np.uint64(SHOCKS_PER_STEP // 2)
    return (normal(key, base), normal(key, base + np.uint64(1)),
            uniform(key, np.uint64(2) * base + np.uint64(12)),
            normal(key, base + np.uint64(2)), normal(key, base + np.uint64(3)), normal(key, base + np.uint64(4)))


def poisson_inverse(lam: float, u: np.ndarray) -> np.ndarray:
    """Poisson(lam) by CDF inversion of each ``u``, at most 200 (the kernel's recursion for the CDF)."""
    p = math.exp(-lam)
    cdf = [p]
    for n in range(1, 200):
        p *= lam / n
        cdf.append(cdf[-1] + p)
    return np.searchsorted(np.array(cdf), u, side="left")


# ------------------------------------------------------------------------------------ greeks
def norm_cdf(x: np.ndarray) -> np.ndarray:
    """Standard normal CDF via ``erfc`` (accurate in both tails)."""
    return 0.5 * erfc(-x / math.sqrt(2.0))


def line_greeks(spot, strike, tau, rate, vol, is_call):
    """(price, delta, gamma, vega, vanna, charm) arrays of one option line at arrays of (spot, tau, vol)."""
    tau = np.maximum(tau, 0.0)
    total_vol = vol * np.sqrt(tau)
    disc_strike = strike * np.exp(-rate * tau)
    intrinsic = total_vol < _MIN_TOTAL_VOL
    # Masked-out rows get harmless values so that no warning is raised for them.
    tv = np.where(intrinsic, 1.0, total_vol)
    tau_safe = np.where(intrinsic, 1.0, tau)
    vol_safe = np.where(intrinsic, 1.0, vol)
    d1 = (np.log(spot / strike) + (rate + 0.5 * vol_safe * vol_safe) * tau_safe) / tv
    d2 = d1 - tv
    pdf = np.exp(-0.5 * d1 * d1) / math.sqrt(2.0 * math.pi)
    gamma = pdf / (spot * tv)
    vega = spot * pdf * np.sqrt(tau_safe)
    vanna = -pdf * d2 / vol_safe
    charm = -pdf * (2.0 * rate * tau_safe - d2 * tv) / (2.0 * tau_safe * tv)
    if is_call:
        price = np.maximum(spot * norm_cdf(d1) - disc_strike * norm_cdf(d2), 0.0)
        delta = norm_cdf(d1)
        itm = spot > disc_strike
        price_0 = np.where(itm, spot - disc_strike, 0.0)
        delta_0 = np.where(itm, 1.0, 0.0)
    else:
        price = np.maximum(disc_strike * norm_cdf(-d2) - spot * norm_cdf(-d1), 0.0)
        delta = norm_cdf(d1) - 1.0
        itm = spot < disc_strike
        price_0 = np.where(itm, disc_strike - spot, 0.0)
        delta_0 = np.where(itm, -1.0, 0.0)
    zero = np.zeros_like(gamma)
    return (np.where(intrinsic, price_0, price), np.where(intrinsic, delta_0, delta),
            np.where(intrinsic, zero, gamma), np.where(intrinsic, zero, vega),
            np.where(intrinsic, zero, vanna), np.where(intrinsic, zero, charm))


def atm_vol(params: np.ndarray, variance: np.ndarray) -> np.ndarray:
    """sigma_atm = sqrt(v) (1 + vol_premium), floored (MODEL.md §5)."""
    return np.maximum(np.sqrt(np.maximum(variance, 0.0)) * (1.0 + params[P_VOL_PREMIUM]), params[P_VOL_FLOOR])


def line_vol(params: np.ndarray, sigma_atm: np.ndarray, strike: float, spot: np.ndarray):
    """Sticky-moneyness smile of MODEL.md §5, floored, and its slope d vol / d ln S (0 on the floor)."""
    m = np.log(strike / spot)
    vol = sigma_atm * (1.0 + params[P_SKEW] * m + params[P_SMILE] * m * m)
    above = vol > params[P_VOL_FLOOR]
    slope = np.where(above, -sigma_atm * (params[P_SKEW] + 2.0 * params[P_SMILE] * m), 0.0)
    return np.where(above, vol, params[P_VOL_FLOOR]), slope


def dealer_delta_gamma(lines, params, t, spot, sigma_atm):
    """Quantity-weighted delta and gamma of the lines still live (expiry > t + tolerance), per row,
    and the smile's share of d delta / d ln S (sum of quantity * vanna * d vol / d ln S)."""
    delta = np.zeros_like(spot)
    gamma = np.zeros_like(spot)
    smile_vanna = np.zeros_like(spot)
    for j in range(lines.shape[0]):
        tau = lines[j, L_EXPIRY] - t
        live = tau > EXPIRY_TOLERANCE
        vol, slope = line_vol(params, sigma_atm, lines[j, L_STRIKE], spot)
        _, d, g, _, va, _ = line_greeks(spot, lines[j, L_STRIKE], tau, params[P_RATE], vol,
                                        lines[j, L_IS_CALL] > 0.5)
        q = lines[j, L_QUANTITY]
        delta = np.where(live, delta + q * d, delta)
        gamma = np.where(live, gamma + q * g, gamma)
        smile_vanna = np.where(live, smile_vanna + q * va * slope, smile_vanna)
    return delta, gamma, smile_vanna


def mark_book(state, lines, params, t_prev, t, spot, sigma_atm) -> None:
    """Mark the agent's book of every row at (t, spot); lines expiring in (t_prev, t] settle at intrinsic."""
    settled = state[:, S_BOOK_SETTLED].copy()
    totals = [np.zeros_like(spot) for _ in range(6)]
    for j in range(lines.shape[0]):
        expiry = lines[j, L_EXPIRY]
        strike = lines[j, L_STRIKE]
        q = lines[j, L_QUANTITY]
        is_call = lines[j, L_IS_CALL] > 0.5
        pending = expiry > t_prev
        settles = pending & (expiry <= t + EXPIRY_TOLERANCE)
        live = pending & ~settles
        intrinsic = np.maximum(spot - strike, 0.0) if is_call else np.maximum(strike - spot, 0.0)
        settled = np.where(settles, settled + q * intrinsic, settled)
        vol, _ = line_vol(params, sigma_atm, strike, spot)
        greeks = line_greeks(spot, strike, expiry - t, params[P_RATE], vol, is_call)
        totals = [np.where(live, total + q * g, total) for total, g in zip(totals, greeks, strict=True)]
    value, delta, gamma, vega, vanna, charm = totals
    state[:, S_BOOK_SETTLED] = settled
    state[:, S_BOOK_VALUE] = settled + value
    state[:, S_BOOK_DELTA] = delta
    state[:, S_BOOK_GAMMA] = gamma
    state[:, S_BOOK_VEGA] = vega
    state[:, S_BOOK_VANNA] = vanna
    state[:, S_BOOK_CHARM] = charm


def venue_mids(state, params) -> np.ndarray:
    """``[N, 3]`` (spot, perp, future) mids of every row at its current time."""
    spot = np.exp(state[:, S_LOG_SPOT])
    tau_f = np.maximum(state[:, S_FUTURE_EXPIRY] - state[:, S_T], 0.0)
    return np.stack([spot, spot * (1.0 + state[:, S_PREMIUM]),
                     spot * np.exp((params[P_RATE] + state[:, S_BASIS]) * tau_f)], axis=1)


def clamp_log_price(y: np.ndarray, params: np.ndarray) -> np.ndarray:
    """``y`` within ln(spot0) +- LOG_PRICE_BAND, the kernel's numerical guard."""
    centre = math.log(params[P_SPOT0])
    return np.clip(y, centre - LOG_PRICE_BAND, centre + LOG_PRICE_BAND)


# ------------------------------------------------------------------------------------ clearing
def _clearing_residual(y, s_pre, h_prev, dealer_lines, params, t, sigma_atm):
    """f(y) = y - s_pre - 0.01 e^y inv_D_eff (H(e^y) - H_prev), its derivative f'(y), H and phi."""
    spot = np.exp(clamp_log_price(y, params))
    delta, gamma, smile_vanna = dealer_delta_gamma(dealer_lines, params, t, spot, sigma_atm)
    hr = params[P_HEDGE_RATIO]
    inv_d = params[P_DEALER_INV_DEPTH]
    h = -hr * delta
    push = 0.01 * spot * inv_d * (h - h_prev)
    phi = 0.01 * hr * gamma * spot * spot * inv_d
    return y - s_pre - push, 1.0 - push + phi + 0.01 * hr * smile_vanna * spot * inv_d, h, phi


def clear_market(s_pre, y_prev, h_prev, dealer_lines, params, t, sigma_atm):
    """The clearing of MODEL.md §3 for every row given: (y, H, phi, crisis) arrays.

    Newton from ``s_pre``; rows that do not converge (or whose Newton derivative falls below the
    floor) go to the bracketed bisection; rows with no root, or a root where ``1 + phi <= phi_floor``,
    are capped at ``(s_pre - y_prev) / phi_floor`` and flagged.
    """
    floor = params[P_PHI_FLOOR]

    def residual(y, rows):
        return _clearing_residual(y, s_pre[rows], h_prev[rows], dealer_lines, params, t[rows], sigma_atm[rows])

    n = s_pre.shape[0]
    y = s_pre.copy()
    f, fp, h, phi = (np.zeros(n) for _ in range(4))  # of each row's last evaluation
    converged = np.zeros(n, dtype=bool)
    iterating = np.ones(n, dtype=bool)
    moved = np.zeros(n, dtype=bool)  # y moved since its last evaluation
    for _ in range(int(params[P_NEWTON_ITERATIONS])):
        rows = np.flatnonzero(iterating)
        if rows.size == 0:
            break
        f[rows], fp[rows], h[rows], phi[rows] = residual(y[rows], rows)
        stalled = fp[rows] < floor
        step_rows = rows[~stalled]
        dy = f[step_rows] / fp[step_rows]
        y[step_rows] -= dy
        moved[rows] = ~stalled
        done = np.abs(dy) < 1e-13
        converged[step_rows[done]] = True
        iterating[rows[stalled]] = False
        iterating[step_rows[done]] = False
    # Converged rows keep H and phi of their last evaluation, < 1e-13 away in log-price.
    rows = np.flatnonzero(~converged & moved)
    if rows.size:
        f[rows], fp[rows], h[rows], phi[rows] = residual(y[rows], rows)
    converged |= (np.abs(f) < 1e-10) & (fp >= floor)

    rows = np.flatnonzero(~converged)
    if rows.size:
        s0 = s_pre[rows]
        f0, _, _, _ = residual(s0, rows)
        up = f0 < 0.0
        width = np.abs(s0 - y_prev[rows]) + 1e-4
        lo = s0.copy()
        hi = s0.copy()
        found = np.zeros(rows.size, dtype=bool)
        searching = np.ones(rows.size, dtype=bool)
        for _ in range(30):
            if not searching.any():
                break
            cand = np.where(up, s0 + width, s0 - width)
            fc, _, _, _ = residual(cand, rows)
            hit = searching & ((fc > 0.0) == up)
            lo = np.where(hit, np.where(up, s0, cand), lo)
            hi = np.where(hit, np.where(up, cand, s0), hi)
            found |= hit
            searching &= ~hit
            width = np.where(searching, width * 2.0, width)
            searching &= ~(width > 5.0)
        bracketed = rows[found]
        lo, hi = lo[found], hi[found]
        if bracketed.size:
            for _ in range(60):
                mid = 0.5 * (lo + hi)
                fm, _, _, _ = residual(mid, bracketed)
                below = fm < 0.0
                lo = np.where(below, mid, lo)
                hi = np.where(below, hi, mid)
            y[bracketed] = 0.5 * (lo + hi)
            _, _, h[bracketed], phi[bracketed] = residual(y[bracketed], bracketed)
            converged[bracketed] = True

    crisis = ~(converged & (1.0 + phi > floor))
    rows = np.flatnonzero(crisis)
    if rows.size:
        y[rows] = y_prev[rows] + (s_pre[rows] - y_prev[rows]) / floor
        _, _, h[rows], phi[rows] = residual(y[rows], rows)
    return y, h, phi, crisis


# ------------------------------------------------------------------------------------ step
def reference_step(state, hedge, keys, trades, params, venues, dealer_lines, agent_lines, out) -> None:
    """Advance every row by one step, mutating ``state``, ``hedge`` and ``out`` like ``kernel.step_serial``."""
    dt = params[P_DT]
    n = state.shape[0]
    t = state[:, S_T].copy()
    step = state[:, S_STEP].astype(np.int64)
    halted = state[:, S_HALT_LEFT] > 0.0
    y_prev = state[:, S_LOG_SPOT].copy()
    x_prev = state[:, S_X].copy()
    ps = params[P_PERMANENT_SHARE]
    tau_f_prev = np.maximum(state[:, S_FUTURE_EXPIRY] - t, 0.0)

    # 1-2. Agent's trades: execution, costs, impact.
    mids_prev = venue_mids(state, params)
    fees = np.zeros(n)
    slippage = np.zeros(n)
    notional = np.zeros(n)
    n_trades = np.zeros(n)
    for v in range(N_VENUES):
        q = np.where(halted | (venues[v, V_ENABLED] < 0.5), 0.0, trades[:, v])
        out[:, O_TRADE_SPOT + v] = q
        mid = mids_prev[:, v]
        inv_depth = venues[v, V_INV_DEPTH]
        execution = mid * (1.0 + np.sign(q) * venues[v, V_HALF_SPREAD] + venues[v, V_ETA] * 0.01 * q * mid * inv_depth)
        slippage += np.abs(q) * np.abs(execution - mid)
        fees += venues[v, V_FEE] * np.abs(q) * np.abs(execution)
        notional += np.abs(q) * mid
        n_trades += q != 0.0
        hedge[:, v] += q
        push = 0.01 * q * mid * inv_depth * params[P_AGENT_IMPACT]
        tr = venues[v, V_TRANSMISSION]
        state[:, S_I_PERM] += ps * tr * push
        state[:, S_I_TRANS] += (1.0 - ps) * tr * push
        if v == PERP:
            state[:, S_PREMIUM] += (1.0 - tr) * push
        elif v == FUTURE:
            state[:, S_BASIS] += (1.0 - tr) * push / np.maximum(tau_f_prev, dt)

    # 3. Exogenous dynamics.
    z_price, z_var, u_jump, z_jump, z_premium, z_basis = draw_shocks(keys, step)
    heston = params[P_HESTON] > 0.5
    var = state[:, S_V].copy() if heston else np.full(n, params[P_SIGMA] * params[P_SIGMA])
    x_new = x_prev + (params[P_MU] - 0.5 * var) * dt + np.sqrt(var * dt) * z_price
    if params[P_JUMPS] > 0.5:
        n_jumps = poisson_inverse(params[P_JUMP_INTENSITY] * dt, u_jump)
        jump = n_jumps * params[P_JUMP_MEAN] + np.sqrt(n_jumps) * params[P_JUMP_STD] * z_jump
        x_new = np.where(n_jumps > 0, x_new + jump, x_new)
    if heston:
        rho = params[P_RHO_SV]
        w = rho * z_price + math.sqrt(max(1.0 - rho * rho, 0.0)) * z_var
        var_new = var + params[P_KAPPA_V] * (params[P_THETA_V] - var) * dt + params[P_XI] * np.sqrt(var * dt) * w
        var_new = np.maximum(var_new, 0.0)
    else:
        var_new = var
    state[:, S_X] = x_new
    state[:, S_V] = var_new

    # 4. Market clearing with the dealers' hedge flow.
    t_new = t + dt
    sigma_atm = atm_vol(params, var_new)
    s_pre = x_new + state[:, S_I_PERM] + state[:, S_I_TRANS]
    s_band = clamp_log_price(s_pre, params)
    crisis = s_band != s_pre
    state[crisis, S_I_PERM] = s_band[crisis] - x_new[crisis]
    state[crisis, S_I_TRANS] = 0.0
    s_pre = s_band
    h_prev = state[:, S_DEALER_HEDGE].copy()
    hr = params[P_HEDGE_RATIO]
    rebalance = ~halted & (dealer_lines.shape[0] > 0) & ((step + 1) % int(params[P_REBALANCE_EVERY]) == 0)
    clears = rebalance & (params[P_DEALER_INV_DEPTH] > 0.0) & (hr > 0.0)
    # Rows whose dealers do not trade this step keep the price; phi is read at it.
    phi = np.zeros(n)
    h_new = h_prev.copy()
    rows = np.flatnonzero(~clears)
    if rows.size:
        spot_pre = np.exp(s_pre[rows])
        d_delta, d_gamma, _ = dealer_delta_gamma(dealer_lines, params, t_new[rows], spot_pre, sigma_atm[rows])
        phi[rows] = 0.01 * hr * d_gamma * spot_pre * spot_pre * params[P_DEALER_INV_DEPTH]
        h_new[rows] = np.where(rebalance[rows], -hr * d_delta, h_prev[rows])
    rows = np.flatnonzero(clears)
    if rows.size:
        y, h_new[rows], phi[rows], capped = clear_market(
            s_pre[rows], y_prev[rows], h_prev[rows], dealer_lines, params, t_new[rows], sigma_atm[rows])
        crisis[rows] |= capped
        clearing = y - s_pre[rows]
        state[rows, S_I_PERM] += ps * clearing
        state[rows, S_I_TRANS] += (1.0 - ps) * clearing
    dealer_flow = h_new - h_prev
    state[:, S_DEALER_HEDGE] = h_new

    # 5. Resilience, venue spreads, funding, futures expiry.
    state[:, S_I_TRANS] *= math.exp(-params[P_RESILIENCE] * dt)
    y_new = x_new + state[:, S_I_PERM] + state[:, S_I_TRANS]
    y_band = clamp_log_price(y_new, params)
    pinned = y_band != y_new
    state[pinned, S_I_PERM] = y_band[pinned] - x_new[pinned]
    state[pinned, S_I_TRANS] = 0.0
    crisis |= pinned
    y_new = y_band
    state[:, S_LOG_SPOT] = y_new
    spot_new = np.exp(y_new)
    flow_usd = 0.01 * dealer_flow * spot_new
    speed_p = params[P_PREMIUM_SPEED]
    decay_p = math.exp(-speed_p * dt)
    sd_p = params[P_PREMIUM_VOL] * math.sqrt(dt if speed_p * dt < 1e-8 else (1.0 - decay_p * decay_p) / (2.0 * speed_p))
    premium = state[:, S_PREMIUM] * decay_p + sd_p * z_premium
    premium += (1.0 - venues[PERP, V_TRANSMISSION]) * params[P_MIX_PERP] * flow_usd * venues[PERP, V_INV_DEPTH]
    state[:, S_PREMIUM] = np.clip(premium, -0.5, 0.5)
    speed_b = params[P_BASIS_SPEED]
    decay_b = math.exp(-speed_b * dt)
    sd_b = params[P_BASIS_VOL] * math.sqrt(dt if speed_b * dt < 1e-8 else (1.0 - decay_b * decay_b) / (2.0 * speed_b))
    basis = params[P_BASIS_MEAN] + (state[:, S_BASIS] - params[P_BASIS_MEAN]) * decay_b + sd_b * z_basis
    basis += ((1.0 - venues[FUTURE, V_TRANSMISSION]) * params[P_MIX_FUTURE] * flow_usd
              * venues[FUTURE, V_INV_DEPTH] / np.maximum(tau_f_prev, dt))
    state[:, S_BASIS] = np.clip(basis, -5.0, 5.0)
    state[:, S_T] = t_new

    mids_new = venue_mids(state, params)
    hedge_pnl = np.sum(hedge * (mids_new - mids_prev), axis=1)
    carry = np.sum(params[P_COST_OF_CAPITAL] * dt * venues[:, V_MARGIN] * np.abs(hedge) * mids_prev, axis=1)

    interval = params[P_FUNDING_INTERVAL]
    n_funding = np.floor(t_new / interval + 1e-9) - np.floor(t / interval + 1e-9)
    funding_rate = np.clip(state[:, S_PREMIUM] + params[P_INTEREST], -params[P_FUNDING_CAP], params[P_FUNDING_CAP])
    state[:, S_FUNDING_RATE] = funding_rate
    funding = hedge[:, PERP] * mids_new[:, PERP] * funding_rate * n_funding

    expired = t_new >= state[:, S_FUTURE_EXPIRY] - EXPIRY_TOLERANCE
    hedge[expired, FUTURE] = 0.0
    state[expired, S_FUTURE_EXPIRY] += params[P_FUTURE_ROLL]

    ret = y_new - y_prev
    trips = ~halted & (params[P_BREAKER] > 0.5) & (np.abs(ret) > params[P_HALT_THRESHOLD])
    state[halted, S_HALT_LEFT] -= 1.0
    state[halted, S_HALT_STEPS] += 1.0
    state[trips, S_HALT_LEFT] = params[P_HALT_STEPS]

    # 6. Book and P&L.
    value_prev = state[:, S_BOOK_VALUE].copy()
    mark_book(state, agent_lines, params, t, t_new, spot_new, sigma_atm)
    book_pnl = state[:, S_BOOK_VALUE] - value_prev
    pnl = book_pnl + hedge_pnl - fees - slippage - funding - carry

    step += 1
    state[:, S_STEP] = step
    done = step >= int(params[P_EPISODE_STEPS])
    terminated = done & (params[P_TERMINATES] > 0.5)
    truncated = done & ~terminated

    scale = params[P_PNL_SCALE]
    mode = int(params[P_REWARD_MODE])
    state[:, S_CUM_PNL] += pnl
    if mode == REWARD_MEAN_VARIANCE:
        x = pnl / scale
        reward = x - 0.5 * params[P_RISK_AVERSION] * x * x
    elif mode == REWARD_TERMINAL_PNL:
        reward = np.where(done, state[:, S_CUM_PNL] / scale, 0.0)
    else:
        reward = pnl / scale

    exo_ret = x_new - x_prev
    inv_d = params[P_DEALER_INV_DEPTH]
    if inv_d > 0.0:
        gex = phi / inv_d
    else:
        _, d_gamma, _ = dealer_delta_gamma(dealer_lines, params, t_new, spot_new, sigma_atm)
        gex = 0.01 * hr * d_gamma * spot_new * spot_new
    state[:, S_PHI] = phi
    state[:, S_GEX] = gex
    state[:, S_ATM_VOL] = sigma_atm
    state[:, S_CRISIS] = crisis
    state[:, S_LAST_RETURN] = ret
    lam = 1.0 - math.exp(-dt * 365.0)
    state[:, S_REALISED_VAR] += lam * (ret * ret / dt - state[:, S_REALISED_VAR])
    state[:, S_CUM_BOOK_PNL] += book_pnl
    state[:, S_CUM_HEDGE_PNL] += hedge_pnl
    state[:, S_CUM_FEES] += fees
    state[:, S_CUM_SLIPPAGE] += slippage
    state[:, S_CUM_FUNDING] += funding
    state[:, S_CUM_CARRY] += carry
    state[:, S_TURNOVER_USD] += notional
    state[:, S_N_TRADES] += n_trades
    state[:, S_SUM_R2] += ret * ret
    state[:, S_SUM_X2] += exo_ret * exo_ret
    state[:, S_SUM_PHI] += phi
    state[:, S_CRISIS_STEPS] += crisis
    state[:, S_CUM_REWARD] += reward

    out[:, O_PNL] = pnl
    out[:, O_BOOK_PNL] = book_pnl
    out[:, O_HEDGE_PNL] = hedge_pnl
    out[:, O_FEES] = fees
    out[:, O_SLIPPAGE] = slippage
    out[:, O_FUNDING] = funding
    out[:, O_CARRY] = carry
    out[:, O_REWARD] = reward
    out[:, O_PHI] = phi
    out[:, O_GEX] = gex
    out[:, O_CRISIS] = crisis
    out[:, O_HALTED] = halted
    out[:, O_NOTIONAL] = notional
    out[:, O_SPOT] = spot_new
    out[:, O_EXO_SPOT] = np.exp(x_new)
    out[:, O_TERMINATED] = terminated
    out[:, O_TRUNCATED] = truncated
    out[:, O_DEALER_FLOW] = dealer_flow
    out[:, O_RETURN] = ret
    out[:, O_EXO_RETURN] = exo_ret
