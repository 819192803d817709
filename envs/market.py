"""`Market`: the validating factory in front of the numba kernel (hftbacktest-style).

A :class:`Market` holds the per-env state records of N envs of one scenario and advances them
together. It turns a validated :class:`~hedgegym.envs.config.ScenarioConfig` into the kernel's
parameter arrays once, checks every runtime input (seeds, rows, trades) before numba sees it, and
exposes the state through named views. The Gymnasium envs sit directly on it.

Example:
    >>> import numpy as np
    >>> from hedgegym.envs.config import ScenarioConfig
    >>> from hedgegym.envs.market import Market
    >>> m = Market(ScenarioConfig(), n_envs=4)
    >>> m.reset(seeds=np.arange(4))
    >>> out = m.step(np.zeros((4, 3)))        # agent inactive
    >>> m.spot.shape, bool(np.all(m.spot > 0))
    ((4,), True)
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np

from hedgegym.envs import kernel
from hedgegym.envs.config import DAYS_PER_YEAR, HOURS_PER_YEAR, VENUE_NAMES, ScenarioConfig, validate_config
from hedgegym.envs.layout import (
    CALL,
    DISABLED,
    ENABLED,
    EXT_DTYPE,
    EXT_METRICS,
    FUTURE,
    L_EXPIRY,
    L_EXPIRY_STEP,
    L_IS_CALL,
    L_QUANTITY,
    L_STRIKE,
    LINE_WIDTH,
    MAX_BUCKETS,
    MAX_COHORTS,
    N_VENUES,
    OBS_DIM,
    OUT_WIDTH,
    PARAMS,
    PARAMS_DTYPE,
    PERP,
    PUT,
    REWARD_EPISODE_MEAN_VARIANCE,
    REWARD_MEAN_VARIANCE,
    REWARD_PNL,
    REWARD_REFERENCE_EPISODES,
    REWARD_TERMINAL_PNL,
    SPOT,
    STATE_DTYPE,
    V_ENABLED,
    V_ETA,
    V_FEE,
    V_HALF_SPREAD,
    V_INV_DEPTH,
    V_MARGIN,
    V_TRANSMISSION,
    VENUE_WIDTH,
)

_ACTION_MODES = {"trade": kernel.ACTION_TRADE, "target": kernel.ACTION_TARGET, "delta": kernel.ACTION_DELTA}
_REWARD_MODES = {
    "mean_variance": REWARD_MEAN_VARIANCE,
    "pnl": REWARD_PNL,
    "terminal_pnl": REWARD_TERMINAL_PNL,
    "episode_mean_variance": REWARD_EPISODE_MEAN_VARIANCE,
}
# Rows above this are stepped by the numba-parallel kernel unless told otherwise.
PARALLEL_THRESHOLD = 256


# An expiry within this fraction of a step of a step's time falls on that step: ``expiry_days / 365``
# and ``k * dt_hours / 8760`` differ by rounding where they name the same instant.
EXPIRY_STEP_TOLERANCE = 1e-9


def expiry_step(expiry_years: float, dt: float) -> int:
    """The step at which an option expiring at ``expiry_years`` settles: the first step ``k`` whose
    time ``k dt`` reaches the expiry (to ``EXPIRY_STEP_TOLERANCE`` of a step).

    >>> expiry_step(1 / 365, 1 / 8760), expiry_step(1.5 / 8760, 1 / 8760)
    (24, 2)
    """
    return max(1, math.ceil(expiry_years / dt - EXPIRY_STEP_TOLERANCE))


def lines_array(lines, dt: float) -> np.ndarray:
    """Option lines as the kernel's ``[L, LINE_WIDTH]`` array (expiry in years, settlement step)."""
    arr = np.zeros((len(lines), LINE_WIDTH))
    for j, line in enumerate(lines):
        arr[j, L_STRIKE] = line.strike
        arr[j, L_EXPIRY] = line.expiry_days / DAYS_PER_YEAR
        arr[j, L_IS_CALL] = CALL if line.kind == "call" else PUT
        arr[j, L_QUANTITY] = line.quantity
        arr[j, L_EXPIRY_STEP] = expiry_step(arr[j, L_EXPIRY], dt)
    return arr


