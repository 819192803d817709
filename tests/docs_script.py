"""``load_docs_script(name)``: a script of ``docs/`` imported as a module, for the tests that call its
``main`` and functions (imported by name, as ``tests/envs/ledger.py``)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs"


def load_docs_script(name: str):
    """The module of ``docs/<name>.py``."""
    spec = importlib.util.spec_from_file_location(name, DOCS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
