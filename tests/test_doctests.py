"""The docstring examples run, in every module: a worked example that drifts from the code fails here.

Modules are discovered (``pkgutil.walk_packages`` over ``hedgegym.envs``, ``hedgegym.agents`` and
``hedgegym.train``), so a new module's examples run without anyone adding it to a list.
"""

import doctest
import importlib
import pkgutil

import pytest

PACKAGES = ("hedgegym.envs", "hedgegym.agents", "hedgegym.train")
# Modules without examples, and why; every other module must keep at least one.
WITHOUT_EXAMPLES = {
    "hedgegym.envs.kernel": "private numba phases; their examples are Market's, which runs them",
    "hedgegym.train.training": "its unit is a training run; tests/train/test_training.py runs short ones",
}


def _modules() -> list[str]:
    names = []
    for package in PACKAGES:
        names.append(package)
        module = importlib.import_module(package)
        names += [info.name for info in pkgutil.walk_packages(module.__path__, package + ".")]
    return names


MODULES = _modules()


def test_every_module_is_found():
    assert {"hedgegym.envs.config", "hedgegym.agents.baselines", "hedgegym.train.cli"} <= set(MODULES)
    assert set(WITHOUT_EXAMPLES) <= set(MODULES), "an exempted module no longer exists"


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} docstring example(s) of {name} failed"
    if name not in WITHOUT_EXAMPLES and name not in PACKAGES:
        assert result.attempted > 0, f"{name} has no docstring examples (or lost them)"
