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
import re
import types
import typing
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from hedgegym.envs.atomic import write_text_atomic
from hedgegym.envs.layout import MAX_BUCKETS, MAX_COHORTS, MAX_LAG

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable  # Python >= 3.11; only a type here

HOURS_PER_YEAR = 365.0 * 24.0
DAYS_PER_YEAR = 365.0
VENUE_NAMES = ("spot", "perp", "future")


class ConfigError(ValueError):
    """A config field is missing, unknown, malformed or out of range. The message names it."""


# A number spelled as a string: YAML 1.1 (PyYAML) reads `5.0e7` and `1e-3` as strings.
_NUMBER = re.compile(r"[-+]?(?:\d[\d_]*(?:\.[\d_]*)?|\.\d[\d_]*)(?:[eE][-+]?\d+)?")


class StrictModel(BaseModel):
    """Base of every config model (scenario and experiment): unknown keys, NaN/inf and loose types
    are errors; models are frozen.

    Types are strict: a bool field takes only true/false, a number field only numbers (not
    true/false, not ``"0.8"``), a string field only strings, so ``--set market.sigma=true`` is an
    error rather than sigma = 1.0. One coercion on purpose: a float field takes a string that
    spells a number, because PyYAML reads ``5.0e7`` (no sign in the exponent) as a string. A tuple
    is taken for a list (Python callers).
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True, validate_default=True, strict=True)

    @model_validator(mode="before")
    @classmethod
    def _yaml_numbers(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        out = dict(data)
        for key, value in out.items():
            field = cls.model_fields.get(key)
            if field is None:
                continue
            if isinstance(value, str) and _takes_float(field.annotation) and _NUMBER.fullmatch(value.strip()):
                out[key] = float(value)
            elif isinstance(value, tuple):
                out[key] = list(value)
        return out


def _takes_float(annotation: Any) -> bool:
    return annotation is float or float in typing.get_args(annotation)


# --------------------------------------------------------------------------------------- market
class HestonConfig(StrictModel):
    """Heston variance, MODEL.md §2: v' = max(v + kappa_v (theta_v - v) dt + xi sqrt(v dt) W, 0)."""

    enabled: bool = Field(False, description="Use Heston variance instead of constant sigma^2.")
    # Variances up to 100 are vols up to 1,000 % (market.sigma's range); xi up to 10 is several times
    # the fitted BTC vol of variance (~1-3). kappa_v * dt is bounded in ScenarioConfig (Euler step).
    kappa_v: float = Field(5.0, ge=0.0, le=1.0e4, description="Mean-reversion speed of variance, per year.")
    theta_v: float = Field(0.36, gt=0.0, le=100.0, description="Long-run variance (0.36 = 60 % vol).")
    xi: float = Field(1.0, ge=0.0, le=10.0, description="Vol of variance, per sqrt(year).")
    rho_sv: float = Field(-0.6, ge=-1.0, le=1.0, description="corr(Z, W); negative: vol rises as price falls.")
    v0: float | None = Field(None, gt=0.0, le=100.0, description="Initial variance; default market.sigma^2.")


class JumpConfig(StrictModel):
    """Merton jumps, MODEL.md §2: N ~ Poisson(intensity dt) normal jumps N(mean, std^2) in log-price."""

    enabled: bool = Field(False, description="Add Merton jumps to the exogenous log-price.")
    # A log-jump of +-1 is a move of -63 % / +172 %; intensity * dt and the horizon's spread of the
    # log-price are bounded in ScenarioConfig, where the step and the horizon are known.
    intensity: float = Field(12.0, ge=0.0, le=1.0e5, description="lambda_j: expected jumps per year.")
    mean: float = Field(-0.03, ge=-1.0, le=1.0, description="mu_j: mean log-jump size.")
    std: float = Field(0.04, ge=0.0, le=1.0, description="sigma_j: std of the log-jump size.")


class CircuitBreakerConfig(StrictModel):
    """Trading halt after a large one-step move (MODEL.md §3)."""

    enabled: bool = Field(False, description="Halt dealer and agent trading after a large move.")
    halt_threshold: float = Field(0.10, gt=0.0, description="|log return| of one step that triggers a halt.")
    halt_steps: int = Field(1, ge=1, description="Steps the halt lasts.")


class ImpactConfig(StrictModel):
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


