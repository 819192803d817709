"""`train()` and `hedgegym train`: every shipped config trains, determinism, checkpoints, resume, Ctrl-C.

Runs are tiny (4 envs, a few hundred timesteps, 20 evaluation episodes) so the file stays well
under three minutes on two cores.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest
from stable_baselines3.common.callbacks import BaseCallback
from typer.testing import CliRunner

from hedgegym.agents import sb3
from hedgegym.envs.config import ConfigError
from hedgegym.envs.layout import OBS_DIM
from hedgegym.train.cli import app
from hedgegym.train.experiment import load_experiment
from hedgegym.train.training import build_env_and_model, train

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))
# Shrinks any shipped config to a smoke run; algorithm-specific sizes below.
TINY = {
    "env.n_envs": 4,
    "training.total_timesteps": 384,
    "training.checkpoint_every": 128,
    "evaluation.every": 256,
    "evaluation.episodes": 8,
    "evaluation.final_episodes": 20,
}
TINY_PPO = {
    "algorithm.hyperparameters.n_steps": 32,
    "algorithm.hyperparameters.batch_size": 64,
    "algorithm.hyperparameters.n_epochs": 1,
}
TINY_OFF_POLICY = {
    "algorithm.hyperparameters.learning_starts": 64,
    "algorithm.hyperparameters.batch_size": 32,
    "algorithm.hyperparameters.buffer_size": 2000,
    "algorithm.hyperparameters.gradient_steps": 1,
}


def tiny(path: Path, **extra):
    full = load_experiment(path)
    sizes = TINY_PPO if full.algorithm.name in sb3.ON_POLICY else TINY_OFF_POLICY
    if full.scenario.randomize is not None:  # a family of markets: 2 markets of 2 envs
        sizes = {**sizes, "scenario.randomize.markets": 2}
    if full.training.warm_start is not None:  # a search of 3 values on 10 episodes
        sizes = {**sizes, "training.warm_start.episodes": 10, "training.warm_start.values": [-0.5, 0.0, 0.5]}
    return load_experiment(path, {**TINY, **sizes, **extra})


def config_path(name: str) -> Path:
    return next(p for p in CONFIGS if p.stem == name)


class Capture(BaseCallback):
    """Records the timestep training starts from and the first rollout's observations (PPO)."""

    def __init__(self, interrupt_at: int | None = None):
        super().__init__()
        self.interrupt_at = interrupt_at
        self.start = None
        self.first_rollout = None

    def _on_training_start(self) -> None:
        self.start = self.num_timesteps

    def _on_step(self) -> bool:
        if self.interrupt_at is not None and self.num_timesteps >= self.interrupt_at:
            self.interrupt_at = None
            os.kill(os.getpid(), signal.SIGINT)  # what Ctrl-C sends
        return True

    def _on_rollout_end(self) -> None:
        if self.first_rollout is None and hasattr(self.model, "rollout_buffer"):
            self.first_rollout = self.model.rollout_buffer.observations.copy()


def parameters(model) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy().copy() for k, v in model.policy.state_dict().items()}


# One whole run (train, save, evaluate, report) per kind of experiment the configs ship: PPO acting
# directly, SAC, a band control, a residual control, a family of markets, a warm start. Every other
# config is built and trained for one rollout below, through the same construction as a run.
FULL_RUNS = (
    "ppo_multi",
    "sac_multi",
    "ppo_long_gamma_pin",
    "ppo_frictionless",
    "ppo_generalist",
    "ppo_short_gamma_crash",
)
KINDS = {p.stem: p for p in CONFIGS if p.stem in FULL_RUNS}


def kind(cfg) -> tuple:
    """What sets a config's code path apart: the algorithm, the control, a family of markets, a warm start."""
    control = cfg.algorithm.control
    return (
        cfg.algorithm.name,
        None if control is None else control.kind,
        cfg.scenario.randomize is not None,
        cfg.training.warm_start is not None,
    )


