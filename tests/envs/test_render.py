"""Render modes: SB3's and Gymnasium's default paths, real frames, videos, a headless human mode."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from hedgegym.envs import HedgingEnv
from hedgegym.envs.vector_env import HedgingVectorEnv

# Six hourly steps: a whole episode renders in well under a second.
SHORT = {"episode__horizon_days": 0.25}


def test_sb3_make_vec_env_default_path_renders_frames():
    from stable_baselines3.common.env_util import make_vec_env

    venv = make_vec_env("hedgegym/Hedging-v2", n_envs=1, env_kwargs=SHORT)  # passes render_mode="rgb_array"
    venv.reset()
    first = venv.render()
    assert first.dtype == np.uint8 and first.shape == (480, 640, 3)
    venv.step(np.ones((1, 3), dtype=np.float32))
    assert not np.array_equal(venv.render(), first)  # the frame follows the episode
    venv.close()


def test_rgb_array_frames_show_the_episode_so_far():
    env = HedgingEnv(render_mode="rgb_array", agent__venues=["spot", "perp"], **SHORT)
    assert "rgb_array" in env.metadata["render_modes"] and env.metadata["render_fps"] > 0
    with pytest.raises(gym.error.ResetNeeded):
        env.render()
    env.reset(seed=0)
    frames = [env.render()]
    done = False
    while not done:
        _, _, terminated, truncated, _ = env.step(np.array([0.5, -0.5]))
        frames.append(env.render())
        done = terminated or truncated
    assert len(frames) == env.episode_steps + 1
    assert all(f.shape == (480, 640, 3) and f.dtype == np.uint8 for f in frames)
    assert all(not np.array_equal(a, b) for a, b in zip(frames, frames[1:], strict=False))
    # Not a blank canvas: lines of several colours are drawn.
    assert len(np.unique(frames[-1].reshape(-1, 3), axis=0)) > 20
    # The trail holds the positions the info reported.
    assert env._trail.n == env.episode_steps + 1 and env._trail.hedge[-1, 1] != 0.0


def test_text_and_no_render_modes_record_nothing():
    for mode in (None, "ansi"):
        env = HedgingEnv(render_mode=mode, **SHORT)
        env.reset(seed=0)
        env.step(env.action_space.sample())
        assert env._trail is None
    assert env.render().startswith("step 1/6")


def test_human_mode_under_a_non_interactive_backend_warns_and_goes_on():
    import matplotlib

    matplotlib.use("Agg")
    env = HedgingEnv(render_mode="human", **SHORT)
    with pytest.warns(UserWarning, match="cannot show a window"):
        env.reset(seed=0)
    assert env.render() is None
    env.step(env.action_space.sample())
    env.close()


def test_bad_render_modes_are_refused():
    with pytest.raises(ValueError, match=r"render_mode must be None or one of \['ansi', 'rgb_array', 'human'\]"):
        HedgingEnv(render_mode="rgb")
    with pytest.raises(ValueError, match=r"one of \['ansi'\] \(got 'rgb_array'\)"):
        HedgingVectorEnv(2, render_mode="rgb_array")


def test_gymnasium_record_video_writes_an_episode(tmp_path):
    pytest.importorskip("moviepy")
    from gymnasium.wrappers import RecordVideo

    env = RecordVideo(
        gym.make("hedgegym/Hedging-v2", render_mode="rgb_array", **SHORT),
        str(tmp_path / "videos"),
        episode_trigger=lambda e: True,
        disable_logger=True,
    )
    env.reset(seed=0)
    done = False
    while not done:
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        done = terminated or truncated
    env.close()
    (video,) = (tmp_path / "videos").glob("*.mp4")
    assert video.stat().st_size > 1000


def test_sb3_vec_video_recorder_writes_a_video(tmp_path):
    pytest.importorskip("moviepy")
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecVideoRecorder

    venv = VecVideoRecorder(
        make_vec_env("hedgegym/Hedging-v2", n_envs=1, env_kwargs=SHORT),
        str(tmp_path),
        record_video_trigger=lambda step: step == 0,
        video_length=5,
    )
    venv.reset()
    for _ in range(6):
        venv.step(np.zeros((1, 3), dtype=np.float32))
    venv.close()
    (video,) = tmp_path.glob("*.mp4")
    assert video.stat().st_size > 1000
