"""The scenario config: typed, validated, loaded from YAML, with defaults from ``MODEL.md``.

A scenario is one :class:`ScenarioConfig` with six sections: ``market`` (exogenous dynamics,
impact, smile), ``venues`` (spot, perp, future), ``dealers`` (the background dealers' options book),
``agent`` (the desk that hedges), ``episode`` (horizon and step) and ``baselines`` (the classical
hedgers' parameters, read only by :mod:`hedgegym.agents.baselines`). Every field has a default, so
an empty YAML file is the ``default`` scenario. Unknown keys, wrong types, out-of-range and
non-finite values are rejected at load time with :class:`ConfigError`, whose message names the
field (dotted path), the value given and what is allowed.

Units: time in days or hours as the field name says (converted to years of 365 days inside),
money in USD, quantities in coins, rates per year unless the name says otherwise.

Example:
    >>> from hedgegym.envs.config import ScenarioConfig
    >>> cfg = ScenarioConfig.model_validate({"market": {"sigma": 0.8}})
    >>> cfg.market.sigma, cfg.episode.n_steps
    (0.8, 168)
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

HOURS_PER_YEAR = 365.0 * 24.0
DAYS_PER_YEAR = 365.0
VENUE_NAMES = ("spot", "perp", "future")


class ConfigError(ValueError):
    """A config field is missing, unknown, malformed or out of range. The message names it."""


class _Strict(BaseModel):
    """Base of every config section: unknown keys and NaN/inf are errors; models are frozen."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True, validate_default=True)


# --------------------------------------------------------------------------------------- market
class HestonConfig(_Strict):
    """Heston variance, MODEL.md §2: v' = max(v + kappa_v (theta_v - v) dt + xi sqrt(v dt) W, 0)."""

    enabled: bool = Field(False, description="Use Heston variance instead of constant sigma^2.")
    # Variances up to 100 are vols up to 1,000 % (market.sigma's range); xi up to 10 is several times
    # the fitted BTC vol of variance (~1-3). kappa_v * dt is bounded in ScenarioConfig (Euler step).
    kappa_v: float = Field(5.0, ge=0.0, le=1.0e4, description="Mean-reversion speed of variance, per year.")
    theta_v: float = Field(0.36, gt=0.0, le=100.0, description="Long-run variance (0.36 = 60 % vol).")
    xi: float = Field(1.0, ge=0.0, le=10.0, description="Vol of variance, per sqrt(year).")
    rho_sv: float = Field(-0.6, ge=-1.0, le=1.0, description="corr(Z, W); negative: vol rises as price falls.")
    v0: float | None = Field(None, gt=0.0, le=100.0, description="Initial variance; default market.sigma^2.")


class JumpConfig(_Strict):
    """Merton jumps, MODEL.md §2: N ~ Poisson(intensity dt) normal jumps N(mean, std^2) in log-price."""

    enabled: bool = Field(False, description="Add Merton jumps to the exogenous log-price.")
    # A log-jump of +-1 is a move of -63 % / +172 %; intensity * dt and the horizon's spread of the
    # log-price are bounded in ScenarioConfig, where the step and the horizon are known.
    intensity: float = Field(12.0, ge=0.0, le=1.0e5, description="lambda_j: expected jumps per year.")
    mean: float = Field(-0.03, ge=-1.0, le=1.0, description="mu_j: mean log-jump size.")
    std: float = Field(0.04, ge=0.0, le=1.0, description="sigma_j: std of the log-jump size.")


class CircuitBreakerConfig(_Strict):
    """Trading halt after a large one-step move (MODEL.md §3)."""

    enabled: bool = Field(False, description="Halt dealer and agent trading after a large move.")
    halt_threshold: float = Field(0.10, gt=0.0, description="|log return| of one step that triggers a halt.")
    halt_steps: int = Field(1, ge=1, description="Steps the halt lasts.")


class ImpactConfig(_Strict):
    """Permanent + transient impact with resilience (Obizhaeva & Wang 2013), MODEL.md §3."""

    permanent_share: float = Field(0.5, ge=0.0, le=1.0, description="Share of each push that is permanent.")
    resilience: float = Field(
        8760.0, ge=0.0, description="Decay rate of transient impact, per year (8760 = e-fold in 1 hour)."
    )
    phi_floor: float = Field(
        0.05, gt=0.0, lt=1.0, description="Clearing is capped where 1 + phi <= phi_floor (liquidity crisis)."
    )
    newton_iterations: int = Field(4, ge=1, le=50, description="Newton iterations of the clearing step.")
    circuit_breaker: CircuitBreakerConfig = CircuitBreakerConfig()