def test_every_kind_of_shipped_config_has_a_full_run():
    assert sorted(KINDS) == sorted(FULL_RUNS)
    assert {kind(load_experiment(p)) for p in CONFIGS} == {kind(load_experiment(p)) for p in KINDS.values()}


@pytest.mark.parametrize("path", [p for p in CONFIGS if p.stem not in FULL_RUNS], ids=lambda p: p.stem)
def test_shipped_config_builds_and_learns_a_rollout(path):
    cfg = tiny(path)
    env, model = build_env_and_model(cfg)
    model.learn(cfg.algorithm.hyperparameters.get("n_steps", 64) * cfg.env.n_envs)
    control = cfg.algorithm.control
    n_actions = 2 if control is not None and control.kind == "band" else len(cfg.scenario.resolved.agent.venues)
    actions, _ = model.predict(env.reset(), deterministic=True)
    assert actions.shape == (cfg.env.n_envs, n_actions) and np.all(np.isfinite(actions))
    env.close()


@pytest.mark.parametrize("path", list(KINDS.values()), ids=lambda p: p.stem)
def test_shipped_config_trains_saves_and_evaluates(path, tmp_path):
    cfg = tiny(path)
    result = train(cfg, out=tmp_path / "run")
    run = result.run_dir
    assert not result.interrupted and result.timesteps >= cfg.training.total_timesteps
    for name in (
        "config.yaml",
        "scenario.yaml",
        "run_info.json",
        "model.zip",
        "best_model.zip",
        "training_curve.png",
        "history.json",
        "checkpoints/latest.json",
        "evaluation/report.md",
        "evaluation/metrics.json",
    ):
        assert (run / name).is_file(), name
    assert any((run / "tb").rglob("events.out.tfevents.*"))
    normalises = cfg.env.normalize.observations or cfg.env.normalize.rewards
    assert sb3.vecnormalize_path(run / "model.zip").is_file() == normalises
    # The saved config is the resolved one: it reloads to the same experiment.
    assert load_experiment(run / "config.yaml").resolved_dict() == cfg.resolved_dict()
    info = json.loads((run / "run_info.json").read_text())
    assert info["seed"] == cfg.training.seed and info["status"] == "finished" and "torch" in info["versions"]
    # The model loads and acts; the evaluation compared it with every baseline on the held-out seeds.
    model = sb3.load_model(cfg.algorithm.name, run / "model.zip")
    actions, _ = model.predict(np.zeros((3, OBS_DIM), dtype=np.float32), deterministic=True)
    control = cfg.algorithm.control
    n_actions = 2 if control is not None and control.kind == "band" else len(cfg.scenario.resolved.agent.venues)
    assert actions.shape == (3, n_actions)
    metrics = json.loads((run / "evaluation" / "metrics.json").read_text())
    assert metrics["seed"] == cfg.evaluation.seed and metrics["episodes"] == 20
    assert len(metrics["policies"]) == 1 + len(cfg.evaluation.baselines)
    assert result.evaluation is not None and result.best_objective is not None
    if control is not None:  # the untrained policy (= its hedger) is a candidate for best_model.zip
        history = json.loads((run / "history.json").read_text())
        assert history["evaluations"][0]["timesteps"] == 0
    if cfg.training.warm_start is not None:
        warm = json.loads((run / "warm_start.json").read_text())
        assert len(warm["action"]) == n_actions and warm["evaluations"][0]["action"] == [0.0] * n_actions


# A one-day horizon for the family of markets, so that its groups draw new markets within a tiny run.
SHORT_EPISODES = {"ppo_generalist": {"scenario.overrides.episode.horizon_days": 1.0}}


