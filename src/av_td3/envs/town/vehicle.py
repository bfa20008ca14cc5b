"""Ego vehicle: a kinematic bicycle with Tesla Model 3-like size and limits.

State ``(x, y, yaw, speed)`` is the vehicle's geometric centre in the world frame (x east, y north, yaw
counter-clockwise from +x, radians; speed m/s >= 0, no reverse gear, as in the contract).

Controls follow CARLA: ``steer`` in [-1, 1] with POSITIVE = turn RIGHT (so the yaw rate is negative in
our counter-clockwise convention), ``throttle`` and ``brake`` in [0, 1]. Both axles are ``wheelbase/2``
from the centre; the slip angle ``beta = atan(tan(delta) / 2)`` gives the centre's velocity direction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["VehicleParams", "Vehicle"]


@dataclass(frozen=True)
class VehicleParams:
    """Size and limits (SI units). Defaults: Tesla Model 3."""

    length_m: float = 4.69
    width_m: float = 1.85
    wheelbase_m: float = 2.875
    #: Distance between left and right wheel centres, m.
    track_m: float = 1.58
    max_steer_rad: float = math.radians(35.0)
    #: Acceleration at full throttle and standstill, m/s^2 (Model 3: 0-100 km/h in ~5 s).
    max_accel_mps2: float = 5.0
    #: Deceleration at full brake, m/s^2.
    max_brake_mps2: float = 8.0
    #: Aerodynamic drag coefficient per unit mass, 1/m (full-throttle top speed ~ 55 m/s).
    drag_per_m: float = 1.6e-3
    #: Rolling resistance and engine braking when coasting, m/s^2.
    rolling_mps2: float = 0.3
    max_speed_mps: float = 60.0


class Vehicle:
    """Kinematic bicycle; ``step`` integrates one time step with semi-implicit Euler."""

    def __init__(self, params: VehicleParams | None = None):
        self.params = params or VehicleParams()
        self.x = self.y = self.yaw = self.speed = 0.0
        self.accel = 0.0
        self.steer_rad = 0.0

    def reset(self, x: float, y: float, yaw: float, speed: float = 0.0) -> None:
        self.x, self.y, self.yaw, self.speed = float(x), float(y), float(yaw), float(speed)
        self.accel = 0.0
        self.steer_rad = 0.0

    def step(self, steer: float, throttle: float, brake: float, dt: float) -> None:
        """Apply controls (steer [-1, 1], +right; throttle, brake [0, 1]) for ``dt`` seconds."""
        p = self.params
        v = self.speed
        accel = throttle * p.max_accel_mps2 - brake * p.max_brake_mps2 - p.drag_per_m * v * v
        if v > 0.0:
            accel -= p.rolling_mps2
        v_new = min(max(v + accel * dt, 0.0), p.max_speed_mps)
        self.accel = (v_new - v) / dt
        self.speed = v_new
        # CARLA sign: positive steer turns right = clockwise = negative yaw rate here.
        delta = -steer * p.max_steer_rad
        self.steer_rad = delta
        beta = math.atan(0.5 * math.tan(delta))
        heading = self.yaw + beta
        self.x += v_new * math.cos(heading) * dt
        self.y += v_new * math.sin(heading) * dt
        yaw = self.yaw + v_new * math.cos(beta) * math.tan(delta) / p.wheelbase_m * dt
        self.yaw = (yaw + math.pi) % (2.0 * math.pi) - math.pi

    def corners(self) -> list[tuple[float, float]]:
        """World corners of the footprint: front-left, front-right, rear-right, rear-left."""
        p = self.params
        c, s = math.cos(self.yaw), math.sin(self.yaw)
        hl, hw = 0.5 * p.length_m, 0.5 * p.width_m
        out = []
        for fx, ly in ((hl, hw), (hl, -hw), (-hl, -hw), (-hl, hw)):
            out.append((self.x + fx * c - ly * s, self.y + fx * s + ly * c))
        return out