class SmileConfig(_Strict):
    """Sticky-moneyness smile, MODEL.md §5: sigma_atm (1 + skew ln(K/S) + smile ln(K/S)^2), floored."""

    skew: float = Field(-0.15, ge=-10.0, le=10.0, description="Slope in log-moneyness.")
    smile: float = Field(0.8, ge=-10.0, le=100.0, description="Curvature in log-moneyness.")
    vol_premium: float = Field(0.05, gt=-1.0, le=5.0, description="sigma_atm = sqrt(v) (1 + vol_premium).")
    vol_floor: float = Field(0.05, gt=0.0, le=5.0, description="Lowest implied vol of any line.")


class MarketConfig(_Strict):
    """Exogenous dynamics and the microstructure shared by all venues."""

    spot0: float = Field(100_000.0, ge=1.0e-6, le=1.0e12, description="Initial spot, USD per coin.")
    mu: float = Field(0.0, ge=-10.0, le=10.0, description="Drift of the exogenous log-price, per year.")
    sigma: float = Field(0.60, gt=0.0, le=10.0, description="Exogenous volatility (DVOL 40-60 in 2025).")
    rate: float = Field(0.0, ge=-1.0, le=1.0, description="Carry rate r of the BSM model, per year.")
    heston: HestonConfig = HestonConfig()
    jumps: JumpConfig = JumpConfig()
    impact: ImpactConfig = ImpactConfig()
    smile: SmileConfig = SmileConfig()


# --------------------------------------------------------------------------------------- venues
# The thinnest book a venue may have: $1,000 per 1 % (the thinnest crypto pairs; BTC spot is ~$1e8).
MIN_DEPTH_USD = 1.0e3


class VenueConfig(_Strict):
    """Costs, depth and feedback intensity of one venue (MODEL.md §4)."""

    fee: float = Field(0.0005, ge=0.0, lt=1.0, description="Fee as a fraction of traded notional.")
    half_spread: float = Field(0.0001, ge=0.0, lt=1.0, description="Half bid-ask spread, fraction of mid.")
    depth_usd_per_pct: float = Field(
        100.0e6, gt=0.0, description=f"USD notional that moves this venue's price by 1 % (>= {MIN_DEPTH_USD:g}); "
                                     ".inf: no impact."
    )
    eta: float = Field(1.0, ge=0.0, le=100.0, description="Temporary-impact coefficient of execution price.")
    transmission: float = Field(1.0, ge=0.0, le=1.0, description="Share of this venue's push reaching spot.")
    margin: float = Field(1.0, gt=0.0, le=1.0, description="Capital tied up per USD of position.")

    # depth may be .inf (frictionless): allow inf for this one field only.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=True, frozen=True, validate_default=True)

    @field_validator("fee", "half_spread", "eta", "transmission", "margin")
    @classmethod
    def _finite(cls, v: float) -> float:
        if not math.isfinite(v):
            raise ValueError("must be finite")
        return v

    @field_validator("depth_usd_per_pct")
    @classmethod
    def _depth_is_a_market(cls, v: float) -> float:
        if math.isnan(v) or v < MIN_DEPTH_USD:
            raise ValueError(f"must be >= {MIN_DEPTH_USD:g} USD per 1 % (a thinner book moves the price "
                             f"by orders of magnitude per coin), or .inf for no impact (got {v!r})")
        return v


class PerpConfig(VenueConfig):
    """Perpetual swap: OU premium pushed by perp flow, funding every ``funding_interval_hours``."""

    fee: float = Field(0.0004, ge=0.0, lt=1.0, description="Taker fee (Binance/Deribit-like).")
    half_spread: float = Field(0.00005, ge=0.0, lt=1.0, description="Half spread, fraction of mid.")
    depth_usd_per_pct: float = Field(200.0e6, gt=0.0, description="Perp books are deeper than spot.")
    transmission: float = Field(0.6, ge=0.0, le=1.0, description="Share of a perp push reaching spot.")
    margin: float = Field(0.1, gt=0.0, le=1.0, description="Initial margin fraction (10x leverage).")
    premium_speed: float = Field(2000.0, ge=0.0, le=1.0e7, description="OU mean reversion of the premium, per year.")
    premium_vol: float = Field(0.03, ge=0.0, le=10.0, description="OU vol of the premium, per sqrt(year).")
    # From one minute (funding paid by the minute, the limit of continuous funding) to a year.
    funding_interval_hours: float = Field(8.0, ge=1.0 / 60.0, le=HOURS_PER_YEAR,
                                          description="Funding is paid every this many hours.")
    interest: float = Field(0.0001, ge=-0.01, le=0.01, description="Interest component per funding interval.")
    funding_cap: float = Field(0.0075, ge=0.0, le=0.1, description="Funding rate clamp per interval.")

    @field_validator("premium_speed", "premium_vol", "funding_interval_hours")
    @classmethod
    def _finite_perp(cls, v: float) -> float:
        if not math.isfinite(v):
            raise ValueError("must be finite")
        return v


