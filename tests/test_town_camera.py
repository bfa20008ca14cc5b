"""Cameras: road, markings and vehicles are visible in the front and bird's-eye views."""

from __future__ import annotations

import numpy as np

from av_td3.envs.town.camera import GRAY, RGB
from av_td3.envs.town.env import TownEnv
from av_td3.envs.town.map import CENTRE_LINE, EDGE_LINE, GRASS, ROAD


def _env(view: str, **kw) -> TownEnv:
    env = TownEnv(npc_count=0, route="default", render_mode="rgb_array", config={"env": {"camera": {"view": view}}}, **kw)
    env.reset(seed=0)
    return env


def _park_ahead(env: TownEnv, metres: float) -> None:
    lanes, s0, _ = env.map.default_route()
    env.traffic.add_vehicle(lanes[0], s0 + metres, parked=True)


def test_front_camera_sees_sky_road_markings_and_grass():
    env = _env("front")
    frame = env._frame()
    assert frame.shape == (84, 84) and frame.dtype == np.uint8
    assert (frame[0] == GRAY["sky"]).all()  # top row: sky (camera pitched 10 deg down, 90 deg FOV)
    assert frame[-1, 42] == GRAY[ROAD]  # straight ahead at the bottom: our lane
    values = set(np.unique(frame[45:]).tolist())
    assert {GRAY[ROAD], GRAY[EDGE_LINE], GRAY[CENTRE_LINE], GRAY[GRASS]} <= values
    # Broken centre line on the left, solid edge line on the right of the near image.
    near = frame[50:]
    assert (near[:, :42] == GRAY[CENTRE_LINE]).any() and not (near[:, 42:] == GRAY[CENTRE_LINE]).any()
    assert (near[:, 42:] == GRAY[EDGE_LINE]).any()


def test_front_camera_draws_vehicles_ahead_as_solid_boxes():
    env = _env("front")
    assert not (env._frame() == GRAY["npc"]).any()
    _park_ahead(env, 15.0)
    frame = env._frame()
    box = frame == GRAY["npc"]
    rows, cols = np.nonzero(box)
    assert box.sum() > 30
    assert 30 <= cols.mean() <= 54  # in front of us, roughly centred
    # A nearer vehicle looks bigger.
    env.reset(seed=0)
    _park_ahead(env, 8.0)
    assert (env._frame() == GRAY["npc"]).sum() > box.sum()


def test_front_camera_pitch_moves_the_horizon():
    low = _env("front", ).camera
    env_up = TownEnv(npc_count=0, route="default", config={"env": {"camera": {"pitch_deg": 5.0}}})
    env_up.reset(seed=0)
    assert env_up.camera._first > low._first  # looking up: more sky rows


def test_bev_shows_ego_road_and_npcs():
    env = _env("bev")
    frame = env._frame()
    assert frame.shape == (84, 84)
    ego = np.argwhere(frame == GRAY["ego"])
    assert len(ego) > 10
    # Ego heading up, a quarter of the way from the bottom (10 m behind / 30 m ahead shown).
    assert 55 <= ego[:, 0].mean() <= 70 and 38 <= ego[:, 1].mean() <= 46
    assert (frame == GRAY[ROAD]).any() and (frame == GRAY[CENTRE_LINE]).any()
    _park_ahead(env, 15.0)
    npc = np.argwhere(env._frame() == GRAY["npc"])
    assert len(npc) > 10 and npc[:, 0].mean() < ego[:, 0].mean()  # ahead = above


def test_frames_change_while_driving_and_stack_is_oldest_first():
    env = TownEnv(scenario=0, route="default")
    obs, _ = env.reset(seed=1)
    for _ in range(10):
        obs, *_ = env.step(np.array([0.0, 1.0], dtype=np.float32))
    img = obs["image"]
    assert not np.array_equal(img[0], img[-1])
    assert np.array_equal(img[-1], env._frame())


def test_rgb_render_shows_route_ego_and_npcs():
    env = _env("front")
    _park_ahead(env, 15.0)
    frame = env.render()
    colours = {tuple(c) for c in frame.reshape(-1, 3)}
    assert {RGB["ego"], RGB["npc"], RGB["route"], RGB[ROAD]} <= colours
