"""Scenario config (`hedgegym.envs.config`): every bad input fails at load with a message naming the
field; named scenarios load and land where MODEL.md §8 says; overrides work and are checked."""

from __future__ import annotations

import math
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel

from hedgegym.envs.config import (
    ConfigError,
    ScenarioConfig,
    apply_overrides,
    list_scenarios,
    load_config,
    load_scenario,
    save_config,
    validate_config,
)
from hedgegym.envs.layout import SPOT, V_INV_DEPTH
from hedgegym.envs.market import Market

SCENARIOS = sorted(list_scenarios())
LINE = {"strike": 100_000.0, "expiry_days": 7.0, "kind": "call", "quantity": -10.0}


def config_error(data) -> str:
    with pytest.raises(ConfigError) as info:
        validate_config(data)
    return str(info.value)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "scenario.yaml"
    path.write_text(text)
    return path


# --------------------------------------------------------------------------------------- bad fields
@pytest.mark.parametrize(
    ("data", "field", "reason"),
    [
        ({"venues": {"spot": {"depth_usd_per_pct": -1.0e8}}}, "venues.spot.depth_usd_per_pct", "greater than 0"),
        ({"venues": {"perp": {"depth_usd_per_pct": 0.0}}}, "venues.perp.depth_usd_per_pct", "greater than 0"),
        ({"market": {"sigma": -0.2}}, "market.sigma", "greater than 0"),
        ({"market": {"heston": {"theta_v": -0.1}}}, "market.heston.theta_v", "greater than 0"),
        ({"episode": {"dt_hours": -1.0}}, "episode.dt_hours", "greater than 0"),
        ({"episode": {"dt_hours": 0.0}}, "episode.dt_hours", "greater than 0"),
        ({"agent": {"lines": [LINE | {"expiry_days": 0.0}]}}, "agent.lines.0.expiry_days", "greater than 0"),
        ({"agent": {"lines": [LINE | {"expiry_days": -3.0}]}}, "agent.lines.0.expiry_days", "greater than 0"),
        ({"dealers": {"lines": [LINE | {"expiry_days": 0.0}]}}, "dealers.lines.0.expiry_days", "greater than 0"),
        ({"venues": {"future": {"expiry_days": 0.0}}}, "venues.future.expiry_days", "greater than 0"),
        ({"agent": {"venues": []}}, "agent.venues", "at least one venue is required"),
        ({"agent": {"venues": ["spot", "spot"]}}, "agent.venues", "must not repeat"),
        ({"agent": {"venues": ["spot", "options"]}}, "agent.venues.1", "'spot', 'perp' or 'future'"),
        ({"agent": {"lines": []}}, "agent.lines", "at least one option line"),
        ({"agent": {"lines": [LINE | {"kind": "straddle"}]}}, "agent.lines.0.kind", "'call' or 'put'"),
        (
            {"agent": {"lines": [LINE | {"expiry_days": 7.01}]}},
            "agent.lines.0.expiry_days=7.01",
            "not on the step grid",
        ),
        ({"dealers": {"venue_mix": {"spot": 0.5, "perp": 0.6, "future": 0.1}}}, "dealers.venue_mix", "must sum to 1"),
        ({"episode": {"horizon_days": 1.0, "dt_hours": 7.0}}, "episode", "whole number"),
        ({"market": {"impact": {"phi_floor": 1.0}}}, "market.impact.phi_floor", "less than 1"),
        ({"market": {"impact": {"newton_iterations": 2.5}}}, "market.impact.newton_iterations", "whole number"),
        ({"market": {"sigma": "high"}}, "market.sigma", "must be a number"),
    ],
)
def test_invalid_field_fails_naming_field_value_and_rule(data, field, reason):
    message = config_error(data)
    assert f"  {field}: " in message or f"{field} is" in message  # field errors / cross-field errors
    assert reason in message


