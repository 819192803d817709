"""`evaluate` and `hedgegym evaluate`: same paths for every policy, reproducible files, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from hedgegym.agents.baselines import make_baseline
from hedgegym.envs.config import load_scenario, resolve_config
from hedgegym.envs.hedging_env import HedgingEnv
from hedgegym.envs.layout import OBS_DIM
from hedgegym.envs.market import SECOND_ORDER_METRICS
from hedgegym.train import evaluate
from hedgegym.train.cli import app
from hedgegym.train.policies import PolicyError, expand_baselines, load_policy, load_sb3_policy
from hedgegym.train.report import SECOND_ORDER_TABLES, report_markdown, table_columns

# One day of hourly steps keeps every run here to milliseconds; the book expires with the episode.
SHORT = {
    "episode.horizon_days": 1.0,
    "agent.lines": [{"strike": 100_000.0, "expiry_days": 1.0, "kind": k, "quantity": -20.0} for k in ("call", "put")],
}
runner = CliRunner()


@pytest.fixture(scope="module")
def short():
    return load_scenario("default", SHORT)


def cli(*args: str):
    return runner.invoke(app, ["evaluate", "--scenario", "default", *args])


# ------------------------------------------------------------------------------------ same paths
def test_policies_meet_identical_exogenous_paths(short):
    result = evaluate(
        ["no_hedge", "delta", "whalley_wilmott@cheapest"], short, episodes=6, seed=3, n_resamples=50, n_sample_paths=6
    )
    exo = {name: result.samples[name]["exo_spot"] for name in result.policies}
    for name in result.policies[1:]:
        np.testing.assert_array_equal(exo[name], exo["no_hedge"])
        np.testing.assert_array_equal(
            result.per_episode[name]["exo_spot_final"], result.per_episode["no_hedge"]["exo_spot_final"]
        )
    # ...while spot itself carries each policy's own impact.
    assert not np.array_equal(result.samples["delta@spot"]["spot"], result.samples["no_hedge"]["spot"])
    # Without trades the rerun with the agent's impact off is the same path: no share at all.
    assert np.all(result.per_episode["no_hedge"]["agent_vol_amplification"] == 0.0)
    np.testing.assert_array_equal(
        result.samples["no_hedge"]["spot_no_agent_impact"], result.samples["no_hedge"]["spot"]
    )


def test_episode_j_is_hedging_env_reset_with_seed_plus_j(short):
    result = evaluate(
        ["whalley_wilmott@cheapest"], short, episodes=4, seed=10, n_resamples=20, agent_impact_rerun=False
    )
    env = HedgingEnv(config=short)
    policy = make_baseline("whalley_wilmott@cheapest", short)
    obs, _ = env.reset(seed=12)
    done = False
    while not done:  # the same policy object drives the single env (1-D obs) through its market
        obs, _, terminated, truncated, info = env.step(policy(obs, env.unwrapped.market))
        done = terminated or truncated
    assert info["episode_metrics"]["pnl"] == result.per_episode["whalley_wilmott@cheapest"]["pnl"][2]
    assert info["episode_metrics"]["n_trades"] == result.per_episode["whalley_wilmott@cheapest"]["n_trades"][2]


def test_batching_does_not_change_any_episode(short):
    one = evaluate(["leland@cheapest"], short, episodes=7, seed=0, n_resamples=20, agent_impact_rerun=False)
    many = evaluate(
        ["leland@cheapest"], short, episodes=7, seed=0, n_resamples=20, agent_impact_rerun=False, batch_size=3
    )
    for key, values in one.per_episode["leland@cheapest"].items():
        np.testing.assert_array_equal(many.per_episode["leland@cheapest"][key], values, err_msg=key)


def test_same_seed_gives_identical_metrics_json(tmp_path, short):
    texts = []
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        result = evaluate(["no_hedge", "fixed_band"], short, episodes=12, seed=seed, n_resamples=100)
        result.write(tmp_path / name)
        texts.append((tmp_path / name / "metrics.json").read_text())
    assert texts[0] == texts[1]
    assert texts[0] != texts[2]
    data = json.loads(texts[0])
    assert data["seeds"] == [5, 16] and set(data["policies"]) == {"no_hedge", "fixed_band@spot"}
    assert data["reference"] == data["best"]["mean_variance"] == "fixed_band@spot"
    assert set(data["paired_differences"]) == {"no_hedge"}


def test_paired_difference_matches_the_episodes(short):
    result = evaluate(["no_hedge", "delta"], short, episodes=40, seed=0, n_resamples=200, agent_impact_rerun=False)
    diff = result.compare("delta@spot", "no_hedge")["pnl_mean"]
    per_episode = result.per_episode["delta@spot"]["pnl"] - result.per_episode["no_hedge"]["pnl"]
    assert diff.value == pytest.approx(per_episode.mean())
    assert diff.low < diff.value < diff.high
    with pytest.raises(KeyError, match="no policy 'ghost'"):
        result.compare("ghost", "no_hedge")


# ------------------------------------------------------------------------------------ the second-order market
def _episodes_in_hedging_env(config, policy_name: str, seeds) -> list[dict[str, np.ndarray]]:
    """Each seed's episode stepped in HedgingEnv under a baseline: its per-step info, as arrays."""
    env = HedgingEnv(config=config)
    policy = make_baseline(policy_name, config)
    out = []
    for seed in seeds:
        obs, info = env.reset(seed=int(seed))
        steps = [info]
        done = False
        while not done:
            obs, _, terminated, truncated, info = env.step(policy(obs, env.unwrapped.market))
            steps.append(info)
            done = terminated or truncated
        out.append({k: np.array([step[k] for step in steps]) for k in ("spot", "liquidated_long_usd", "crowded")})
    return out


