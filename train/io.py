"""Run directories and atomic writes: nothing a user wrote is overwritten or left half-written."""

from __future__ import annotations

import atexit
import json
import os
import re
import subprocess
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

# The one atomic writer of the package lives in envs (which saves scenarios); re-exported here.
from hedgegym.envs.atomic import write_bytes_atomic, write_text_atomic  # noqa: F401

# The file whose exclusive creation claims a run directory (it records the claiming pid and time):
# of two runs started together on the same --out, exactly one creates it (O_CREAT | O_EXCL), the
# other stops before any work.
CLAIM_FILE = ".hedgegym-claim"
# Characters a run-directory name keeps; others (a "/" in a scenario name, spaces, ...) become "_".
_SAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]+")
# Directories this process claimed: absolute path -> (whether the claim created it, the claiming
# thread). The claiming thread may claim it again while it is still empty; at exit, unused claims go.
_CLAIMED: dict[Path, tuple[bool, int]] = {}


class RunDirError(OSError):
    """A path cannot become a new run directory: it is a file, cannot be created or written, or is taken."""


class RunDirTaken(RunDirError, FileExistsError):
    """The directory already holds an earlier run (it is not empty), or another run claimed it first."""


def safe_name(name: str) -> str:
    """``name`` as one path component: runs of characters other than letters, digits, ``_.-`` become ``_``.

    >>> safe_name("crash/2020 v2"), safe_name(".."), safe_name("ppo-default-s0")
    ('crash_2020_v2', 'run', 'ppo-default-s0')
    """
    cleaned = _SAFE_NAME.sub("_", name).strip("._")[:100]
    return cleaned or "run"


def new_run_dir(parent: str | os.PathLike, name: str) -> Path:
    """Create, claim and return a fresh directory ``parent/<safe name>-<UTC timestamp>[-n]``.

    ``mkdir`` without ``exist_ok`` is atomic, so two runs started in the same second get different
    directories and no run ever writes into another's. ``name`` passes through :func:`safe_name`.
    """
    parent = Path(parent)
    if parent.exists() and not parent.is_dir():
        raise RunDirError(f"{str(parent)!r} is not a directory, so no run directory can be created in it")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise RunDirError(f"cannot create the folder {str(parent)!r} for run directories ({_reason(err)})") from None
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    base = f"{safe_name(name)}-{stamp}"
    for n in range(1000):
        path = parent / (base if n == 0 else f"{base}-{n}")
        try:
            path.mkdir()
        except FileExistsError:
            continue
        except OSError as err:
            raise RunDirError(f"cannot create a run directory in {str(parent)!r} ({_reason(err)})") from None
        try:
            return _claim(path, created=True)
        except RunDirTaken:  # an explicit --out of that very name claimed it between our mkdir and claim
            continue
    raise RunDirError(f"could not create a new run directory under {str(parent)!r} (1000 names taken)")


def check_new_dir(path: str | os.PathLike, what: str = "--out") -> Path:
    """Check, without creating anything, that ``path`` can become a new run directory.

    It must be missing or an empty directory, and the folder it would be created in must be a
    writable directory. Raises :class:`RunDirError` (:class:`RunDirTaken` if it holds files) with
    one line naming the path. Commands call it before any work; :func:`claim_dir` decides races.
    """
    path = Path(path)
    if path.exists() or path.is_symlink():
        if not path.is_dir():
            raise RunDirError(f"{what} {str(path)!r} is not a directory; give a new directory for the run")
        _check_empty(path, what)
        if not os.access(path, os.W_OK | os.X_OK):
            raise RunDirError(f"{what} {str(path)!r} is not writable; choose another")
        return path
    ancestor = path.parent
    while not (ancestor.exists() or ancestor.is_symlink()) and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise RunDirError(
            f"{what} {str(path)!r}: {str(ancestor)!r} is not a directory, so nothing can be created under it"
        )
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise RunDirError(f"{what} {str(path)!r}: cannot create it, {str(ancestor)!r} is not writable")
    return path


def claim_dir(path: str | os.PathLike, what: str = "--out") -> Path:
    """Create ``path`` (and parents) and claim it for a new run; refuse if it is not empty or taken.

    The claim is the exclusive creation of :data:`CLAIM_FILE` inside it, so of two runs started at
    the same moment on the same empty directory exactly one wins; the other gets
    :class:`RunDirTaken`. A directory the calling thread claimed and has not written to yet may be
    claimed again (the CLI claims before the work, the writer of the results once more).
    """
    path = Path(path)
    mine = _CLAIMED.get(path.absolute(), (None, None))[1] == threading.get_ident()
    if mine and path.is_dir() and [p.name for p in path.iterdir()] == [CLAIM_FILE]:
        return path
    check_new_dir(path, what)
    created = not path.exists()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise RunDirError(f"{what} {str(path)!r}: cannot create it ({_reason(err)})") from None
    return _claim(path, created, what)


