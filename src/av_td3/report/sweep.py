"""``av-td3 report SWEEP_DIR``: aggregates across seeds per setting, after rliable (Agarwal et al. 2021).

Per setting (grid point) and metric, over the seeds whose trial finished: IQM, mean and median with
stratified-bootstrap 95% CIs (``report/aggregate.py``); the probability that one setting beats another;
IQM learning curves with CI bands over the evaluations every run made; a performance profile
(fraction of runs above each score). Writes ``sweep_summary.json``, ``sweep_report.md`` and
``sweep_plots/*.png`` in the sweep directory. Failed trials are listed and left out of the numbers.

Metrics are the final evaluation of each run (``summary.json``): ``eval_success_rate`` (0..1),
``eval_route_completion`` (0..1) and ``eval_mean_reward`` (the evaluation episodes' mean return); the
curves use the ``eval`` records of ``metrics.jsonl`` (``success_rate``, ``route_completion``,
``episode_reward``). ``return_auc`` is the area under a run's eval-return curve (trapezoid over env
steps) divided by its step span: the curve's mean return, which ranks learning speed, not just the end.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from av_td3.io import atomic_write_text  # noqa: E402
from av_td3.report import aggregate as agg  # noqa: E402
from av_td3.training.run_logger import read_metrics  # noqa: E402

#: metric name -> (summary.json key, metrics.jsonl eval key, label)
METRICS = {
    "success_rate": ("eval_success_rate", "success_rate", "final success rate"),
    "route_completion": ("eval_route_completion", "route_completion", "final route completion"),
    "return": ("eval_mean_reward", "episode_reward", "final evaluation return"),
    "return_auc": (None, "episode_reward", "mean evaluation return over the run (AUC / step)"),
}
#: Metrics with a learning curve (the AUC is a summary of one).
CURVE_METRICS = tuple(m for m, (key, _, _) in METRICS.items() if key is not None)
REPS = agg.DEFAULT_REPS
CURVE_REPS = 1000  # per evaluation step; the bands are pointwise
BOOTSTRAP_SEED = 0  # fixed: the same sweep gives the same report


class SweepReportError(ValueError):
    """The directory is not a sweep or has nothing to aggregate (exit 2)."""


def collect(sweep_dir: Path) -> dict[str, Any]:
    """Per setting: its grid point, seeds, failed seeds, final scores and eval curves of finished trials."""
    manifest = json.loads((sweep_dir / "sweep.json").read_text())
    settings: dict[str, Any] = {}
    for name, params in manifest["settings"].items():
        settings[name] = {"params": params, "seeds": [], "failed_seeds": [], "scores": {m: [] for m in METRICS},
                          "curves": {m: {} for m in METRICS}}
    for trial in manifest["trials"]:
        entry = settings[trial["setting"]]
        run_dir = sweep_dir / "trials" / trial["name"]
        summary_path = run_dir / "summary.json"
        summary = json.loads(summary_path.read_text()) if summary_path.is_file() else None
        if summary is None or any(key and summary.get(key) is None for key, _, _ in METRICS.values()):
            entry["failed_seeds"].append(trial["seed"])
            continue
        entry["seeds"].append(trial["seed"])
        evals = [r for r in read_metrics(run_dir) if r.get("type") == "eval"]
        for metric, (key, eval_key, _) in METRICS.items():
            curve = {int(r["step"]): float(r[eval_key]) for r in evals if r.get(eval_key) is not None}
            entry["curves"][metric][trial["seed"]] = curve
            entry["scores"][metric].append(float(summary[key]) if key else curve_mean(curve))
    return {"name": manifest["name"], "grid": manifest["grid"], "settings": settings}


def curve_mean(curve: dict[int, float]) -> float:
    """Trapezoid area under ``{step: value}`` over the step span; the value itself for one point."""
    steps = sorted(curve)
    if len(steps) == 1:
        return curve[steps[0]]
    values = [curve[s] for s in steps]
    area = sum((s1 - s0) * (v0 + v1) / 2 for s0, s1, v0, v1 in zip(steps, steps[1:], values, values[1:]))
    return area / (steps[-1] - steps[0])


def summarize(data: dict[str, Any], reps: int = REPS, curve_reps: int = CURVE_REPS) -> dict[str, Any]:
    """The numbers of ``sweep_summary.json`` (see the module docstring)."""
    settings = data["settings"]
    out: dict[str, Any] = {
        "sweep": data["name"], "grid": data["grid"],
        "bootstrap": {"reps": reps, "curve_reps": curve_reps, "confidence": agg.DEFAULT_CONFIDENCE,
                      "seed": BOOTSTRAP_SEED, "method": "percentile interval, runs resampled with replacement "
                      "within each task (one task per setting here)"},
        "settings": {}, "probability_of_improvement": {m: [] for m in METRICS},
        "performance_profile": {}, "learning_curves": {m: {} for m in CURVE_METRICS},
    }
    ready = [s for s, e in settings.items() if e["seeds"]]
    for name, e in settings.items():
        row: dict[str, Any] = {"params": e["params"], "seeds": e["seeds"], "failed_seeds": e["failed_seeds"],
                               "metrics": {}}
        for metric in METRICS:
            scores = e["scores"][metric]
            row["metrics"][metric] = {"values": scores, **(
                {k: v.to_dict() for k, v in agg.aggregate_with_ci(scores, reps, seed=BOOTSTRAP_SEED).items()}
                if scores else {"iqm": None, "mean": None, "median": None})}
        out["settings"][name] = row
    for metric in METRICS:
        for x, y in itertools.combinations(ready, 2):
            pi = agg.probability_of_improvement_ci(settings[x]["scores"][metric], settings[y]["scores"][metric],
                                                   reps, seed=BOOTSTRAP_SEED)
            out["probability_of_improvement"][metric].append({"x": x, "y": y, "p_x_better": pi.to_dict()})
        values = [v for s in ready for v in settings[s]["scores"][metric]]
        if values:
            taus = np.linspace(min(values), max(values), 41) if max(values) > min(values) else np.array([values[0]])
            profile: dict[str, Any] = {"taus": taus.tolist(), "settings": {}}
            for s in ready:
                p, lo, hi = agg.performance_profile_ci(settings[s]["scores"][metric], taus, reps, seed=BOOTSTRAP_SEED)
                profile["settings"][s] = {"fraction_above": p.tolist(), "low": lo.tolist(), "high": hi.tolist()}
            out["performance_profile"][metric] = profile
        for s in ready if metric in CURVE_METRICS else ():
            out["learning_curves"][metric][s] = _curve(settings[s]["curves"][metric], curve_reps)
    return out


def _curve(per_seed: dict[int, dict[int, float]], reps: int) -> dict[str, list]:
    """IQM across seeds at every evaluation step that all seeds of the setting logged."""
    steps = sorted(set.intersection(*(set(c) for c in per_seed.values()))) if per_seed else []
    curve: dict[str, list] = {"steps": steps, "iqm": [], "low": [], "high": []}
    for step in steps:
        ci = agg.stratified_bootstrap_ci([c[step] for c in per_seed.values()], agg.iqm, reps, seed=BOOTSTRAP_SEED)
        curve["iqm"].append(ci.point)
        curve["low"].append(ci.low)
        curve["high"].append(ci.high)
    return curve


# --------------------------------------------------------------------------------------------------
def plot(summary: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    """PNGs: aggregate intervals, IQM learning curves and performance profiles, one file per metric."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    names = list(summary["settings"])
    colors = {s: plt.cm.tab10(i % 10) for i, s in enumerate(names)}

    fig, axes = plt.subplots(len(METRICS), 3, figsize=(11, 1.2 + 0.45 * len(names) * len(METRICS)), squeeze=False)
    for r, (metric, (_, _, label)) in enumerate(METRICS.items()):
        for c, stat in enumerate(("iqm", "mean", "median")):
            ax = axes[r][c]
            for i, s in enumerate(names):
                iv = summary["settings"][s]["metrics"][metric][stat]
                if iv is not None:
                    ax.barh(i, iv["high"] - iv["low"], left=iv["low"], height=0.6, color=colors[s], alpha=0.6)
                    ax.plot([iv["point"]] * 2, [i - 0.3, i + 0.3], color="k", lw=1.5)
            ax.set_yticks(range(len(names)), names if c == 0 else [""] * len(names))
            ax.set_title(f"{stat.upper() if stat == 'iqm' else stat.capitalize()}: {label}", fontsize=9)
            ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    paths["aggregates"] = out_dir / "aggregates.png"
    fig.savefig(paths["aggregates"])
    plt.close(fig)

    for metric, (_, _, label) in METRICS.items():
        if metric in CURVE_METRICS:
            paths[f"curve_{metric}"] = _plot_curves(summary["learning_curves"][metric], colors, label,
                                                    out_dir / f"curve_{metric}.png")
        profile = summary["performance_profile"].get(metric)
        if profile:
            fig, ax = plt.subplots(figsize=(6.4, 3.8), dpi=100)
            for s, p in profile["settings"].items():
                ax.plot(profile["taus"], p["fraction_above"], color=colors[s], label=s, drawstyle="steps-post")
                ax.fill_between(profile["taus"], p["low"], p["high"], color=colors[s], alpha=0.2, step="post")
            ax.set_title(f"Performance profile: {label}")
            ax.set_xlabel(r"score $\tau$")
            ax.set_ylabel(r"fraction of runs with score > $\tau$")
            ax.set_ylim(-0.02, 1.02)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
            fig.tight_layout()
            paths[f"profile_{metric}"] = out_dir / f"profile_{metric}.png"
            fig.savefig(paths[f"profile_{metric}"])
            plt.close(fig)
    return paths


