"""``env.lane_invasion_ends_episode``: in the training env a lane line between the wheels ends the episode
(terminated, reason ``lane_invasion``); evaluation envs built from the same config drive on."""

from __future__ import annotations

from av_td3.baselines.pure_pursuit import PurePursuit
from av_td3.config import load_config
from av_td3.envs.contract import TERMINATION_REASONS
from av_td3.training.setup import make_env
from test_reward_v2_rule import _weave


def _drive(env, policy, max_steps=1000):
    obs, info = env.reset(seed=0)
    first_invasion = None
    for t in range(max_steps):
        obs, reward, terminated, truncated, info = env.step(policy(obs, info, t))
        if info["lane_invasion"] and first_invasion is None:
            first_invasion = t
        if terminated or truncated:
            return t, first_invasion, terminated, info
    return max_steps, first_invasion, False, info


def test_training_env_ends_at_the_first_crossing_evaluation_env_drives_on():
    cfg = load_config(None, ["env.lane_invasion_ends_episode=true", "env.npc_count=0", "env.route=default"])
    weave = _weave(PurePursuit(target_speed_kmh=30.0))
    last, first_invasion, terminated, info = _drive(make_env(cfg, training=True), weave)
    assert first_invasion is not None and last == first_invasion  # the crossing step is the last one
    assert terminated and info["termination_reason"] == "lane_invasion" and not info["success"]
    assert "lane_invasion" in TERMINATION_REASONS

    last, first_invasion, _, info = _drive(make_env(cfg), _weave(PurePursuit(target_speed_kmh=30.0)))
    assert last > first_invasion + 50 and info["termination_reason"] != "lane_invasion"


def test_clean_driving_is_not_ended():
    cfg = load_config(None, ["env.lane_invasion_ends_episode=true", "env.npc_count=0", "env.route=default"])
    pp = PurePursuit(target_speed_kmh=30.0)
    last, first_invasion, terminated, info = _drive(make_env(cfg, training=True), lambda obs, info, t: pp(obs))
    assert first_invasion is None and info["termination_reason"] == "goal_reached" and info["success"]
