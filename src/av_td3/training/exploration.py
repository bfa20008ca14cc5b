"""How the agent explores: random actions before ``start_timesteps``, then policy + decaying noise.

Why not uniform random actions: with ``throttle_brake ~ U(-1, 1)`` the mean pedal is zero and the car
never leaves the start; forward-only throttle with uniform steer drives in tight circles and biased
earlier policies into hard turns (docs/design.md §5). So random exploration here is

* throttle-biased: ``throttle_brake ~ N(random_throttle_mean, random_throttle_std)``, mostly throttle
  but with some braking;
* steer centred on zero with a moderate spread, ``N(0, random_steer_std)``;
* held for ``action_repeat`` steps, so the car drives visible arcs instead of jittering in place.
"""

from __future__ import annotations

import numpy as np

from av_td3.training.config import ExplorationConfig


class RandomExplorer:
    """Temporally-correlated, throttle-biased random actions ``[steer, throttle_brake]`` in [-1, 1]."""

    def __init__(self, cfg: ExplorationConfig, rng: np.random.Generator):
        self.cfg = cfg
        self.rng = rng
        self._held = np.zeros(2, dtype=np.float32)
        self._left = 0

    def reset(self) -> None:
        """Forget the held action (called at episode start)."""
        self._left = 0

    def sample(self) -> np.ndarray:
        if self._left == 0:
            steer = self.rng.normal(0.0, self.cfg.random_steer_std)
            pedal = self.rng.normal(self.cfg.random_throttle_mean, self.cfg.random_throttle_std)
            self._held = np.clip(np.array([steer, pedal], dtype=np.float32), -1.0, 1.0)
            self._left = self.cfg.action_repeat
        self._left -= 1
        return self._held.copy()

    def state_dict(self) -> dict:
        return {"held": self._held.tolist(), "left": self._left}

    def load_state_dict(self, state: dict) -> None:
        self._held = np.asarray(state["held"], dtype=np.float32)
        self._left = int(state["left"])


class NoiseSchedule:
    """Gaussian exploration-noise std after ``start_timesteps``: constant, or linear decay.

    ``std(t) = expl_noise`` when ``expl_noise_final`` is None, else it moves linearly from ``expl_noise``
    at ``start`` to ``expl_noise_final`` over ``decay_steps`` env steps and stays there.
    """

    def __init__(self, initial: float, final: float | None, decay_steps: int, start: int):
        self.initial = initial
        self.final = initial if final is None else final
        self.decay_steps = decay_steps
        self.start = start

    def __call__(self, t: int) -> float:
        frac = min(max(t - self.start, 0) / self.decay_steps, 1.0)
        return self.initial + frac * (self.final - self.initial)