def _plot_curves(curves: dict[str, Any], colors: dict[str, Any], label: str, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6.4, 3.8), dpi=100)
    for s, curve in curves.items():
        if curve["steps"]:
            ax.plot(curve["steps"], curve["iqm"], color=colors[s], label=s, marker="o", ms=3)
            ax.fill_between(curve["steps"], curve["low"], curve["high"], color=colors[s], alpha=0.2)
    ax.set_title(f"IQM {label.replace('final ', '')} across seeds (95% CI)")
    ax.set_xlabel("env steps")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def to_markdown(summary: dict[str, Any], pngs: dict[str, Path]) -> str:
    b = summary["bootstrap"]
    lines = [f"# Sweep report: {summary['sweep']}", "",
             f"Grid: {', '.join(f'`{k}` in {v}' for k, v in summary['grid'].items())}. "
             f"Aggregates over seeds with {int(100 * b['confidence'])}% stratified-bootstrap CIs "
             f"({b['reps']} resamples, seed {b['seed']}); IQM = mean of the middle 50% of runs.", ""]
    for metric, (_, _, label) in METRICS.items():
        lines += [f"## {label[0].upper() + label[1:]}", "", "| Setting | Seeds | IQM [95% CI] | Mean [95% CI] | Median [95% CI] | Per seed |",
                  "|---|---|---|---|---|---|"]
        for s, row in summary["settings"].items():
            m = row["metrics"][metric]
            failed = f" ({len(row['failed_seeds'])} failed)" if row["failed_seeds"] else ""
            lines.append(f"| {s} | {len(row['seeds'])}{failed} | {_iv(m['iqm'])} | {_iv(m['mean'])} | {_iv(m['median'])} | "
                         f"{', '.join(_num(v) for v in m['values']) or '—'} |")
        pis = summary["probability_of_improvement"][metric]
        if pis:
            lines += ["", f"Probability of improvement, P(X > Y) on {label}:", "", "| X | Y | P(X > Y) [95% CI] |", "|---|---|---|"]
            lines += [f"| {p['x']} | {p['y']} | {_iv(p['p_x_better'])} |" for p in pis]
        lines += [""]
    failed = [(s, row["failed_seeds"]) for s, row in summary["settings"].items() if row["failed_seeds"]]
    if failed:
        lines += ["## Failed or unfinished trials (left out)", ""]
        lines += [f"- {s}: seeds {seeds}" for s, seeds in failed] + [""]
    lines += ["## Plots", ""] + [f"![{k}](sweep_plots/{p.name})" for k, p in pngs.items()] + [""]
    return "\n".join(lines)


