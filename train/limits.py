"""How large one run may be and which seeds it may use: checked alike by the CLI and the library.

Episode ``j`` of a run (path ``j`` of a simulation) is seeded ``seed + j``, a numpy int64, so the
seeds of ``n`` episodes fit exactly when ``0 <= seed <= 2**63 - n``.

Example:
    >>> check_seed(2**63 - 20, 20, what="paths")
    >>> check_seed(2**63 - 19, 20, what="paths")
    Traceback (most recent call last):
    ValueError: seed 9223372036854775789: must be in [0, 2**63 - paths] = [0, 9223372036854775788] so that ...
"""

from __future__ import annotations

import numpy as np

SEED_LIMIT = 2**63
# Episodes of one evaluation (and paths of one simulation): peak memory grows by about 7 KB a path
# (simulate) and 6 KB an episode (evaluate, three policies) -- bootstrap resamples, per-episode
# metrics -- so the limit needs about 7 GB.
MAX_EPISODES = 1_000_000


def _is_integer(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def check_count(value, name: str = "episodes", unit: str = "episode") -> None:
    """``value`` episodes (or paths) is an integer in ``[1, MAX_EPISODES]``, else a ValueError naming ``name``."""
    if not _is_integer(value):
        raise ValueError(f"{name} must be an integer (got {value!r})")
    if not 1 <= value <= MAX_EPISODES:
        raise ValueError(
            f"{name} {value}: must be in [1, {MAX_EPISODES:,}] (memory grows by about 7 KB per {unit}; "
            "the limit needs about 7 GB); split a larger study over several seed ranges"
        )


def check_seed(seed, count: int, name: str = "seed", what: str = "episodes") -> None:
    """Seeds ``seed .. seed + count - 1`` are int64: ``0 <= seed <= 2**63 - count``, else a ValueError."""
    if not _is_integer(seed):
        raise ValueError(f"{name} must be an integer (got {seed!r})")
    if not 0 <= seed <= SEED_LIMIT - count:
        raise ValueError(
            f"{name} {seed}: must be in [0, 2**63 - {what}] = [0, {SEED_LIMIT - count}] so that the "
            f"seeds seed + j of all {count:,} {what} fit in 64-bit integers"
        )
