"""Ablation of random-shift augmentation x n-step returns: TD3 on the town, scenario 0, by measurement.

    python benchmarks/ablation_augment_nstep.py [--steps 10000] [--seeds 0,1] [--parallel 2]
        [--eval-freq N] [--eval-episodes N] [--out result.json] [--work-dir DIR]

For every ``algorithm.image_pad`` in ``--pads`` (default 0,4) x ``algorithm.n_step`` in ``--n-steps``
(default 1,3) x seed in ``--seeds``, one ``av-td3 train --config configs/td3.yaml`` subprocess trains the
main job's configuration with a shorter budget. The budget keys are scaled from the main job
(20,000 steps, 2,000 random steps, noise decay over 15,000 steps, i.e. ending at 85% of the run):

* ``training.max_timesteps = --steps``;
* ``algorithm.start_timesteps = min(2000, steps // 4)`` (2,000 from 8,000 steps on);
* ``exploration.expl_noise_decay_steps = 0.85 * steps - start_timesteps`` (15,000 at 20,000 steps);
* ``training.eval_freq = --eval-freq`` (default ``steps // 5``), ``evaluation.num_episodes = --eval-episodes``
  (default: the config's);
* checkpoints only at the end, no video, no TensorBoard, no progress bar; device cpu.

Evaluation episodes use the config's fixed ``evaluation.seed``, so every run is scored on the same
episodes. Each run gets ``OMP_NUM_THREADS=1`` (torch then uses one intra-op thread), and ``--parallel``
runs go at once. Per setting the script reports the final evaluation (mean episode reward, route
completion, mean speed, success rate) and the area under the eval-reward curve (trapezoid over the
``eval`` records of ``metrics.jsonl``, also divided by the step span: the curve's mean reward), each as
mean / std / min / max over seeds with the per-seed values; plus each setting's difference from the
default (pad 4, n-step 3) next to the seed spread. Progress goes to stderr; stdout is one JSON object.
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from machine import machine_info  # noqa: E402  (benchmarks/machine.py)

REPO = Path(__file__).resolve().parent.parent
DEFAULT_SETTING = (4, 3)  # (image_pad, n_step): the shipped defaults
FINAL_KEYS = {  # summary.json / eval record key -> reported name
    "episode_reward": "eval_mean_reward",
    "route_completion": "eval_route_completion",
    "mean_speed_kmh": "eval_mean_speed_kmh",
    "success_rate": "eval_success_rate",
}
_print_lock = threading.Lock()


def log(message: str) -> None:
    with _print_lock:
        print(f"[ABLATION {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def int_list(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def av_td3_command() -> list[str]:
    """The ``av-td3`` script of the running interpreter's environment (the venv), else the one on PATH."""
    local = Path(sys.executable).parent / "av-td3"
    if local.is_file():
        return [str(local)]
    found = shutil.which("av-td3")
    if found:
        return [found]
    return [sys.executable, "-m", "av_td3.cli"]


def budget_overrides(steps: int, eval_freq: int, eval_episodes: int | None) -> dict[str, object]:
    start = min(2000, steps // 4)
    decay = max(1, round(0.85 * steps) - start)
    out: dict[str, object] = {
        "training.max_timesteps": steps,
        "algorithm.start_timesteps": start,
        "exploration.expl_noise_decay_steps": decay,
        "training.eval_freq": eval_freq,
        "training.checkpoint_freq": 0,
        "training.device": "cpu",
        "env.scenario": 0,
        "evaluation.video": "false",
        "logging.progress_bar": "false",
        "logging.tensorboard": "false",
    }
    if eval_episodes is not None:
        out["evaluation.num_episodes"] = eval_episodes
    return out


def read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                pass  # a line cut by a killed run
    return rows


def curve_area(points: list[tuple[int, float]]) -> tuple[float | None, float | None]:
    """Trapezoid area under (step, reward) and that area over the step span (the curve's mean)."""
    pts = sorted((s, r) for s, r in points if r is not None and math.isfinite(r))
    if not pts:
        return None, None
    if len(pts) == 1:
        return 0.0, pts[0][1]
    area = sum((s1 - s0) * (r0 + r1) / 2 for (s0, r0), (s1, r1) in zip(pts, pts[1:]))
    return area, area / (pts[-1][0] - pts[0][0])


def run_env(src: Path | None) -> dict:
    """The runs' environment: one thread each, and ``--src`` (if given) first on PYTHONPATH."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
           "PYTHONUNBUFFERED": "1"}
    if src is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(src), *filter(None, [os.environ.get("PYTHONPATH")])])
    return env


def code_info(env: dict) -> dict:
    """Which av_td3 the runs import, and the repository's commit (dirty = uncommitted changes)."""
    info: dict = {}
    try:
        lines = subprocess.run(
            [sys.executable, "-c", "import av_td3, torch; print(av_td3.__file__); print(torch.get_num_threads())"],
            env=env, capture_output=True, text=True, check=True, cwd=REPO).stdout.split()
        info["av_td3_imported_from"], info["torch_threads_in_runs"] = lines[0], int(lines[1])
    except (subprocess.CalledProcessError, IndexError, OSError) as exc:
        info["av_td3_imported_from"] = f"unknown ({exc})"
    try:
        info["git_commit"] = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True,
                                            text=True, check=True).stdout.strip()
        info["git_dirty"] = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                                                capture_output=True, text=True, check=True).stdout.strip())
    except (subprocess.CalledProcessError, OSError):
        pass
    return info


