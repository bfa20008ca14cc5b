"""The shared reward: documented ranges, weights from config, and the shape that makes the target
speed the best. (Whole-episode design-rule checks on the town live in test_town_reward_rule.py.)"""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from av_td3.envs.config import RewardConfig
from av_td3.envs.reward import COMPONENTS, DrivingReward, RewardInputs

TARGET = 30.0 / 3.6


def _reward(**weights) -> DrivingReward:
    return DrivingReward(RewardConfig(version=1, **weights), TARGET, 3.0)


inputs = st.builds(
    RewardInputs,
    speed_mps=st.floats(0.0, 60.0),
    heading_error_rad=st.floats(-math.pi, math.pi),
    lateral_deviation_m=st.floats(-20.0, 20.0),
    progress_delta_m=st.floats(-10.0, 10.0),
    jerk_mps3=st.floats(-1e4, 1e4),
    steer_change=st.floats(0.0, 2.0),
    collision=st.booleans(),
    off_road=st.booleans(),
    lane_invasion=st.booleans(),
    ttc_s=st.floats(0.0, 1e3),
    goal_reached=st.booleans(),
)


@settings(max_examples=200, deadline=None)
@given(inputs)
def test_terms_stay_in_documented_ranges_and_sum_to_total(x):
    fn = _reward()
    raw = fn.raw_terms(x)
    cfg = fn.cfg
    assert -1.0 <= raw["efficiency"] <= 1.0
    assert -2.0 <= raw["progress"] <= 2.0
    assert -1.0 <= raw["lane_keeping"] <= 0.0
    assert -1.0 <= raw["comfort"] <= 0.0
    worst = cfg.collision_penalty + cfg.off_road_penalty + cfg.lane_invasion_penalty + 1.0
    assert -worst <= raw["safety"] <= 0.0
    assert raw["goal"] == (1.0 if x.goal_reached else 0.0)
    total, comps = fn(x)
    assert tuple(comps) == COMPONENTS
    assert total == pytest.approx(sum(comps.values()))


def test_every_weight_scales_its_term():
    x = RewardInputs(
        speed_mps=5.0, heading_error_rad=0.3, lateral_deviation_m=0.8, progress_delta_m=0.3, jerk_mps3=20.0,
        steer_change=0.4, collision=True, off_road=True, lane_invasion=True, ttc_s=1.0, goal_reached=True,
    )
    _, base = _reward()(x)
    assert all(v != 0.0 for v in base.values())
    for name, field in [("efficiency", "efficiency"), ("progress", "progress"), ("lane_keeping", "lane_keeping"),
                        ("comfort", "comfort"), ("safety", "safety"), ("goal", "goal_bonus")]:
        default = RewardConfig.model_fields[field].default
        _, doubled = _reward(**{field: 2 * default})(x)
        assert doubled[name] == pytest.approx(2 * base[name])
        _, zero = _reward(**{field: 0.0})(x)
        assert zero[name] == 0.0
    # Event penalties and the TTC threshold are config too.
    _, c = _reward(collision_penalty=0.0, off_road_penalty=0.0, lane_invasion_penalty=0.0)(x)
    assert c["safety"] == pytest.approx(-(1.0 - 1.0 / 2.0))  # proximity only: ttc 1 s vs threshold 2 s
    _, c = _reward(collision_penalty=0.0, off_road_penalty=0.0, lane_invasion_penalty=0.0, ttc_threshold_s=0.5)(x)
    assert c["safety"] == 0.0


def test_target_speed_is_best_per_metre_and_per_step():
    fn = _reward()

    def per_metre(v):
        x = RewardInputs(speed_mps=v, heading_error_rad=0.0, lateral_deviation_m=0.0, progress_delta_m=v * 0.05)
        return fn(x)[0] / (v * 0.05)

    speeds = [0.25 * TARGET, 0.5 * TARGET, 0.8 * TARGET, 1.2 * TARGET, 1.6 * TARGET]
    assert all(per_metre(TARGET) > per_metre(v) for v in speeds)
    step = lambda v: fn(RewardInputs(speed_mps=v, heading_error_rad=0.0, lateral_deviation_m=0.0,  # noqa: E731
                                     progress_delta_m=v * 0.05))[0]
    assert all(step(TARGET) > step(v) for v in speeds)
    assert step(0.0) == 0.0


def test_speed_across_the_route_earns_nothing_and_left_right_are_symmetric():
    fn = _reward()
    sideways = fn.raw_terms(RewardInputs(speed_mps=TARGET, heading_error_rad=math.pi / 2, lateral_deviation_m=0.0,
                                         progress_delta_m=0.0))
    assert sideways["efficiency"] == pytest.approx(0.0, abs=1e-12)
    backwards = fn.raw_terms(RewardInputs(speed_mps=TARGET, heading_error_rad=math.pi, lateral_deviation_m=0.0,
                                          progress_delta_m=-0.4))
    assert backwards["efficiency"] == pytest.approx(-1.0) and backwards["progress"] < 0
    left = fn.raw_terms(RewardInputs(speed_mps=5.0, heading_error_rad=0.0, lateral_deviation_m=-1.0, progress_delta_m=0))
    right = fn.raw_terms(RewardInputs(speed_mps=5.0, heading_error_rad=0.0, lateral_deviation_m=1.0, progress_delta_m=0))
    assert left["lane_keeping"] == right["lane_keeping"] < 0


def test_no_single_event_dwarfs_driving():
    fn = _reward()
    good_step = fn(RewardInputs(speed_mps=TARGET, heading_error_rad=0.0, lateral_deviation_m=0.0,
                                progress_delta_m=TARGET * 0.05))[0]
    crash = fn(RewardInputs(speed_mps=0.0, heading_error_rad=0.0, lateral_deviation_m=0.0, progress_delta_m=0.0,
                            collision=True))[0]
    assert good_step > 1.0
    assert 1.0 < -crash / good_step < 20.0  # a deterrent, not orders of magnitude


def test_bad_construction():
    with pytest.raises(ValueError):
        DrivingReward(RewardConfig(), 0.0, 3.0)
