"""Evaluation episodes and their metrics, with 95% confidence intervals.

Only the contract's ``info`` keys are read (plus the optional ``ttc_s`` and ``jerk_mps3`` extras), so
the same code scores TD3, DDPG and the classical controller on any backend. A policy is any callable
``obs -> action``.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable

import numpy as np
from scipy import stats

Policy = Callable[[dict], np.ndarray]
"""A policy maps an observation to an action. A stateful controller may also define ``reset(env)``
(called at each episode start) and set ``wants_info = True`` to be called as ``policy(obs, info)``
with the previous step's ``info`` (privileged state such as ``obstacle_distance_m``)."""
FrameCallback = Callable[[Any, dict, np.ndarray, float, dict], None]  # (env, obs, action, reward, info)


@dataclass
class EpisodeMetrics:
    """What one evaluation episode measured (units in the names)."""

    seed: int
    reward: float
    length: int
    success: bool
    route_completion: float
    mean_speed_kmh: float
    distance_m: float
    collisions: int
    lane_invasions: int
    off_road: bool
    mean_abs_lateral_deviation_m: float
    mean_abs_jerk_mps3: float
    min_ttc_s: float
    termination_reason: str
    reward_components: dict[str, float] = field(default_factory=dict)


def run_episode(env, policy: Policy, seed: int, on_step: FrameCallback | None = None) -> EpisodeMetrics:
    """Play one episode with ``policy`` (no exploration noise, no buffer writes)."""
    obs, info = env.reset(seed=seed)
    if hasattr(policy, "reset"):
        policy.reset(env)
    wants_info = getattr(policy, "wants_info", False)
    if on_step is not None:
        on_step(env, obs, np.zeros(2, np.float32), 0.0, info)
    total, steps = 0.0, 0
    speeds, lateral, jerks, ttcs = [], [], [], []
    lane_events, prev_invasion, collisions = 0, False, 0
    components: dict[str, float] = {}
    prev_speed = prev_accel = None
    while True:
        action = policy(obs, info) if wants_info else policy(obs)
        obs, reward, terminated, truncated, info = env.step(action)
        total += float(reward)
        steps += 1
        speeds.append(float(info["speed_kmh"]))
        lateral.append(abs(float(info["lateral_deviation_m"])))
        if "jerk_mps3" in info:
            jerks.append(abs(float(info["jerk_mps3"])))
        else:  # finite differences of speed at the contract's 20 Hz
            speed = speeds[-1] / 3.6
            accel = None if prev_speed is None else (speed - prev_speed) / 0.05
            if accel is not None and prev_accel is not None:
                jerks.append(abs(accel - prev_accel) / 0.05)
            prev_speed, prev_accel = speed, accel
        if "ttc_s" in info:
            ttcs.append(float(info["ttc_s"]))
        invasion = bool(info["lane_invasion"])
        lane_events += int(invasion and not prev_invasion)  # count crossings, not steps on the line
        prev_invasion = invasion
        collisions += int(bool(info["collision"]))
        for k, v in info.get("reward_components", {}).items():
            components[k] = components.get(k, 0.0) + float(v)
        if on_step is not None:
            on_step(env, obs, action, float(reward), info)
        if terminated or truncated:
            break
    return EpisodeMetrics(
        seed=seed,
        reward=total,
        length=steps,
        success=bool(info["success"]),
        route_completion=float(info["route_completion"]),
        mean_speed_kmh=float(np.mean(speeds)),
        distance_m=float(info["distance_m"]),
        collisions=collisions,
        lane_invasions=lane_events,
        off_road=info["termination_reason"] == "off_road",
        mean_abs_lateral_deviation_m=float(np.mean(lateral)),
        mean_abs_jerk_mps3=float(np.mean(jerks)) if jerks else 0.0,
        min_ttc_s=float(np.min(ttcs)) if ttcs else math.inf,
        termination_reason=str(info["termination_reason"]),
        reward_components=components,
    )


def evaluate(env, policy: Policy, episodes: int, seed: int, on_step: FrameCallback | None = None) -> "EvaluationResult":
    """Run ``episodes`` episodes with seeds ``seed, seed + 1, ...`` (the same episodes for every policy)."""
    return EvaluationResult([run_episode(env, policy, seed + i, on_step) for i in range(episodes)])


# --------------------------------------------------------------------------------------------------
def mean_ci(values: Iterable[float], confidence: float = 0.95,
            bounds: tuple[float, float] = (-math.inf, math.inf)) -> tuple[float, float, float]:
    """Mean and Student-t confidence interval, clipped to the metric's possible ``bounds``.

    A single value gives a zero-width interval. Clipping matters for few episodes: a t interval on
    route completion can otherwise reach past 100%, or one on TTC below 0 s.
    """
    x = np.asarray(list(values), dtype=np.float64)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return math.nan, math.nan, math.nan
    m = float(x.mean())
    if x.size < 2 or float(x.std()) == 0.0:
        return m, m, m
    half = float(stats.t.ppf(0.5 + confidence / 2, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))
    low, high = bounds
    return m, max(low, m - half), min(high, m + half)


