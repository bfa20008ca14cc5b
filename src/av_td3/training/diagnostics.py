"""Training health checks: the failure modes of docs/design.md §5, detected while they happen.

Each check turns a symptom into a named problem with a hint. A problem is reported when it appears
(and again when it clears), so the console is not flooded; every report also goes to metrics.jsonl.
Non-finite losses are fatal: the trainer saves a checkpoint and stops.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

#: Thresholds (why these values: per-step rewards are O(1) and episodes O(1000) steps, so |Q| beyond
#: 1e4 or feature norms beyond 1e4 mean divergence, as in the 1e6 / 1e12 blow-ups seen before).
Q_LIMIT = 1e4
FEATURE_NORM_LIMIT = 1e4
SATURATION_FRACTION = 0.9
STATIONARY_KMH = 1.0
MIN_WEIGHT_CHANGE = 1e-7


class NonFiniteLossError(RuntimeError):
    """A loss became NaN or inf; training cannot continue meaningfully."""


@dataclass
class HealthReport:
    problem: str
    message: str
    active: bool


class HealthMonitor:
    """Feeds on per-step actions/speeds and per-update stats; returns new or cleared problems."""

    def __init__(self, window: int = 1000):
        self.actions: deque[np.ndarray] = deque(maxlen=window)
        self.speeds: deque[float] = deque(maxlen=window)
        self.active: set[str] = set()

    def observe_step(self, action: np.ndarray, speed_kmh: float, from_policy: bool) -> None:
        if from_policy:  # random exploration is not the policy's fault
            self.actions.append(np.asarray(action, dtype=np.float32))
            self.speeds.append(float(speed_kmh))

    def check(self, stats: Mapping[str, Any], cnn: Mapping[str, Any] | None, updates: int) -> list[HealthReport]:
        """Run every check; raise ``NonFiniteLossError`` on NaN/inf losses."""
        for key in ("critic_loss", "actor_loss"):
            value = _to_float(stats.get(key))
            if value is not None and not math.isfinite(value):
                raise NonFiniteLossError(
                    f"{key} became {value} after {updates} updates. Lower the learning rates "
                    f"(networks.*.learning_rate), set algorithm.max_grad_norm, or check the reward scale."
                )
        found: dict[str, str] = {}
        q_extremes = [q for q in (_to_float(stats.get("q_min")), _to_float(stats.get("q_max"))) if q is not None]
        q_worst = max(q_extremes, key=abs, default=None)  # Q can run off to -inf as well as to +inf
        if q_worst is not None and abs(q_worst) > Q_LIMIT:
            found["q_explosion"] = (f"Q reached {q_worst:.3g} (|Q| > {Q_LIMIT:g}): the critic is diverging. "
                                    "Lower networks.critic.learning_rate or the reward scale.")
        feat = _to_float(stats.get("feature_norm"))
        if feat is not None and feat > FEATURE_NORM_LIMIT:
            found["feature_explosion"] = (f"CNN feature norm {feat:.3g} (> {FEATURE_NORM_LIMIT:g}). "
                                          "Lower networks.cnn.learning_rate.")
        if cnn is not None:
            no_grad = [name for name, g in cnn.get("grad_norms", {}).items() if g is None]
            if no_grad and cnn.get("trainable", True):
                found["cnn_no_gradient"] = (f"CNN parameters got no gradient: {', '.join(no_grad[:4])}. "
                                            "The CNN is frozen by accident (features computed under no_grad?).")
            change = cnn.get("weight_change_total")
            if cnn.get("trainable", True) and change is not None and updates >= 200 and change < MIN_WEIGHT_CHANGE:
                found["cnn_not_learning"] = (f"CNN weights changed by only {change:.2e} (relative) in {updates} "
                                             "updates. Check networks.cnn.learning_rate and the encoder mode.")
        if len(self.actions) == self.actions.maxlen:
            saturated = float(np.mean(np.any(np.abs(np.stack(self.actions)) > 0.99, axis=1)))
            if saturated > SATURATION_FRACTION:
                found["action_saturation"] = (f"{100 * saturated:.0f}% of recent policy actions are at ±1 "
                                              "(bang-bang policy). Watch Q-values; consider lower actor lr.")
            mean_speed = float(np.mean(self.speeds))
            if mean_speed < STATIONARY_KMH:
                found["stationary"] = (f"the car has averaged {mean_speed:.2f} km/h over the last "
                                       f"{len(self.speeds)} policy steps: it is not moving.")
        reports = [HealthReport(k, v, True) for k, v in found.items() if k not in self.active]
        reports += [HealthReport(k, "cleared", False) for k in self.active - set(found)]
        self.active = set(found)
        return reports


def _to_float(value: Any) -> float | None:
    if value is None:
        return None
    if hasattr(value, "item"):
        value = value.item()
    return float(value)


def format_gradient_table(cnn: Mapping[str, Any]) -> str:
    """The ``--debug`` CNN gradient table: one row per parameter."""
    lines = ["[DEBUG] CNN gradients", f"{'parameter':<40} {'grad norm':>12} {'rel. change':>12}"]
    changes = cnn.get("weight_change", {})
    for name, g in cnn.get("grad_norms", {}).items():
        g_s = "NO GRADIENT" if g is None else f"{float(g):.6f}"
        c = changes.get(name)
        lines.append(f"{name:<40} {g_s:>12} {'' if c is None else f'{float(c):.2e}':>12}")
    return "\n".join(lines)
