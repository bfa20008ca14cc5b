"""Learning-curve PNGs from a run's ``metrics.jsonl`` (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _series(records: list[dict[str, Any]], kind: str, key: str) -> tuple[np.ndarray, np.ndarray]:
    pts = [(r["step"], r[key]) for r in records if r["type"] == kind and r.get(key) is not None]
    if not pts:
        return np.empty(0), np.empty(0)
    steps, values = zip(*pts)
    return np.asarray(steps, float), np.asarray(values, float)


def _rolling(values: np.ndarray, window: int = 10) -> np.ndarray:
    if values.size < 2:
        return values
    window = min(window, values.size)
    kernel = np.ones(window) / window
    head = np.cumsum(values[: window - 1]) / np.arange(1, window)
    return np.concatenate([head, np.convolve(values, kernel, mode="valid")])


def _figure(title: str, ylabel: str):
    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=100)
    ax.set_title(title)
    ax.set_xlabel("env steps")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    return fig, ax


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_learning_curves(records: list[dict[str, Any]], out_dir: Path) -> dict[str, Path]:
    """Write reward, success-rate, speed, loss and Q-value curves; returns ``{name: png path}``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    pngs: dict[str, Path] = {}

    fig, ax = _figure("Episode reward", "return")
    s, v = _series(records, "episode", "reward")
    if s.size:
        ax.plot(s, v, color="tab:blue", alpha=0.3, lw=1, label="training episode")
        ax.plot(s, _rolling(v), color="tab:blue", lw=2, label="training (rolling mean of 10)")
    s, v = _series(records, "eval", "episode_reward")
    if s.size:
        ax.plot(s, v, "o-", color="tab:orange", lw=2, label="evaluation (deterministic)")
    ax.legend(loc="best", fontsize=8)
    pngs["reward"] = _save(fig, out_dir / "reward.png")

    fig, ax = _figure("Evaluation success rate and route completion", "%")
    for key, label, color in (("success_rate", "success rate", "tab:green"), ("route_completion", "route completion", "tab:purple")):
        s, v = _series(records, "eval", key)
        if s.size:
            ax.plot(s, 100 * v, "o-", color=color, label=label)
    ax.set_ylim(-5, 105)
    ax.legend(loc="best", fontsize=8)
    pngs["success_rate"] = _save(fig, out_dir / "success_rate.png")

    fig, ax = _figure("Speed", "km/h")
    s, v = _series(records, "episode", "mean_speed_kmh")
    if s.size:
        ax.plot(s, v, color="tab:red", alpha=0.3, lw=1, label="training episode mean")
        ax.plot(s, _rolling(v), color="tab:red", lw=2, label="rolling mean of 10")
    s, v = _series(records, "eval", "mean_speed_kmh")
    if s.size:
        ax.plot(s, v, "o-", color="black", label="evaluation")
    ax.legend(loc="best", fontsize=8)
    pngs["speed"] = _save(fig, out_dir / "speed.png")

    fig, ax = _figure("Losses", "loss")
    for key, color in (("critic_loss", "tab:blue"), ("actor_loss", "tab:orange")):
        s, v = _series(records, "train", key)
        if s.size:
            ax.plot(s, v, color=color, label=key)
    ax.legend(loc="best", fontsize=8)
    pngs["losses"] = _save(fig, out_dir / "losses.png")

    fig, ax = _figure("Q-values (critic on replay batches)", "Q")
    for key, color in (("q_mean", "tab:blue"), ("q_max", "tab:red"), ("q_min", "tab:green")):
        s, v = _series(records, "train", key)
        if s.size:
            ax.plot(s, v, color=color, label=key)
    ax.legend(loc="best", fontsize=8)
    pngs["q_values"] = _save(fig, out_dir / "q_values.png")
    return pngs
