"""Column layout of the simulator's arrays: named indices, so no magic numbers leave this file.

The market of N envs is a struct of arrays, one row per env:

* ``state[N, STATE_WIDTH]`` float64 — the state columns ``S_*`` below;
* ``hedge[N, 3]`` float64 — the agent's position per venue (``SPOT``, ``PERP``, ``FUTURE``): coins
  for spot and perp, contracts for the future (a contract's delta is ``exp(r (T_f - t))`` coins);
* ``keys[N]`` uint64 — the episode's random key (from seed and episode index);
* ``out[N, OUT_WIDTH]`` float64 — what the last step booked, the ``O_*`` columns.

Constant inputs shared by all rows: ``params[PARAMS_WIDTH]`` (``P_*``), ``venues[3, VENUE_WIDTH]``
(``V_*``), and two option books ``lines[L, LINE_WIDTH]`` (``L_*``), the dealers' and the agent's.
"""

from __future__ import annotations

# Venues (rows of `venues`, columns of `hedge` and of the trades input).
SPOT, PERP, FUTURE = 0, 1, 2
N_VENUES = 3

# Option line columns. ``L_EXPIRY_STEP`` is the step at which the line settles, the first whose time
# ``k dt`` reaches ``L_EXPIRY`` (years): decided once, in integers, so no line settles twice.
L_STRIKE, L_EXPIRY, L_IS_CALL, L_QUANTITY, L_EXPIRY_STEP = 0, 1, 2, 3, 4
LINE_WIDTH = 5

# Venue columns. Depth is stored inverted so that an infinitely deep venue (no impact) is 0.
(V_FEE, V_HALF_SPREAD, V_INV_DEPTH, V_ETA, V_TRANSMISSION, V_MARGIN, V_ENABLED) = range(7)
VENUE_WIDTH = 7

# Scalar parameters (times in years, rates per year). Unpacking range(n) checks the count.
(P_DT, P_MU, P_SIGMA, P_RATE, P_SPOT0,
 P_HESTON, P_KAPPA_V, P_THETA_V, P_XI, P_RHO_SV, P_V0,
 P_JUMPS, P_JUMP_INTENSITY, P_JUMP_MEAN, P_JUMP_STD,
 P_PERMANENT_SHARE, P_RESILIENCE, P_PHI_FLOOR, P_NEWTON_ITERATIONS,
 P_BREAKER, P_HALT_THRESHOLD, P_HALT_STEPS,
 P_SKEW, P_SMILE, P_VOL_PREMIUM, P_VOL_FLOOR,
 P_HEDGE_RATIO, P_MIX_PERP, P_MIX_FUTURE, P_DEALER_INV_DEPTH, P_REBALANCE_EVERY,
 P_PREMIUM_SPEED, P_PREMIUM_VOL, P_FUNDING_INTERVAL, P_INTEREST, P_FUNDING_CAP,
 P_FUTURE_EXPIRY, P_FUTURE_ROLL, P_BASIS_MEAN, P_BASIS_SPEED, P_BASIS_VOL,
 P_COST_OF_CAPITAL, P_EPISODE_STEPS, P_TERMINATES, P_AGENT_IMPACT,
 P_REWARD_MODE, P_RISK_AVERSION, P_PNL_SCALE, P_BOOK_GROSS, P_BOOK_CENTRE, P_INITIAL_DELTA_HEDGE,
 ) = range(51)
PARAMS_WIDTH = 51

REWARD_MEAN_VARIANCE, REWARD_PNL, REWARD_TERMINAL_PNL = 0, 1, 2

# State columns. ``S_T`` is always ``S_STEP * dt`` (set from the step index, never summed).
# ``S_BOOK_VALUE`` marks the live lines only; settled payoffs, premiums and spot proceeds are in
# ``S_CASH``, which earns the rate. ``S_DEALER_HOLD`` is the part of the dealers' hedge that hedges
# lines settling at step ``S_DEALER_HOLD_STEP`` (held through their settlement), and
# ``S_DEALER_UNWIND`` the expired lines' hedge the dealers still have to trade away.
(S_T, S_STEP, S_X, S_V, S_I_PERM, S_I_TRANS, S_LOG_SPOT, S_PREMIUM, S_BASIS, S_FUTURE_EXPIRY,
 S_DEALER_HEDGE, S_DEALER_HOLD, S_DEALER_HOLD_STEP, S_DEALER_UNWIND, S_HALT_LEFT, S_FUNDING_RATE,
 S_BOOK_VALUE, S_BOOK_DELTA, S_BOOK_GAMMA, S_BOOK_VANNA, S_BOOK_CHARM, S_CASH,
 S_ATM_VOL, S_PHI, S_GEX, S_CRISIS, S_LAST_RETURN, S_REALISED_VAR,
 S_CUM_PNL, S_CUM_BOOK_PNL, S_CUM_HEDGE_PNL, S_CUM_FEES, S_CUM_SLIPPAGE, S_CUM_FUNDING, S_CUM_CARRY,
 S_CUM_INTEREST, S_TURNOVER_USD, S_N_TRADES, S_SUM_R2, S_SUM_X2, S_SUM_PHI, S_CRISIS_STEPS, S_HALT_STEPS,
 S_CUM_REWARD,
 ) = range(44)
STATE_WIDTH = 44

# Per-step outputs.
(O_PNL, O_BOOK_PNL, O_HEDGE_PNL, O_FEES, O_SLIPPAGE, O_FUNDING, O_CARRY, O_REWARD,
 O_PHI, O_GEX, O_CRISIS, O_HALTED, O_NOTIONAL, O_SPOT, O_EXO_SPOT, O_TERMINATED, O_TRUNCATED,
 O_DEALER_FLOW, O_RETURN, O_EXO_RETURN, O_TRADE_SPOT, O_TRADE_PERP, O_TRADE_FUTURE, O_INTEREST,
 ) = range(24)
OUT_WIDTH = 24

# Observation vector (float32); see `hedgegym.envs.kernel.observe` for meanings and scales.
OBS_NAMES = (
    "time_to_expiry", "log_moneyness", "book_delta", "book_gamma", "book_vanna", "book_charm",
    "hedge_spot", "hedge_perp", "hedge_future", "net_delta", "last_return", "realised_vol",
    "atm_vol", "perp_premium", "funding_rate", "futures_basis", "phi", "liquidity_crisis", "halted",
)
OBS_DIM = len(OBS_NAMES)
OBS_BOUND = 50.0
