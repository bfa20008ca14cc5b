"""The backend-agnostic driving task: observation vector, reward, episode end and ``info``.

A backend (the town simulator, CARLA, ...) moves the world and measures events; this module turns the
ego state, the route and those events into everything the contract (``contract.py``) promises. It knows
nothing about any simulator, so every backend produces the same quantities the same way.

Typical use inside a backend::

    task = DrivingTask(cfg.env, cfg.reward)
    vector, info = task.reset(route, EgoState(x, y, yaw, speed))
    ...
    vector, reward, terminated, truncated, info = task.step(EgoState(...), action, StepEvents(...))

Coordinates follow ``route.py``: world x east, y north, yaw counter-clockwise from +x, radians.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from av_td3.envs.config import EnvConfig, RewardConfig
from av_td3.envs.contract import STEP_SECONDS, build_vector
from av_td3.envs.reward import COMPONENTS, RewardInputs, make_reward
from av_td3.envs.route import Route, RouteProjection

__all__ = [
    "DrivingTask",
    "EgoState",
    "StepEvents",
    "nearest_obstacle_ahead",
    "NO_OBSTACLE_DISTANCE_M",
    "NO_OBSTACLE_TTC_S",
    "STALL_SPEED_MPS",
    "EXTRA_INFO_KEYS",
]

#: ``obstacle_distance_m`` when nothing is ahead, m.
NO_OBSTACLE_DISTANCE_M = 1e3
#: ``ttc_s`` when nothing is closing in, s.
NO_OBSTACLE_TTC_S = 1e3
#: Below this speed a step counts toward the stall truncation (0.5 km/h), m/s.
STALL_SPEED_MPS = 0.5 / 3.6
#: ``info`` keys this module adds to ``contract.INFO_KEYS``.
EXTRA_INFO_KEYS = ("obstacle_distance_m", "ttc_s", "jerk_mps3", "steps", "progress_m", "route_length_m")


@dataclass(frozen=True)
class EgoState:
    """Ego pose and speed in the world frame: x, y in m, yaw in radians (CCW from +x), speed in m/s >= 0."""

    x: float
    y: float
    yaw: float
    speed_mps: float


@dataclass(frozen=True)
class StepEvents:
    """What the backend measured this step.

    Attributes:
        collision: the ego touched another vehicle or an obstacle.
        lane_invasion: the ego footprint touched a lane marking.
        off_road: the ego left the drivable surface (the task adds the lateral-deviation limit itself).
        obstacle_distance_m: bumper-to-bumper gap to the nearest vehicle ahead in the ego's corridor, m.
        ttc_s: time-to-collision with it, s.
    """

    collision: bool = False
    lane_invasion: bool = False
    off_road: bool = False
    obstacle_distance_m: float = NO_OBSTACLE_DISTANCE_M
    ttc_s: float = NO_OBSTACLE_TTC_S


def nearest_obstacle_ahead(
    ego: EgoState,
    others_xy: np.ndarray,
    others_yaw: np.ndarray,
    others_speed: np.ndarray,
    ego_length_m: float = 4.69,
    other_length_m: float | np.ndarray = 4.69,
    corridor_half_width_m: float = 1.85,
    max_range_m: float = 60.0,
) -> tuple[float, float]:
    """Gap and time-to-collision to the nearest vehicle ahead in the ego's straight corridor.

    Args:
        ego: the ego state.
        others_xy: ``(M, 2)`` world centres of the other vehicles, m.
        others_yaw: ``(M,)`` their yaws, radians.  others_speed: ``(M,)`` their speeds, m/s.
        ego_length_m / other_length_m: lengths used to turn centre distances into bumper gaps, m.
        corridor_half_width_m: a vehicle counts when its centre is within this lateral distance, m
            (default: ego half width + other half width).
        max_range_m: ignore vehicles farther ahead, m.

    Returns:
        ``(gap_m, ttc_s)``; ``(NO_OBSTACLE_DISTANCE_M, NO_OBSTACLE_TTC_S)`` when none. The gap is clamped
        at 0 (overlap); the TTC is gap / closing speed when closing, else ``NO_OBSTACLE_TTC_S``.
    """
    if len(others_xy) == 0:
        return NO_OBSTACLE_DISTANCE_M, NO_OBSTACLE_TTC_S
    c, s = math.cos(ego.yaw), math.sin(ego.yaw)
    dx = others_xy[:, 0] - ego.x
    dy = others_xy[:, 1] - ego.y
    fwd = dx * c + dy * s
    right = dx * s - dy * c
    half_len = 0.5 * (ego_length_m + np.asarray(other_length_m))
    ok = (fwd > 0.0) & (np.abs(right) < corridor_half_width_m) & (fwd < max_range_m + half_len)
    if not ok.any():
        return NO_OBSTACLE_DISTANCE_M, NO_OBSTACLE_TTC_S
    gaps = np.where(ok, fwd - half_len, np.inf)
    j = int(np.argmin(gaps))
    gap = max(float(gaps[j]), 0.0)
    closing = ego.speed_mps - float(others_speed[j]) * math.cos(float(others_yaw[j]) - ego.yaw)
    ttc = gap / closing if closing > 1e-3 else NO_OBSTACLE_TTC_S
    return gap, min(ttc, NO_OBSTACLE_TTC_S)


class DrivingTask:
    """Builds the contract vector, computes the reward and decides the episode end.

    Termination (``terminated``; stops bootstrapping): collision, off-road (backend surface check OR
    ``|lateral deviation| > env.off_road_lateral_m``), a lane invasion when ``env.lane_invasion_ends_episode``
    (training envs only), goal reached (``remaining <= env.goal_tolerance_m``).
    Truncation (only if not terminated): ``env.max_episode_steps`` steps, or ``env.stall_steps``
    consecutive steps below 0.5 km/h.

    ``info``: every ``contract.INFO_KEYS`` key (``distance_m`` = metres driven since reset, odometer;
    ``route_completion`` = progress / route length) plus ``obstacle_distance_m``, ``ttc_s``,
    ``jerk_mps3``, ``steps``, ``progress_m`` (metres along the route) and ``route_length_m``.

    Args:
        env_cfg: the ``env`` config section (reads num_waypoints, waypoint_spacing_m, target_speed_kmh,
            off_road_lateral_m, goal_tolerance_m, max_episode_steps, stall_steps).
        reward_cfg: the ``reward`` config section.
        dt: seconds per step.
    """

    def __init__(self, env_cfg: EnvConfig, reward_cfg: RewardConfig, dt: float = STEP_SECONDS):
        self.cfg = env_cfg
        self.dt = float(dt)
        self.target_speed_mps = env_cfg.target_speed_kmh / 3.6
        self.reward_fn = make_reward(reward_cfg, self.target_speed_mps, env_cfg.off_road_lateral_m)
        #: Normaliser of the waypoint coordinates in the vector, m.
        self.lookahead_m = env_cfg.num_waypoints * env_cfg.waypoint_spacing_m
        self.route: Route | None = None
        self.projection: RouteProjection | None = None
        self._reset_counters()

    def _reset_counters(self) -> None:
        self.steps = 0
        self.stall_steps = 0
        self.distance_m = 0.0
        self.goal_reached = False
        self.done = False
        self._prev_speed = 0.0
        self._prev_accel = 0.0
        self._prev_lat_accel = 0.0
        self._prev_yaw = 0.0
        self._prev_steer = 0.0
        self._prev_xy = (0.0, 0.0)

    # ------------------------------------------------------------------------------------------
    def reset(self, route: Route, ego: EgoState, events: StepEvents | None = None) -> tuple[np.ndarray, dict]:
        """Start an episode on ``route`` (tracking restarts at the ego's nearest segment).

        Returns ``(vector, info)``; ``info`` has every contract key plus ``EXTRA_INFO_KEYS``.
        """
        self.route = route
        self._reset_counters()
        route.localize(ego.x, ego.y)
        self.projection = route.project(ego.x, ego.y, ego.yaw)
        self._prev_speed = ego.speed_mps
        self._prev_yaw = ego.yaw
        self._prev_xy = (ego.x, ego.y)
        events = events or StepEvents()
        info = self._info(ego, events, off_road=False, reason="none", components=_zero_components(), jerk=0.0)
        return self._vector(ego), info

    def step(
        self, ego: EgoState, action: np.ndarray, events: StepEvents
    ) -> tuple[np.ndarray, float, bool, bool, dict]:
        """Advance the task by one step after the backend moved the world.

        Args:
            ego: the ego state after this step.
            action: the ``(2,)`` contract action applied this step (its steer feeds the comfort term).
            events: what the backend measured this step.
        """
        if self.route is None:
            raise RuntimeError("DrivingTask.step() called before reset()")
        route = self.route
        prev_progress = self.projection.progress_m
        proj = self.projection = route.project(ego.x, ego.y, ego.yaw)
        self.steps += 1
        self.distance_m += math.hypot(ego.x - self._prev_xy[0], ego.y - self._prev_xy[1])
        self._prev_xy = (ego.x, ego.y)

        accel = (ego.speed_mps - self._prev_speed) / self.dt
        jerk = (accel - self._prev_accel) / self.dt
        yaw_rate = math.remainder(ego.yaw - self._prev_yaw, 2.0 * math.pi) / self.dt
        lat_accel = ego.speed_mps * yaw_rate
        jerk_magnitude = math.hypot(jerk, (lat_accel - self._prev_lat_accel) / self.dt)
        self._prev_speed, self._prev_accel, self._prev_yaw = ego.speed_mps, accel, ego.yaw
        self._prev_lat_accel = lat_accel
        steer = float(action[0])
        steer_change = abs(steer - self._prev_steer)
        self._prev_steer = steer

        off_road = bool(events.off_road or abs(proj.lateral_m) > self.cfg.off_road_lateral_m)
        goal_now = (not self.goal_reached) and proj.remaining_m <= self.cfg.goal_tolerance_m
        self.goal_reached = self.goal_reached or goal_now
        self.stall_steps = self.stall_steps + 1 if ego.speed_mps < STALL_SPEED_MPS else 0

        reward, components = self.reward_fn(
            RewardInputs(
                speed_mps=ego.speed_mps,
                heading_error_rad=proj.heading_error_rad,
                lateral_deviation_m=proj.lateral_m,
                progress_delta_m=proj.progress_m - prev_progress,
                jerk_mps3=jerk,
                steer_change=steer_change,
                lon_accel_mps2=accel,
                lat_accel_mps2=lat_accel,
                yaw_rate_radps=yaw_rate,
                jerk_magnitude_mps3=jerk_magnitude,
                collision=events.collision,
                off_road=off_road,
                lane_invasion=events.lane_invasion,
                ttc_s=events.ttc_s,
                goal_reached=goal_now,
            )
        )

        reason = "none"
        if events.collision:
            reason = "collision"
        elif off_road:
            reason = "off_road"
        elif events.lane_invasion and self.cfg.lane_invasion_ends_episode:
            reason = "lane_invasion"
        elif goal_now:
            reason = "goal_reached"
        terminated = reason != "none"
        truncated = False
        if not terminated:
            if self.steps >= self.cfg.max_episode_steps:
                reason, truncated = "time_limit", True
            elif self.stall_steps >= self.cfg.stall_steps:
                reason, truncated = "stalled", True
        self.done = terminated or truncated
        info = self._info(ego, events, off_road=off_road, reason=reason, components=components, jerk=jerk)
        return self._vector(ego), reward, terminated, truncated, info

    # ------------------------------------------------------------------------------------------
    def _vector(self, ego: EgoState) -> np.ndarray:
        proj = self.projection
        ahead = self.route.waypoints_ahead(ego.x, ego.y, ego.yaw, self.cfg.num_waypoints, proj.progress_m)
        return build_vector(ego.speed_mps, proj.lateral_m, proj.heading_error_rad, ahead, self.lookahead_m)

    def _info(
        self, ego: EgoState, events: StepEvents, off_road: bool, reason: str, components: dict, jerk: float
    ) -> dict:
        proj = self.projection
        return {
            "speed_kmh": float(ego.speed_mps * 3.6),
            "lateral_deviation_m": float(proj.lateral_m),
            "heading_error_rad": float(proj.heading_error_rad),
            "collision": bool(events.collision),
            "lane_invasion": bool(events.lane_invasion),
            "off_road": off_road,
            "route_completion": float(proj.completion),
            "distance_m": float(self.distance_m),
            "success": bool(self.goal_reached and reason == "goal_reached"),
            "termination_reason": reason,
            "reward_components": components,
            "obstacle_distance_m": float(events.obstacle_distance_m),
            "ttc_s": float(events.ttc_s),
            "jerk_mps3": float(jerk),
            "steps": int(self.steps),
            "progress_m": float(proj.progress_m),
            "route_length_m": float(self.route.length_m),
        }


def _zero_components() -> dict[str, float]:
    return {k: 0.0 for k in COMPONENTS}
