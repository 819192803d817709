"""Per-market advantages (hedgegym.agents.per_market), against a loop over the markets."""

from __future__ import annotations

import numpy as np
import pytest

from hedgegym.agents.per_market import per_market_advantages


def test_each_markets_block_is_standardised_on_its_own():
    rng = np.random.default_rng(0)
    scales = np.repeat([1.0, 1e3, 1e-2, 50.0], 3)  # 4 markets of 3 envs, wildly different scales
    adv = (rng.normal(size=(7, 12)) + 2.0) * scales
    out = per_market_advantages(adv, markets=4)
    for k in range(4):
        block = adv[:, 3 * k : 3 * k + 3].ravel()
        expected = (block - block.sum() / block.size) / np.sqrt(((block - block.mean()) ** 2).mean())
        assert np.allclose(out[:, 3 * k : 3 * k + 3].ravel(), expected, atol=1e-6)
    # The order within a market is kept: the sign of each deviation from its market's mean.
    assert np.array_equal(np.argsort(out[:, :3].ravel()), np.argsort(adv[:, :3].ravel()))


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="multiple of 3"):
        per_market_advantages(np.zeros((2, 4)), markets=3)
