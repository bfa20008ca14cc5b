"""Sweep speed-up: 4 tiny trials on Ray Tune with --max-concurrent 2 vs the same 4 runs one after another.

    python benchmarks/sweep_speedup.py [--steps 1000] [--rounds 1] [--out result.json]

The trials are ``configs/sweep_smoke.yaml`` (n_step {1, 3} x seeds {0, 1}) with ``training.max_timesteps =
--steps``. Reference, in the same process run: each trial's exact ``av-td3 train`` command, one after
another (OMP_NUM_THREADS=1, as each sweep trial gets with ``resources.cpu: 1``). Then ``av-td3 sweep
--max-concurrent 2 --num-cpus 2`` on a local Ray started by the sweep itself. Reported: both wall times,
their ratio (goal <= 0.65), Ray's start-up overhead (``ray.init`` alone, and everything before the first
trial's training starts), and what a trial subprocess costs beyond an in-process call (a bare interpreter
start; the torch/av_td3 imports are paid by a fresh Ray worker either way). ``--rounds N`` alternates
sequential and sweep N times (both see the same drift in machine load) and reports the median ratio.
Progress to stderr, one JSON object to stdout.
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

from machine import machine_info  # noqa: E402  (benchmarks/machine.py)

REPO = Path(__file__).resolve().parent.parent
SMOKE = REPO / "configs" / "sweep_smoke.yaml"
GOAL = 0.65


def log(message: str) -> None:
    print(f"[SWEEP-BENCH {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def run_env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def timed(cmd: list[str], **kw) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=run_env(), **kw)
    return time.perf_counter() - t0


def sequential(steps: int, work: Path) -> dict:
    sys.path.insert(0, str(REPO / "src"))
    from av_td3.sweep.spec import load_sweep
    from av_td3.sweep.trial import train_command

    sweep = load_sweep(SMOKE, [f"training.max_timesteps={steps}"])
    per_trial = {}
    t0 = time.perf_counter()
    for trial in sweep.trials:
        cmd = train_command(trial.to_dict(), {"base": str(sweep.base), "trials_dir": str(work)}, None)  # as a trial runs
        per_trial[trial.name] = round(timed(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT), 2)
        log(f"sequential {trial.name}: {per_trial[trial.name]} s")
    return {"wall_s": round(time.perf_counter() - t0, 2), "per_trial_s": per_trial}


def swept(steps: int, work: Path) -> dict:
    cmd = [sys.executable, "-m", "av_td3.cli", "sweep", str(SMOKE), "--output", str(work), "--max-concurrent", "2",
           "--num-cpus", "2", "--set", f"training.max_timesteps={steps}"]
    wall = timed(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    state = json.loads((work / "sweep_state.json").read_text())
    inv = state["invocations"][-1]
    trials = {t["name"]: round(t["attempts"][-1]["end"] - t["attempts"][-1]["start"], 2) for t in state["trials"]}
    return {"wall_s": round(wall, 2), "ray_init_s": round(inv["ray_init_s"], 2),
            "startup_overhead_s": round(inv["startup_overhead_s"], 2), "teardown_s": round(inv["teardown_s"], 2),
            "per_trial_s": trials, "all_finished": all(t["status"] == "finished" for t in state["trials"])}


def subprocess_cost() -> dict:
    """What a subprocess adds over an in-process call, and what both pay (imports), median of 3."""
    def median3(code: str) -> float:
        return round(sorted(timed([sys.executable, "-c", code]) for _ in range(3))[1], 3)

    bare = median3("pass")
    imports = median3("import av_td3.cli, av_td3.training.trainer, torch")
    return {"interpreter_start_s": bare, "interpreter_plus_train_imports_s": imports}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000, help="training.max_timesteps of each trial")
    parser.add_argument("--rounds", type=int, default=1, help="alternate sequential / sweep this many times")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    machine = machine_info()
    rounds = []
    for r in range(args.rounds):
        with tempfile.TemporaryDirectory(prefix="sweep_speedup_") as tmp:
            log(f"round {r + 1}: 4 trials of {args.steps} steps, one after another")
            seq = sequential(args.steps, Path(tmp) / "sequential")
            log(f"sequential: {seq['wall_s']} s; now av-td3 sweep --max-concurrent 2")
            sw = swept(args.steps, Path(tmp) / "sweep")
            log(f"sweep: {sw['wall_s']} s (Ray start-up {sw['startup_overhead_s']} s); ratio "
                f"{sw['wall_s'] / seq['wall_s']:.3f}; load {os.getloadavg()[0]:.1f}")
        rounds.append({"sequential": seq, "sweep": sw, "ratio": round(sw["wall_s"] / seq["wall_s"], 3),
                       "load_avg_1min_after": os.getloadavg()[0]})
    ratio = sorted(r["ratio"] for r in rounds)[len(rounds) // 2]
    import torch
    import ray

    result = {
        "benchmark": "sweep_speedup",
        "date": datetime.date.today().isoformat(),
        "setup": {"sweep_file": "configs/sweep_smoke.yaml", "trials": 4, "steps_per_trial": args.steps,
                  "max_concurrent": 2, "ray_num_cpus": 2, "threads_per_trial": 1, "rounds": args.rounds},
        "rounds": rounds,
        "ratio_sweep_over_sequential": ratio,
        "goal_ratio": GOAL,
        "goal_met": ratio <= GOAL,
        "subprocess_vs_in_process": subprocess_cost(),
        "machine": {**machine, "load_avg_1min_end": os.getloadavg()[0], "torch": torch.__version__,
                    "ray": ray.__version__},
    }
    text = json.dumps(result, indent=2)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
