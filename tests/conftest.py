"""Fixtures shared by every test folder: child processes that never outlive their test; under CI, the
property tests' examples fixed."""

from __future__ import annotations

import os
import signal
import subprocess

import pytest
from hypothesis import settings

# CI (CI=true) replays the same hypothesis examples on every run, so that a submission is judged on
# the examples it was tested with; elsewhere the examples are fresh each run and a failure found is
# kept in the local .hypothesis database for the next run.
settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI"):
    settings.load_profile("ci")


@pytest.fixture
def popen():
    """``popen(args, **kwargs)``: a :class:`subprocess.Popen` that ends with the test, whatever its outcome.

    A failed assertion or a timeout in a test that started a long command (a million-episode
    ``hedgegym evaluate``) would otherwise leave it running for hours. Each child starts in its own
    process group; at teardown one still running is killed with its group (workers it started), and
    every child is reaped and its pipes closed.
    """
    procs: list[subprocess.Popen] = []

    def start(args, **kwargs) -> subprocess.Popen:
        kwargs.setdefault("start_new_session", True)
        proc = subprocess.Popen(args, **kwargs)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:  # still running, so its pid is still its group's id
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                proc.kill()
        proc.communicate()