class SmileConfig(StrictModel):
    """Sticky-moneyness smile, MODEL.md §5: sigma_atm (1 + skew ln(K/S) + smile ln(K/S)^2), floored."""

    skew: float = Field(-0.15, ge=-10.0, le=10.0, description="Slope in log-moneyness.")
    smile: float = Field(0.8, ge=-10.0, le=100.0, description="Curvature in log-moneyness.")
    vol_premium: float = Field(0.05, gt=-1.0, le=5.0, description="sigma_atm = sqrt(v) (1 + vol_premium).")
    vol_floor: float = Field(0.05, gt=0.0, le=5.0, description="Lowest implied vol of any line.")


class ImpliedVolConfig(StrictModel):
    """ATM implied vol with dynamics of its own, coupled to spot (vanna; README "The market model"):
    ``ln s' = ln s + spot_beta (y' - y) + kappa dt (ln s_bar - ln s) + vol_of_vol sqrt(dt) Z`` with
    ``s_bar = (1 + vol_premium) sqrt((1 - w) v + w RV)`` (v: the exogenous variance, RV: the realised
    variance estimate, w: ``realised_weight``), within [smile.vol_floor, vol_cap]."""

    enabled: bool = Field(False, description="Give the ATM implied vol its own dynamics (off: sqrt(v)(1 + premium)).")
    # A DVOL rise from ~37 to ~44 on a day BTC fell ~6 % (CoinDesk, 2025) is ln(44/37)/ln(0.94) ~ -2.8.
    spot_beta: float = Field(-1.0, ge=-20.0, le=20.0, description="d ln sigma_atm / d ln S within a step.")
    kappa: float = Field(50.0, ge=0.0, le=1.0e5, description="Mean reversion of ln sigma_atm to its level, per year.")
    realised_weight: float = Field(0.5, ge=0.0, le=1.0, description="Weight of realised variance in the level.")
    vol_of_vol: float = Field(0.0, ge=0.0, le=20.0, description="Shocks of ln sigma_atm, per sqrt(year).")
    vol_cap: float = Field(5.0, gt=0.0, le=10.0, description="Highest ATM implied vol (500 %).")


class MarketConfig(StrictModel):
    """Exogenous dynamics and the microstructure shared by all venues."""

    spot0: float = Field(100_000.0, ge=1.0e-6, le=1.0e12, description="Initial spot, USD per coin.")
    mu: float = Field(0.0, ge=-10.0, le=10.0, description="Drift of the exogenous log-price, per year.")
    sigma: float = Field(0.60, gt=0.0, le=10.0, description="Exogenous volatility (DVOL 40-60 in 2025).")
    rate: float = Field(0.0, ge=-1.0, le=1.0, description="Carry rate r of the BSM model, per year.")
    heston: HestonConfig = HestonConfig()
    jumps: JumpConfig = JumpConfig()
    impact: ImpactConfig = ImpactConfig()
    smile: SmileConfig = SmileConfig()
    implied_vol: ImpliedVolConfig = ImpliedVolConfig()


# --------------------------------------------------------------------------------------- venues
# The thinnest book a venue may have: $1,000 per 1 % (the thinnest crypto pairs; BTC spot is ~$1e8).
MIN_DEPTH_USD = 1.0e3


class VenueConfig(StrictModel):
    """Costs, depth and feedback intensity of one venue (MODEL.md §4)."""

    fee: float = Field(0.0005, ge=0.0, lt=1.0, description="Fee as a fraction of traded notional.")
    half_spread: float = Field(0.0001, ge=0.0, lt=1.0, description="Half bid-ask spread, fraction of mid.")
    depth_usd_per_pct: float = Field(
        100.0e6,
        gt=0.0,
        description=f"USD notional that moves this venue's price by 1 % (>= {MIN_DEPTH_USD:g}); .inf: no impact.",
    )
    eta: float = Field(1.0, ge=0.0, le=100.0, description="Temporary-impact coefficient of execution price.")
    transmission: float = Field(1.0, ge=0.0, le=1.0, description="Share of this venue's push reaching spot.")
    margin: float = Field(1.0, gt=0.0, le=1.0, description="Capital tied up per USD of position.")

    # depth may be .inf (frictionless): allow inf for this one field only (of every venue class).
    model_config = ConfigDict(allow_inf_nan=True)

    @field_validator("*")
    @classmethod
    def _finite(cls, v: Any, info: ValidationInfo) -> Any:
        if info.field_name != "depth_usd_per_pct" and isinstance(v, float) and not math.isfinite(v):
            raise ValueError("must be finite")
        return v

    @field_validator("depth_usd_per_pct")
    @classmethod
    def _depth_is_a_market(cls, v: float) -> float:
        if math.isnan(v) or v < MIN_DEPTH_USD:
            raise ValueError(
                f"must be >= {MIN_DEPTH_USD:g} USD per 1 % (a thinner book moves the price "
                f"by orders of magnitude per coin), or .inf for no impact (got {v!r})"
            )
        return v