def run_one(job: dict, cmd_base: list[str], config: Path, extra: list[str], runs_dir: Path, env: dict) -> dict:
    pad, n_step, seed = job["image_pad"], job["n_step"], job["seed"]
    name = f"pad{pad}_n{n_step}_seed{seed}"
    run_dir = runs_dir / name
    overrides = {**job["overrides"], "algorithm.image_pad": pad, "algorithm.n_step": n_step, "training.seed": seed}
    cmd = [*cmd_base, "train", "--config", str(config), "--log-dir", str(runs_dir), "--run-name", name]
    for key, value in overrides.items():
        cmd += ["--set", f"{key}={value}"]
    for item in extra:
        cmd += ["--set", item]
    log(f"start {name}")
    t0 = time.perf_counter()
    log_path = runs_dir / f"{name}.log"
    with open(log_path, "w") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        job["proc"] = proc
        for line in proc.stdout:
            out.write(line)
            if line.startswith(("[EVAL]", "[HEALTH]", "av-td3: error", "Traceback")):
                log(f"{name}: {line.rstrip()}")
        rc = proc.wait()
    wall = time.perf_counter() - t0
    result: dict = {"run": name, "image_pad": pad, "n_step": n_step, "seed": seed, "returncode": rc,
                    "wall_s": round(wall, 1), "log": str(log_path)}
    evals = [r for r in read_jsonl(run_dir / "metrics.jsonl") if r.get("type") == "eval"]
    result["eval_curve"] = [{"step": r["step"], "episode_reward": r.get("episode_reward"),
                             "route_completion": r.get("route_completion"),
                             "mean_speed_kmh": r.get("mean_speed_kmh"), "success_rate": r.get("success_rate")}
                            for r in evals]
    area, curve_mean = curve_area([(r["step"], r.get("episode_reward")) for r in evals])
    result["eval_reward_auc"] = area
    result["eval_reward_auc_per_step"] = curve_mean
    summary_path = run_dir / "summary.json"
    if summary_path.is_file():
        s = json.loads(summary_path.read_text())
        for key in FINAL_KEYS.values():
            result[key] = s.get(key)
        for key in ("total_timesteps", "updates", "episodes", "mean_episode_reward", "env_steps_per_s",
                    "updates_per_s", "cnn_weight_change", "wall_time_s"):
            result[f"train_{key}" if not key.startswith(("total", "updates", "episodes")) else key] = s.get(key)
    elif evals:  # no summary (failed run): the last evaluation it made
        for src, dst in FINAL_KEYS.items():
            result[dst] = evals[-1].get(src)
    if rc != 0:
        result["log_tail"] = log_path.read_text().splitlines()[-15:]
    final = result.get("eval_mean_reward")
    log(f"done  {name}: rc={rc} wall={wall / 60:.1f} min final_eval_reward="
        f"{'n/a' if final is None else f'{final:.1f}'} auc/step="
        f"{'n/a' if curve_mean is None else f'{curve_mean:.1f}'}")
    return result


def describe(values: list[float | None]) -> dict:
    xs = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not xs:
        return {"n": 0, "mean": None, "std": None, "min": None, "max": None, "values": values}
    return {"n": len(xs), "mean": statistics.fmean(xs), "std": statistics.stdev(xs) if len(xs) > 1 else None,
            "min": min(xs), "max": max(xs), "values": values}


METRICS = ("eval_mean_reward", "eval_route_completion", "eval_mean_speed_kmh", "eval_success_rate",
           "eval_reward_auc", "eval_reward_auc_per_step")


def aggregate(runs: list[dict], pads: list[int], n_steps: list[int]) -> dict:
    settings = {}
    for pad, n in itertools.product(pads, n_steps):
        mine = sorted((r for r in runs if r["image_pad"] == pad and r["n_step"] == n), key=lambda r: r["seed"])
        settings[f"pad{pad}_n{n}"] = {
            "image_pad": pad, "n_step": n, "seeds": [r["seed"] for r in mine],
            "failed_seeds": [r["seed"] for r in mine if r["returncode"] != 0],
            **{m: describe([r.get(m) for r in mine]) for m in METRICS},
        }
    return settings


