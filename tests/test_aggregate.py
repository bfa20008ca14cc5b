"""Aggregate maths (report/aggregate.py) against hand computations on small synthetic results."""

import numpy as np
import pytest

from av_td3.report import aggregate as agg


def test_iqm_drops_a_quarter_at_each_end_pooled_over_tasks():
    # 8 scores over 2 tasks: sorted 1..8, drop 2 at each end -> mean(3, 4, 5, 6) = 4.5
    scores = np.array([[8, 1], [3, 6], [5, 2], [7, 4]], dtype=float)
    assert agg.iqm(scores) == pytest.approx(4.5, abs=1e-12)
    # 5 scores: floor(5 / 4) = 1 dropped at each end -> mean(0.6, 0.8, 0.8)
    assert agg.iqm([0.4, 1.0, 0.8, 0.6, 0.8]) == pytest.approx(2.2 / 3, abs=1e-12)
    # an outlier moves the mean but not the IQM
    assert agg.iqm([1, 2, 3, 1000]) == pytest.approx(2.5)
    assert agg.mean([1, 2, 3, 1000]) == pytest.approx(251.5)


def test_mean_and_median_pool_all_runs():
    assert agg.mean([[1, 10], [3, 30]]) == pytest.approx(11.0)
    assert agg.median([0.2, 0.9, 0.4]) == pytest.approx(0.4)  # median over seeds, not the mean
    assert agg.median([[1, 10], [3, 30]]) == pytest.approx(6.5)


def test_bootstrap_ci_equals_a_hand_computation_with_the_same_draws():
    scores = np.array([[0.1, 0.5], [0.7, 0.2], [0.3, 0.9], [0.6, 0.4], [0.8, 0.0]])
    reps, seed = 500, 7
    got = agg.stratified_bootstrap_ci(scores, agg.iqm, reps=reps, confidence=0.9, seed=seed)

    idx = np.random.default_rng(seed).integers(0, 5, size=(reps, 5, 2))
    stats = []
    for k in range(reps):
        sample = np.empty((5, 2))
        for t in range(2):  # stratified: each task resampled from its own runs
            sample[:, t] = scores[idx[k, :, t], t]
        flat = np.sort(sample.ravel())
        stats.append(flat[2:-2].mean())  # 10 scores: floor(10 / 4) = 2 dropped at each end
    low, high = np.percentile(stats, [5, 95])
    assert got.point == pytest.approx(np.sort(scores.ravel())[2:-2].mean(), abs=1e-12)
    assert (got.low, got.high) == (pytest.approx(low, abs=1e-12), pytest.approx(high, abs=1e-12))


def test_bootstrap_of_two_runs_spans_exactly_their_values():
    # resamples of (a, b) are (a,a), (a,b), (b,a), (b,b): the 2.5% / 97.5% points are a and b
    ci = agg.stratified_bootstrap_ci([0.25, 0.75], agg.mean, reps=2000)
    assert (ci.point, ci.low, ci.high) == (0.5, 0.25, 0.75)


def test_resampling_is_stratified_by_task():
    # Task A runs (0, 1), task B runs (10, 11). A stratified resample keeps two runs of each task, so the
    # mean is 5 + k/4 with k ~ Binomial(4, 1/2): P(k = 0) = 1/16 > 2.5%, hence the interval is exactly [5, 6].
    # An unstratified resample of the 4 pooled scores would reach 0 and 11.
    ci = agg.stratified_bootstrap_ci([[0, 10], [1, 11]], agg.mean, reps=2000)
    assert (ci.point, ci.low, ci.high) == (5.5, 5.0, 6.0)


def test_constant_scores_give_a_zero_width_interval():
    for name, ci in agg.aggregate_with_ci([0.8] * 5, reps=200).items():
        assert (ci.point, ci.low, ci.high) == (pytest.approx(0.8),) * 3, name


def test_probability_of_improvement_counts_ties_as_half():
    x, y = [1, 2, 3], [2, 2, 0]
    # x=1 beats 0; x=2 beats 0 and ties 2 twice; x=3 beats all three -> (1 + 2 + 3) / 9
    assert agg.probability_of_improvement(x, y) == pytest.approx(6 / 9)
    assert agg.probability_of_improvement(y, x) == pytest.approx(3 / 9)
    # averaged over tasks: task 0 X always better (1.0), task 1 always worse (0.0)
    assert agg.probability_of_improvement([[5, 0], [6, 1]], [[1, 5], [2, 6]]) == pytest.approx(0.5)
    ci = agg.probability_of_improvement_ci([3, 4, 5], [0, 1, 2], reps=300)
    assert (ci.point, ci.low, ci.high) == (1.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="same tasks"):
        agg.probability_of_improvement([[1, 2]], [[1]])


def test_performance_profile_is_the_fraction_strictly_above_tau():
    profile = agg.performance_profile([0.2, 0.5, 0.5, 0.9], [0.0, 0.5, 0.9])
    np.testing.assert_allclose(profile, [1.0, 0.25, 0.0])
    p, low, high = agg.performance_profile_ci([0.2, 0.5, 0.5, 0.9], [0.0, 0.5, 0.9], reps=300)
    np.testing.assert_allclose(p, profile)
    assert np.all(low <= p) and np.all(p <= high) and low[0] == high[0] == 1.0


@pytest.mark.parametrize("bad", [[], [[]], [0.1, float("nan")]])
def test_bad_scores_are_rejected_with_a_reason(bad):
    with pytest.raises(ValueError, match="scores"):
        agg.iqm(bad)


def test_vectorised_aggregates_equal_the_per_resample_loop():
    scores = np.random.default_rng(3).normal(size=(7, 3))
    for fn in (agg.iqm, agg.mean, agg.median):
        fast = agg.stratified_bootstrap_ci(scores, fn, reps=300, seed=5)
        slow = agg.stratified_bootstrap_ci(scores, lambda s, fn=fn: fn(s), reps=300, seed=5)  # a custom statistic
        assert (fast.low, fast.high) == (pytest.approx(slow.low, abs=1e-12), pytest.approx(slow.high, abs=1e-12))
