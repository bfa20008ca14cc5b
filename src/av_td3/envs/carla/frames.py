"""Conversions between CARLA's world frame and the route/task frame (``av_td3.envs.route``).

CARLA (Unreal) is left-handed: x forward/east, y right/south in map view, z up, metres; yaw in
degrees, growing clockwise in map view (from +x toward +y). A vehicle with yaw 0 has +y on its RIGHT.

The route/task frame is right-handed: x east, y north, yaw in radians counter-clockwise from +x.

Mirroring y maps one onto the other: ``(x, y, yaw) -> (x, -y, -radians(yaw))``. Mirroring also turns
"right of the heading" in CARLA into "right of the heading" in the route frame, so the signed lateral
deviation (positive = right) keeps its meaning.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from av_td3.envs.task import EgoState


def xy_to_route_frame(points_xy: np.ndarray) -> np.ndarray:
    """``(M, 2)`` CARLA (x, y) -> route-frame (x, y), metres."""
    pts = np.array(points_xy, dtype=np.float64, copy=True)
    pts[:, 1] *= -1.0
    return pts


def yaw_to_route_frame(yaw_deg: float) -> float:
    """CARLA yaw (degrees, clockwise in map view) -> route-frame yaw (radians, counter-clockwise)."""
    return -math.radians(float(yaw_deg))


def ego_state(transform: Any, velocity: Any) -> EgoState:
    """``EgoState`` (route frame, m, rad, m/s) from a ``carla.Transform`` and ``carla.Vector3D`` velocity.

    Speed is the planar norm of the velocity, m/s (>= 0 also when rolling backwards).
    """
    loc = transform.location
    return EgoState(
        x=float(loc.x),
        y=-float(loc.y),
        yaw=yaw_to_route_frame(transform.rotation.yaw),
        speed_mps=float(math.hypot(velocity.x, velocity.y)),
    )
