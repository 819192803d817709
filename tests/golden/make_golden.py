"""Regenerate the golden trajectories: ``python tests/golden/make_golden.py [SCENARIO ...]``.

One ``<scenario>.npz`` per named scenario: ``PATHS`` whole episodes of :class:`HedgingEnv` on seeds
0, 1, 2 with actions drawn from a fixed NumPy generator (the same on every machine), and every
``info`` field of every step, plus the observation, the reward and the episode flags.
``tests/golden/test_golden.py`` replays them and compares bit for bit, so that a change of the
dynamics is a deliberate act: regenerate, commit the files, and bump the env ids' version
(README, "Version History") when observations, actions or rewards change.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np

from hedgegym.envs import HedgingEnv
from hedgegym.envs.config import list_scenarios

HERE = Path(__file__).resolve().parent
PATHS = 3
ACTION_SEED = 20240901


def trajectories(scenario: str) -> dict[str, np.ndarray]:
    """``{field: array[PATHS, steps + 1, ...]}``: the reset's info at index 0, then each step's."""
    env = HedgingEnv(scenario=scenario)
    rng = np.random.default_rng(ACTION_SEED)
    steps = env.episode_steps
    rows: dict[str, list] = {}
    for path in range(PATHS):
        obs, info = env.reset(seed=path)
        record = {
            "obs": [obs],
            "reward": [0.0],
            "terminated": [False],
            "truncated": [False],
            **{k: [v] for k, v in info.items()},
        }
        for _ in range(steps):
            action = rng.uniform(-1.0, 1.0, env.action_space.shape).astype(np.float32)
            obs, reward, terminated, truncated, info = env.step(action)
            info = {k: v for k, v in info.items() if k != "episode_metrics"}
            for k, v in {
                "obs": obs,
                "reward": reward,
                "terminated": terminated,
                "truncated": truncated,
                **info,
            }.items():
                record[k].append(v)
        for k, v in record.items():
            rows.setdefault(k, []).append(np.asarray(v))
    return {k: np.stack(v) for k, v in rows.items()}


def npz_bytes(data: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **data)
    return buf.getvalue()


def main(names: list[str]) -> None:
    for name in names or sorted(list_scenarios()):
        path = HERE / f"{name}.npz"
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_bytes(npz_bytes(trajectories(name)))
        tmp.replace(path)
        print(f"wrote {path}")


if __name__ == "__main__":
    main(sys.argv[1:])