@pytest.mark.parametrize("name", ["ppo_multi", "sac_multi", "ppo_generalist"])
def test_same_config_and_seed_give_the_same_rollout_and_parameters(name, tmp_path):
    sizes = {"evaluation.every": 0, "evaluation.baselines": [], "training.total_timesteps": 256}
    cfg = tiny(config_path(name), **sizes, **SHORT_EPISODES.get(name, {}))
    runs = []
    for k in range(2):
        capture = Capture()
        result = train(cfg, out=tmp_path / f"run{k}", callbacks=[capture])
        runs.append((capture.first_rollout, parameters(sb3.load_model(cfg.algorithm.name, result.model_path))))
    (rollout_a, params_a), (rollout_b, params_b) = runs
    if rollout_a is not None:
        np.testing.assert_array_equal(rollout_a, rollout_b)
    assert params_a.keys() == params_b.keys()
    for key in params_a:
        np.testing.assert_array_equal(params_a[key], params_b[key], err_msg=key)
    if name in SHORT_EPISODES:  # a different seed: checked once per algorithm, on the configs above
        return
    # ... and a different seed trains a different policy (the seed reaches torch and the envs).
    other = train(
        tiny(config_path(name), **sizes, **SHORT_EPISODES.get(name, {}), **{"training.seed": 1}),
        out=tmp_path / "other",
    )
    params_c = parameters(sb3.load_model(cfg.algorithm.name, other.model_path))
    assert any(not np.array_equal(params_a[k], params_c[k]) for k in params_a)


def test_ctrl_c_checkpoints_and_resume_continues_from_it(tmp_path):
    cfg = tiny(
        config_path("ppo_multi"),
        **{
            "training.total_timesteps": 768,
            "training.checkpoint_every": 256,
            "evaluation.every": 256,
            "evaluation.baselines": ["delta"],
        },
    )
    run_dir = tmp_path / "run"
    before = signal.getsignal(signal.SIGINT)  # the default, or the CLI's if an in-process CLI test ran
    result = train(cfg, out=run_dir, callbacks=[Capture(interrupt_at=400)])
    assert result.interrupted and 400 <= result.timesteps < 768
    assert signal.getsignal(signal.SIGINT) is before  # handler restored
    latest = json.loads((run_dir / "checkpoints" / "latest.json").read_text())
    assert latest["timesteps"] == result.timesteps
    assert not (run_dir / "evaluation").exists()
    assert json.loads((run_dir / "run_info.json").read_text())["status"] == "interrupted"
    # The checkpoint is usable: model and normaliser load, and the model acts.
    ckpt = run_dir / "checkpoints" / latest["model"]
    model = sb3.load_model("ppo", ckpt)
    assert model.num_timesteps == result.timesteps
    assert sb3.vecnormalize_path(ckpt).is_file()
    model.predict(np.zeros((1, OBS_DIM), dtype=np.float32))
    # A new run never writes into an existing run's directory.
    with pytest.raises(FileExistsError, match="already exists"):
        train(cfg, out=run_dir)
    # Resuming with a changed config (other than the length) is refused before training.
    with pytest.raises(ConfigError, match="training.seed"):
        train(load_experiment(run_dir / "config.yaml", {"training.seed": 5}), resume=run_dir)

    capture = Capture()
    resumed = train(resume=run_dir, callbacks=[capture])
    assert capture.start == latest["timesteps"] == resumed.resumed_from
    assert resumed.timesteps >= 768 and not resumed.interrupted
    assert (run_dir / "evaluation" / "report.md").is_file()
    info = json.loads((run_dir / "run_info.json").read_text())
    assert info["status"] == "finished" and [r["from_timesteps"] for r in info["resumes"]] == [latest["timesteps"]]
    assert [p.name for p in (run_dir / "tb").iterdir()] == ["ppo_1"]  # one TensorBoard run, continued
    history = json.loads((run_dir / "history.json").read_text())
    assert [e["timesteps"] for e in history["evaluations"]] == sorted(e["timesteps"] for e in history["evaluations"])
    assert len(list((run_dir / "checkpoints").glob("step_*.zip"))) <= cfg.training.keep_checkpoints
    # Nothing left to train: a clear error, not a silent no-op.
    with pytest.raises(ConfigError, match="nothing left to train"):
        train(resume=run_dir)
    # A finished run can be extended; its earlier report is kept beside the new one.
    extended = train(load_experiment(run_dir / "config.yaml", {"training.total_timesteps": 896}), resume=run_dir)
    assert extended.resumed_from == resumed.timesteps and extended.timesteps >= 896
    assert (run_dir / f"evaluation-{resumed.timesteps}" / "report.md").is_file()
    assert (run_dir / "evaluation" / "report.md").is_file()


