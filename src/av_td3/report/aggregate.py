"""Aggregates of RL results across seeds, with stratified bootstrap confidence intervals.

The maths of Agarwal et al. 2021, "Deep RL at the Edge of the Statistical Precipice" (the ``rliable``
library), written on numpy/scipy: ``rliable`` 1.2 does not import with the pinned numpy 2 / pandas 3
stack (its ``arch`` dependency fails at import), and the whole method is a few lines.

Scores are arrays of shape ``(runs,)`` or ``(runs, tasks)``: one row per independent run (seed), one
column per task (environment / scenario). A sweep setting on one task is a ``(seeds, 1)`` array.

API (every function is deterministic for a given ``seed``):

* ``iqm(scores)`` / ``mean(scores)`` / ``median(scores)``: point aggregates over all scores pooled.
  IQM is the mean of the middle 50% of all scores pooled over tasks, i.e.
  ``scipy.stats.trim_mean(scores, 0.25, axis=None)``: ``floor(n / 4)`` scores are dropped at each end.
* ``stratified_bootstrap_ci(scores, statistic, reps, confidence, seed) -> Interval``: percentile
  interval of ``statistic`` over ``reps`` resamples; each resample draws ``runs`` rows with replacement
  **independently within each task** (stratified), so every task keeps its weight.
* ``probability_of_improvement(x, y)``: P(X > Y) averaged over tasks, with ties counted as 1/2
  (the Mann-Whitney U statistic over ``n_x * n_y``); ``probability_of_improvement_ci`` bootstraps
  ``x`` and ``y`` independently.
* ``performance_profile(scores, taus)``: fraction of scores above each threshold ``tau`` (run-score
  distribution); ``performance_profile_ci`` adds bootstrap bands.
* ``aggregate_with_ci(scores)``: IQM, mean and median each as an ``Interval`` (a dict in JSON).

Example::

    from av_td3.report.aggregate import aggregate_with_ci, probability_of_improvement_ci
    success = np.array([[0.4], [1.0], [0.8], [0.6], [0.8]])      # 5 seeds x 1 task
    aggregate_with_ci(success)["iqm"]                              # Interval(point=0.733.., low=.., high=..)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Callable, Sequence

import numpy as np
from scipy import stats

Statistic = Callable[[np.ndarray], float]

#: Bootstrap defaults: rliable's paper uses 2,000+ resamples and 95% percentile intervals.
DEFAULT_REPS = 2000
DEFAULT_CONFIDENCE = 0.95


@dataclass(frozen=True)
class Interval:
    """A point estimate and its bootstrap confidence interval ``[low, high]``."""

    point: float
    low: float
    high: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


# --------------------------------------------------------------------------------------------------
# Point aggregates
# --------------------------------------------------------------------------------------------------
def as_score_matrix(scores: Sequence[float] | np.ndarray) -> np.ndarray:
    """``(runs,)`` or ``(runs, tasks)`` → float64 ``(runs, tasks)``; rejects empty or non-finite input."""
    arr = np.asarray(scores, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"scores must have shape (runs,) or (runs, tasks) with at least one run, got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError("scores contain NaN or infinite values; drop failed runs before aggregating")
    return arr


def iqm(scores: Sequence[float] | np.ndarray) -> float:
    """Interquartile mean of all scores (pooled over tasks): ``trim_mean(scores, 0.25)``."""
    return float(stats.trim_mean(as_score_matrix(scores), proportiontocut=0.25, axis=None))


def mean(scores: Sequence[float] | np.ndarray) -> float:
    """Mean of all scores (equal to the mean of per-task means: every task has the same runs)."""
    return float(np.mean(as_score_matrix(scores)))


def median(scores: Sequence[float] | np.ndarray) -> float:
    """Median of all scores pooled over runs and tasks.

    rliable's ``aggregate_median`` is the median over tasks of per-task means, which on a single task
    (one sweep setting) is just the mean; pooling gives the median over seeds that a sweep asks for.
    """
    return float(np.median(as_score_matrix(scores)))


AGGREGATES: dict[str, Statistic] = {"iqm": iqm, "mean": mean, "median": median}


# --------------------------------------------------------------------------------------------------
# Stratified bootstrap
# --------------------------------------------------------------------------------------------------
def stratified_resample_indices(runs: int, tasks: int, reps: int, rng: np.random.Generator) -> np.ndarray:
    """Row indices ``(reps, runs, tasks)``: for each resample and task, ``runs`` draws with replacement."""
    return rng.integers(0, runs, size=(reps, runs, tasks))


def _resample(arr: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Apply row indices column by column: ``out[..., i, t] = arr[idx[..., i, t], t]``.

    ``idx`` is ``(runs, tasks)`` for one resample or ``(reps, runs, tasks)`` for all of them.
    """
    return arr[idx, np.arange(arr.shape[1])]


def _batched(statistic: Statistic) -> Callable[[np.ndarray], np.ndarray] | None:
    """The vectorised form over ``(reps, runs, tasks)`` of the aggregates defined here (same numbers)."""
    flat = lambda x: x.reshape(len(x), -1)  # noqa: E731  (pool runs and tasks, per resample)
    return {iqm: lambda x: stats.trim_mean(flat(x), proportiontocut=0.25, axis=1),
            mean: lambda x: flat(x).mean(axis=1),
            median: lambda x: np.median(flat(x), axis=1)}.get(statistic)


