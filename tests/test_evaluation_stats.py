"""Confidence intervals and aggregate metrics of evaluation episodes."""

import math

import numpy as np
import pytest

from av_td3.training.evaluation import EpisodeMetrics, EvaluationResult, mean_ci, per_km_ci, proportion_ci


def test_mean_ci_matches_t_interval():
    m, lo, hi = mean_ci([1.0, 2.0, 3.0, 4.0])
    # t(0.975, 3) = 3.1824; s = 1.2910; half = 3.1824 * 1.2910 / 2 = 2.0543
    assert m == pytest.approx(2.5)
    assert hi - m == pytest.approx(2.0543, abs=1e-3)
    assert m - lo == pytest.approx(hi - m)


def test_mean_ci_degenerate():
    assert mean_ci([5.0]) == (5.0, 5.0, 5.0)
    assert all(math.isnan(v) for v in mean_ci([]))


def test_wilson_interval_at_extremes():
    p, lo, hi = proportion_ci(0, 10)
    assert p == 0 and lo == 0 and 0.2 < hi < 0.35  # Wilson upper bound for 0/10 is 0.278
    p, lo, hi = proportion_ci(10, 10)
    assert p == 1 and hi == pytest.approx(1) and 0.65 < lo < 0.8


def test_per_km_rate():
    rate, lo, hi = per_km_ci(np.array([1.0, 0.0, 1.0]), np.array([500.0, 500.0, 1000.0]))
    assert rate == pytest.approx(1.0)  # 2 events over 2 km
    assert lo <= rate <= hi


def _episode(seed, success, reward, dist, collisions=0):
    return EpisodeMetrics(seed=seed, reward=reward, length=100, success=success, route_completion=1.0 if success else 0.5,
                          mean_speed_kmh=20.0, distance_m=dist, collisions=collisions, lane_invasions=1, off_road=False,
                          mean_abs_lateral_deviation_m=0.2, mean_abs_jerk_mps3=1.0, min_ttc_s=math.inf,
                          termination_reason="goal_reached" if success else "collision")


def test_aggregate_and_markdown():
    res = EvaluationResult([_episode(0, True, 100.0, 1000.0), _episode(1, False, 20.0, 500.0, collisions=1)])
    agg = res.aggregate()
    assert agg["success_rate"]["mean"] == 0.5
    assert agg["collisions_per_km"]["mean"] == pytest.approx(1 / 1.5)
    assert agg["lane_invasions_per_km"]["mean"] == pytest.approx(2 / 1.5)
    assert agg["episode_reward"]["mean"] == 60.0
    md = res.to_markdown("t")
    assert "| Success rate (%) | 50.0 |" in md
    assert "Minimum TTC" in md


@pytest.mark.parametrize("n", range(1, 40))
def test_wilson_interval_contains_the_estimate_at_every_n(n):
    # In floats the Wilson bounds at 0% and 100% can miss p by one ulp (5.6e-17 at 0/3, 1 - 1e-16 at
    # 10/10), which gave bar charts an error bar of negative length and crashed `compare`.
    for successes in (0, n // 2, n):
        p, lo, hi = proportion_ci(successes, n)
        assert 0.0 <= lo <= p <= hi <= 1.0


def test_mean_ci_is_clipped_to_the_metric_bounds():
    m, lo, hi = mean_ci([0.9, 1.0], bounds=(0.0, 1.0))  # the raw t interval is 0.32 .. 1.59
    assert m == pytest.approx(0.95) and lo == pytest.approx(0.95 - 12.706 * 0.0707 / math.sqrt(2), abs=1e-3)
    assert hi == 1.0
    res = EvaluationResult([_episode(0, True, 10.0, 100.0), _episode(1, False, 0.0, 100.0)])
    res.episodes[0].min_ttc_s = 0.5
    agg = res.aggregate()
    assert agg["min_ttc_s"]["ci_low"] == 0.0 and agg["min_ttc_s"]["ci_high"] == 10.0
    assert 0.0 <= agg["route_completion"]["ci_low"] and agg["route_completion"]["ci_high"] <= 1.0


def test_comparison_charts_survive_all_or_nothing_success(tmp_path):
    from av_td3.report.comparison import Comparison, plot_comparison

    always = EvaluationResult([_episode(i, True, 100.0, 1000.0) for i in range(10)])
    never = EvaluationResult([_episode(i, False, 5.0, 100.0) for i in range(10)])
    paths = plot_comparison(Comparison({"TD3": always, "Still": never}, "TD3", 0, 0), tmp_path)
    assert len(paths) == len({p.name for p in paths}) and all(p.stat().st_size > 1000 for p in paths)
