"""README's P&L identity, written once for the tests: ``step_pnl`` is the sum of its parts.

``step_pnl = book_pnl + hedge_pnl - fees - slippage - funding - carry + interest`` (the change of the
agent's wealth). The tests recompute it from ``info`` with this, never with the kernel's code.
"""

from __future__ import annotations

from collections.abc import Mapping

# Each part of the step P&L with its sign.
PNL_PARTS = {
    "book_pnl": 1.0,
    "hedge_pnl": 1.0,
    "fees": -1.0,
    "slippage": -1.0,
    "funding": -1.0,
    "carry": -1.0,
    "interest": 1.0,
}


def pnl_from_parts(info: Mapping):
    """The step P&L rebuilt from the parts in ``info`` (scalars or arrays)."""
    return sum(sign * info[name] for name, sign in PNL_PARTS.items())