def _inv_depth(depth: float) -> float:
    return 0.0 if math.isinf(depth) else 1.0 / depth


def dealer_effective_depth(config: ScenarioConfig) -> float:
    """D_eff of MODEL.md §3: 1/D_eff = sum_v mix_v transmission_v / D_v (USD per 1 %; inf: none)."""
    inv = _dealer_inv_depth(config)
    return math.inf if inv == 0.0 else 1.0 / inv


def _dealer_inv_depth(config: ScenarioConfig) -> float:
    mix = config.dealers.venue_mix
    venues = config.venues
    return (
        mix.spot * venues.spot.transmission * _inv_depth(venues.spot.depth_usd_per_pct)
        + mix.perp * venues.perp.transmission * _inv_depth(venues.perp.depth_usd_per_pct)
        + mix.future * venues.future.transmission * _inv_depth(venues.future.depth_usd_per_pct)
    )


def pin_strike(config: ScenarioConfig) -> float:
    """Strike with the largest dealer open interest (|quantity| summed per strike); spot0 if none.

    Ties go to the strike nearest the initial spot.
    """
    oi: dict[float, float] = {}
    for line in config.dealers.lines:
        oi[line.strike] = oi.get(line.strike, 0.0) + abs(line.quantity)
    spot0 = config.market.spot0
    return max(oi, key=lambda k: (oi[k], -abs(k - spot0))) if oi else spot0


def _book_centre(config: ScenarioConfig) -> float:
    """Geometric mean of the agent's strikes weighted by |quantity| (their plain mean if all are 0)."""
    weights = np.array([abs(line.quantity) for line in config.agent.lines])
    strikes = np.array([line.strike for line in config.agent.lines])
    if weights.sum() > 0:
        return float(np.exp(np.average(np.log(strikes), weights=weights)))
    return float(strikes.mean())


# The realised-vol estimate of the observation is an EWMA of r^2 / dt with this time constant (years).
REALISED_VOL_TIME_CONSTANT = 1.0 / DAYS_PER_YEAR


def resilience_decay(config: ScenarioConfig) -> float:
    """Share of transient impact left after one step: ``exp(-resilience dt)`` (Obizhaeva & Wang 2013)."""
    return math.exp(-config.market.impact.resilience * config.episode.dt)


def ou_step(speed: float, vol: float, dt: float) -> tuple[float, float]:
    """(decay, shock sd) of the exact one-step update of an Ornstein–Uhlenbeck process
    ``dx = -speed (x - mean) dt + vol dW``: ``x' = mean + (x - mean) e^{-speed dt} + sd Z`` with
    ``sd = vol sqrt((1 - e^{-2 speed dt}) / (2 speed))`` (``vol sqrt(dt)`` as speed -> 0).

    >>> ou_step(0.0, 0.2, 0.25)
    (1.0, 0.1)
    """
    decay = math.exp(-speed * dt)
    variance = dt if speed * dt < 1e-8 else (1.0 - decay * decay) / (2.0 * speed)
    return decay, vol * math.sqrt(variance)


def _inv_depth_of_mix(config: ScenarioConfig, mix) -> float:
    venues = config.venues
    return (
        mix.spot * venues.spot.transmission * _inv_depth(venues.spot.depth_usd_per_pct)
        + mix.perp * venues.perp.transmission * _inv_depth(venues.perp.depth_usd_per_pct)
        + mix.future * venues.future.transmission * _inv_depth(venues.future.depth_usd_per_pct)
    )


def _cohort_column(config: ScenarioConfig, value, dtype=np.float64) -> np.ndarray:
    """One ``cohort_*`` parameter: ``value(cohort)`` per cohort, zeros after the last."""
    out = np.zeros(MAX_COHORTS, dtype=dtype)
    for c, cohort in enumerate(config.dealers.cohorts):
        out[c] = value(cohort)
    return out


def dealer_hedge_ratio_eff(config: ScenarioConfig) -> float:
    """The dealers' aggregate hedge ratio: ``hedge_ratio``, or ``sum_c share_c hedge_ratio_c`` of the cohorts."""
    cohorts = config.dealers.cohorts
    return sum(c.share * c.hedge_ratio for c in cohorts) if cohorts else config.dealers.hedge_ratio


