"""The ``classical`` config section: gains and targets of the PID + pure-pursuit controller.

Every key is read by ``av_td3.baselines.classical.ClassicalController``; units are in the names or the
descriptions. The defaults are the values tuned on the town and measured in ``docs/results.md``.
"""

from __future__ import annotations

from pydantic import Field, model_validator

from av_td3.config_base import Sections, StrictModel
from av_td3.envs.config import EnvConfig


class ClassicalConfig(StrictModel):
    # Speed: PID on the speed error (m/s) -> throttle_brake in [-1, 1].
    target_speed_kmh: float = Field(30.0, gt=0, le=130, description="Cruise speed on straight road, km/h.")
    speed_kp: float = Field(0.5, ge=0, le=10, description="throttle_brake per m/s of speed error.")
    speed_ki: float = Field(0.1, ge=0, le=10, description="throttle_brake per metre of integrated speed error.")
    speed_kd: float = Field(0.0, ge=0, le=10, description="throttle_brake per m/s^2 (derivative on the speed).")
    integral_limit_m: float = Field(2.0, ge=0, le=100, description="Anti-windup clamp on the integral, m.")
    pedal_rate_per_s: float = Field(
        2.0, gt=0, le=1000,
        description="Largest change of throttle_brake per second (bounds the jerk); not applied while a "
                    "vehicle ahead sets the speed, nor to emergency braking.")

    # Steering: pure pursuit on the route waypoints of the observation vector.
    lookahead_gain_s: float = Field(0.25, ge=0, le=5, description="Lookahead = min + gain * speed (clipped), s.")
    min_lookahead_m: float = Field(2.0, gt=0, le=50, description="Lookahead at standstill, m.")
    max_lookahead_m: float = Field(10.0, gt=0, le=100, description="Longest lookahead, m.")
    wheelbase_m: float = Field(2.875, gt=0, le=10, description="Used when the env has no wheelbase_m, m.")
    max_steer_deg: float = Field(
        35.0, gt=0, le=90, description="Wheel angle at steer = 1, degrees (used when the env has no max_steer_rad).")

    # Target speed before bends: v = sqrt(max_lateral_accel / curvature), reached with comfort_decel.
    max_lateral_accel_mps2: float = Field(2.0, gt=0, le=10, description="Bend speed limit, m/s^2.")
    comfort_decel_mps2: float = Field(
        3.0, gt=0, le=10, description="Planned deceleration for bends and vehicles ahead, m/s^2.")

    # Vehicle ahead (info['obstacle_distance_m'], info['ttc_s']).
    min_gap_m: float = Field(4.0, ge=0, le=50, description="Bumper gap kept to a stopped vehicle ahead, m.")
    time_headway_s: float = Field(1.0, ge=0, le=5, description="Extra gap per m/s of own speed, s.")
    emergency_ttc_s: float = Field(1.5, ge=0, le=10, description="Full brake below this time-to-collision, s.")
    route_corridor_m: float = Field(
        2.5, gt=0, le=20,
        description="A vehicle ahead counts only when the route passes within this distance of it, m.")

    @model_validator(mode="after")
    def _lookahead_range(self) -> "ClassicalConfig":
        if self.max_lookahead_m < self.min_lookahead_m:
            raise ValueError(f"max_lookahead_m ({self.max_lookahead_m}) must be >= min_lookahead_m "
                             f"({self.min_lookahead_m})")
        return self


class ClassicalSections(Sections):
    """What ``make_classical_policy`` reads: the ``classical`` gains and the ``env`` waypoint layout."""

    env: EnvConfig = Field(default_factory=EnvConfig)
    classical: ClassicalConfig = Field(default_factory=ClassicalConfig)
