"""TownEnv API: gymnasium checks, contract spaces and info keys, config handling, determinism."""

from __future__ import annotations

import math
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import av_td3  # noqa: F401  (registers av_td3/Town-v0)
from av_td3.config import ConfigError
from av_td3.envs.contract import INFO_KEYS, TERMINATION_REASONS, make_action_space, make_observation_space
from av_td3.envs.task import EXTRA_INFO_KEYS
from av_td3.envs.town.env import TownEnv
from av_td3.envs.town.map import get_town_map
from av_td3.envs.town.traffic import MAX_NPCS, Traffic


@pytest.mark.parametrize("view", ["front", "bev"])
@pytest.mark.parametrize("scenario", [0, 1, 2])
def test_check_env_passes(scenario, view):
    env = gym.make("av_td3/Town-v0", scenario=scenario, render_mode="rgb_array", config={"env": {"camera": {"view": view}}})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env.unwrapped)
    # Any warning fails: gymnasium's checkers (e.g. an observation of the wrong dtype) warn from inside
    # gymnasium with messages that name neither this package nor the env.
    assert not caught, [f"{w.category.__name__}: {w.message}" for w in caught]
    assert env.unwrapped.npc_count == {0: 20, 1: 50, 2: 100}[scenario]
    env.close()


def test_spaces_match_the_contract():
    env = TownEnv(npc_count=0)
    assert env.observation_space == make_observation_space()
    assert env.action_space == make_action_space()
    obs, _ = env.reset(seed=0)
    assert obs["image"].shape == (4, 84, 84) and obs["image"].dtype == np.uint8
    assert obs["vector"].shape == (23,) and obs["vector"].dtype == np.float32
    # At reset the stack holds the first frame k times.
    assert all(np.array_equal(obs["image"][0], f) for f in obs["image"])
    assert env.wheelbase_m == pytest.approx(2.875)


def test_info_has_every_contract_key_with_plain_types():
    env = TownEnv(scenario=0)
    _, info = env.reset(seed=3)
    for step in range(30):
        assert set(INFO_KEYS) | set(EXTRA_INFO_KEYS) <= set(info)
        for k in ("speed_kmh", "lateral_deviation_m", "heading_error_rad", "route_completion", "distance_m",
                  "obstacle_distance_m", "ttc_s", "jerk_mps3"):
            assert isinstance(info[k], float) and math.isfinite(info[k]), k
        for k in ("collision", "lane_invasion", "off_road", "success"):
            assert isinstance(info[k], bool), k
        assert info["termination_reason"] in TERMINATION_REASONS
        assert isinstance(info["steps"], int) and info["steps"] == step
        comps = info["reward_components"]
        assert set(comps) == {"efficiency", "progress", "lane_keeping", "comfort", "safety", "goal"}
        _, reward, term, trunc, info = env.step(np.array([0.0, 0.5], dtype=np.float32))
        assert reward == pytest.approx(sum(info["reward_components"].values()))
        assert not (term or trunc)


def test_config_and_kwargs():
    assert TownEnv(config={"env": {"scenario": 1}}).npc_count == 50
    assert TownEnv(scenario=2, config={"env": {"scenario": 0}}).npc_count == 100  # the argument wins
    assert TownEnv(scenario=2, npc_count=7).npc_count == 7
    env = TownEnv(config={"env": {"frame_stack": 2, "image_height": 64, "image_width": 48, "num_waypoints": 5}})
    obs, _ = env.reset(seed=0)
    assert obs["image"].shape == (2, 64, 48) and obs["vector"].shape == (13,)
    with pytest.raises(TypeError, match="npc_count"):
        TownEnv(npc_cuont=3)
    with pytest.raises(ConfigError):
        TownEnv(config={"env": {"camara": {}}})
    with pytest.raises(ValueError, match="render_mode"):
        TownEnv(render_mode="human")


def test_bad_actions_are_clear_errors():
    env = TownEnv(npc_count=0)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(np.zeros(2))
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        env.step(np.zeros(3))
    with pytest.raises(ValueError, match="finite"):
        env.step(np.array([np.nan, 0.0]))
    env.step([0.0, 2.0])  # out-of-range values are clipped, lists accepted


def _rollout(seed: int, steps: int, **kwargs):
    env = TownEnv(**kwargs)
    rng = np.random.default_rng(123)
    obs, info = env.reset(seed=seed)
    out = [(obs, info)]
    for _ in range(steps):
        a = np.clip([rng.normal(0, 0.2), rng.normal(0.6, 0.3)], -1, 1).astype(np.float32)
        obs, r, term, trunc, info = env.step(a)
        out.append((obs, info | {"reward": r}))
        if term or trunc:
            obs, info = env.reset()
            out.append((obs, info))
    return out


def test_same_seed_and_actions_are_bit_identical():
    a = _rollout(7, 250, scenario=1, route="random")
    b = _rollout(7, 250, scenario=1, route="random")
    assert len(a) == len(b)
    for (oa, ia), (ob, ib) in zip(a, b):
        assert np.array_equal(oa["image"], ob["image"])
        assert oa["vector"].tobytes() == ob["vector"].tobytes()
        assert ia == ib
    c = _rollout(8, 5, scenario=1, route="random")
    assert not np.array_equal(a[0][0]["vector"], c[0][0]["vector"])


def test_render_modes():
    env = TownEnv(scenario=0, render_mode="rgb_array")
    env.reset(seed=0)
    frame = env.render()
    assert frame.shape == (256, 256, 3) and frame.dtype == np.uint8
    assert TownEnv(npc_count=0).render() is None


def test_npc_count_above_what_the_town_fits_is_a_clear_error():
    for count in (MAX_NPCS + 1, 300):
        with pytest.raises(ConfigError, match=rf"npc_count={count}\b.*at most {MAX_NPCS}"):
            TownEnv(npc_count=count)
    # The maximum always fits: exactly that many are placed, whatever the seed or route.
    for route in ("default", "random"):
        env = TownEnv(npc_count=MAX_NPCS, route=route)
        for seed in range(8):
            env.reset(seed=seed)
            t = env.traffic
            assert t.n == MAX_NPCS
            d = np.hypot(t.x[:, None] - t.x[None], t.y[:, None] - t.y[None])
            np.fill_diagonal(d, np.inf)
            assert d.min() >= 9.0
    # Traffic itself never places fewer than asked silently.
    with pytest.raises(RuntimeError, match=r"could place only \d+ of 400"):
        Traffic(get_town_map().graph).reset(np.random.default_rng(0), 400, 45.0, -1.75)
