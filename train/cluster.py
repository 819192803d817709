"""Ray for hedgegym's sweeps and evaluation matrices: the optional extra, starting Ray, threads per worker.

Ray (``pip install -e ".[ray]"``) is optional: :func:`require_ray` turns its absence into one
:class:`~hedgegym.envs.config.ConfigError` line that says how to install it, and nothing in this
module imports Ray until a command needs it. :func:`ray_session` starts a local Ray inside the
process (no cluster needed; ``workers x cpus`` CPUs, no dashboard) or connects to an existing
cluster (``address``), and shuts it down afterwards. Every Ray worker gets the thread settings of
its CPU count (:func:`thread_env`) before it imports numba or torch — Ray workers are fresh
processes started by Ray's own daemon, never forks of a process whose threads already run — so two
workers on two cores do not oversubscribe them.

Example:
    >>> thread_env(2)["NUMBA_NUM_THREADS"], thread_env(2)["OMP_NUM_THREADS"]
    ('2', '2')
    >>> check_positive("--workers", 0)
    Traceback (most recent call last):
    hedgegym.envs.config.ConfigError: --workers 0: must be an integer >= 1
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

from hedgegym.envs.config import ConfigError

INSTALL_HINT = 'pip install -e ".[ray]" (in a checkout) or pip install "hedgegym[ray]"'
# Thread pools that read their size from the environment when they start: numba's (its parallel
# kernel), OpenMP's (torch's intra-op pool, numba's OpenMP layer), and the BLAS libraries numpy uses.
_THREAD_VARS = ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def require_ray(command: str) -> None:
    """Import Ray Tune and Optuna, or raise one ConfigError line naming the command and the install line."""
    try:
        import optuna  # noqa: F401
        import ray  # noqa: F401
        import ray.tune  # noqa: F401
    except ImportError as err:
        missing = getattr(err, "name", None) or str(err)
        raise ConfigError(
            f"hedgegym {command} needs the optional Ray extra ({missing} is not installed): {INSTALL_HINT}"
        ) from None


def check_positive(option: str, value: int, most: int | None = None) -> None:
    """``value`` is an integer >= 1 (and <= ``most``), else a ConfigError naming the option."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1 or (most is not None and value > most):
        allowed = f"an integer in [1, {most:,}]" if most is not None else "an integer >= 1"
        raise ConfigError(f"{option} {value}: must be {allowed}")


def thread_env(cpus: int) -> dict[str, str]:
    """The environment of a worker given ``cpus`` CPUs: every thread pool sized to them."""
    return {name: str(cpus) for name in _THREAD_VARS} | {"OMP_WAIT_POLICY": "PASSIVE"}


def set_worker_threads(cpus: int) -> None:
    """In a Ray worker: torch's and numba's thread counts to ``cpus`` (the environment set the pools' size).

    Only libraries already imported are touched: importing torch here would cost a second to a
    worker that never uses it.
    """
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(cpus)
    if "numba" in sys.modules:
        numba = sys.modules["numba"]
        numba.set_num_threads(min(cpus, numba.config.NUMBA_NUM_THREADS))


@contextmanager
def ray_session(address: str | None, workers: int, cpus: int) -> Iterator[None]:
    """Ray for the duration of the block: a local instance with ``workers * cpus`` CPUs, or ``address``.

    The workers' environment carries :func:`thread_env` (a job-level runtime env, so it also reaches
    the workers of a cluster). Ray's own console output (its banners and warnings, the workers'
    logs) is kept to errors; the command prints its own progress, and Ray's logs stay in its
    session folder (``/tmp/ray/session_latest/logs``).
    """
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage report from a run that may be offline
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    runtime_env = {"env_vars": thread_env(cpus)}
    kwargs = {
        "include_dashboard": False,
        "log_to_driver": False,
        "logging_level": logging.ERROR,
        "runtime_env": runtime_env,
        "configure_logging": True,
    }
    if ray.is_initialized():
        raise ConfigError("Ray is already initialised in this process; call this outside another Ray session")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if address is None:
            # "local": always a new Ray inside this process, never a cluster that happens to run here.
            ray.init(address="local", num_cpus=workers * cpus, **kwargs)
        else:
            _check_reachable(address)
            try:
                ray.init(address=address, **kwargs)
            except (ConnectionError, ValueError, RuntimeError) as err:
                raise ConfigError(
                    f"--address {address!r}: cannot connect to a Ray cluster there ({str(err).splitlines()[0]}); "
                    "start one with `ray start --head` or omit --address for a local Ray"
                ) from None
    try:
        yield
    finally:
        ray.shutdown()


def _check_reachable(address: str) -> None:
    """A ``HOST:PORT`` (or ``ray://HOST:PORT``) that accepts no connection is refused in seconds;
    Ray itself waits minutes for a cluster that is not there. ``auto`` is left to Ray."""
    import socket

    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        return
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=5).close()
    except OSError as err:
        raise ConfigError(
            f"--address {address!r}: cannot connect to a Ray cluster there ({err.strerror or err}); "
            "start one with `ray start --head` or omit --address for a local Ray"
        ) from None
