"""Parallel envs (``training.num_envs``): N vector envs give exactly the transitions of N single envs
with the same seeds, the trainer keeps each env's episodes in its own buffer stream, and a run with N
envs resumes from its checkpoint."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from av_td3.config import ConfigError, load_config
from av_td3.envs.vector import EnvBatch, make_vector_env, select_envs, split_infos
from av_td3.training.setup import make_env
from av_td3.training.trainer import Trainer

INFO_KEYS = ("speed_kmh", "lateral_deviation_m", "heading_error_rad", "collision", "lane_invasion", "off_road",
             "route_completion", "distance_m", "success", "termination_reason")


def small_cfg(*overrides: str):
    return load_config(None, ["env.max_episode_steps=20", "logging.tensorboard=false", "logging.progress_bar=false",
                              *overrides])


def scripted_actions(rng: np.random.Generator) -> np.ndarray:
    return np.clip([rng.normal(0.0, 0.5), rng.normal(0.4, 0.5)], -1, 1).astype(np.float32)


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_vector_envs_give_the_transitions_of_single_envs(mode):
    """Each of N=3 vector envs, reset with its own seeds and driven by its own actions, returns bit for
    bit what a single env given the same seeds and actions returns: observations, rewards, flags, info."""
    n, steps = 3, 45  # 20-step episodes: every env resets twice, at steps that differ per env
    cfg = small_cfg()
    seeds = [[100 * i + e for e in range(10)] for i in range(n)]  # env i's episode seeds, in order

    envs = EnvBatch(make_vector_env(cfg, n, mode))
    singles = [make_env(cfg) for _ in range(n)]
    try:
        rngs = [np.random.default_rng(i) for i in range(n)]
        episode = [0] * n
        obs, _ = envs.reset([s[0] for s in seeds])
        ref_obs = [env.reset(seed=seeds[i][0])[0] for i, env in enumerate(singles)]
        for _ in range(steps):
            for i in range(n):
                for key in ref_obs[i]:
                    assert np.array_equal(obs[key][i], ref_obs[i][key]), (i, key)
            actions = np.stack([scripted_actions(r) for r in rngs])
            next_obs, rewards, terminated, truncated, infos = envs.step(actions)
            for i, env in enumerate(singles):
                o, r, te, tr, info = env.step(actions[i])
                assert rewards[i] == r and terminated[i] == te and truncated[i] == tr, i
                for key in o:
                    assert np.array_equal(next_obs[key][i], o[key]), (i, key)
                for key in INFO_KEYS:
                    assert infos[i][key] == info[key], (i, key)
                assert infos[i]["reward_components"] == pytest.approx(info["reward_components"], abs=0)
                ref_obs[i] = o
            done = terminated | truncated
            obs = next_obs
            if done.any():
                for i in np.flatnonzero(done):
                    episode[i] += 1
                    ref_obs[i] = singles[i].reset(seed=seeds[i][episode[i]])[0]
                reset_obs, _ = envs.reset([seeds[i][episode[i]] if done[i] else None for i in range(n)], done)
                obs = reset_obs if done.all() else select_envs(reset_obs, done, next_obs)
        assert sum(episode) >= n  # the comparison covered resets of every env
    finally:
        envs.close()
        for env in singles:
            env.close()


def test_split_infos_masks_and_nesting():
    infos = {"a": np.array([1.0, 2.0]), "_a": np.array([True, False]),
             "nested": {"x": np.array([3, 4]), "_x": np.array([True, True])}, "_nested": np.array([True, True])}
    out = split_infos(infos, 2)
    assert out == [{"a": 1.0, "nested": {"x": 3}}, {"nested": {"x": 4}}]
    assert type(out[0]["a"]) is float


def _trainer(tmp_path, n, steps, *extra, mode="sync"):
    cfg = small_cfg(f"training.num_envs={n}", f"training.vectorization={mode}", f"training.max_timesteps={steps}",
                    "algorithm.start_timesteps=60", "algorithm.batch_size=16", "training.buffer_size=2000",
                    "training.eval_freq=0", "evaluation.num_episodes=1", "networks.cnn.feature_dim=32",
                    "networks.actor.hidden_layers=[32]", "networks.critic.hidden_layers=[32]", *extra)
    return Trainer(cfg, tmp_path / "run", "cpu")


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_trainer_with_n_envs_fills_one_stream_per_env(tmp_path, mode):
    """N = 3 envs (async: updates run while the env processes step) fill one buffer stream each."""
    trainer = _trainer(tmp_path, 3, 150, mode=mode)
    try:
        summary = trainer.run()
    finally:
        trainer.close()
    buf = trainer.agent.replay_buffer
    assert summary["total_timesteps"] == 150 and buf.num_streams == 3
    assert len(buf) == 150 and buf.sequence_breaks == 0  # every env's episodes stored as continuous sequences
    per_stream = np.bincount(buf.valid_indices() % 3, minlength=3)
    assert per_stream.tolist() == [50, 50, 50]
    assert summary["episodes"] >= 3 and summary["updates"] > 0


def test_resume_with_n_envs(tmp_path):
    first = _trainer(tmp_path, 2, 120, "training.checkpoint_freq=60", "training.save_buffer=true")
    try:
        first.run()
    finally:
        first.close()
    ckpt = tmp_path / "run" / "checkpoints" / "latest.pt"
    saved = torch.load(ckpt, weights_only=False)
    assert saved["trainer"]["num_envs"] == 2 and len(saved["explorer"]) == 2

    resumed = _trainer(tmp_path, 2, 200, "training.checkpoint_freq=60", "training.save_buffer=true")
    resumed._restore(ckpt)
    try:
        assert resumed.step == 120 and len(resumed.agent.replay_buffer) == 120
        summary = resumed.run()
    finally:
        resumed.close()
    assert summary["total_timesteps"] == 200 and len(resumed.agent.replay_buffer) == 200

    other = _trainer(tmp_path, 3, 200, "training.save_buffer=true")
    try:
        with pytest.raises(ConfigError, match=r"holds 2 env streams but training.num_envs is 3"):
            other._restore(ckpt)
    finally:
        other.close()