def dealer_inv_depth_eff(config: ScenarioConfig) -> float:
    """1 / D_eff of the dealers' aggregate flow, so that phi = 0.01 hr_eff Gamma S^2 / D_eff: with cohorts
    ``sum_c share_c hr_c / D_c / hr_eff`` (each cohort's own venue mix), else :func:`dealer_effective_depth`'s."""
    cohorts = config.dealers.cohorts
    if not cohorts:
        return _dealer_inv_depth(config)
    hr = dealer_hedge_ratio_eff(config)
    if hr == 0.0:
        return 0.0
    return sum(c.share * c.hedge_ratio * _inv_depth_of_mix(config, c.venue_mix) for c in cohorts) / hr


def liquidation_buckets(config: ScenarioConfig, side: str) -> dict[str, np.ndarray]:
    """The leveraged positions of one side (``"long"`` or ``"short"``) as the kernel's buckets, in the
    order the price reaches their liquidation prices (README "The market model").

    Bucket b of B has entry quantile ``(b + 1/2) / B`` and leverage quantile the fractional part of
    ``(b + 1/2) x golden ratio`` (a low-discrepancy pairing: entries and leverages independent), and
    ``oi / B`` USD of notional at entry. Positions already past their liquidation price at ``spot0``
    would not exist: they are dropped and the rest scaled up to the side's open interest.

    >>> from hedgegym.envs.config import ScenarioConfig
    >>> cfg = ScenarioConfig.model_validate({"venues": {"perp": {"liquidations": {
    ...     "enabled": True, "long_oi_usd": 1e9, "leverage": 10, "leverage_dispersion": 0.0,
    ...     "entry_dispersion": 0.0, "maintenance_margin": 0.0, "buckets": 4}}}})
    >>> b = liquidation_buckets(cfg, "long")
    >>> b["price"].round(1).tolist(), float(b["coins"].sum() * 1e5)
    ([90000.0, 90000.0, 90000.0, 90000.0], 1000000000.0)
    """
    liq = config.venues.perp.liquidations
    spot0 = config.market.spot0
    oi = liq.long_oi_usd if side == "long" else liq.short_oi_usd
    n = liq.buckets
    normal = NormalDist()
    golden = (math.sqrt(5.0) - 1.0) / 2.0
    price, coins, cost, margin = [], [], [], []
    for b in range(n):
        z = normal.inv_cdf((b + 0.5) / n)
        z_lev = normal.inv_cdf(((b + 0.5) * golden) % 1.0)
        entry = spot0 * math.exp(liq.entry_dispersion * z)
        lev = min(math.exp(math.log(liq.leverage) + liq.leverage_dispersion * z_lev), liq.max_leverage)
        lev = max(lev, 1.0)
        mm = liq.maintenance_margin
        if side == "long":
            p_liq = entry * (1.0 - 1.0 / lev) / (1.0 - mm)
            alive = p_liq < spot0
        else:
            p_liq = entry * (1.0 + 1.0 / lev) / (1.0 + mm)
            alive = p_liq > spot0
        if not alive:
            continue
        notional = oi / n
        price.append(p_liq)
        coins.append(notional / entry)
        cost.append(notional)
        margin.append(notional / lev)
    order = np.argsort(-np.array(price) if side == "long" else np.array(price), kind="stable")
    scale = n / max(len(price), 1)
    out = {
        "price": np.array(price)[order],
        "coins": np.array(coins)[order] * scale,
        "cost": np.array(cost)[order] * scale,
        "margin": np.array(margin)[order] * scale,
    }
    out["tail"] = np.cumsum(out["coins"][::-1])[::-1]
    return out


def _bucket_column(config: ScenarioConfig, side: str, column: str) -> np.ndarray:
    out = np.zeros(MAX_BUCKETS)
    if liquidations_on(config):
        values = liquidation_buckets(config, side)[column]
        out[: values.shape[0]] = values
    return out


def _bucket_count(config: ScenarioConfig, side: str) -> int:
    return int(liquidation_buckets(config, side)["price"].shape[0]) if liquidations_on(config) else 0


def liquidations_on(config: ScenarioConfig) -> bool:
    """Whether the liquidation engine runs: enabled, with leveraged open interest on some side."""
    liq = config.venues.perp.liquidations
    return liq.enabled and (liq.long_oi_usd > 0.0 or liq.short_oi_usd > 0.0)


