"""CARLA sensors: camera memory that outlives the image, and events matched to the tick's frame.

No CARLA server can run on these machines, so these tests use the in-process stand-in of
``tests/carla_standin.py``. Its camera images free their memory like ``carla.Image`` does (``raw_data``
is a memoryview that keeps no reference to the image; once released, the stand-in overwrites the
buffer, as the real client's allocator reuses it), and its sensor callbacks can be fed events of any
frame, late or early, as CARLA's streaming threads may deliver them.
"""

from __future__ import annotations

import gc
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
from carla_standin import FREED_BYTE, SensorData, StandinServer  # noqa: E402
from test_carla_env import make_cfg, two_tone  # noqa: E402

from av_td3.envs.carla.env import CarlaEnv  # noqa: E402


def sensor(server, type_id):
    return next(s for s in server.sensors() if s.type_id == type_id)


def test_render_after_the_image_is_released_shows_that_image_not_freed_memory():
    """``render()`` reads the last camera image after CARLA released it: it must be a copy."""
    server = StandinServer()
    server.image_fn = two_tone
    env = CarlaEnv(client_factory=server, config=make_cfg(env={"npc_count": 0}), render_mode="rgb_array")
    env.reset(seed=0)
    env.step(np.zeros(2, np.float32))
    gc.collect()  # every image object is gone now, as in CARLA once the callback's reference is dropped
    rgb = env.render()
    level = min(40 * server.frame, 255)
    cam = sensor(server, "sensor.camera.rgb")
    assert rgb.shape == (int(cam.attributes["image_size_y"]), int(cam.attributes["image_size_x"]), 3)
    w = rgb.shape[1]
    assert (rgb[:, : w // 2, 0] == level).all() and (rgb[:, : w // 2, 2] == 0).all()  # red half
    assert (rgb[:, w // 2 :, 2] == level).all() and (rgb[:, w // 2 :, 0] == 0).all()  # blue half
    assert not (rgb == FREED_BYTE).all(axis=-1).any()
    env.close()


def _event(frame, **fields):
    return SensorData(frame, frame * 0.05, None, **fields)


def test_a_late_event_of_the_reset_frame_is_not_a_collision_of_the_episode():
    """The ego settling onto the road may collide during the reset's tick; CARLA can deliver that
    event after ``reset()`` returned. Matched by its frame, it is dropped, not counted in step 1."""
    server = StandinServer()
    env = CarlaEnv(client_factory=server, config=make_cfg(env={"npc_count": 0}))
    env.reset(seed=0)
    reset_frame = server.frame
    hero = server.hero()
    sensor(server, "sensor.other.collision").callback(_event(reset_frame, actor=hero, other_actor=None))
    sensor(server, "sensor.other.lane_invasion").callback(_event(reset_frame, actor=hero, crossed_lane_markings=[]))
    _, _, terminated, _, info = env.step(np.zeros(2, np.float32))
    assert not info["collision"] and not info["lane_invasion"] and not terminated
    env.close()


def test_events_count_in_the_step_of_their_frame():
    """An event of a later frame (delivered early) waits for its step; an event that arrives after its
    own step returned is counted in the next step (late, never lost) and counted as late."""
    server = StandinServer()
    env = CarlaEnv(client_factory=server, config=make_cfg(env={"npc_count": 0}))
    env.reset(seed=0)
    invasion = sensor(server, "sensor.other.lane_invasion").callback
    invasion(_event(server.frame + 2, crossed_lane_markings=[]))  # frame of the 2nd step from now
    _, _, _, _, info = env.step(np.zeros(2, np.float32))
    assert not info["lane_invasion"]
    _, _, _, _, info = env.step(np.zeros(2, np.float32))
    assert info["lane_invasion"]
    _, _, _, _, info = env.step(np.zeros(2, np.float32))
    assert not info["lane_invasion"]  # popped once
    invasion(_event(server.frame, crossed_lane_markings=[]))  # the step of this frame has returned
    assert env._sensors.late_events == 1
    _, _, _, _, info = env.step(np.zeros(2, np.float32))
    assert info["lane_invasion"]
    env.close()


@pytest.mark.parametrize("delay_s", [0.0, 0.02])
def test_obstacle_events_keep_the_nearest_of_their_frames(delay_s):
    """Two obstacle events of one frame: the nearer one wins; one of the next frame is not mixed in."""
    server = StandinServer()
    server.sensor_delay_s = delay_s
    env = CarlaEnv(client_factory=server, config=make_cfg(env={"npc_count": 0}))
    env.reset(seed=0)
    obstacle = sensor(server, "sensor.other.obstacle").callback
    f = server.frame + 1
    obstacle(_event(f, distance=12.0, other_actor=None))
    obstacle(_event(f, distance=7.0, other_actor=None))
    obstacle(_event(f + 1, distance=3.0, other_actor=None))
    _, _, _, _, info = env.step(np.zeros(2, np.float32))
    assert info["obstacle_distance_m"] == pytest.approx(7.0)
    _, _, _, _, info = env.step(np.zeros(2, np.float32))
    assert info["obstacle_distance_m"] == pytest.approx(3.0)
    env.close()