def _percentiles(samples: np.ndarray, confidence: float, axis: int | None = None) -> tuple[Any, Any]:
    """The two-sided percentile bounds ``(low, high)`` of bootstrap ``samples`` at ``confidence``."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    alpha = (1 - confidence) / 2
    low, high = np.percentile(samples, [100 * alpha, 100 * (1 - alpha)], axis=axis)
    return low, high


def _percentile_interval(point: float, samples: np.ndarray, confidence: float) -> Interval:
    low, high = _percentiles(samples, confidence)
    return Interval(float(point), float(low), float(high))


def stratified_bootstrap_ci(
    scores: Sequence[float] | np.ndarray,
    statistic: Statistic = iqm,
    reps: int = DEFAULT_REPS,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = 0,
) -> Interval:
    """Point estimate ``statistic(scores)`` and its stratified-bootstrap percentile interval.

    Resample ``k`` is ``scores[idx[k, i, t], t]`` with ``idx = stratified_resample_indices(runs, tasks,
    reps, np.random.default_rng(seed))``, so the interval can be reproduced by hand from the same seed.
    """
    arr = as_score_matrix(scores)
    if reps < 1:
        raise ValueError(f"reps must be >= 1, got {reps}")
    idx = stratified_resample_indices(*arr.shape, reps, np.random.default_rng(seed))
    batched = _batched(statistic)
    if batched is not None:
        samples = batched(_resample(arr, idx))
    else:
        samples = np.array([statistic(_resample(arr, idx[k])) for k in range(reps)])
    return _percentile_interval(statistic(arr), samples, confidence)


def aggregate_with_ci(
    scores: Sequence[float] | np.ndarray,
    reps: int = DEFAULT_REPS,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = 0,
) -> dict[str, Interval]:
    """``{"iqm": Interval, "mean": Interval, "median": Interval}`` for one set of scores."""
    return {name: stratified_bootstrap_ci(scores, fn, reps, confidence, seed) for name, fn in AGGREGATES.items()}


# --------------------------------------------------------------------------------------------------
# Probability of improvement
# --------------------------------------------------------------------------------------------------
def probability_of_improvement(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> float:
    """P(a run of X scores higher than a run of Y), ties counted 1/2, averaged over tasks.

    Per task: ``(#{(i, j): x_i > y_j} + 0.5 * #{(i, j): x_i == y_j}) / (n_x * n_y)``.
    """
    xa, ya = as_score_matrix(x), as_score_matrix(y)
    if xa.shape[1] != ya.shape[1]:
        raise ValueError(f"x and y must cover the same tasks, got {xa.shape[1]} and {ya.shape[1]} columns")
    return float(_improvement(xa, ya))


def _improvement(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """P(X > Y) for ``(..., n_x, tasks)`` and ``(..., n_y, tasks)``; leading axes are resamples."""
    diff = x[..., :, None, :] - y[..., None, :, :]  # (..., n_x, n_y, tasks)
    wins = (diff > 0).sum(axis=(-3, -2)) + 0.5 * (diff == 0).sum(axis=(-3, -2))
    return np.mean(wins / (x.shape[-2] * y.shape[-2]), axis=-1)


def probability_of_improvement_ci(
    x: Sequence[float] | np.ndarray,
    y: Sequence[float] | np.ndarray,
    reps: int = DEFAULT_REPS,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = 0,
) -> Interval:
    """``probability_of_improvement(x, y)`` with a percentile interval; x and y resampled independently."""
    xa, ya = as_score_matrix(x), as_score_matrix(y)
    rng = np.random.default_rng(seed)
    ix = stratified_resample_indices(*xa.shape, reps, rng)
    iy = stratified_resample_indices(*ya.shape, reps, rng)
    samples = _improvement(_resample(xa, ix), _resample(ya, iy))
    return _percentile_interval(probability_of_improvement(xa, ya), samples, confidence)


# --------------------------------------------------------------------------------------------------
# Performance profiles
# --------------------------------------------------------------------------------------------------
def performance_profile(scores: Sequence[float] | np.ndarray, taus: Sequence[float] | np.ndarray) -> np.ndarray:
    """Fraction of all scores strictly above each ``tau``: shape ``(len(taus),)``, averaged over tasks."""
    return _profile(as_score_matrix(scores), np.asarray(taus, dtype=np.float64))


def _profile(x: np.ndarray, taus: np.ndarray) -> np.ndarray:
    """``(..., runs, tasks)`` scores → ``(..., len(taus))`` fractions above each tau."""
    above = x[..., None, :, :] > taus[:, None, None]  # (..., taus, runs, tasks)
    return above.mean(axis=(-2, -1))


def performance_profile_ci(
    scores: Sequence[float] | np.ndarray,
    taus: Sequence[float] | np.ndarray,
    reps: int = DEFAULT_REPS,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(profile, low, high)``, each ``(len(taus),)``: the profile and pointwise percentile bands."""
    arr = as_score_matrix(scores)
    idx = stratified_resample_indices(*arr.shape, reps, np.random.default_rng(seed))
    samples = _profile(_resample(arr, idx), np.asarray(taus, dtype=np.float64))  # (reps, taus)
    low, high = _percentiles(samples, confidence, axis=0)
    return performance_profile(arr, taus), low, high