def proportion_ci(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float, float]:
    """Proportion with a Wilson score interval (sane at 0% and 100%, unlike the normal approximation)."""
    if n == 0:
        return math.nan, math.nan, math.nan
    z = float(stats.norm.ppf(0.5 + confidence / 2))
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # The Wilson bounds contain p in exact arithmetic; in floats they can miss it by 1 ulp at 0% or
    # 100% (an error bar of negative length), so p itself bounds them.
    return p, min(p, max(0.0, centre - half)), max(p, min(1.0, centre + half))


def per_km_ci(counts: np.ndarray, metres: np.ndarray, seed: int = 0, resamples: int = 2000) -> tuple[float, float, float]:
    """Events per km over all episodes, with a bootstrap interval over episodes."""
    km = metres.sum() / 1000.0
    if km <= 0:
        return math.nan, math.nan, math.nan
    rate = float(counts.sum() / km)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, counts.size, size=(resamples, counts.size))
    boot_km = metres[idx].sum(axis=1) / 1000.0
    boot = np.where(boot_km > 0, counts[idx].sum(axis=1) / np.maximum(boot_km, 1e-9), np.nan)
    low, high = np.nanpercentile(boot, [2.5, 97.5])
    return rate, float(low), float(high)


#: Per-episode minimum TTC is capped here before averaging: beyond it nothing is closing in, and the
#: envs' "no vehicle ahead" value (1000 s) would otherwise swamp the mean and its interval.
TTC_CAP_S = 10.0
NON_NEGATIVE = (0.0, math.inf)

#: (key, label, unit) for the aggregate table (markdown-escaped labels), in display order.
METRICS = (
    ("success_rate", "Success rate", "%"),
    ("route_completion", "Route completion", "%"),
    ("mean_speed_kmh", "Mean speed", "km/h"),
    ("collisions_per_km", "Collisions", "/km"),
    ("lane_invasions_per_km", "Lane invasions", "/km"),
    ("off_road_rate", "Off-road rate", "%"),
    ("episode_length", "Episode length", "steps"),
    ("episode_reward", "Episode reward", ""),
    ("mean_abs_lateral_deviation_m", "Mean \\|lateral deviation\\|", "m"),
    ("mean_abs_jerk_mps3", "Mean \\|jerk\\|", "m/s³"),
    ("min_ttc_s", f"Minimum TTC (capped at {TTC_CAP_S:g} s)", "s"),
)
_PERCENT = {"success_rate", "route_completion", "off_road_rate"}


@dataclass
class EvaluationResult:
    episodes: list[EpisodeMetrics]

    def column(self, name: str) -> np.ndarray:
        return np.array([getattr(e, name) for e in self.episodes], dtype=np.float64)

    def aggregate(self) -> dict[str, dict[str, float]]:
        """``{metric: {"mean", "ci_low", "ci_high"}}`` for every metric in ``METRICS``."""
        n = len(self.episodes)
        metres = self.column("distance_m")
        values = {
            "success_rate": proportion_ci(int(self.column("success").sum()), n),
            "route_completion": mean_ci(self.column("route_completion"), bounds=(0.0, 1.0)),
            "mean_speed_kmh": mean_ci(self.column("mean_speed_kmh"), bounds=NON_NEGATIVE),
            "collisions_per_km": per_km_ci(self.column("collisions"), metres),
            "lane_invasions_per_km": per_km_ci(self.column("lane_invasions"), metres),
            "off_road_rate": proportion_ci(int(self.column("off_road").sum()), n),
            "episode_length": mean_ci(self.column("length"), bounds=NON_NEGATIVE),
            "episode_reward": mean_ci(self.column("reward")),
            "mean_abs_lateral_deviation_m": mean_ci(self.column("mean_abs_lateral_deviation_m"), bounds=NON_NEGATIVE),
            "mean_abs_jerk_mps3": mean_ci(self.column("mean_abs_jerk_mps3"), bounds=NON_NEGATIVE),
            "min_ttc_s": mean_ci(np.minimum(self.column("min_ttc_s"), TTC_CAP_S), bounds=(0.0, TTC_CAP_S)),
        }
        return {k: {"mean": m, "ci_low": lo, "ci_high": hi} for k, (m, lo, hi) in values.items()}

    def to_dict(self) -> dict[str, Any]:
        return {"episodes": [asdict(e) for e in self.episodes], "aggregate": self.aggregate()}

    def to_json(self) -> str:
        return json.dumps(json_safe(self.to_dict()), indent=2, allow_nan=False)

    def to_markdown(self, title: str = "Evaluation") -> str:
        agg = self.aggregate()
        rows = [f"### {title} ({len(self.episodes)} episodes, 95% CI)", "", "| Metric | Mean | 95% CI |", "|---|---|---|"]
        for key, label, unit in METRICS:
            rows.append(f"| {label_with_unit(label, unit)} | {format_value(key, agg[key]['mean'])} | "
                        f"{format_value(key, agg[key]['ci_low'])} – {format_value(key, agg[key]['ci_high'])} |")
        return "\n".join(rows) + "\n"


def label_with_unit(label: str, unit: str) -> str:
    return f"{label} ({unit})" if unit else label


def format_value(key: str, value: float) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if math.isinf(value):
        return "∞"
    if key in _PERCENT:
        return f"{100 * value:.1f}"
    return f"{value:.2f}" if abs(value) < 1000 else f"{value:,.0f}"


def json_safe(value: Any) -> Any:
    """Strict-JSON version of nested results: numpy scalars to Python, NaN/inf to None."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (np.generic,)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
