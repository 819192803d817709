"""For the tests of ``docs/`` scripts (imported by name, as ``tests/envs/ledger.py``):
``load_docs_script(name)``, a script imported as a module, and ``constant_band_run(folder)``, a
tiny band-control run with a model that acts one known constant."""

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


CONSTANT = [0.3, 0.2]
"""The band action ``(a_w, a_c)`` of :func:`constant_band_run`'s model."""


def constant_band_run(folder: Path):
    """``(run_dir, fixed_zip, interface)``: a tiny ``ppo_vault_epoch`` run, and beside its models
    ``fixed.zip``, its model set to act :data:`CONSTANT` in every state (with the run's interface)."""
    from hedgegym.agents import sb3
    from hedgegym.train.experiment import load_experiment
    from hedgegym.train.policies import embed_interface, read_interface
    from hedgegym.train.training import train

    cfg = load_experiment(
        DOCS.parent / "configs" / "ppo_vault_epoch.yaml",
        {
            "env.n_envs": 4,
            "training.total_timesteps": 64,
            "evaluation.every": 0,
            "evaluation.final_episodes": 4,
            "evaluation.baselines": [],
            "algorithm.hyperparameters.n_steps": 16,
            "algorithm.hyperparameters.batch_size": 32,
            "algorithm.hyperparameters.n_epochs": 1,
            "scenario.overrides.episode.horizon_days": 0.25,
            "scenario.overrides.episode.dt_hours": 1.0,
        },
    )
    run = train(cfg, out=folder / "run")
    path = run.model_path
    interface = read_interface(path)
    model = sb3.load_model("ppo", path)
    sb3.set_mean_action(model, CONSTANT)
    fixed = path.with_name("fixed.zip")
    model.save(fixed)
    fixed.write_bytes(embed_interface(fixed.read_bytes(), interface))
    return run.run_dir, fixed, interface
