"""Does the learned driver drive well? N training seeds x scenarios, judged on held-out episodes.

For every (scenario, seed) it trains ``av-td3 train --config CONFIG`` (a subprocess; ``--jobs`` of them
at once), then plays every run and the classical controller on the same ``--episodes`` seeded evaluation
episodes with ``av-td3 compare`` (each run as soon as it is trained; evaluation seeds start at ``evaluation.seed`` = 10,000: disjoint from
the training seeds, so every route and every traffic draw is one the policy never trained on). It prints
one JSON object and writes it to ``--out``:

- ``runs``: per run, the wall time, the learning curve (every evaluation of ``metrics.jsonl``) and the
  held-out metrics (success rate, route completion, collisions and lane invasions per km, mean |jerk|,
  minimum TTC, mean speed);
- ``classical``: the classical controller's metrics on the same episodes, per scenario;
- ``aggregate``: per scenario, across seeds, the IQM (interquartile mean), mean, median and a
  stratified-bootstrap 95% CI of each metric, and how many seeds reach the floors of ``--min-success``;
- ``floors``: the main-job floors checked (>= 80% success for at least 4 of 5 seeds, mean |jerk| <= 2x
  the classical controller's, <= 1 lane invasion per km, wall time per run).

    # the main job, 5 seeds, 2 at a time on a 2-core CPU (about 40 min)
    python benchmarks/learning.py --seeds 0 1 2 3 4 --jobs 2 --out docs/bench/bench_learning.json
    # longer runs at every density on a GPU machine (several seeds share the GPU)
    python benchmarks/learning.py --seeds 0 1 2 --scenarios 0 1 2 --steps 200000 --device cuda --jobs 6 \
        --set env.traffic_mix=[0,1,2]
    # plots of an earlier result, no training
    python benchmarks/learning.py --plot-only docs/bench/bench_learning.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from av_td3.report.aggregate import aggregate_with_ci
from machine import machine_info  # noqa: E402  (benchmarks/machine.py)

ROOT = Path(__file__).resolve().parents[1]
#: Metrics read from ``av-td3 compare``'s comparison.json, per policy.
METRICS = ("success_rate", "route_completion", "collisions_per_km", "lane_invasions_per_km", "mean_abs_jerk_mps3",
           "min_ttc_s", "mean_speed_kmh", "episode_reward", "episode_length")


def av_td3(*args: str, log: Path, threads: int) -> float:
    """Run the ``av-td3`` CLI with ``args``; returns the wall time in seconds. Output goes to ``log``."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    t0 = time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.run([sys.executable, "-m", "av_td3.cli", *args], stdout=f, stderr=subprocess.STDOUT, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"av-td3 {' '.join(args[:2])} failed (exit {proc.returncode}); see {log}")
    return time.perf_counter() - t0


def train(scenario: int, seed: int, a: argparse.Namespace, work: Path) -> dict:
    name = f"s{scenario}_seed{seed}"
    sets = [f"training.seed={seed}", f"env.scenario={scenario}", "logging.progress_bar=false",
            f"logging.log_dir={work / 'runs'}", f"training.device={a.device}", "evaluation.video=false",
            f"evaluation.num_episodes={a.eval_episodes}", *a.set]
    if a.steps:
        sets.append(f"training.max_timesteps={a.steps}")
    args = ["train", "--config", str(a.config), "--run-name", name]
    for s in sets:
        args += ["--set", s]
    print(f"[LEARNING] training {name}", file=sys.stderr, flush=True)
    wall = av_td3(*args, log=work / f"{name}.train.log", threads=a.threads)
    run_dir = work / "runs" / name
    curve = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()
             if line.startswith('{"type": "eval"')]
    summary = json.loads((run_dir / "summary.json").read_text())
    print(f"[LEARNING] {name} done in {wall:.0f} s: final eval success {summary.get('eval_success_rate')}",
          file=sys.stderr, flush=True)
    return {"scenario": scenario, "seed": seed, "run_dir": str(run_dir), "wall_time_s": wall,
            "env_steps_per_s": summary.get("env_steps_per_s"), "updates_per_s": summary.get("updates_per_s"),
            "cnn_weight_change": summary.get("cnn_weight_change"),
            "curve": [{k: c.get(k) for k in ("step", "success_rate", "route_completion", "episode_reward",
                                            "mean_abs_jerk_mps3", "lane_invasions_per_km")} for c in curve]}