class FutureConfig(VenueConfig):
    """Dated future: mid = S exp((r + basis)(T_f - t)); OU basis; cash-settles and rolls at expiry."""

    fee: float = Field(0.0005, ge=0.0, lt=1.0, description="Taker fee.")
    half_spread: float = Field(0.0001, ge=0.0, lt=1.0, description="Half spread, fraction of mid.")
    depth_usd_per_pct: float = Field(50.0e6, gt=0.0, description="Dated futures are thinner than perps.")
    transmission: float = Field(0.3, ge=0.0, le=1.0, description="Share of a futures push reaching spot.")
    margin: float = Field(0.1, gt=0.0, le=1.0, description="Initial margin fraction.")
    # Up to ten years: the futures mid exp((r + basis) tau) stays finite.
    expiry_days: float = Field(28.0, gt=0.0, le=3650.0, description="Expiry of the first contract, days from start.")
    roll_days: float = Field(28.0, gt=0.0, le=3650.0, description="Tenor of the next contract listed at expiry.")
    basis_mean: float = Field(0.05, ge=-5.0, le=5.0, description="Long-run annualised basis over r.")
    basis_speed: float = Field(50.0, ge=0.0, le=1.0e7, description="OU mean reversion of the basis, per year.")
    basis_vol: float = Field(0.5, ge=0.0, le=50.0, description="OU vol of the basis, per sqrt(year).")

    @field_validator("expiry_days", "roll_days", "basis_speed", "basis_vol")
    @classmethod
    def _finite_future(cls, v: float) -> float:
        if not math.isfinite(v):
            raise ValueError("must be finite")
        return v


class VenuesConfig(_Strict):
    """The three venues. Which of them the agent trades is ``agent.venues``."""

    spot: VenueConfig = VenueConfig(fee=0.001, half_spread=0.0001, depth_usd_per_pct=100.0e6,
                                    transmission=1.0, margin=1.0)
    perp: PerpConfig = PerpConfig()
    future: FutureConfig = FutureConfig()


# --------------------------------------------------------------------------------------- books
class OptionLine(_Strict):
    """One option line: ``quantity`` coins (signed, + long) of a European call or put."""

    # Bounds far outside any market (BTC options open interest is ~4e5 coins) that keep every mark,
    # greek and discount factor exp(-r tau) finite.
    strike: float = Field(ge=1.0e-6, le=1.0e12, description="Strike, USD.")
    expiry_days: float = Field(gt=0.0, le=36500.0, description="Expiry, days from the episode's start (> 0).")
    kind: Literal["call", "put"] = Field(description="call or put.")
    quantity: float = Field(ge=-1.0e12, le=1.0e12,
                            description="Coins, signed from the holder's side: negative = short.")


def _strip(quantity: float, expiry_days: float, strikes: tuple[float, ...]) -> list[OptionLine]:
    return [OptionLine(strike=k, expiry_days=expiry_days, kind=kind, quantity=quantity)
            for k in strikes for kind in ("call", "put")]