def test_second_order_measures_per_policy_match_the_steps_and_are_absent_without_a_feature(short):
    plain = evaluate(["no_hedge", "delta"], short, episodes=4, seed=0, n_resamples=20, agent_impact_rerun=False)
    assert not set(SECOND_ORDER_METRICS) & set(plain.estimates["no_hedge"])
    assert not set(SECOND_ORDER_METRICS) & set(plain.episodes_csv().splitlines()[0].split(","))
    assert "second-order" not in report_markdown(plain)

    # A quarter of the cascade's day (24 steps of 15 minutes), dealer cohorts on too (crowding).
    cohorts = [{"share": 0.5, "rebalance_every": 2, "lag": 1}, {"share": 0.5, "rebalance_every": 2, "lag": 1}]
    config = load_scenario("liquidation-cascade", {"episode.horizon_days": 0.25, "dealers.cohorts": cohorts})
    result = evaluate(["no_hedge", "delta"], config, episodes=6, seed=40, n_resamples=50, agent_impact_rerun=False)
    for name in result.policies:
        assert set(SECOND_ORDER_METRICS) <= set(result.estimates[name]), name
    data = result.per_episode["no_hedge"]
    assert data["liquidated_long_usd"].max() > 0.0 and data["crowding"].max() > 0.0
    # The same episodes stepped in HedgingEnv: the per-step info, summed here, gives the per-episode
    # liquidations and crowding; the returns from the step's spot give the pooled autocorrelation.
    steps = _episodes_in_hedging_env(config, "no_hedge", range(40, 46))
    liquidated = np.array([ep["liquidated_long_usd"][1:].sum() for ep in steps])
    np.testing.assert_allclose(data["liquidated_long_usd"], liquidated, rtol=1e-12)
    estimates = result.estimates["no_hedge"]
    assert estimates["liquidated_long_usd"].value == pytest.approx(liquidated.mean(), rel=1e-12)
    np.testing.assert_allclose(data["crowding"], [ep["crowded"][1:].mean() for ep in steps], rtol=1e-12)
    returns = [np.diff(np.log(ep["spot"])) for ep in steps]
    r2 = sum(float(r @ r) for r in returns)
    for lag in (1, 2):
        pooled = sum(float(r[lag:] @ r[:-lag]) for r in returns) / r2
        assert estimates[f"return_autocorr_{lag}"].value == pytest.approx(pooled, rel=1e-9, abs=1e-12), lag
    # A market measure has no better direction: no policy is marked best on one.
    assert not set(SECOND_ORDER_METRICS) & set(result.best)
    csv_header = result.episodes_csv().splitlines()[0].split(",")
    assert csv_header[-len(SECOND_ORDER_METRICS) :] == list(SECOND_ORDER_METRICS)
    titles = [title for title, _ in table_columns(result)]
    assert titles[-3:] == [title for title, _ in SECOND_ORDER_TABLES]


