"""Policies for evaluation: baselines by name, trained SB3 models, ``module:function`` callables.

A policy is a callable ``policy(obs[N, OBS_DIM], market) -> actions[N, n_enabled_venues]`` in
[-1, 1] (see :mod:`hedgegym.agents.baselines`). :func:`resolve_policies` turns the CLI's
``--policy`` strings and baseline names into policies.

**A saved model carries the agent interface it was trained for.** The training pipeline writes
``hedgegym_interface.json`` into every model zip it saves (checkpoints, ``best_model.zip``,
``model.zip``): the action mapping (``agent.action_mode``, ``agent.venues``, ``agent.max_trade``,
``agent.min_trade``), the observation layout (``OBS_NAMES``) and whether observations were
normalised, with the SHA-256 of the normaliser statistics saved beside the zip. SB3 ignores the
extra member, so the zip stays a plain SB3 model. :func:`with_policy_interface` applies that
interface to the scenario a model is evaluated on (a policy trained on ``default`` in
``delta`` mode is judged on a crash scenario in ``delta`` mode); a model whose observation layout
differs, or whose normaliser is missing or is not its own, is refused with one line saying so.
A zip without the member (a plain SB3 model, or one saved before the record existed) is evaluated
with the scenario's agent settings, and with the normaliser named for it beside it if there is one,
else unnormalised — never without a word: :func:`with_policy_interface` returns a note saying so
(printed by ``hedgegym evaluate``, kept in ``EvaluationResult.notes``). If normaliser files sit
beside such a zip but none is named for it, it is refused: it may have been trained on them.

Example:
    >>> from hedgegym.envs.config import load_scenario
    >>> from hedgegym.envs.layout import OBS_NAMES
    >>> from hedgegym.train.policies import apply_interface
    >>> interface = {"agent": {"action_mode": "delta", "venues": ["spot"], "max_trade": 20.0, "min_trade": 0.5},
    ...              "observation": {"names": list(OBS_NAMES)}}
    >>> config, changed = apply_interface(load_scenario("default"), interface, "model.zip")
    >>> config.agent.action_mode, config.agent.min_trade, changed
    ('delta', 0.5, ['agent.action_mode=delta', 'agent.venues=spot', 'agent.min_trade=0.5'])
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import io
import json
import pickle
import sys
import zipfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from hedgegym.agents.baselines import BASELINES, Baseline, make_baseline
from hedgegym.envs.config import ScenarioConfig, apply_overrides, validate_config
from hedgegym.envs.context import CONTEXT_NAMES, market_context, with_context
from hedgegym.envs.layout import OBS_DIM, OBS_NAMES


class PolicyError(ValueError):
    """A policy cannot be loaded or returned bad actions; the message says which and why."""


OBSERVATION_SHAPE = (OBS_DIM,)
"""Shape of one observation, the same in every scenario (a row of ``Market.observe``); a policy
trained with the market's context (``env.market_context``) observes ``CONTEXT_DIM`` more."""
CONTEXT_OBS_NAMES = (*OBS_NAMES, *CONTEXT_NAMES)
"""The observation of a policy trained with the market's context: the state, then the context."""
LAYOUTS = {"state": OBS_NAMES, "state+context": CONTEXT_OBS_NAMES, "context": CONTEXT_NAMES}
"""What a model observes, by layout: the state (``Market.observe``), the state then the market's
context (``env.market_context``), or the context alone (and ``env.observe_state: false``)."""


def observation_layout(interface: Mapping[str, Any] | None) -> str:
    """The layout (a key of :data:`LAYOUTS`) of the model of ``interface``; ``state`` without a record."""
    names = tuple(((interface or {}).get("observation") or {}).get("names", OBS_NAMES))
    return next((layout for layout, ours in LAYOUTS.items() if names == ours), "state")


def observation_shape(interface: Mapping[str, Any] | None) -> tuple[int]:
    """Shape of one observation of the model of ``interface``."""
    return (len(LAYOUTS[observation_layout(interface)]),)