class LiquidationConfig(StrictModel):
    """Leveraged long and short positions on the perp and the exchange's liquidation engine (README
    "The market model"): ``buckets`` positions per side, entry prices ``spot0 exp(entry_dispersion z)``
    and leverages ``exp(ln leverage + leverage_dispersion z')`` at quantiles z, z' of N(0, 1); a long
    is liquidated when the perp mark falls to ``entry (1 - 1/L) / (1 - maintenance_margin)``, a short
    when it rises to ``entry (1 + 1/L) / (1 + maintenance_margin)``; liquidations are market orders on
    the perp; the insurance fund takes what margin is left and pays shortfalls; auto-deleveraging
    closes opposite positions when it is empty."""

    enabled: bool = Field(False, description="Leveraged perp positions that the exchange liquidates.")
    long_oi_usd: float = Field(0.0, ge=0.0, le=1.0e12, description="Leveraged long open interest at entry, USD.")
    short_oi_usd: float = Field(0.0, ge=0.0, le=1.0e12, description="Leveraged short open interest at entry, USD.")
    leverage: float = Field(10.0, ge=1.0, le=200.0, description="Median leverage.")
    leverage_dispersion: float = Field(0.5, ge=0.0, le=3.0, description="Std of ln leverage.")
    max_leverage: float = Field(125.0, ge=1.0, le=200.0, description="Leverages are capped here (Binance: 125x).")
    entry_dispersion: float = Field(0.03, ge=0.0, le=1.0, description="Std of ln(entry / spot0).")
    maintenance_margin: float = Field(0.005, ge=0.0, le=0.5, description="Maintenance margin, fraction of notional.")
    insurance_fund_usd: float = Field(0.0, ge=0.0, le=1.0e12, description="Insurance fund at the start, USD.")
    buckets: int = Field(64, ge=1, le=MAX_BUCKETS, description="Positions per side (the distribution's grid).")


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
    funding_interval_hours: float = Field(
        8.0, ge=1.0 / 60.0, le=HOURS_PER_YEAR, description="Funding is paid every this many hours."
    )
    interest: float = Field(0.0001, ge=-0.01, le=0.01, description="Interest component per funding interval.")
    funding_cap: float = Field(0.0075, ge=0.0, le=0.1, description="Funding rate clamp per interval.")
    liquidations: LiquidationConfig = LiquidationConfig()


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


class VenuesConfig(StrictModel):
    """The three venues. Which of them the agent trades is ``agent.venues``."""

    spot: VenueConfig = VenueConfig(
        fee=0.001, half_spread=0.0001, depth_usd_per_pct=100.0e6, transmission=1.0, margin=1.0
    )
    perp: PerpConfig = PerpConfig()
    future: FutureConfig = FutureConfig()


# --------------------------------------------------------------------------------------- books
class OptionLine(StrictModel):
    """One option line: ``quantity`` coins (signed, + long) of a European call or put."""

    # Bounds far outside any market (BTC options open interest is ~4e5 coins) that keep every mark,
    # greek and discount factor exp(-r tau) finite.
    strike: float = Field(ge=1.0e-6, le=1.0e12, description="Strike, USD.")
    expiry_days: float = Field(gt=0.0, le=36500.0, description="Expiry, days from the episode's start (> 0).")
    kind: Literal["call", "put"] = Field(description="call or put.")
    quantity: float = Field(
        ge=-1.0e12, le=1.0e12, description="Coins, signed from the holder's side: negative = short."
    )


def _strip(quantity: float, expiry_days: float, strikes: tuple[float, ...]) -> list[OptionLine]:
    return [
        OptionLine(strike=k, expiry_days=expiry_days, kind=kind, quantity=quantity)
        for k in strikes
        for kind in ("call", "put")
    ]


class VenueMix(StrictModel):
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


