"""stable-baselines3 glue: algorithms and activations by name, the normalised vector env, models.

Everything here takes plain names and mappings (an experiment config's sections), so the layers stay
ordered: ``hedgegym.train`` builds on this module, and this module only on ``hedgegym.envs``.
Torch and SB3 are imported inside the functions: importing this module is cheap.

Example:
    >>> from hedgegym.agents.sb3 import hyperparameters_signature
    >>> "n_steps" in hyperparameters_signature("ppo"), "buffer_size" in hyperparameters_signature("ppo")
    (True, False)
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

# name in configs -> class name in stable_baselines3.
ALGORITHMS = {"ppo": "PPO", "sac": "SAC", "td3": "TD3"}
ON_POLICY = frozenset({"ppo"})
# name in configs -> class name in torch.nn.
ACTIVATIONS = {"tanh": "Tanh", "relu": "ReLU", "elu": "ELU", "leaky_relu": "LeakyReLU", "gelu": "GELU", "silu": "SiLU"}
# Constructor arguments the pipeline sets itself, or that take Python objects a YAML file cannot hold.
# action_noise has its own config field (a std); policy_kwargs has its own validated section.
MANAGED_ARGUMENTS = frozenset(
    {
        "self",
        "policy",
        "env",
        "seed",
        "verbose",
        "device",
        "tensorboard_log",
        "policy_kwargs",
        "_init_setup_model",
        "action_noise",
        "rollout_buffer_class",
        "replay_buffer_class",
    }
)
# Suffix of the VecNormalize statistics saved beside a model: model.zip -> model_vecnormalize.pkl.
VECNORMALIZE_SUFFIX = "_vecnormalize.pkl"


def algorithm_class(name: str) -> type:
    """The SB3 class of algorithm ``name`` (``ppo``, ``sac``, ``td3``)."""
    if name not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {name!r}; allowed: {', '.join(ALGORITHMS)}")
    import stable_baselines3

    return getattr(stable_baselines3, ALGORITHMS[name])


def hyperparameters_signature(name: str) -> dict[str, inspect.Parameter]:
    """The constructor parameters of algorithm ``name`` that a config may set, by name."""
    params = inspect.signature(algorithm_class(name).__init__).parameters
    return {k: p for k, p in params.items() if k not in MANAGED_ARGUMENTS}


def policy_parameters(name: str) -> set[str]:
    """Keyword arguments the ``MlpPolicy`` of algorithm ``name`` accepts (``policy_kwargs`` keys)."""
    policy = algorithm_class(name).policy_aliases["MlpPolicy"]
    return set(inspect.signature(policy.__init__).parameters) - {"self"}


def hyperparameter_default(name: str, key: str) -> Any:
    """The SB3 default of hyperparameter ``key`` of algorithm ``name``."""
    return hyperparameters_signature(name)[key].default


def activation(name: str) -> type:
    """The ``torch.nn`` activation class for ``name`` (``tanh``, ``relu``, ...)."""
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; allowed: {', '.join(ACTIVATIONS)}")
    import torch.nn

    return getattr(torch.nn, ACTIVATIONS[name])


def sb3_policy_kwargs(policy_kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """A config's ``policy_kwargs`` (names, None for SB3's default) as SB3 takes them (classes)."""
    out = {k: v for k, v in policy_kwargs.items() if v is not None}
    if "activation_fn" in out:
        out["activation_fn"] = activation(out["activation_fn"])
    if isinstance(out.get("net_arch"), Mapping):
        out["net_arch"] = dict(out["net_arch"])
    elif "net_arch" in out:
        out["net_arch"] = list(out["net_arch"])
    return out


def configure_torch(seed: int, threads: int, deterministic: bool) -> None:
    """Seed torch and fix its threads; optionally make its kernels deterministic.

    One thread is the default: on a 2-core machine the env (numba) and the small MLP compete for
    the cores, one torch thread is as fast for 64x64 networks, and reduction order no longer
    depends on the thread count, so runs are bit-reproducible.
    """
    import torch

    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(deterministic)


def make_vec_env(
    scenario,
    n_envs: int,
    seed: int,
    normalize: Mapping[str, Any] | None = None,
    gamma: float = 0.99,
    stats_path: str | os.PathLike | None = None,
    training: bool = True,
    parallel: bool = False,
    base_env=None,
    control=None,
    family=None,
    paired: bool = False,
    observation: str = "state",
):
    """The batched hedging env as an SB3 ``VecEnv``, wrapped in ``VecNormalize`` when asked.

    Args:
        scenario: a :class:`~hedgegym.envs.config.ScenarioConfig`.
        n_envs: parallel envs (rows of the batched market).
        seed: env ``i`` starts from seed ``seed + i``.
        normalize: ``{"observations", "rewards", "clip_observations", "clip_rewards"}``; None or
            both flags False: no wrapper.
        gamma: discount of the reward normaliser's running return (the algorithm's gamma).
        stats_path: load the normaliser's statistics from this file (resume, evaluation).
        training: update the statistics while stepping (False for evaluation).
        parallel: step the envs with the numba-parallel kernel. Off by default: the policy update
            runs between env steps, and on a few busy cores the kernel's worker threads make each
            step wait for the slowest core (measured in ``benchmarks/bench_training.py``).
        base_env: an existing (e.g. unpickled, mid-episode) hedging ``VecEnv`` to wrap instead of a
            new one (resume); ``scenario``, ``n_envs``, ``seed``, ``parallel`` and ``control`` are
            then unused (a pickled env keeps its control wrapper).
        control: a :class:`~hedgegym.agents.residual.Residual` or
            :class:`~hedgegym.agents.residual.BandControl`: the policy acts through it
            (:class:`~hedgegym.agents.residual_vec_env.ResidualVecEnv`, under the normaliser).
        family: a :class:`~hedgegym.envs.family.FamilyConfig`: the envs are split into
            ``family.markets`` batches side by side (:class:`~hedgegym.envs.sb3_vec_env.ConcatVecEnv`),
            each drawing its own market around ``scenario`` per episode; ``n_envs`` must be a
            multiple of ``family.markets``. Env ``i`` still starts from seed ``seed + i``.
        paired: envs ``2k`` and ``2k + 1`` share seed ``seed + k``, hence their exogenous paths
            (:mod:`hedgegym.agents.paired`); with ``family``, within each market's batch (whose size
            must then be even).
        observation: ``state`` (the env's own), ``state+context`` (the market's context appended,
            :class:`~hedgegym.envs.sb3_vec_env.MarketContextVecEnv`, over the control; per part of a
            family) or ``context`` (the context alone).
    """
    from hedgegym.envs.sb3_vec_env import ConcatVecEnv, MarketContextVecEnv, make_sb3_vec_env

    def observed(venv):
        return venv if observation == "state" else MarketContextVecEnv(venv, state=observation != "context")

    # step_info=False: training reads only the episode-end keys; per-step dicts would cost time.
    if base_env is not None:
        venv = base_env
    elif family is None:
        venv = observed(
            _controlled(
                make_sb3_vec_env(scenario, n_envs=n_envs, seed=seed, step_info=False, parallel=parallel, paired=paired),
                control,
            )
        )
    else:
        from hedgegym.agents.residual import make_control

        if n_envs % family.markets:
            raise ValueError(f"n_envs ({n_envs}) must be a multiple of the family's markets ({family.markets})")
        size = n_envs // family.markets
        venv = ConcatVecEnv(
            [
                observed(
                    _controlled(
                        make_sb3_vec_env(
                            scenario,
                            n_envs=size,
                            seed=seed + g * size,
                            step_info=False,
                            parallel=parallel,
                            family=family,
                            paired=paired,
                        ),
                        None if control is None else make_control(control.record, scenario),
                    )
                )
                for g in range(family.markets)
            ]
        )
    if stats_path is not None:
        from stable_baselines3.common.vec_env import VecNormalize

        venv = VecNormalize.load(str(stats_path), venv)
        venv.training = training
        return venv
    if normalize is None or not (normalize["observations"] or normalize["rewards"]):
        return venv
    from stable_baselines3.common.vec_env import VecNormalize

    return VecNormalize(
        venv,
        training=training,
        norm_obs=normalize["observations"],
        norm_reward=normalize["rewards"],
        clip_obs=normalize["clip_observations"],
        clip_reward=normalize["clip_rewards"],
        gamma=gamma,
    )


def _controlled(venv, control):
    """``venv`` acting through ``control`` (a ResidualVecEnv), or ``venv`` itself when there is none."""
    if control is None:
        return venv
    from hedgegym.agents.residual_vec_env import ResidualVecEnv

    return ResidualVecEnv(venv, control)


def build_model(
    algorithm: str,
    env,
    hyperparameters: Mapping[str, Any],
    policy_kwargs: Mapping[str, Any],
    seed: int,
    action_noise_std: float | None = None,
    tensorboard_log: str | None = None,
    start_at_zero: bool = False,
):
    """A new SB3 model of ``algorithm`` on ``env`` (CPU), seeded with ``seed``.

    ``action_noise_std`` (off-policy only): Gaussian exploration noise, as a fraction of the
    action range [-1, 1], the same on every venue.

    ``start_at_zero`` (for a policy acting through a control, where ``a = 0`` is the hedger): the
    layer that outputs the deterministic action (PPO's action net, SAC's and TD3's actor head) starts
    at zero, so the fresh policy is exactly the hedger until the first update. SB3's own starts are
    off by a little (PPO, gain 0.01: -0.3k USD against delta@cheapest on vault-epoch through a
    residual of scale 0.1) or by a lot (SAC: -485k against -75k on the default market).
    """
    cls = algorithm_class(algorithm)
    kwargs = dict(hyperparameters)
    if action_noise_std is not None:
        import numpy as np
        from stable_baselines3.common.noise import NormalActionNoise

        n = env.action_space.shape[0]
        kwargs["action_noise"] = NormalActionNoise(np.zeros(n), np.full(n, action_noise_std))
    model = cls(
        "MlpPolicy",
        env,
        policy_kwargs=sb3_policy_kwargs(policy_kwargs),
        seed=seed,
        device="cpu",
        tensorboard_log=tensorboard_log,
        verbose=0,
        **kwargs,
    )
    if start_at_zero:
        _zero_action_output(model)
    return model


def _zero_action_output(model) -> None:
    """Zero the weights and bias of the layer that outputs the mean action (and the target actor's copy)."""
    set_mean_action(model, np.zeros(action_head(model).bias.shape[0]))


def action_head(model):
    """The linear layer that outputs the mean action: PPO's ``action_net``, SAC/TD3's actor ``mu``."""
    import torch

    if hasattr(model.policy, "action_net"):  # on-policy: the actor-critic's action head
        return model.policy.action_net
    mu = model.policy.actor.mu
    return mu if isinstance(mu, torch.nn.Linear) else [m for m in mu if isinstance(m, torch.nn.Linear)][-1]


SQUASH_LIMIT = 0.99
"""SAC/TD3: the largest |x| :func:`set_mean_action` sets through ``atanh`` (beyond it the tanh saturates)."""


def set_mean_action(model, x) -> None:
    """Make a fresh model's deterministic action ``x`` in every state: the action head's weights
    zeroed, its bias ``x`` (PPO's Gaussian mean) or ``atanh(x)`` (SAC/TD3's squashed actor, ``|x| <=
    SQUASH_LIMIT``); the target actor, if any, copies the actor."""
    import torch

    head = action_head(model)
    x = np.asarray(x, dtype=np.float64).ravel()
    if not hasattr(model.policy, "action_net"):
        x = np.arctanh(np.clip(x, -SQUASH_LIMIT, SQUASH_LIMIT))
    if head.bias.shape[0] != x.size:
        raise ValueError(f"{x.size} actions for a policy with {head.bias.shape[0]}")
    with torch.no_grad():
        head.weight.zero_()
        head.bias.copy_(torch.as_tensor(x, dtype=head.bias.dtype))
    target = getattr(model.policy, "actor_target", None)
    if target is not None:
        target.load_state_dict(model.policy.actor.state_dict())


def load_model(algorithm: str, path: str | os.PathLike, env=None, force_reset: bool = True):
    """Load a saved SB3 model of ``algorithm`` (CPU), attached to ``env`` when given.

    ``force_reset=False`` keeps the model's last observation, for an ``env`` restored mid-episode.
    """
    return algorithm_class(algorithm).load(str(path), env=env, device="cpu", force_reset=force_reset)


def vecnormalize_path(model_path: str | os.PathLike) -> Path:
    """Where the normaliser statistics of a model live: ``model.zip`` -> ``model_vecnormalize.pkl``."""
    model_path = Path(model_path)
    stem = model_path.name.removesuffix(".zip")
    return model_path.with_name(stem + VECNORMALIZE_SUFFIX)


def find_vecnormalize(env):
    """The ``VecNormalize`` wrapper in ``env``'s wrapper chain, or None."""
    from stable_baselines3.common.vec_env import VecEnvWrapper, VecNormalize

    while isinstance(env, VecEnvWrapper):
        if isinstance(env, VecNormalize):
            return env
        env = env.venv
    return None