def release_dir(path: str | os.PathLike) -> None:
    """Undo :func:`claim_dir` for a run that stopped before writing anything: remove the claim, and
    the directory if the claim created it and it is empty. Directories with outputs are kept."""
    path = Path(path)
    created, _ = _CLAIMED.pop(path.absolute(), (None, None))
    if created is None:
        return
    (path / CLAIM_FILE).unlink(missing_ok=True)
    if created:
        try:
            path.rmdir()
        except OSError:  # something was written: keep it
            pass


def _claim(path: Path, created: bool, what: str = "run directory") -> Path:
    try:
        fd = os.open(path / CLAIM_FILE, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        raise RunDirTaken(
            f"{what} {str(path)!r} was claimed by another run started at the same time; choose another --out"
        ) from None
    except OSError as err:
        raise RunDirError(f"{what} {str(path)!r} is not writable ({_reason(err)}); choose another") from None
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps({"pid": os.getpid(), "claimed_utc": datetime.now(timezone.utc).isoformat()}) + "\n")
    # The directory was empty when checked; anything but our claim now is a run that got in between.
    if any(p.name != CLAIM_FILE for p in path.iterdir()):
        (path / CLAIM_FILE).unlink(missing_ok=True)
        _check_empty(path, what)
    if not _CLAIMED:
        atexit.register(_drop_unused_claims)
    _CLAIMED[path.absolute()] = (created, threading.get_ident())
    return path


def _drop_unused_claims() -> None:
    """At exit, a claimed directory the process never wrote to (it stopped on an error or Ctrl-C
    before its first output) is released, so the same ``--out`` can be used again."""
    for path in list(_CLAIMED):
        if path.is_dir() and [p.name for p in path.iterdir()] == [CLAIM_FILE]:
            release_dir(path)


def _check_empty(path: Path, what: str) -> None:
    try:
        with os.scandir(path) as entries:
            empty = next(entries, None) is None
    except OSError as err:
        raise RunDirError(f"{what} {str(path)!r} cannot be read ({_reason(err)})") from None
    if not empty:
        raise RunDirTaken(
            f"{what} {str(path)!r} already exists and is not empty; choose another --out "
            "(runs never overwrite an earlier run)"
        )


def _reason(err: OSError) -> str:
    return err.strerror or type(err).__name__


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    """Atomic JSON write, indented, NaN-free (a NaN raises rather than writing invalid JSON)."""
    write_text_atomic(path, json.dumps(obj, indent=2, allow_nan=False, default=_jsonable) + "\n")


def save_figure_atomic(fig, path: str | os.PathLike, dpi: int = 110) -> None:
    """Save a matplotlib figure as PNG atomically."""
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    write_bytes_atomic(path, buf.getvalue())


def git_commit() -> str | None:
    """The checkout's commit hash (with ``-dirty`` if modified), or None outside a git checkout."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("-dirty" if dirty else "")


def _jsonable(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


# ------------------------------------------------------------------------------------ Ctrl-C
# Python raises KeyboardInterrupt wherever the main thread is when SIGINT arrives. While numba
# compiles (seconds to minutes with a cold cache) that is inside one of llvmlite's ctypes callbacks,
# which swallows it ("Exception ignored on calling ctypes callback function"), and the command ran on
# for the whole of a million-episode evaluation. So the commands' handler also records the request,
# and their loops call ``raise_if_interrupted`` at each step.
_INTERRUPTED = threading.Event()


def _on_sigint(signum, frame) -> None:
    _INTERRUPTED.set()
    raise KeyboardInterrupt


def install_sigint_handler() -> None:
    """Make Ctrl-C both raise KeyboardInterrupt and set the flag :func:`raise_if_interrupted` reads."""
    import signal

    if threading.current_thread() is threading.main_thread():
        _INTERRUPTED.clear()
        signal.signal(signal.SIGINT, _on_sigint)


def interrupt_requested() -> bool:
    """Whether Ctrl-C came since :func:`install_sigint_handler`, even if its KeyboardInterrupt was swallowed.

    A KeyboardInterrupt swallowed by llvmlite's callback can also leave numba's compilation half
    done, which then fails in its own words (``RuntimeError: no compiled object yet``): callers that
    catch such a failure ask this to report it as the interruption it is.

    >>> interrupt_requested()
    False
    """
    return _INTERRUPTED.is_set()


def raise_if_interrupted() -> None:
    """Raise KeyboardInterrupt if Ctrl-C came since :func:`install_sigint_handler`, even if the
    exception it raised then was swallowed by a C callback.

    >>> raise_if_interrupted()  # no Ctrl-C: nothing happens
    """
    if _INTERRUPTED.is_set():
        raise KeyboardInterrupt
