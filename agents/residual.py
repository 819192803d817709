"""Residual policies: a learned correction on top of a classical hedger's trade.

A residual agent acts ``a`` in [-1, 1] per venue, and the market receives

    action = clip(b + scale * a, -1, 1),

where ``b`` is the action the classical hedger ``baseline`` (e.g. ``whalley_wilmott@cheapest``)
takes in the same state, in the same action mode and limits (:mod:`hedgegym.agents.baselines`).
``a = 0`` *is* the hedger, so a fresh policy — whose mean action SB3 initialises near 0 — starts at
the hedger's score and learning only has to find where to deviate from it (residual policy
learning: Silver et al. 2018, Johannink et al. 2019; in hedging, the "deep hedging on top of a
delta hedge" of Buehler et al. 2019 §5). The hedger is rebuilt on the market the policy is
evaluated on (its band uses that market's costs and risk aversion), so a residual policy moved to
another scenario keeps a hedger tuned to it.

The same :class:`Residual` serves training (:class:`hedgegym.agents.residual_vec_env.ResidualVecEnv`,
under ``VecNormalize``) and
evaluation (:class:`hedgegym.train.policies.SB3Policy`), so the two cannot disagree.

Example:
    >>> import numpy as np
    >>> from hedgegym.envs.config import load_scenario
    >>> from hedgegym.envs.market import Market
    >>> config = load_scenario("default", {"agent.action_mode": "trade"})
    >>> market = Market(config, n_envs=2)
    >>> market.reset([0, 1])
    >>> residual = Residual.build("delta@spot", config)
    >>> zero = residual.actions(np.zeros((2, 3)), market)      # a = 0: the delta hedger's action
    >>> bool(np.allclose(zero, residual.baseline(market.observe(), market)))
    True
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hedgegym.agents.baselines import Baseline, band_trade, make_baseline

SCALE_MAX = 2.0
"""Largest residual scale: at 2 the correction spans the whole action range from any hedger action."""


class Residual:
    """``clip(baseline(state) + scale * a, -1, 1)``: a correction ``a`` on top of ``baseline``."""

    n_actions = None
    """The policy acts on the market's own action space (one action per venue)."""

    def __init__(self, baseline: Baseline, scale: float = 1.0):
        if not 0.0 < scale <= SCALE_MAX:
            raise ValueError(f"residual scale must be in (0, {SCALE_MAX:g}] (got {scale!r})")
        self.baseline = baseline
        self.scale = float(scale)

    @classmethod
    def build(cls, name: str, config, scale: float = 1.0) -> Residual:
        """The residual on baseline ``name`` (``kind`` or ``kind@venue``) for scenario ``config``."""
        return cls(make_baseline(name, config), scale)

    @property
    def record(self) -> dict[str, Any]:
        """What a saved model records of it (:func:`make_control` rebuilds it from this)."""
        return {"kind": "residual", "baseline": self.baseline.name, "scale": self.scale}

    def actions(self, actions: np.ndarray, market) -> np.ndarray:
        """The market's actions ``[N, n_venues]`` for the residual actions ``actions`` in the market's state."""
        base = self.baseline(market.observe() if self.baseline.uses_observation else actions, market)
        base = np.asarray(base, dtype=np.float64).reshape(market.n_envs, -1)
        a = np.asarray(actions, dtype=np.float64).reshape(base.shape)
        return np.clip(base + self.scale * a, -1.0, 1.0)

    def __repr__(self) -> str:
        return f"Residual({self.baseline.name!r}, scale={self.scale:g})"


BAND_HEDGERS = ("whalley_wilmott", "fixed_band", "delta", "leland")
"""Hedgers :class:`BandControl` can act on: the two band hedgers, and the two that rebalance fully
(delta, and Leland rebalanced every step), whose band is zero-width at ``a = 0``."""


