"""``av-td3 compare``: several policies on the same seeded episodes, with CIs, tests and bar charts.

Every policy is evaluated on episodes with seeds ``seed, seed + 1, ...`` so that they meet the same
routes and traffic. The reference policy (TD3 when present, else the first) is compared with each other
policy by a two-sided Mann–Whitney U test on episode reward and on route completion (no normality
assumption; episode returns are usually skewed).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from scipy import stats  # noqa: E402

from av_td3.training.evaluation import (  # noqa: E402
    METRICS,
    EvaluationResult,
    evaluate,
    format_value,
    json_safe,
    label_with_unit,
)

#: Per-episode columns tested between policies.
TESTED = (("reward", "episode reward"), ("route_completion", "route completion"))
_PERCENT = {"success_rate", "route_completion", "off_road_rate"}


@dataclass
class Comparison:
    results: dict[str, EvaluationResult]
    reference: str
    scenario: int
    seed: int

    def tests(self) -> list[dict[str, Any]]:
        """Mann–Whitney U of the reference against every other policy, per tested column."""
        rows = []
        ref = self.results[self.reference]
        for name, res in self.results.items():
            if name == self.reference:
                continue
            for column, label in TESTED:
                a, b = ref.column(column), res.column(column)
                if np.ptp(np.concatenate([a, b])) == 0:  # all equal: the test is undefined, no difference
                    u, p = len(a) * len(b) / 2, 1.0
                else:
                    u, p = stats.mannwhitneyu(a, b, alternative="two-sided")
                rows.append({"reference": self.reference, "other": name, "metric": label,
                             "U": float(u), "p_value": float(p), "n": [len(a), len(b)],
                             "reference_median": float(np.median(a)), "other_median": float(np.median(b))})
        return rows

    def to_dict(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "first_seed": self.seed,
            "reference": self.reference,
            "policies": {name: res.to_dict() for name, res in self.results.items()},
            "tests": self.tests(),
        }

    def to_markdown(self) -> str:
        names = list(self.results)
        aggs = {n: r.aggregate() for n, r in self.results.items()}
        n_eps = len(next(iter(self.results.values())).episodes)
        lines = [f"## Comparison on scenario {self.scenario} ({n_eps} seeded episodes each, mean [95% CI])", "",
                 "| Metric | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
        for key, label, unit in METRICS:
            cells = []
            for n in names:
                a = aggs[n][key]
                cells.append(f"{format_value(key, a['mean'])} [{format_value(key, a['ci_low'])}, {format_value(key, a['ci_high'])}]")
            lines.append(f"| {label_with_unit(label, unit)} | " + " | ".join(cells) + " |")
        lines += ["", f"### Mann–Whitney U tests ({self.reference} vs each policy, two-sided)", "",
                  "| Other | Metric | U | p-value | median (ref) | median (other) |", "|---|---|---|---|---|---|"]
        for t in self.tests():
            lines.append(f"| {t['other']} | {t['metric']} | {t['U']:.1f} | {t['p_value']:.4f} | "
                         f"{t['reference_median']:.3f} | {t['other_median']:.3f} |")
        return "\n".join(lines) + "\n"


def compare_policies(policies: Mapping[str, Callable[[dict], np.ndarray]], make_env: Callable[[], Any],
                     episodes: int, seed: int, scenario: int) -> Comparison:
    """Evaluate each policy on the same ``episodes`` seeds; each gets a fresh env from ``make_env``."""
    results = {}
    for name, policy in policies.items():
        env = make_env()
        try:
            results[name] = evaluate(env, policy, episodes, seed)
        finally:
            env.close()
    reference = next((n for n in results if n.upper() == "TD3"), next(iter(results)))
    return Comparison(results, reference, scenario, seed)


def plot_comparison(comparison: Comparison, out_dir: Path) -> list[Path]:
    """One bar chart (mean with 95% CI error bars) per metric; returns the PNG paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    names = list(comparison.results)
    aggs = {n: r.aggregate() for n, r in comparison.results.items()}
    paths = []
    for key, label, unit in METRICS:
        scale = 100.0 if key in _PERCENT else 1.0
        means = np.array([aggs[n][key]["mean"] for n in names], float) * scale
        lows = np.array([aggs[n][key]["ci_low"] for n in names], float) * scale
        highs = np.array([aggs[n][key]["ci_high"] for n in names], float) * scale
        finite = np.isfinite(means)
        fig, ax = plt.subplots(figsize=(4.8, 3.4), dpi=100)
        err = np.vstack([np.where(finite, means - lows, 0), np.where(finite, highs - means, 0)])
        ax.bar(names, np.where(finite, means, 0), yerr=np.clip(np.nan_to_num(err), 0.0, None), capsize=6,
               color=plt.cm.tab10(np.arange(len(names))))
        ax.set_title(label.replace("\\|", "|"))
        ax.set_ylabel(unit)
        ax.grid(axis="y", alpha=0.3)
        fig.tight_layout()
        path = out_dir / f"compare_{key}.png"
        fig.savefig(path)
        plt.close(fig)
        paths.append(path)
    return paths


def write_comparison(comparison: Comparison, out_dir: Path) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / "comparison.json"
    json_path.write_text(json.dumps(json_safe(comparison.to_dict()), indent=2, allow_nan=False))
    pngs = plot_comparison(comparison, out_dir)
    md = comparison.to_markdown() + "\n" + "\n".join(f"![{p.stem}]({p.name})" for p in pngs) + "\n"
    md_path = out_dir / "comparison.md"
    md_path.write_text(md)
    return {"json": json_path, "markdown": md_path}
