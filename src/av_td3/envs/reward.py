"""The shared driving reward, used unchanged by every driving backend (town, CARLA, ...).

``make_reward(cfg, target_speed_mps, lateral_limit_m)(RewardInputs(...))`` returns ``(total, components)``
where ``components`` maps each name in ``COMPONENTS`` to its value and ``total == sum(components.values())``.
The env puts ``components`` into ``info["reward_components"]``. ``reward.version`` picks the reward.

Version 2 (default, ``ProgressReward``), after CaRL (Jaeger et al. 2025): progress along the route is the
reward, every soft penalty SCALES IT DOWN instead of being added, and infractions end the episode::

    r = progress * clip(metres gained, -2, 2) * f_lane * f_marking * f_speed * f_ttc * f_comfort   (gain > 0)
      = progress * clip(metres gained, -2, 2)                                                      (gain <= 0)
      - infraction_penalty * (collision or off-road)  + goal_bonus * (goal reached this step)

    f_lane    = 1 - lane_centre_penalty * min(|lateral| / lane_centre_scale_m, 1)
    f_marking = 1 - lane_marking_penalty * (a lane line between the wheels)
    f_speed   = 1 - min(overspeed_penalty * max(speed / target - 1, 0), 1)
    f_ttc     = 1 - ttc_penalty * clip(1 - ttc / ttc_threshold_s, 0, 1)
    f_comfort = 1 - comfort_penalty * (number of COMFORT_LIMITS exceeded) / 5

Why: a sum of terms lets a fast, jerky, line-crossing policy out-earn a clean one (measured with v1:
efficiency +341 and progress +282 against lane keeping -23, comfort -18, safety -40 in one successful
episode). With factors, no penalty can be paid for by driving faster, the best return is the whole route
driven cleanly (about +1 per metre), standing still earns 0, and a crash keeps only the metres before it
minus ``infraction_penalty``. The components report what each factor cost: ``progress`` is the unscaled
gain, ``lane_keeping`` (f_lane and f_marking), ``efficiency`` (f_speed), ``safety`` (f_ttc and the
infraction penalty) and ``comfort`` (f_comfort) are the (negative) amounts taken off it, in that order.
The comfort limits are nuPlan's, as used by CaRL (``COMFORT_LIMITS``).

Version 1 (``DrivingReward``), the additive reward. Terms (raw value per 0.05 s step, before the weight
``RewardConfig.<name>``; defaults in brackets):

``efficiency`` [w = 1.0], raw in ``[-1, 1]``. With ``u = speed * cos(heading error) / target_speed``
    (speed ALONG the route, so spinning or driving across the route earns ~0)::

        u <= 0: -min(u^2, 1)      0 < u <= 1: u^2      u > 1: max(1 - 2 (u - 1), -1)

    Why quadratic below the target: over a fixed route the per-METRE efficiency reward is
    ``r(u) / u``; a linear ``r`` would pay the same for the route at any speed below the target, so
    ``u^2`` makes the target speed the best per metre and per step.
``progress`` [w = 1.0], raw = metres gained along the route this step, clipped to ``[-2, 2]``
    (about +0.42 per step at 30 km/h; negative when driving back along the route).
``lane_keeping`` [w = 0.5], raw in ``[-1, 0]``:
    ``-(0.5 min(|lateral| / lateral_limit, 1) + 0.5 min(|heading error| / (pi/2), 1))``.
``comfort`` [w = 0.1], raw in ``[-1, 0]``:
    ``-(0.5 min(|jerk| / JERK_SCALE_MPS3, 1) + 0.5 min(|steer change|, 1))``.
``safety`` [w = 1.0], raw in ``[-(collision_penalty + off_road_penalty + lane_invasion_penalty + 1), 0]``:
    ``-(collision_penalty * collision + off_road_penalty * off_road
       + lane_invasion_penalty * lane_invasion + proximity)`` with
    ``proximity = clip(1 - ttc / ttc_threshold_s, 0, 1)``. Collision and off-road end the episode, so
    they are paid once; a lane invasion is paid on each step a lane line is between the wheels.
``goal`` [goal_bonus = 10], ``goal_bonus`` on the single step the goal is reached, else 0.

Scale check with the defaults, measured on the town's default route (284 m, two turns) with the
pure-pursuit baseline at a 30 km/h target and no NPCs: 808 steps (it slows for the turns), +1.09 per
step, +885 per episode (no lane invasion);
standing still earns 0 per step (and is truncated as stalled); spinning ~0 or less; leaving the road
costs 10 once and ends the episode. A collision (-10) is ~9 steps of good driving plus the lost
future: a deterrent that does not dwarf everything else (earlier systems paid ~+7 per step vs -177
for one event).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from av_td3.envs.config import RewardConfig

__all__ = [
    "COMPONENTS", "COMFORT_LIMITS", "DrivingReward", "ProgressReward", "RewardInputs", "make_reward",
    "JERK_SCALE_MPS3", "MAX_PROGRESS_STEP_M",
]

#: Names of the reward terms, in the order they appear in ``info["reward_components"]``.
COMPONENTS = ("efficiency", "progress", "lane_keeping", "comfort", "safety", "goal")
#: Jerk that saturates the comfort penalty, m/s^3 (full throttle to full brake in one step is ~260).
JERK_SCALE_MPS3 = 50.0
#: Per-step clip of the progress term, m (guards against a projection jump paying a windfall).
MAX_PROGRESS_STEP_M = 2.0
#: Slope of the efficiency penalty above the target speed (1.5x target -> 0, 2x target -> -1).
_OVERSPEED_SLOPE = 2.0
#: nuPlan's comfort limits (CaRL uses them): (name, low, high) in SI units; a step outside counts once each.
COMFORT_LIMITS = (
    ("lon_accel_mps2", -4.05, 2.40),
    ("jerk_mps3", -4.13, 4.13),  # longitudinal
    ("jerk_magnitude_mps3", -8.37, 8.37),
    ("lat_accel_mps2", -4.89, 4.89),
    ("yaw_rate_radps", -0.95, 0.95),
)


@dataclass(frozen=True)
class RewardInputs:
    """One step's quantities, in SI units, as measured by any backend.

    Attributes:
        speed_mps: ego speed (>= 0), m/s.
        heading_error_rad: ego yaw - route tangent, radians (any range; wrapped by the caller).
        lateral_deviation_m: signed lateral deviation from the lane centre, m.
        progress_delta_m: route progress gained this step, m.
        jerk_mps3: longitudinal jerk, m/s^3.
        lon_accel_mps2: longitudinal acceleration, m/s^2.  lat_accel_mps2: lateral acceleration, m/s^2.
        yaw_rate_radps: yaw rate, rad/s.  jerk_magnitude_mps3: |d(lon, lat acceleration)/dt|, m/s^3.
        steer_change: |steer_t - steer_{t-1}| of the action, in [0, 2].
        collision / off_road / lane_invasion: events of this step.
        ttc_s: time-to-collision with the vehicle ahead, s (large when none).
        goal_reached: True only on the step the goal is first reached.
    """

    speed_mps: float
    heading_error_rad: float
    lateral_deviation_m: float
    progress_delta_m: float
    jerk_mps3: float = 0.0
    steer_change: float = 0.0
    lon_accel_mps2: float = 0.0
    lat_accel_mps2: float = 0.0
    yaw_rate_radps: float = 0.0
    jerk_magnitude_mps3: float = 0.0
    collision: bool = False
    off_road: bool = False
    lane_invasion: bool = False
    ttc_s: float = math.inf
    goal_reached: bool = False


class DrivingReward:
    """Version 1: weighted sum of the reward terms documented in the module docstring.

    Args:
        cfg: weights and event penalties (``RewardConfig``).
        target_speed_mps: the speed the efficiency term peaks at, m/s (> 0).
        lateral_limit_m: lateral deviation that saturates the lane-keeping term, m (> 0); the env uses its
            off-road limit so the penalty is full just before the episode ends.
    """

    def __init__(self, cfg: RewardConfig, target_speed_mps: float, lateral_limit_m: float):
        if target_speed_mps <= 0 or lateral_limit_m <= 0:
            raise ValueError(
                f"target_speed_mps and lateral_limit_m must be > 0, got {target_speed_mps}, {lateral_limit_m}"
            )
        self.cfg = cfg
        self.target_speed_mps = float(target_speed_mps)
        self.lateral_limit_m = float(lateral_limit_m)

    def raw_terms(self, x: RewardInputs) -> dict[str, float]:
        """Unweighted terms (see the module docstring for each range)."""
        cfg = self.cfg
        u = x.speed_mps * math.cos(x.heading_error_rad) / self.target_speed_mps
        if u <= 0.0:
            efficiency = -min(u * u, 1.0)
        elif u <= 1.0:
            efficiency = u * u
        else:
            efficiency = max(1.0 - _OVERSPEED_SLOPE * (u - 1.0), -1.0)
        progress = min(max(x.progress_delta_m, -MAX_PROGRESS_STEP_M), MAX_PROGRESS_STEP_M)
        lane = -0.5 * min(abs(x.lateral_deviation_m) / self.lateral_limit_m, 1.0) - 0.5 * min(
            abs(x.heading_error_rad) / (0.5 * math.pi), 1.0
        )
        comfort = -0.5 * min(abs(x.jerk_mps3) / JERK_SCALE_MPS3, 1.0) - 0.5 * min(abs(x.steer_change), 1.0)
        proximity = min(max(1.0 - x.ttc_s / cfg.ttc_threshold_s, 0.0), 1.0)
        safety = -(
            cfg.collision_penalty * float(x.collision)
            + cfg.off_road_penalty * float(x.off_road)
            + cfg.lane_invasion_penalty * float(x.lane_invasion)
            + proximity
        )
        return {
            "efficiency": efficiency,
            "progress": progress,
            "lane_keeping": lane,
            "comfort": comfort,
            "safety": safety,
            "goal": 1.0 if x.goal_reached else 0.0,
        }

    def __call__(self, x: RewardInputs) -> tuple[float, dict[str, float]]:
        """Return ``(total, weighted components)`` for one step."""
        raw = self.raw_terms(x)
        cfg = self.cfg
        weights = {
            "efficiency": cfg.efficiency,
            "progress": cfg.progress,
            "lane_keeping": cfg.lane_keeping,
            "comfort": cfg.comfort,
            "safety": cfg.safety,
            "goal": cfg.goal_bonus,
        }
        comps = {k: float(weights[k] * raw[k]) for k in COMPONENTS}
        return float(sum(comps.values())), comps


class ProgressReward:
    """Version 2: progress scaled down by soft penalties, infractions terminal (module docstring).

    Args:
        cfg: the factors' weights and the infraction penalty (``RewardConfig``).
        target_speed_mps: speed above which the overspeed factor applies, m/s (> 0).
    """

    def __init__(self, cfg: RewardConfig, target_speed_mps: float):
        if target_speed_mps <= 0:
            raise ValueError(f"target_speed_mps must be > 0, got {target_speed_mps}")
        self.cfg = cfg
        self.target_speed_mps = float(target_speed_mps)

    def factors(self, x: RewardInputs) -> dict[str, float]:
        """The soft-penalty factors of one step, each in [0, 1] (1 = no penalty), keyed by the component
        that reports what they cost, in the order they are applied."""
        cfg = self.cfg
        overspeed = max(x.speed_mps / self.target_speed_mps - 1.0, 0.0)
        closeness = min(max(1.0 - x.ttc_s / cfg.ttc_threshold_s, 0.0), 1.0)
        exceeded = sum(not (lo <= getattr(x, name) <= hi) for name, lo, hi in COMFORT_LIMITS)
        lane = 1.0 - cfg.lane_centre_penalty * min(abs(x.lateral_deviation_m) / cfg.lane_centre_scale_m, 1.0)
        return {
            "lane_keeping": lane * (1.0 - cfg.lane_marking_penalty * float(x.lane_invasion)),
            "efficiency": 1.0 - min(cfg.overspeed_penalty * overspeed, 1.0),
            "safety": 1.0 - cfg.ttc_penalty * closeness,
            "comfort": 1.0 - cfg.comfort_penalty * exceeded / len(COMFORT_LIMITS),
        }

    def __call__(self, x: RewardInputs) -> tuple[float, dict[str, float]]:
        """Return ``(total, components)`` for one step (components sum to the total)."""
        cfg = self.cfg
        comps = dict.fromkeys(COMPONENTS, 0.0)
        gain = comps["progress"] = cfg.progress * min(max(x.progress_delta_m, -MAX_PROGRESS_STEP_M), MAX_PROGRESS_STEP_M)
        if gain > 0.0:  # driving backwards is never discounted
            kept = gain
            for component, factor in self.factors(x).items():
                comps[component] -= kept * (1.0 - factor)
                kept *= factor
        if x.collision or x.off_road:
            comps["safety"] -= cfg.infraction_penalty
        if x.goal_reached:
            comps["goal"] = cfg.goal_bonus
        return float(sum(comps.values())), comps


def make_reward(cfg: RewardConfig, target_speed_mps: float, lateral_limit_m: float) -> DrivingReward | ProgressReward:
    """The reward of ``cfg.version`` (2: ``ProgressReward``, 1: ``DrivingReward``)."""
    if cfg.version == 1:
        return DrivingReward(cfg, target_speed_mps, lateral_limit_m)
    return ProgressReward(cfg, target_speed_mps)
