"""Atomic file writes: a reader sees the old file or the new one, never half of one.

One writer for the whole package: the envs save resolved scenarios with it
(:func:`hedgegym.envs.config.save_config`) and :mod:`hedgegym.train.io` builds every run output on it.

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> from hedgegym.envs.atomic import write_text_atomic
    >>> path = Path(tempfile.mkdtemp()) / "sub" / "a.txt"
    >>> write_text_atomic(path, "hello")
    >>> path.read_text(), [p.name for p in path.parent.iterdir()]
    ('hello', ['a.txt'])
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


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
