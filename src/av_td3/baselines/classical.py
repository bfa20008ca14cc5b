"""The classical baseline: PID speed control + pure-pursuit steering on the route, with privileged state.

It reads only what every backend provides: the contract ``vector`` (speed, then N route waypoints as
(x forward, y right) / lookahead, ``contract.build_vector``) and the previous step's ``info``
(``obstacle_distance_m``, ``ttc_s``; ``task.DrivingTask``). It never reads the image, so it runs
unchanged on the town and on CARLA.

One step:

1. **Target speed** = the lowest of
   * the cruise speed ``classical.target_speed_kmh``;
   * the bend limit: for each upcoming waypoint, ``sqrt(max_lateral_accel / curvature)``, raised by
     what ``comfort_decel`` can shed over the distance to it (so the car slows *before* the bend);
   * the vehicle-ahead limit (``info['obstacle_distance_m']``, ``info['ttc_s']``): the speed from which
     ``comfort_decel`` could still stop ``min_gap_m`` behind the vehicle ahead if it braked to a stop,
     with ``time_headway_s`` of reaction; counted only when the route passes that vehicle (the env's
     obstacle corridor is straight ahead, the route may turn away from it);
2. **Pedal**: PID on ``target - speed`` (m/s) -> ``throttle_brake``, changed by at most
   ``pedal_rate_per_s`` (bounds the jerk) unless a vehicle ahead sets the target; full brake at once
   when ``ttc_s`` drops below ``emergency_ttc_s``; the brake is held at a standstill.
3. **Steer**: pure pursuit (Coulter 1992) from the rear axle to the route point one lookahead away
   (``lookahead = min + gain * speed``, clipped): curvature ``2 y / d^2``, wheel angle
   ``atan(wheelbase * curvature)``, divided by the wheel angle at full lock.

    policy = make_classical_policy(cfg)        # cfg: the root Config
    result = evaluate(env, policy, episodes=10, seed=0)
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

from av_td3.baselines.config import ClassicalConfig, ClassicalSections
from av_td3.baselines.pure_pursuit import pure_pursuit_steer
from av_td3.envs.contract import LATERAL_SCALE_M, SPEED_SCALE_MPS, STEP_SECONDS

__all__ = ["ClassicalController", "SpeedPID", "make_classical_policy", "path_curvature", "lookahead_point"]

#: ``obstacle_distance_m`` at or above this means "nothing ahead" (the task reports 1e3), m.
_NO_OBSTACLE_M = 500.0
#: ``ttc_s`` at or above this means "not closing in" (the task reports 1e3), s.
_NO_TTC_S = 500.0
#: Waypoints closer than this to the previous one are duplicates (the goal repeats at the route's end), m.
_DUPLICATE_M = 0.1
#: Below this target and speed the car holds the brake instead of letting the PID hover around 0, m/s.
_STANDSTILL_MPS = 0.3
_HOLD_BRAKE = 0.3
#: A first waypoint closer than this to the route point beside the car gives a noisy curvature, m.
_JOIN_M = 0.5
#: Typical car length (the town's ego, a Tesla Model 3): centre-to-centre = bumper gap + one length, m.
_CAR_LENGTH_M = 4.69


class SpeedPID:
    """PID on the speed error, output clipped to ``throttle_brake`` in [-1, 1].

    Derivative on the measured speed (no kick when the target steps down before a bend); the integral
    (metres: m/s x s) is clamped to ``+-integral_limit_m`` and frozen while the output saturates in the
    direction it would grow (anti-windup).

    Args:
        kp: per m/s of error.  ki: per metre of integrated error.  kd: per m/s^2.
        integral_limit_m: clamp on the integral, m.  dt: control period, s.
    """

    def __init__(self, kp: float, ki: float, kd: float, integral_limit_m: float, dt: float = STEP_SECONDS):
        self.kp, self.ki, self.kd, self.limit, self.dt = kp, ki, kd, integral_limit_m, dt
        self.reset()

    def reset(self) -> None:
        self.integral = 0.0
        self._prev_speed: float | None = None

    def __call__(self, target_mps: float, speed_mps: float) -> float:
        error = target_mps - speed_mps
        accel = 0.0 if self._prev_speed is None else (speed_mps - self._prev_speed) / self.dt
        self._prev_speed = speed_mps
        unclamped = self.kp * error + self.ki * self.integral - self.kd * accel
        saturated = (unclamped >= 1.0 and error > 0) or (unclamped <= -1.0 and error < 0)
        if not saturated:
            self.integral = min(max(self.integral + error * self.dt, -self.limit), self.limit)
        return float(np.clip(self.kp * error + self.ki * self.integral - self.kd * accel, -1.0, 1.0))


def path_curvature(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unsigned curvature (1/m) of each three consecutive points of a polyline (the circle through them,
    Menger curvature ``4 * area / (a * b * c)``), and the distance along the polyline from its first point
    to where each triple starts (m): the bend is taken to begin there, one segment early (conservative).

    ``points``: ``(M, 2)`` metres; returns two ``(M - 2,)`` arrays (empty for fewer than 3 points).
    """
    if len(points) < 3:
        return np.zeros(0), np.zeros(0)
    p0, p1, p2 = points[:-2], points[1:-1], points[2:]
    a = np.linalg.norm(p1 - p0, axis=1)
    b = np.linalg.norm(p2 - p1, axis=1)
    c = np.linalg.norm(p2 - p0, axis=1)
    cross = np.abs((p1[:, 0] - p0[:, 0]) * (p2[:, 1] - p0[:, 1]) - (p1[:, 1] - p0[:, 1]) * (p2[:, 0] - p0[:, 0]))
    kappa = 2.0 * cross / np.maximum(a * b * c, 1e-9)
    start = np.concatenate([[0.0], np.cumsum(a)[:-1]])
    return kappa, start


