"""The docstring examples run: a formula's worked example that drifts from the code fails here."""

import doctest
import importlib

import pytest

MODULES = [
    "hedgegym.envs.config",
    "hedgegym.envs.greeks",
    "hedgegym.envs.market",
    "hedgegym.agents.baselines",
    "hedgegym.agents.routing",
    "hedgegym.envs.registration",
    "hedgegym.train.evaluate",
    "hedgegym.train.policies",
    "hedgegym.train.plots",
    "hedgegym.train.report",
    "hedgegym.train.metrics",
    "hedgegym.train.simulate",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0, f"{name} lost its docstring examples"
    assert result.failed == 0, f"{result.failed} docstring example(s) of {name} failed"