@pytest.mark.parametrize(
    ("scenario", "shown", "hidden"),
    [
        ("vanna-crash", ["flow vanna", "psi (vanna)", "max ATM vol", "autocorr 1"], ["crowding", "liq. longs"]),
        ("crowded-dealers", ["flow gamma", "crowding", "cohort trades", "autocorr 2"], ["psi (vanna)", "liq. longs"]),
        ("liquidation-cascade", ["flow charm", "liq. longs", "insurance fund", "ADL events"], ["crowding"]),
    ],
)
def test_cli_reports_the_second_order_measures_per_policy(scenario, shown, hidden, tmp_path):
    out = tmp_path / "run"
    args = ["--scenario", scenario, "--set", "episode.horizon_days=0.25", "--baselines", "no_hedge,delta"]
    res = runner.invoke(app, ["evaluate", *args, "--episodes", "3", "--out", str(out)])
    assert res.exit_code == 0, res.output
    metrics = json.loads((out / "metrics.json").read_text())
    for policy in ("no_hedge", "delta@spot"):
        for key in SECOND_ORDER_METRICS:
            entry = metrics["policies"][policy]["metrics"][key]
            assert entry["ci"][0] <= entry["value"] <= entry["ci"][1], (policy, key)
    assert set(SECOND_ORDER_METRICS) <= set(metrics["metrics"])
    rows = (out / "episodes.csv").read_text().splitlines()
    assert rows[0].endswith(",".join(SECOND_ORDER_METRICS)) and len(rows) == 1 + 2 * 3
    report = (out / "report.md").read_text()
    assert "## Second-order market: the dealers' hedge flow per episode, USD" in report
    for label in shown:
        assert label in report and label in res.output, label
    for label in hidden:
        assert f"| {label} |" not in report and f" {label} " not in res.output, label


# ------------------------------------------------------------------------------------ the command
def test_cli_writes_every_output(tmp_path):
    out = tmp_path / "run"
    res = cli(
        "--set",
        "episode.horizon_days=1",
        "--baselines",
        "no_hedge,delta,whalley_wilmott",
        "--episodes",
        "10",
        "--seed",
        "2",
        "--out",
        str(out),
    )
    assert res.exit_code == 0, res.output
    assert "mean-var" in res.output and "whalley_wilmott@spot" in res.output
    names = {p.name for p in out.iterdir()}
    assert {
        "metrics.json",
        "episodes.csv",
        "report.md",
        "config.yaml",
        "run_info.json",
        "pnl_distribution.png",
        "slippage_vs_amplification.png",
        "sample_paths.png",
    } <= names
    rows = (out / "episodes.csv").read_text().splitlines()
    assert rows[0].startswith("policy,episode,seed,pnl,") and len(rows) == 1 + 3 * 10
    assert rows[1].startswith("no_hedge,0,2,")
    report = (out / "report.md").read_text()
    assert "## Paired differences" in report and "whalley_wilmott@spot" in report
    assert (out / "sample_paths.png").read_bytes()[:4] == b"\x89PNG"
    assert "timestamp" not in (out / "metrics.json").read_text()


