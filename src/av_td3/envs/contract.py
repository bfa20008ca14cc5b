"""The observation / action / info contract (v1) that every driving backend shares.

Code written against this module (agents, buffer, trainer, evaluation, baselines) never asks which
backend it runs on. See docs/design.md §2.

Observation: ``gymnasium.spaces.Dict`` with
    ``image``  uint8  ``(k, H, W)``, default ``(4, 84, 84)``: the last k grayscale camera frames, oldest
               first; at reset the stack is filled with the first frame. No normalisation here: the
               network scales uint8 to floats.
    ``vector`` float32 ``(3 + 2N,)``, default N = 10 -> 23 values::

        [speed / SPEED_SCALE_MPS,
         signed lateral deviation from the route's lane centre (positive = right) / LATERAL_SCALE_M,
         heading error (vehicle yaw - route tangent, wrapped to [-pi, pi]) / pi,
         x_1, y_1, ..., x_N, y_N]   # N route waypoints ahead in the vehicle frame
                                   # (x forward, y right) / lookahead distance

Action: ``Box(-1, 1, (2,), float32)`` = ``[steer, throttle_brake]``; ``throttle_brake >= 0`` is throttle,
``< 0`` is brake of the same magnitude. One step is ``STEP_SECONDS`` of simulated time.
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np
from gymnasium import spaces

#: Simulated time per env step (20 Hz, synchronous), seconds.
STEP_SECONDS = 0.05
#: Speed normaliser for ``vector[0]``, m/s (108 km/h maps to 1.0).
SPEED_SCALE_MPS = 30.0
#: Lateral-deviation normaliser for ``vector[1]``, metres: one lane width, so +-1 means the ego's centre
#: sits on the neighbouring lane's centre line.
LATERAL_SCALE_M = 3.5
#: Default number of route waypoints in the vector.
NUM_WAYPOINTS = 10
#: Default camera stack: 4 grayscale frames of 84 x 84 pixels.
IMAGE_SHAPE = (4, 84, 84)

#: NPC vehicles per ``--scenario`` (the seed's numbering), on every backend.
SCENARIO_NPCS = {0: 20, 1: 50, 2: 100}

#: Keys present in ``info`` after every ``reset()`` and ``step()``, on every backend.
INFO_KEYS = (
    "speed_kmh",
    "lateral_deviation_m",
    "heading_error_rad",
    "collision",
    "lane_invasion",
    "off_road",
    "route_completion",
    "distance_m",
    "success",
    "termination_reason",
    "reward_components",
)

#: Values of ``info["termination_reason"]``: why the episode ended, or ``"none"`` while it runs.
TERMINATION_REASONS = ("none", "collision", "off_road", "lane_invasion", "goal_reached", "time_limit", "stalled",
                       "error")


def vector_dim(num_waypoints: int = NUM_WAYPOINTS) -> int:
    """Length of the ``vector`` observation: 3 + 2 * num_waypoints (23 by default)."""
    return 3 + 2 * num_waypoints


def make_observation_space(
    frame_stack: int = IMAGE_SHAPE[0],
    height: int = IMAGE_SHAPE[1],
    width: int = IMAGE_SHAPE[2],
    num_waypoints: int = NUM_WAYPOINTS,
) -> spaces.Dict:
    """The contract's ``Dict(image=uint8 (k, H, W), vector=float32 (3 + 2N,))`` observation space.

    Vector bounds are loose (+-inf would break some wrappers): every entry is normalised so that
    ordinary driving stays within +-1, with head-room for waypoints beyond the lookahead.
    """
    return spaces.Dict(
        {
            "image": spaces.Box(0, 255, (frame_stack, height, width), np.uint8),
            "vector": spaces.Box(-10.0, 10.0, (vector_dim(num_waypoints),), np.float32),
        }
    )


def make_action_space() -> spaces.Box:
    """``Box(-1, 1, (2,), float32)``: ``[steer, throttle_brake]``."""
    return spaces.Box(-1.0, 1.0, (2,), np.float32)


def action_to_controls(action: np.ndarray) -> tuple[float, float, float]:
    """Map a contract action to ``(steer, throttle, brake)``, steer in [-1, 1], throttle/brake in [0, 1].

    Out-of-range values are clipped, so a policy with unbounded outputs cannot command more than full
    lock, throttle or brake.
    """
    steer = float(np.clip(action[0], -1.0, 1.0))
    pedal = float(np.clip(action[1], -1.0, 1.0))
    return steer, max(pedal, 0.0), max(-pedal, 0.0)


def wrap_angle(angle: float | np.ndarray) -> float | np.ndarray:
    """Wrap radians to [-pi, pi)."""
    return (np.asarray(angle) + math.pi) % (2.0 * math.pi) - math.pi


def build_vector(
    speed_mps: float,
    lateral_deviation_m: float,
    heading_error_rad: float,
    waypoints_vehicle_frame: np.ndarray,
    lookahead_m: float,
) -> np.ndarray:
    """Assemble the contract's ``vector`` observation.

    Args:
        speed_mps: ego speed, m/s.
        lateral_deviation_m: signed distance of the ego from the route's lane centre, m, positive = right.
        heading_error_rad: ego yaw minus route tangent, radians (wrapped here).
        waypoints_vehicle_frame: ``(N, 2)`` next route waypoints as (x forward, y right), metres.
        lookahead_m: distance that normalises waypoint coordinates, m.

    Returns:
        ``(3 + 2N,)`` float32.
    """
    head = np.array(
        [
            speed_mps / SPEED_SCALE_MPS,
            lateral_deviation_m / LATERAL_SCALE_M,
            float(wrap_angle(heading_error_rad)) / math.pi,
        ],
        dtype=np.float32,
    )
    waypoints = (np.asarray(waypoints_vehicle_frame, dtype=np.float32) / lookahead_m).reshape(-1)
    return np.clip(np.concatenate([head, waypoints]), -10.0, 10.0).astype(np.float32)


class FrameStack:
    """Keeps the last k grayscale frames, oldest first; ``reset`` fills the stack with the first frame."""

    def __init__(self, k: int):
        if k < 1:
            raise ValueError(f"frame_stack must be >= 1, got {k}")
        self.k = k
        self._frames: deque[np.ndarray] = deque(maxlen=k)

    def reset(self, frame: np.ndarray) -> np.ndarray:
        self._frames.clear()
        for _ in range(self.k):
            self._frames.append(frame)
        return self.stacked()

    def push(self, frame: np.ndarray) -> np.ndarray:
        self._frames.append(frame)
        return self.stacked()

    def stacked(self) -> np.ndarray:
        """``(k, H, W)`` uint8, a fresh array (safe to store)."""
        return np.stack(self._frames, axis=0)