def compare_to_default(settings: dict) -> dict:
    """Each setting minus the default, per metric, next to the seed spread (paired by seed where possible)."""
    ref_key = f"pad{DEFAULT_SETTING[0]}_n{DEFAULT_SETTING[1]}"
    ref = settings.get(ref_key)
    if ref is None:
        return {}
    out = {"reference": ref_key}
    for key, s in settings.items():
        if key == ref_key:
            continue
        row = {}
        for m in ("eval_mean_reward", "eval_route_completion", "eval_reward_auc_per_step"):
            a, b = s[m], ref[m]
            if a["mean"] is None or b["mean"] is None:
                continue
            paired = [x - y for x, y, sa, sb in zip(a["values"], b["values"], s["seeds"], ref["seeds"])
                      if sa == sb and x is not None and y is not None]
            stds = [v for v in (a["std"], b["std"]) if v is not None]
            spread = statistics.fmean(stds) if stds else None
            row[m] = {"diff_of_means": a["mean"] - b["mean"], "paired_diffs_by_seed": paired,
                      "mean_seed_std": spread,
                      "diff_over_seed_std": (a["mean"] - b["mean"]) / spread if spread else None}
        out[key] = row
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10_000, help="env steps per run (training.max_timesteps)")
    parser.add_argument("--seeds", type=int_list, default=[0], help="comma-separated training seeds, e.g. 0,1")
    parser.add_argument("--eval-freq", type=int, default=None, help="env steps between evaluations (default steps//5)")
    parser.add_argument("--eval-episodes", type=int, default=None, help="episodes per evaluation (default: config)")
    parser.add_argument("--parallel", type=int, default=2, help="runs at once (each with one torch thread)")
    parser.add_argument("--pads", type=int_list, default=[0, 4], help="algorithm.image_pad values")
    parser.add_argument("--n-steps", type=int_list, default=[1, 3], help="algorithm.n_step values")
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "td3.yaml")
    parser.add_argument("--set", dest="extra", action="append", default=[], metavar="KEY=VALUE",
                        help="extra config override for every run (repeatable)")
    parser.add_argument("--work-dir", type=Path, default=None, help="keep run dirs here (default: a temp dir, removed)")
    parser.add_argument("--src", type=Path, default=None,
                        help="put this source dir first on the runs' PYTHONPATH (e.g. a `git archive` snapshot, so "
                             "edits to the working tree during the grid do not change the code under test)")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.parallel < 1 or not args.seeds:
        parser.error("--steps and --parallel must be >= 1 and --seeds non-empty")
    eval_freq = args.eval_freq if args.eval_freq is not None else max(args.steps // 5, 1)
    overrides = budget_overrides(args.steps, eval_freq, args.eval_episodes)

    tmp = None
    if args.work_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="ablation_augment_nstep_")
        runs_dir = Path(tmp.name)
    else:
        runs_dir = args.work_dir.resolve()
        runs_dir.mkdir(parents=True, exist_ok=True)
    # seeds outermost: with --parallel 2 and an early stop, whole seeds of the grid are done first
    jobs = [{"image_pad": p, "n_step": n, "seed": s, "overrides": overrides}
            for s, p, n in itertools.product(args.seeds, args.pads, args.n_steps)]
    cmd_base = av_td3_command()
    env = run_env(args.src.resolve() if args.src else None)
    code = code_info(env)
    log(f"av_td3 from {code.get('av_td3_imported_from')}")
    log(f"{len(jobs)} runs, {args.parallel} at once, {args.steps} steps each, eval every {eval_freq}; "
        f"run dirs in {runs_dir}")
    machine_start = machine_info()
    started = time.perf_counter()
    try:
        with ThreadPoolExecutor(max_workers=args.parallel) as pool:
            runs = list(pool.map(lambda j: run_one(j, cmd_base, args.config.resolve(), args.extra, runs_dir, env), jobs))
    except KeyboardInterrupt:
        for j in jobs:
            proc = j.get("proc")
            if proc is not None and proc.poll() is None:
                proc.terminate()
        raise
    wall = time.perf_counter() - started

    settings = aggregate(runs, args.pads, args.n_steps)
    ranked = sorted((k for k in settings if settings[k]["eval_reward_auc_per_step"]["mean"] is not None),
                    key=lambda k: settings[k]["eval_reward_auc_per_step"]["mean"], reverse=True)
    import torch

    result = {
        "benchmark": "ablation_augment_nstep",
        "date": datetime.date.today().isoformat(),
        "setup": {
            "config": str(args.config), "env": "town", "scenario": 0, "steps": args.steps, "seeds": args.seeds,
            "grid": {"algorithm.image_pad": args.pads, "algorithm.n_step": args.n_steps},
            "overrides": {k: v for k, v in overrides.items()}, "extra_overrides": args.extra,
            "eval_freq": eval_freq, "parallel": args.parallel, "threads_per_run": 1,
            "auc": "trapezoid of eval episode_reward over env steps, first to last eval; auc_per_step = "
                   "auc / step span (the curve's mean reward)",
        },
        "code": {**code, "src_override": str(args.src) if args.src else None},
        "settings": settings,
        "ranking_by_auc_per_step": ranked,
        "vs_default": compare_to_default(settings),
        "runs": runs,
        "total_wall_s": round(wall, 1),
        "machine": {**machine_start, "load_avg_1min_end": os.getloadavg()[0], "torch": torch.__version__,
                    "torch_threads_per_run": 1},
    }
    text = json.dumps(result, indent=2)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(text)
    if tmp is not None:
        tmp.cleanup()
    return 0 if all(r["returncode"] == 0 for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
