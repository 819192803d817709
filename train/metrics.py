"""Evaluation metrics (MODEL.md §7): per-episode values -> aggregates with bootstrap intervals.

Pure functions over arrays of per-episode values (one entry per episode, e.g. the output of
:meth:`hedgegym.envs.market.Market.episode_metrics`). Every statistic takes optional bootstrap
``weights[B, n]`` — how many times each of the ``n`` episodes appears in each of ``B`` resamples
— and then returns ``B`` values, one per resample; without weights it is the plain sample
statistic. One code path gives both the point estimate and its bootstrap distribution.

Statistics of the episode P&L ``X`` (USD; loss ``L = -X``), ``n`` episodes, population moments:

=======================  ==============================================================================
``pnl_mean``, ``pnl_std``  mean and standard deviation (ddof = 0) of X
``var_95``               value at risk of L at 95 %: the smallest l with F_n(l) >= 0.95, i.e. the
                         ceil(0.95 n)-th smallest loss
``cvar_95``              expected shortfall of L at 95 % (Acerbi & Tasche 2002, eq. 2.6 with the
                         fractional boundary term): the mean of the worst 5 % of the losses
``mean_variance``        mean(X) - kappa / (2 pnl_scale) var(X): the Kolm & Ritter (2019) objective
                         that the env's reward sums to (kappa = agent.risk_aversion); higher is better
``entropic_risk``        (1 / lambda) log E[exp(-lambda X)], lambda = kappa / pnl_scale per USD
                         (Föllmer & Schied 2002, ex. 4.13); the exponential-utility certainty-
                         equivalent loss; -mean(X) when lambda = 0
=======================  ==============================================================================

Costs and market: means per episode of ``fees``, ``slippage_usd``, ``funding``, ``carry``,
``turnover_usd``, ``n_trades``, ``crisis_steps``, ``halt_steps``, ``pin_distance(_exo)``;
``slippage_bps`` = sum of slippage / sum of traded notional x 1e4 (notional-weighted, what a desk's
TCA reports); ``vol_amplification`` = sqrt(sum of realised variance of spot / sum of realised
variance of the exogenous price) pooled over episodes (all of one length), and the agent's own share
``agent_vol_amplification`` = vol_amplification - the same with the agent's impact off (a rerun on
the same seeds).

Intervals: percentile bootstrap over episodes (Efron & Tibshirani 1993, ch. 13), 95 % by default,
always containing the point estimate (:func:`estimate`).
Two policies run on the same seeds are compared by the *paired* bootstrap: the same resampled
episode indices for both, so the interval of a difference reflects only the policies' difference,
not the paths' common luck. Resample b draws its n episodes from the kernel's counter-based
generator under a key of its own (:func:`bootstrap_counts`), so it is a pure function of the seed
and b: :func:`bootstrap_many` draws each chunk of resamples once and weighs every policy with it,
and compiled code draws the counts and the tail statistics (:func:`_resample_chunk`) while one
matrix product per chunk gives every mean.

Example:
    >>> import numpy as np
    >>> loss = np.arange(1.0, 21.0)            # 20 episodes, losses 1..20
    >>> float(value_at_risk(loss)), float(conditional_value_at_risk(loss))
    (19.0, 20.0)
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np
from numba import njit, prange

from hedgegym.envs.kernel import episode_key, mix64
from hedgegym.envs.layout import N_AUTOCORR_LAGS
from hedgegym.envs.market import SECOND_ORDER_METRICS

CONFIDENCE = 0.95
N_RESAMPLES = 1000
ALPHA = 0.95
# Resamples per chunk: at most 96 (groups of 8), and the weights matrix chunk x episodes float64 within 8 MB.
_CHUNK = 96
_CHUNK_BYTES = 8 << 20
# The bootstrap's random stream is the kernel's counter-based generator under its own key, derived
# from the seed through this constant: never the key of a simulated episode ("bootstrap" in ASCII).
_BOOTSTRAP_STREAM = np.uint64(0x626F6F7473747261)


@dataclass(frozen=True)
class Estimate:
    """A statistic and its bootstrap confidence interval ``[low, high]``."""

    value: float
    low: float
    high: float

    def as_dict(self) -> dict:
        """``{"value": v, "ci": [low, high]}`` (JSON-ready)."""
        return {"value": self.value, "ci": [self.low, self.high]}


@dataclass(frozen=True)
class MetricSpec:
    """How a metric is shown: label, unit, and which direction is better (None: neither)."""

    label: str
    unit: str
    better: str | None
    description: str


METRICS: dict[str, MetricSpec] = {
    "mean_variance": MetricSpec("mean-var", "USD", "max", "mean(pnl) - kappa / (2 pnl_scale) var(pnl)"),
    "pnl_mean": MetricSpec("P&L mean", "USD", "max", "mean hedging P&L per episode"),
    "pnl_std": MetricSpec("P&L std", "USD", "min", "std of hedging P&L per episode"),
    "var_95": MetricSpec("VaR95", "USD", "min", "95 % value at risk of the loss"),
    "cvar_95": MetricSpec("CVaR95", "USD", "min", "95 % expected shortfall of the loss"),
    "entropic_risk": MetricSpec("entropic", "USD", "min", "(1/lambda) log E exp(-lambda pnl)"),
    "slippage_usd": MetricSpec("slippage", "USD", "min", "slippage per episode"),
    "slippage_bps": MetricSpec("slip bps", "bps", "min", "slippage over traded notional"),
    "fees": MetricSpec("fees", "USD", "min", "fees per episode"),
    "funding": MetricSpec("funding", "USD", "min", "perp funding paid per episode (< 0: received)"),
    "carry": MetricSpec("carry", "USD", "min", "cost of margin capital per episode"),
    "turnover_usd": MetricSpec("turnover", "USD", "min", "traded notional per episode"),
    "n_trades": MetricSpec("trades", "", "min", "venue trades per episode"),
    "vol_amplification": MetricSpec("vol amp", "x", "min", "realised vol of spot / of exogenous price"),
    "vol_amplification_no_agent_impact": MetricSpec(
        "amp w/o agent", "x", None, "vol amplification with the agent's impact off"
    ),
    "agent_vol_amplification": MetricSpec("agent amp", "x", "min", "the agent's own share of the amplification"),
    "pin_distance": MetricSpec("pin dist", "", None, "|final spot - pin strike| / pin strike"),
    "pin_distance_exo": MetricSpec("pin dist exo", "", None, "the same for the exogenous price"),
    "crisis_steps": MetricSpec("crisis", "steps", "min", "liquidity-crisis steps per episode"),
    "halt_steps": MetricSpec("halts", "steps", "min", "circuit-breaker halted steps per episode"),
    "reward": MetricSpec("reward", "", "max", "sum of the env's reward per episode"),
    **{
        key: MetricSpec(label, unit, None, SECOND_ORDER_METRICS[key] + how)
        for key, (label, unit, how) in {
            "flow_gamma_usd": ("flow gamma", "USD", ", per episode"),
            "flow_vanna_usd": ("flow vanna", "USD", ", per episode"),
            "flow_charm_usd": ("flow charm", "USD", ", per episode"),
            "flow_other_usd": ("flow other", "USD", ", per episode"),
            "mean_phi_vanna": ("psi (vanna)", "", ", mean over episodes"),
            "max_atm_vol": ("max ATM vol", "", ", mean over episodes"),
            "crowding": ("crowding", "", ", mean over episodes"),
            "cohort_trade_share": ("cohort trades", "", ", mean over episodes"),
            **{
                f"return_autocorr_{lag}": (f"autocorr {lag}", "", ", pooled over episodes")
                for lag in range(1, N_AUTOCORR_LAGS + 1)
            },
            "liquidated_long_usd": ("liq. longs", "USD", ", per episode"),
            "liquidated_short_usd": ("liq. shorts", "USD", ", per episode"),
            "liquidation_steps": ("liq. steps", "steps", ", per episode"),
            "max_cascade_rounds": ("cascade rounds", "", ", mean over episodes"),
            "max_cascade_steps": ("cascade run", "steps", ", mean over episodes"),
            "insurance_fund_usd": ("insurance fund", "USD", ", mean over episodes"),
            "adl_events": ("ADL events", "", ", per episode"),
            "adl_usd": ("ADL notional", "USD", ", per episode"),
        }.items()
    },
}
"""Every aggregate :func:`episode_statistics` returns, in report order. The second-order market's
(:data:`hedgegym.envs.market.SECOND_ORDER_METRICS`) only where the episodes have them (a scenario
with a second-order feature on); they describe the market, so none has a better direction."""

SECOND_ORDER = tuple(k for k in SECOND_ORDER_METRICS if not k.startswith("return_autocorr_"))
"""The second-order columns whose statistic is their mean over episodes; the return autocorrelations
are pooled instead, ``sum_j autocorr_j sum_r2_j / sum_j sum_r2_j`` (``sum r_k r_(k-l) / sum r_k^2``
over every episode's returns), as ``hedgegym simulate`` reports them."""
AUTOCORR_LAGS = tuple(range(1, N_AUTOCORR_LAGS + 1))

_MEANS = (
    "slippage_usd",
    "fees",
    "funding",
    "carry",
    "turnover_usd",
    "n_trades",
    "pin_distance",
    "pin_distance_exo",
    "crisis_steps",
    "halt_steps",
    "reward",
)


# ------------------------------------------------------------------------------------ statistics
def _means(columns: np.ndarray, weights: np.ndarray | None, total: float | None = None) -> np.ndarray:
    """Weighted means ``[B, k]`` of the columns ``[n, k]`` (``B = 1`` without weights); ``total``:
    the sum of every row of weights when known (n for resample counts).

    Without weights, NumPy's mean; with them, one compiled pass (:func:`_weighted_sums`) serves
    every statistic of a resample chunk, which matters at 10,000 episodes x 1,000 resamples.
    """
    if weights is None:
        return columns.mean(axis=0, keepdims=True)
    w = np.ascontiguousarray(weights, dtype=np.float64)
    sums = np.empty((w.shape[0], columns.shape[1]))
    _weighted_sums(w, np.ascontiguousarray(columns.T), sums)
    return sums / (w.sum(axis=1, keepdims=True) if total is None else total)


# Weighted sums leave their summation order to the vectoriser (like a BLAS matrix product): the same
# numbers for a given machine and build, which may differ from another's in the last bits.
_SUM_FLAGS = {"reassoc", "contract"}
_GROUP = 8
"""Resamples whose weighted sums share each pass over a column."""


@njit(cache=True, _nrt=False, fastmath=_SUM_FLAGS)
def _dot_group(w, r, x, out, c):
    """``out[r + q, c] = w[r + q] . x`` for the 8 rows ``r .. r + 7``: one pass over ``x``."""
    s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = 0.0
    for i in range(x.shape[0]):
        xi = x[i]
        s0 += w[r, i] * xi
        s1 += w[r + 1, i] * xi
        s2 += w[r + 2, i] * xi
        s3 += w[r + 3, i] * xi
        s4 += w[r + 4, i] * xi
        s5 += w[r + 5, i] * xi
        s6 += w[r + 6, i] * xi
        s7 += w[r + 7, i] * xi
    out[r, c], out[r + 1, c], out[r + 2, c], out[r + 3, c] = s0, s1, s2, s3
    out[r + 4, c], out[r + 5, c], out[r + 6, c], out[r + 7, c] = s4, s5, s6, s7


@njit(cache=True, _nrt=False, fastmath=_SUM_FLAGS)
def _dot_row(w, r, x):
    s = 0.0
    for i in range(x.shape[0]):
        s += w[r, i] * x[i]
    return s


@njit(cache=True, _nrt=False)
def _row_sums(w, lo, hi, columns, out):
    """``out[r, c] = sum_i w[r, i] columns[c, i]`` for the rows ``lo:hi`` of ``w[B, n]``, columns
    ``[k, n]``: rows in groups of :data:`_GROUP`, each column read once per group."""
    for c in range(columns.shape[0]):
        r = lo
        while r + _GROUP <= hi:
            _dot_group(w, r, columns[c], out, c)
            r += _GROUP
        while r < hi:
            out[r, c] = _dot_row(w, r, columns[c])
            r += 1


@njit(cache=True, parallel=True, _nrt=False)
def _weighted_sums(w, columns, out):
    """:func:`_row_sums` of every row of ``w[B, n]``, groups of rows spread over threads."""
    rows = w.shape[0]
    for g in prange((rows + _GROUP - 1) // _GROUP):
        _row_sums(w, g * _GROUP, min((g + 1) * _GROUP, rows), columns, out)


def _out(values: np.ndarray, weights: np.ndarray | None):
    return values[0] if weights is None else values


def _moment_columns(x: np.ndarray) -> tuple[np.ndarray, float]:
    """``([x - c, (x - c)^2], c)`` with ``c`` the sample mean: centring first keeps var accurate."""
    centre = float(x.mean()) if x.size else 0.0
    d = x - centre
    return np.column_stack([d, d * d]), centre


def _moments_from(means: np.ndarray, centre: float) -> tuple[np.ndarray, np.ndarray]:
    """(mean, population variance) from the means of :func:`_moment_columns`."""
    m = means[:, 0]
    return centre + m, np.maximum(means[:, 1] - m * m, 0.0)


def _exp_column(pnl: np.ndarray, lam: float) -> tuple[np.ndarray, float]:
    """``(exp(-lam pnl - top), top)``: shifted by the largest exponent so nothing overflows."""
    z = -lam * pnl
    top = float(z.max())
    return np.exp(z - top), top


def _entropic_from(
    mean_exp: np.ndarray, top: float, pnl: np.ndarray, lam: float, weights: np.ndarray | None
) -> np.ndarray:
    """``(top + log mean exp(-lam pnl - top)) / lam`` per resample, from the means of
    :func:`_exp_column`. A resample that misses the worst episodes by hundreds of e-folds underflows
    the shared shift to 0; those few are recomputed with their own shift."""
    out = top + np.log(np.maximum(mean_exp, np.finfo(float).tiny))
    lost = mean_exp < 1e-250
    if weights is not None and np.any(lost):
        w = np.asarray(weights, dtype=np.float64)[lost]
        z = np.where(w > 0.0, -lam * pnl, -np.inf)
        tops = z.max(axis=1)
        out[lost] = tops + np.log((w * np.exp(z - tops[:, None])).sum(axis=1) / w.sum(axis=1))
    return out / lam


def _ratio(num: np.ndarray, den: np.ndarray, empty: float) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0.0, num / den, empty)


def weighted_mean(x, weights=None):
    """Mean of ``x[n]``; with ``weights[B, n]``, the ``B`` weighted means."""
    x = np.asarray(x, dtype=np.float64)
    return _out(_means(x[:, None], weights)[:, 0], weights)


def weighted_moments(x, weights=None):
    """``(mean, variance)`` of ``x`` (population, ddof = 0)."""
    columns, centre = _moment_columns(np.asarray(x, dtype=np.float64))
    mean, var = _moments_from(_means(columns, weights), centre)
    return _out(mean, weights), _out(var, weights)


def mean_variance_objective(pnl, risk_aversion: float, pnl_scale: float, weights=None):
    """``mean(pnl) - risk_aversion / (2 pnl_scale) var(pnl)`` in USD (Kolm & Ritter 2019, eq. 7).

    ``risk_aversion`` is the reward's kappa per ``pnl_scale`` USD, so a per-USD coefficient of
    ``kappa / pnl_scale``: the objective the sum of the env's mean-variance rewards estimates.

    Example:
        >>> float(mean_variance_objective([100.0, -100.0], risk_aversion=1.0, pnl_scale=1000.0))
        -5.0
    """
    m, var = weighted_moments(pnl, weights)
    return m - risk_aversion / (2.0 * pnl_scale) * var


def entropic_risk(pnl, risk_aversion_usd: float, weights=None):
    """Entropic risk ``(1/lambda) log E[exp(-lambda pnl)]`` in USD, ``lambda`` per USD (>= 0).

    The loss certainty equivalent under exponential utility (Föllmer & Schied 2002); computed as a
    log-sum-exp so that large losses do not overflow. ``lambda = 0``: ``-mean(pnl)``.

    Example:
        >>> round(float(entropic_risk([0.0, -100.0], risk_aversion_usd=0.01)), 4)   # log((1 + e) / 2) / 0.01
        62.0115
    """
    x = np.asarray(pnl, dtype=np.float64)
    if risk_aversion_usd == 0.0:
        return -weighted_mean(x, weights)
    column, top = _exp_column(x, risk_aversion_usd)
    values = _entropic_from(_means(column[:, None], weights)[:, 0], top, x, risk_aversion_usd, weights)
    return _out(values, weights)


@njit(cache=True, _nrt=False, error_model="numpy")
def _tail_row(values, order, weights, total, alpha):
    """``(VaR, ES)`` at ``alpha`` of the losses ``values`` sorted ascending (``values[k] =
    loss[order[k]]``) under the weights ``weights[n]`` (episode order) of sum ``total``.

    With ``cum_k`` the weight of the k smallest losses and ``L = alpha T``, VaR is the first sorted
    loss with ``cum_k >= L``, and ES sums ``clip(cum_k - L, 0, w_k) v_k / (T - L)``: the mass of each
    loss inside the worst ``(1 - alpha)`` share. Only that tail is visited, from the worst loss down,
    with ``cum_k = T - (weight above k)``: exact for counts (integers), so the VaR's index is the
    one a full cumulative sum finds.
    """
    n = values.shape[0]
    level = alpha * total
    # The relative tolerance keeps alpha * n = 19.000000000000004 from skipping to the 20th loss.
    threshold = level * (1.0 - 1e-12)
    above = 0.0
    tail = 0.0
    k = n - 1
    while k >= 0:
        w = weights[order[k]]
        cum = total - above
        if cum < threshold:
            break
        tail += min(max(cum - level, 0.0), w) * values[k]
        above += w
        k -= 1
    return values[min(k + 1, n - 1)], tail / (total - level)


@njit(cache=True, _nrt=False, error_model="numpy")
def _tail_scan(values, order, weights, totals, alpha, var, es):
    """:func:`_tail_row` of each row of ``weights[B, n]``, of sums ``totals[B]``."""
    for b in range(weights.shape[0]):
        var[b], es[b] = _tail_row(values, order, weights[b], totals[b], alpha)


def _tail_risk(
    loss: np.ndarray, weights: np.ndarray | None, alpha: float, prepared=None
) -> tuple[np.ndarray, np.ndarray]:
    """``(VaR, ES)`` of ``loss`` at ``alpha`` per resample, from one sort (see the two functions below)."""
    order, values = prepared if prepared is not None else _sorted_losses(loss)
    w = np.ones((1, loss.shape[0])) if weights is None else np.ascontiguousarray(weights, dtype=np.float64)
    var, es = np.empty(w.shape[0]), np.empty(w.shape[0])
    _tail_scan(values, order, w, w.sum(axis=1), alpha, var, es)
    return var, es


def _sorted_losses(loss: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(loss, kind="stable")
    return order, loss[order]


def value_at_risk(loss, alpha: float = ALPHA, weights=None):
    """Value at risk of ``loss`` at level ``alpha``: ``inf {l : F_n(l) >= alpha}``, the
    ``ceil(alpha n)``-th smallest loss (the lower empirical quantile; McNeil, Frey & Embrechts 2015,
    def. 2.8).

    Example:
        >>> float(value_at_risk(np.arange(1.0, 101.0), 0.95))   # the 95th of 100
        95.0
    """
    return _out(_tail_risk(np.asarray(loss, dtype=np.float64), weights, alpha)[0], weights)


def conditional_value_at_risk(loss, alpha: float = ALPHA, weights=None):
    """Expected shortfall of ``loss`` at ``alpha``: the mean of the worst ``(1 - alpha)`` share.

    Acerbi & Tasche (2002), *On the coherence of expected shortfall*, eq. (2.6): with
    ``m = (1 - alpha) n``, the sum of the ``floor(m)`` largest losses plus ``m - floor(m)`` times the
    next one, over ``m``. Always >= the VaR; coherent.

    Example:
        >>> float(conditional_value_at_risk(np.arange(1.0, 41.0), 0.95))   # mean of 39 and 40
        39.5
    """
    return _out(_tail_risk(np.asarray(loss, dtype=np.float64), weights, alpha)[1], weights)


def pooled_ratio(numerator, denominator, weights=None, scale: float = 1.0, empty: float = 0.0):
    """``scale * sum(numerator) / sum(denominator)`` (``empty`` where the denominator sums to 0)."""
    columns = np.column_stack([np.asarray(numerator, dtype=np.float64), np.asarray(denominator, dtype=np.float64)])
    means = _means(columns, weights)
    return _out(_ratio(scale * means[:, 0], means[:, 1], empty), weights)


def vol_amplification(realised_vol, realised_vol_exo, weights=None):
    """Pooled amplification ``sqrt(sum rv^2 / sum rv_exo^2)`` over episodes of equal length.

    Example:
        >>> round(float(vol_amplification([0.66, 0.55], [0.6, 0.5])), 6)   # both paths 10 % up
        1.1
    """
    rv = np.asarray(realised_vol, dtype=np.float64)
    rx = np.asarray(realised_vol_exo, dtype=np.float64)
    return np.sqrt(pooled_ratio(rv * rv, rx * rx, weights, empty=1.0))


class _Episodes:
    """One policy's per-episode values as the columns every statistic is a weighted mean of, and its
    losses sorted once: prepared once, then evaluated on the sample and on every resample chunk."""

    def __init__(self, per_episode: Mapping[str, np.ndarray], risk_aversion: float, pnl_scale: float, alpha: float):
        pnl = np.asarray(per_episode["pnl"], dtype=np.float64)
        self.pnl, self.alpha = pnl, alpha
        self.lam = lam = risk_aversion / pnl_scale
        moments, self.centre = _moment_columns(pnl)
        exp_column, self.top = _exp_column(pnl, lam) if lam > 0.0 else (np.zeros_like(pnl), 0.0)
        columns = {"moment": moments[:, 0], "moment2": moments[:, 1], "exp": exp_column}
        vols = {
            k: np.asarray(per_episode[k], dtype=np.float64) ** 2
            for k in ("realised_vol", "realised_vol_exo", "realised_vol_no_agent_impact")
            if k in per_episode
        }
        columns.update(vols)
        columns.update(
            {
                k: np.asarray(per_episode[k], dtype=np.float64)
                for k in ("turnover_usd", *_MEANS, *SECOND_ORDER)
                if k in per_episode
            }
        )
        if "return_autocorr_1" in per_episode:
            r2 = np.asarray(per_episode["sum_r2"], dtype=np.float64)
            columns["sum_r2"] = r2
            columns.update(
                {f"sum_rr_{lag}": np.asarray(per_episode[f"return_autocorr_{lag}"]) * r2 for lag in AUTOCORR_LAGS}
            )
        self.names = list(columns)
        self.losses = _sorted_losses(-pnl)
        # The sample statistics from NumPy's mean over episodes; the resamples' from the columns as rows.
        stacked = np.column_stack(list(columns.values()))
        self.point = self._statistics(
            stacked.mean(axis=0, keepdims=True), None, _tail_risk(-pnl, None, alpha, self.losses)
        )
        self.columns = np.ascontiguousarray(stacked.T)

    def statistics(self, weights=None, tail=None, sums=None) -> dict[str, np.ndarray | float]:
        """Every metric: floats (the sample), or one value per row of ``weights[B, n]``; for resample
        counts, ``tail`` (VaR, ES) and ``sums[B, k]`` (of each column) come computed
        (:func:`_resample_chunk`), and every row sums to n."""
        if weights is None:
            return self.point
        weights = np.asarray(weights, dtype=np.float64)
        if sums is None:
            means = _means(self.columns.T, weights)
        else:
            means = sums / float(weights.shape[1])
        tail = tail if tail is not None else _tail_risk(-self.pnl, weights, self.alpha, self.losses)
        return self._statistics(means, weights, tail)

    def _statistics(self, means: np.ndarray, weights, tail) -> dict[str, np.ndarray | float]:
        lam = self.lam
        means = dict(zip(self.names, means.T, strict=True))
        mean, var = _moments_from(np.column_stack([means["moment"], means["moment2"]]), self.centre)
        var_95, cvar_95 = tail
        out: dict[str, np.ndarray] = {
            "mean_variance": mean - lam / 2.0 * var,
            "pnl_mean": mean,
            "pnl_std": np.sqrt(var),
            "var_95": var_95,
            "cvar_95": cvar_95,
            "entropic_risk": _entropic_from(means["exp"], self.top, self.pnl, lam, weights) if lam > 0.0 else -mean,
            "slippage_bps": _ratio(1e4 * means["slippage_usd"], means["turnover_usd"], 0.0),
            "vol_amplification": np.sqrt(_ratio(means["realised_vol"], means["realised_vol_exo"], 1.0)),
        }
        if "realised_vol_no_agent_impact" in means:
            without = np.sqrt(_ratio(means["realised_vol_no_agent_impact"], means["realised_vol_exo"], 1.0))
            out["vol_amplification_no_agent_impact"] = without
            out["agent_vol_amplification"] = out["vol_amplification"] - without
        out.update({k: means[k] for k in (*_MEANS, *SECOND_ORDER) if k in means})
        if "sum_r2" in means:
            out.update(
                {
                    f"return_autocorr_{lag}": _ratio(means[f"sum_rr_{lag}"], means["sum_r2"], 0.0)
                    for lag in AUTOCORR_LAGS
                }
            )
        return {k: (float(out[k][0]) if weights is None else out[k]) for k in METRICS if k in out}


def episode_statistics(
    per_episode: Mapping[str, np.ndarray], risk_aversion: float, pnl_scale: float, weights=None, alpha: float = ALPHA
) -> dict[str, np.ndarray | float]:
    """Every aggregate of :data:`METRICS` from per-episode values (keys of ``Market.episode_metrics``
    plus ``realised_vol_no_agent_impact`` from the rerun with the agent's impact off; without it
    the amplification metrics of that rerun are left out).

    The same formulas as the functions above, with all weighted means of a resample chunk from one
    matrix product. Returns floats, or ``B`` values per metric with ``weights[B, n]``.
    """
    return _Episodes(per_episode, risk_aversion, pnl_scale, alpha).statistics(weights)


# ------------------------------------------------------------------------------------ bootstrap
@njit(cache=True)
def _resample_stream(seed):
    """The key from which resample b's key is derived (``episode_key(stream, b)``)."""
    return mix64(np.uint64(seed) ^ _BOOTSTRAP_STREAM)


_SPLITMIX_STEP = np.uint64(0x9E3779B97F4A7C15)
"""SplitMix64's increment (Steele, Lea & Flood 2014): output j of a key is mix64(key + (j + 1) step)."""
_LOW32, _SHIFT32 = np.uint64(0xFFFFFFFF), np.uint64(32)


@njit(cache=True, _nrt=False)
def _draw_counts(key, n, drawn):
    """``drawn[i]``: how often episode i is drawn in n draws with replacement under ``key``. Output
    j of SplitMix64 gives draws 2j and 2j + 1, its high and low 32 bits u, as episode
    ``floor(u n / 2^32)`` (no bin is more likely than another by more than n / 2^32)."""
    size = np.uint64(n)
    for i in range(n):
        drawn[i] = 0
    for j in range((n + 1) // 2):
        bits = mix64(key + (np.uint64(j) + np.uint64(1)) * _SPLITMIX_STEP)
        drawn[((bits >> _SHIFT32) * size) >> _SHIFT32] += 1
        if 2 * j + 1 < n:
            drawn[((bits & _LOW32) * size) >> _SHIFT32] += 1


@njit(cache=True, parallel=True, error_model="numpy")
def _resample_chunk(stream, first, orders, values, columns, alpha, scratch, counts, sums, var, es):
    """Resamples ``first, first + 1, ...`` into ``counts[b, n]``, and every policy's statistics of them.

    Resample b draws n episodes with replacement under its key ``episode_key(stream, b)``
    (:func:`_draw_counts`, into a row of ``scratch[groups, n]``: 16-bit counts while n < 2^16, so a
    row stays in a core's first-level cache). Per policy p: ``orders[p]`` and ``values[p]`` its
    losses sorted (:func:`_sorted_losses`), ``columns[p]`` its columns ``[k, n]``; out:
    ``sums[p, b]``, the weighted sums of each column, and ``var[p, b]``, ``es[p, b]``
    (:func:`_tail_row`). Groups of :data:`_GROUP` resamples are spread over threads, and computed
    while their counts are in cache.
    """
    rows, n = counts.shape
    for g in prange((rows + _GROUP - 1) // _GROUP):
        lo, hi = g * _GROUP, min((g + 1) * _GROUP, rows)
        drawn = scratch[g]
        for r in range(lo, hi):
            _draw_counts(episode_key(stream, first + np.uint64(r)), n, drawn)
            for i in range(n):
                counts[r, i] = drawn[i]
            for p in range(orders.shape[0]):
                var[p, r], es[p, r] = _tail_row(values[p], orders[p], counts[r], float(n), alpha)
        for p in range(columns.shape[0]):
            _row_sums(counts, lo, hi, columns[p], sums[p])


def _resamples(n: int, n_resamples: int, seed: int, episodes=(), alpha: float = ALPHA, chunk: int = _CHUNK):
    """Chunks ``(counts[b, n], sums[P, b, k], var[P, b], es[P, b])`` of :func:`_resample_chunk` for
    the prepared policies ``episodes`` (:class:`_Episodes`, all with the same columns). A column
    that is zero on every episode of every policy (a cost the scenario does not charge) is not
    summed: its sums are 0, exactly what summing gives."""
    if n < 1:
        raise ValueError(f"bootstrap needs at least one episode (got {n})")
    if not 0 <= seed < 2**64:
        raise ValueError(f"bootstrap seed must be in [0, 2**64) (got {seed})")
    stream = np.uint64(_resample_stream(np.uint64(seed)))
    p = len(episodes)
    orders = np.array([e.losses[0] for e in episodes], dtype=np.int64).reshape(p, n)
    values = np.array([e.losses[1] for e in episodes], dtype=np.float64).reshape(p, n)
    k = episodes[0].columns.shape[0] if episodes else 0
    columns = np.array([e.columns for e in episodes], dtype=np.float64).reshape(p, k, n)
    summed = np.flatnonzero(np.any(columns != 0.0, axis=(0, 2)))
    columns = np.ascontiguousarray(columns[:, summed])
    rows = _chunk_rows(n, chunk)
    scratch = np.empty(((rows + _GROUP - 1) // _GROUP, n), dtype=np.uint16 if n < 2**16 else np.int64)
    for first in range(0, n_resamples, rows):
        b = min(rows, n_resamples - first)
        counts, sums = np.empty((b, n)), np.zeros((p, b, k))
        part = np.empty((p, b, summed.size))
        var, es = np.empty((p, b)), np.empty((p, b))
        _resample_chunk(stream, np.uint64(first), orders, values, columns, alpha, scratch, counts, part, var, es)
        sums[:, :, summed] = part
        yield counts, sums, var, es


def _chunk_rows(n: int, chunk: int) -> int:
    return max(1, min(chunk, _CHUNK_BYTES // (8 * n)))


def bootstrap_counts(
    n: int, n_resamples: int = N_RESAMPLES, seed: int = 0, chunk: int = _CHUNK
) -> Iterator[np.ndarray]:
    """Resample weights in chunks ``[<= chunk, n]``: entry (b, i) counts how often episode i is
    drawn into resample b (n draws with replacement; at most 8 MB a chunk).

    Resample b is a pure function of ``(seed, b)`` — counter-based SplitMix64, the kernel's
    generator (:func:`hedgegym.envs.kernel.mix64`), under a key of its own (:func:`_draw_counts`)
    — whatever the chunking or the threads: the same ``seed`` gives the same resamples, which is
    what pairs two policies' bootstraps (common random numbers). :func:`bootstrap` uses exactly
    these.
    """
    for counts, _, _, _ in _resamples(n, n_resamples, seed, chunk=chunk):
        yield counts


def bootstrap_many(
    per_episode: Mapping[str, Mapping[str, np.ndarray]],
    risk_aversion: float,
    pnl_scale: float,
    n_resamples: int = N_RESAMPLES,
    seed: int = 0,
) -> dict[str, tuple[dict[str, float], dict[str, np.ndarray]]]:
    """:func:`bootstrap` of several policies run on the same episodes, ``{name: (point, draws)}``:
    each chunk of resamples is drawn once and weighs every policy (the pairing of
    :func:`paired_difference`), and each policy's columns are prepared once."""
    prepared = {name: _Episodes(data, risk_aversion, pnl_scale, ALPHA) for name, data in per_episode.items()}
    sizes = {len(e.pnl) for e in prepared.values()}
    if len(sizes) > 1:
        raise ValueError(f"bootstrap_many: the policies have different numbers of episodes {sorted(sizes)}")
    n = sizes.pop() if sizes else 0
    # Policies with the same columns (all of one evaluation) share each chunk's compiled pass.
    groups: dict[tuple[str, ...], list[str]] = {}
    for name, e in prepared.items():
        groups.setdefault(tuple(e.names), []).append(name)
    out = {}
    for names in groups.values():
        episodes = [prepared[name] for name in names]
        chunks: dict[str, dict[str, list[np.ndarray]]] = {name: {k: [] for k in prepared[name].point} for name in names}
        for w, sums, var, es in _resamples(n, n_resamples, seed, episodes):
            for p, (name, e) in enumerate(zip(names, episodes, strict=True)):
                for k, v in e.statistics(w, tail=(var[p], es[p]), sums=sums[p]).items():
                    chunks[name][k].append(v)
        out.update(
            {name: (prepared[name].point, {k: np.concatenate(v) for k, v in chunks[name].items()}) for name in names}
        )
    return {name: out[name] for name in prepared}


def bootstrap(
    per_episode: Mapping[str, np.ndarray],
    risk_aversion: float,
    pnl_scale: float,
    n_resamples: int = N_RESAMPLES,
    seed: int = 0,
) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """``(point, draws)``: the statistics of :func:`episode_statistics` and their ``n_resamples``
    bootstrap replicates (the resamples of :func:`bootstrap_counts` seeded by ``seed``)."""
    return bootstrap_many({"": per_episode}, risk_aversion, pnl_scale, n_resamples, seed)[""]


def percentile_interval(draws: np.ndarray, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Percentile bootstrap interval ``(q_{(1-c)/2}, q_{(1+c)/2})`` of the replicates."""
    lo, hi = np.quantile(draws, [(1.0 - confidence) / 2.0, (1.0 + confidence) / 2.0])
    return float(lo), float(hi)


def estimate(value: float, draws: np.ndarray, confidence: float = CONFIDENCE) -> Estimate:
    """``value`` with its percentile interval, widened where needed to contain ``value``.

    The point is the plain sample statistic, the replicates are weighted ones: where every resample
    gives the same number (a cost that is equal on every episode, e.g. the one trade of a one-step
    episode), the two differ in the last bits, and a percentile interval can also miss the point of
    a very skewed statistic. Reports and plots draw the interval around the point, so it must hold it.
    """
    value = float(value)
    lo, hi = percentile_interval(draws, confidence)
    return Estimate(value, min(lo, value), max(hi, value))


def _estimates(values: list[float], draws: list[np.ndarray], confidence: float) -> list[Estimate]:
    """:func:`estimate` of each value with its replicates (all of one length): one quantile call."""
    if not values:
        return []
    lows, highs = np.quantile(np.vstack(draws), [(1.0 - confidence) / 2.0, (1.0 + confidence) / 2.0], axis=1)
    out = []
    for value, lo, hi in zip(values, lows, highs, strict=True):
        value, lo, hi = float(value), float(lo), float(hi)
        out.append(Estimate(value, min(lo, value), max(hi, value)))
    return out


def summarize(
    point: Mapping[str, float], draws: Mapping[str, np.ndarray], confidence: float = CONFIDENCE
) -> dict[str, Estimate]:
    """Each statistic with its percentile interval (:func:`estimate`)."""
    return dict(zip(point, _estimates([point[k] for k in point], [draws[k] for k in point], confidence), strict=True))


def paired_difference(
    point_a: Mapping[str, float],
    draws_a: Mapping[str, np.ndarray],
    point_b: Mapping[str, float],
    draws_b: Mapping[str, np.ndarray],
    confidence: float = CONFIDENCE,
) -> dict[str, Estimate]:
    """``a - b`` per statistic with the paired-bootstrap interval.

    ``draws_a`` and ``draws_b`` must come from the same resamples (:func:`bootstrap` with the same
    seed and number of episodes, episode i of both on the same seed): then replicate ``j`` of the
    difference is the difference on resample ``j``.
    """
    keys = [k for k in point_a if k in point_b]
    for k in keys:
        if draws_a[k].shape != draws_b[k].shape:
            raise ValueError(
                f"paired_difference: {k!r} has {draws_a[k].shape} vs {draws_b[k].shape} "
                "replicates; bootstrap both with the same seed and n_resamples"
            )
    values = [point_a[k] - point_b[k] for k in keys]
    return dict(zip(keys, _estimates(values, [draws_a[k] - draws_b[k] for k in keys], confidence), strict=True))


def best_of(values: Mapping[str, float], better: str | None) -> str | None:
    """Name of the best entry of ``{name: value}`` (``better`` "max" or "min"); None without a
    direction or when all are equal (no hedge's zero costs are not "best" among zeros)."""
    finite = {k: v for k, v in values.items() if v is not None and math.isfinite(v)}
    if better is None or len(set(finite.values())) < (2 if len(finite) > 1 else 1):
        return None
    return (max if better == "max" else min)(finite, key=finite.get)
