"""The cheapest router satisfies its optimality (KKT) conditions, for random costs (hypothesis)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from hedgegym.agents.routing import split_cheapest

linear_cost = st.one_of(st.floats(0.0, 1e4), st.just(np.inf))  # USD per coin; inf: venue not usable
quadratic_cost = st.one_of(st.floats(1e-6, 1e3), st.just(0.0))  # USD per coin^2; 0: infinite depth


@settings(max_examples=50, deadline=None)
@given(
    demand=st.floats(-1e4, 1e4).filter(lambda q: abs(q) > 1e-6),
    linear=st.lists(linear_cost, min_size=3, max_size=3).filter(lambda a: np.isfinite(a).any()),
    quadratic=st.lists(quadratic_cost, min_size=3, max_size=3),
)
def test_split_is_optimal(demand, linear, quadratic):
    a, b = np.array([linear]), np.array([quadratic])
    x = split_cheapest(np.array([demand]), a, b)[0]
    q = abs(demand)
    # Every leg trades in the demand's direction, the legs sum to the request, unusable venues stay out.
    assert np.all(x * np.sign(demand) >= -1e-9 * q)
    assert abs(np.sum(x) - demand) <= 1e-12 * max(q, 1.0)  # the last leg is the remainder: exact
    assert np.all(x[~np.isfinite(a[0])] == 0.0)
    size = np.abs(x)
    marginal = a[0] + 2.0 * b[0] * size
    used = size > 1e-9 * q
    # KKT: equal marginal cost on the used venues, no cheaper margin on an unused one.
    lam = marginal[used].max()
    tol = 1e-7 * max(lam, 1.0)
    assert np.all(np.abs(marginal[used] - lam) <= tol)
    assert np.all(marginal[~used & np.isfinite(a[0])] >= lam - tol)
    # ...hence no feasible split of the same total is cheaper (a random one, for instance).
    cost = float(np.sum(a[0][used] * size[used] + b[0][used] * size[used] ** 2))
    usable = np.isfinite(a[0])
    w = np.random.default_rng(int(q * 1e3) % 2**32).dirichlet(np.ones(usable.sum())) * q
    other = float(np.sum(a[0][usable] * w + b[0][usable] * w**2))
    assert cost <= other + tol * q