class CohortConfig(StrictModel):
    """One group of dealers: a share of the dealers' book and its own way of hedging it (README "The
    market model"). At the steps ``step % rebalance_every == offset`` it trades to ``-hedge_ratio x
    share x Delta`` of the book, Delta taken ``lag`` steps ago (0: at the clearing price), when that is
    more than ``band x share x`` (the book's gross quantity) coins from its hedge."""

    share: float = Field(gt=0.0, le=1.0, description="Share of the dealers' book (shares sum to 1).")
    hedge_ratio: float = Field(1.0, ge=0.0, le=5.0, description="Hedges toward -hedge_ratio * its delta.")
    band: float = Field(0.0, ge=0.0, le=10.0, description="No-trade band, delta per coin of its gross quantity.")
    rebalance_every: int = Field(1, ge=1, le=100_000, description="Trades every this many steps ...")
    offset: int = Field(0, ge=0, description="... at the steps with step % rebalance_every == offset.")
    lag: int = Field(0, ge=0, le=MAX_LAG, description="Hedges the delta of this many steps ago.")
    venue_mix: VenueMix = VenueMix()

    @model_validator(mode="after")
    def _offset_in_period(self) -> CohortConfig:
        if self.offset >= self.rebalance_every:
            raise ValueError(
                f"offset={self.offset} must be < rebalance_every={self.rebalance_every} (a step in each period)"
            )
        return self


class DealerConfig(StrictModel):
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
    cohorts: list[CohortConfig] = Field(
        default_factory=list,
        description=f"Dealer cohorts (at most {MAX_COHORTS}); empty: one uniform block with the "
        "hedge_ratio, venue_mix and rebalance_every above (which cohorts replace).",
    )

    @field_validator("cohorts")
    @classmethod
    def _cohort_shares(cls, v: list[CohortConfig]) -> list[CohortConfig]:
        if len(v) > MAX_COHORTS:
            raise ValueError(f"at most {MAX_COHORTS} cohorts (got {len(v)})")
        total = sum(c.share for c in v)
        if v and abs(total - 1.0) > 1e-9:
            raise ValueError(f"cohort shares must sum to 1 (got {total:g})")
        return v


# Limits relative to the book (checked in ScenarioConfig, which knows spot0): a trade limit beyond
# 1,000 x the book's gross quantity hedges nothing the book needs, and a reward unit below 1e-6 of
# its notional turns every step's P&L into a reward whose square overflows.
MAX_TRADE_PER_GROSS = 1.0e3
MIN_PNL_SCALE_PER_NOTIONAL = 1.0e-6