def lookahead_point(points: np.ndarray, origin: np.ndarray, distance_m: float) -> np.ndarray:
    """The first point of the polyline ``points`` (M, 2) at ``distance_m`` from ``origin``, interpolated
    between waypoints; the last point when the whole polyline is closer."""
    dist = np.hypot(points[:, 0] - origin[0], points[:, 1] - origin[1])
    far = np.flatnonzero(dist >= distance_m)
    if len(far) == 0:
        return points[-1]
    k = int(far[0])
    if k == 0:
        return points[0]
    d0, d1 = dist[k - 1], dist[k]
    t = (distance_m - d0) / max(d1 - d0, 1e-9)
    return points[k - 1] + t * (points[k] - points[k - 1])


class ClassicalController:
    """PID + pure pursuit (see the module docstring); a stateful evaluation policy.

    ``evaluate`` calls ``reset(env)`` at each episode start (reads ``env.unwrapped.wheelbase_m`` and,
    when present, ``max_steer_rad``; else the config's values) and ``policy(obs, info)`` every step
    (``wants_info``). Called without ``info`` it drives without the obstacle logic.

    Args:
        cfg: the ``classical`` section.
        num_waypoints: N in the vector (``env.num_waypoints``).
        waypoint_scale_m: the waypoint normaliser (``env.num_waypoints * env.waypoint_spacing_m``), m.
        dt: control period, s.
    """

    wants_info = True

    def __init__(self, cfg: ClassicalConfig, num_waypoints: int, waypoint_scale_m: float, dt: float = STEP_SECONDS):
        self.cfg, self.n, self.scale, self.dt = cfg, int(num_waypoints), float(waypoint_scale_m), float(dt)
        self.cruise_mps = cfg.target_speed_kmh / 3.6
        self.pid = SpeedPID(cfg.speed_kp, cfg.speed_ki, cfg.speed_kd, cfg.integral_limit_m, dt)
        self.wheelbase_m = cfg.wheelbase_m
        self.max_steer_rad = math.radians(cfg.max_steer_deg)
        self._pedal = 0.0  # last throttle_brake, for the rate limit
        #: Last step's decomposition, for debugging and tests: speeds in m/s, steer in [-1, 1].
        self.last: dict[str, float] = {}

    def reset(self, env: Any = None) -> None:
        """New episode: clear the PID and read the vehicle's geometry from the env when it has it."""
        self.pid.reset()
        self._pedal = 0.0
        base = getattr(env, "unwrapped", env)
        self.wheelbase_m = float(getattr(base, "wheelbase_m", None) or self.cfg.wheelbase_m)
        self.max_steer_rad = float(getattr(base, "max_steer_rad", None) or math.radians(self.cfg.max_steer_deg))

    def __call__(self, obs: Mapping[str, np.ndarray] | np.ndarray, info: Mapping[str, Any] | None = None) -> np.ndarray:
        vec = np.asarray(obs["vector"] if isinstance(obs, Mapping) else obs, dtype=np.float64)
        if vec.shape != (3 + 2 * self.n,):
            raise ValueError(f"expected the contract vector of shape ({3 + 2 * self.n},), got {vec.shape}")
        speed = float(vec[0]) * SPEED_SCALE_MPS
        waypoints = _dedupe(vec[3:].reshape(self.n, 2) * self.scale)
        kappa, along = self.route_curvature(waypoints, float(vec[1]) * LATERAL_SCALE_M)

        v_bend = self.bend_speed(kappa, along)
        v_obstacle, ttc = self.obstacle_speed(waypoints, speed, info)
        target = min(self.cruise_mps, v_bend, v_obstacle)
        pedal = self.pid(target, speed)
        if target < _STANDSTILL_MPS and speed < _STANDSTILL_MPS:  # told to stop and stopped: hold the brake
            self.pid.integral, pedal = 0.0, min(pedal, -_HOLD_BRAKE)
        if v_obstacle > min(self.cruise_mps, v_bend):  # comfort only when no vehicle sets the speed
            step = self.cfg.pedal_rate_per_s * self.dt
            pedal = min(max(pedal, self._pedal - step), self._pedal + step)
        if ttc < self.cfg.emergency_ttc_s:
            pedal = -1.0
        self._pedal = pedal
        steer = self.steer(waypoints, speed)
        self.last = {"target_mps": target, "bend_mps": v_bend, "obstacle_mps": v_obstacle, "ttc_s": ttc,
                     "steer": steer, "pedal": pedal}
        return np.array([steer, pedal], dtype=np.float32)

    # ------------------------------------------------------------------------------------------------
    def steer(self, waypoints: np.ndarray, speed_mps: float) -> float:
        """Pure pursuit from the rear axle (half a wheelbase behind the centre the waypoints are measured from)."""
        c = self.cfg
        lookahead = min(c.min_lookahead_m + c.lookahead_gain_s * speed_mps, c.max_lookahead_m)
        rear = np.array([-0.5 * self.wheelbase_m, 0.0])
        gx, gy = lookahead_point(waypoints, rear, lookahead) - rear
        return float(np.clip(pure_pursuit_steer(gy, gx * gx + gy * gy, self.wheelbase_m, self.max_steer_rad), -1.0, 1.0))

    @staticmethod
    def route_curvature(waypoints: np.ndarray, lateral_m: float) -> tuple[np.ndarray, np.ndarray]:
        """Curvature of the route (1/m) along the waypoints and the distance from the car to each bend (m).

        The polyline starts at the route point beside the car (``lateral_m``: the car's signed offset,
        positive = right of the route), not at the car, whose offset would read as a bend; so the bend
        the car is in stays in view until it is behind.
        """
        path = np.vstack([[0.0, -lateral_m], waypoints])
        if np.hypot(*(waypoints[0] - path[0])) < _JOIN_M:
            path = waypoints
        return path_curvature(path)

    def bend_speed(self, kappa: np.ndarray, along: np.ndarray) -> float:
        """Highest speed now from which ``comfort_decel`` reaches every upcoming bend's limit in time, m/s."""
        if kappa.size == 0:
            return math.inf
        c = self.cfg
        v_bend_sq = c.max_lateral_accel_mps2 / np.maximum(kappa, 1e-6)
        return float(np.sqrt(np.min(v_bend_sq + 2.0 * c.comfort_decel_mps2 * along)))

    def obstacle_speed(self, waypoints: np.ndarray, speed_mps: float,
                       info: Mapping[str, Any] | None) -> tuple[float, float]:
        """``(speed limit for the vehicle ahead (m/s), ttc (s))``; ``(inf, inf)`` when none is on the route.

        The limit ``v`` solves ``gap - min_gap + v_lead^2 / (2 decel) = headway * v + v^2 / (2 decel)``: if
        the lead braked at ``decel`` to a stop, so could the car, ``min_gap`` behind it after ``headway``
        seconds of reaction (in steady following: gap = min_gap + headway * v). The lead's speed along
        the car's heading comes from the TTC (``closing speed = gap / ttc``); without a TTC it is not
        closing in and is taken as the car's own.
        """
        if not info:
            return math.inf, math.inf
        gap = float(info.get("obstacle_distance_m", math.inf))
        ttc = float(info.get("ttc_s", math.inf))
        if not gap < _NO_OBSTACLE_M or not self._on_route(waypoints, gap):
            return math.inf, math.inf
        c = self.cfg
        b, h = c.comfort_decel_mps2, c.time_headway_s
        lead = max(speed_mps - gap / ttc, 0.0) if 0.0 < ttc < _NO_TTC_S else speed_mps
        room = gap - c.min_gap_m + lead * lead / (2.0 * b) if gap > c.min_gap_m else 0.0
        return b * (math.sqrt(h * h + 2.0 * room / b) - h), ttc

    def _on_route(self, waypoints: np.ndarray, gap_m: float) -> bool:
        """Whether the route passes within ``route_corridor_m`` of the obstacle ``gap_m`` in front of the bumper
        (its lateral place in the env's corridor is unknown: taken on the car's heading line).

        The env's obstacle corridor points along the car's heading; in a bend the route leaves it, and a
        vehicle straight ahead (parked, oncoming, waiting at a junction) is then not in the car's way.
        Beyond the last waypoint the route is extended straight along its last segment.
        """
        # The obstacle's centre (from the car's centre), not its rear: in a bend, the rear of a car waiting in
        # the other lane can lie closer to the route than its body does. Tuned on the town (docs/results.md).
        ahead = np.array([gap_m + _CAR_LENGTH_M, 0.0])
        return _distance_to_polyline(ahead, np.vstack([[0.0, 0.0], waypoints])) <= self.cfg.route_corridor_m