def test_cli_default_run_dir_and_never_overwrites(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = cli("--set", "episode.horizon_days=0.25", "--baselines", "delta", "--episodes", "2")
    assert res.exit_code == 0, res.output
    (run,) = (tmp_path / "runs").iterdir()
    assert run.name.startswith("evaluate-default-") and (run / "metrics.json").is_file()
    before = (run / "metrics.json").read_bytes()
    res = cli("--baselines", "delta", "--episodes", "2", "--out", str(run))
    assert res.exit_code == 2 and "already exists and is not empty" in res.output
    assert (run / "metrics.json").read_bytes() == before


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--baselines", "delta,gamma_scalp"), "unknown baseline or policy 'gamma_scalp'; known baselines: no_hedge,"),
        (
            ("--baselines", "delta@future", "--set", "agent.venues=[spot]"),
            "venue 'future' is not one the agent may trade",
        ),
        (("--policy", "missing/model.zip"), "does not exist"),
        (("--policy", "no_such_module_xyz:act"), "cannot import 'no_such_module_xyz'"),
        (("--policy", "json:not_there"), "module 'json' has no attribute 'not_there'"),
        (("--episodes", "0"), "Invalid value for '--episodes'"),
    ],
)
def test_cli_bad_input_is_a_clear_error(args, message, tmp_path):
    res = cli(*args, "--out", str(tmp_path / "never"))
    assert res.exit_code == 2
    assert message in " ".join(res.output.split()), res.output
    assert "Traceback" not in res.output
    assert not (tmp_path / "never").exists()


def test_library_bad_input(short):
    with pytest.raises(ValueError, match=r"episodes 0: must be in \[1, 1,000,000\]"):
        evaluate(["delta"], short, episodes=0)
    with pytest.raises(PolicyError, match="given twice"):
        evaluate(["delta", "delta@spot"], short, episodes=1)
    with pytest.raises(PolicyError, match=r"returned actions of shape \(2, 2\); expected \(2, 3\)"):
        evaluate([("bad", lambda obs, market: np.zeros((len(obs), 2)))], short, episodes=2)
    with pytest.raises(PolicyError, match="NaN or inf"):
        evaluate([("nan", lambda obs, market: np.full((len(obs), 3), np.nan))], short, episodes=2)
    assert expand_baselines("all", short)[:5] == ["no_hedge", "delta", "fixed_band", "whalley_wilmott", "leland"]
    assert "delta@cheapest" in expand_baselines("all", short) and expand_baselines("none", short) == []