class BandControl:
    """The policy sets the no-trade band of a hedger; the hedger trades to its edge.

    Two actions per step, ``a = (a_w, a_c)`` in [-1, 1] (one, ``a_w``, with ``centre=False``: the
    band stays centred on the hedger's target):

    * width: for a band hedger (Whalley–Wilmott, fixed band) the half-width is
      ``H * WIDTH_RANGE ** a_w`` (from ``H / 4`` to ``4 H``), ``H`` the hedger's own; for a hedger
      that rebalances fully (delta, Leland) it is ``ZERO_WIDTH_RANGE * max(a_w, 0) * H_ww`` (0 to
      ``2 H_ww``), ``H_ww`` the Whalley–Wilmott half-width on the hedger's venue, costs and risk
      aversion: its band is zero-width at ``a_w <= 0``;
    * centre: the band is centred on a net delta of ``a_c * CENTRE_RANGE * G`` coins instead of 0,
      ``G`` the book's gross quantity (a deliberate over- or under-hedge, e.g. ahead of a crash);

    and the trade is ``band_trade(e - centre, half-width)`` executed as the hedger executes it (its
    venue, or routed to the cheapest). ``e`` is the net delta the hedger measures: the model's for
    the band hedgers and delta, the net delta with the book at Leland's volatility for Leland (so
    ``a = 0`` trades Leland's ``-e``). ``a = 0`` is the hedger itself. Exploration noise on the
    band's parameters trades only when the net delta crosses the perturbed edge, not every step
    (noise on a trade would pay costs on every step; for a cost-heavy reward that bias is what kept
    PPO from improving on a band). The control is Whalley–Wilmott's policy with state-dependent
    risk aversion and a skew: the asymptotic band (Whalley & Wilmott 1997) is optimal for small
    costs in a frictionless-impact world; with impact, dealers' flow and jumps it is not. On a
    delta-type hedger it is the same band around that hedger's target.
    """

    WIDTH_RANGE = 4.0
    ZERO_WIDTH_RANGE = 2.0
    CENTRE_RANGE = 0.25

    def __init__(self, baseline: Baseline, centre: bool = True):
        if baseline.kind not in BAND_HEDGERS:
            raise ValueError(
                f"band control needs a band hedger or one that rebalances fully ({', '.join(BAND_HEDGERS)}), "
                f"got {baseline.name!r}"
            )
        if baseline.kind == "leland" and baseline.interval_steps != 1:
            raise ValueError(
                f"band control on {baseline.name!r} needs baselines.leland_interval_steps = 1 "
                f"(got {baseline.interval_steps}): the band replaces Leland's rebalancing grid"
            )
        self.baseline = baseline
        self.centre = bool(centre)
        self.n_actions = 2 if self.centre else 1
        self._zero_width = baseline.kind in ("delta", "leland")
        self._width_ref = baseline
        if self._zero_width:
            try:
                self._width_ref = make_baseline("whalley_wilmott", baseline.config, venue=baseline.params.venue)
            except ValueError as err:
                raise ValueError(
                    f"band control on {baseline.name!r} sizes its band by Whalley–Wilmott's half-width: {err}"
                ) from None

    @classmethod
    def build(cls, name: str, config, centre: bool = True) -> BandControl:
        """The band control of hedger ``name`` (one of :data:`BAND_HEDGERS`, ``@venue``) for ``config``."""
        return cls(make_baseline(name, config), centre)

    @property
    def record(self) -> dict[str, Any]:
        """What a saved model records of it (:func:`make_control` rebuilds it from this)."""
        record = {"kind": "band", "baseline": self.baseline.name}
        return record if self.centre else {**record, "centre": False}

    def half_width(self, market) -> np.ndarray:
        """The reference half-width per row (coins): the hedger's own, or for a delta-type hedger
        the Whalley–Wilmott one on its venue."""
        if hasattr(self._width_ref, "half_width"):
            return np.asarray(self._width_ref.half_width(market), dtype=np.float64)
        return np.full(market.n_envs, self.baseline.params.band_width * market.params["book_gross"][0])

    def exposure(self, market) -> np.ndarray:
        """The net delta ``e`` per row that the hedger trades away (coins): ``-`` its full rebalance."""
        if self.baseline.kind == "leland":
            return -np.asarray(self.baseline.desired_trade(market), dtype=np.float64)
        return market.net_delta()

    def actions(self, actions: np.ndarray, market) -> np.ndarray:
        """The market's actions ``[N, n_venues]`` for the band actions ``[N, 2]`` in the market's state."""
        a = np.clip(np.asarray(actions, dtype=np.float64).reshape(market.n_envs, self.n_actions), -1.0, 1.0)
        if self._zero_width:
            width = self.half_width(market) * (self.ZERO_WIDTH_RANGE * np.maximum(a[:, 0], 0.0))
        else:
            width = self.half_width(market) * self.WIDTH_RANGE ** a[:, 0]
        centre = a[:, 1] * self.CENTRE_RANGE * market.params["book_gross"][0] if self.centre else 0.0
        demand = band_trade(self.exposure(market) - centre, width)
        return market.trades_to_actions(self.baseline.execute(market, demand))

    def __repr__(self) -> str:
        return f"BandControl({self.baseline.name!r}" + ("" if self.centre else ", centre=False") + ")"


CONTROLS = ("residual", "band")
"""Kinds of control on top of a classical hedger: an additive correction, or the hedger's band."""


def make_control(record, config) -> Residual | BandControl:
    """The control a record describes (``{"kind", "baseline", "scale"}``, a mapping or a config
    section with those attributes), built for scenario ``config``."""
    get = record.get if isinstance(record, dict) else lambda k, d=None: getattr(record, k, d)
    kind = get("kind")
    if kind == "residual":
        return Residual.build(get("baseline"), config, float(get("scale", 1.0) or 1.0))
    if kind == "band":
        centre = get("centre", True)
        return BandControl.build(get("baseline"), config, True if centre is None else bool(centre))
    raise ValueError(f"unknown control kind {kind!r}; allowed: {', '.join(CONTROLS)}")
