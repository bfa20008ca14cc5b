"""Actuator dynamics (``env.actuator``): the applied action follows the command at a bounded rate."""

from __future__ import annotations

import numpy as np
import pytest

from av_td3.config import Config
from av_td3.envs.actuators import ActuatorLimiter
from av_td3.envs.config import ActuatorConfig
from av_td3.envs.town.env import TownEnv


def test_rate_limit_holds_and_reaches_the_command():
    lim = ActuatorLimiter(ActuatorConfig(steer_rate_per_s=2.0, pedal_rate_per_s=4.0), dt=0.05)
    lim.reset()
    seen = [lim(np.array([1.0, -1.0])) for _ in range(12)]
    steps = np.diff(np.vstack([np.zeros(2), *seen]), axis=0)
    assert np.all(np.abs(steps[:, 0]) <= 0.1 + 1e-12) and np.all(np.abs(steps[:, 1]) <= 0.2 + 1e-12)
    assert seen[0] == pytest.approx([0.1, -0.2])
    assert seen[-1] == pytest.approx([1.0, -1.0])  # 10 and 5 steps to get there
    assert lim(np.array([5.0, 5.0])) == pytest.approx([1.0, -0.8])  # commands are clipped to [-1, 1]
    assert lim.reset() == pytest.approx([0.0, 0.0])


def test_none_means_ideal_actuators():
    lim = ActuatorLimiter(ActuatorConfig(steer_rate_per_s=None, pedal_rate_per_s=None), dt=0.05)
    assert lim(np.array([-0.7, 0.9])) == pytest.approx([-0.7, 0.9])


def _accels(config) -> np.ndarray:
    env = TownEnv(npc_count=0, route="default", config=config)
    env.reset(seed=0)
    speeds = []
    for t in range(60):
        _, _, _, _, info = env.step(np.array([0.0, 1.0 if t < 40 else -1.0], dtype=np.float32))
        speeds.append(info["speed_kmh"] / 3.6)
    return np.diff(speeds) / 0.05


def test_the_town_car_feels_the_limit():
    """Full throttle then full brake: with the limit the acceleration ramps (bounded jerk), without it jumps."""
    limited = _accels(None)
    ideal = _accels({"env": {"actuator": {"steer_rate_per_s": None, "pedal_rate_per_s": None}}})
    assert np.abs(np.diff(ideal)).max() > 10.0  # 5 -> -8 m/s^2 in one step
    # 0.1 of pedal per step moves the acceleration by at most 0.1 * 8 m/s^2 (+ drag change)
    assert np.abs(np.diff(limited)).max() < 1.0
    assert Config.from_any(None).env.actuator.pedal_rate_per_s == 2.0
