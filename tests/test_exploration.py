"""Random exploration moves the car forward; the noise schedule decays as configured."""

import numpy as np

from av_td3.config import ExplorationConfig
from av_td3.training.exploration import NoiseSchedule, RandomExplorer


def test_random_actions_are_throttle_biased_held_and_in_range():
    ex = RandomExplorer(ExplorationConfig(action_repeat=4), np.random.default_rng(0))
    actions = np.stack([ex.sample() for _ in range(4000)])
    assert actions.min() >= -1 and actions.max() <= 1
    assert actions[:, 1].mean() > 0.3  # net forward throttle: the car leaves the start
    assert (actions[:, 1] < 0).mean() > 0.02  # but it also brakes sometimes
    assert abs(actions[:, 0].mean()) < 0.05  # no steering bias
    assert (actions[0] == actions[3]).all() and not (actions[3] == actions[4]).all()


def test_explorer_state_round_trip():
    a = RandomExplorer(ExplorationConfig(), np.random.default_rng(1))
    a.sample()
    b = RandomExplorer(ExplorationConfig(), np.random.default_rng(1))
    b.sample()
    b.load_state_dict(a.state_dict())
    assert (a.sample() == b.sample()).all()


def test_noise_schedule():
    const = NoiseSchedule(0.1, None, 100, start=50)
    assert const(0) == const(10_000) == 0.1
    decay = NoiseSchedule(0.3, 0.1, 100, start=50)
    assert decay(50) == 0.3
    assert abs(decay(100) - 0.2) < 1e-12
    assert abs(decay(1000) - 0.1) < 1e-12