class VenueMix(_Strict):
    """How the dealers split their hedge flow across venues (shares sum to 1)."""

    spot: float = Field(0.3, ge=0.0, le=1.0)
    perp: float = Field(0.6, ge=0.0, le=1.0)
    future: float = Field(0.1, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _sums_to_one(self) -> VenueMix:
        total = self.spot + self.perp + self.future
        if abs(total - 1.0) > 1e-9:
            raise ValueError(f"venue shares must sum to 1 (got {total:g})")
        return self


class DealerConfig(_Strict):
    """The background dealers: the market's open interest and how they hedge it (MODEL.md §3).

    Default: dealers short ~1,600 coins of each of calls and puts at 95k/100k/105k of the monthly
    expiry, i.e. short ~$27M of gamma per 1 % at the money (press reports of dealers short ~$50M of
    gamma around one strike, 2024), so phi ~ -0.15 against the ~$180M effective depth.
    """

    lines: list[OptionLine] = Field(
        default_factory=lambda: _strip(-1600.0, 30.0, (95_000.0, 100_000.0, 105_000.0)),
        description="Dealers' options (signed from the dealers' side). Empty: no dealers.",
    )
    hedge_ratio: float = Field(1.0, ge=0.0, le=5.0, description="Dealers hedge toward -hedge_ratio * delta.")
    venue_mix: VenueMix = VenueMix()
    rebalance_every: int = Field(1, ge=1, description="Dealers rebalance every this many steps (epochs).")


# Limits relative to the book (checked in ScenarioConfig, which knows spot0): a trade limit beyond
# 1,000 x the book's gross quantity hedges nothing the book needs, and a reward unit below 1e-6 of
# its notional turns every step's P&L into a reward whose square overflows.
MAX_TRADE_PER_GROSS = 1.0e3
MIN_PNL_SCALE_PER_NOTIONAL = 1.0e-6


class AgentConfig(_Strict):
    """The agent's desk: its options book, venues, action and reward (MODEL.md §6)."""

    lines: list[OptionLine] = Field(
        default_factory=lambda: _strip(-20.0, 7.0, (95_000.0, 100_000.0, 105_000.0)),
        description="The agent's options; the episode terminates at the last expiry.",
    )
    venues: list[Literal["spot", "perp", "future"]] = Field(
        default_factory=lambda: ["spot", "perp", "future"], description="Venues the agent may trade."
    )
    max_trade: float = Field(20.0, gt=0.0, description="Coins traded (or targeted) at action +-1; at most "
                                                        f"{MAX_TRADE_PER_GROSS:g} x max(the book's gross "
                                                        "quantity, 1 coin).")
    action_mode: Literal["trade", "target", "delta"] = Field(
        "trade", description="Action is a trade, a target position, or a deviation from the full delta hedge."
    )
    min_trade: float = Field(0.0, ge=0.0, description="Orders below this many coins are not sent (lot size).")
    reward: Literal["mean_variance", "pnl", "terminal_pnl"] = Field("mean_variance")
    risk_aversion: float = Field(1.0, ge=0.0, le=1.0e4, description="Kolm-Ritter kappa, in units of pnl_scale_usd.")
    pnl_scale_usd: float | None = Field(
        None, gt=0.0, le=1.0e15, description="USD per reward unit; default 1e-3 of the book's gross notional; at "
                                             f"least {MIN_PNL_SCALE_PER_NOTIONAL:g} x max(that notional, 1 USD)."
    )
    funding_cost_of_capital: float = Field(0.05, ge=0.0, le=1.0, description="Cost of margin capital, per year.")
    initial_hedge: Literal["none", "delta"] = Field("none", description="Start flat or delta-hedged on spot.")

    @field_validator("venues")
    @classmethod
    def _venues_nonempty_unique(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("at least one venue is required (any of spot, perp, future)")
        if len(set(v)) != len(v):
            raise ValueError(f"venues must not repeat (got {v})")
        return sorted(v, key=VENUE_NAMES.index)

    @field_validator("lines")
    @classmethod
    def _book_nonempty(cls, v: list[OptionLine]) -> list[OptionLine]:
        if not v:
            raise ValueError("the agent's book needs at least one option line")
        return v


class EpisodeConfig(_Strict):
    """Time grid. The episode ends at the agent's last expiry (termination) or at the horizon."""

    horizon_days: float = Field(7.0, gt=0.0, le=3650.0, description="Truncation horizon, days.")
    dt_hours: float = Field(1.0, gt=0.0, le=24.0 * 30, description="Step length, hours (one second to 30 days).")

    @field_validator("dt_hours")
    @classmethod
    def _at_least_a_second(cls, v: float) -> float:
        if v < 1.0 / 3600.0:
            raise ValueError(f"must be at least one second (1/3600 hours) (got {v!r})")
        return v

    @property
    def dt(self) -> float:
        """Step length in years."""
        return self.dt_hours / HOURS_PER_YEAR

    @property
    def n_steps(self) -> int:
        """Steps to the horizon."""
        return int(round(self.horizon_days * 24.0 / self.dt_hours))

    @model_validator(mode="after")
    def _grid(self) -> EpisodeConfig:
        steps = self.horizon_days * 24.0 / self.dt_hours
        if abs(steps - round(steps)) > 1e-6 or round(steps) < 1:
            raise ValueError(
                f"horizon_days * 24 / dt_hours must be a whole number >= 1 (got {steps:g} steps)"
            )
        return self


class BaselinesConfig(_Strict):
    """The classical hedgers' parameters (:mod:`hedgegym.agents.baselines`); the envs ignore them."""

    venue: Literal["spot", "perp", "future", "cheapest"] | None = Field(
        None, description="Venue the hedgers trade, or 'cheapest' to route each trade by expected cost "
                          "per coin; default the first of agent.venues."
    )
    band_width: float = Field(
        0.05, ge=0.0, le=10.0, description="fixed_band: half-width of the no-trade band in net delta per coin "
                                           "of gross book quantity (0.05 = 6 coins for a 120-coin book)."
    )
    risk_aversion_usd: float | None = Field(
        None, gt=0.0, description="whalley_wilmott: absolute risk aversion gamma, per USD; default "
                                  "agent.risk_aversion / pnl_scale (the reward's kappa in USD)."
    )
    leland_interval_steps: int = Field(
        1, ge=1, description="leland: rebalance every this many steps (the interval of the Leland number)."
    )
    # 8 h, not the rest of the episode: a band hedger's trade is typically unwound within hours, and
    # charging a week of funding/basis per trade makes the router open offsetting perp and futures
    # legs whose basis risk doubles its P&L std (default scenario, 1,000 episodes: delta@cheapest
    # mean-variance -157k with the episode horizon, -78k with 8 h; whalley_wilmott@cheapest -86k vs -74k).
    route_horizon_hours: float | None = Field(
        8.0, gt=0.0, le=24.0 * 3650.0,
        description="cheapest routing: holding horizon of a hedge for funding, basis and capital "
                    "carry, hours (8 = one funding interval, at most ten years); null: the time left in the episode."
    )


# Jumps are rare events on the step grid, and the Poisson draw is exact far beyond 10 per step.
MAX_JUMPS_PER_STEP = 10.0
# The largest log-move of the exogenous price a scenario may plan for (six standard deviations plus
# drift over the episode): e^50 ~ 5e21, beyond any market, and far inside exp()'s range.
MAX_LOG_MOVE = 50.0


class ScenarioConfig(_Strict):
    """A whole scenario. ``ScenarioConfig()`` is the ``default`` scenario."""

    name: str = Field("custom", description="Scenario name, for reports.")
    description: str = Field("", description="One line for `hedgegym scenarios`.")
    market: MarketConfig = MarketConfig()
    venues: VenuesConfig = VenuesConfig()
    dealers: DealerConfig = DealerConfig()
    agent: AgentConfig = AgentConfig()
    episode: EpisodeConfig = EpisodeConfig()
    baselines: BaselinesConfig = BaselinesConfig()

    @model_validator(mode="after")
    def _cross_fields(self) -> ScenarioConfig:
        venue = self.baselines.venue
        if venue not in (None, "cheapest") and venue not in self.agent.venues:
            raise ValueError(f"baselines.venue={venue!r} is not one of agent.venues {self.agent.venues}")
        step_days = self.episode.dt_hours / 24.0
        for section, lines in (("agent", self.agent.lines), ("dealers", self.dealers.lines)):
            for i, line in enumerate(lines):
                n = line.expiry_days / step_days
                if section == "agent" and abs(n - round(n)) > 1e-6:
                    raise ValueError(
                        f"agent.lines.{i}.expiry_days={line.expiry_days:g} is not on the step grid "
                        f"(a multiple of episode.dt_hours/24 = {step_days:g} days)"
                    )
        return self

    @model_validator(mode="after")
    def _finite_dynamics(self) -> ScenarioConfig:
        """Bounds that involve the step, the horizon or the book: inside them every step is finite."""
        m, ag, dt = self.market, self.agent, self.episode.dt
        gross = sum(abs(line.quantity) for line in ag.lines)
        limit = MAX_TRADE_PER_GROSS * max(gross, 1.0)
        if ag.max_trade > limit:
            raise ValueError(f"agent.max_trade={ag.max_trade:g} is more than {MAX_TRADE_PER_GROSS:g} x max(the "
                             f"book's gross quantity {gross:g}, 1) = {limit:g} coins")
        notional = gross * m.spot0
        floor = MIN_PNL_SCALE_PER_NOTIONAL * max(notional, 1.0)
        if ag.pnl_scale_usd is not None and ag.pnl_scale_usd < floor:
            raise ValueError(f"agent.pnl_scale_usd={ag.pnl_scale_usd:g} is below {MIN_PNL_SCALE_PER_NOTIONAL:g} x "
                             f"max(the book's gross notional {notional:g}, 1) = {floor:g} USD")
        if m.heston.enabled and m.heston.kappa_v * dt > 1.0:
            # The Euler step v + kappa_v (theta_v - v) dt overshoots theta_v, and oscillates ever wider past 2.
            raise ValueError(f"market.heston.kappa_v={m.heston.kappa_v:g} is too fast for the step: kappa_v * dt "
                             f"= {m.heston.kappa_v * dt:g} must be <= 1 (kappa_v <= {1.0 / dt:g} per year at "
                             f"episode.dt_hours={self.episode.dt_hours:g})")
        lam = m.jumps.intensity if m.jumps.enabled else 0.0
        if lam * dt > MAX_JUMPS_PER_STEP:
            raise ValueError(f"market.jumps.intensity={lam:g} gives {lam * dt:g} expected jumps per step; at most "
                             f"{MAX_JUMPS_PER_STEP:g} (intensity <= {MAX_JUMPS_PER_STEP / dt:g} per year at "
                             f"episode.dt_hours={self.episode.dt_hours:g})")
        var = m.sigma ** 2
        if m.heston.enabled:
            var = max(var, m.heston.theta_v, m.heston.v0 or 0.0)
        years = self.episode_steps * dt
        drift = abs(m.mu - 0.5 * var + lam * m.jumps.mean) * years
        spread = 6.0 * math.sqrt((var + lam * (m.jumps.mean ** 2 + m.jumps.std ** 2)) * years)
        if drift + spread > MAX_LOG_MOVE:
            raise ValueError(
                f"market: the exogenous log-price's drift ({drift:.3g}) plus six standard deviations ({spread:.3g}) "
                f"over the episode's {years * DAYS_PER_YEAR:g} days exceed {MAX_LOG_MOVE:g} (a factor "
                f"e^{MAX_LOG_MOVE:g} either way is no market): lower market.sigma, market.mu, the jumps or "
                "the horizon"
            )
        return self

    @property
    def episode_steps(self) -> int:
        """Steps until termination (last agent expiry) or truncation (horizon), whichever first."""
        last = max(line.expiry_days for line in self.agent.lines)
        return min(self.episode.n_steps, int(round(last * 24.0 / self.episode.dt_hours)))

    @property
    def terminates(self) -> bool:
        """True when the episode ends at the book's expiry rather than at the horizon."""
        last = max(line.expiry_days for line in self.agent.lines)
        return int(round(last * 24.0 / self.episode.dt_hours)) <= self.episode.n_steps

    @property
    def pnl_scale(self) -> float:
        """USD per reward unit: ``agent.pnl_scale_usd`` or 1e-3 of the book's gross notional."""
        if self.agent.pnl_scale_usd is not None:
            return self.agent.pnl_scale_usd
        gross = sum(abs(line.quantity) for line in self.agent.lines) * self.market.spot0
        return max(gross * 1e-3, 1.0)


# --------------------------------------------------------------------------------------- loading
def format_validation_error(err: ValidationError, source: str = "", what: str = "config",
                            fields_module: str = "hedgegym.envs.config") -> str:
    """One line per problem: the dotted field, what is wrong, and the value given.

    Shared by every validated config (scenario, experiment) so that their messages read alike.
    """
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        prefix = f"{loc}: " if loc else ""  # a cross-field check's message names its fields itself
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            lines.append(f"  {loc}: unknown field (check the spelling; see `{fields_module}` for the fields) "
                         f"(got {e.get('input')!r})")
        elif e["type"] == "value_error" and ("got " in msg or not loc):
            lines.append(f"  {prefix}{msg}")  # the validator's message names the value already
        else:
            lines.append(f"  {prefix}{msg} (got {e.get('input')!r})")
    return f"invalid {what}{source}:\n" + "\n".join(lines)


def validate_config(data: Mapping[str, Any] | ScenarioConfig, source: str = "") -> ScenarioConfig:
    """Validate a mapping into a :class:`ScenarioConfig`, raising :class:`ConfigError` on any problem."""
    if isinstance(data, ScenarioConfig):
        return data
    if not isinstance(data, Mapping):
        raise ConfigError(f"invalid config{source}: expected a mapping of sections, got {type(data).__name__}")
    try:
        return ScenarioConfig.model_validate(dict(data))
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, source)) from None