def _distance_to_polyline(point: np.ndarray, points: np.ndarray) -> float:
    """Distance (m) from ``point`` to the polyline ``points`` (M, 2), its last segment extended as a ray."""
    a, b = points[:-1], points[1:]
    ab = b - a
    length_sq = np.maximum(np.einsum("ij,ij->i", ab, ab), 1e-12)
    t = np.einsum("ij,ij->i", point - a, ab) / length_sq
    t = np.clip(t, 0.0, None)
    t[:-1] = np.minimum(t[:-1], 1.0)  # every segment is bounded except the last (the ray)
    nearest = a + t[:, None] * ab
    return float(np.min(np.hypot(nearest[:, 0] - point[0], nearest[:, 1] - point[1])))


def _dedupe(points: np.ndarray) -> np.ndarray:
    """Drop repeated waypoints (near the route's end the goal fills the rest of the list)."""
    keep = np.ones(len(points), dtype=bool)
    keep[1:] = np.linalg.norm(np.diff(points, axis=0), axis=1) > _DUPLICATE_M
    return points[keep]


def make_classical_policy(cfg: Any = None) -> ClassicalController:
    """The classical controller for ``cfg`` (the root ``Config``, a nested dict or None): its ``classical``
    and ``env`` sections (``ClassicalSections``)."""
    cfg = ClassicalSections.from_any(cfg)
    env = cfg.env
    return ClassicalController(cfg.classical, env.num_waypoints, env.num_waypoints * env.waypoint_spacing_m)
