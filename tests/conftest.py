"""Fixtures shared by every test folder: child processes that never outlive their test."""

from __future__ import annotations

import os
import signal
import subprocess

import pytest


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