def observe(layout: str, obs: np.ndarray, market) -> np.ndarray:
    """The observation of layout ``layout`` from the state ``obs[N, OBS_DIM]`` of ``market``."""
    if layout == "state":
        return obs
    return with_context(obs, market_context(market.config), state=layout == "state+context")


INTERFACE_MEMBER = "hedgegym_interface.json"
"""Name of the interface record inside a model zip."""
INTERFACE_FORMAT = 1
# The agent fields that define what an action means; the rest of the agent section (the book, the
# reward) belongs to the market a policy is evaluated on.
INTERFACE_FIELDS = ("action_mode", "venues", "max_trade", "min_trade")


def action_shape(config: ScenarioConfig) -> tuple[int]:
    """Shape of one action: one entry per venue the agent may trade."""
    return (len(config.agent.venues),)


# ------------------------------------------------------------------------------------ interface
def policy_interface(
    config: ScenarioConfig,
    algorithm: str,
    normalizer: bytes | None,
    normalize_observations: bool,
    normalizer_file: str | None,
    control: Mapping[str, Any] | None = None,
    observation: str = "state",
) -> dict[str, Any]:
    """The interface record of a model trained on ``config``; ``normalizer``: the pickled statistics;
    ``control``: the record of the control it acts through (:mod:`hedgegym.agents.residual`), if any;
    ``observation``: its layout (:data:`LAYOUTS`; the market's context: :mod:`hedgegym.envs.context`)."""
    return {
        "format": INTERFACE_FORMAT,
        "algorithm": algorithm,
        "trained_on": config.name,
        "agent": {k: getattr(config.agent, k) for k in INTERFACE_FIELDS},
        "control": None if control is None else dict(control),
        "observation": {
            "names": list(LAYOUTS[observation]),
            "normalized": bool(normalize_observations and normalizer),
        },
        "normalizer": None
        if normalizer is None
        else {"file": normalizer_file, "sha256": hashlib.sha256(normalizer).hexdigest()},
    }


