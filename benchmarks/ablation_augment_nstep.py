"""Ablation of random-shift augmentation x n-step returns: TD3 on the town, scenario 0, as a sweep.

    python benchmarks/ablation_augment_nstep.py [--steps 10000] [--seeds 0,1,2,3,4,5] [--max-concurrent 2]
        [--address ADDR] [--work-dir DIR] [--resume] [--set KEY=VALUE] [--out result.json]

The grid, seeds and budget are ``configs/sweep_augment_nstep.yaml`` (``algorithm.image_pad`` {0, 4} x
``algorithm.n_step`` {1, 3} x seeds 0-5 of the main job shortened to 10,000 steps). This script runs
``av-td3 sweep`` on it (Ray Tune: local by default, a cluster with ``--address``) and then
``av-td3 report`` on the sweep directory; its JSON is the report's ``sweep_summary.json`` (IQM / mean /
median with stratified-bootstrap 95% CIs, probability of improvement, curves) plus the sweep's timings
and the machine. The results table in docs/benchmarks.md is the report's ``sweep_report.md``.

``--from-legacy-json OLD.json --work-dir DIR`` trains nothing: it rebuilds a sweep directory from the raw
JSON of the loop this script used to run (docs/bench/bench_ablation_augment_nstep.json, which holds every
run's final evaluation and eval curve) and reports it, so those runs get the same aggregates.

``--steps`` and ``--seeds`` write a copy of the sweep file into the work directory with the budget keys
scaled as in the main job (``start_timesteps = min(2000, steps // 4)``, noise decay ending at 85% of
the run, an evaluation every ``steps // 10``). Progress goes to stderr; stdout is one JSON object.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from machine import machine_info  # noqa: E402  (benchmarks/machine.py)

REPO = Path(__file__).resolve().parent.parent
SWEEP_FILE = REPO / "configs" / "sweep_augment_nstep.yaml"


def log(message: str) -> None:
    print(f"[ABLATION {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def int_list(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def budget(steps: int) -> dict[str, int]:
    """The main job's budget keys scaled to ``steps`` (20,000 steps: 2,000 random, decay over 15,000)."""
    start = min(2000, steps // 4)
    return {"training.max_timesteps": steps, "algorithm.start_timesteps": start,
            "exploration.expl_noise_decay_steps": max(1, round(0.85 * steps) - start),
            "training.eval_freq": max(1, steps // 10), "training.checkpoint_freq": max(1, steps // 4)}


def sweep_file(work: Path, steps: int | None, seeds: list[int] | None) -> Path:
    """The shipped sweep file, or a copy in ``work`` with other steps / seeds."""
    if steps is None and seeds is None:
        return SWEEP_FILE
    spec = yaml.safe_load(SWEEP_FILE.read_text())
    spec["base"] = str((SWEEP_FILE.parent / spec["base"]).resolve())
    if steps is not None:
        spec["set"].update(budget(steps))
    if seeds is not None:
        spec["seeds"] = seeds
    path = work / "sweep_augment_nstep.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def rebuild_from_legacy(old: dict, sweep_dir: Path) -> None:
    """A sweep directory (manifest, per-trial summary.json and eval records) from the old loop's JSON."""
    sys.path.insert(0, str(REPO / "src"))
    from av_td3.sweep.runner import prepare_directory
    from av_td3.sweep.spec import load_sweep

    spec = yaml.safe_load(SWEEP_FILE.read_text())
    spec["base"] = str((SWEEP_FILE.parent / spec["base"]).resolve())
    spec["seeds"] = old["setup"]["seeds"]
    spec["grid"] = {k: v for k, v in old["setup"]["grid"].items()}
    sweep_dir.parent.mkdir(parents=True, exist_ok=True)
    spec_path = sweep_dir.parent / "sweep_augment_nstep_legacy.yaml"
    spec_path.write_text(yaml.safe_dump(spec, sort_keys=False))
    prepare_directory(load_sweep(spec_path), sweep_dir, resume=False)
    for run in old["runs"]:
        if run["returncode"] != 0:
            continue  # a failed run: no summary, listed as failed by the report
        trial = sweep_dir / "trials" / f"image_pad{run['image_pad']}_n_step{run['n_step']}_seed{run['seed']}"
        trial.mkdir(parents=True, exist_ok=True)
        (trial / "summary.json").write_text(json.dumps({k: run[k] for k in (
            "eval_success_rate", "eval_route_completion", "eval_mean_reward", "total_timesteps")}))
        (trial / "metrics.jsonl").write_text("".join(json.dumps({"type": "eval", **e}) + "\n" for e in run["eval_curve"]))


def cli(*args: str) -> int:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.call([sys.executable, "-m", "av_td3.cli", *args], env=env, stdout=sys.stderr, cwd=REPO)


def git_commit() -> dict:
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True, check=True)
        return {"git_commit": head.stdout.strip(), "git_dirty": bool(dirty.stdout.strip())}
    except (subprocess.CalledProcessError, OSError):
        return {}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=None, help="env steps per run (default: the sweep file's 10,000)")
    parser.add_argument("--seeds", type=int_list, default=None, help="comma-separated seeds (default: 0-5)")
    parser.add_argument("--max-concurrent", type=int, default=None, help="trials at once (default: the sweep file's 2)")
    parser.add_argument("--address", default=None, help="a Ray cluster to run on (default: local Ray)")
    parser.add_argument("--work-dir", type=Path, default=None, help="keep the sweep directory here (default: temp, removed)")
    parser.add_argument("--resume", action="store_true", help="finish an interrupted sweep in --work-dir")
    parser.add_argument("--set", dest="extra", action="append", default=[], metavar="KEY=VALUE",
                        help="extra config override for every trial (repeatable), passed to av-td3 sweep")
    parser.add_argument("--from-legacy-json", type=Path, default=None,
                        help="report the runs of an old loop JSON instead of training (needs --work-dir)")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    if args.from_legacy_json is not None:
        if args.work_dir is None:
            parser.error("--from-legacy-json needs --work-dir (where the sweep directory is rebuilt)")
        old = json.loads(args.from_legacy_json.read_text())
        sweep_dir = args.work_dir.resolve() / "sweep"
        rebuild_from_legacy(old, sweep_dir)
        rc = cli("report", str(sweep_dir))
        if rc == 0:
            print(json.dumps({"benchmark": "ablation_augment_nstep", "source": str(args.from_legacy_json),
                              "source_date": old.get("date"), "source_code": old.get("code"),
                              "summary": json.loads((sweep_dir / "sweep_summary.json").read_text())}, indent=2))
        return rc
    if (args.steps is not None and args.steps < 8) or args.seeds == []:
        parser.error("--steps must be >= 8 and --seeds non-empty")

    tmp = tempfile.TemporaryDirectory(prefix="ablation_augment_nstep_") if args.work_dir is None else None
    work = Path(tmp.name) if tmp else args.work_dir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    path = sweep_file(work, args.steps, args.seeds)
    sweep_dir = work / "sweep"
    machine_start = machine_info()
    started = time.perf_counter()
    cmd = ["sweep", str(path), "--output", str(sweep_dir)]
    cmd += ["--max-concurrent", str(args.max_concurrent)] if args.max_concurrent else []
    cmd += ["--address", args.address] if args.address else []
    cmd += ["--resume"] if args.resume else []
    for item in args.extra:
        cmd += ["--set", item]
    log(f"av-td3 {' '.join(cmd)}")
    rc = cli(*cmd)
    wall = time.perf_counter() - started
    if cli("report", str(sweep_dir)) != 0:
        log("report failed: no trial finished")
        return 1
    import torch

    state = json.loads((sweep_dir / "sweep_state.json").read_text())
    result = {
        "benchmark": "ablation_augment_nstep",
        "date": datetime.date.today().isoformat(),
        "setup": {"sweep_file": str(path.relative_to(REPO) if path.is_relative_to(REPO) else path),
                  "sweep": yaml.safe_load(path.read_text()), "extra_overrides": args.extra,
                  "max_concurrent": args.max_concurrent,
                  "address": args.address},
        "code": git_commit(),
        "summary": json.loads((sweep_dir / "sweep_summary.json").read_text()),
        "trials": [{k: t[k] for k in ("name", "status", "attempts")} for t in state["trials"]],
        "invocations": state["invocations"],
        "total_wall_s": round(wall, 1),
        "machine": {**machine_start, "load_avg_1min_end": os.getloadavg()[0], "torch": torch.__version__},
    }
    text = json.dumps(result, indent=2)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(text)
    log(f"table: {sweep_dir / 'sweep_report.md'}" + ("" if tmp is None else " (temp dir; pass --work-dir to keep it)"))
    if tmp is not None:
        tmp.cleanup()
    return rc


if __name__ == "__main__":
    sys.exit(main())
