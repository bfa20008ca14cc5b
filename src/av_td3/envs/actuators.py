"""Actuator dynamics shared by every backend: the applied action follows the commanded one at a bounded rate.

    limiter = ActuatorLimiter(cfg.env.actuator, dt=STEP_SECONDS)
    limiter.reset()                       # at episode start: wheels straight, pedals released
    applied = limiter(commanded_action)   # (2,) [steer, throttle_brake] -> (2,) what the car executes

Why here and not in the agent: a steering rack or a brake pedal cannot move from one end to the other in
0.05 s, in a real car or in CARLA's physics, so the environment is where the limit belongs; the policy
still chooses any action in [-1, 1] and the replay buffer stores what it chose (the limit is part of the
dynamics it learns). The applied action is not in the observation (the contract's vector is fixed at 23
values), so the state is Markov only up to the catch-up time (``2 / rate`` seconds at most, 1 s by default);
the frame stack shows the motion it causes.
"""

from __future__ import annotations

import numpy as np

from av_td3.envs.config import ActuatorConfig

__all__ = ["ActuatorLimiter"]


class ActuatorLimiter:
    """Rate-limits ``[steer, throttle_brake]``: each moves at most ``rate * dt`` per step toward the command.

    Args:
        cfg: ``env.actuator`` (``steer_rate_per_s``, ``pedal_rate_per_s``; ``None`` = no limit).
        dt: seconds per step.
    """

    def __init__(self, cfg: ActuatorConfig, dt: float):
        inf = float("inf")
        self.max_steer_step = inf if cfg.steer_rate_per_s is None else cfg.steer_rate_per_s * dt
        self.max_pedal_step = inf if cfg.pedal_rate_per_s is None else cfg.pedal_rate_per_s * dt
        self.steer = self.pedal = 0.0

    def reset(self) -> np.ndarray:
        """Centre the steering and release the pedals; returns the applied action (zeros)."""
        self.steer = self.pedal = 0.0
        return np.zeros(2)

    def __call__(self, command: np.ndarray) -> np.ndarray:
        """The action applied this step, given the ``(2,)`` command clipped to [-1, 1]."""
        # plain floats: two numbers per env step do not pay for numpy's per-call overhead
        self.steer = _toward(self.steer, float(command[0]), self.max_steer_step)
        self.pedal = _toward(self.pedal, float(command[1]), self.max_pedal_step)
        return np.array([self.steer, self.pedal])


def _toward(current: float, command: float, max_step: float) -> float:
    """``current`` moved toward ``command`` (clipped to [-1, 1]) by at most ``max_step``."""
    target = min(max(command, -1.0), 1.0)
    return current + min(max(target - current, -max_step), max_step)