def read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """Read a YAML mapping with ``safe_load``; malformed YAML raises :class:`ConfigError`."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"malformed YAML in {path}: {err}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections, got {type(data).__name__}")
    return data


def load_config(path: str | os.PathLike, overrides: Mapping[str, Any] | None = None) -> ScenarioConfig:
    """Load and validate a scenario YAML file, then apply dotted ``overrides`` (``market.sigma``)."""
    data = read_yaml(path)
    if overrides:
        data = apply_overrides(data, overrides)
    return validate_config(data, source=f" in {path}")


def apply_overrides(data: Mapping[str, Any], overrides: Mapping[str, Any], sep: str = ".") -> dict[str, Any]:
    """Return a copy of ``data`` with ``{"a.b.c": value}`` set at ``data["a"]["b"]["c"]``.

    Keys are split on ``sep`` (``.`` for the CLI's ``--set``; ``__`` for ``gymnasium.make`` keyword
    arguments, which cannot contain dots). Values that are strings are parsed as YAML scalars, so
    ``--set market.sigma=0.8`` gives a float. Unknown keys are caught by validation afterwards.
    """
    out: dict[str, Any] = _deep_copy(data)
    for key, value in overrides.items():
        parts = key.split(sep)
        if not all(parts):
            raise ConfigError(f"override key {key!r} is malformed (use section{sep}field)")
        node = out
        for p in parts[:-1]:
            child = node.get(p)
            if child is None:
                child = {}
            elif isinstance(child, BaseModel):
                child = child.model_dump()
            elif not isinstance(child, dict):
                raise ConfigError(f"override {key!r}: {p!r} is not a section (it holds {child!r})")
            node[p] = child
            node = child
        if isinstance(value, str):
            try:
                value = yaml.safe_load(value)
            except yaml.YAMLError as err:
                raise ConfigError(f"override {key!r}: cannot parse value {value!r}: {err}") from None
        node[parts[-1]] = value
    return out


def _deep_copy(data: Any) -> Any:
    if isinstance(data, Mapping):
        return {k: _deep_copy(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_deep_copy(v) for v in data]
    if isinstance(data, BaseModel):
        return data.model_dump()
    return data


def save_config(config: ScenarioConfig, path: str | os.PathLike) -> None:
    """Write ``config`` as YAML, atomically (write to a temp file, then rename)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
    os.replace(tmp, path)


