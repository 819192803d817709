"""What the kernel benchmarks share: one raw step-kernel call on a Market's arrays, and a reset of
rows to a given episode (``bench_busy``, ``bench_env``, ``bench_kernel``; imported by name, as the
benchmarks run as scripts from this folder).

Example:
    >>> import numpy as np
    >>> from hedgegym.envs import Market, kernel
    >>> from hedgegym.envs.config import load_scenario
    >>> m = Market(load_scenario("default"), n_envs=2)
    >>> m.reset(seeds=np.arange(2))
    >>> step_kernel(kernel.step_serial, m, np.zeros((2, 3)))
    >>> int(m.step_index[0])
    1
    >>> reset_rows(m, np.arange(2), np.arange(2, dtype=np.uint64), 1)
    >>> int(m.step_index[0])
    0
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from hedgegym.envs import Market, kernel


def step_kernel(fn: Callable, m: Market, trades: np.ndarray) -> None:
    """One call of the raw step kernel ``fn`` (``kernel.step_serial``/``step_parallel``, or the
    Market's own choice ``m._step_kernel``) on the arrays of ``m``, with ``trades[n, 3]`` (coins)."""
    fn(m.state, m.hedge, m.keys, trades, m.params, m.venues, m.dealer_lines, m.agent_lines, m.out, m.ext)


def reset_rows(m: Market, rows: np.ndarray, seeds: np.ndarray, episode: int) -> None:
    """``kernel.reset_rows`` of ``rows`` (int64) of ``m``: row ``rows[i]`` to episode ``episode`` of
    seed ``seeds[i]`` (uint64)."""
    episodes = np.full(len(rows), episode, dtype=np.uint64)
    kernel.reset_rows(
        rows, seeds, episodes, m.state, m.hedge, m.keys, m.params, m.venues, m.dealer_lines, m.agent_lines, m.ext
    )
