"""Run directories and atomic writes: nothing a user wrote is overwritten or left half-written."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any


def new_run_dir(parent: str | os.PathLike, name: str) -> Path:
    """Create and return a fresh directory ``parent/<name>-<UTC timestamp>[-n]``.

    ``mkdir`` without ``exist_ok`` is atomic, so two runs started in the same second get different
    directories and no run ever writes into another's.
    """
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    base = f"{name}-{stamp}"
    for n in range(1000):
        path = parent / (base if n == 0 else f"{base}-{n}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise RuntimeError(f"could not create a new run directory under {parent}")


def claim_dir(path: str | os.PathLike) -> Path:
    """Create ``path`` (and parents) for a new run; refuse if it already exists and is not empty."""
    path = Path(path)
    if path.exists() and any(path.iterdir()):
        raise FileExistsError(
            f"output directory {str(path)!r} already exists and is not empty; "
            "choose another --out (runs never overwrite an earlier run)"
        )
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` (parents created) via a temp file in the same folder and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        # mkstemp creates 0600; give the file the permissions a plain open() would (umask applies).
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Atomic text write (UTF-8)."""
    write_bytes_atomic(path, text.encode())


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
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                              check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True,
                               check=True, timeout=10).stdout.strip()
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