def second_order_on(config: ScenarioConfig) -> bool:
    """Whether any second-order feature is on (implied-vol dynamics, dealer cohorts, liquidations):
    then the kernel measures the second-order market (``ext``), and ``info`` and
    :meth:`Market.episode_metrics` carry those measures."""
    return config.market.implied_vol.enabled or bool(config.dealers.cohorts) or liquidations_on(config)


# The kernel parameters that are not a config field as it is (``source`` None in ``layout.PARAMS``).
DERIVED_PARAMS = {
    "dt": lambda c: c.episode.dt,
    "v0": lambda c: (
        c.market.heston.v0 if (c.market.heston.enabled and c.market.heston.v0 is not None) else c.market.sigma**2
    ),
    "dealer_inv_depth": lambda c: _dealer_inv_depth(c),
    "funding_interval": lambda c: c.venues.perp.funding_interval_hours / HOURS_PER_YEAR,
    "future_expiry": lambda c: c.venues.future.expiry_days / DAYS_PER_YEAR,
    "future_roll": lambda c: c.venues.future.roll_days / DAYS_PER_YEAR,
    "episode_steps": lambda c: c.episode_steps,
    "terminates": lambda c: c.terminates,
    "agent_impact": lambda c: True,
    "reward_mode": lambda c: _REWARD_MODES[c.agent.reward],
    "pnl_scale": lambda c: c.pnl_scale,
    "reward_reference": lambda c: 0.0,
    "reward_reference_set": lambda c: False,
    "book_gross": lambda c: sum(abs(line.quantity) for line in c.agent.lines) or 1.0,
    "book_centre": _book_centre,
    "initial_delta_hedge": lambda c: c.agent.initial_hedge == "delta",
    "log_spot0": lambda c: math.log(c.market.spot0),
    "resilience_decay": lambda c: resilience_decay(c),
    "premium_decay": lambda c: ou_step(c.venues.perp.premium_speed, c.venues.perp.premium_vol, c.episode.dt)[0],
    "premium_sd": lambda c: ou_step(c.venues.perp.premium_speed, c.venues.perp.premium_vol, c.episode.dt)[1],
    "basis_decay": lambda c: ou_step(c.venues.future.basis_speed, c.venues.future.basis_vol, c.episode.dt)[0],
    "basis_sd": lambda c: ou_step(c.venues.future.basis_speed, c.venues.future.basis_vol, c.episode.dt)[1],
    "rate_growth": lambda c: math.expm1(c.market.rate * c.episode.dt),
    "realised_var_weight": lambda c: -math.expm1(-c.episode.dt / REALISED_VOL_TIME_CONSTANT),
    "second_order": second_order_on,
    "cohorts_on": lambda c: bool(c.dealers.cohorts),
    "n_cohorts": lambda c: len(c.dealers.cohorts),
    "cohort_share": lambda c: _cohort_column(c, lambda k: k.share),
    "cohort_hedge_ratio": lambda c: _cohort_column(c, lambda k: k.hedge_ratio),
    "cohort_band": lambda c: _cohort_column(c, lambda k: k.band),
    "cohort_every": lambda c: _cohort_column(c, lambda k: k.rebalance_every, np.int64),
    "cohort_offset": lambda c: _cohort_column(c, lambda k: k.offset, np.int64),
    "cohort_lag": lambda c: _cohort_column(c, lambda k: k.lag, np.int64),
    "cohort_inv_depth": lambda c: _cohort_column(c, lambda k: _inv_depth_of_mix(c, k.venue_mix)),
    "cohort_mix_perp": lambda c: _cohort_column(c, lambda k: k.venue_mix.perp),
    "cohort_mix_future": lambda c: _cohort_column(c, lambda k: k.venue_mix.future),
    "dealer_hedge_ratio_eff": dealer_hedge_ratio_eff,
    "dealer_inv_depth_eff": dealer_inv_depth_eff,
    "dealer_gross": lambda c: sum(abs(line.quantity) for line in c.dealers.lines),
    "liquidations": liquidations_on,
    "liq_n_long": lambda c: _bucket_count(c, "long"),
    "liq_n_short": lambda c: _bucket_count(c, "short"),
    **{
        f"liq_{side}_{column}": (lambda c, s=side, k=column: _bucket_column(c, s, k))
        for side in ("long", "short")
        for column in ("price", "coins", "cost", "margin", "tail")
    },
}


