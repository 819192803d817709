"""The market's context: the parameters of the market an episode runs on, as observation entries.

The observation (:data:`hedgegym.envs.layout.OBSERVATION`) is the market's *state*, scaled by its
own volatility, so a policy cannot tell a cheap deep market from a costly thin one, nor a market
with jumps from one without, except through what the state reveals over many steps. A policy
trained across a family of markets (:mod:`hedgegym.envs.family`) and meant to hedge each one as
it should — a wider band where trading costs more — needs those parameters (Whalley & Wilmott 1997:
the band's width is ``(3 lambda S Gamma^2 / (2 gamma))^(1/3)``, the cost ``lambda`` and the risk
aversion ``gamma`` are the market's and the desk's). ``env.market_context: true`` (an experiment's
env section) appends :data:`CONTEXT` to every observation; it is part of the policy's interface
record, and a policy trained with it is evaluated with it on any scenario.

The entries are computed once per market from its configuration: nothing in them depends on the
episode's path, so they do not see the future. Costs and depth are over the agent's venues
(``agent.venues``), averaged; a frictionless venue (infinite depth, no fee) gives 0.

- ``sigma``: the volatility parameter ``market.sigma``, as is.
- ``fee_bp``, ``half_spread_bp``: ``log(1 + x / 1 bp)`` of the mean fee and half-spread.
- ``impact_bp``: ``log(1 + x / 1 bp)`` of ``x``, the price move of trading the agent's whole book
  (its gross quantity of coins, at the initial spot) at once: ``gross * S0 * mean(1 / depth)`` in
  percent, ``depth`` being ``depth_usd_per_pct`` (USD that move the price 1 %).
- ``dealer_notional``: ``asinh`` of the dealers' net quantity times ``S0 * mean(1 / depth)``, in
  percent: signed, negative when the dealers are short options (short gamma).
- ``jump_rate``: jumps per month (``market.jumps.intensity / 12``; 0 when jumps are off).
- ``jump_mean``: the mean log jump size in percent (``100 * market.jumps.mean``; 0 when off).

Every entry has the scale of one: it is normalised further by the training's observation
normaliser. An entry the training family does not vary is a constant to the normaliser, and a
different value at evaluation would then be far outside anything the policy saw; so the context
is for a policy trained on a family, and the experiment schema refuses it without one.

Example:
    >>> from hedgegym.envs.config import resolve_config
    >>> [f"{x:.3f}" for x in market_context(resolve_config("default"))]
    ['0.600', '1.992', '0.606', '2.708', '-3.111', '0.000', '0.000']

    The default's fee is ``log(1 + (10 + 4 + 5) / 3)``; its book of 120 coins at 100,000 USD moves
    a venue of mean inverse depth ``(1/1e8 + 1/2e8 + 1/5e7) / 3`` by 0.14 %, ``log(1 + 14)``; its
    dealers, net short 9,600 coins, ``asinh(-11.2)``.
    >>> CONTEXT_NAMES[:2]
    ('sigma', 'fee_bp')
"""

from __future__ import annotations

import math

import numpy as np

CONTEXT = (
    ("sigma", "market.sigma, as is"),
    ("fee_bp", "log(1 + mean fee of the agent's venues / 1 bp)"),
    ("half_spread_bp", "log(1 + mean half-spread of the agent's venues / 1 bp)"),
    ("impact_bp", "log(1 + move of trading the agent's gross book at once / 1 bp)"),
    ("dealer_notional", "asinh(dealers' net quantity x S0 / depth, in %): < 0 short gamma"),
    ("jump_rate", "jumps per month (0 when off)"),
    ("jump_mean", "mean log jump size, % (0 when off)"),
)
"""The context entries, ``(name, meaning)``, in order (see the module docstring)."""
CONTEXT_NAMES = tuple(name for name, _ in CONTEXT)
CONTEXT_DIM = len(CONTEXT)
_BP = 1e-4


def market_context(config) -> np.ndarray:
    """The context ``[CONTEXT_DIM]`` float32 of scenario ``config`` (a ``ScenarioConfig``)."""
    venues = [getattr(config.venues, name) for name in config.agent.venues]
    fee = sum(v.fee for v in venues) / len(venues)
    half_spread = sum(v.half_spread for v in venues) / len(venues)
    inv_depth = sum(0.0 if math.isinf(v.depth_usd_per_pct) else 1.0 / v.depth_usd_per_pct for v in venues)
    inv_depth /= len(venues)
    spot0 = config.market.spot0
    gross = sum(abs(line.quantity) for line in config.agent.lines)
    dealers = sum(line.quantity for line in config.dealers.lines)
    jumps = config.market.jumps
    values = (
        config.market.sigma,
        math.log1p(fee / _BP),
        math.log1p(half_spread / _BP),
        math.log1p(100.0 * gross * spot0 * inv_depth),  # percent -> bp
        math.asinh(dealers * spot0 * inv_depth),
        jumps.intensity / 12.0 if jumps.enabled else 0.0,
        100.0 * jumps.mean if jumps.enabled else 0.0,
    )
    return np.asarray(values, dtype=np.float32)


def with_context(obs: np.ndarray, context: np.ndarray, state: bool = True) -> np.ndarray:
    """Observations ``obs[..., d]`` float32 with ``context[CONTEXT_DIM]`` appended to each (or, with
    ``state=False``, the context alone, one row per observation): what a policy trained with the
    context observes (the training wrapper and the evaluation both build it here).

    >>> with_context(np.zeros((2, 3)), np.arange(CONTEXT_DIM), state=False).shape
    (2, 7)
    """
    obs = np.asarray(obs, dtype=np.float32)
    context = np.broadcast_to(np.asarray(context, dtype=np.float32), (*obs.shape[:-1], CONTEXT_DIM))
    return np.concatenate([obs, context], axis=-1) if state else np.array(context)