def test_unknown_key_is_rejected_with_its_dotted_path():
    message = config_error({"market": {"impact": {"permanent_shar": 0.5}}})
    assert "market.impact.permanent_shar: unknown field" in message and "check the spelling" in message
    assert "sigmaa: unknown field" in config_error({"sigmaa": 0.5})


def test_all_problems_are_reported_at_once():
    message = config_error({"market": {"sigma": -1.0}, "episode": {"dt_hours": -1.0}})
    assert "market.sigma" in message and "episode.dt_hours" in message


def test_a_mapping_is_required():
    assert "expected a mapping of sections, got list" in config_error([1, 2])


def test_config_is_frozen():
    cfg = ScenarioConfig()
    with pytest.raises(Exception, match="frozen"):
        cfg.market.sigma = 0.9


# --------------------------------------------------------------------------------------- NaN / inf
def _float_fields(model: type[BaseModel], prefix: str = ""):
    """Dotted paths of every float field (list items as index 0), walking nested sections."""
    for name, field in model.model_fields.items():
        ann, path = field.annotation, prefix + name
        args = typing.get_args(ann)
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            yield from _float_fields(ann, path + ".")
        elif ann is float or (float in args and type(None) in args):
            yield path
        elif typing.get_origin(ann) is list and args and isinstance(args[0], type) and issubclass(args[0], BaseModel):
            yield from _float_fields(args[0], path + ".0.")


def _set(data: dict, path: str, value) -> dict:
    node = data
    parts = path.split(".")
    for p in parts[:-1]:
        node = node[int(p)] if isinstance(node, list) else node.setdefault(p, {})
    node[parts[-1]] = value
    return data


def _get(cfg: ScenarioConfig, path: str):
    node = cfg
    for p in path.split("."):
        node = node[int(p)] if isinstance(node, list) else getattr(node, p)
    return node


FLOAT_FIELDS = list(_float_fields(ScenarioConfig))
DEPTHS = {f"venues.{v}.depth_usd_per_pct" for v in ("spot", "perp", "future")}


def test_every_float_field_is_walked():
    assert len(FLOAT_FIELDS) > 50
    assert {"market.sigma", "venues.perp.funding_interval_hours", "dealers.lines.0.quantity"} <= set(FLOAT_FIELDS)
    assert DEPTHS <= set(FLOAT_FIELDS)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf], ids=["nan", "inf", "-inf"])
def test_non_finite_values_are_rejected_except_infinite_depth(bad):
    for path in FLOAT_FIELDS:
        data = ScenarioConfig().model_dump()
        data["dealers"]["lines"] = [dict(LINE)]
        data["dealers"]["cohorts"] = [{"share": 1.0}]
        _set(data, path, bad)
        if path in DEPTHS and bad == math.inf:
            assert math.isinf(_get(validate_config(data), path))
            continue
        message = config_error(data)
        assert f"  {path}: " in message, (path, message)


def test_infinite_depth_means_no_impact(tmp_path):
    cfg = load_config(write(tmp_path, "venues:\n  spot: {depth_usd_per_pct: .inf}\n"))
    assert cfg.venues.spot.depth_usd_per_pct == math.inf
    assert Market(cfg).venues[SPOT, V_INV_DEPTH] == 0.0


def test_nan_written_in_yaml_is_rejected(tmp_path):
    with pytest.raises(ConfigError, match=r"market\.sigma: must be a finite number .*\(got nan\)"):
        load_config(write(tmp_path, "market:\n  sigma: .nan\n"))
    with pytest.raises(ConfigError, match=r"venues\.spot\.depth_usd_per_pct: .*\(got nan\)"):
        load_config(write(tmp_path, "venues:\n  spot: {depth_usd_per_pct: .nan}\n"))


