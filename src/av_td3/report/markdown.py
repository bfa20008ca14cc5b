"""``av-td3 report RUN_DIR``: a markdown report with learning curves and the seed's success table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from av_td3.report.plots import plot_learning_curves
from av_td3.training.run_logger import read_metrics

#: The seed guide's "Compare with Previous Failure" table: (metric, old value, expectation, test).
SEED_TABLE = (
    ("Vehicle Speed", "0 km/h", "> 5 km/h", "mean_speed_kmh", lambda v: v > 5, lambda v: f"{v:.1f} km/h"),
    ("Mean Reward", "-52,700", "> -30,000", "mean_episode_reward", lambda v: v > -30_000, lambda v: f"{v:,.1f}"),
    ("Success Rate", "0%", "> 5%", "eval_success_rate", lambda v: v > 0.05, lambda v: f"{100 * v:.0f}%"),
    ("CNN Updates", "0 (frozen)", "> 0 (learning)", "cnn_weight_change", lambda v: v > 0, lambda v: f"{v:.3g} (relative weight change)"),
    ("Episode Length", "—", "> 100 steps", "mean_episode_length", lambda v: v > 100, lambda v: f"{v:.0f} steps"),
)


def seed_table(summary: dict[str, Any]) -> str:
    rows = ["| Metric | Old (Bug #13) | Expected (Fixed) | This run | Met |", "|---|---|---|---|---|"]
    for metric, old, expected, key, ok, fmt in SEED_TABLE:
        value = summary.get(key)
        shown, met = ("n/a", "—") if value is None else (fmt(value), "✅" if ok(value) else "❌")
        rows.append(f"| {metric} | {old} | {expected} | {shown} | {met} |")
    return "\n".join(rows)


def write_report(run_dir: str | Path) -> Path:
    """Write ``RUN_DIR/report.md`` and ``RUN_DIR/plots/*.png``; returns the report path."""
    run_dir = Path(run_dir)
    records = read_metrics(run_dir)
    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    pngs = plot_learning_curves(records, run_dir / "plots")
    episodes = [r for r in records if r["type"] == "episode"]
    health = [r for r in records if r["type"] == "health" and r.get("active", True)]

    lines = [f"# Training report: {run_dir.name}", ""]
    if summary:
        lines += ["## Summary", "", "| Key | Value |", "|---|---|"]
        lines += [f"| {k} | {_fmt(v)} |" for k, v in summary.items()]
        lines += ["", "## Compare with Previous Failure (seed guide)", "", seed_table(summary), ""]
    else:
        lines += [f"_No summary.json yet: the run is in progress or was interrupted ({len(episodes)} episodes logged)._", ""]
    lines += ["## Learning curves", ""]
    lines += [f"![{name}](plots/{path.name})" for name, path in pngs.items()]
    lines += [""]
    eval_md = run_dir / "eval" / "eval.md"
    if eval_md.is_file():
        lines += ["## Latest `av-td3 evaluate`", "", eval_md.read_text(), ""]
    lines += ["## Health", ""]
    lines += [f"- step {r['step']}: **{r['problem']}**: {r['message']}" for r in health] or ["No problems detected."]
    path = run_dir / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "n/a" if v is None else str(v)
