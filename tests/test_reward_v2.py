"""Reward version 2 (``ProgressReward``): progress scaled down by soft penalties, infractions terminal.
Unit checks of each factor on single steps; whole-episode checks live in test_reward_v2_rule.py."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from av_td3.config import Config, ConfigError
from av_td3.envs.config import RewardConfig
from av_td3.envs.reward import COMPONENTS, DrivingReward, ProgressReward, RewardInputs, make_reward

TARGET = 30.0 / 3.6


def _r(**cfg) -> ProgressReward:
    return ProgressReward(RewardConfig(**cfg), TARGET)


def _step(**kw) -> RewardInputs:
    base = dict(speed_mps=TARGET, heading_error_rad=0.0, lateral_deviation_m=0.0, progress_delta_m=0.4)
    return RewardInputs(**{**base, **kw})


def test_clean_step_pays_exactly_the_progress():
    total, comps = _r()(_step())
    assert total == pytest.approx(0.4) and comps["progress"] == pytest.approx(0.4)
    assert all(comps[k] == 0.0 for k in COMPONENTS if k != "progress")


@pytest.mark.parametrize(
    "change, factor",
    [
        (dict(lateral_deviation_m=0.875), 1 - 0.5 * 0.5),        # half the lane-centre scale
        (dict(lateral_deviation_m=-5.0), 0.5),                    # saturated
        (dict(lane_invasion=True), 0.0),                          # a line between the wheels earns nothing
        (dict(speed_mps=1.25 * TARGET), 0.5),                     # 25% over the target, slope 2
        (dict(ttc_s=1.0), 0.5),                                   # half the 2 s threshold
        (dict(lon_accel_mps2=3.0), 1 - 1 / 5),                    # one nuPlan limit of five exceeded
        (dict(lon_accel_mps2=-5.0, yaw_rate_radps=1.0, jerk_mps3=5.0), 1 - 3 / 5),
    ],
)
def test_each_soft_penalty_scales_the_progress(change, factor):
    total, comps = _r()(_step(**change))
    assert total == pytest.approx(0.4 * factor)
    assert sum(comps.values()) == pytest.approx(total)


def test_factors_multiply_and_are_attributed_in_order():
    total, comps = _r()(_step(lateral_deviation_m=0.875, speed_mps=1.25 * TARGET, ttc_s=1.0))
    assert total == pytest.approx(0.4 * 0.75 * 0.5 * 0.5)
    assert comps["lane_keeping"] == pytest.approx(-0.4 * 0.25)
    assert comps["efficiency"] == pytest.approx(-0.4 * 0.75 * 0.5)
    assert comps["safety"] == pytest.approx(-0.4 * 0.75 * 0.5 * 0.5)


def test_infractions_pay_the_penalty_once_and_backward_progress_is_not_discounted():
    total, comps = _r(infraction_penalty=7.0)(_step(collision=True, progress_delta_m=0.0))
    assert total == pytest.approx(-7.0) and comps["safety"] == pytest.approx(-7.0)
    total, _ = _r()(_step(off_road=True, progress_delta_m=-1.0, lateral_deviation_m=5.0))
    assert total == pytest.approx(-1.0 - RewardConfig().infraction_penalty)
    assert _r()(_step(goal_reached=True))[0] == pytest.approx(0.4 + 10.0)


def test_weights_are_read():
    assert _r(progress=2.0)(_step())[0] == pytest.approx(0.8)
    assert _r(lane_marking_penalty=0.25)(_step(lane_invasion=True))[0] == pytest.approx(0.3)
    assert _r(overspeed_penalty=0.0)(_step(speed_mps=3 * TARGET))[0] == pytest.approx(0.4)
    assert _r(ttc_penalty=0.0)(_step(ttc_s=0.1))[0] == pytest.approx(0.4)
    assert _r(comfort_penalty=0.0)(_step(lon_accel_mps2=9.0))[0] == pytest.approx(0.4)
    assert _r(lane_centre_scale_m=0.5, lane_centre_penalty=1.0)(_step(lateral_deviation_m=0.25))[0] == pytest.approx(0.2)
    assert _r(ttc_threshold_s=4.0)(_step(ttc_s=1.0))[0] == pytest.approx(0.4 * 0.25)


@settings(max_examples=200, deadline=None)
@given(st.builds(RewardInputs, speed_mps=st.floats(0.0, 60.0), heading_error_rad=st.floats(-math.pi, math.pi),
                 lateral_deviation_m=st.floats(-20.0, 20.0), progress_delta_m=st.floats(-10.0, 10.0),
                 jerk_mps3=st.floats(-1e4, 1e4), lane_invasion=st.booleans(), ttc_s=st.floats(0.0, 1e3),
                 lon_accel_mps2=st.floats(-20, 20), lat_accel_mps2=st.floats(-20, 20),
                 yaw_rate_radps=st.floats(-5, 5), jerk_magnitude_mps3=st.floats(0, 1e4)))
def test_never_more_than_the_clean_progress(x):
    total, comps = _r()(x)
    assert sum(comps.values()) == pytest.approx(total)
    assert total <= max(min(x.progress_delta_m, 2.0), -2.0) + 1e-9


def test_version_selects_the_reward_and_stray_keys_are_errors():
    assert isinstance(make_reward(RewardConfig(), TARGET, 3.0), ProgressReward)
    assert isinstance(make_reward(RewardConfig(version=1), TARGET, 3.0), DrivingReward)
    with pytest.raises(ConfigError, match=r"reward.efficiency is read only by reward.version 1"):
        Config.from_any({"reward": {"efficiency": 2.0}})
    with pytest.raises(ConfigError, match=r"reward.ttc_penalty is read only by reward.version 2"):
        Config.from_any({"reward": {"version": 1, "ttc_penalty": 0.5}})
    # A saved config lists every key at its value: unchanged keys of the other version are fine.
    Config.from_any(Config.from_any({"reward": {"version": 1}}).to_dict())