# ------------------------------------------------------------------------------------ --policy
def test_module_function_policy(tmp_path, monkeypatch, short):
    (tmp_path / "my_hedgers.py").write_text(
        "import numpy as np\n\n"
        "def idle(obs, market):\n"
        "    return np.zeros((obs.shape[0], len(market.enabled_venues)))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    by_module = load_policy("my_hedgers:idle", short)
    by_file = load_policy(f"{tmp_path / 'my_hedgers.py'}:idle", short)
    result = evaluate(
        ["no_hedge", ("idle", by_module), ("idle_file", by_file)],
        short,
        episodes=5,
        n_resamples=20,
        agent_impact_rerun=False,
    )
    # Zero trades in "trade" mode are no hedge at all.
    np.testing.assert_array_equal(result.per_episode["idle"]["pnl"], result.per_episode["no_hedge"]["pnl"])
    np.testing.assert_array_equal(result.per_episode["idle_file"]["pnl"], result.per_episode["no_hedge"]["pnl"])
    res = cli(
        "--set",
        "episode.horizon_days=0.25",
        "--baselines",
        "none",
        "--policy",
        "my_hedgers:idle",
        "--episodes",
        "3",
        "--out",
        str(tmp_path / "out"),
    )
    assert res.exit_code == 0, res.output
    assert set(json.loads((tmp_path / "out" / "metrics.json").read_text())["policies"]) == {"my_hedgers:idle"}


@pytest.fixture(scope="module")
def sb3_model(tmp_path_factory, short):
    """An (untrained) PPO on HedgingEnv's spaces, saved with VecNormalize statistics beside it."""
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

    folder = tmp_path_factory.mktemp("model")
    model = PPO("MlpPolicy", HedgingEnv(config=short), n_steps=16, batch_size=16, seed=0, device="cpu")
    model.save(folder / "agent.zip")
    vecnorm = VecNormalize(DummyVecEnv([lambda: HedgingEnv(config=short)]))
    vecnorm.obs_rms.mean[:] = 0.5
    vecnorm.obs_rms.var[:] = 4.0
    vecnorm.save(str(folder / "agent_vecnormalize.pkl"))
    return folder / "agent.zip", model


def test_sb3_model_applies_its_saved_normalisation(sb3_model, short):
    path, model = sb3_model
    policy = load_sb3_policy(path, short)
    assert policy.obs_normalizer is not None and "agent_vecnormalize.pkl" in policy.source
    obs = np.random.default_rng(0).normal(0.0, 2.0, (5, OBS_DIM)).astype(np.float32)
    expected, _ = model.predict(np.clip((obs - 0.5) / np.sqrt(4.0 + 1e-8), -10, 10), deterministic=True)
    np.testing.assert_allclose(policy(obs, None), expected, rtol=1e-6)
    result = evaluate(["delta", ("agent", policy)], short, episodes=3, n_resamples=20)
    assert result.per_episode["agent"]["pnl"].shape == (3,)


def test_sb3_model_with_other_spaces_is_refused(tmp_path, sb3_model, short):
    import gymnasium as gym
    from stable_baselines3 import PPO

    other = tmp_path / "pendulum.zip"
    PPO("MlpPolicy", gym.make("Pendulum-v1"), n_steps=16, batch_size=16, device="cpu").save(other)
    with pytest.raises(PolicyError, match="trained on a different observation space"):
        load_sb3_policy(other, short)
    res = cli("--policy", str(other), "--episodes", "1")
    assert res.exit_code == 2 and "different observation space" in res.output
    two_venues = load_scenario("default", {**SHORT, "agent.venues": ["spot", "perp"]})
    with pytest.raises(PolicyError, match=r"expects one action per venue.*shape \(2,\)"):
        load_sb3_policy(sb3_model[0], two_venues)
    (tmp_path / "junk.zip").write_bytes(b"not a zip")
    with pytest.raises(PolicyError, match="is not a stable-baselines3 model zip"):
        load_sb3_policy(tmp_path / "junk.zip", short)


# ------------------------------------------------------------------------------------ the agent interface
@pytest.fixture(scope="module")
def delta_run(tmp_path_factory):
    """A tiny ppo_multi run: action_mode delta, min_trade 0.5, normalised observations, three venues."""
    from hedgegym.train.experiment import load_experiment
    from hedgegym.train.training import train

    cfg = load_experiment(
        Path(__file__).resolve().parents[2] / "configs" / "ppo_multi.yaml",
        {
            "env.n_envs": 4,
            "training.total_timesteps": 128,
            "evaluation.every": 128,
            "evaluation.episodes": 4,
            "evaluation.final_episodes": 4,
            "evaluation.baselines": [],
            "algorithm.hyperparameters.n_steps": 32,
            "algorithm.hyperparameters.batch_size": 64,
            "algorithm.hyperparameters.n_epochs": 1,
            "scenario.overrides.episode.horizon_days": 1.0,
            "scenario.overrides.agent.lines": SHORT["agent.lines"],
        },
    )
    return train(cfg, out=tmp_path_factory.mktemp("delta") / "run").run_dir


def test_a_saved_model_is_evaluated_with_the_interface_it_was_trained_for(delta_run, tmp_path):
    from hedgegym.train.policies import read_interface

    model = delta_run / "best_model.zip"
    interface = read_interface(model)
    assert interface["agent"] == {
        "action_mode": "delta",
        "venues": ["spot", "perp", "future"],
        "max_trade": 20.0,
        "min_trade": 0.5,
    }
    assert interface["observation"]["normalized"] and interface["normalizer"]["file"] == "best_model_vecnormalize.pkl"
    # On the default market (action_mode trade, min_trade 0) the model's own interface is applied: the
    # agent's episodes are those on its own scenario.yaml, the same market with that interface.
    on_default = evaluate(
        [str(model)], load_scenario("default", SHORT), episodes=3, seed=7, n_resamples=20, agent_impact_rerun=False
    )
    own = evaluate(
        [str(model)],
        resolve_config(delta_run / "scenario.yaml"),
        episodes=3,
        seed=7,
        n_resamples=20,
        agent_impact_rerun=False,
    )
    assert on_default.config.agent.action_mode == "delta" and on_default.config.agent.min_trade == 0.5
    np.testing.assert_array_equal(on_default.per_episode[str(model)]["pnl"], own.per_episode[str(model)]["pnl"])
    assert on_default.notes and "agent.action_mode=delta" in on_default.notes[0]
    # A bare zip without its interface applied is refused rather than read in another mode.
    with pytest.raises(PolicyError, match="trained for another agent interface"):
        load_sb3_policy(model, load_scenario("default"))


def test_cli_evaluates_on_another_scenario_with_the_trained_interface(delta_run, tmp_path):
    import subprocess

    out = tmp_path / "out"
    res = subprocess.run(
        [
            "hedgegym",
            "evaluate",
            "--scenario",
            "short-gamma-crash",
            "--policy",
            str(delta_run / "best_model.zip"),
            "--baselines",
            "delta",
            "--episodes",
            "3",
            "--set",
            "episode.horizon_days=1",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    text = " ".join(res.stdout.split())
    assert "evaluated with the agent interface it was trained for (agent.action_mode=delta" in text
    assert "agent.min_trade=0.5" in text
    saved = resolve_config(out / "config.yaml")
    assert saved.name == "short-gamma-crash" and saved.agent.action_mode == "delta"


def test_a_model_without_its_normaliser_or_with_another_is_refused(delta_run, tmp_path):
    import shutil
    import subprocess

    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(delta_run / "best_model.zip", alone / "agent.zip")
    config = resolve_config(delta_run / "scenario.yaml")
    with pytest.raises(PolicyError, match="the normaliser is missing.*best_model_vecnormalize.pkl"):
        load_sb3_policy(alone / "agent.zip", config)
    res = subprocess.run(
        [
            "hedgegym",
            "evaluate",
            "--config",
            str(delta_run / "scenario.yaml"),
            "--policy",
            str(alone / "agent.zip"),
            "--episodes",
            "2",
            "--out",
            str(tmp_path / "never"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 2 and "the normaliser is missing" in res.stderr and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and not (tmp_path / "never").exists()
    # Another model's statistics beside it (here: the final model's, a later snapshot) are refused too.
    shutil.copy(delta_run / "model_vecnormalize.pkl", alone / "agent_vecnormalize.pkl")
    if (delta_run / "model_vecnormalize.pkl").read_bytes() != (delta_run / "best_model_vecnormalize.pkl").read_bytes():
        with pytest.raises(PolicyError, match="not the normaliser saved with agent.zip"):
            load_sb3_policy(alone / "agent.zip", config)
    shutil.copy(delta_run / "best_model_vecnormalize.pkl", alone / "agent_vecnormalize.pkl")
    assert load_sb3_policy(alone / "agent.zip", config).obs_normalizer is not None


def test_other_observation_layouts_and_mixed_interfaces_are_refused(delta_run, tmp_path):
    import zipfile

    from hedgegym.train.policies import INTERFACE_MEMBER, read_interface, with_policy_interface

    interface = read_interface(delta_run / "best_model.zip")
    interface["observation"]["names"][16] = "dealer_gamma"
    with zipfile.ZipFile(delta_run / "best_model.zip") as src, zipfile.ZipFile(tmp_path / "old.zip", "w") as dst:
        for item in src.namelist():
            data = json.dumps(interface) if item == INTERFACE_MEMBER else src.read(item)
            dst.writestr(item, data)
    with pytest.raises(
        PolicyError, match="observation layout mismatch.*entry 16 is 'dealer_gamma' for the policy and 'phi' here"
    ):
        with_policy_interface(load_scenario("default"), [str(tmp_path / "old.zip")])
    interface["observation"]["names"][16] = "phi"
    interface["agent"]["action_mode"] = "trade"
    with zipfile.ZipFile(delta_run / "best_model.zip") as src, zipfile.ZipFile(tmp_path / "trade.zip", "w") as dst:
        for item in src.namelist():
            dst.writestr(item, json.dumps(interface) if item == INTERFACE_MEMBER else src.read(item))
    with pytest.raises(PolicyError, match=r"different agent interfaces \(agent.action_mode: delta vs trade\)"):
        with_policy_interface(
            load_scenario("default"), [str(delta_run / "best_model.zip"), str(tmp_path / "trade.zip")]
        )


def _strip_interface(src: Path, dst: Path) -> None:
    """``src`` as a plain SB3 zip: the model without hedgegym's interface record."""
    import zipfile

    from hedgegym.train.policies import INTERFACE_MEMBER

    with zipfile.ZipFile(src) as a, zipfile.ZipFile(dst, "w") as b:
        for item in a.namelist():
            if item != INTERFACE_MEMBER:
                b.writestr(item, a.read(item))


def test_a_model_without_an_interface_record_is_evaluated_with_a_note(delta_run, tmp_path):
    """The issue's case: a zip without hedgegym_interface.json (a plain SB3 zip, or saved before the
    record) is read in the scenario's action mode, unnormalised: never without a word."""
    import shutil
    import subprocess

    from hedgegym.train.policies import read_interface

    plain = tmp_path / "plain"
    plain.mkdir()
    model = plain / "agent.zip"
    _strip_interface(delta_run / "best_model.zip", model)
    assert read_interface(model) is None
    # On the default market, three venues: action_mode trade, min_trade 0 (not the model's delta, 0.5).
    default = load_scenario("default", {**SHORT, "agent.venues": ["spot", "perp", "future"]})
    result = evaluate([str(model)], default, episodes=2, n_resamples=10, agent_impact_rerun=False)
    (note,) = result.notes
    assert note == (
        f"{model}: the model carries no record of the agent interface it was trained for (no "
        "hedgegym_interface.json: a plain stable-baselines3 zip or one saved before hedgegym recorded "
        "it), so it is evaluated with the agent settings of scenario 'default' (action_mode=trade, "
        "venues=spot,perp,future, max_trade=20, min_trade=0) and without a normaliser (none found "
        "beside it); if it was trained otherwise, its results are not its own"
    )
    assert result.config.agent.action_mode == "trade"
    # The same note on the command line, one line of stdout.
    res = subprocess.run(
        [
            "hedgegym",
            "evaluate",
            "--config",
            str(delta_run / "scenario.yaml"),
            "--policy",
            str(model),
            "--baselines",
            "none",
            "--episodes",
            "2",
            "--out",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    line = next(x for x in res.stdout.splitlines() if "carries no record" in x)
    assert "(action_mode=delta, venues=spot,perp,future, max_trade=20, min_trade=0.5)" in line
    assert line.endswith(
        "without a normaliser (none found beside it); if it was trained otherwise, its results are not its own"
    )
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["notes"] == [line]
    # Its own statistics under its name: used, and the note says so.
    shutil.copy(delta_run / "best_model_vecnormalize.pkl", plain / "agent_vecnormalize.pkl")
    result = evaluate([str(model)], default, episodes=2, n_resamples=10, agent_impact_rerun=False)
    assert "and with the normaliser agent_vecnormalize.pkl found beside it;" in result.notes[0]
    # Statistics beside it under another model's name: it may have been trained on them; refused.
    (plain / "agent_vecnormalize.pkl").rename(plain / "best_model_vecnormalize.pkl")
    with pytest.raises(
        PolicyError,
        match=r"normaliser statistics beside it \(best_model_vecnormalize.pkl\) are "
        r"not named for it.*copy its own as agent_vecnormalize.pkl",
    ):
        evaluate([str(model)], default, episodes=2)
    with pytest.raises(PolicyError, match="not named for it"):
        load_sb3_policy(model, default)


def test_best_model_and_report_rank_by_the_one_objective(delta_run, monkeypatch):
    """Replacing hedgegym.train.evaluate.objective changes both the report's ranking and training's."""
    import importlib

    from hedgegym.train.experiment import load_experiment
    from hedgegym.train.policies import load_sb3_policy as load
    from hedgegym.train.training import held_out_evaluation

    E = importlib.import_module("hedgegym.train.evaluate")  # the module (the package's `evaluate` is the function)
    result = evaluate(
        ["no_hedge", "delta"],
        load_scenario("default", SHORT),
        episodes=20,
        seed=0,
        n_resamples=20,
        agent_impact_rerun=False,
    )
    assert result.reference == result.best["mean_variance"] == "delta@spot"
    for name in result.policies:
        assert result.objectives[name] == pytest.approx(result.estimates[name]["mean_variance"].value, rel=1e-12)
    monkeypatch.setattr(E, "objective", lambda per_episode, config: -float(np.mean(per_episode["n_trades"])))
    result = evaluate(
        ["no_hedge", "delta"],
        load_scenario("default", SHORT),
        episodes=20,
        seed=0,
        n_resamples=20,
        agent_impact_rerun=False,
    )
    assert result.reference == result.best["mean_variance"] == "no_hedge"  # fewest trades wins now
    cfg = load_experiment(delta_run / "config.yaml")
    policy = load(delta_run / "best_model.zip", cfg.scenario.resolved)
    monkeypatch.setattr(E, "objective", lambda per_episode, config: 42.0)
    assert held_out_evaluation(policy.model, policy.obs_normalizer, cfg)["objective"] == 42.0


def test_plots_read_at_a_glance(short, monkeypatch, tmp_path):
    import hedgegym.train.plots as P

    figures = {}
    monkeypatch.setattr(P, "save_figure_atomic", lambda fig, path: figures.__setitem__(Path(path).name, fig))
    result = evaluate(
        ["no_hedge", "delta", "fixed_band", "whalley_wilmott"],
        short,
        episodes=200,
        seed=0,
        n_resamples=50,
        n_sample_paths=3,
    )
    result.write(tmp_path / "out")
    # Each P&L panel has its own axis, and its mean and -VaR95 lie on it.
    for ax, name in zip(figures["pnl_distribution.png"].axes, result.policies, strict=True):
        lo, hi = ax.get_xlim()
        assert lo < -result.estimates[name]["var_95"].value < hi and lo < result.per_episode[name]["pnl"].mean() < hi
    # One marker per policy in a legend, no labels piled on the points, no offset on the amplification axis.
    ax_amp = figures["slippage_vs_amplification.png"].axes[0]
    assert not ax_amp.texts and not ax_amp.yaxis.get_major_formatter().get_useOffset()
    legend = figures["slippage_vs_amplification.png"].axes[-1].get_legend()
    assert [t.get_text() for t in legend.get_texts()] == result.policies
    # Sample paths: price, the agent's own impact, the hedge by venue, the cumulative P&L.
    price, impact, hedge, pnl = figures["sample_paths.png"].axes
    assert len(impact.get_lines()) == 3 + 1 and len(pnl.get_lines()) == 3 + 1  # paths + the zero line
    assert [t.get_text() for t in hedge.get_legend().get_texts()] == [
        "spot (coins)",
        "perp (coins)",
        "future (contracts)",
    ]
    # The training curve: a linear reward axis with readable ticks, the early outlier counted.
    history = {
        "rollouts": [[128 * k, r] for k, r in enumerate([-5e4, -900.0, -300.0, -120.0, -80.0, -60.0], 1)],
        "evaluations": [{"timesteps": 512, "objective": -2e4}],
        "best": {"timesteps": 512, "objective": -2e4},
    }
    P.plot_training_curve(history, tmp_path / "curve.png")
    ax_r = figures["curve.png"].axes[0]
    lo, hi = ax_r.get_ylim()
    assert ax_r.get_yscale() == "linear" and sum(lo <= t <= hi for t in ax_r.get_yticks()) >= 3
    assert "off the axis" in ax_r.texts[0].get_text()