class AgentConfig(StrictModel):
    """The agent's desk: its options book, venues, action and reward (MODEL.md §6)."""

    lines: list[OptionLine] = Field(
        default_factory=lambda: _strip(-20.0, 7.0, (95_000.0, 100_000.0, 105_000.0)),
        description="The agent's options; the episode terminates at the last expiry.",
    )
    venues: list[Literal["spot", "perp", "future"]] = Field(
        default_factory=lambda: ["spot", "perp", "future"], description="Venues the agent may trade."
    )
    max_trade: float = Field(
        20.0,
        gt=0.0,
        description="Coins traded (or targeted) at action +-1; at most "
        f"{MAX_TRADE_PER_GROSS:g} x max(the book's gross "
        "quantity, 1 coin).",
    )
    action_mode: Literal["trade", "target", "delta"] = Field(
        "trade", description="Action is a trade, a target position, or a deviation from the full delta hedge."
    )
    min_trade: float = Field(0.0, ge=0.0, description="Orders below this many coins are not sent (lot size).")
    reward: Literal["mean_variance", "pnl", "terminal_pnl", "episode_mean_variance"] = Field(
        "mean_variance",
        description="Kolm-Ritter per step (mean_variance), its episode form telescoped over the "
        "P&L to date (episode_mean_variance), plain P&L per step, or the episode's P&L at its end.",
    )
    risk_aversion: float = Field(1.0, ge=0.0, le=1.0e4, description="Kolm-Ritter kappa, in units of pnl_scale_usd.")
    pnl_scale_usd: float | None = Field(
        None,
        gt=0.0,
        le=1.0e15,
        description="USD per reward unit; default 1e-3 of the book's gross notional; at "
        f"least {MIN_PNL_SCALE_PER_NOTIONAL:g} x max(that notional, 1 USD).",
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


class EpisodeConfig(StrictModel):
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
            raise ValueError(f"horizon_days * 24 / dt_hours must be a whole number >= 1 (got {steps:g} steps)")
        return self


class BaselinesConfig(StrictModel):
    """The classical hedgers' parameters (:mod:`hedgegym.agents.baselines`); the envs ignore them."""

    venue: Literal["spot", "perp", "future", "cheapest"] | None = Field(
        None,
        description="Venue the hedgers trade, or 'cheapest' to route each trade by expected cost "
        "per coin; default the first of agent.venues.",
    )
    band_width: float = Field(
        0.05,
        ge=0.0,
        le=10.0,
        description="fixed_band: half-width of the no-trade band in net delta per coin "
        "of gross book quantity (0.05 = 6 coins for a 120-coin book).",
    )
    risk_aversion_usd: float | None = Field(
        None,
        gt=0.0,
        description="whalley_wilmott: absolute risk aversion gamma, per USD; default "
        "agent.risk_aversion / pnl_scale (the reward's kappa in USD).",
    )
    leland_interval_steps: int = Field(
        1, ge=1, description="leland: rebalance every this many steps (the interval of the Leland number)."
    )
    # 8 h, not the rest of the episode: a band hedger's trade is typically unwound within hours, and
    # charging a week of funding/basis per trade makes the router open offsetting perp and futures
    # legs whose basis risk doubles its P&L std (default scenario, 1,000 episodes: delta@cheapest
    # mean-variance -157k with the episode horizon, -78k with 8 h; whalley_wilmott@cheapest -86k vs -74k).
    route_horizon_hours: float | None = Field(
        8.0,
        gt=0.0,
        le=24.0 * 3650.0,
        description="cheapest routing: holding horizon of a hedge for funding, basis and capital "
        "carry, hours (8 = one funding interval, at most ten years); null: the time left in the episode.",
    )


# Jumps are rare events on the step grid, and the Poisson draw is exact far beyond 10 per step.
MAX_JUMPS_PER_STEP = 10.0
# The largest log-move of the exogenous price a scenario may plan for (six standard deviations plus
# drift over the episode): e^50 ~ 5e21, beyond any market, and far inside exp()'s range.
MAX_LOG_MOVE = 50.0


class ScenarioConfig(StrictModel):
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
            raise ValueError(
                f"agent.max_trade={ag.max_trade:g} is more than {MAX_TRADE_PER_GROSS:g} x max(the "
                f"book's gross quantity {gross:g}, 1) = {limit:g} coins"
            )
        notional = gross * m.spot0
        floor = MIN_PNL_SCALE_PER_NOTIONAL * max(notional, 1.0)
        if ag.pnl_scale_usd is not None and ag.pnl_scale_usd < floor:
            raise ValueError(
                f"agent.pnl_scale_usd={ag.pnl_scale_usd:g} is below {MIN_PNL_SCALE_PER_NOTIONAL:g} x "
                f"max(the book's gross notional {notional:g}, 1) = {floor:g} USD"
            )
        if m.heston.enabled and m.heston.kappa_v * dt > 1.0:
            # The Euler step v + kappa_v (theta_v - v) dt overshoots theta_v, and oscillates ever wider past 2.
            raise ValueError(
                f"market.heston.kappa_v={m.heston.kappa_v:g} is too fast for the step: kappa_v * dt "
                f"= {m.heston.kappa_v * dt:g} must be <= 1 (kappa_v <= {1.0 / dt:g} per year at "
                f"episode.dt_hours={self.episode.dt_hours:g})"
            )
        if m.implied_vol.enabled and m.implied_vol.kappa * dt > 1.0:
            raise ValueError(
                f"market.implied_vol.kappa={m.implied_vol.kappa:g} is too fast for the step: kappa * dt "
                f"= {m.implied_vol.kappa * dt:g} must be <= 1 (kappa <= {1.0 / dt:g} per year at "
                f"episode.dt_hours={self.episode.dt_hours:g})"
            )
        if m.implied_vol.enabled and m.implied_vol.vol_cap < m.smile.vol_floor:
            raise ValueError(
                f"market.implied_vol.vol_cap={m.implied_vol.vol_cap:g} is below market.smile.vol_floor="
                f"{m.smile.vol_floor:g}"
            )
        lam = m.jumps.intensity if m.jumps.enabled else 0.0
        if lam * dt > MAX_JUMPS_PER_STEP:
            raise ValueError(
                f"market.jumps.intensity={lam:g} gives {lam * dt:g} expected jumps per step; at most "
                f"{MAX_JUMPS_PER_STEP:g} (intensity <= {MAX_JUMPS_PER_STEP / dt:g} per year at "
                f"episode.dt_hours={self.episode.dt_hours:g})"
            )
        var = m.sigma**2
        if m.heston.enabled:
            var = max(var, m.heston.theta_v, m.heston.v0 or 0.0)
        years = self.episode_steps * dt
        drift = abs(m.mu - 0.5 * var + lam * m.jumps.mean) * years
        spread = 6.0 * math.sqrt((var + lam * (m.jumps.mean**2 + m.jumps.std**2)) * years)
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
# What a field of each pydantic type error allows, for the one-line message.
_ALLOWED = {
    "float_type": "a number",
    "float_parsing": "a number",
    "finite_number": "a finite number",
    "int_type": "a whole number",
    "int_parsing": "a whole number",
    "int_from_float": "a whole number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "string_type": "a string",
    "list_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping of fields",
    "model_attributes_type": "a mapping of fields",
}
_BOUNDS = (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<="))


def format_validation_error(
    err: ValidationError, source: str = "", what: str = "config", model: type[BaseModel] | None = None
) -> str:
    """One line per problem: the dotted field, what is wrong or what it allows, and the value given.

    Shared by every validated config (scenario, experiment, baselines) so that their messages read
    alike. ``model`` (default :class:`ScenarioConfig`) names the module documenting the fields and
    gives the bounds of a field whose value has the wrong type.

    Example:
        >>> try:
        ...     ScenarioConfig.model_validate({"market": {"sigma": True}})
        ... except ValidationError as err:
        ...     print(format_validation_error(err, " in my.yaml"))
        invalid config in my.yaml:
          market.sigma: must be a number > 0 and <= 10 (got True)
    """
    model = model or ScenarioConfig
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        prefix = f"{loc}: " if loc else ""  # a cross-field check's message names its fields itself
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            lines.append(
                f"  {loc}: unknown field (check the spelling; see `{model.__module__}` for the fields) "
                f"(got {e.get('input')!r})"
            )
        elif e["type"] == "value_error" and ("got " in msg or not loc):
            lines.append(f"  {prefix}{msg}")  # the validator's message names the value already
        elif e["type"] in _ALLOWED:
            lines.append(f"  {prefix}must be {_ALLOWED[e['type']]}{_bounds(model, e['loc'])} (got {e.get('input')!r})")
        else:
            lines.append(f"  {prefix}{msg} (got {e.get('input')!r})")
    return f"invalid {what}{source}:\n" + "\n".join(lines)


def _bounds(model: type[BaseModel], loc: tuple) -> str:
    """`` > 0 and <= 10``: the numeric bounds of the field at ``loc`` (empty if none or not found)."""
    node: Any = model
    field = None
    for part in loc:
        node = _unwrap(node)
        if isinstance(part, int):
            args = typing.get_args(node)
            node = args[0] if typing.get_origin(node) is list and args else None
            continue
        if not (isinstance(node, type) and issubclass(node, BaseModel)) or part not in node.model_fields:
            return ""
        field = node.model_fields[part]
        node = field.annotation
    if field is None:
        return ""
    found = [
        f"{op} {getattr(m, attr):g}"
        for m in field.metadata
        for attr, op in _BOUNDS
        if isinstance(getattr(m, attr, None), (int, float))
    ]
    return " " + " and ".join(found) if found else ""


def _unwrap(annotation: Any) -> Any:
    """``X | None`` -> ``X``."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:
        return args[0]
    return annotation


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


class _DuplicateKey(yaml.YAMLError):
    def __init__(self, key: Any, line: int, first_line: int):
        super().__init__(f"duplicate key {key!r} at line {line} (first at line {first_line})")
        self.key, self.line, self.first_line = key, line, first_line


class _Loader(yaml.SafeLoader):
    """``yaml.safe_load`` that rejects a key repeated in one mapping (PyYAML keeps the last one,
    so a repeated section would silently replace the first)."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            first: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue  # `<<: *anchor` merges are YAML's own way to repeat keys
                key, line = self.construct_object(key_node, deep=True), key_node.start_mark.line + 1
                try:
                    if key in first:
                        raise _DuplicateKey(key, line, first[key])
                    first[key] = line
                except TypeError:
                    continue  # an unhashable key: PyYAML reports it itself
        return super().construct_mapping(node, deep=deep)


def parse_yaml(data: bytes | str, source: str) -> Any:
    """Parse YAML text with :class:`_Loader` (safe, duplicate keys rejected); ``source`` names it in errors.

    Bytes must be UTF-8. Every error is one :class:`ConfigError` naming the source and the line.

    Example:
        >>> parse_yaml("market:\\n  sigma: 0.8\\nmarket:\\n  mu: 0.1\\n", "my.yaml")
        Traceback (most recent call last):
        hedgegym.envs.config.ConfigError: my.yaml: duplicate key 'market' at line 3 (first at line 1): ...
    """
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError as err:
            line = data[: err.start].count(b"\n") + 1
            raise ConfigError(
                f"{source} is not UTF-8 text: byte 0x{data[err.start]:02x} at line {line} "
                "cannot be decoded (save the file as UTF-8)"
            ) from None
    try:
        return yaml.load(data, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
    except _DuplicateKey as err:
        raise ConfigError(
            f"{source}: duplicate key {err.key!r} at line {err.line} (first at line "
            f"{err.first_line}): a repeated key would replace the first; merge them into one"
        ) from None
    except yaml.YAMLError as err:
        raise ConfigError(f"malformed YAML in {source}: {' '.join(str(err).split())}") from None


def read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """Read a YAML mapping (:func:`parse_yaml`); a missing, unreadable or malformed file raises :class:`ConfigError`."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"config file {str(path)!r} is a directory, not a YAML file")
    if not path.exists():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    if not path.is_file():  # a device (/dev/null), a pipe, a socket: not a file holding a config
        raise ConfigError(f"config file {str(path)!r} is not a regular file")
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise ConfigError(f"cannot read config file {str(path)!r}: {err.strerror}") from None
    return _mapping(parse_yaml(raw, str(path)), str(path))


def _mapping(data: Any, source: str) -> dict[str, Any]:
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of sections, got {type(data).__name__}")
    return data


def flatten(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"market": {"sigma": 0.8}}`` -> ``{"market.sigma": 0.8}``; an empty mapping stays a value.

    Example:
        >>> flatten({"market": {"sigma": 0.8, "jumps": {"enabled": True}}, "agent.venues": ["spot"], "x": {}})
        {'market.sigma': 0.8, 'market.jumps.enabled': True, 'agent.venues': ['spot'], 'x': {}}
    """
    out: dict[str, Any] = {}
    for key, value in mapping.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, path + "."))
        else:
            out[path] = value
    return out


def apply_overrides(data: Mapping[str, Any] | BaseModel, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Return a copy of ``data`` with each override set: ``{"a.b.c": value}`` at ``data["a"]["b"]["c"]``.

    The one override syntax: dotted keys, and nested mappings, which merge field by field
    (``{"market": {"sigma": 0.8}}`` is ``{"market.sigma": 0.8}``: the rest of ``market`` stays).
    Values that are strings are parsed as YAML scalars, so ``--set market.sigma=0.8`` gives a
    float. Unknown keys and wrong types are caught by validation afterwards.
    """
    out: dict[str, Any] = _deep_copy(data)
    for key, value in flatten(overrides).items():
        parts = key.split(".")
        if not all(parts):
            raise ConfigError(f"override key {key!r} is malformed (use section.field)")
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
            value = parse_yaml(value, f"the value of override {key!r} ({value!r})")
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


def config_yaml(config: ScenarioConfig) -> str:
    """``config`` as YAML text that loads back equal (:func:`save_config` writes it)."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)


def save_config(config: ScenarioConfig, path: str | os.PathLike) -> None:
    """Write ``config`` as YAML, atomically (:func:`hedgegym.envs.atomic.write_text_atomic`)."""
    write_text_atomic(path, config_yaml(config))


# --------------------------------------------------------------------------------------- scenarios
DEFAULT_SCENARIO = "default"
# A scenario name: what a string source is when it is not a file path (no '/', no '.yaml').
_SCENARIO_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


def _scenario_files() -> dict[str, Traversable]:
    """The named scenarios, shipped as package data in ``hedgegym/envs/scenarios/*.yaml``."""
    folder = resources.files("hedgegym.envs") / "scenarios"
    return {f.name[:-5]: f for f in sorted(folder.iterdir(), key=lambda f: f.name) if f.name.endswith(".yaml")}


def _scenario_data(name: str) -> dict[str, Any]:
    files = _scenario_files()
    if name not in files:
        known = ", ".join(files) or "(none found)"
        raise ConfigError(
            f"unknown scenario {name!r}; known scenarios: {known} (a YAML file is given by its path, "
            "ending in .yaml or .yml)"
        )
    return _mapping(parse_yaml(files[name].read_bytes(), f"scenario {name!r}"), f"scenario {name!r}")


def list_scenarios() -> dict[str, str]:
    """``{name: one-line description}`` of every named scenario, sorted by name."""
    return {name: str(_scenario_data(name).get("description", "")) for name in _scenario_files()}


def scenario_text(name: str) -> str:
    """The YAML file of the named scenario, comments included: a starting point for your own.

    ``hedgegym scenarios NAME`` prints it (``> my.yaml``), ``--export DIR`` writes them all
    (:func:`export_scenarios`).
    """
    _scenario_data(name)  # a clear error for an unknown name
    return _scenario_files()[name].read_text(encoding="utf-8")


def export_scenarios(folder: str | os.PathLike) -> list[Path]:
    """Copy every named scenario's YAML into ``folder`` (created), as ``NAME.yaml``; returns the paths.

    An existing file is never replaced: :class:`ConfigError` names it and nothing is written.
    """
    folder = Path(folder)
    targets = {name: folder / f"{name}.yaml" for name in _scenario_files()}
    taken = [str(path) for path in targets.values() if path.exists()]
    if taken:
        raise ConfigError(
            f"--export {str(folder)!r}: {', '.join(taken)} already exist(s); choose an empty folder "
            "(files you may have edited are never replaced)"
        )
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"--export {str(folder)!r}: not a folder")
    for name, path in targets.items():
        write_text_atomic(path, scenario_text(name))
    return list(targets.values())


def load_scenario(name: str, overrides: Mapping[str, Any] | None = None) -> ScenarioConfig:
    """Load a named scenario (``default``, ``short-gamma-crash``, ...) with optional dotted overrides."""
    if not isinstance(name, str) or not _SCENARIO_NAME.fullmatch(name):
        raise ConfigError(f"scenario names are letters, digits, '-' and '_' (got {name!r}); see `hedgegym scenarios`")
    return resolve_config(name, overrides)


def load_config(path: str | os.PathLike, overrides: Mapping[str, Any] | None = None) -> ScenarioConfig:
    """Load and validate a scenario YAML file, then apply dotted ``overrides`` (``market.sigma``)."""
    return resolve_config(Path(path), overrides)


# --------------------------------------------------------------------------------------- the resolver
ConfigSource = ScenarioConfig | Mapping[str, Any] | str | os.PathLike | None


def resolve_config(
    source: ConfigSource = None, overrides: Mapping[str, Any] | None = None, *, label: str | None = None
) -> ScenarioConfig:
    """The one way from what a user gives to a validated :class:`ScenarioConfig`.

    Every entry point comes through here: the CLI's ``--scenario``/``--config``/``--set``, the envs'
    ``config=``/``scenario=``/``section__field=`` arguments, :func:`make_sb3_vec_env`,
    :func:`register_scenario`, :func:`hedgegym.train.evaluate.evaluate` and an experiment's
    ``scenario`` section. The data is validated once, after the overrides.

    Args:
        source: a :class:`ScenarioConfig`; a mapping of config sections; a path (``os.PathLike``,
            or a string ending in ``.yaml``/``.yml`` or holding a ``/``) of a scenario YAML file;
            any other string is the name of a built-in scenario; None: the ``default`` scenario.
        overrides: dotted keys and/or nested mappings, see :func:`apply_overrides`.
        label: how errors name the source (default: the file, the scenario name, or nothing).

    Example:
        >>> resolve_config("zero-dte", {"market.sigma": 0.9}).market.sigma
        0.9
        >>> resolve_config({"market": {"sigma": 0.3}}, {"market": {"jumps": {"enabled": True}}}).market.sigma
        0.3
        >>> resolve_config(overrides={"market.sigma": "true"})
        Traceback (most recent call last):
        hedgegym.envs.config.ConfigError: invalid config in scenario 'default' with overrides market.sigma:
          market.sigma: must be a number > 0 and <= 10 (got True)
    """
    if isinstance(source, ScenarioConfig):
        if not overrides:
            return source
        data, where = source, ""
    elif isinstance(source, Mapping):
        data, where = source, ""
    elif source is None or (isinstance(source, str) and _SCENARIO_NAME.fullmatch(source)):
        name = DEFAULT_SCENARIO if source is None else source
        data, where = _scenario_data(name), f" in scenario {name!r}"
    elif isinstance(source, (str, os.PathLike)):
        data, where = read_yaml(source), f" in {source}"
    else:
        raise ConfigError(
            f"a scenario is a ScenarioConfig, a mapping of sections, a YAML path or a scenario name "
            f"(got {type(source).__name__})"
        )
    if label is not None:
        where = label
    if overrides:
        data = apply_overrides(data, overrides)
        where += " with overrides " + ", ".join(flatten(overrides))
    return validate_config(data, source=where)


def resolve_scenario(
    scenario: str | None = None, config: str | os.PathLike | None = None, overrides: Mapping[str, Any] | None = None
) -> ScenarioConfig:
    """:func:`resolve_config` for the CLI's ``--scenario NAME`` / ``--config FILE`` pair (not both)."""
    if scenario is not None and config is not None:
        raise ConfigError("give either a scenario name or a config file, not both")
    if config is not None:
        return resolve_config(Path(config), overrides)
    return load_scenario(scenario or DEFAULT_SCENARIO, overrides)