# --------------------------------------------------------------------------------------- YAML
def test_exponent_without_sign_is_coerced_to_float(tmp_path):
    # YAML 1.1 (PyYAML) reads `5.0e7` as the string "5.0e7"; pydantic's lax mode parses it.
    path = write(tmp_path, "venues:\n  spot: {depth_usd_per_pct: 5.0e7}\n  perp: {depth_usd_per_pct: 2e8}\n")
    cfg = load_config(path)
    assert cfg.venues.spot.depth_usd_per_pct == 5.0e7 and isinstance(cfg.venues.spot.depth_usd_per_pct, float)
    assert cfg.venues.perp.depth_usd_per_pct == 2.0e8


def test_malformed_yaml_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="malformed YAML in .*scenario.yaml"):
        load_config(write(tmp_path, "market: {sigma: 0.6\nvenues: [\n"))


def test_top_level_must_be_a_mapping(tmp_path):
    with pytest.raises(ConfigError, match="top level must be a mapping of sections, got list"):
        load_config(write(tmp_path, "- market\n- venues\n"))


def test_empty_file_is_the_default_scenario(tmp_path):
    assert load_config(write(tmp_path, "")) == ScenarioConfig()


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_error_message_names_the_file(tmp_path):
    with pytest.raises(ConfigError, match=r"invalid config in .*scenario\.yaml:\n  market\.sigma"):
        load_config(write(tmp_path, "market:\n  sigma: -1.0\n"))


def test_saved_config_loads_back_identical(tmp_path):
    cfg = load_scenario("short-gamma-crash")
    save_config(cfg, tmp_path / "resolved.yaml")
    assert load_config(tmp_path / "resolved.yaml") == cfg
    assert not list(tmp_path.glob(".*.tmp"))


# --------------------------------------------------------------------------------------- scenarios
def test_named_scenarios_are_listed_with_descriptions():
    scenarios = list_scenarios()
    assert {"default", "short-gamma-crash", "long-gamma-pin", "zero-dte", "vault-epoch", "frictionless"} <= set(
        scenarios
    )
    assert all(desc.strip() for desc in scenarios.values())


@pytest.mark.parametrize("name", SCENARIOS)
def test_every_scenario_loads_and_is_named_after_its_file(name):
    cfg = load_scenario(name)
    assert cfg.name == name
    assert cfg.description == list_scenarios()[name]
    assert cfg.episode_steps >= 1


def test_default_scenario_file_is_the_schema_default():
    # default.yaml restates the schema's defaults (an empty file is the default scenario): they must
    # not drift apart. Lines are compared as sets; their order in a book carries no meaning.
    def canonical(cfg):
        data = cfg.model_dump(exclude={"name", "description"})
        for section in ("agent", "dealers"):
            data[section]["lines"] = sorted(data[section]["lines"], key=lambda line: sorted(line.items()))
        return data

    assert canonical(load_scenario("default")) == canonical(ScenarioConfig())


@pytest.mark.parametrize("name", SCENARIOS)
def test_scenarios_land_in_the_calibrated_phi_range(name):
    # MODEL.md §8: short-gamma dealers at phi ~ -0.1 .. -0.5, long-gamma pins at +0.1 .. +0.3.
    cfg = load_scenario(name)
    market = Market(cfg)
    market.reset(seeds=0)
    phi = market.state["phi"][0]
    if not cfg.dealers.lines:
        assert phi == 0.0
    elif sum(line.quantity for line in cfg.dealers.lines) > 0:
        assert 0.1 <= phi <= 0.3
    else:
        assert -0.5 <= phi <= -0.05


def test_unknown_scenario_lists_the_known_ones():
    with pytest.raises(ConfigError, match=r"unknown scenario 'nope'; known scenarios: .*default.*short-gamma-crash"):
        load_scenario("nope")


# --------------------------------------------------------------------------------------- overrides
def test_overrides_set_nested_fields_and_parse_yaml_scalars():
    cfg = load_scenario(
        "default",
        {
            "market.sigma": "0.8",
            "market.impact.circuit_breaker.enabled": "true",
            "venues.spot.depth_usd_per_pct": "5e7",
            "agent.venues": "[spot]",
        },
    )
    assert cfg.market.sigma == 0.8
    assert cfg.market.impact.circuit_breaker.enabled is True
    assert cfg.venues.spot.depth_usd_per_pct == 5e7
    assert cfg.agent.venues == ["spot"]
    # Untouched fields keep the scenario's values.
    assert cfg.venues.perp == load_scenario("default").venues.perp


