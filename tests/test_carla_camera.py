"""The CARLA camera has the town's geometry: a ground point appears at the same pixel in both.

No CARLA server can run here: the CARLA camera is the one the env spawns on the in-process stand-in
(``tests/carla_standin.py``; its blueprint attributes and mount are what a real server would get), and
its image is computed with CARLA's documented pinhole model (``camera.pixel_of``), which is itself
checked against the real ``carla.Transform`` matrices. The town side is the town env's own camera:
the ground point each of its pixels shows.
"""

from __future__ import annotations

import math
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
from carla_standin import StandinServer  # noqa: E402
from test_carla_env import make_cfg  # noqa: E402

from av_td3.config import ConfigError  # noqa: E402
from av_td3.envs.carla.camera import CameraSpec, pixel_of  # noqa: E402
from av_td3.envs.carla.env import CarlaEnv  # noqa: E402
from av_td3.envs.town.env import TownEnv  # noqa: E402


def spawned_camera(env_section: dict) -> tuple[CameraSpec, tuple[int, int]]:
    """The RGB camera the CARLA env spawns on the stand-in, as a ``CameraSpec`` read back from the
    server's blueprint attributes and the sensor's transform relative to the ego."""
    server = StandinServer()
    env = CarlaEnv(client_factory=server, config=make_cfg(env={"npc_count": 0, **env_section}))
    env.reset(seed=0)
    cam = next(s for s in server.sensors() if s.type_id == "sensor.camera.rgb")
    t = cam._transform  # relative to the parent (the ego)
    assert t.location.y == 0.0 and t.rotation.yaw == 0.0 and t.rotation.roll == 0.0
    spec = CameraSpec(int(cam.attributes["image_size_x"]), int(cam.attributes["image_size_y"]),
                      float(cam.attributes["fov"]), t.location.x, t.location.z, t.rotation.pitch)
    out_hw = (env.env_cfg.image_height, env.env_cfg.image_width)
    env.close()
    return spec, out_hw


def town_camera(env_section: dict):
    town = TownEnv(config=make_cfg(env={"npc_count": 0, **env_section}))
    town.reset(seed=0)
    return town.camera


def test_pixel_of_is_carlas_projection():
    """``pixel_of`` against CARLA's own transform matrices and the projection of CARLA's docs."""
    carla = pytest.importorskip("carla")
    spec = CameraSpec(168, 168, 90.0, 1.6, 1.5, -10.0)
    mount = carla.Transform(carla.Location(x=spec.x_m, z=spec.z_m), carla.Rotation(pitch=spec.pitch_deg))
    world_to_camera = np.array(mount.get_inverse_matrix())
    focal = spec.width / (2.0 * math.tan(math.radians(spec.fov_deg) / 2.0))
    pts = np.array([[10.0, 0.0, 0.0], [6.0, -2.0, 0.0], [25.0, 3.5, 0.0], [4.0, 1.0, 1.2]])
    for p, (row, col) in zip(pts, pixel_of(spec, (84, 84), pts)):
        x, y, z, _ = world_to_camera @ np.append(p, 1.0)  # Unreal camera axes: x forward, y right, z up
        u, v = focal * y / x + spec.width / 2, focal * -z / x + spec.height / 2
        # (CARLA's matrices are float32)
        assert (row, col) == pytest.approx((v * 84 / spec.height, u * 84 / spec.width), abs=1e-4)


@pytest.mark.parametrize("pitch_deg", [-10.0, 5.0])
def test_front_camera_sees_each_ground_point_at_the_towns_pixel(pitch_deg):
    section = {"camera": {"view": "front", "pitch_deg": pitch_deg}}
    spec, out_hw = spawned_camera(section)
    assert spec.width * out_hw[0] == spec.height * out_hw[1]  # same aspect: nothing squashed
    cam = town_camera(section)
    # every ground pixel of the town's image and the vehicle-frame ground point it shows
    ground = cam._sampler._design[:, :2]
    rows = np.repeat(np.arange(cam._first, cam.h), cam.w)
    cols = np.tile(np.arange(cam.w), cam.h - cam._first)
    pts = np.column_stack([ground, np.zeros(len(ground))])
    px = pixel_of(spec, out_hw, pts)
    np.testing.assert_allclose(px[:, 0], rows + 0.5, atol=1e-3)
    np.testing.assert_allclose(px[:, 1], cols + 0.5, atol=1e-3)
    # and the horizon: between the centres of the town's last sky row and its first ground row
    focal = spec.width / 2 / math.tan(math.radians(spec.fov_deg) / 2)
    horizon_row = (spec.height / 2 + focal * math.tan(math.radians(pitch_deg))) * out_hw[0] / spec.height
    assert cam._first - 0.5 <= horizon_row <= cam._first + 0.5


def test_bev_covers_the_towns_ground_rectangle():
    section = {"camera": {"view": "bev"}}
    spec, out_hw = spawned_camera(section)
    cam = town_camera(section)
    rng = np.random.default_rng(0)
    fwd, right = rng.uniform(-10, 30, 200), rng.uniform(-20, 20, 200)
    row, col = cam.to_pixel(fwd, right)  # the town's pixel coordinates, centre = integer
    px = pixel_of(spec, out_hw, np.column_stack([fwd, right, np.zeros_like(fwd)]))
    np.testing.assert_allclose(px[:, 0], row + 0.5, atol=1e-6)
    np.testing.assert_allclose(px[:, 1], col + 0.5, atol=1e-6)
    # corners of the town's view are the corners of the CARLA image
    corners = pixel_of(spec, out_hw, np.array([[30.0, -20.0, 0.0], [-10.0, 20.0, 0.0]]))
    np.testing.assert_allclose(corners, [[0.0, 0.0], [out_hw[0], out_hw[1]]], atol=1e-9)


def test_camera_size_must_keep_the_image_aspect():
    server = StandinServer()
    with pytest.raises(ConfigError, match="aspect ratio"):
        CarlaEnv(client_factory=server, config=make_cfg(carla={"camera_width": 256, "camera_height": 144}))
    env = CarlaEnv(client_factory=server, config=make_cfg(env={"image_width": 96, "image_height": 64, "npc_count": 0},
                                                          carla={"camera_width": 288, "camera_height": 192}))
    obs, _ = env.reset(seed=0)
    cam = next(s for s in server.sensors() if s.type_id == "sensor.camera.rgb")
    assert (cam.attributes["image_size_x"], cam.attributes["image_size_y"]) == ("288", "192")
    assert obs["image"].shape[1:] == (64, 96)
    env.close()