def compare(scenario: int, policies: dict[str, str], classical: bool, a: argparse.Namespace, work: Path) -> dict:
    """Policies ``{name: run_dir}`` (and/or the classical controller) on the held-out episodes of ``scenario``."""
    tag = "_".join(policies) or "classical"
    out = work / f"compare_s{scenario}_{tag}"
    args = ["compare", "--episodes", str(a.episodes), "--scenario", str(scenario), "--output", str(out),
            "--device", a.device]
    if classical:
        args.append("--classical")
    for name, run_dir in policies.items():
        args += ["--checkpoint", f"{name}={run_dir}"]
    for s in a.set:  # the same env settings as training (e.g. the route kind)
        if s.startswith("env.") and not s.startswith("env.traffic_mix"):
            args += ["--set", s]
    av_td3(*args, log=work / f"compare_s{scenario}_{tag}.log", threads=a.threads)
    results = json.loads((out / "comparison.json").read_text())["policies"]
    return {name: {m: res["aggregate"][m] for m in METRICS} for name, res in results.items()}


def train_and_judge(scenario: int, seed: int, a: argparse.Namespace, work: Path) -> dict:
    """One training run, then its held-out evaluation (in the same worker, so runs overlap): the final
    policy (``held_out``) and ``checkpoints/best.pt`` (``held_out_best``, the policy the validation
    evaluations during training chose; validation and held-out seeds are disjoint)."""
    run = train(scenario, seed, a, work)
    best = Path(run["run_dir"]) / "checkpoints" / "best.pt"
    policies = {f"seed{seed}": run["run_dir"], **({f"seed{seed}_best": str(best)} if best.is_file() else {})}
    results = compare(scenario, policies, False, a, work)
    run["held_out"] = results[f"seed{seed}"]
    run["held_out_best"] = results.get(f"seed{seed}_best")
    return run


# ----------------------------------------------------------------------------------------------
def aggregate(values: list[float | None], seed: int = 0) -> dict:
    """IQM, mean and median over seeds, each with a (stratified) bootstrap 95% CI (``av_td3.report.aggregate``)."""
    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    if x.size == 0:
        return {"n": 0}
    stats = aggregate_with_ci(x.reshape(-1, 1), seed=seed)
    return {"n": int(x.size), **{name: interval.to_dict() for name, interval in stats.items()}}


def _at_most(value: float | None, limit: float) -> bool:
    """``value <= limit``; a metric that could not be measured (None, e.g. per km with 0 km) fails."""
    return value is not None and value <= limit


def floors(runs: list[dict], classical: dict, min_success: float, policy: str = "held_out") -> dict:
    """The main job's floors, per scenario: success, comfort (jerk) and lane invasions, per seed, for the
    final policies (``policy="held_out"``) or the best checkpoints (``"held_out_best"``)."""
    runs = [{**r, "held_out": r[policy]} for r in runs if r.get(policy)]
    out = {}
    for scenario in sorted({r["scenario"] for r in runs}):
        rs = [r for r in runs if r["scenario"] == scenario]
        ref = classical[str(scenario)]
        jerk_limit = 2.0 * ref["mean_abs_jerk_mps3"]["mean"]
        per_seed = {
            r["seed"]: {
                "success": (r["held_out"]["success_rate"]["mean"] or 0.0) >= min_success,
                "jerk": _at_most(r["held_out"]["mean_abs_jerk_mps3"]["mean"], jerk_limit),
                "lane_invasions": _at_most(r["held_out"]["lane_invasions_per_km"]["mean"], 1.0),
            } for r in rs
        }
        out[str(scenario)] = {
            "min_success": min_success, "jerk_limit_mps3": jerk_limit,
            "seeds_meeting_all": sum(all(v.values()) for v in per_seed.values()), "seeds": len(rs),
            "seeds_meeting_success": sum(v["success"] for v in per_seed.values()),
            "max_wall_time_s": max(r["wall_time_s"] for r in rs), "per_seed": per_seed,
        }
    return out