def _config_value(config: ScenarioConfig, path: str):
    value = config
    for part in path.split("."):
        value = getattr(value, part)
    return value


def build_params(config: ScenarioConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(params, venues, dealer_lines, agent_lines) arrays of the kernel for a validated config.

    ``params`` is one record of ``layout.PARAMS_DTYPE`` (shape (1,)), filled field by field from
    ``layout.PARAMS``: a config path, or the field's entry in :data:`DERIVED_PARAMS`.
    """
    params = np.zeros(1, dtype=PARAMS_DTYPE)
    for name, _, source in PARAMS:
        params[name] = DERIVED_PARAMS[name](config) if source is None else _config_value(config, source)
    ep, ag, dl = config.episode, config.agent, config.dealers

    venues = np.zeros((N_VENUES, VENUE_WIDTH))
    for v, name in enumerate(VENUE_NAMES):
        vc = getattr(config.venues, name)
        venues[v, V_FEE] = vc.fee
        venues[v, V_HALF_SPREAD] = vc.half_spread
        venues[v, V_INV_DEPTH] = _inv_depth(vc.depth_usd_per_pct)
        venues[v, V_ETA] = vc.eta
        venues[v, V_TRANSMISSION] = vc.transmission
        venues[v, V_MARGIN] = vc.margin
        venues[v, V_ENABLED] = ENABLED if name in ag.venues else DISABLED
    return params, venues, lines_array(dl.lines, ep.dt), lines_array(ag.lines, ep.dt)


# The keys :meth:`Market.episode_metrics` adds for a scenario with a second-order feature on (README
# "The market model"), with their meaning (from ``layout.EXT_METRICS``, which also says how each is read).
SECOND_ORDER_METRICS = {key: meaning for key, _, _, _, meaning in EXT_METRICS}


class Market:
    """N envs of one scenario, stepped together by the numba kernel.

    Args:
        config: a :class:`ScenarioConfig` or a mapping validated into one.
        n_envs: number of rows (envs), >= 1.
        parallel: use the numba-parallel kernel; default: when ``n_envs >= 256``.
        agent_impact: when False the agent's trades pay costs but do not move prices (used to
            measure the agent's own share of the volatility amplification).
    """

    def __init__(self, config, n_envs: int = 1, parallel: bool | None = None, agent_impact: bool = True):
        self.config: ScenarioConfig = validate_config(config)
        if isinstance(n_envs, bool) or not isinstance(n_envs, (int, np.integer)) or n_envs < 1:
            raise ValueError(f"n_envs must be an integer >= 1 (got {n_envs!r})")
        self.n_envs = int(n_envs)
        self.params, self.venues, self.dealer_lines, self.agent_lines = build_params(self.config)
        self.params["agent_impact"] = bool(agent_impact)
        self.pin_strike = pin_strike(self.config)
        self.parallel = self.n_envs >= PARALLEL_THRESHOLD if parallel is None else bool(parallel)
        self._step_kernel = kernel.step_parallel if self.parallel else kernel.step_serial
        self.state = np.zeros(self.n_envs, dtype=STATE_DTYPE)
        self.hedge = np.zeros((self.n_envs, N_VENUES))
        self.keys = np.zeros(self.n_envs, dtype=np.uint64)
        self.out = np.zeros((self.n_envs, OUT_WIDTH))
        # The second-order market's per-env measures and state (layout.EXT); zeros and untouched when off.
        self.second_order = bool(self.params["second_order"][0])
        self.ext = np.zeros(self.n_envs, dtype=EXT_DTYPE)
        self.obs = np.zeros((self.n_envs, OBS_DIM), dtype=np.float32)
        self._zero_trades = np.zeros((self.n_envs, N_VENUES))
        self.enabled_venues = np.flatnonzero(self.venues[:, V_ENABLED] == ENABLED)
        # The episode mean-variance reward's running reference (episodes folded in so far).
        self._tracks_reference = self.params["reward_mode"][0] == REWARD_EPISODE_MEAN_VARIANCE
        self.reference_episodes = 0

    def rebuild(self, config) -> None:
        """Run the next episodes on market ``config`` (a family's draw, :mod:`hedgegym.envs.family`):
        the kernel's parameters are rebuilt from it; the rows' state is untouched until their reset.

        ``config`` must be the same kind of market: the same agent venues, episode length,
        second-order measures and array shapes (ValueError naming what differs).
        """
        config = validate_config(config)
        params, venues, dealer_lines, agent_lines = build_params(config)
        checks = (
            ("episode_steps", int(params["episode_steps"][0]), self.episode_steps),
            ("second_order", bool(params["second_order"][0]), self.second_order),
            ("agent venues", tuple(venues[:, V_ENABLED]), tuple(self.venues[:, V_ENABLED])),
            ("dealer lines", dealer_lines.shape, self.dealer_lines.shape),
            ("agent lines", agent_lines.shape, self.agent_lines.shape),
        )
        for what, new, old in checks:
            if new != old:
                raise ValueError(f"Market.rebuild: the new market's {what} ({new}) differ from this market's ({old})")
        params["agent_impact"] = self.params["agent_impact"][0]
        for name in ("reward_reference", "reward_reference_set"):
            params[name] = self.params[name][0]
        self.config = config
        self.params, self.venues, self.dealer_lines, self.agent_lines = params, venues, dealer_lines, agent_lines
        self.pin_strike = pin_strike(config)

    @property
    def episode_steps(self) -> int:
        """Steps per episode."""
        return int(self.params["episode_steps"][0])

    def reset(self, seeds, episodes=None, rows=None) -> None:
        """Start a new episode in ``rows`` (all by default) from ``seeds`` and ``episodes`` (ints >= 0)."""
        rows = np.arange(self.n_envs, dtype=np.int64) if rows is None else np.asarray(rows, dtype=np.int64)
        if rows.ndim != 1 or np.any(rows < 0) or np.any(rows >= self.n_envs):
            raise ValueError(f"rows must be indices in [0, {self.n_envs}) (got {rows})")
        seeds = _as_uint64("seeds", seeds, rows.shape[0])
        episodes = _as_uint64("episodes", 0 if episodes is None else episodes, rows.shape[0])
        kernel.reset_rows(
            rows,
            seeds,
            episodes,
            self.state,
            self.hedge,
            self.keys,
            self.params,
            self.venues,
            self.dealer_lines,
            self.agent_lines,
            self.ext,
        )

    def step(self, trades=None, check: bool = True) -> np.ndarray:
        """Advance every row by one step. ``trades[N, 3]``: coins per venue (zeros: agent inactive).

        ``check=False`` skips the shape and finiteness checks, for callers whose trades come from
        :meth:`actions_to_trades` on actions they have checked (the envs). Returns the
        ``out[N, OUT_WIDTH]`` array (``O_*`` columns), overwritten by the next step.
        """
        if trades is None:
            trades = self._zero_trades
        elif check:
            trades = np.asarray(trades, dtype=np.float64)
            if trades.shape != (self.n_envs, N_VENUES):
                raise ValueError(f"trades must have shape ({self.n_envs}, {N_VENUES}) (got {trades.shape})")
            if not np.all(np.isfinite(trades)):
                raise ValueError("trades must be finite (got NaN or inf)")
        self._step_kernel(
            self.state,
            self.hedge,
            self.keys,
            trades,
            self.params,
            self.venues,
            self.dealer_lines,
            self.agent_lines,
            self.out,
            self.ext,
        )
        if self._tracks_reference:
            self._update_reward_reference()
        return self.out

    def _update_reward_reference(self) -> None:
        """Fold the episodes that just ended into ``reward_reference``: their mean P&L, weighted as
        a running mean over the first ``REWARD_REFERENCE_EPISODES`` episodes and as an exponential
        average over that many after (README "Spaces, reward, episode end")."""
        # Exactly at the last step: NEXT_STEP autoreset steps an ended row once more before its reset.
        done = self.state["step"] == self.episode_steps
        n = int(np.count_nonzero(done))
        if n == 0:
            return
        self.reference_episodes += n
        weight = min(1.0, n / min(self.reference_episodes, REWARD_REFERENCE_EPISODES))
        mean = float(self.state["cum_pnl"][done].mean())
        ref = float(self.params["reward_reference"][0])
        self.params["reward_reference"] = ref + weight * (mean - ref)
        self.params["reward_reference_set"] = True

    def observe(self) -> np.ndarray:
        """Observations ``[N, OBS_DIM]`` float32 of the current state (overwritten next call)."""
        kernel.observe_rows(self.state, self.hedge, self.params, self.obs)
        return self.obs

    def net_delta(self) -> np.ndarray:
        """Net delta per row in coins: book delta + spot + perp + futures contracts x exp(r (T_f - t))."""
        return (
            self.state["book_delta"]
            + self.hedge[:, SPOT]
            + self.hedge[:, PERP]
            + self.hedge[:, FUTURE] * self.future_delta()
        )

    def future_delta(self) -> np.ndarray:
        """Coins of delta per futures contract per row: exp(r (T_f - t)) (MODEL.md §4)."""
        return np.exp(self.params["rate"][0] * np.maximum(self.state["future_expiry"] - self.state["t"], 0.0))

    def actions_to_trades(self, actions, mode: str | None = None) -> np.ndarray:
        """Map actions ``[N, n_enabled]`` in [-1, 1] to the kernel's trades ``[N, 3]`` (coins; future: contracts).

        ``mode`` (default ``agent.action_mode``), with ``m = agent.max_trade`` and ``n`` enabled venues:

        * ``"trade"``: trade ``a_v m`` delta coins on venue v;
        * ``"target"``: trade to the position ``a_v m`` delta coins on venue v;
        * ``"delta"``: trade ``-net_delta / n + a_v m`` delta coins on venue v — ``a = 0`` closes the
          whole net-delta gap, split evenly over the venues, and the action is the deviation from that
          full delta hedge (trades relative to the book's delta: a policy starts from the textbook
          hedger and learns bands and venue choice on top of it).

        Futures trades in delta coins become contracts by dividing by ``exp(r (T_f - t))``. Orders
        smaller than ``agent.min_trade`` coins are not sent (a venue's minimum order size; it also lets
        a continuous policy express "no trade"). Disabled venues get 0. The caller checks shape and
        finiteness (the envs do, at ``step()``).
        """
        agent = self.config.agent
        trades = np.empty((self.n_envs, N_VENUES))
        kernel.actions_to_trades_rows(
            np.asarray(actions, dtype=np.float64).reshape(self.n_envs, -1),
            self.enabled_venues,
            _ACTION_MODES[mode or agent.action_mode],
            agent.max_trade,
            agent.min_trade,
            self.state,
            self.hedge,
            self.params,
            trades,
        )
        return trades

    def trades_to_actions(self, delta_trades, mode: str | None = None) -> np.ndarray:
        """The actions ``[N, n_enabled]`` that :meth:`actions_to_trades` maps to ``delta_trades``.

        ``delta_trades[N, 3]``: the wanted trade per venue in coins of delta. The inverse of
        :meth:`actions_to_trades` for each mode, clipped to [-1, 1] (a trade larger than ``max_trade``
        is cut to it: baselines are bound by the agent's limits). Used by the baseline hedgers.
        """
        agent = self.config.agent
        mode = mode or agent.action_mode
        units = np.array(delta_trades, dtype=np.float64)
        if mode == "target":
            units += self.hedge
            units[:, FUTURE] += self.hedge[:, FUTURE] * (self.future_delta() - 1.0)
        elif mode == "delta":
            units += self.net_delta()[:, None] / self.enabled_venues.size
        return np.clip(units[:, self.enabled_venues] / agent.max_trade, -1.0, 1.0)

    def episode_metrics(self, rows=None) -> dict[str, np.ndarray]:
        """Totals of the current episode per row (MODEL.md §7), from the kernel's accumulators.

        Keys: ``pnl``, ``book_pnl``, ``hedge_pnl``, ``fees``, ``slippage_usd``, ``slippage_bps``
        (of traded notional), ``funding``, ``carry``, ``interest`` (earned on cash), ``turnover_usd``,
        ``n_trades``, ``sum_r2`` and ``sum_x2`` (sums of squared spot and exogenous log-returns),
        ``realised_vol`` and ``realised_vol_exo`` (annualised, zero-mean), ``vol_amplification``
        (their ratio), ``mean_phi``, ``crisis_steps``, ``halt_steps``, ``pin_distance`` and
        ``pin_distance_exo`` (|price - pin strike| / pin strike), ``steps``, ``reward``.

        Where the scenario turns on a second-order feature (:func:`second_order_on`), also the keys of
        :data:`SECOND_ORDER_METRICS`.
        """
        st = self.state if rows is None else self.state[np.asarray(rows)]
        steps = np.maximum(st["step"], 1.0)
        years = steps * self.params["dt"][0]
        turnover = st["turnover_usd"]
        pin = self.pin_strike
        with np.errstate(divide="ignore", invalid="ignore"):
            slippage_bps = np.where(turnover > 0, st["cum_slippage"] / turnover * 1e4, 0.0)
            amplification = np.where(st["sum_x2"] > 0, np.sqrt(st["sum_r2"] / st["sum_x2"]), 1.0)
        return {
            "pnl": st["cum_pnl"].copy(),
            "book_pnl": st["cum_book_pnl"].copy(),
            "hedge_pnl": st["cum_hedge_pnl"].copy(),
            "fees": st["cum_fees"].copy(),
            "slippage_usd": st["cum_slippage"].copy(),
            "slippage_bps": slippage_bps,
            "funding": st["cum_funding"].copy(),
            "carry": st["cum_carry"].copy(),
            "interest": st["cum_interest"].copy(),
            "turnover_usd": turnover.copy(),
            "n_trades": st["n_trades"].copy(),
            "sum_r2": st["sum_r2"].copy(),
            "sum_x2": st["sum_x2"].copy(),
            "realised_vol": np.sqrt(st["sum_r2"] / years),
            "realised_vol_exo": np.sqrt(st["sum_x2"] / years),
            "vol_amplification": amplification,
            "mean_phi": st["sum_phi"] / steps,
            "crisis_steps": st["crisis_steps"].copy(),
            "halt_steps": st["halt_steps"].copy(),
            "pin_distance": np.abs(st["spot"] - pin) / pin,
            "pin_distance_exo": np.abs(np.exp(st["x"]) - pin) / pin,
            "steps": st["step"].copy(),
            "reward": st["cum_reward"].copy(),
            **(self._second_order_metrics(rows, st, steps) if self.second_order else {}),
        }

    def _second_order_metrics(self, rows, st, steps) -> dict[str, np.ndarray]:
        """The second-order keys of :meth:`episode_metrics` (:data:`SECOND_ORDER_METRICS`)."""
        ext = self.ext if rows is None else self.ext[np.asarray(rows)]
        metrics = {}
        with np.errstate(divide="ignore", invalid="ignore"):
            for key, field, entry, divisor, _ in EXT_METRICS:
                value = ext[field] if entry is None else ext[field][:, entry]
                if divisor is None:
                    metrics[key] = value.copy()
                elif divisor == "steps":
                    metrics[key] = value / steps
                else:
                    metrics[key] = np.where(st[divisor] > 0, value / st[divisor], 0.0)
        return metrics

    @property
    def spot(self) -> np.ndarray:
        """Spot price per row (USD)."""
        return self.state["spot"].copy()

    @property
    def exo_spot(self) -> np.ndarray:
        """Exogenous (no-impact) price per row (USD)."""
        return np.exp(self.state["x"])

    @property
    def t(self) -> np.ndarray:
        """Time per row, years since the episode's start."""
        return self.state["t"]

    @property
    def step_index(self) -> np.ndarray:
        """Steps taken in the current episode, per row."""
        return self.state["step"].astype(np.int64)


def _as_uint64(name: str, values, n: int) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim == 0:
        arr = np.full(n, arr)
    if arr.shape != (n,):
        raise ValueError(f"{name} must be a scalar or have shape ({n},) (got {arr.shape})")
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} must be integers (got dtype {arr.dtype})")
    if np.any(arr < 0):
        raise ValueError(f"{name} must be >= 0 (got {arr[arr < 0][:3]})")
    return arr.astype(np.uint64)