def _num(v: float) -> str:
    return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"


def _iv(iv: dict[str, float] | None) -> str:
    return "—" if iv is None else f"{_num(iv['point'])} [{_num(iv['low'])}, {_num(iv['high'])}]"


def write_sweep_report(sweep_dir: str | Path, reps: int = REPS, curve_reps: int = CURVE_REPS) -> dict[str, Path]:
    """Write ``sweep_summary.json``, ``sweep_report.md`` and ``sweep_plots/``; returns their paths."""
    sweep_dir = Path(sweep_dir)
    if not (sweep_dir / "sweep.json").is_file():
        raise SweepReportError(f"{sweep_dir} is not a sweep directory (no sweep.json); run av-td3 sweep first")
    data = collect(sweep_dir)
    if not any(e["seeds"] for e in data["settings"].values()):
        raise SweepReportError(f"{sweep_dir}: no trial has finished yet (no trials/*/summary.json); "
                               "wait for the sweep, or finish it with av-td3 sweep ... --resume")
    summary = summarize(data, reps, curve_reps)
    pngs = plot(summary, sweep_dir / "sweep_plots")
    paths = {"json": sweep_dir / "sweep_summary.json", "markdown": sweep_dir / "sweep_report.md"}
    atomic_write_text(paths["json"], json.dumps(summary, indent=2))
    atomic_write_text(paths["markdown"], to_markdown(summary, pngs))
    return {**paths, **pngs}