def plot(result: dict, path: Path) -> None:
    """Evaluation success over training, one line per seed and the mean, one panel per scenario."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scenarios = sorted({r["scenario"] for r in result["runs"]})
    fig, axes = plt.subplots(1, len(scenarios), figsize=(5.5 * len(scenarios), 3.8), squeeze=False)
    for ax, sc in zip(axes[0], scenarios):
        rs = [r for r in result["runs"] if r["scenario"] == sc]
        for r in rs:
            steps = [c["step"] for c in r["curve"]]
            ax.plot(steps, [100 * c["success_rate"] for c in r["curve"]], alpha=0.45, lw=1, label=f"seed {r['seed']}")
        agg = result["aggregate"][str(sc)]["success_rate"]
        ref = result["classical"][str(sc)]["success_rate"]["mean"]
        ax.axhline(100 * ref, color="k", ls="--", lw=1, label=f"classical {100 * ref:.0f}%")
        if agg["n"]:
            iqm = agg["iqm"]["point"]
            ax.axhline(100 * iqm, color="C3", lw=2, label=f"TD3 held-out IQM {100 * iqm:.0f}%")
        ax.set(title=f"scenario {sc}", xlabel="env steps", ylabel="evaluation success (%)", ylim=(-3, 103))
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", type=Path, default=ROOT / "configs" / "td3.yaml")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--scenarios", type=int, nargs="+", default=[0], choices=[0, 1, 2])
    p.add_argument("--steps", type=int, default=None, help="training.max_timesteps (default: the config's)")
    p.add_argument("--episodes", type=int, default=20, help="held-out evaluation episodes per policy")
    p.add_argument("--eval-episodes", type=int, default=5, help="episodes of each evaluation during training")
    p.add_argument("--jobs", type=int, default=1, help="trainings at once")
    p.add_argument("--threads", type=int, default=1, help="torch threads per training")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    p.add_argument("--min-success", type=float, default=0.8)
    p.add_argument("--set", action="append", default=[], help="config override for every run (repeatable)")
    p.add_argument("--work-dir", type=Path, default=ROOT / "runs" / "learning")
    p.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    p.add_argument("--plot", type=Path, default=None, help="learning-curve PNG (default: beside --out)")
    p.add_argument("--plot-only", type=Path, default=None, help="re-plot an earlier JSON and exit")
    a = p.parse_args()
    if a.plot_only:
        plot(json.loads(a.plot_only.read_text()), a.plot or a.plot_only.with_suffix(".png"))
        return 0

    a.work_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    jobs = [(sc, s) for sc in a.scenarios for s in a.seeds]
    with ThreadPoolExecutor(max_workers=a.jobs + 1) as pool:
        # the classical controller plays the same held-out episodes while the policies train
        ref = {sc: pool.submit(compare, sc, {}, True, a, a.work_dir) for sc in a.scenarios}
        futures = [pool.submit(train_and_judge, sc, s, a, a.work_dir) for sc, s in jobs]
        runs = []
        for f in futures:  # each finished run is written at once: a time limit keeps what is done
            runs.append(f.result())
            if a.out:
                done = {str(sc): r.result()["Classical"] for sc, r in ref.items() if r.done() and not r.exception()}
                a.out.parent.mkdir(parents=True, exist_ok=True)
                a.out.with_suffix(".partial.json").write_text(
                    json.dumps({"overrides": a.set, "runs": runs, "classical": done}, indent=2, allow_nan=False))
        classical = {str(sc): f.result()["Classical"] for sc, f in ref.items()}
    def across_seeds(policy: str) -> dict:
        return {str(sc): {m: aggregate([r[policy][m]["mean"] for r in runs if r["scenario"] == sc and r.get(policy)])
                          for m in METRICS} for sc in a.scenarios}

    agg, agg_best = across_seeds("held_out"), across_seeds("held_out_best")
    result = {
        "benchmark": "learning", "config": str(a.config.relative_to(ROOT) if a.config.is_relative_to(ROOT) else a.config),
        "overrides": a.set, "steps": a.steps, "seeds": a.seeds, "scenarios": a.scenarios, "episodes": a.episodes,
        "device": a.device, "jobs": a.jobs, "threads_per_job": a.threads,
        "wall_time_s": time.perf_counter() - t0, "machine": machine_info(),
        "runs": runs, "classical": classical, "aggregate": agg, "floors": floors(runs, classical, a.min_success),
        "aggregate_best": agg_best, "floors_best": floors(runs, classical, a.min_success, "held_out_best"),
    }
    text = json.dumps(result, indent=2, allow_nan=False)
    print(text)
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(text + "\n")
        a.out.with_suffix(".partial.json").unlink(missing_ok=True)
        plot(result, a.plot or a.out.with_suffix(".png"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
