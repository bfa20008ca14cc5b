"""The CARLA camera's geometry: the same as the town's, so that a policy trained in one backend sees
the same picture geometry in the other.

The town (``av_td3.envs.town.camera``) renders the contract's ``H x W`` image directly:

* front view: pinhole camera at ``FRONT_MOUNT_M`` = (1.6 m ahead of the vehicle centre, 1.5 m above the
  ground), ``FRONT_FOV_DEG`` = 90 deg horizontal field of view, square pixels, pitch
  ``env.camera.pitch_deg``;
* bird's-eye view (BEV): heading up, ``BEV_BEHIND_M`` = 10 m behind to ``BEV_AHEAD_M`` = 30 m ahead of the
  vehicle centre over the image height, square pixels (40 x 40 m at 84 x 84).

CARLA renders ``camera_width x camera_height`` (default: twice the contract's size, for anti-aliasing)
and the sensor suite area-averages it down to ``H x W``, which keeps the geometry only when both have
the same aspect ratio (checked by ``camera_spec``). The BEV is a camera looking straight down from
``carla.bev_height_m``; its field of view and forward offset are chosen so that it covers exactly the
town's ground rectangle (a flat ground seen from straight above maps linearly to the image).

``pixel_of`` projects a point given in the vehicle frame with CARLA's camera model (the projection
of CARLA's documentation: focal ``f = w / (2 tan(fov / 2))``, principal point at the image centre,
Unreal's camera axes x forward, y right, z up) into the contract image; the tests check that it
lands where the town draws the same ground point.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from av_td3.config_base import ConfigError

#: The town's camera geometry (``av_td3.envs.town.camera.FrontCamera`` / ``TopDownCamera`` defaults).
FRONT_FOV_DEG = 90.0
FRONT_MOUNT_M = (1.6, 1.5)  # (x ahead of the vehicle centre, z above the ground), m
BEV_BEHIND_M, BEV_AHEAD_M = 10.0, 30.0

#: Default render size of the CARLA camera relative to the contract image (area-averaged down).
SUPERSAMPLE = 2


@dataclass(frozen=True)
class CameraSpec:
    """Camera blueprint attributes and mount (vehicle frame: x forward, y right, z up, metres; pitch
    degrees, negative looks down); ``fov_deg`` is horizontal."""

    width: int = 168
    height: int = 168
    fov_deg: float = FRONT_FOV_DEG
    x_m: float = FRONT_MOUNT_M[0]
    z_m: float = FRONT_MOUNT_M[1]
    pitch_deg: float = 0.0


def camera_size(env_cfg, carla_cfg) -> tuple[int, int]:
    """``(width, height)`` the CARLA camera renders: ``carla.camera_width/height``, by default
    ``SUPERSAMPLE`` times the contract image; it must have the contract image's aspect ratio.

    Raises:
        ConfigError: the aspect ratios differ (the picture would be squashed: other geometry than the town's).
    """
    h, w = env_cfg.image_height, env_cfg.image_width
    cw = carla_cfg.camera_width if carla_cfg.camera_width is not None else SUPERSAMPLE * w
    ch = carla_cfg.camera_height if carla_cfg.camera_height is not None else SUPERSAMPLE * h
    if cw * h != ch * w:
        raise ConfigError(
            f"carla.camera_width x carla.camera_height = {cw} x {ch} does not have the aspect ratio of the "
            f"observation image env.image_width x env.image_height = {w} x {h}: the picture would be squashed "
            f"and differ from the town's. Set them in the same ratio (e.g. {SUPERSAMPLE * w} x {SUPERSAMPLE * h}) "
            f"or leave them unset (null) for {SUPERSAMPLE}x the image size."
        )
    return cw, ch


def camera_spec(env_cfg, carla_cfg) -> CameraSpec:
    """The CARLA camera that sees what the town's camera sees (``env.camera.view`` front or bev)."""
    cw, ch = camera_size(env_cfg, carla_cfg)
    if env_cfg.camera.view == "bev":
        metres_per_px = (BEV_BEHIND_M + BEV_AHEAD_M) / env_cfg.image_height
        half_width_m = 0.5 * env_cfg.image_width * metres_per_px
        fov = math.degrees(2.0 * math.atan(half_width_m / carla_cfg.bev_height_m))
        centre_ahead_m = BEV_AHEAD_M - 0.5 * env_cfg.image_height * metres_per_px
        return CameraSpec(cw, ch, fov, centre_ahead_m, carla_cfg.bev_height_m, -90.0)
    return CameraSpec(cw, ch, carla_cfg.camera_fov_deg, carla_cfg.camera_x_m, carla_cfg.camera_z_m,
                      env_cfg.camera.pitch_deg)


def pixel_of(spec: CameraSpec, out_hw: tuple[int, int], point: np.ndarray) -> np.ndarray:
    """Where CARLA's camera ``spec`` images vehicle-frame points, in the ``out_hw`` contract image.

    Args:
        spec: the camera (mount in the vehicle frame, no roll, no yaw).
        out_hw: ``(H, W)`` of the observation image the camera image is area-resized to.
        point: ``(n, 3)`` points (x forward, y right, z up from the ground under the vehicle centre), m.

    Returns:
        ``(n, 2)`` continuous ``(row, col)``: pixel ``(i, j)`` spans ``[i, i + 1) x [j, j + 1)``, its
        centre is ``(i + 0.5, j + 0.5)``; NaN for points behind the camera.
    """
    p = np.asarray(point, dtype=np.float64) - np.array([spec.x_m, 0.0, spec.z_m])
    th = math.radians(spec.pitch_deg)  # Unreal pitch: positive raises the camera's x axis toward +z
    fwd = p[:, 0] * math.cos(th) + p[:, 2] * math.sin(th)
    up = -p[:, 0] * math.sin(th) + p[:, 2] * math.cos(th)
    right = p[:, 1]
    focal = spec.width / (2.0 * math.tan(math.radians(spec.fov_deg) / 2.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        u = spec.width / 2.0 + focal * right / fwd
        v = spec.height / 2.0 - focal * up / fwd
    out = np.stack([v * out_hw[0] / spec.height, u * out_hw[1] / spec.width], axis=1)
    out[fwd <= 0] = np.nan
    return out