class Markets(BaseCallback):
    """The family's markets (one per group) at the first and at the last step of a run."""

    def __init__(self):
        super().__init__()
        self.first = self.last = None

    def _markets(self):
        def market(part):  # down the wrapper chain (context, control) to the batched env
            while not hasattr(part, "market"):
                part = part.venv
            return part.market.config

        return [market(part) for part in self.model.get_env().venv.parts]

    def _on_training_start(self) -> None:
        self.first = self._markets()

    def _on_step(self) -> bool:
        self.last = self._markets()
        return True


@pytest.mark.parametrize("context", [False, True])
def test_a_family_run_resumes_on_the_markets_it_was_interrupted_on(context, tmp_path):
    """The checkpoint pickles the family's groups mid-episode (with the context wrapper, if on): a
    resumed run steps on the same markets."""
    cfg = tiny(
        config_path("ppo_generalist"),
        **SHORT_EPISODES["ppo_generalist"],
        **{"training.total_timesteps": 512, "evaluation.every": 0, "evaluation.baselines": ["delta"]},
        **({"env.market_context": True, "training.paired_paths": True} if context else {}),
    )
    run_dir = tmp_path / "run"
    before = Markets()
    result = train(cfg, out=run_dir, callbacks=[Capture(interrupt_at=200), before])
    assert result.interrupted
    after = Markets()
    resumed = train(resume=run_dir, callbacks=[after])
    assert resumed.resumed_from == result.timesteps and not resumed.interrupted
    assert after.first == before.last and before.first != before.last  # markets were redrawn, then restored
    assert len(after.first) == 2 and after.first[0] != after.first[1] and cfg.scenario.resolved not in after.first


def test_ctrl_c_during_the_final_evaluation_keeps_the_trained_run(tmp_path, monkeypatch):
    import hedgegym.train.training as training

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(training, "final_evaluation", interrupted)
    cfg = tiny(config_path("ppo_spot"), **{"training.total_timesteps": 128, "evaluation.every": 0})
    result = train(cfg, out=tmp_path / "run")
    assert result.interrupted and result.timesteps >= 128 and result.evaluation is None
    assert (tmp_path / "run" / "model.zip").is_file()
    info = json.loads((tmp_path / "run" / "run_info.json").read_text())
    assert info["status"] == "evaluation interrupted"


def test_resume_needs_a_run_with_a_checkpoint(tmp_path):
    with pytest.raises(ConfigError, match="not a run directory"):
        train(resume=tmp_path)


runner = CliRunner()


def test_cli_rejects_bad_input_before_training(tmp_path):
    cfg = config_path("ppo_spot")
    for args, expected in [
        ([str(cfg), "--set", "training.total_timesteps=-5"], "training.total_timesteps"),
        ([str(cfg), "--set", "algorithm.name=dqn"], "algorithm.name"),
        ([str(cfg), "--set", "algorithm.hyperparameters.buffer_size=10"], "buffer_size"),
        ([str(cfg), "--set", "scenario.name=atlantis"], "atlantis"),
        ([str(tmp_path / "missing.yaml")], "does not exist"),
        ([], "give an experiment config"),
        (["--resume", str(tmp_path)], "not a run directory"),
    ]:
        out = tmp_path / f"out{len(args)}"
        result = runner.invoke(
            app, ["train", *args, "--out", str(out)] if args and args[0] != "--resume" else ["train", *args]
        )
        text = " ".join(result.output.split())  # rich wraps long lines
        assert result.exit_code == 2, text
        assert "error:" in text and expected in text, text
        assert "Traceback" not in text
        assert not out.exists()