def embed_interface(model_zip: bytes, interface: Mapping[str, Any]) -> bytes:
    """``model_zip`` with the interface record added as a member (SB3 ignores unknown members)."""
    buf = io.BytesIO(model_zip)
    with zipfile.ZipFile(buf, "a", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(INTERFACE_MEMBER, json.dumps(interface, indent=2))
    return buf.getvalue()


def read_interface(path: str | Path) -> dict[str, Any] | None:
    """The interface record of a model zip, or None if it has none; a damaged record is a PolicyError."""
    try:
        with zipfile.ZipFile(path) as archive:
            if INTERFACE_MEMBER not in archive.namelist():
                return None
            data = json.loads(archive.read(INTERFACE_MEMBER))
    except (OSError, zipfile.BadZipFile, ValueError) as err:
        raise PolicyError(f"{path} is not a stable-baselines3 model zip ({type(err).__name__}: {err})") from None
    if not isinstance(data, dict) or data.get("format") != INTERFACE_FORMAT or "agent" not in data:
        raise PolicyError(f"{path}: {INTERFACE_MEMBER} is not a hedgegym interface record of format {INTERFACE_FORMAT}")
    return data


def apply_interface(
    config: ScenarioConfig, interface: Mapping[str, Any] | None, source: str
) -> tuple[ScenarioConfig, list[str]]:
    """``config`` with the agent fields of ``interface``; also the ``field=value`` items that changed.

    Raises :class:`PolicyError` if the policy observes another layout than this hedgegym's.
    """
    if interface is None:
        return config, []
    names = list(interface.get("observation", {}).get("names", []))
    if tuple(names) not in LAYOUTS.values():
        ours = CONTEXT_OBS_NAMES if len(names) > OBS_DIM else OBS_NAMES
        where = next(
            (i for i, (a, b) in enumerate(zip(names, ours, strict=False)) if a != b),
            min(len(names), len(ours)),
        )
        got = names[where] if where < len(names) else "(none)"
        want = ours[where] if where < len(ours) else "(none)"
        raise PolicyError(
            f"{source}: observation layout mismatch: the policy was trained on {len(names)} "
            f"observations, this hedgegym has {len(ours)}; entry {where} is {got!r} for the "
            f"policy and {want!r} here; retrain it or evaluate it with the hedgegym it was trained on"
        )
    agent = interface["agent"]
    changed = {f"agent.{k}": agent[k] for k in INTERFACE_FIELDS if k in agent and agent[k] != getattr(config.agent, k)}
    if not changed:
        return config, []
    new = validate_config(
        apply_overrides(config.model_dump(), changed),
        source=f" (scenario {config.name!r} with the agent interface of {source})",
    )
    return new, [f"{k}={_show(v)}" for k, v in changed.items()]


def _show(value: Any) -> str:
    return ",".join(value) if isinstance(value, list) else f"{value:g}" if isinstance(value, float) else str(value)


def with_policy_interface(config: ScenarioConfig, policies: Iterable[Any]) -> tuple[ScenarioConfig, list[str]]:
    """The scenario ``config`` under the agent interface of the trained models among ``policies``.

    ``policies``: ``--policy`` strings, policies or ``(name, policy)`` pairs; model zips (and
    :class:`SB3Policy` objects) with an interface record set it. Returns the config and one note
    per model whose interface changed it, and per model without a record (it is evaluated with the
    scenario's agent settings, and unnormalised unless a normaliser named for it lies beside it).
    Two models with different interfaces cannot share one evaluation: :class:`PolicyError` naming
    the field that differs.
    """
    found: list[tuple[str, dict[str, Any]]] = []
    # Models without a record, and how they will be normalised.
    plain: list[tuple[str, str]] = []
    for item in policies:
        policy = item[1] if isinstance(item, tuple) else item
        if isinstance(policy, SB3Policy):
            if policy.interface is not None:
                found.append((policy.name, policy.interface))
            else:
                plain.append(
                    (
                        policy.name,
                        "with its obs_normalizer"
                        if policy.obs_normalizer is not None
                        else "without a normaliser (it has no obs_normalizer)",
                    )
                )
        elif isinstance(policy, str) and policy.endswith(".zip") and Path(policy).is_file():
            interface = read_interface(policy)
            if interface is not None:
                found.append((policy, interface))
            else:
                stats = _plain_normalizer(Path(policy))
                plain.append(
                    (
                        policy,
                        f"with the normaliser {stats.name} found beside it"
                        if stats
                        else "without a normaliser (none found beside it)",
                    )
                )
    notes = []
    for i, (source, interface) in enumerate(found):
        for other, other_interface in found[:i]:
            for k in INTERFACE_FIELDS:
                a, b = other_interface["agent"].get(k), interface["agent"].get(k)
                if a != b:
                    raise PolicyError(
                        f"{other} and {source} were trained for different agent interfaces "
                        f"(agent.{k}: {_show(a)} vs {_show(b)}); evaluate them separately"
                    )
        config, changed = apply_interface(config, interface, source)
        if changed:
            notes.append(
                f"{source}: evaluated with the agent interface it was trained for "
                f"({', '.join(changed)}) on scenario {config.name!r}"
            )
    agent = config.agent
    settings = (
        f"action_mode={agent.action_mode}, venues={_show(agent.venues)}, max_trade={_show(agent.max_trade)}, "
        f"min_trade={_show(agent.min_trade)}"
    )
    whose = f"scenario {config.name!r}" + (f" under the interface of {found[0][0]}" if found else "")
    for source, normaliser in plain:
        notes.append(
            f"{source}: the model carries no record of the agent interface it was trained for (no "
            f"{INTERFACE_MEMBER}: a plain stable-baselines3 zip or one saved before hedgegym recorded it), "
            f"so it is evaluated with the agent settings of {whose} ({settings}) and {normaliser}; "
            "if it was trained otherwise, its results are not its own"
        )
    return config, notes


# ------------------------------------------------------------------------------------ SB3 models
class SB3Policy:
    """A trained stable-baselines3 model as a policy: ``model.predict(obs, deterministic=True)``.

    ``obs_normalizer``: a ``VecNormalize`` loaded from its pickle; its observation statistics
    (frozen) are applied first, as in training. ``interface``: the model's interface record, if any.
    ``control``: the control the model acts through (a residual on, or the band of, a classical
    hedger; :mod:`hedgegym.agents.residual`), built for the market it is evaluated on; the model's
    actions then pass through ``control.actions(actions, market)``.
    """

    def __init__(
        self,
        model,
        obs_normalizer=None,
        name: str = "sb3",
        source: str = "",
        interface: dict[str, Any] | None = None,
        control=None,
        observation: str = "state",
    ):
        self.model = model
        self.control = control
        if observation not in LAYOUTS:
            raise ValueError(f"observation must be one of {', '.join(LAYOUTS)} (got {observation!r})")
        self.observation = observation
        self.obs_normalizer = obs_normalizer
        self.name = name
        self.source = source or f"stable-baselines3 {type(model).__name__} {name}"
        self.interface = interface

    def raw_actions(self, obs: np.ndarray, market=None) -> np.ndarray:
        """The model's own deterministic actions (before its control) for observations ``obs``: with
        the market's context appended if it observes it, then normalised as in training."""
        if self.observation != "state":
            if market is None:
                raise PolicyError(f"{self.name}: observes the market's context, which reads the market: pass it")
            obs = observe(self.observation, obs, market)
        if self.obs_normalizer is not None:
            obs = self.obs_normalizer.normalize_obs(obs)
        actions, _ = self.model.predict(obs, deterministic=True)
        return actions

    def __call__(self, obs: np.ndarray, market=None) -> np.ndarray:
        actions = self.raw_actions(obs, market)
        if self.control is not None:
            if market is None:
                raise PolicyError(f"{self.name}: acts through {self.control!r}, which reads the market: pass it")
            single = np.ndim(obs) == 1
            actions = self.control.actions(np.atleast_2d(actions), market)
            return actions[0] if single else actions
        return actions

    def __repr__(self) -> str:
        return f"SB3Policy({self.name!r})"


def _sb3_algorithm(data: Mapping[str, Any], path: Path):
    """The stable-baselines3 class that saved ``data`` (from its policy class)."""
    import stable_baselines3 as sb3

    policy_class = data.get("policy_class")
    module = getattr(policy_class, "__module__", "")
    if module.startswith("stable_baselines3.common.policies"):
        # PPO and A2C share the actor-critic policy; PPO alone saves a clip range.
        return sb3.PPO if "clip_range" in data else sb3.A2C
    for algo in ("sac", "td3", "ddpg"):
        if module.startswith(f"stable_baselines3.{algo}."):
            return {"sac": sb3.SAC, "td3": sb3.TD3, "ddpg": sb3.DDPG}[algo]
    raise PolicyError(
        f"{path}: unsupported stable-baselines3 policy class {policy_class!r} "
        "(PPO, A2C, SAC, TD3 and DDPG are supported; wrap anything else as module:function)"
    )


def _normalizer_candidates(path: Path, interface: Mapping[str, Any] | None) -> list[Path]:
    names = [f"{path.name.removesuffix('.zip')}_vecnormalize.pkl", "vecnormalize.pkl"]
    saved = ((interface or {}).get("normalizer") or {}).get("file")
    if saved and saved not in names:
        names.insert(1, saved)
    return [path.with_name(n) for n in names]


def _plain_normalizer(path: Path) -> Path | None:
    """The normaliser file of a model zip without an interface record: one named for it, or None.

    Nothing records which statistics such a model was trained with, so only a file named for it
    (``<stem>_vecnormalize.pkl``, ``vecnormalize.pkl``) is taken. Other normaliser files beside it
    (another model's name, a copied run directory) may be its own under another name: rather than
    guess, or evaluate it unnormalised, that is refused.
    """
    candidates = _normalizer_candidates(path, None)
    stats = next((c for c in candidates if c.is_file()), None)
    if stats is None:
        others = sorted(p.name for p in path.parent.glob("*vecnormalize*.pkl") if p.is_file())
        if others:
            raise PolicyError(
                f"{path}: the model carries no record of the interface it was trained for, and "
                f"normaliser statistics beside it ({', '.join(others)}) are not named for it, so "
                f"it is unknown whether it was trained normalised: copy its own as "
                f"{candidates[0].name}, or move them away to evaluate it unnormalised"
            )
    return stats


def _load_normalizer(path: Path, interface: Mapping[str, Any] | None):
    """The model's ``VecNormalize`` (or None), checked against the interface record when there is one."""
    candidates = _normalizer_candidates(path, interface)
    saved = (interface or {}).get("normalizer")
    stats = next((c for c in candidates if c.is_file()), None) if interface is not None else _plain_normalizer(path)
    if interface is not None and saved is None:
        return None, None  # trained without a normaliser: a stray vecnormalize.pkl beside it is not its own
    if stats is None:
        if interface is not None and interface["observation"]["normalized"]:
            raise PolicyError(
                f"{path}: the normaliser is missing: the model was trained on normalised observations "
                f"and its statistics {saved['file']} are not beside it (looked for "
                f"{', '.join(c.name for c in candidates)}); copy the file next to the zip"
            )
        return None, None
    data = stats.read_bytes()
    if saved is not None and hashlib.sha256(data).hexdigest() != saved["sha256"]:
        raise PolicyError(
            f"{stats}: not the normaliser saved with {path.name} (its SHA-256 differs from the one "
            f"recorded in the model); copy the model's own {saved['file']} beside it"
        )
    try:
        normalizer = pickle.loads(data)
    except Exception as err:  # a damaged pickle fails in many ways; all mean the same to the user
        raise PolicyError(f"{stats}: not a readable VecNormalize file ({type(err).__name__}: {err})") from None
    mean = getattr(getattr(normalizer, "obs_rms", None), "mean", None)
    if mean is None or np.shape(mean) != observation_shape(interface):
        raise PolicyError(
            f"{stats}: observation statistics of shape {np.shape(mean)} do not match the "
            f"model's observations {observation_shape(interface)}"
        )
    normalizer.training = False
    return normalizer, stats


def load_sb3_policy(path: str | Path, config: ScenarioConfig) -> SB3Policy:
    """Load a stable-baselines3 model zip as a policy for ``config``'s spaces.

    The normaliser statistics are looked up beside the zip (``<stem>_vecnormalize.pkl``, the name
    recorded in the model, ``vecnormalize.pkl``). Raises :class:`PolicyError` if the file is
    missing or not a model, its spaces do not match the scenario's, or (for a model saved by the
    training pipeline) its interface differs from ``config``'s — apply it first with
    :func:`with_policy_interface` — or its normaliser is missing or another model's.
    """
    path = Path(path)
    if not path.is_file():
        raise PolicyError(f"policy file {str(path)!r} does not exist")
    from stable_baselines3.common.save_util import load_from_zip_file

    interface = read_interface(path)
    try:
        data, _, _ = load_from_zip_file(path, device="cpu", load_data=True)
    except Exception as err:  # whatever fails in reading it, the file is not a model SB3 can load
        raise PolicyError(f"{path} is not a stable-baselines3 model zip ({type(err).__name__}: {err})") from None
    if not data or "observation_space" not in data:
        raise PolicyError(f"{path} is not a stable-baselines3 model zip (no saved observation space)")
    _, changed = apply_interface(config, interface, str(path))
    if changed:
        raise PolicyError(
            f"{path}: trained for another agent interface than scenario {config.name!r} "
            f"({', '.join(changed)}); evaluate it through with_policy_interface"
        )
    control = _interface_control(path, interface, config)
    _check_spaces(path, data["observation_space"], data["action_space"], config, control, interface)
    model = _sb3_algorithm(data, path).load(path, device="cpu")
    normalizer, stats = _load_normalizer(path, interface)
    source = f"stable-baselines3 {type(model).__name__} {path}" + (f" with {stats.name}" if stats else "")
    if interface is None:
        source += f", without an interface record (evaluated with scenario {config.name!r}'s agent settings)"
    else:
        agent = interface["agent"]
        source += (
            f", trained on {interface.get('trained_on')!r} with action_mode={agent['action_mode']}, "
            f"venues={_show(agent['venues'])}, max_trade={_show(agent['max_trade'])}, "
            f"min_trade={_show(agent['min_trade'])}"
        )
        if control is not None:
            source += f", acting through {control!r}"
    layout = observation_layout(interface)
    if layout != "state":
        source += ", observing the market's context" + (" after the state" if layout == "state+context" else " alone")
    return SB3Policy(
        model,
        normalizer,
        name=path.stem,
        source=source,
        interface=interface,
        control=control,
        observation=observation_layout(interface),
    )


def _interface_control(path: Path, interface: Mapping[str, Any] | None, config: ScenarioConfig):
    """The control recorded in ``interface`` rebuilt for ``config`` (its hedger tuned to that market), or None."""
    record = (interface or {}).get("control")
    if record is None:
        return None
    from hedgegym.agents.residual import make_control

    try:
        return make_control(record, config)
    except (ValueError, TypeError) as err:
        raise PolicyError(
            f"{path}: its control {record!r} cannot be built for scenario {config.name!r}: {err}"
        ) from None


def _check_spaces(path: Path, obs_space, act_space, config: ScenarioConfig, control=None, interface=None) -> None:
    want_obs, want_act = observation_shape(interface), action_shape(config)
    if getattr(control, "n_actions", None) is not None:
        want_act = (control.n_actions,)
    obs_shape = getattr(obs_space, "shape", None)
    if obs_shape != want_obs:
        raise PolicyError(
            f"{path}: the model was trained on a different observation space ({obs_space}); scenario "
            f"{config.name!r} observes {want_obs} (hedgegym.envs.layout.OBS_NAMES). Retrain on this "
            "hedgegym version or evaluate it on the scenario it was trained on"
        )
    act_shape = getattr(act_space, "shape", None)
    if act_shape != want_act:
        raise PolicyError(
            f"{path}: the model acts on {act_space}, but scenario {config.name!r} expects "
            + (
                f"the {control.n_actions} actions of its control {control!r}"
                if getattr(control, "n_actions", None) is not None
                else f"one action per venue of agent.venues {config.agent.venues}"
            )
            + f", shape {want_act}"
        )


# ------------------------------------------------------------------------------------ callables
def load_callable(spec: str) -> Callable:
    """``module:function`` (or ``path/to/file.py:function``) -> the callable."""
    module_name, sep, attr = spec.rpartition(":")
    if not sep or not module_name or not attr:
        raise PolicyError(f"policy {spec!r}: expected a model .zip or module:function")
    try:
        if module_name.endswith(".py"):
            file = Path(module_name)
            if not file.is_file():
                raise PolicyError(f"policy {spec!r}: file {module_name!r} does not exist")
            module_spec = importlib.util.spec_from_file_location(file.stem, file)
            module = importlib.util.module_from_spec(module_spec)
            # As `python file.py` does: the file's folder is on the path while it loads, so it can
            # import the modules beside it (also in a Ray worker, whose path does not hold it).
            folder = str(file.resolve().parent)
            sys.path.insert(0, folder)
            try:
                module_spec.loader.exec_module(module)
            finally:
                sys.path.remove(folder)
        else:
            module = importlib.import_module(module_name)
    except ImportError as err:
        raise PolicyError(f"policy {spec!r}: cannot import {module_name!r} ({err})") from None
    except Exception as err:  # the user's module fails as it loads (a SyntaxError, a raise): bad input, one line
        raise PolicyError(f"policy {spec!r}: importing {module_name!r} failed ({type(err).__name__}: {err})") from None
    fn = getattr(module, attr, None)
    if fn is None:
        raise PolicyError(f"policy {spec!r}: module {module_name!r} has no attribute {attr!r}")
    if not callable(fn):
        raise PolicyError(f"policy {spec!r}: {attr!r} is not callable")
    return fn


def load_policy(spec: str, config: ScenarioConfig) -> Callable:
    """A ``--policy`` string as a policy: an SB3 ``.zip`` or ``module:function``."""
    if spec.endswith(".zip") or Path(spec).is_file():
        return load_sb3_policy(spec, config)
    if ":" in spec:
        return load_callable(spec)
    raise PolicyError(f"policy {spec!r}: no such file; expected a stable-baselines3 model .zip or module:function")


def expand_baselines(spec: str | None, config: ScenarioConfig) -> list[str]:
    """Baseline names of ``--baselines``: ``all``, ``none`` or a comma list (``delta,leland@perp``).

    ``all``: every baseline on the configured venue, and — when the agent has several venues — the
    hedgers again with ``@cheapest`` routing.
    """
    if spec is None or spec.strip() == "all":
        names = list(BASELINES)
        if len(config.agent.venues) > 1 and config.baselines.venue != "cheapest":
            names += [f"{kind}@cheapest" for kind in BASELINES if kind != "no_hedge"]
        return names
    if spec.strip() == "none":
        return []
    names = [s.strip() for s in spec.split(",") if s.strip()]
    if not names:
        raise PolicyError("--baselines is empty; give all, none or names separated by commas")
    return names


def resolve_policies(policies, config: ScenarioConfig) -> dict[str, tuple[Callable, str]]:
    """``{name: (policy, source)}`` from a mapping of names to policies or a list whose items are
    baseline names, ``--policy`` strings, policies, or ``(name, policy)`` pairs."""
    items = list(policies.items()) if isinstance(policies, Mapping) else list(policies)
    out: dict[str, tuple[Callable, str]] = {}
    for item in items:
        if isinstance(item, tuple):
            name, policy = item
            source = _describe(policy)
        elif isinstance(item, str):
            if item.partition("@")[0] in BASELINES:
                policy = make_baseline(item, config)
                name, source = policy.name, f"baseline {policy.name}"
            elif item.endswith(".zip") or ":" in item or Path(item).exists():
                policy = load_policy(item, config)
                name, source = item, _describe(policy)
            else:
                raise PolicyError(
                    f"unknown baseline or policy {item!r}; known baselines: "
                    f"{', '.join(BASELINES)} (optionally @spot, @perp, @future, @cheapest); "
                    "policies: a model .zip or module:function"
                )
        elif callable(item):
            policy = item
            name = getattr(item, "name", None) or getattr(item, "__name__", None) or type(item).__name__
            source = _describe(item)
        else:
            raise PolicyError(f"not a policy: {item!r}")
        if name in out:
            raise PolicyError(f"policy {name!r} is given twice")
        out[name] = (policy, source)
    if not out:
        raise PolicyError("nothing to evaluate: give at least one policy or baseline")
    return out


def _describe(policy) -> str:
    if isinstance(policy, Baseline):
        return f"baseline {policy.name}"
    if isinstance(getattr(policy, "source", None), str):
        return policy.source
    module = getattr(policy, "__module__", None) or type(policy).__module__
    return f"{module}:{getattr(policy, '__qualname__', type(policy).__qualname__)}"
