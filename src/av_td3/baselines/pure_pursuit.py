"""Pure-pursuit steering + proportional speed control, acting from the contract ``vector`` only.

The vector (``contract.build_vector``) holds speed, lateral deviation, heading error and the next N
route waypoints in the vehicle frame (x forward, y right) divided by the lookahead normaliser. The
controller picks the first waypoint at least ``lookahead`` metres ahead of the rear axle, steers along
the circle through it (``curvature = 2 y / d^2``), and tracks a target speed that it lowers before bends
(lateral acceleration limit) and before the route's end.

    pp = PurePursuit(wheelbase_m=env.unwrapped.wheelbase_m, target_speed_kmh=30.0)
    action = pp(obs)            # obs dict or vector -> (2,) float32 [steer, throttle_brake]
"""

from __future__ import annotations

import math
from typing import Mapping

import numpy as np

from av_td3.envs.contract import LATERAL_SCALE_M, NUM_WAYPOINTS, SPEED_SCALE_MPS

__all__ = ["PurePursuit", "pure_pursuit_steer"]


def pure_pursuit_steer(lateral_m: float, distance_sq_m2: float, wheelbase_m: float, max_steer_rad: float) -> float:
    """Pure pursuit (Coulter 1992): the steer that puts the rear axle on the circle through a target point.

    Args:
        lateral_m: the target's offset to the right of the rear axle's heading line, m.
        distance_sq_m2: squared distance from the rear axle to the target, m^2 (floored at 1e-6).
        wheelbase_m: ego wheelbase, m.  max_steer_rad: wheel angle at ``steer = 1``, radians.

    Returns:
        ``atan(wheelbase * 2 y / d^2) / max_steer``: positive = right, NOT clipped to [-1, 1].
    """
    curvature_right = 2.0 * lateral_m / max(distance_sq_m2, 1e-6)
    return math.atan(wheelbase_m * curvature_right) / max_steer_rad


class PurePursuit:
    """Pure pursuit + P speed controller (CARLA steer sign: positive = right).

    Args:
        wheelbase_m: ego wheelbase, m.
        max_steer_rad: steering angle at ``steer = 1``, radians.
        target_speed_kmh: cruise speed, km/h.
        waypoint_scale_m: the env's waypoint normaliser (num_waypoints * waypoint_spacing_m), m.
        num_waypoints: N in the vector.
        lookahead_gain_s, min_lookahead_m, max_lookahead_m: lookahead = clip(gain * speed, min, max).
        speed_gain: throttle_brake per m/s of speed error.
        max_lateral_accel: bend speed limit ``sqrt(a / curvature)``, m/s^2.
        lateral_gain: extra steer per metre of lateral deviation.
    """

    def __init__(
        self,
        wheelbase_m: float = 2.875,
        max_steer_rad: float = math.radians(35.0),
        target_speed_kmh: float = 30.0,
        waypoint_scale_m: float = 20.0,
        num_waypoints: int = NUM_WAYPOINTS,
        lookahead_gain_s: float = 0.6,
        min_lookahead_m: float = 4.0,
        max_lookahead_m: float = 12.0,
        speed_gain: float = 0.5,
        max_lateral_accel: float = 2.5,
        lateral_gain: float = 0.1,
    ):
        self.wheelbase = wheelbase_m
        self.max_steer = max_steer_rad
        self.target_speed = target_speed_kmh / 3.6
        self.scale = waypoint_scale_m
        self.n = num_waypoints
        self.gain, self.ld_min, self.ld_max = lookahead_gain_s, min_lookahead_m, max_lookahead_m
        self.kp = speed_gain
        self.a_lat = max_lateral_accel
        self.k_lat = lateral_gain

    def __call__(self, obs: Mapping[str, np.ndarray] | np.ndarray) -> np.ndarray:
        vec = np.asarray(obs["vector"] if isinstance(obs, Mapping) else obs, dtype=np.float64)
        if vec.shape != (3 + 2 * self.n,):
            raise ValueError(f"expected a vector of shape ({3 + 2 * self.n},), got {vec.shape}")
        speed = vec[0] * SPEED_SCALE_MPS
        wp = vec[3:].reshape(self.n, 2) * self.scale
        # Measure from the rear axle (the bicycle's pure-pursuit reference), half a wheelbase back.
        wx = wp[:, 0] + 0.5 * self.wheelbase
        wy = wp[:, 1]
        dist = np.hypot(wx, wy)
        ld = min(max(self.gain * speed, self.ld_min), self.ld_max)
        far = np.flatnonzero(dist >= ld)
        k = int(far[0]) if len(far) else self.n - 1
        steer = pure_pursuit_steer(wy[k], dist[k] ** 2, self.wheelbase, self.max_steer)
        # Pure pursuit from the rear axle settles with the CENTRE slightly outside bends; a small
        # proportional term on the signed lateral deviation (positive = right -> steer left) removes it.
        steer -= self.k_lat * vec[1] * LATERAL_SCALE_M

        # Slow down for the sharpest bend among the upcoming waypoints, and for the end of the route.
        kappa = np.abs(2.0 * wy / np.maximum(dist**2, 1.0))
        v_bend = math.sqrt(self.a_lat / max(float(kappa[: max(k + 3, 4)].max()), 1e-3))
        remaining = float(dist[-1])  # the goal repeats at the end of the list near the route's end
        v_stop = math.sqrt(max(2.0 * 2.0 * (remaining - 1.0), 0.0)) if remaining < self.scale - 1.0 else math.inf
        target = min(self.target_speed, v_bend, max(v_stop, 1.5))
        pedal = self.kp * (target - speed)
        return np.array([np.clip(steer, -1.0, 1.0), np.clip(pedal, -1.0, 1.0)], dtype=np.float32)