def test_cli_trains_and_reports(tmp_path):
    sets = [f"{k}={v}" for k, v in {**TINY, **TINY_PPO, "evaluation.baselines": "[delta]"}.items()]
    args = ["train", str(config_path("ppo_spot")), "--out", str(tmp_path / "run")]
    for s in sets:
        args += ["--set", s]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    text = result.output.replace("\n", "")
    assert "evaluation/report.md" in text and "run directory" in text
    assert (tmp_path / "run" / "evaluation" / "report.md").is_file()


# ------------------------------------------------------------------ best-model selection
def _numpy_objective(pnl, counts, kappa, scale):
    """The mean-variance objective of the resample that repeats episode i counts[i] times (np.repeat)."""
    x = np.repeat(pnl, counts)
    return x.mean() - kappa / (2.0 * scale) * x.var()


def test_paired_interval_is_the_bootstrap_of_the_objective_difference():
    from hedgegym.envs.config import resolve_config
    from hedgegym.train import metrics as M
    from hedgegym.train.training import paired_objective_interval

    scenario = resolve_config("default", {"agent.risk_aversion": 2.0})
    kappa, scale = scenario.agent.risk_aversion, scenario.pnl_scale
    rng = np.random.default_rng(3)
    b = rng.normal(-5e4, 3e4, 300)
    a = b + rng.normal(800.0, 2e3, 300)
    point, lo, hi = paired_objective_interval(a, b, scenario)
    # Recomputed without the weighted formulas: each resample's episodes written out and averaged.
    draws = [
        _numpy_objective(a, c, kappa, scale) - _numpy_objective(b, c, kappa, scale)
        for chunk in M.bootstrap_counts(a.size)
        for c in chunk.astype(np.int64)
    ]
    want = _numpy_objective(a, np.ones(300, np.int64), kappa, scale) - _numpy_objective(
        b, np.ones(300, np.int64), kappa, scale
    )
    assert point == pytest.approx(want, rel=1e-9)
    assert (lo, hi) == pytest.approx(tuple(np.quantile(draws, [0.025, 0.975])), rel=1e-6)
    # A constant shift moves the mean and not the variance: the difference is the shift on every resample.
    assert paired_objective_interval(b + 250.0, b, scenario) == pytest.approx((250.0, 250.0, 250.0))


def test_paired_interval_seeded_like_the_report_is_the_reports_interval():
    """``evaluate`` seeds its bootstrap with its first episode's seed; given that seed, the
    training's interval (weighted formulas in NumPy) equals the report's (its compiled
    resampling pass) on the same episodes; with seed 0 the point is the same, the interval not."""
    from hedgegym.train.evaluate import OBJECTIVE, evaluate
    from hedgegym.train.training import paired_objective_interval

    seed = 4242
    result = evaluate(["delta@spot", "whalley_wilmott@spot"], "vault-epoch", episodes=200, seed=seed)
    a = result.per_episode["whalley_wilmott@spot"]["pnl"]
    b = result.per_episode["delta@spot"]["pnl"]
    report = result.compare("whalley_wilmott@spot", "delta@spot")[OBJECTIVE]
    ours = paired_objective_interval(a, b, result.config, seed=seed)
    assert ours == pytest.approx((report.value, report.low, report.high), rel=1e-9)
    other = paired_objective_interval(a, b, result.config)
    assert other[0] == pytest.approx(report.value, rel=1e-12) and other[1:] != pytest.approx(ours[1:], rel=1e-9)