def test_overrides_do_not_mutate_their_input():
    data = {"market": {"sigma": 0.5}}
    out = apply_overrides(data, {"market.sigma": 0.9, "episode.dt_hours": 2.0})
    assert data == {"market": {"sigma": 0.5}}
    assert out == {"market": {"sigma": 0.9}, "episode": {"dt_hours": 2.0}}


def test_nested_overrides_merge_field_by_field():
    out = apply_overrides({"market": {"sigma": 0.5, "mu": 0.1}}, {"market": {"jumps": {"enabled": True}, "mu": 0.2}})
    assert out == {"market": {"sigma": 0.5, "mu": 0.2, "jumps": {"enabled": True}}}


def test_overrides_on_a_validated_config():
    cfg = validate_config(apply_overrides(ScenarioConfig(), {"market.sigma": 0.7}))
    assert cfg.market.sigma == 0.7 and cfg.dealers == ScenarioConfig().dealers


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"market..sigma": 0.5}, r"override key 'market\.\.sigma' is malformed"),
        ({"market.sigma.value": 0.5}, r"override 'market\.sigma\.value': 'sigma' is not a section"),
        ({"market.sigma": "[0.5"}, r"malformed YAML in the value of override 'market\.sigma' \('\[0\.5'\)"),
        ({"market.sigmaa": 0.5}, r"market\.sigmaa: unknown field"),
        ({"market.sigma": -0.5}, r"market\.sigma: Input should be greater than 0 \(got -0\.5\)"),
        ({"market.sigma": "true"}, r"market\.sigma: must be a number > 0 and <= 10 \(got True\)"),
        ({"market.sigma": ".nan"}, r"market\.sigma: must be a finite number"),
        ({"agent.venues": "[]"}, r"agent\.venues: .*at least one venue"),
    ],
)
def test_bad_overrides_are_rejected(overrides, match):
    with pytest.raises(ConfigError, match=match):
        load_scenario("default", overrides)


def test_override_reaches_the_kernel_parameters():
    market = Market(load_scenario("default", {"venues.spot.depth_usd_per_pct": ".inf", "market.sigma": 0.3}))
    assert market.venues[SPOT, V_INV_DEPTH] == 0.0
    assert market.params["sigma"][0] == 0.3


# --------------------------------------------------------------------------------------- strict input
def test_duplicate_keys_are_rejected_with_the_key_and_lines(tmp_path):
    # PyYAML keeps the last of two equal keys: the second `market` section would replace the first.
    text = "market:\n  sigma: 0.8\nepisode:\n  dt_hours: 1.0\nmarket:\n  mu: 0.1\n"
    with pytest.raises(ConfigError, match=r"scenario\.yaml: duplicate key 'market' at line 5 \(first at line 1\)"):
        load_config(write(tmp_path, text))
    with pytest.raises(ConfigError, match=r"duplicate key 'sigma' at line 3 \(first at line 2\)"):
        load_config(write(tmp_path, "market:\n  sigma: 0.8\n  sigma: 0.9\n"))
    with pytest.raises(ConfigError, match=r"duplicate key 'enabled'"):
        load_scenario("default", {"market.jumps": "{enabled: true, enabled: false}"})
    # YAML's merge key is not a duplicate: an anchored section reused and extended loads.
    cfg = load_config(write(tmp_path, "venues:\n  perp: &v {fee: 0.001}\n  future:\n    <<: *v\n    margin: 0.2\n"))
    assert cfg.venues.future.fee == 0.001 and cfg.venues.future.margin == 0.2