# --------------------------------------------------------------------------------------- scenarios
def scenarios_dir() -> Path:
    """Folder of the named scenario YAMLs (``configs/scenarios`` of the checkout; env var overrides)."""
    env = os.environ.get("HEDGEGYM_SCENARIOS")
    return Path(env) if env else Path(__file__).resolve().parent.parent / "configs" / "scenarios"


def list_scenarios() -> dict[str, str]:
    """``{name: one-line description}`` of every named scenario, sorted by name."""
    out = {}
    for path in sorted(scenarios_dir().glob("*.yaml")):
        out[path.stem] = str(read_yaml(path).get("description", ""))
    return out


def load_scenario(name: str, overrides: Mapping[str, Any] | None = None) -> ScenarioConfig:
    """Load a named scenario (``default``, ``short-gamma-crash``, ...) with optional dotted overrides."""
    path = scenarios_dir() / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(list_scenarios()) or "(none found)"
        raise ConfigError(f"unknown scenario {name!r}; known scenarios: {known}")
    return load_config(path, overrides)


def resolve_scenario(scenario: str | None = None, config: str | os.PathLike | None = None,
                     overrides: Mapping[str, Any] | None = None) -> ScenarioConfig:
    """The scenario named ``scenario`` or loaded from the YAML file ``config`` (not both).

    Neither given: the ``default`` scenario. ``overrides`` are dotted keys (``market.sigma``).
    """
    if scenario is not None and config is not None:
        raise ConfigError("give either a scenario name or a config file, not both")
    if config is not None:
        return load_config(config, overrides)
    return load_scenario(scenario or "default", overrides)