def test_paired_selection_keeps_the_incumbent_until_a_checkpoint_is_clearly_better(tmp_path):
    from hedgegym.train.training import BEST_PNL_FILE, _npy_bytes, _replaces_best

    cfg = tiny(config_path("ppo_spot"), **{"evaluation.select": "paired"})
    rng = np.random.default_rng(0)
    incumbent = rng.normal(-9e4, 3.7e4, 200)
    (tmp_path / BEST_PNL_FILE).write_bytes(_npy_bytes(incumbent))
    best = {"objective": -1.0e9, "timesteps": 0}
    # Better on these paths by a little noise: a higher objective, but the interval holds 0.
    lucky = incumbent + rng.normal(50.0, 3e3, 200)
    better, (point, lo, hi) = _replaces_best(lucky, best, tmp_path, cfg)
    assert not better and lo < 0.0 < hi
    # Clearly better on the same paths: replaces it.
    better, (point, lo, hi) = _replaces_best(incumbent + 3e3, best, tmp_path, cfg)
    assert better and lo > 0.0
    # The rule 'best' compares the objective alone (the incumbent's is -1e9 here).
    assert _replaces_best(lucky, best, tmp_path, tiny(config_path("ppo_spot"), **{"evaluation.select": "best"}))[0]
    # No incumbent yet: the first evaluation is the best.
    assert _replaces_best(lucky, {}, tmp_path, cfg) == (True, None)


@pytest.mark.parametrize("observe_state", [True, False])
def test_a_generalist_with_the_market_context_sees_each_markets_parameters(observe_state, tmp_path):
    """Trained with env.market_context and per-market advantages, the model observes the state and
    then the context (or the context alone), and on another scenario it is given that scenario's."""
    from hedgegym.envs.config import load_scenario
    from hedgegym.envs.context import CONTEXT_NAMES, market_context
    from hedgegym.envs.layout import OBS_NAMES
    from hedgegym.envs.market import Market
    from hedgegym.train.policies import load_sb3_policy, read_interface, with_policy_interface

    cfg = tiny(
        config_path("ppo_generalist"),
        **SHORT_EPISODES["ppo_generalist"],
        **{
            "training.total_timesteps": 256,
            "evaluation.every": 0,
            "evaluation.baselines": ["delta"],
            "env.market_context": True,
            "env.observe_state": observe_state,
            "training.per_market_advantages": True,
        },
    )
    result = train(cfg, out=tmp_path / "run")
    model_path = result.model_path
    names = [*OBS_NAMES, *CONTEXT_NAMES] if observe_state else list(CONTEXT_NAMES)
    assert read_interface(model_path)["observation"]["names"] == names
    scenario, _ = with_policy_interface(load_scenario("long-gamma-pin", {"episode.horizon_days": 1.0}), [model_path])
    policy = load_sb3_policy(model_path, scenario)
    market = Market(scenario, n_envs=3)
    market.reset(seeds=np.arange(3))
    obs = market.observe().copy()
    context = np.tile(market_context(scenario), (3, 1))
    by_hand = np.concatenate([obs, context], axis=1) if observe_state else context
    raw, _ = policy.model.predict(policy.obs_normalizer.normalize_obs(by_hand), deterministic=True)
    np.testing.assert_allclose(policy(obs, market), policy.control.actions(raw, market), rtol=1e-6, atol=1e-9)
    assert policy(obs, market).shape == (3, 3) and "market's context" in policy.source


@pytest.mark.parametrize(
    "extra, message",
    [
        ({"scenario.randomize": None, "env.market_context": True}, "env.market_context=true needs scenario.randomize"),
        (
            {"scenario.randomize": None, "training.per_market_advantages": True},
            "per_market_advantages=true needs scenario.randomize",
        ),
        ({"env.observe_state": False}, "env.observe_state=false needs env.market_context=true"),
    ],
)
def test_the_context_and_per_market_advantages_need_a_family(extra, message):
    with pytest.raises(ConfigError, match=message):
        load_experiment(config_path("ppo_generalist"), extra)


def test_per_market_advantages_need_an_on_policy_algorithm():
    with pytest.raises(ConfigError, match="per_market_advantages=true: only for on-policy"):
        load_experiment(config_path("sac_multi"), {"training.per_market_advantages": True})


def test_paired_paths_in_a_family_need_an_even_batch_per_market():
    with pytest.raises(ConfigError, match=r"even number of envs per market \(env.n_envs=48 / scenario.randomize"):
        load_experiment(
            config_path("ppo_generalist"),
            {"training.paired_paths": True, "env.n_envs": 48, "scenario.randomize.markets": 16},
        )