def test_invalid_utf8_is_one_clear_error(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("name: x\ndescription: caf\u00e9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin1\.yaml is not UTF-8 text: byte 0xe9 at line 2 cannot be decoded"):
        load_config(path)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"market.sigma": "true"}, "market.sigma: must be a number > 0 and <= 10 (got True)"),
        ({"market.sigma": True}, "market.sigma: must be a number > 0 and <= 10 (got True)"),
        ({"market.jumps.enabled": "1"}, "market.jumps.enabled: must be true or false (got 1)"),
        ({"market.jumps.enabled": "'yes'"}, "market.jumps.enabled: must be true or false (got 'yes')"),
        ({"market.impact.circuit_breaker.halt_steps": "true"}, "halt_steps: must be a whole number >= 1 (got True)"),
        ({"market.impact.newton_iterations": "4.0"}, "market.impact.newton_iterations: must be a whole number >= 1"),
        ({"dealers.rebalance_every": "false"}, "dealers.rebalance_every: must be a whole number >= 1 (got False)"),
        ({"agent.venues": "spot"}, "agent.venues: must be a list (got 'spot')"),
        ({"name": "123"}, "name: must be a string (got 123)"),
    ],
)
def test_overrides_are_strictly_typed(overrides, message):
    with pytest.raises(ConfigError) as info:
        load_scenario("default", overrides)
    assert message in str(info.value)


def test_numbers_spelled_as_strings_still_reach_float_fields():
    # PyYAML reads 5.0e7 and 1e-3 as strings; float fields take them (and only float fields).
    cfg = validate_config(
        {"venues": {"spot": {"depth_usd_per_pct": "5.0e7", "fee": "1e-3"}}, "agent": {"venues": ("spot", "perp")}}
    )
    assert cfg.venues.spot.depth_usd_per_pct == 5.0e7 and cfg.venues.spot.fee == 1e-3
    assert cfg.agent.venues == ["spot", "perp"]
    assert "must be a number" in config_error({"market": {"sigma": "0.6x"}})
    assert "must be a whole number" in config_error({"dealers": {"rebalance_every": "2"}})


def test_one_resolver_for_every_kind_of_source(tmp_path):
    from hedgegym.envs.config import resolve_config

    cfg = load_scenario("zero-dte")
    save_config(cfg, tmp_path / "z.yaml")
    sources = ["zero-dte", cfg, cfg.model_dump(), tmp_path / "z.yaml", str(tmp_path / "z.yaml")]
    for source in sources:
        assert resolve_config(source) == cfg
        assert resolve_config(source, {"market": {"sigma": 0.9}}).market.sigma == 0.9
    assert resolve_config(cfg) is cfg  # nothing to change: no second validation
    assert resolve_config(None) == load_scenario("default")
    with pytest.raises(ConfigError, match=r"unknown scenario 'zero_dte'.*given by its path"):
        resolve_config("zero_dte")
    with pytest.raises(ConfigError, match="got int"):
        resolve_config(3)


def test_cli_rejects_a_boolean_for_a_number_in_one_line(tmp_path):
    import subprocess

    run = subprocess.run(
        ["hedgegym", "simulate", "--paths", "1", "--set", "market.sigma=true"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert run.returncode == 2, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "market.sigma: must be a number > 0 and <= 10 (got True)" in lines[0], run.stderr


def test_scenarios_are_package_data_and_export_as_loadable_copies(tmp_path):
    from importlib import resources

    from hedgegym.envs.config import export_scenarios, scenario_text

    shipped = sorted(
        f.name for f in (resources.files("hedgegym.envs") / "scenarios").iterdir() if f.name.endswith(".yaml")
    )
    assert shipped == [f"{name}.yaml" for name in SCENARIOS]
    assert scenario_text("zero-dte").startswith("# zero-dte")  # the file itself, comments included
    paths = export_scenarios(tmp_path / "mine")
    assert sorted(p.name for p in paths) == shipped
    for path in paths:
        assert load_config(path) == load_scenario(path.stem)
    with pytest.raises(ConfigError, match="already exist"):
        export_scenarios(tmp_path / "mine")  # an edited copy is never replaced
